//! What a node reports of itself every heartbeat: counters, problems, failing origins and
//! the peers it has a live WireGuard session with, the last as changes from report to report.

use crate::ids::PublicKey;
use crate::traffic::TrafficPoint;
use serde::{Deserialize, Serialize};

/// Counters a node reports.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct NodeStatus {
    /// The config snapshot version the node has applied.
    pub config_version: u64,
    /// Peers with a live WireGuard session.
    pub peers_up: u32,
    /// Bytes received over WireGuard (all peers).
    pub rx_bytes: u64,
    /// Bytes sent over WireGuard (all peers).
    pub tx_bytes: u64,
    /// The public keys of the peers with a live WireGuard session (Control shows which
    /// agent reaches which gateway): all of them, unless `peer_changes` is set.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub live_peers: Vec<PublicKey>,
    /// Instead of `live_peers`, how they changed since the node's previous report on this
    /// session (from none, in its first). A gateway's live peers are every agent (440 KB of
    /// JSON at 10,000 agents), and it reports every heartbeat and each second they change.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub peer_changes: Option<PeerChanges>,
    /// What the node was asked to do and could not (a port another program holds, a
    /// certificate that does not load).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub problems: Vec<String>,
    /// Tunnels whose target an agent could not reach on its latest attempt (visitors get
    /// 502): what failed, and since when.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub failing_origins: Vec<OriginFailure>,
    /// Gateways: what each tunnel moved, by minute, since the previous report on this
    /// session (minutes not yet reported, and the current one as it stands).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub traffic: Vec<TrafficPoint>,
}

/// The most peer keys one report names (about 1.5 KB of JSON): the other side's buffer
/// for a session's messages grows to its largest and keeps that size.
pub const PEERS_PER_REPORT: usize = 32;

/// The most traffic points one report carries (a point with its latency histogram is a few
/// hundred bytes of JSON), for the same reason.
pub const TRAFFIC_POINTS_PER_REPORT: usize = 6;

impl NodeStatus {
    /// This status as a session sends it: its `live_peers` as changes from those the session
    /// told of before (`told`, sorted, which becomes this status's), in as many reports as
    /// they take at [`PEERS_PER_REPORT`] each, its traffic spread over them (and more) at
    /// [`TRAFFIC_POINTS_PER_REPORT`] each; the other fields ride in every one.
    pub fn into_reports(mut self, told: &mut Vec<PublicKey>) -> Vec<NodeStatus> {
        let traffic = std::mem::take(&mut self.traffic);
        let mut reports = self.peer_reports(told);
        for (i, points) in traffic.chunks(TRAFFIC_POINTS_PER_REPORT).enumerate() {
            match reports.get_mut(i) {
                Some(report) => report.traffic = points.to_vec(),
                None => reports.push(NodeStatus {
                    peer_changes: Some(PeerChanges::default()),
                    traffic: points.to_vec(),
                    ..reports[0].clone()
                }),
            }
        }
        reports
    }

    fn peer_reports(mut self, told: &mut Vec<PublicKey>) -> Vec<NodeStatus> {
        let mut live = std::mem::take(&mut self.live_peers);
        live.sort_unstable();
        let changes = PeerChanges::between(told, &live);
        *told = live;
        let ups = changes.up.into_iter().map(|key| (true, key));
        let mut keys = ups.chain(changes.down.into_iter().map(|key| (false, key)));
        let mut reports = Vec::new();
        loop {
            let mut part = PeerChanges::default();
            for (up, key) in keys.by_ref().take(PEERS_PER_REPORT) {
                match up {
                    true => part.up.push(key),
                    false => part.down.push(key),
                }
            }
            if part.is_empty() && !reports.is_empty() {
                return reports;
            }
            reports.push(NodeStatus {
                peer_changes: Some(part),
                ..self.clone()
            });
        }
    }
}

/// How a node's live peers changed between two of its reports.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct PeerChanges {
    /// Peers with a session now that had none.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub up: Vec<PublicKey>,
    /// Peers whose session ended.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub down: Vec<PublicKey>,
}

impl PeerChanges {
    /// From the live peers of the previous report to those of this one, both sorted.
    pub fn between(before: &[PublicKey], now: &[PublicKey]) -> PeerChanges {
        let mut changes = PeerChanges::default();
        let (mut b, mut n) = (0, 0);
        loop {
            match (before.get(b), now.get(n)) {
                (Some(was), Some(is)) if was == is => (b, n) = (b + 1, n + 1),
                (Some(was), Some(is)) if was < is => {
                    changes.down.push(*was);
                    b += 1;
                }
                (Some(was), None) => {
                    changes.down.push(*was);
                    b += 1;
                }
                (_, Some(is)) => {
                    changes.up.push(*is);
                    n += 1;
                }
                (None, None) => return changes,
            }
        }
    }

