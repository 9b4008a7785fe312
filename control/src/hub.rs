//! Who is connected right now: one entry per live node session, presence for the API, and
//! the nudge that tells every session to push a new snapshot after a change.

use kakuremichi_proto::ids::{NodeKind, PublicKey};
use kakuremichi_proto::messages::{NodeStatus, MISSED_HEARTBEATS_OFFLINE};
use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;
use std::time::Instant;

/// How long the hub lets a burst of commits run on before it decodes the store and nudges
/// the sessions: long enough to gather a fleet's hellos, short against "within a second".
const COALESCE: Duration = Duration::from_millis(50);

struct Session {
    node_id: String,
    kind: NodeKind,
    /// The address the node's connection came from.
    address: std::net::IpAddr,
    /// The newest config version the node said it applied.
    applied: u64,
    /// `(sent, same)`: the config sent at revision `sent` is also revision `same`'s, which
    /// was not sent; applying `sent` is applying `same`.
    unchanged: (u64, u64),
    /// The newest revision the session was nudged for: until it has looked at that one,
    /// revisions that do not concern it say nothing of what its node holds.
    nudged: u64,
    last_message: Instant,
    /// The node's last report (without its live peers); none until its first heartbeat.
    status: Option<Arc<NodeStatus>>,
    /// The peers it last reported a live WireGuard session with: a gateway's are every
    /// agent, so reports carry how they changed, and readers share the set.
    live_peers: Arc<LivePeers>,
    changed: async_channel::Sender<()>,
}

impl Session {
    fn catch_up(&mut self) {
        let (sent, same) = self.unchanged;
        if self.applied >= sent {
            self.applied = self.applied.max(same);
        }
    }

    /// Revision `revision` changes nothing for this node: if the session has looked at
    /// every revision that did and sent something, its node's config is `revision`'s too.
    fn not_concerned(&mut self, revision: u64) {
        let (sent, same) = self.unchanged;
        if sent > 0 && same >= self.nudged {
            self.unchanged.1 = same.max(revision);
            self.catch_up();
        }
    }
}

#[derive(Default)]
struct Sessions {
    live: HashMap<u64, Session>,
    /// The ids in `live` of each node's sessions (one, but for a moment while it
    /// reconnects): a list of 100 gateways asks for 100,000 presences of their peers.
    by_node: HashMap<String, Vec<u64>>,
    /// Unix seconds of each node's last message, kept after it disconnects.
    last_seen: HashMap<String, u64>,
}

/// The public keys of a node's peers with a live WireGuard session.
pub type LivePeers = crate::fleet::KeySet<PublicKey>;

/// A node's presence as the API shows it.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Presence {
    pub online: bool,
    pub last_seen: Option<u64>,
    /// Its last report, without `live_peers`: see [`Presence::live_peers`].
    pub status: Option<Arc<NodeStatus>>,
    pub live_peers: Arc<LivePeers>,
    /// The newest config revision the live session said it applied.
    pub applied: Option<u64>,
}

/// Live sessions.
pub struct Hub {
    sessions: Mutex<Sessions>,
    /// Also the number of sessions opened since start: a steady cluster keeps it still.
    next_id: AtomicU64,
    heartbeat: Duration,
    /// Snapshots sent to nodes since start: a quiet cluster keeps this still too.
    snapshots_pushed: AtomicU64,
    /// Control is stopping: sessions close with a close frame that says so.
    stopping: std::sync::atomic::AtomicBool,
}

/// A registered session; dropping it unregisters.
pub struct SessionHandle {
    hub: Arc<Hub>,
    id: u64,
    /// Receives a nudge whenever the store changed.
    pub changed: async_channel::Receiver<()>,
}

