//! What each tunnel moves through this gateway, counted by minute and reported to Control
//! with the node's status ([`kakuremichi_proto::traffic`]).
//!
//! The table keeps the last [`KEPT_MINUTES`] minutes whole. Each report carries the minutes
//! that changed since the one before; after a new Control session (Control restarted, the
//! link broke) it carries every kept minute again, so what a lost session swallowed arrives
//! anyway. Control keeps the latest counts per gateway process and minute, so a repeat
//! changes nothing. Time is passed in as a minute number: the table is plain data.

use crate::request_log::RequestLog;
use bytes::Bytes;
use hyper::body::{Body, Frame, SizeHint};
use kakuremichi_proto::request_log::LogEntry;
use kakuremichi_proto::traffic::{
    Denial, Failure, TrafficCounts, TrafficPoint, ALL_TUNNELS, MINUTE_SECONDS,
};
use kakuremichi_rt::metrics::Readings;
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Instant;

/// Minutes kept for a report to Control: how long Control may be away and still get them.
pub const KEPT_MINUTES: u64 = 15;

/// The counts of every tunnel, minute by minute.
#[derive(Default)]
pub struct TrafficTable {
    minutes: BTreeMap<u64, HashMap<String, TrafficCounts>>,
    /// (minute, tunnel) changed since the last report.
    changed: BTreeSet<(u64, String)>,
    /// Connections open now, per tunnel.
    open: HashMap<String, u64>,
    /// The Control session the last report went out on.
    reported_on: Option<u64>,
    /// Everything counted since the gateway started, per tunnel, for `/metrics`: at most
    /// [`METRIC_TUNNELS`] tunnels, the rest together as [`OTHER_TUNNELS`].
    totals: HashMap<String, TrafficCounts>,
}

/// The most tunnels `/metrics` names one by one (ten series each): 10,000 series at most.
pub const METRIC_TUNNELS: usize = 1_000;
/// The `tunnel` label of every tunnel beyond [`METRIC_TUNNELS`].
pub const OTHER_TUNNELS: &str = "other";

impl TrafficTable {
    /// Change `tunnel`'s counts for `minute`, and the gateway's totals.
    pub fn count(&mut self, minute: u64, tunnel: &str, change: impl Fn(&mut TrafficCounts)) {
        self.apply(minute, tunnel, &change);
        self.apply(minute, ALL_TUNNELS, &change);
    }

    fn apply(&mut self, minute: u64, tunnel: &str, change: impl Fn(&mut TrafficCounts)) {
        if tunnel != ALL_TUNNELS {
            let known = self.totals.contains_key(tunnel);
            let key = match known || self.totals.len() < METRIC_TUNNELS {
                true => tunnel,
                false => OTHER_TUNNELS,
            };
            match self.totals.get_mut(key) {
                Some(total) => change(total),
                None => change(self.totals.entry(key.to_string()).or_default()),
            }
        }
        let counts = self.minutes.entry(minute).or_default();
        let counts = match counts.get_mut(tunnel) {
            Some(counts) => counts,
            None => {
                let fresh = TrafficCounts {
                    open_max: self.open.get(tunnel).copied().unwrap_or(0),
                    ..TrafficCounts::default()
                };
                counts.entry(tunnel.to_string()).or_insert(fresh)
            }
        };
        change(counts);
        self.changed.insert((minute, tunnel.to_string()));
    }

    /// A connection to `tunnel` opened.
    pub fn opened(&mut self, minute: u64, tunnel: &str) {
        for key in [tunnel, ALL_TUNNELS] {
            let open = self.open.entry(key.to_string()).or_default();
            *open += 1;
            let open = *open;
            self.apply(minute, key, |c| {
                c.connections += 1;
                c.open_max = c.open_max.max(open);
            });
        }
    }

    /// A connection to `tunnel` closed after moving these bytes.
    pub fn closed(&mut self, minute: u64, tunnel: &str, bytes_in: u64, bytes_out: u64) {
        for key in [tunnel, ALL_TUNNELS] {
            if let Some(open) = self.open.get_mut(key) {
                *open = open.saturating_sub(1);
                if *open == 0 {
                    self.open.remove(key);
                }
            }
        }
        self.count(minute, tunnel, |c| {
            c.bytes_in += bytes_in;
            c.bytes_out += bytes_out;
        });
    }

