//! Time series of traffic as the pages and the API show them: a range cut into steps, each
//! step the sum of the minutes (and hours) inside it. Pure: points and the time come in.

use kakuremichi_proto::traffic::{TrafficCounts, MINUTE_SECONDS};
use serde::Serialize;

/// The ranges a person can pick, each with the width of its steps.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Range {
    Hour,
    Day,
    Week,
    Quarter,
}

impl Range {
    /// Every range, in the order the pages offer them.
    pub const ALL: [Range; 4] = [Range::Hour, Range::Day, Range::Week, Range::Quarter];

    /// As the API and the pages' links name it.
    pub fn name(self) -> &'static str {
        match self {
            Range::Hour => "1h",
            Range::Day => "24h",
            Range::Week => "7d",
            Range::Quarter => "90d",
        }
    }

    /// The range called `name`; `None` is the last hour.
    pub fn parse(name: Option<&str>) -> Result<Range, crate::Error> {
        match name {
            None => Ok(Range::Hour),
            Some(name) => Range::ALL
                .into_iter()
                .find(|r| r.name() == name)
                .ok_or_else(|| crate::Error::invalid("range", "one of 1h, 24h, 7d, 90d")),
        }
    }

    /// Minutes in one step.
    pub fn step_minutes(self) -> u64 {
        match self {
            Range::Hour => 1,
            Range::Day => 15,
            Range::Week => 120,
            Range::Quarter => 24 * 60,
        }
    }

    /// Steps shown.
    pub fn steps(self) -> u64 {
        match self {
            Range::Hour => 60,
            Range::Day => 96,
            Range::Week => 84,
            Range::Quarter => 90,
        }
    }

    /// The minutes covered at `now` (a minute number): `[from, to)`, whole steps, the step
    /// holding `now` last.
    pub fn minutes(self, now: u64) -> (u64, u64) {
        let step = self.step_minutes();
        let to = (now / step + 1) * step;
        (to.saturating_sub(step * self.steps()), to)
    }
}

/// A range of traffic, step by step, and its totals.
#[derive(Clone, Debug, Serialize)]
pub struct Series {
    pub range: &'static str,
    pub step_seconds: u64,
    /// Unix seconds of the first step's start, and of the last step's end.
    pub from: u64,
    pub to: u64,
    pub points: Vec<Point>,
    pub totals: Point,
}

/// One step's figures.
#[derive(Clone, Debug, Default, Serialize)]
pub struct Point {
    /// Unix seconds of the step's start.
    pub time: u64,
    pub requests: u64,
    /// Answers by status class.
    pub status_1xx: u64,
    pub status_2xx: u64,
    pub status_3xx: u64,
    pub status_4xx: u64,
    pub status_5xx: u64,
    pub bytes_in: u64,
    pub bytes_out: u64,
    pub connections: u64,
    /// The most connections open at once in any minute of the step, over all gateways.
    pub open_max: u64,
    /// Turned away by access rules, and not answered by any agent or origin.
    pub denied: u64,
    pub failed: u64,
    /// Latency percentiles in milliseconds (none without requests).
    pub p50_ms: Option<f64>,
    pub p99_ms: Option<f64>,
}

impl Point {
    fn of(time: u64, counts: &TrafficCounts, open_max: u64) -> Point {
        let ms = |q: f64| counts.latency.quantile(q).map(|us| us as f64 / 1000.0);
        Point {
            time,
            requests: counts.requests(),
            status_1xx: counts.status[0],
            status_2xx: counts.status[1],
            status_3xx: counts.status[2],
            status_4xx: counts.status[3],
            status_5xx: counts.status[4],
            bytes_in: counts.bytes_in,
            bytes_out: counts.bytes_out,
            connections: counts.connections,
            open_max,
            denied: counts.denied_total(),
            failed: counts.failed_total(),
            p50_ms: ms(0.5),
            p99_ms: ms(0.99),
        }
    }
}