impl Hub {
    fn lock(&self) -> MutexGuard<'_, Sessions> {
        // Sessions hold plain data; a panic elsewhere cannot leave them half-updated.
        self.sessions.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// No sessions yet; heartbeats every `heartbeat` (nodes are told in their snapshots).
    pub fn new(heartbeat: Duration) -> Self {
        Hub {
            sessions: Mutex::default(),
            next_id: AtomicU64::new(0),
            heartbeat,
            snapshots_pushed: AtomicU64::new(0),
            stopping: std::sync::atomic::AtomicBool::new(false),
        }
    }

    /// Ask every session to close, telling its node why; see [`Hub::stopping`].
    pub fn stop_all(&self) {
        self.stopping.store(true, Ordering::Relaxed);
        self.notify_all();
    }

    /// Whether Control is stopping.
    pub fn stopping(&self) -> bool {
        self.stopping.load(Ordering::Relaxed)
    }

    /// How often each side of a session sends a heartbeat.
    pub fn heartbeat(&self) -> Duration {
        self.heartbeat
    }

    /// A node silent this long is offline.
    pub fn offline_after(&self) -> Duration {
        self.heartbeat * MISSED_HEARTBEATS_OFFLINE
    }

    /// Sessions opened since Control started.
    pub fn sessions_opened(&self) -> u64 {
        self.next_id.load(Ordering::Relaxed)
    }

    /// Snapshots sent since Control started.
    pub fn snapshots_pushed(&self) -> u64 {
        self.snapshots_pushed.load(Ordering::Relaxed)
    }

    /// Count one snapshot sent.
    pub fn count_push(&self) {
        self.snapshots_pushed.fetch_add(1, Ordering::Relaxed);
    }

    /// Register a connected node, connected from `address`.
    pub fn register(
        self: &Arc<Self>,
        node_id: &str,
        kind: NodeKind,
        address: std::net::IpAddr,
    ) -> SessionHandle {
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let (tx, rx) = async_channel::bounded(1);
        let mut sessions = self.lock();
        let of_node = sessions.by_node.entry(node_id.to_string()).or_default();
        of_node.push(id);
        sessions.live.insert(
            id,
            Session {
                node_id: node_id.to_string(),
                kind,
                address,
                applied: 0,
                unchanged: (0, 0),
                nudged: 0,
                last_message: Instant::now(),
                status: None,
                live_peers: Arc::default(),
                changed: tx,
            },
        );
        sessions
            .last_seen
            .insert(node_id.to_string(), crate::auth::unix_now());
        SessionHandle {
            hub: self.clone(),
            id,
            changed: rx,
        }
    }

    /// Whether a gateway is connected from `address` right now: requests from there are a
    /// gateway's, passing on a visitor whose address it names in `X-Real-IP`.
    pub fn is_gateway_address(&self, address: std::net::IpAddr) -> bool {
        self.lock()
            .live
            .values()
            .any(|s| s.kind == NodeKind::Gateway && s.address == address)
    }

    /// Tell every session that the store changed.
    pub fn notify_all(&self) {
        for session in self.lock().live.values() {
            // A full channel already holds an unread nudge.
            let _ = session.changed.try_send(());
        }
    }

    /// Tell the sessions `concerned` picks that the store moved to `revision`; the others'
    /// nodes hold that revision's config once they hold the last one they were sent.
    fn notify(&self, revision: u64, concerned: impl Fn(&Session) -> bool) {
        for session in self.lock().live.values_mut() {
            match concerned(session) {
                true => {
                    session.nudged = revision;
                    let _ = session.changed.try_send(());
                }
                false => session.not_concerned(revision),
            }
        }
    }

