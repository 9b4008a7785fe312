//! Nodes without a data plane, speaking Control's real node protocol over its WebSocket: each
//! says hello with a fresh key, records every config it is sent (version, size, when),
//! answers that it applied it, and sends a heartbeat and a status report every interval, as
//! `nodelink` does, with a live session to every peer its config names. Hundreds or
//! thousands run on one thread, so a test can watch what a change costs a large fleet.

use async_tungstenite::tungstenite::client::IntoClientRequest;
use async_tungstenite::tungstenite::Message;
use futures_lite::StreamExt;
use kakuremichi_proto::ids::PublicKey;
use kakuremichi_proto::messages::{encode, Hello, NodeMessage, NodeStatus};
use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// What a simulated node reads of Control's messages (`ControlMessage`, tagged by `type`).
#[derive(serde::Deserialize)]
struct Envelope {
    #[serde(rename = "type")]
    kind: String,
    version: Option<u64>,
    /// A config patch's other messages follow.
    #[serde(default)]
    more: bool,
    #[serde(default)]
    peers: PeersPatch,
}

/// What a simulated node reads of a config patch's peers: who they are, to report them live.
#[derive(Default, serde::Deserialize)]
struct PeersPatch {
    #[serde(default)]
    upsert: Vec<Peer>,
    #[serde(default)]
    remove: Vec<String>,
}

#[derive(serde::Deserialize)]
struct Peer {
    node_id: String,
    public_key: PublicKey,
}

/// One config a simulated node was sent (all the messages of its patch).
#[derive(Clone, Copy, Debug)]
pub struct Received {
    pub version: u64,
    pub bytes: usize,
    pub at: Instant,
}

/// What happened to one simulated node's session.
#[derive(Default)]
pub struct Log {
    pub configs: Vec<Received>,
    /// Why the session ended, if it did.
    pub ended: Option<String>,
    /// Sessions opened (1 unless it reconnected).
    pub sessions: u32,
    /// When Control last sent a heartbeat (or the first config, after which they start).
    pub last_heartbeat: Option<Instant>,
    /// The longest wait between two of Control's heartbeats: a session dropped for
    /// silence after a long gap was Control's stall, not the node's.
    pub longest_heartbeat_gap: std::time::Duration,
}

/// A simulated node of `kind` (`agent` or `gateway`), connected until dropped.
pub struct SimulatedNode {
    pub id: String,
    pub log: Arc<Mutex<Log>>,
    _task: smol::Task<()>,
}

impl SimulatedNode {
    /// Connect as the node with `api_key` to Control at `control`, with a heartbeat every
    /// `heartbeat` (Control's interval, which real nodes read from their config).
    pub fn connect(
        control: SocketAddr,
        kind: &str,
        id: &str,
        api_key: &str,
        heartbeat: Duration,
    ) -> SimulatedNode {
        let log = Arc::new(Mutex::new(Log::default()));
        let url = format!("ws://{control}/ws/{kind}");
        let (key, kind, written) = (api_key.to_string(), kind.to_string(), log.clone());
        let task = smol::spawn(async move {
            let ended = match session(control, &url, &key, &kind, heartbeat, &written).await {
                Ok(()) => "closed by Control".to_string(),
                Err(e) => e,
            };
            let mut log = lock(&written);
            log.ended = Some(ended);
            if let Some(at) = log.last_heartbeat.take() {
                log.longest_heartbeat_gap = log.longest_heartbeat_gap.max(at.elapsed());
            }
        });
        SimulatedNode {
            id: id.to_string(),
            log,
            _task: task,
        }
    }

    /// The configs received so far.
    pub fn configs(&self) -> Vec<Received> {
        lock(&self.log).configs.clone()
    }

    /// Why its session ended, if it did.
    pub fn ended(&self) -> Option<String> {
        lock(&self.log).ended.clone()
    }

    /// The longest wait between Control's heartbeats so far, counting the one still open.
    pub fn longest_heartbeat_gap(&self) -> std::time::Duration {
        let log = lock(&self.log);
        let open = log
            .last_heartbeat
            .map(|at| at.elapsed())
            .unwrap_or_default();
        log.longest_heartbeat_gap.max(open)
    }
}

fn lock(log: &Mutex<Log>) -> std::sync::MutexGuard<'_, Log> {
    log.lock().unwrap_or_else(|p| p.into_inner())
}

