//! The control WebSocket, from the node's side.

use crate::state_dir::StateDir;
use crate::Error;
use async_io::Timer;
use async_tungstenite::tungstenite::client::IntoClientRequest;
use async_tungstenite::tungstenite::http::{HeaderValue, Uri};
use async_tungstenite::tungstenite::protocol::WebSocketConfig;
use async_tungstenite::tungstenite::{self, Message};
use futures_lite::{future, StreamExt};
use kakuremichi_proto::ids::{NodeKind, PublicKey};
use kakuremichi_proto::messages::{
    decode, encode, CertificateBundle, ConfigSnapshot, ControlMessage, Hello, NodeMessage,
    NodeStatus, HEARTBEAT_INTERVAL, MAX_MESSAGE_BYTES, MISSED_HEARTBEATS_OFFLINE,
};
use kakuremichi_proto::patch::Assembly;
use kakuremichi_proto::request_log::{LogEntry, LogQuery};
use kakuremichi_rt::metrics::Readings;
use std::collections::{HashMap, HashSet};
use std::future::Future;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

/// Time allowed for TCP connect plus the WebSocket handshake.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// How often the node looks whether a WireGuard session came up or went down, to tell
/// Control then rather than at the next heartbeat.
const PEER_WATCH: Duration = Duration::from_secs(1);
/// First and largest pause between reconnection attempts. The cap keeps a node within ten
/// seconds of a Control that comes back.
const BACKOFF_FIRST: Duration = Duration::from_millis(250);
const BACKOFF_CAP: Duration = Duration::from_secs(6);
/// A session that lasted this long resets the backoff.
const STABLE_SESSION: Duration = Duration::from_secs(30);

/// Where Control is, parsed from `CONTROL_URL`.
#[derive(Clone, Debug)]
pub struct ControlUrl {
    host: String,
    port: u16,
    ws_url: String,
    tls: bool,
}

impl ControlUrl {
    /// Parse `http://host[:port][/prefix]` for a node of `kind`.
    pub fn parse(raw: &str, kind: NodeKind) -> Result<ControlUrl, Error> {
        let uri: Uri = raw
            .parse()
            .map_err(|e| Error::Config(format!("CONTROL_URL {raw:?}: {e}")))?;
        let (default_port, tls) = match uri.scheme_str() {
            Some("http") => (80, false),
            Some("https") => (443, true),
            _ => {
                return Err(Error::Config(format!(
                    "CONTROL_URL {raw:?} must start with http:// or https://"
                )))
            }
        };
        let host = uri
            .host()
            .ok_or_else(|| Error::Config(format!("CONTROL_URL {raw:?} has no host")))?;
        let host = host
            .trim_start_matches('[')
            .trim_end_matches(']')
            .to_string();
        let port = uri.port_u16().unwrap_or(default_port);
        let prefix = uri.path().trim_end_matches('/');
        let authority = uri.authority().map_or(host.clone(), |a| a.to_string());
        let scheme = if tls { "wss" } else { "ws" };
        let ws_url = format!("{scheme}://{authority}{prefix}/ws/{}", kind.as_str());
        Ok(ControlUrl {
            host,
            port,
            ws_url,
            tls,
        })
    }
}

/// What the link needs to know.
pub struct LinkSettings {
    /// Control's address.
    pub control: ControlUrl,
    /// The node's API key.
    pub api_key: String,
    /// What the node says in its hello.
    pub hello: Hello,
    /// Where snapshots are cached.
    pub state_dir: StateDir,
    /// TLS for an `https://` Control: the web PKI plus any extra roots (`CONTROL_CA`).
    pub tls: Option<futures_rustls::TlsConnector>,
}

/// A TLS client trusting the web PKI and the PEM certificates in `extra_roots` (such as
/// Control's internal CA, from `/ca.pem`).
pub fn tls_connector(
    extra_roots: Option<&std::path::Path>,
) -> Result<futures_rustls::TlsConnector, Error> {
    use futures_rustls::rustls::{self, pki_types::pem::PemObject};
    let mut roots = rustls::RootCertStore {
        roots: webpki_roots::TLS_SERVER_ROOTS.to_vec(),
    };
    if let Some(path) = extra_roots {
        let unreadable = |e: &dyn std::fmt::Display| {
            Error::Config(format!("CONTROL_CA {}: {e}", path.display()))
        };
        for cert in
            rustls::pki_types::CertificateDer::pem_file_iter(path).map_err(|e| unreadable(&e))?
        {
            roots
                .add(cert.map_err(|e| unreadable(&e))?)
                .map_err(|e| unreadable(&e))?;
        }
    }
    let provider = std::sync::Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| Error::Config(e.to_string()))?
        .with_root_certificates(roots)
        .with_no_client_auth();
    Ok(futures_rustls::TlsConnector::from(std::sync::Arc::new(
        config,
    )))
}