    /// Nudge the sessions a change concerns whenever the store's revision moves: soon after
    /// this process commits, and within `every` after another one does (the CLI writes the
    /// store from its own process). No handler pushes config by hand. Commits come in bursts
    /// (a fleet's hellos after a power cut, a script's edits): the hub waits `COALESCE`
    /// after the first, decodes the store once for the whole burst, compares it with the
    /// state it decoded before (see [`crate::model::concerned`]), and the sessions it nudges
    /// build from that state. Runs as long as Control does.
    pub async fn follow_revision(&self, store: &crate::store::Store, every: Duration) {
        let commits = store.commits();
        let mut before = store.shared_state().ok();
        loop {
            let committed =
                futures_lite::future::or(async { commits.recv().await.is_ok() }, async {
                    async_io::Timer::after(every).await;
                    false
                })
                .await;
            if committed {
                async_io::Timer::after(COALESCE).await;
                while commits.try_recv().is_ok() {}
            }
            let seen = before.as_ref().map(|state| state.revision);
            if store.revision().ok() == seen {
                continue;
            }
            let after = match store.shared_state() {
                Ok(state) => state,
                Err(e) => {
                    log::error!("reading the store for the nodes' configs: {e}");
                    continue;
                }
            };
            let concerned = match &before {
                Some(before) => crate::model::concerned(before, &after),
                None => crate::model::Concerned::everyone(),
            };
            let revision = after.revision;
            self.notify(revision, |s| concerned.includes(&s.node_id, s.kind));
            before = Some(after);
        }
    }

    /// The node's presence: online if a session heard from it within the offline window.
    pub fn presence(&self, node_id: &str) -> Presence {
        let sessions = self.lock();
        let live = self.live_session(&sessions, node_id);
        Presence {
            online: live.is_some(),
            last_seen: sessions.last_seen.get(node_id).copied(),
            status: live.and_then(|s| s.status.clone()),
            live_peers: live.map(|s| s.live_peers.clone()).unwrap_or_default(),
            applied: live.map(|s| s.applied),
        }
    }

    /// [`Hub::presence`]`.online`, without copying the node's last report: a gateways list
    /// asks it of every agent for each gateway.
    pub fn is_online(&self, node_id: &str) -> bool {
        self.live_session(&self.lock(), node_id).is_some()
    }

    /// The nodes online now (see [`Hub::is_online`]), read at once.
    pub fn online_nodes(&self) -> std::collections::HashSet<String> {
        let sessions = self.lock();
        let window = self.offline_after();
        let live = sessions.live.values();
        let heard = live.filter(|s| s.last_message.elapsed() < window);
        heard.map(|s| s.node_id.clone()).collect()
    }

    /// The node's session heard from most recently, if one was within the offline window.
    fn live_session<'a>(&self, sessions: &'a Sessions, node_id: &str) -> Option<&'a Session> {
        let window = self.offline_after();
        let ids = sessions.by_node.get(node_id).map(Vec::as_slice);
        ids.unwrap_or_default()
            .iter()
            .filter_map(|id| sessions.live.get(id))
            .filter(|s| s.last_message.elapsed() < window)
            .max_by_key(|s| s.last_message)
    }

    /// Online gateway sessions, and how many of them applied `revision` or later.
    pub fn gateways_applied(&self, revision: u64) -> (usize, usize) {
        let sessions = self.lock();
        let window = self.offline_after();
        let online: Vec<&Session> = sessions
            .live
            .values()
            .filter(|s| s.kind == NodeKind::Gateway && s.last_message.elapsed() < window)
            .collect();
        let applied = online.iter().filter(|s| s.applied >= revision).count();
        (online.len(), applied)
    }

    /// How many node sessions are open.
    pub fn session_count(&self) -> usize {
        self.lock().live.len()
    }
}

