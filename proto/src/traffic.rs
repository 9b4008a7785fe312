//! What passes through a tunnel, minute by minute: the counts a gateway keeps per tunnel and
//! reports to Control, which adds up those of every gateway into time series.
//!
//! A gateway reports a minute's counts whole (not as increments since its last report), so a
//! report sent twice, or again after a lost session, changes nothing; each gateway process
//! reports under its own `instance`, so a restarted gateway adds to a minute instead of
//! replacing what it said before the restart.

use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// Seconds in one point of the finest series.
pub const MINUTE_SECONDS: u64 = 60;

/// The tunnel id under which a gateway reports the sum of all its tunnels: a fleet's or a
/// gateway's totals are then one series to read, not one per tunnel.
pub const ALL_TUNNELS: &str = "*";

/// What one tunnel moved on one gateway during one minute.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct TrafficCounts {
    /// HTTP answers by status class: 1xx, 2xx, 3xx, 4xx, 5xx.
    #[serde(default)]
    pub status: [u64; 5],
    /// Bytes from clients: request bodies, upgraded streams, tcp/udp/tls payloads.
    #[serde(default)]
    pub bytes_in: u64,
    /// Bytes to clients.
    #[serde(default)]
    pub bytes_out: u64,
    /// Connections opened: each tcp or tls connection, udp flow and upgraded HTTP request.
    #[serde(default)]
    pub connections: u64,
    /// The most connections open at once during the minute.
    #[serde(default)]
    pub open_max: u64,
    /// Requests and connections the tunnel's access rules turned away, by cause.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub denied: BTreeMap<Denial, u64>,
    /// Requests and connections that no agent or origin answered, by cause.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub failed: BTreeMap<Failure, u64>,
    /// Time from a request's arrival to its answer's head (to the connection's end for tcp,
    /// udp and tls tunnels it is not kept).
    #[serde(default)]
    pub latency: Histogram,
}

/// Why the gateway turned a visitor away.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Denial {
    /// Not logged in, or a wrong password or token (401, or the login page).
    Unauthorized,
    /// An IP rule, or a user the rules do not name (403).
    Forbidden,
    /// Too many failed logins (429).
    Throttled,
}

/// Why a request got no answer from its origin.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Failure {
    /// No agent could be reached, or the agent could not reach the origin (502).
    Unreachable,
    /// Every connection to the agent stayed busy (503).
    Busy,
}

impl TrafficCounts {
    /// HTTP requests answered.
    pub fn requests(&self) -> u64 {
        self.status.iter().sum()
    }

    /// Count one HTTP answer of `status`.
    pub fn answered(&mut self, status: u16) {
        if let Some(class) = (status / 100).checked_sub(1).filter(|c| *c < 5) {
            self.status[class as usize] += 1;
        }
    }

    /// Requests turned away, for any cause.
    pub fn denied_total(&self) -> u64 {
        self.denied.values().sum()
    }

    /// Requests no origin answered, for any cause.
    pub fn failed_total(&self) -> u64 {
        self.failed.values().sum()
    }

    /// Add `other` (another gateway's, another process's or another minute's counts).
    /// `open_max` adds too: gateways' connections are open side by side.
    pub fn add(&mut self, other: &TrafficCounts) {
        for (mine, theirs) in self.status.iter_mut().zip(other.status) {
            *mine += theirs;
        }
        self.bytes_in += other.bytes_in;
        self.bytes_out += other.bytes_out;
        self.connections += other.connections;
        self.open_max += other.open_max;
        for (cause, n) in &other.denied {
            *self.denied.entry(*cause).or_default() += n;
        }
        for (cause, n) in &other.failed {
            *self.failed.entry(*cause).or_default() += n;
        }
        self.latency.merge(&other.latency);
    }

    /// Nothing was counted.
    pub fn is_empty(&self) -> bool {
        *self == TrafficCounts::default()
    }
}

/// One tunnel's counts for one minute, as a gateway reports them.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct TrafficPoint {
    /// The tunnel's id.
    pub tunnel_id: String,
    /// The minute: Unix seconds divided by [`MINUTE_SECONDS`].
    pub minute: u64,
    /// Everything the gateway process counted for the tunnel in that minute so far.
    pub counts: TrafficCounts,
}

/// Sub-buckets per power of two: a value lands in a bucket at most 1/8 of its size wide,
/// so a percentile read back is within about 6 % of the true one.
const SUB_BUCKET_BITS: u32 = 3;
const SUB_BUCKETS: u64 = 1 << SUB_BUCKET_BITS;

/// A latency histogram in microseconds, HDR-style (log-linear buckets), kept sparse: a
/// minute of one tunnel holds a few dozen buckets, where a dense HDR histogram of two
/// significant digits holds 26 KB of counters. Histograms of gateways and minutes merge
/// exactly, so a percentile over a day and three gateways is read from their sum.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Histogram {
    /// (bucket, count), by bucket, counts above zero.
    buckets: Vec<(u16, u64)>,
}

impl Histogram {
    /// Count one value.
    pub fn record(&mut self, micros: u64) {
        self.record_n(bucket_of(micros), 1);
    }

    fn record_n(&mut self, bucket: u16, n: u64) {
        match self.buckets.binary_search_by_key(&bucket, |(b, _)| *b) {
            Ok(i) => self.buckets[i].1 += n,
            Err(i) => self.buckets.insert(i, (bucket, n)),
        }
    }

    /// Add another histogram's counts.
    pub fn merge(&mut self, other: &Histogram) {
        for (bucket, n) in &other.buckets {
            self.record_n(*bucket, *n);
        }
    }