    /// The points to report at `minute` on Control session `session`: those changed since
    /// the last report, or every kept one on a session that has not had them. Tunnels with
    /// connections open get a point for `minute` even when nothing else happened.
    pub fn report(&mut self, minute: u64, session: u64) -> Vec<TrafficPoint> {
        let open: Vec<(String, u64)> = self.open.iter().map(|(t, n)| (t.clone(), *n)).collect();
        for (tunnel, n) in open {
            self.apply(minute, &tunnel, |c| c.open_max = c.open_max.max(n));
        }
        let oldest = minute.saturating_sub(KEPT_MINUTES - 1);
        self.minutes = self.minutes.split_off(&oldest);
        let changed = std::mem::take(&mut self.changed);
        if self.reported_on != Some(session) {
            self.reported_on = Some(session);
            let mut points = Vec::new();
            for (minute, tunnels) in &self.minutes {
                points.extend(tunnels.iter().map(|(tunnel, counts)| TrafficPoint {
                    tunnel_id: tunnel.clone(),
                    minute: *minute,
                    counts: counts.clone(),
                }));
            }
            return points;
        }
        changed
            .into_iter()
            .filter(|(m, _)| *m >= oldest)
            .filter_map(|(m, tunnel)| {
                let counts = self.minutes.get(&m)?.get(&tunnel)?.clone();
                Some(TrafficPoint {
                    tunnel_id: tunnel,
                    minute: m,
                    counts,
                })
            })
            .collect()
    }
}

impl TrafficTable {
    /// Each tunnel's counts since start, and the connections open now, as `/metrics` shows
    /// them (labelled `tunnel`).
    pub fn read_metrics(&self, readings: &mut Readings) {
        for (tunnel, total) in &self.totals {
            let labels = |class: &'static str| [("tunnel", tunnel.as_str()), ("class", class)];
            for (class, n) in ["1xx", "2xx", "3xx", "4xx", "5xx"]
                .into_iter()
                .zip(total.status)
            {
                readings.counter_with(
                    "tunnel_requests",
                    "HTTP answers per tunnel, by status class.",
                    &labels(class),
                    n,
                );
            }
            let tunnel = [("tunnel", tunnel.as_str())];
            readings
                .counter_with(
                    "tunnel_received_bytes",
                    "Bytes from clients per tunnel.",
                    &tunnel,
                    total.bytes_in,
                )
                .counter_with(
                    "tunnel_sent_bytes",
                    "Bytes to clients per tunnel.",
                    &tunnel,
                    total.bytes_out,
                )
                .counter_with(
                    "tunnel_connections",
                    "Connections, udp flows and upgrades per tunnel.",
                    &tunnel,
                    total.connections,
                )
                .counter_with(
                    "tunnel_denied",
                    "Requests and connections access rules turned away.",
                    &tunnel,
                    total.denied_total(),
                )
                .counter_with(
                    "tunnel_failed",
                    "Requests and connections no agent or origin answered.",
                    &tunnel,
                    total.failed_total(),
                )
                .gauge_with(
                    "tunnel_open_connections",
                    "Connections open now.",
                    &tunnel,
                    self.open.get(tunnel[0].1).copied().unwrap_or(0),
                );
        }
    }
}

/// The gateway's table, shared by every request and connection, and its request log; none
/// of either when counting is off (`--traffic-counts off`, for measuring what it costs).
#[derive(Clone)]
pub struct Traffic {
    table: Option<Arc<Mutex<TrafficTable>>>,
    /// The latest requests of every tunnel.
    pub log: Arc<RequestLog>,
}

/// The minute it is now.
pub fn this_minute() -> u64 {
    kakuremichi_rt::unix_now() / MINUTE_SECONDS
}

impl Traffic {
    /// A table, or none when `on` is false; requests are kept in `log`.
    pub fn new(on: bool, log: RequestLog) -> Traffic {
        Traffic {
            table: on.then(Arc::default),
            log: Arc::new(log),
        }
    }

    /// Work on the table (a plain table: a panic elsewhere leaves it usable); without one,
    /// nothing happens.
    pub fn with<T: Default>(&self, f: impl FnOnce(&mut TrafficTable) -> T) -> T {
        match &self.table {
            Some(table) => f(&mut table.lock().unwrap_or_else(|p| p.into_inner())),
            None => T::default(),
        }
    }

    /// A request to `tunnel` starts now (`entry` says what it is); the meter counts and logs
    /// it when dropped. None when counting is off.
    pub fn request(&self, entry: LogEntry) -> Option<RequestMeter> {
        self.table.as_ref()?;
        Some(RequestMeter {
            traffic: self.clone(),
            entry,
            started: Instant::now(),
            answered: None,
            request_body: None,
            bytes_out: 0,
            outcome: None,
        })
    }