async fn session(
    control: SocketAddr,
    url: &str,
    api_key: &str,
    kind: &str,
    heartbeat: Duration,
    log: &Mutex<Log>,
) -> Result<(), String> {
    let tcp = smol::net::TcpStream::connect(control)
        .await
        .map_err(|e| format!("connect: {e}"))?;
    let mut request = url.into_client_request().map_err(|e| e.to_string())?;
    let bearer = format!("Bearer {api_key}").parse().map_err(|_| "bad key")?;
    request.headers_mut().insert("authorization", bearer);
    let (mut ws, _) = async_tungstenite::client_async(request, tcp)
        .await
        .map_err(|e| format!("upgrade: {e}"))?;
    lock(log).sessions += 1;
    let mut key = [0u8; 32];
    getrandom::fill(&mut key).map_err(|e| e.to_string())?;
    let mut instance = [0u8; 8];
    getrandom::fill(&mut instance).map_err(|e| e.to_string())?;
    let hello = Hello {
        public_key: PublicKey(key),
        version: "simulated".into(),
        wireguard_endpoint: (kind == "gateway").then(|| "127.0.0.1:51820".to_string()),
        instance: u64::from_le_bytes(instance),
        ports: None,
        https_port: None,
        http_port: None,
        allow_targets: None,
        features: Vec::new(),
    };
    let send = |message: NodeMessage| Message::text(encode(&message));
    ws.send(send(NodeMessage::Hello(hello)))
        .await
        .map_err(|e| format!("hello: {e}"))?;
    // The bytes of a patch's messages so far, and the last config applied.
    let (mut pending, mut applied) = (0, 0);
    // The peers configs named, by node id, and those the last report said were live.
    let mut peers: HashMap<String, PublicKey> = HashMap::new();
    let mut told = Vec::new();
    let mut next_heartbeat = Instant::now() + heartbeat;
    loop {
        let received = futures_lite::future::or(async { Some(ws.next().await) }, async {
            async_io::Timer::at(next_heartbeat).await;
            None
        })
        .await;
        let message = match received {
            Some(Some(message)) => message,
            Some(None) => return Ok(()),
            None => {
                next_heartbeat = Instant::now() + heartbeat;
                let status = NodeStatus {
                    config_version: applied,
                    peers_up: peers.len() as u32,
                    live_peers: peers.values().copied().collect(),
                    ..NodeStatus::default()
                };
                let reports = status.into_reports(&mut told).into_iter();
                let heartbeat = std::iter::once(NodeMessage::Heartbeat);
                for message in heartbeat.chain(reports.map(NodeMessage::Status)) {
                    ws.send(send(message))
                        .await
                        .map_err(|e| format!("send: {e}"))?;
                }
                continue;
            }
        };
        let text = match message.map_err(|e| format!("socket: {e}"))? {
            Message::Text(text) => text,
            Message::Close(_) => return Ok(()),
            _ => continue,
        };
        // Only the type, version and peers: a gateway's config at scale is hundreds of KB,
        // and decoding each in full made the simulator, not Control, the bottleneck.
        let envelope: Envelope = serde_json::from_str(&text).map_err(|e| e.to_string())?;
        match envelope.kind.as_str() {
            "config" => {
                let version = envelope.version.ok_or("a config without a version")?;
                for gone in envelope.peers.remove {
                    peers.remove(&gone);
                }
                let named = envelope.peers.upsert.into_iter();
                peers.extend(named.map(|peer| (peer.node_id, peer.public_key)));
                pending += text.len();
                if envelope.more {
                    continue;
                }
                {
                    let mut written = lock(log);
                    let at = Instant::now();
                    written.last_heartbeat.get_or_insert(at);
                    written.configs.push(Received {
                        version,
                        bytes: std::mem::take(&mut pending),
                        at,
                    });
                }
                applied = version;
                ws.send(send(NodeMessage::Applied { version }))
                    .await
                    .map_err(|e| format!("send: {e}"))?;
            }
            "heartbeat" => {
                let mut log = lock(log);
                let now = Instant::now();
                let gap = log.last_heartbeat.map(|at| now - at).unwrap_or_default();
                log.longest_heartbeat_gap = log.longest_heartbeat_gap.max(gap);
                log.last_heartbeat = Some(now);
            }
            // Sent ahead of the config that refers to them; nothing to answer.
            "certificates" => {}
            other => return Err(format!("unknown message {other}")),
        }
    }
}