impl SessionHandle {
    /// The node said something; `status` if it was a status report.
    pub fn heard(&self, status: Option<NodeStatus>) {
        let mut sessions = self.hub.lock();
        let Some(session) = sessions.live.get_mut(&self.id) else {
            return;
        };
        session.last_message = Instant::now();
        if let Some(mut status) = status {
            // Changed in place; copied only if a reader holds the set right now, so a report
            // that changes nothing (most heartbeats) does not touch it.
            match status.peer_changes.take() {
                Some(changes) if changes.is_empty() => {}
                Some(changes) => {
                    let live = Arc::make_mut(&mut session.live_peers);
                    for gone in &changes.down {
                        live.remove(gone);
                    }
                    live.extend(changes.up);
                }
                // A node of an earlier version names them all in every report.
                None => {
                    let all = std::mem::take(&mut status.live_peers);
                    session.live_peers = Arc::new(all.into_iter().collect());
                }
            }
            session.status = Some(Arc::new(status));
        }
        let node_id = session.node_id.clone();
        sessions.last_seen.insert(node_id, crate::auth::unix_now());
    }

    /// The node applied config `version`.
    pub fn applied(&self, version: u64) {
        if let Some(session) = self.hub.lock().live.get_mut(&self.id) {
            session.applied = session.applied.max(version);
            session.catch_up();
        }
        self.heard(None);
    }

    /// The node was sent revision `sent`'s config, which is also revision `same`'s (not sent
    /// again): once the node applied `sent`, it has `same`.
    pub fn holds(&self, sent: u64, same: u64) {
        if let Some(session) = self.hub.lock().live.get_mut(&self.id) {
            session.unchanged = (sent, same);
            session.catch_up();
        }
    }

    /// Time since the node last said anything.
    pub fn silence(&self) -> std::time::Duration {
        self.hub
            .lock()
            .live
            .get(&self.id)
            .map_or(std::time::Duration::MAX, |s| s.last_message.elapsed())
    }
}

impl Drop for SessionHandle {
    fn drop(&mut self) {
        let mut sessions = self.hub.lock();
        let Some(session) = sessions.live.remove(&self.id) else {
            return;
        };
        if let Some(ids) = sessions.by_node.get_mut(&session.node_id) {
            ids.retain(|id| *id != self.id);
            if ids.is_empty() {
                sessions.by_node.remove(&session.node_id);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use kakuremichi_proto::messages::PeerChanges;

    fn live(hub: &Hub) -> Vec<PublicKey> {
        let mut live: Vec<PublicKey> = hub.presence("gw_1").live_peers.iter().copied().collect();
        live.sort();
        live
    }

    #[test]
    fn live_peers_are_carried_from_a_full_report_through_changes() {
        // A node of an earlier version sends them all in every report (`live_peers`).
        let hub = Arc::new(Hub::new(Duration::from_secs(1)));
        let key = |i: u8| PublicKey([i; 32]);
        let address = std::net::IpAddr::from([127, 0, 0, 1]);
        let session = hub.register("gw_1", NodeKind::Gateway, address);
        let report = |live_peers: Vec<PublicKey>, peer_changes| NodeStatus {
            live_peers,
            peer_changes,
            ..NodeStatus::default()
        };
        session.heard(Some(report(vec![key(1), key(2), key(3)], None)));
        let changes = PeerChanges {
            up: vec![key(4)],
            down: vec![key(2)],
        };
        let reading = hub.presence("gw_1");
        session.heard(Some(report(vec![], Some(changes))));
        assert_eq!(live(&hub), [key(1), key(3), key(4)]);
        assert_eq!(reading.live_peers.len(), 3, "a reader keeps what it read");
        let again = PeerChanges {
            up: vec![key(4), key(5)],
            down: vec![key(9)],
        };
        session.heard(Some(report(vec![], Some(again))));
        let carried = [key(1), key(3), key(4), key(5)];
        assert_eq!(
            live(&hub),
            carried,
            "a repeated up and an unknown down change nothing"
        );
        session.heard(Some(report(vec![], Some(PeerChanges::default()))));
        assert_eq!(live(&hub), carried, "no change kept them");
        // Another session of the node starts from its own first report.
        drop(session);
        let again = hub.register("gw_1", NodeKind::Gateway, address);
        again.heard(Some(report(vec![], Some(PeerChanges::default()))));
        assert!(live(&hub).is_empty());
    }
}