    /// Values counted.
    pub fn count(&self) -> u64 {
        self.buckets.iter().map(|(_, n)| n).sum()
    }

    /// The value at quantile `q` (0.5 for the median), in microseconds: the middle of its
    /// bucket; `None` when empty.
    pub fn quantile(&self, q: f64) -> Option<u64> {
        let total = self.count();
        if total == 0 {
            return None;
        }
        let rank = ((q.clamp(0.0, 1.0) * total as f64).ceil() as u64).max(1);
        let mut seen = 0;
        for (bucket, n) in &self.buckets {
            seen += n;
            if seen >= rank {
                return Some(middle_of(*bucket));
            }
        }
        self.buckets.last().map(|(bucket, _)| middle_of(*bucket))
    }

    /// The (bucket, count) pairs, by bucket: for storing it in another encoding.
    pub fn buckets(&self) -> &[(u16, u64)] {
        &self.buckets
    }

    /// A histogram of stored `buckets`; `None` unless they are as [`Histogram::is_valid`]
    /// wants.
    pub fn from_buckets(buckets: Vec<(u16, u64)>) -> Option<Histogram> {
        Some(Histogram { buckets }).filter(Histogram::is_valid)
    }

    /// Whether every bucket index is one [`Histogram::record`] could make: a report from
    /// the network is checked before it is kept.
    pub fn is_valid(&self) -> bool {
        self.buckets.iter().all(|(b, n)| *b <= MAX_BUCKET && *n > 0)
            && self.buckets.windows(2).all(|w| w[0].0 < w[1].0)
    }
}

/// The bucket of `u64::MAX`.
const MAX_BUCKET: u16 = ((64 - SUB_BUCKET_BITS) as u64 * SUB_BUCKETS + SUB_BUCKETS - 1) as u16;

/// Values below [`SUB_BUCKETS`] have a bucket each; above, each power of two is cut into
/// [`SUB_BUCKETS`] equal parts.
fn bucket_of(value: u64) -> u16 {
    if value < SUB_BUCKETS {
        return value as u16;
    }
    let power = 63 - value.leading_zeros(); // ≥ SUB_BUCKET_BITS
    let shift = power - SUB_BUCKET_BITS;
    let sub = (value >> shift) - SUB_BUCKETS; // 0..SUB_BUCKETS
    ((shift as u64 + 1) * SUB_BUCKETS + sub) as u16
}

fn middle_of(bucket: u16) -> u64 {
    let bucket = u64::from(bucket);
    if bucket < SUB_BUCKETS {
        return bucket;
    }
    let shift = bucket / SUB_BUCKETS - 1;
    let low = (SUB_BUCKETS + bucket % SUB_BUCKETS) << shift;
    low + ((1u64 << shift) >> 1)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buckets_are_ordered_and_narrow() {
        let mut last = 0;
        for value in (0..100_000u64).chain([u64::MAX / 3, u64::MAX]) {
            let bucket = bucket_of(value);
            assert!(bucket >= last, "{value}");
            assert!(bucket <= MAX_BUCKET);
            last = bucket;
            let middle = middle_of(bucket) as f64;
            let error = (middle - value as f64).abs() / (value.max(1) as f64);
            assert!(error <= 0.0625, "{value}: read back as {middle}");
        }
        assert_eq!(bucket_of(u64::MAX), MAX_BUCKET);
    }

    #[test]
    fn percentiles_of_merged_histograms_are_those_of_all_values() {
        let (mut fast, mut slow, mut all) = (Histogram::default(), Histogram::default(), vec![]);
        for i in 0..900u64 {
            fast.record(1_000 + i);
            all.push(1_000 + i);
        }
        for i in 0..100u64 {
            slow.record(250_000 + 100 * i);
            all.push(250_000 + 100 * i);
        }
        let mut merged = fast.clone();
        merged.merge(&slow);
        assert_eq!(merged.count(), 1_000);
        all.sort_unstable();
        for q in [0.5, 0.9, 0.95, 0.99] {
            let exact = all[(q * all.len() as f64).ceil() as usize - 1] as f64;
            let read = merged.quantile(q).unwrap() as f64;
            assert!(
                (read - exact).abs() / exact <= 0.0625,
                "q{q}: {read} vs {exact}"
            );
        }
        assert!(merged.is_valid());
        assert_eq!(Histogram::default().quantile(0.5), None);
    }

    #[test]
    fn counts_add_up_and_travel_as_json() {
        let mut a = TrafficCounts::default();
        for status in [200, 204, 302, 404, 502, 99, 600] {
            a.answered(status);
        }
        a.bytes_in = 5;
        *a.failed.entry(Failure::Unreachable).or_default() += 1;
        a.latency.record(1500);
        let mut sum = a.clone();
        sum.add(&a);
        assert_eq!(sum.status, [0, 4, 2, 2, 2]);
        assert_eq!(sum.requests(), 10);
        assert_eq!(sum.bytes_in, 10);
        assert_eq!(sum.failed_total(), 2);
        assert_eq!(sum.latency.count(), 2);
        let text = serde_json::to_string(&sum).unwrap();
        assert!(text.contains(r#""failed":{"unreachable":2}"#), "{text}");
        assert_eq!(serde_json::from_str::<TrafficCounts>(&text).unwrap(), sum);
        let forged: Histogram = serde_json::from_str("[[600,1]]").unwrap();
        assert!(!forged.is_valid());
        let unordered: Histogram = serde_json::from_str("[[9,1],[8,1]]").unwrap();
        assert!(!unordered.is_valid());
    }
}