/// Adds up points of `(minute, counts)` into `range`'s steps at `now`. An hour's point comes
/// as its first minute with `span` 60; it lands in the step holding that minute.
#[derive(Debug)]
pub struct Accumulator {
    range: Range,
    from: u64,
    to: u64,
    steps: Vec<TrafficCounts>,
    /// Per step: the open connections of each minute, summed over gateways, for the most.
    open: Vec<std::collections::BTreeMap<u64, u64>>,
}

impl Accumulator {
    pub fn new(range: Range, now: u64) -> Accumulator {
        let (from, to) = range.minutes(now);
        let steps = range.steps() as usize;
        Accumulator {
            range,
            from,
            to,
            steps: vec![TrafficCounts::default(); steps],
            open: vec![Default::default(); steps],
        }
    }

    /// The minutes to read: `[from, to)`.
    pub fn minutes(&self) -> (u64, u64) {
        (self.from, self.to)
    }

    /// Count `counts`, of the minute (or the hour starting at the minute) `minute`.
    pub fn add(&mut self, minute: u64, counts: &TrafficCounts) {
        if minute < self.from || minute >= self.to {
            return;
        }
        let step = ((minute - self.from) / self.range.step_minutes()) as usize;
        self.steps[step].add(counts);
        *self.open[step].entry(minute).or_default() += counts.open_max;
    }

    /// The series.
    pub fn finish(self) -> Series {
        let step_seconds = self.range.step_minutes() * MINUTE_SECONDS;
        let mut total = TrafficCounts::default();
        let mut total_open = 0;
        let points = self
            .steps
            .iter()
            .zip(&self.open)
            .enumerate()
            .map(|(i, (counts, open))| {
                total.add(counts);
                let open_max = open.values().copied().max().unwrap_or(0);
                total_open = total_open.max(open_max);
                Point::of(
                    self.from * MINUTE_SECONDS + i as u64 * step_seconds,
                    counts,
                    open_max,
                )
            })
            .collect();
        Series {
            range: self.range.name(),
            step_seconds,
            from: self.from * MINUTE_SECONDS,
            to: self.to * MINUTE_SECONDS,
            points,
            totals: Point::of(self.from * MINUTE_SECONDS, &total, total_open),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ranges_end_with_the_step_that_holds_now() {
        for range in Range::ALL {
            let now = 29_000_017;
            let (from, to) = range.minutes(now);
            assert!(from <= now && now < to, "{range:?}");
            assert_eq!((to - from) / range.step_minutes(), range.steps());
            assert_eq!(from % range.step_minutes(), 0);
        }
        assert_eq!(Range::parse(Some("7d")).unwrap(), Range::Week);
        assert!(Range::parse(Some("1y")).is_err());
    }

    #[test]
    fn minutes_add_into_their_steps_and_totals() {
        let now = 1_000_000;
        let mut acc = Accumulator::new(Range::Day, now);
        let (from, _) = acc.minutes();
        let mut counts = TrafficCounts::default();
        counts.answered(200);
        counts.answered(502);
        counts.bytes_out = 10;
        counts.open_max = 2;
        counts.latency.record(2_000);
        acc.add(from, &counts); // step 0, gateway 1
        acc.add(from, &counts); // step 0, gateway 2: open side by side
        acc.add(from + 14, &counts); // step 0, another minute
        acc.add(now, &counts); // the last step
        acc.add(from - 1, &counts); // before the range: not counted
        let series = acc.finish();
        assert_eq!(series.points.len(), 96);
        assert_eq!(series.points[0].requests, 6);
        assert_eq!(series.points[0].status_5xx, 3);
        assert_eq!(series.points[0].open_max, 4);
        assert_eq!(series.points[95].bytes_out, 10);
        assert_eq!(series.totals.requests, 8);
        assert_eq!(series.totals.open_max, 4);
        let p50 = series.points[0].p50_ms.unwrap();
        assert!((p50 - 2.0).abs() < 0.0625 * 2.0, "{p50}");
        assert_eq!(series.points[1].p50_ms, None);
        assert_eq!(series.to - series.from, 96 * 15 * 60);
    }
}