/// The byte stream under the WebSocket: plain TCP or TLS over it.
trait Transport: futures_lite::AsyncRead + futures_lite::AsyncWrite + Unpin + Send {}
impl<T: futures_lite::AsyncRead + futures_lite::AsyncWrite + Unpin + Send> Transport for T {}

/// The link's state, shared with the node: whether it is up, and the config version the
/// node applied (reported to Control, which waits for it before ACME validation).
#[derive(Debug)]
pub struct LinkState {
    connected: AtomicBool,
    applied: AtomicU64,
    /// Sessions opened and snapshots received since start (a quiet cluster keeps both still).
    sessions: AtomicU64,
    snapshots: AtomicU64,
    applied_changed: (async_channel::Sender<()>, async_channel::Receiver<()>),
}

impl Default for LinkState {
    fn default() -> Self {
        LinkState {
            connected: AtomicBool::new(false),
            applied: AtomicU64::new(0),
            sessions: AtomicU64::new(0),
            snapshots: AtomicU64::new(0),
            applied_changed: async_channel::bounded(1),
        }
    }
}

impl LinkState {
    /// Whether a session with Control is open.
    pub fn is_connected(&self) -> bool {
        self.connected.load(Ordering::Relaxed)
    }

    /// The node now runs config `version`; Control hears of it at once.
    pub fn report_applied(&self, version: u64) {
        self.applied.store(version, Ordering::Relaxed);
        // A full channel already holds a pending report, which will read the newest version.
        let _ = self.applied_changed.0.try_send(());
    }

    /// Control sessions opened since the node started.
    pub fn sessions(&self) -> u64 {
        self.sessions.load(Ordering::Relaxed)
    }

    /// Something the status reports changed (an origin began or stopped failing): Control
    /// hears of it at once, with the applied version, not at the next heartbeat.
    pub fn report_status(&self) {
        let _ = self.applied_changed.0.try_send(());
    }

    /// Config snapshots received since the node started.
    pub fn snapshots(&self) -> u64 {
        self.snapshots.load(Ordering::Relaxed)
    }

    /// The link's counters, for `/metrics`.
    pub fn read_metrics(&self, readings: &mut Readings) {
        readings
            .gauge(
                "control_connected",
                "1 while the session with Control is open.",
                u64::from(self.is_connected()),
            )
            .counter(
                "control_sessions",
                "Sessions with Control opened since start.",
                self.sessions(),
            )
            .counter(
                "config_snapshots",
                "Config snapshots received from Control.",
                self.snapshots(),
            );
    }

    /// The config version the node runs.
    pub fn applied(&self) -> u64 {
        self.applied.load(Ordering::Relaxed)
    }
}

/// Keep a session with Control open forever: every snapshot received is cached in the state
/// handed to `apply` (which keeps each with [`StateDir::keep_config`] once applied); `status`
/// is reported with each heartbeat; Control's log queries are answered by `answer`.
pub async fn run(
    settings: LinkSettings,
    state: &LinkState,
    mut apply: impl FnMut(ConfigSnapshot),
    status: impl Fn() -> NodeStatus,
    answer: impl Fn(&LogQuery) -> Vec<LogEntry>,
) {
    let mut backoff = BACKOFF_FIRST;
    loop {
        let started = Instant::now();
        let error = session(&settings, state, &mut apply, (&status, &answer)).await;
        state.connected.store(false, Ordering::Relaxed);
        match &error {
            Error::Unauthorized => log::error!("{error}; retrying in {backoff:?}"),
            _ => log::warn!("{error}; reconnecting in {backoff:?}"),
        }
        if started.elapsed() > STABLE_SESSION {
            backoff = BACKOFF_FIRST;
        }
        Timer::after(jitter(backoff)).await;
        backoff = (backoff * 2).min(BACKOFF_CAP);
    }
}

/// `base` plus up to a quarter of it, so many nodes do not reconnect in lockstep.
fn jitter(base: Duration) -> Duration {
    let mut byte = [0u8; 1];
    let _ = getrandom::fill(&mut byte);
    base + base.mul_f64(f64::from(byte[0]) / 1024.0)
}

