//! The latest requests of every tunnel, in memory, for Control's Logs page: a ring of at
//! most `per_tunnel` entries each, newest last. A tunnel that no longer has a route keeps
//! its ring until the gateway restarts or [`RequestLog::retain`] drops it. Optionally each
//! entry is also written to a JSON-lines file ([`crate::access_log`]).

use kakuremichi_proto::request_log::{LogEntry, LogQuery};
use std::collections::{HashMap, VecDeque};
use std::sync::Mutex;

/// Entries kept per tunnel by default: about 250 KB per busy tunnel.
pub const DEFAULT_PER_TUNNEL: usize = 1_000;

/// Every tunnel's ring.
pub struct RequestLog {
    rings: Mutex<HashMap<String, VecDeque<LogEntry>>>,
    per_tunnel: usize,
    file: Option<crate::access_log::AccessLog>,
}

impl RequestLog {
    /// Rings of `per_tunnel` entries (none kept with 0), and the file each entry also goes
    /// to.
    pub fn new(per_tunnel: usize, file: Option<crate::access_log::AccessLog>) -> RequestLog {
        RequestLog {
            rings: Mutex::default(),
            per_tunnel,
            file,
        }
    }

    fn rings(&self) -> std::sync::MutexGuard<'_, HashMap<String, VecDeque<LogEntry>>> {
        self.rings.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Keep `entry`, forgetting its tunnel's oldest when the ring is full.
    pub fn record(&self, entry: LogEntry) {
        if let Some(file) = &self.file {
            file.write(&entry);
        }
        if self.per_tunnel == 0 {
            return;
        }
        let mut rings = self.rings();
        let ring = match rings.get_mut(&entry.tunnel_id) {
            Some(ring) => ring,
            None => rings.entry(entry.tunnel_id.clone()).or_default(),
        };
        if ring.len() == self.per_tunnel {
            ring.pop_front();
        }
        ring.push_back(entry);
    }

    /// The entries `query` asks for, newest first.
    pub fn query(&self, query: &LogQuery) -> Vec<LogEntry> {
        let rings = self.rings();
        let mut found: Vec<&LogEntry> = Vec::new();
        let chosen: Box<dyn Iterator<Item = &VecDeque<LogEntry>>> = match &query.tunnel_id {
            Some(tunnel) => Box::new(rings.get(tunnel).into_iter()),
            None => Box::new(rings.values()),
        };
        for ring in chosen {
            // Each ring is in time order: its newest matching entries are enough.
            found.extend(
                ring.iter()
                    .rev()
                    .filter(|e| query.matches(e))
                    .take(query.limit()),
            );
        }
        found.sort_by_key(|e| std::cmp::Reverse(e.time_ms));
        found.into_iter().take(query.limit()).cloned().collect()
    }

    /// Forget the rings of tunnels `keep` says no to.
    pub fn retain(&self, keep: impl Fn(&str) -> bool) {
        self.rings().retain(|tunnel, _| keep(tunnel));
    }

    /// Entries held, over every tunnel.
    pub fn len(&self) -> usize {
        self.rings().values().map(VecDeque::len).sum()
    }

    /// Lines the access log file dropped because its writer fell behind.
    pub fn file_dropped(&self) -> u64 {
        (self.file.as_ref()).map_or(0, |f| f.dropped.load(std::sync::atomic::Ordering::Relaxed))
    }

    /// Nothing held.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(tunnel: &str, time_ms: u64, status: u16) -> LogEntry {
        LogEntry {
            time_ms,
            tunnel_id: tunnel.into(),
            client: "198.51.100.7".into(),
            user: None,
            method: "GET".into(),
            host: "h".into(),
            path: "/".into(),
            status,
            bytes_in: 0,
            bytes_out: 0,
            micros: 10,
            agent: None,
            query: None,
            headers: Vec::new(),
        }
    }

    #[test]
    fn rings_are_bounded_and_queries_answer_the_newest_first() {
        let log = RequestLog::new(100, None);
        for i in 0..100_000u64 {
            let tunnel = if i % 2 == 0 { "tun_a" } else { "tun_b" };
            log.record(entry(tunnel, i, if i % 10 == 1 { 502 } else { 200 }));
        }
        assert_eq!(log.len(), 200, "100 per tunnel, whatever came");
        let newest = log.query(&LogQuery {
            limit: 3,
            ..LogQuery::default()
        });
        let times: Vec<u64> = newest.iter().map(|e| e.time_ms).collect();
        assert_eq!(times, [99_999, 99_998, 99_997]);
        let errors = log.query(&LogQuery {
            tunnel_id: Some("tun_b".into()),
            status_class: Some(5),
            limit: 1_000,
            ..LogQuery::default()
        });
        assert_eq!(errors.len(), 20, "every tenth of tun_b's last 100");
        assert!(errors
            .iter()
            .all(|e| e.status == 502 && e.tunnel_id == "tun_b"));
        log.retain(|tunnel| tunnel == "tun_a");
        assert_eq!(log.len(), 100);
    }
}
