//! Nodes without a data plane, speaking Control's real node protocol over its WebSocket: each
//! says hello with a fresh key, records every config it is sent (version, size, when),
//! answers that it applied it, and answers heartbeats. Hundreds or thousands run on one
//! thread, so a test can watch what a change costs a large fleet.

use async_tungstenite::tungstenite::client::IntoClientRequest;
use async_tungstenite::tungstenite::Message;
use futures_lite::StreamExt;
use kakuremichi_proto::ids::PublicKey;
use kakuremichi_proto::messages::{encode, Hello, NodeMessage};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Instant;

/// What a simulated node reads of Control's messages (`ControlMessage`, tagged by `type`).
#[derive(serde::Deserialize)]
struct Envelope {
    #[serde(rename = "type")]
    kind: String,
    version: Option<u64>,
    /// A config patch's other messages follow.
    #[serde(default)]
    more: bool,
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
}

/// A simulated node of `kind` (`agent` or `gateway`), connected until dropped.
pub struct SimulatedNode {
    pub id: String,
    pub log: Arc<Mutex<Log>>,
    _task: smol::Task<()>,
}

impl SimulatedNode {
    /// Connect as the node with `api_key` to Control at `control`.
    pub fn connect(control: SocketAddr, kind: &str, id: &str, api_key: &str) -> SimulatedNode {
        let log = Arc::new(Mutex::new(Log::default()));
        let url = format!("ws://{control}/ws/{kind}");
        let (key, kind, written) = (api_key.to_string(), kind.to_string(), log.clone());
        let task = smol::spawn(async move {
            let ended = match session(control, &url, &key, &kind, &written).await {
                Ok(()) => "closed by Control".to_string(),
                Err(e) => e,
            };
            lock(&written).ended = Some(ended);
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
}

fn lock(log: &Mutex<Log>) -> std::sync::MutexGuard<'_, Log> {
    log.lock().unwrap_or_else(|p| p.into_inner())
}

async fn session(
    control: SocketAddr,
    url: &str,
    api_key: &str,
    kind: &str,
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
    };
    let send = |message: NodeMessage| Message::text(encode(&message));
    ws.send(send(NodeMessage::Hello(hello)))
        .await
        .map_err(|e| format!("hello: {e}"))?;
    // The bytes of a patch's messages so far.
    let mut pending = 0;
    while let Some(message) = ws.next().await {
        let text = match message.map_err(|e| format!("socket: {e}"))? {
            Message::Text(text) => text,
            Message::Close(_) => return Ok(()),
            _ => continue,
        };
        // Only the type and version: a gateway's config at scale is hundreds of KB, and
        // decoding each in full made the simulator, not Control, the bottleneck.
        let envelope: Envelope = serde_json::from_str(&text).map_err(|e| e.to_string())?;
        let reply = match envelope.kind.as_str() {
            "config" => {
                let version = envelope.version.ok_or("a config without a version")?;
                pending += text.len();
                if envelope.more {
                    continue;
                }
                lock(log).configs.push(Received {
                    version,
                    bytes: std::mem::take(&mut pending),
                    at: Instant::now(),
                });
                NodeMessage::Applied { version }
            }
            "heartbeat" => NodeMessage::Heartbeat,
            // Sent ahead of the config that refers to them; nothing to answer.
            "certificates" => continue,
            other => return Err(format!("unknown message {other}")),
        };
        ws.send(send(reply))
            .await
            .map_err(|e| format!("send: {e}"))?;
    }
    Ok(())
}