async fn timeout<T>(
    limit: Duration,
    what: &str,
    work: impl Future<Output = Result<T, Error>>,
) -> Result<T, Error> {
    future::or(work, async {
        Timer::after(limit).await;
        Err(Error::Connection(format!(
            "{what} timed out after {limit:?}"
        )))
    })
    .await
}

enum Event {
    Received(Option<Result<Message, tungstenite::Error>>),
    Applied,
    Tick,
    WatchPeers,
}

/// One session; returns why it ended.
async fn session(
    settings: &LinkSettings,
    state: &LinkState,
    apply: &mut impl FnMut(ConfigSnapshot),
    (status, answer): (
        &impl Fn() -> NodeStatus,
        &impl Fn(&LogQuery) -> Vec<LogEntry>,
    ),
) -> Error {
    let control = &settings.control;
    let connect = async {
        // Connecting by name resolves DNS again on every attempt.
        let tcp = smol::net::TcpStream::connect((control.host.as_str(), control.port))
            .await
            .map_err(|e| Error::Connection(format!("{}:{}: {e}", control.host, control.port)))?;
        let stream: Box<dyn Transport> = match (&settings.tls, control.tls) {
            (Some(tls), true) => {
                let name =
                    futures_rustls::rustls::pki_types::ServerName::try_from(control.host.clone())
                        .map_err(|e| Error::Config(format!("CONTROL_URL host: {e}")))?;
                let stream = tls
                    .connect(name, tcp)
                    .await
                    .map_err(|e| Error::Connection(format!("TLS with {}: {e}", control.host)))?;
                Box::new(stream)
            }
            (None, true) => {
                return Err(Error::Config(
                    "https CONTROL_URL without a TLS client".into(),
                ))
            }
            (_, false) => Box::new(tcp),
        };
        let mut request = control
            .ws_url
            .as_str()
            .into_client_request()
            .map_err(|e| Error::Config(e.to_string()))?;
        let bearer =
            HeaderValue::from_str(&format!("Bearer {}", settings.api_key)).map_err(|_| {
                Error::Config("API_KEY contains characters not allowed in a header".into())
            })?;
        request.headers_mut().insert("authorization", bearer);
        let mut config = WebSocketConfig::default();
        config.max_message_size = Some(MAX_MESSAGE_BYTES);
        config.max_frame_size = Some(MAX_MESSAGE_BYTES);
        match async_tungstenite::client_async_with_config(request, stream, Some(config)).await {
            Ok((ws, _)) => Ok(ws),
            Err(tungstenite::Error::Http(response)) if response.status() == 401 => {
                Err(Error::Unauthorized)
            }
            Err(e) => Err(Error::Connection(format!(
                "handshake with {}: {e}",
                control.ws_url
            ))),
        }
    };
    let mut ws = match timeout(CONNECT_TIMEOUT, "connecting to Control", connect).await {
        Ok(ws) => ws,
        Err(e) => return e,
    };
    let hello = NodeMessage::Hello(settings.hello.clone());
    if let Err(e) = send_all(&mut ws, [hello]).await {
        return e;
    }
    log::info!("connected to Control at {}", control.ws_url);
    let _ = state.applied_changed.0.try_send(());
    state.connected.store(true, Ordering::Relaxed);
    state.sessions.fetch_add(1, Ordering::Relaxed);
    let mut last_heard = Instant::now();
    // Control's snapshot says the interval; until it arrives, the default.
    let mut interval = HEARTBEAT_INTERVAL;
    let mut next_heartbeat = Instant::now() + interval;
    // The live peers Control was last told of on this session.
    let mut told_live = Vec::new();
    // Certificates Control sent on this session, by digest, for configs to refer to.
    let mut held: HashMap<String, CertificateBundle> = HashMap::new();
    // The config as Control sent it on this session, which its patches apply to.
    let mut assembly = Assembly::default();
    loop {
        let applied = async {
            let _ = state.applied_changed.1.recv().await;
            Event::Applied
        };
        let tick = async {
            Timer::at(next_heartbeat).await;
            Event::Tick
        };
        let watch = async {
            Timer::after(PEER_WATCH).await;
            Event::WatchPeers
        };
        let event = future::or(
            async { Event::Received(ws.next().await) },
            future::or(applied, future::or(tick, watch)),
        )
        .await;
        match event {
            Event::Received(Some(Ok(Message::Text(text)))) => {
                last_heard = Instant::now();
                match decode::<ControlMessage>(&text) {
                    Ok(ControlMessage::Certificates { certificates }) => {
                        held.extend(certificates.into_iter().map(|c| (c.digest, c.bundle)));
                    }
                    Ok(ControlMessage::Config(patch)) => {
                        let mut snapshot = match assembly.receive(*patch) {
                            Ok(Some(snapshot)) => snapshot,
                            Ok(None) => continue,
                            Err(e) => return Error::Protocol(e),
                        };
                        if let Err(e) = resolve_certificates(&mut snapshot, &mut held) {
                            return Error::Protocol(e);
                        }
                        state.snapshots.fetch_add(1, Ordering::Relaxed);
                        if snapshot.heartbeat_interval() != interval {
                            interval = snapshot.heartbeat_interval();
                            next_heartbeat = Instant::now() + interval;
                        }
                        apply(snapshot);
                    }
                    Ok(ControlMessage::Heartbeat) => {}
                    Ok(ControlMessage::LogQuery(query)) => {
                        let entries = answer(&query);
                        let logs = NodeMessage::Logs {
                            id: query.id,
                            entries,
                        };
                        if let Err(e) = send_all(&mut ws, [logs]).await {
                            return e;
                        }
                    }
                    Err(e) => return Error::Protocol(e.to_string()),
                }
            }
            Event::Received(Some(Ok(Message::Close(_)))) | Event::Received(None) => {
                return Error::Connection("Control closed the connection".into())
            }
            Event::Received(Some(Ok(_))) => last_heard = Instant::now(),
            Event::Received(Some(Err(e))) => return Error::Connection(e.to_string()),
            Event::Applied => {
                let applied = NodeMessage::Applied {
                    version: state.applied(),
                };
                // The status goes along: what the snapshot could not do shows at once.
                let reports = status().into_reports(&mut told_live);
                let reports = reports.into_iter().map(NodeMessage::Status);
                if let Err(e) = send_all(&mut ws, std::iter::once(applied).chain(reports)).await {
                    return e;
                }
            }
            Event::Tick => {
                if last_heard.elapsed() > interval * MISSED_HEARTBEATS_OFFLINE {
                    return Error::Connection("Control missed its heartbeats".into());
                }
                next_heartbeat = Instant::now() + interval;
                let reports = status().into_reports(&mut told_live);
                let reports = reports.into_iter().map(NodeMessage::Status);
                let heartbeat = std::iter::once(NodeMessage::Heartbeat);
                if let Err(e) = send_all(&mut ws, heartbeat.chain(reports)).await {
                    return e;
                }
            }
            Event::WatchPeers => {
                let reports = status().into_reports(&mut told_live);
                // Traffic taken for a report is sent, not dropped.
                let changed = |r: &NodeStatus| {
                    r.peer_changes.as_ref().is_some_and(|c| !c.is_empty()) || !r.traffic.is_empty()
                };
                if reports.iter().any(changed) {
                    let reports = reports.into_iter().map(NodeMessage::Status);
                    if let Err(e) = send_all(&mut ws, reports).await {
                        return e;
                    }
                }
            }
        }
    }
}