    /// A connection to `tunnel` opened; counted closed when the guard drops.
    pub fn connection(&self, tunnel: &str) -> OpenConnection {
        self.with(|t| t.opened(this_minute(), tunnel));
        OpenConnection {
            traffic: self.clone(),
            tunnel: tunnel.to_string(),
            bytes_in: 0,
            bytes_out: 0,
        }
    }

    /// Bytes `tunnel` moved outside a request or a connection's end (a udp datagram).
    pub fn moved(&self, tunnel: &str, bytes_in: u64, bytes_out: u64) {
        self.with(|t| {
            t.count(this_minute(), tunnel, |c| {
                c.bytes_in += bytes_in;
                c.bytes_out += bytes_out;
            })
        });
    }

    /// A connection to `tunnel` the rules turned away, or that no agent took.
    pub fn refused(&self, tunnel: &str, outcome: Outcome) {
        self.with(|t| t.count(this_minute(), tunnel, |c| outcome.count(c)));
    }
}

/// Why a request or connection ended without its origin's answer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Outcome {
    Denied(Denial),
    Failed(Failure),
}

impl Outcome {
    fn count(self, counts: &mut TrafficCounts) {
        match self {
            Outcome::Denied(cause) => *counts.denied.entry(cause).or_default() += 1,
            Outcome::Failed(cause) => *counts.failed.entry(cause).or_default() += 1,
        }
    }
}

/// One HTTP request on its way through; counted when dropped (when the answer's body ended
/// or the client went away).
pub struct RequestMeter {
    traffic: Traffic,
    /// The log's entry, filled in as the request goes.
    entry: LogEntry,
    started: Instant,
    /// The answer's status and how long its head took.
    answered: Option<(u16, u64)>,
    /// Bytes of the request body read so far.
    request_body: Option<Arc<AtomicU64>>,
    bytes_out: u64,
    outcome: Option<Outcome>,
}

impl RequestMeter {
    /// The answer's head is ready: its status, now.
    pub fn answered(&mut self, status: u16, outcome: Option<Outcome>) {
        let micros = self.started.elapsed().as_micros().min(u128::from(u64::MAX)) as u64;
        self.answered = Some((status, micros));
        self.outcome = outcome;
    }

    /// The request body's bytes are counted in `received`.
    pub fn count_request_body(&mut self, received: Arc<AtomicU64>) {
        self.request_body = Some(received);
    }

    /// The gateway admitted the request as Control user `user`.
    pub fn user(&mut self, user: Option<String>) {
        self.entry.user = user;
    }

    /// The agent at `agent` answered.
    pub fn agent(&mut self, agent: Option<std::net::Ipv4Addr>) {
        self.entry.agent = agent.map(|a| a.to_string());
    }
}

impl Drop for RequestMeter {
    fn drop(&mut self) {
        let Some((status, micros)) = self.answered else {
            return;
        };
        let bytes_in = self
            .request_body
            .as_ref()
            .map_or(0, |received| received.load(Ordering::Relaxed));
        let (bytes_out, outcome) = (self.bytes_out, self.outcome);
        self.traffic.with(|t| {
            t.count(this_minute(), &self.entry.tunnel_id, |c| {
                c.answered(status);
                c.latency.record(micros);
                c.bytes_in += bytes_in;
                c.bytes_out += bytes_out;
                if let Some(outcome) = outcome {
                    outcome.count(c);
                }
            })
        });
        let mut entry = std::mem::take(&mut self.entry);
        (entry.status, entry.micros) = (status, micros);
        (entry.bytes_in, entry.bytes_out) = (bytes_in, bytes_out);
        self.traffic.log.record(entry);
    }
}

/// An answer's body, its bytes counted into the request's meter, which it holds until the
/// body ends or is dropped.
pub struct Metered<B> {
    pub body: B,
    pub meter: RequestMeter,
}

impl<B: Body<Data = Bytes> + Unpin> Body for Metered<B> {
    type Data = Bytes;
    type Error = B::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, B::Error>>> {
        let frame = Pin::new(&mut self.body).poll_frame(cx);
        if let Poll::Ready(Some(Ok(frame))) = &frame {
            self.meter.bytes_out += frame.data_ref().map_or(0, |d| d.len() as u64);
        }
        frame
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.body.size_hint()
    }
}

/// A tcp, udp or tls connection (or an upgraded request) open on a tunnel.
pub struct OpenConnection {
    traffic: Traffic,
    tunnel: String,
    bytes_in: u64,
    bytes_out: u64,
}

