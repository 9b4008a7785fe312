//! Traffic as the pages draw it: a range picker, the range's totals, and four small charts
//! (requests, errors, bytes, latency) as SVG made on the server, no script. A chart scales
//! to its box, so the same markup reads on a phone; its figures are also written out as text
//! beside it, so nothing is only in the picture.

use crate::traffic::series::{Point, Range, Series};
use maud::{html, Markup, PreEscaped};
use std::fmt::Write;

/// The drawing's own units: the SVG scales to the width of its box.
const WIDTH: f64 = 600.0;
const HEIGHT: f64 = 120.0;

/// One line of a chart: its name in the legend, its colour class and a value per step.
struct Line {
    name: &'static str,
    class: &'static str,
    values: Vec<Option<f64>>,
}

/// The traffic section: ranges linking to `base?range=…`, totals, and the charts.
pub fn traffic(series: &Series, base: &str) -> Markup {
    let t = &series.totals;
    let lines = |f: &dyn Fn(&Point) -> Option<f64>| series.points.iter().map(f).collect();
    let count = |f: fn(&Point) -> u64| move |p: &Point| Some(f(p) as f64);
    let errors_share = match t.requests {
        0 => "–".to_string(),
        n => format!("{:.1} %", 100.0 * t.status_5xx as f64 / n as f64),
    };
    html! {
        section.traffic {
            div.toolbar {
                h2 { "Traffic" }
                nav.ranges aria-label="Range" {
                    @for range in Range::ALL {
                        a href={(base) "?range=" (range.name())} aria-current=[(range.name() == series.range).then_some("page")] { (range.name()) }
                    }
                }
            }
            dl.figures {
                div { dt { "Requests" } dd { (thousands(t.requests)) } }
                div { dt { "5xx" } dd { (thousands(t.status_5xx)) " " span.muted { "(" (errors_share) ")" } } }
                div { dt { "Denied" } dd { (thousands(t.denied)) } }
                div { dt { "No answer" } dd { (thousands(t.failed)) } }
                div { dt { "In / out" } dd { (bytes(t.bytes_in)) " / " (bytes(t.bytes_out)) } }
                div { dt { "Connections" } dd { (thousands(t.connections)) } }
                div { dt { "p50 / p99" } dd { (millis(t.p50_ms)) " / " (millis(t.p99_ms)) } }
            }
            div.charts {
                (chart("Requests", series, &[
                    Line { name: "all", class: "s1", values: lines(&count(|p| p.requests)) },
                    Line { name: "5xx", class: "s3", values: lines(&count(|p| p.status_5xx)) },
                ], thousands_f))
                (chart("Errors", series, &[
                    Line { name: "4xx", class: "s2", values: lines(&count(|p| p.status_4xx)) },
                    Line { name: "5xx", class: "s3", values: lines(&count(|p| p.status_5xx)) },
                    Line { name: "denied", class: "s4", values: lines(&count(|p| p.denied)) },
                ], thousands_f))
                (chart("Bytes", series, &[
                    Line { name: "in", class: "s1", values: lines(&count(|p| p.bytes_in)) },
                    Line { name: "out", class: "s2", values: lines(&count(|p| p.bytes_out)) },
                ], |v| bytes(v as u64)))
                (chart("Latency", series, &[
                    Line { name: "p50", class: "s1", values: lines(&|p| p.p50_ms) },
                    Line { name: "p99", class: "s3", values: lines(&|p| p.p99_ms) },
                ], |v| millis(Some(v))))
            }
        }
    }
}

/// One chart: a title with the largest value, the SVG, the legend and the time span.
fn chart(title: &str, series: &Series, lines: &[Line], label: fn(f64) -> String) -> Markup {
    let top = lines
        .iter()
        .flat_map(|l| l.values.iter().flatten())
        .fold(0.0f64, |a, b| a.max(*b));
    let steps = series.points.len().max(2) as f64 - 1.0;
    let mut svg = String::new();
    let _ = write!(
        svg,
        r#"<svg viewBox="0 0 {WIDTH} {HEIGHT}" preserveAspectRatio="none" role="img" aria-label="{title}">"#
    );
    for y in [0.25, 0.5, 0.75] {
        let y = HEIGHT * y;
        let _ = write!(
            svg,
            r#"<line class="grid" x1="0" x2="{WIDTH}" y1="{y}" y2="{y}"/>"#
        );
    }
    for line in lines {
        let mut path = String::new();
        let mut pen_down = false;
        for (i, value) in line.values.iter().enumerate() {
            let Some(value) = value else {
                pen_down = false;
                continue;
            };
            // Inset by the line's width: a dot at either end is drawn whole.
            let x = 3.0 + (WIDTH - 6.0) * i as f64 / steps;
            let y = match top > 0.0 {
                true => HEIGHT - 2.0 - (HEIGHT - 4.0) * value / top,
                false => HEIGHT - 2.0,
            };
            // A step alone between gaps is a dot: a zero-length line with round caps.
            match pen_down {
                true => _ = write!(path, "L{x:.1},{y:.1} "),
                false => _ = write!(path, "M{x:.1},{y:.1} h0 "),
            }
            pen_down = true;
        }
        let _ = write!(
            svg,
            r#"<path class="{}" d="{}"/>"#,
            line.class,
            path.trim_end()
        );
    }
    svg.push_str("</svg>");
    html! {
        figure.chart {
            figcaption {
                strong { (title) }
                span.muted { " up to " (label(top)) " per " (step_name(series.step_seconds)) }
            }
            (PreEscaped(svg))
            div.legend {
                @for line in lines { span { i class=(line.class) {} (line.name) } }
                span.span.muted { (time_span(series)) }
            }
        }
    }
}