/// Send `messages` in order; the first that fails ends the session.
async fn send_all(
    ws: &mut async_tungstenite::WebSocketStream<Box<dyn Transport>>,
    messages: impl IntoIterator<Item = NodeMessage>,
) -> Result<(), Error> {
    for message in messages {
        let text = Message::text(encode(&message));
        ws.send(text)
            .await
            .map_err(|e| Error::Connection(e.to_string()))?;
    }
    Ok(())
}

/// What every node's `/metrics` says of its WireGuard side: the config version it runs,
/// its peers, bytes each way, open overlay sockets, and datagrams refused by reason.
pub fn read_node_metrics(
    readings: &mut Readings,
    config_version: u64,
    stack: &kakuremichi_netstack::Stack,
) {
    let peers = stack.peer_stats();
    readings
        .gauge(
            "config_version",
            "The config version the node runs.",
            config_version,
        )
        .gauge("peers", "WireGuard peers configured.", peers.len() as u64)
        .gauge(
            "peers_up",
            "WireGuard peers with a live session.",
            peers.iter().filter(|p| p.is_up()).count() as u64,
        )
        .counter(
            "wireguard_rx_bytes",
            "Bytes received from WireGuard peers.",
            peers.iter().map(|p| p.rx_bytes).sum(),
        )
        .counter(
            "wireguard_tx_bytes",
            "Bytes sent to WireGuard peers.",
            peers.iter().map(|p| p.tx_bytes).sum(),
        )
        .gauge(
            "tcp_sockets",
            "TCP sockets open on the overlay.",
            stack.socket_count() as u64,
        );
    for (reason, count) in stack.drops().by_reason() {
        readings.counter_with(
            "wireguard_dropped",
            "Datagrams the WireGuard socket refused, by reason.",
            &[("reason", reason)],
            count,
        );
    }
}