impl OpenConnection {
    /// Count bytes the connection moved: `bytes_in` from the client, `bytes_out` to it.
    pub fn moved(&mut self, bytes_in: u64, bytes_out: u64) {
        self.bytes_in += bytes_in;
        self.bytes_out += bytes_out;
    }
}

impl Drop for OpenConnection {
    fn drop(&mut self) {
        let (bytes_in, bytes_out) = (self.bytes_in, self.bytes_out);
        self.traffic
            .with(|t| t.closed(this_minute(), &self.tunnel, bytes_in, bytes_out));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Requests of every tunnel in `points`, and of the gateway's totals.
    fn requests(points: &[TrafficPoint]) -> (u64, u64) {
        let of = |all: bool| {
            let points = points
                .iter()
                .filter(|p| (p.tunnel_id == ALL_TUNNELS) == all);
            points.map(|p| p.counts.requests()).sum()
        };
        (of(false), of(true))
    }

    #[test]
    fn a_report_carries_what_changed_and_a_new_session_gets_everything_kept() {
        let mut table = TrafficTable::default();
        table.count(100, "tun_a", |c| c.answered(200));
        table.count(100, "tun_b", |c| c.answered(502));
        let first = table.report(100, 1);
        assert_eq!(first.len(), 3, "two tunnels and the totals");
        assert_eq!(requests(&first), (2, 2));
        assert!(table.report(100, 1).is_empty(), "nothing changed");
        table.count(101, "tun_a", |c| c.answered(200));
        table.count(100, "tun_a", |c| c.answered(200));
        let second = table.report(101, 1);
        assert_eq!(
            second.len(),
            4,
            "minute 100 again (whole) and minute 101, with totals"
        );
        let a100 = second
            .iter()
            .find(|p| p.minute == 100 && p.tunnel_id == "tun_a")
            .unwrap();
        assert_eq!(
            a100.counts.status[1], 2,
            "the minute's whole count, not an increment"
        );
        // Control restarted: a new session gets every kept minute.
        assert_eq!(requests(&table.report(101, 2)), (4, 4));
        // Minutes older than KEPT_MINUTES are gone.
        assert!(table.report(101 + KEPT_MINUTES, 3).is_empty());
    }

    #[test]
    fn open_connections_show_in_every_minute_they_stay_open() {
        let mut table = TrafficTable::default();
        table.opened(10, "tun_t");
        table.opened(10, "tun_t");
        table.closed(10, "tun_t", 5, 7);
        let points = table.report(12, 1);
        let at = |m: u64| {
            let point = points
                .iter()
                .find(|p| p.minute == m && p.tunnel_id == "tun_t");
            point.map(|p| &p.counts)
        };
        let all = points
            .iter()
            .find(|p| p.minute == 12 && p.tunnel_id == ALL_TUNNELS);
        assert_eq!(all.unwrap().counts.open_max, 1);
        assert_eq!(at(10).unwrap().connections, 2);
        assert_eq!(at(10).unwrap().open_max, 2);
        assert_eq!(at(10).unwrap().bytes_out, 7);
        assert_eq!(at(12).unwrap().open_max, 1, "one still open two minutes on");
        assert_eq!(at(12).unwrap().connections, 0);
        table.closed(13, "tun_t", 0, 0);
        assert!(table.open.is_empty());
    }

    #[test]
    fn metrics_name_a_bounded_number_of_tunnels() {
        let mut table = TrafficTable::default();
        for i in 0..METRIC_TUNNELS + 5 {
            table.count(1, &format!("tun_{i}"), |c| c.answered(200));
        }
        table.count(2, "tun_0", |c| c.answered(503));
        let mut readings = Readings::new("kakuremichi_gateway");
        table.read_metrics(&mut readings);
        let text = readings.encode();
        let families = text
            .lines()
            .filter(|l| l.contains("tunnel_sent_bytes_total{"))
            .count();
        assert_eq!(families, METRIC_TUNNELS + 1, "the bound and one `other`");
        assert!(text.contains(
            r#"kakuremichi_gateway_tunnel_requests_total{tunnel="other",class="2xx"} 5"#
        ));
        assert!(text.contains(
            r#"kakuremichi_gateway_tunnel_requests_total{tunnel="tun_0",class="5xx"} 1"#
        ));
        assert!(
            !text.contains(r#"tunnel="*""#),
            "the totals are not a tunnel"
        );
    }
}
