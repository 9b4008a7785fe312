//! One node's control WebSocket: hello, snapshot, then snapshots on change and heartbeats
//! both ways until the socket closes or the node falls silent.

use crate::hub::SessionHandle;
mod hellos;
mod patches;

pub use hellos::Hellos;

use crate::model::{node_config, NodeRecord, SnapshotSettings};
use crate::Control;
use async_io::Timer;
use async_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use async_tungstenite::tungstenite::protocol::CloseFrame;
use async_tungstenite::tungstenite::Message;
use async_tungstenite::WebSocketStream;
use futures_lite::{future, AsyncRead, AsyncWrite, StreamExt};
use kakuremichi_proto::ids::NodeKind;
use kakuremichi_proto::messages::{
    decode, encode, ControlMessage, DigestedCertificate, Hello, NodeMessage,
};
use kakuremichi_proto::request_log::{LogQuery, FEATURE};
use kakuremichi_proto::traffic::{TrafficPoint, ALL_TUNNELS};
use std::collections::HashSet;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// How long a node has to send its hello after the upgrade.
const HELLO_TIMEOUT: Duration = Duration::from_secs(10);

enum Event {
    Received(Option<Result<Message, async_tungstenite::tungstenite::Error>>),
    StoreChanged,
    Tick,
    /// A person asked the gateway's request log.
    LogQuery(LogQuery),
}

/// Serve one node, authenticated as `node`, until its socket ends, the node is removed or
/// its API key is rotated.
pub async fn run<S>(
    control: Arc<Control>,
    node: NodeRecord,
    address: std::net::IpAddr,
    mut ws: WebSocketStream<S>,
) where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let NodeRecord {
        id: node_id,
        kind,
        api_key_hash,
        ..
    } = node;
    let Some(hello) = receive_hello(&mut ws, &node_id).await else {
        return;
    };
    // A hello that changes the node's record (its key, its addresses) reaches the other
    // nodes through the store's commit.
    match control
        .hellos
        .record(&control.store, &node_id, &hello)
        .await
    {
        Ok(_) => {}
        Err(e) => {
            log::warn!("node {node_id}: hello refused: {e}");
            let _ = ws.close(None).await;
            return;
        }
    }
    log::info!("node {node_id} connected (version {})", hello.version);
    let session = control.hub.register(&node_id, kind, address);
    // A gateway that keeps a request log answers the Logs page's queries.
    let asked = (kind == NodeKind::Gateway && hello.features.iter().any(|f| f == FEATURE))
        .then(|| control.logs.join(&node_id));
    let speaker = Speaker {
        control: &control,
        session: &session,
        node_id: &node_id,
        kind,
        instance: hello.instance,
    };
    let mut sent = Sent::default();
    let credential = Credential {
        node_id: &node_id,
        api_key_hash: &api_key_hash,
    };
    if let Err(e) = push_snapshot(&control, &session, &credential, &mut ws, &mut sent).await {
        log::info!("node {node_id}: {e}");
        return;
    }
    // A deadline, not a timer restarted per event: the node's own messages arrive about as
    // often as heartbeats, and restarting the timer on each kept Control from ever sending.
    let interval = control.hub.heartbeat();
    let mut next_heartbeat = Instant::now() + interval;
    loop {
        // A heartbeat that is due goes before a nudge: in a burst of changes (a fleet's
        // hellos) a nudge is always waiting, and the node, never sent a heartbeat to answer,
        // looked silent and was dropped.
        let event = future::or(async { Event::Received(ws.next().await) }, async {
            future::or(
                async {
                    Timer::at(next_heartbeat).await;
                    Event::Tick
                },
                future::or(
                    async {
                        let _ = session.changed.recv().await;
                        Event::StoreChanged
                    },
                    async {
                        match asked.as_ref().map(|a| a.queries.recv()) {
                            Some(query) => match query.await {
                                Ok(query) => Event::LogQuery(query),
                                Err(_) => future::pending().await,
                            },
                            None => future::pending().await,
                        }
                    },
                ),
            )
            .await
        })
        .await;
        let outcome = match event {
            Event::Received(Some(Ok(message))) => speaker.handle(message),
            Event::Received(Some(Err(e))) => Err(format!("socket error: {e}")),
            Event::Received(None) => Err("disconnected".to_string()),
            Event::StoreChanged if control.hub.stopping() => {
                // Going away (1001): the node reconnects as soon as Control is back, instead
                // of waiting out three heartbeats of silence.
                let frame = CloseFrame {
                    code: CloseCode::Away,
                    reason: "Control is stopping".into(),
                };
                let _ = ws.close(Some(frame)).await;
                return;
            }
            Event::StoreChanged => {
                push_snapshot(&control, &session, &credential, &mut ws, &mut sent).await
            }
            Event::LogQuery(query) => send(&mut ws, &ControlMessage::LogQuery(query)).await,
            // Changes other processes commit (the CLI's) come as nudges too: the hub polls.
            Event::Tick => {
                next_heartbeat = Instant::now() + interval;
                heartbeat(&speaker, &mut ws).await
            }
        };
        if let Err(reason) = outcome {
            log::info!("node {node_id}: {reason}");
            let _ = ws.close(None).await;
            return;
        }
    }
}