fn step_name(seconds: u64) -> String {
    match seconds {
        60 => "minute".into(),
        s if s % 86_400 == 0 => format!("{} day", s / 86_400),
        s if s % 3600 == 0 => format!("{} h", s / 3600),
        s => format!("{} min", s / 60),
    }
}

/// "the last hour, in UTC, 18:00 to 19:00" as the range's ends read.
fn time_span(series: &Series) -> String {
    let at = |t: u64| {
        let time = time::OffsetDateTime::from_unix_timestamp(t as i64)
            .unwrap_or(time::OffsetDateTime::UNIX_EPOCH);
        match series.to - series.from > 86_400 * 2 {
            true => format!("{:02}-{:02}", u8::from(time.month()), time.day()),
            false => format!("{:02}:{:02}", time.hour(), time.minute()),
        }
    };
    format!("{} – {} UTC", at(series.from), at(series.to))
}

/// `1234567` as `1,234,567`.
pub fn thousands(n: u64) -> String {
    let digits = n.to_string();
    let mut out = String::with_capacity(digits.len() + digits.len() / 3);
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}

fn thousands_f(v: f64) -> String {
    thousands(v.round() as u64)
}

/// Bytes in the largest unit that keeps them above 1.
pub fn bytes(n: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KB", "MB", "GB", "TB"];
    let mut value = n as f64;
    let mut unit = 0;
    while value >= 1000.0 && unit + 1 < UNITS.len() {
        value /= 1000.0;
        unit += 1;
    }
    match unit {
        0 => format!("{n} B"),
        _ => format!("{value:.1} {}", UNITS[unit]),
    }
}

fn millis(ms: Option<f64>) -> String {
    match ms {
        None => "–".into(),
        Some(ms) if ms < 10.0 => format!("{ms:.1} ms"),
        Some(ms) if ms < 10_000.0 => format!("{ms:.0} ms"),
        Some(ms) => format!("{:.1} s", ms / 1000.0),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::traffic::series::Accumulator;
    use kakuremichi_proto::traffic::TrafficCounts;

    #[test]
    fn the_totals_are_written_out_and_each_line_is_drawn() {
        let now = 29_000_000;
        let mut acc = Accumulator::new(Range::Hour, now);
        let mut counts = TrafficCounts::default();
        for i in 0..1_234 {
            counts.answered(if i % 10 == 0 { 502 } else { 200 });
            counts.latency.record(3_000);
        }
        counts.bytes_out = 20_000_000;
        acc.add(now - 5, &counts);
        let html = traffic(&acc.finish(), "/tunnels/tun_1").into_string();
        assert!(html.contains("1,234"), "{html}");
        assert!(html.contains("20.0 MB"), "{html}");
        assert!(html.contains("10.0 %"), "{html}");
        assert_eq!(html.matches("<svg").count(), 4);
        assert!(html.contains(r#"href="/tunnels/tun_1?range=7d""#));
        assert!(html.contains(r#"aria-current="page">1h"#));
        // p50 drawn only where there were requests: one point, one move.
        let latency = &html[html.find(r#"aria-label="Latency""#).unwrap()..];
        let p50 = &latency[latency.find(r#"class="s1" d=""#).unwrap()..];
        assert_eq!(p50[..p50.find("\"/>").unwrap()].matches('M').count(), 1);
    }

    #[test]
    fn units_read_as_people_write_them() {
        assert_eq!(thousands(0), "0");
        assert_eq!(thousands(1_000), "1,000");
        assert_eq!(thousands(1_234_567), "1,234,567");
        assert_eq!(bytes(999), "999 B");
        assert_eq!(bytes(5_000_000), "5.0 MB");
        assert_eq!(millis(Some(1.25)), "1.2 ms");
        assert_eq!(millis(Some(12_500.0)), "12.5 s");
    }
}