/// Summarise a netstack's peers for a status report.
pub fn netstack_status(config_version: u64, stack: &kakuremichi_netstack::Stack) -> NodeStatus {
    let peers = stack.peer_stats();
    NodeStatus {
        config_version,
        peers_up: peers.iter().filter(|p| p.is_up()).count() as u32,
        rx_bytes: peers.iter().map(|p| p.rx_bytes).sum(),
        tx_bytes: peers.iter().map(|p| p.tx_bytes).sum(),
        live_peers: peers
            .iter()
            .filter(|p| p.is_up())
            .map(|p| PublicKey(p.public_key))
            .collect(),
        ..NodeStatus::default()
    }
}

/// Put the certificates `snapshot` refers to in its `certificates`, from those Control sent
/// ahead of it (`held`), and forget the ones it no longer refers to, as Control does.
fn resolve_certificates(
    snapshot: &mut ConfigSnapshot,
    held: &mut HashMap<String, CertificateBundle>,
) -> Result<(), String> {
    let references = std::mem::take(&mut snapshot.certificate_refs);
    for reference in &references {
        let bundle = held.get(&reference.digest).ok_or_else(|| {
            format!(
                "config version {} refers to a certificate for {} that Control did not send",
                snapshot.version, reference.hostname
            )
        })?;
        snapshot.certificates.push(bundle.clone());
    }
    let wanted: HashSet<&str> = references.iter().map(|r| r.digest.as_str()).collect();
    held.retain(|digest, _| wanted.contains(digest.as_str()));
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn control_urls() {
        let url = ControlUrl::parse("http://control.lan:7080", NodeKind::Agent).unwrap();
        assert_eq!((url.host.as_str(), url.port), ("control.lan", 7080));
        assert_eq!(url.ws_url, "ws://control.lan:7080/ws/agent");
        let url = ControlUrl::parse("http://[::1]/k/", NodeKind::Gateway).unwrap();
        assert_eq!(
            (url.host.as_str(), url.port, url.ws_url.as_str()),
            ("::1", 80, "ws://[::1]/k/ws/gateway")
        );
        let url = ControlUrl::parse("https://control.example.com", NodeKind::Agent).unwrap();
        assert_eq!(
            (url.port, url.tls, url.ws_url.as_str()),
            (443, true, "wss://control.example.com/ws/agent")
        );
        assert!(ControlUrl::parse("ftp://x", NodeKind::Agent).is_err());
        assert!(ControlUrl::parse("control:7080", NodeKind::Agent).is_err());
    }

    fn bundle(hostname: &str) -> CertificateBundle {
        CertificateBundle {
            hostname: hostname.parse().unwrap(),
            chain_pem: format!("chain of {hostname}"),
            key_pem: format!("key of {hostname}"),
            publicly_trusted: false,
        }
    }

    fn referring_to(refs: &[(&str, &str)]) -> ConfigSnapshot {
        let refs: Vec<_> = refs
            .iter()
            .map(|(hostname, digest)| serde_json::json!({"hostname": hostname, "digest": digest}))
            .collect();
        serde_json::from_value(serde_json::json!({
            "version": 7, "node_id": "gw_1", "overlay_ip": "10.77.0.1", "overlay_prefix": 16,
            "peers": [], "certificate_refs": refs,
        }))
        .unwrap()
    }

    #[test]
    fn configs_get_the_certificates_sent_ahead_of_them_and_the_rest_are_forgotten() {
        let mut held = HashMap::from([
            ("da".to_string(), bundle("a.test")),
            ("db".to_string(), bundle("b.test")),
        ]);
        let mut config = referring_to(&[("a.test", "da")]);
        resolve_certificates(&mut config, &mut held).unwrap();
        assert_eq!(config.certificates, vec![bundle("a.test")]);
        assert!(config.certificate_refs.is_empty());
        assert_eq!(held.keys().collect::<Vec<_>>(), ["da"]);

        // One Control did not send (or that this node forgot) is refused, by name.
        let mut config = referring_to(&[("a.test", "da"), ("c.test", "dc")]);
        let refused = resolve_certificates(&mut config, &mut held).unwrap_err();
        assert!(refused.contains("c.test"), "{refused}");
    }
}