/// The node's first message, its hello, within [`HELLO_TIMEOUT`]; otherwise the socket is
/// closed and the reason logged.
async fn receive_hello<S>(ws: &mut WebSocketStream<S>, node_id: &str) -> Option<Hello>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let hello = match future::or(async { Some(ws.next().await) }, async {
        Timer::after(HELLO_TIMEOUT).await;
        None
    })
    .await
    {
        Some(Some(Ok(Message::Text(text)))) => decode::<NodeMessage>(&text),
        _ => {
            log::warn!("node {node_id}: no hello within {HELLO_TIMEOUT:?}; closing");
            return None;
        }
    };
    let hello = match hello {
        Ok(NodeMessage::Hello(hello)) => hello,
        other => {
            let why = match other {
                Ok(message) => format!("{message:?}"),
                Err(e) => e.to_string(),
            };
            log::warn!("node {node_id}: first message was not a valid hello ({why}); closing");
            let _ = ws.close(None).await;
            return None;
        }
    };
    Some(hello)
}

/// The node on the other end of a session, and where what it says goes.
struct Speaker<'a> {
    control: &'a Control,
    session: &'a SessionHandle,
    node_id: &'a str,
    kind: NodeKind,
    /// The node's process, from its hello: a gateway's traffic is kept per process.
    instance: u64,
}

impl Speaker<'_> {
    fn handle(&self, message: Message) -> Result<(), String> {
        let (session, node_id) = (self.session, self.node_id);
        match message {
            Message::Text(text) => match decode::<NodeMessage>(&text) {
                Ok(NodeMessage::Heartbeat) => session.heard(None),
                Ok(NodeMessage::Applied { version }) => session.applied(version),
                Ok(NodeMessage::Status(mut status)) => {
                    self.keep_traffic(std::mem::take(&mut status.traffic));
                    session.heard(Some(status))
                }
                Ok(NodeMessage::Logs { id, entries }) => {
                    self.control.logs.answered(id, node_id, entries)
                }
                Ok(NodeMessage::Hello(_)) => log::debug!("node {node_id}: repeated hello ignored"),
                Err(e) => return Err(format!("bad message: {e}")),
            },
            Message::Ping(_) | Message::Pong(_) => session.heard(None),
            Message::Close(_) => return Err("closed by node".into()),
            Message::Binary(_) | Message::Frame(_) => return Err("unexpected binary frame".into()),
        }
        Ok(())
    }

    /// A gateway's counts of the tunnels Control has go to the traffic history; anything
    /// else a node says it moved is not kept.
    fn keep_traffic(&self, mut points: Vec<TrafficPoint>) {
        if points.is_empty() || self.kind != NodeKind::Gateway {
            return;
        }
        let Some(state) = self.control.store.last_shared_state() else {
            return;
        };
        points.retain(|p| p.tunnel_id == ALL_TUNNELS || state.tunnel(&p.tunnel_id).is_ok());
        self.control
            .traffic
            .submit(self.node_id, self.instance, points);
    }
}

async fn heartbeat<S: AsyncRead + AsyncWrite + Unpin>(
    speaker: &Speaker<'_>,
    ws: &mut WebSocketStream<S>,
) -> Result<(), String> {
    let (control, session) = (speaker.control, speaker.session);
    if session.silence() > control.hub.offline_after() {
        // What the node sent while this session was busy sending (a large config to a
        // slow reader) is waiting in the socket: it was not silent. Read that first.
        while let Some(message) = future::or(async { Some(ws.next().await) }, async {
            future::yield_now().await;
            None
        })
        .await
        {
            match message {
                Some(Ok(message)) => speaker.handle(message)?,
                Some(Err(e)) => return Err(format!("socket error: {e}")),
                None => return Err("disconnected".to_string()),
            }
        }
    }
    if session.silence() > control.hub.offline_after() {
        return Err("missed heartbeats; offline".into());
    }
    send(ws, &ControlMessage::Heartbeat).await
}