    /// Nothing changed.
    pub fn is_empty(&self) -> bool {
        self.up.is_empty() && self.down.is_empty()
    }
}

/// A tunnel whose target did not answer the agent's latest connection.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct OriginFailure {
    /// The tunnel's id.
    pub tunnel_id: String,
    /// The target, as the tunnel names it.
    pub target: String,
    /// Why, as the agent's system said it (connection refused, timed out, …).
    pub error: String,
    /// Unix seconds of the first failure in this run of failures.
    pub since: u64,
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::messages::{encode, NodeMessage};

    /// What Control makes of `changes` to `live`.
    fn carry(live: &[PublicKey], changes: &PeerChanges) -> Vec<PublicKey> {
        let mut set: std::collections::BTreeSet<PublicKey> = live.iter().copied().collect();
        for gone in &changes.down {
            set.remove(gone);
        }
        set.extend(&changes.up);
        set.into_iter().collect()
    }

    #[test]
    fn peer_changes_carry_a_live_set_from_one_report_to_the_next() {
        let key = |i: u8| PublicKey([i; 32]);
        let before = [key(1), key(2), key(4), key(6)];
        let now = [key(2), key(3), key(4), key(7), key(8)];
        let changes = PeerChanges::between(&before, &now);
        assert_eq!(changes.up, [key(3), key(7), key(8)]);
        assert_eq!(changes.down, [key(1), key(6)]);
        assert_eq!(carry(&before, &changes), now);
        assert!(PeerChanges::between(&now, &now).is_empty());
        assert_eq!(PeerChanges::between(&[], &now).up, now);
        assert_eq!(PeerChanges::between(&now, &[]).down, now);
    }

    #[test]
    fn a_status_goes_in_small_reports_that_carry_the_live_peers() {
        let key = |i: u32| {
            let mut bytes = [0; 32];
            bytes[..4].copy_from_slice(&i.to_be_bytes());
            PublicKey(bytes)
        };
        let status = |live: Vec<PublicKey>| NodeStatus {
            config_version: 7,
            live_peers: live,
            ..NodeStatus::default()
        };
        let (mut told, mut carried) = (Vec::new(), Vec::new());
        let mut send = |live: Vec<PublicKey>| {
            let reports = status(live).into_reports(&mut told);
            for report in &reports {
                assert_eq!(report.config_version, 7);
                assert!(report.live_peers.is_empty());
                let text = encode(&NodeMessage::Status(report.clone()));
                assert!(text.len() < 2048, "{} bytes", text.len());
                carried = carry(&carried, report.peer_changes.as_ref().unwrap());
            }
            (reports.len(), carried.clone())
        };
        let all: Vec<PublicKey> = (0..150).map(key).collect();
        assert_eq!(send(all.clone()), (5, all.clone()), "32 × 4 + 22");
        assert_eq!(send(all.clone()), (1, all.clone()), "one report, no change");
        let fewer: Vec<PublicKey> = (100..300).map(key).collect();
        assert_eq!(send(fewer.clone()).1, fewer, "150 up, 100 down");
        assert_eq!(send(Vec::new()), (7, Vec::new()), "200 down");
    }

    #[test]
    fn traffic_rides_in_small_reports_each_point_once() {
        use crate::traffic::{TrafficCounts, TrafficPoint};
        let point = |i: u64| {
            let mut counts = TrafficCounts::default();
            for micros in 0..40 {
                counts.latency.record(micros * 997 * (i + 1));
            }
            TrafficPoint {
                tunnel_id: format!("tun_{i:016x}"),
                minute: 29_000_000 + i,
                counts,
            }
        };
        let status = NodeStatus {
            traffic: (0..20).map(point).collect(),
            ..NodeStatus::default()
        };
        let reports = status.into_reports(&mut Vec::new());
        assert_eq!(reports.len(), 4, "6 + 6 + 6 + 2");
        let carried: Vec<TrafficPoint> = reports.iter().flat_map(|r| r.traffic.clone()).collect();
        assert_eq!(carried, (0..20).map(point).collect::<Vec<_>>());
        for report in &reports {
            let text = encode(&NodeMessage::Status(report.clone()));
            assert!(text.len() < 4096, "{} bytes", text.len());
        }
    }
}