/// Who the session speaks for, and with which key: a rotated key ends the session.
struct Credential<'a> {
    node_id: &'a str,
    api_key_hash: &'a str,
}

/// What the session last gave its node.
#[derive(Default)]
struct Sent {
    /// The newest revision looked at.
    revision: Option<u64>,
    /// The config the node holds.
    config: patches::Held,
    /// The digests of the certificates the node holds: those its last config refers to.
    certificates: HashSet<String>,
}

/// Send the node the changes to its config at the store's revision, unless that revision was
/// looked at already or changes nothing for the node: a change elsewhere costs it nothing.
async fn push_snapshot<S: AsyncRead + AsyncWrite + Unpin>(
    control: &Control,
    session: &SessionHandle,
    credential: &Credential<'_>,
    ws: &mut WebSocketStream<S>,
    sent: &mut Sent,
) -> Result<(), String> {
    // The state the hub decoded for everyone when it last nudged; the store's own only when
    // that one does not know this node yet (it was enrolled since). A fleet connecting at
    // once then costs one decode per burst, not one per hello.
    let decoded = control.store.last_shared_state();
    let state = match decoded.filter(|s| s.node(credential.node_id).is_some()) {
        Some(state) => state,
        None => control.store.shared_state().map_err(|e| e.to_string())?,
    };
    if sent.revision == Some(state.revision) {
        return Ok(());
    }
    let node = state.node(credential.node_id).ok_or("node was removed")?;
    if node.api_key_hash != credential.api_key_hash {
        return Err("API key was rotated".into());
    }
    let settings = SnapshotSettings {
        heartbeat: control.hub.heartbeat(),
        access_login_url: Some(format!(
            "{}/access",
            control.public_url.trim_end_matches('/')
        )),
    };
    let config = node_config(&state, node, &settings);
    let served = match config.certificate_refs.is_empty() {
        true => &[][..],
        false => state.served_certificates(),
    };
    let held = sent.config.version();
    let messages = sent.config.patch(config, state.revision);
    sent.revision = Some(state.revision);
    if messages.is_empty() {
        if let Some(held) = held {
            session.holds(held, state.revision);
        }
        return Ok(());
    }
    send_certificates(ws, served, &sent.certificates).await?;
    for message in messages {
        send(ws, &ControlMessage::Config(Box::new(message))).await?;
    }
    session.holds(state.revision, state.revision);
    control.hub.count_push();
    // The node keeps what this config refers to and drops the rest, and so does this record.
    sent.certificates = served.iter().map(|c| c.digest.clone()).collect();
    Ok(())
}

/// About the most bytes of config entries or certificates in one message. tungstenite keeps
/// its write buffer as large as the largest message a session sent, for the session's life:
/// with messages of up to 1 MiB, 10,000 idle agents each held 22 KB of first config there
/// (and a gateway up to 1 MiB of certificates). A gateway's first config at 10,000 agents
/// (4 MB) then takes a thousand messages, which cost Control milliseconds.
const MESSAGE_BYTES: usize = 4 << 10;

/// Send the node those of `served` it does not have (`held`), in messages of at most
/// [`MESSAGE_BYTES`] of PEM each (or one certificate, if larger).
async fn send_certificates<S: AsyncRead + AsyncWrite + Unpin>(
    ws: &mut WebSocketStream<S>,
    served: &[DigestedCertificate],
    held: &HashSet<String>,
) -> Result<(), String> {
    let mut batch = Vec::new();
    let mut bytes = 0;
    for certificate in served.iter().filter(|c| !held.contains(&c.digest)) {
        let size = certificate.bundle.chain_pem.len() + certificate.bundle.key_pem.len();
        if bytes + size > MESSAGE_BYTES && !batch.is_empty() {
            let certificates = std::mem::take(&mut batch);
            send(ws, &ControlMessage::Certificates { certificates }).await?;
            bytes = 0;
        }
        batch.push(certificate.clone());
        bytes += size;
    }
    if !batch.is_empty() {
        send(
            ws,
            &ControlMessage::Certificates {
                certificates: batch,
            },
        )
        .await?;
    }
    Ok(())
}

async fn send<S: AsyncRead + AsyncWrite + Unpin>(
    ws: &mut WebSocketStream<S>,
    message: &ControlMessage,
) -> Result<(), String> {
    ws.send(Message::text(encode(message)))
        .await
        .map_err(|e| format!("send failed: {e}"))
}
