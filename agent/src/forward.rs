//! Service ports: one overlay listener per tunnel, each connection forwarded to the tunnel's
//! target. Reconciled against every snapshot: new ports start; removed ones stop and close
//! their connections; a changed target closes connections to the old one (a gateway's pooled
//! keep-alive connection would otherwise keep reaching it).

use async_io::Timer;
use futures_lite::future;
use kakuremichi_netstack::{Stack, TcpListener};
use kakuremichi_proto::ids::Target;
use kakuremichi_proto::messages::{OriginFailure, Service};
use kakuremichi_proto::ports::Transport;
use kakuremichi_proto::targets::TargetRules;
use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

/// The agent's own list of targets it forwards to (`ALLOW_TARGETS`), and how many
/// connections it refused: whatever Control says, nothing outside it is reached.
pub struct Allowed {
    pub rules: TargetRules,
    pub refused: AtomicU64,
}

impl Allowed {
    /// Targets checked against `rules`.
    pub fn new(rules: TargetRules) -> Arc<Allowed> {
        Arc::new(Allowed {
            rules,
            refused: AtomicU64::new(0),
        })
    }

    /// The first address of `target` the rules admit; a target outside them fails like a
    /// refused connection (the gateway answers 502), and is counted and logged.
    pub async fn resolve(&self, target: &Target) -> std::io::Result<SocketAddr> {
        let addresses = smol::net::resolve((target.host(), target.port())).await?;
        if let Some(address) = addresses
            .iter()
            .find(|a| self.rules.admits(target.host(), **a))
        {
            return Ok(*address);
        }
        self.refused.fetch_add(1, Ordering::Relaxed);
        Err(std::io::Error::new(
            std::io::ErrorKind::ConnectionRefused,
            format!("{target} ({addresses:?}) is outside this agent's ALLOW_TARGETS or refused by default"),
        ))
    }
}

/// Tunnels whose target failed the latest connection, reported to Control (which shows them
/// instead of a calm "serving" while visitors get 502). A success clears the failure.
pub struct Origins {
    failing: Mutex<HashMap<String, OriginFailure>>,
    /// Tunnels whose failure an HTTP check found: a connection the target accepts does not
    /// clear it, only a check that passes.
    failed_check: Mutex<std::collections::HashSet<String>>,
    /// Called when a tunnel starts or stops failing, so Control hears at once.
    on_change: Box<dyn Fn() + Send + Sync>,
}

impl Origins {
    /// No failures yet; `on_change` runs whenever the set of failing tunnels changes.
    pub fn new(on_change: impl Fn() + Send + Sync + 'static) -> Self {
        Origins {
            failing: Mutex::new(HashMap::new()),
            failed_check: Mutex::default(),
            on_change: Box::new(on_change),
        }
    }

    /// The outcome of a check of `tunnel_id`'s target: an HTTP check's failure stays until
    /// a check passes.
    pub fn record_check(
        &self,
        tunnel_id: &str,
        target: &Target,
        outcome: Result<(), String>,
        (now, http): (u64, bool),
    ) {
        let mut failed_check = self.failed_check.lock().unwrap_or_else(|p| p.into_inner());
        match (&outcome, http) {
            (Err(_), true) => failed_check.insert(tunnel_id.to_string()),
            _ => failed_check.remove(tunnel_id),
        };
        drop(failed_check);
        self.record(tunnel_id, target, outcome, now);
    }

    /// Whether `tunnel_id`'s target is failing now.
    pub fn is_failing(&self, tunnel_id: &str) -> bool {
        let failing = self.failing.lock().unwrap_or_else(|p| p.into_inner());
        failing.contains_key(tunnel_id)
    }

    /// The outcome of one connection to `target` for `tunnel_id`, at `now` (Unix seconds).
    pub fn record(&self, tunnel_id: &str, target: &Target, outcome: Result<(), String>, now: u64) {
        if outcome.is_ok() {
            let failed_check = self.failed_check.lock().unwrap_or_else(|p| p.into_inner());
            if failed_check.contains(tunnel_id) {
                return;
            }
        }
        let mut failing = self.failing.lock().unwrap_or_else(|p| p.into_inner());
        let was_failing = failing.contains_key(tunnel_id);
        match outcome {
            Ok(()) => {
                failing.remove(tunnel_id);
            }
            Err(error) => {
                let target = target.to_string();
                let since = failing
                    .get(tunnel_id)
                    .filter(|f| f.target == target)
                    .map_or(now, |f| f.since);
                failing.insert(
                    tunnel_id.to_string(),
                    OriginFailure {
                        tunnel_id: tunnel_id.to_string(),
                        target,
                        error,
                        since,
                    },
                );
            }
        }
        if was_failing != failing.contains_key(tunnel_id) {
            drop(failing);
            (self.on_change)();
        }
    }

    /// Forget tunnels this agent no longer serves, and failures of a target since changed.
    fn keep_only(&self, services: &[Service]) {
        let mut failing = self.failing.lock().unwrap_or_else(|p| p.into_inner());
        failing.retain(|tunnel, failure| {
            services
                .iter()
                .any(|s| s.tunnel_id == *tunnel && s.target.to_string() == failure.target)
        });
    }

    /// The failing tunnels, by tunnel id.
    pub fn failing(&self) -> Vec<OriginFailure> {
        let failing = self.failing.lock().unwrap_or_else(|p| p.into_inner());
        let mut list: Vec<OriginFailure> = failing.values().cloned().collect();
        list.sort_by(|a, b| a.tunnel_id.cmp(&b.tunnel_id));
        list
    }
}

/// How long to wait for a target to accept, unless its tunnel says otherwise.
const TARGET_CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// Where a service's connections go now. Dropping it closes every connection forwarded to
/// that target: each holds a receiver of `cancel`, which then reports closed.
pub(crate) struct Destination {
    target: Target,
    transport: Transport,
    connect_timeout: Duration,
    cancel: async_channel::Sender<()>,
    cancelled: async_channel::Receiver<()>,
}

impl Destination {
    fn new(service: &Service) -> Self {
        let (cancel, cancelled) = async_channel::bounded(1);
        Destination {
            target: service.target.clone(),
            transport: service.transport,
            connect_timeout: connect_timeout_of(service),
            cancel,
            cancelled,
        }
    }

    /// Close every connection forwarded so far; new ones go to the same place.
    fn cut(&mut self) {
        self.cancel.close();
        (self.cancel, self.cancelled) = async_channel::bounded(1);
    }
}

fn connect_timeout_of(service: &Service) -> Duration {
    service
        .connect_timeout_ms
        .map_or(TARGET_CONNECT_TIMEOUT, Duration::from_millis)
}

/// One service port: its listener, open unless a check closed it, and where its
/// connections go.
pub(crate) struct Port {
    stack: Stack,
    port: u16,
    pub(crate) tunnel_id: String,
    pub(crate) destination: Arc<RwLock<Destination>>,
    pub(crate) allowed: Arc<Allowed>,
    pub(crate) origins: Arc<Origins>,
    accepting: Mutex<Option<smol::Task<()>>>,
}

impl Port {
    /// Listen, unless already listening.
    pub(crate) fn open(&self) -> std::io::Result<()> {
        let mut accepting = self.accepting.lock().unwrap_or_else(|p| p.into_inner());
        if accepting.is_none() {
            let listener = self.stack.listen(self.port)?;
            *accepting = Some(kakuremichi_rt::spawn(accept_loop(
                listener,
                self.destination.clone(),
                (self.allowed.clone(), self.origins.clone()),
                self.tunnel_id.clone(),
            )));
        }
        Ok(())
    }

    /// Stop listening and close the connections forwarded so far: gateways then reach the
    /// tunnel's other agents. Whether it was open.
    pub(crate) fn close(&self) -> bool {
        let closed = self
            .accepting
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .take();
        if closed.is_some() {
            self.destination
                .write()
                .unwrap_or_else(|p| p.into_inner())
                .cut();
        }
        closed.is_some()
    }

    /// The target and how it is reached now.
    pub(crate) fn target(&self) -> (Target, Transport, Duration) {
        let destination = self.destination.read().unwrap_or_else(|p| p.into_inner());
        let d = &*destination;
        (d.target.clone(), d.transport, d.connect_timeout)
    }
}

struct Running {
    port: Arc<Port>,
    /// How the target is checked, and whether other agents serve the tunnel too.
    health: Arc<RwLock<crate::health::Watch>>,
    _prober: smol::Task<()>,
}

impl Drop for Running {
    fn drop(&mut self) {
        self.port.close();
        let destination = self.port.destination.read();
        destination
            .unwrap_or_else(|p| p.into_inner())
            .cancel
            .close();
    }
}

/// The service ports currently listened on.
pub struct Services {
    stack: Stack,
    allowed: Arc<Allowed>,
    origins: Arc<Origins>,
    running: HashMap<u16, Running>,
}

impl Services {
    /// No services yet; targets outside `allowed` are refused; each connection's outcome
    /// goes to `origins`.
    pub fn new(stack: Stack, allowed: Arc<Allowed>, origins: Arc<Origins>) -> Self {
        Services {
            stack,
            allowed,
            origins,
            running: HashMap::new(),
        }
    }

    /// Listen on exactly the snapshot's service ports, and check their targets.
    pub fn reconcile(&mut self, services: &[Service]) {
        self.origins.keep_only(services);
        self.running
            .retain(|port, _| services.iter().any(|s| s.port == *port));
        for service in services {
            let watch = crate::health::Watch::of(service);
            if let Some(running) = self.running.get(&service.port) {
                let mut destination = running
                    .port
                    .destination
                    .write()
                    .unwrap_or_else(|p| p.into_inner());
                if (&destination.target, destination.transport)
                    != (&service.target, service.transport)
                {
                    destination.cancel.close();
                    *destination = Destination::new(service);
                }
                // A new timeout applies to the next connections; live ones stay.
                destination.connect_timeout = connect_timeout_of(service);
                drop(destination);
                *running.health.write().unwrap_or_else(|p| p.into_inner()) = watch;
                continue;
            }
            let port = Arc::new(Port {
                stack: self.stack.clone(),
                port: service.port,
                tunnel_id: service.tunnel_id.clone(),
                destination: Arc::new(RwLock::new(Destination::new(service))),
                allowed: self.allowed.clone(),
                origins: self.origins.clone(),
                accepting: Mutex::new(None),
            });
            if let Err(e) = port.open() {
                log::error!(
                    "tunnel {}: cannot listen on service port {}: {e}",
                    service.tunnel_id,
                    service.port
                );
                continue;
            }
            let health = Arc::new(RwLock::new(watch));
            let prober = kakuremichi_rt::spawn(crate::health::watch(port.clone(), health.clone()));
            self.running.insert(
                service.port,
                Running {
                    port,
                    health,
                    _prober: prober,
                },
            );
        }
    }

    /// How many service ports are open.
    pub fn len(&self) -> usize {
        self.running.len()
    }

    /// Whether no service port is open.
    pub fn is_empty(&self) -> bool {
        self.running.is_empty()
    }
}

async fn accept_loop(
    listener: TcpListener,
    destination: Arc<RwLock<Destination>>,
    (allowed, origins): (Arc<Allowed>, Arc<Origins>),
    tunnel_id: String,
) {
    loop {
        let Ok((stream, from)) = listener.accept().await else {
            continue;
        };
        let (target, transport, connect_timeout, cancelled) = {
            let destination = destination.read().unwrap_or_else(|p| p.into_inner());
            (
                destination.target.clone(),
                destination.transport,
                destination.connect_timeout,
                destination.cancelled.clone(),
            )
        };
        let (tunnel_id, allowed, origins) = (tunnel_id.clone(), allowed.clone(), origins.clone());
        // A forwarded connection lives until either side closes it or its target changes.
        kakuremichi_rt::spawn(async move {
            let cancel = async {
                let _ = cancelled.recv().await;
                Ok(())
            };
            let carried = async {
                // On refusal the overlay stream is dropped, which closes it.
                let reached = match allowed.resolve(&target).await {
                    Ok(to) if transport == Transport::Tcp => {
                        connect(to, connect_timeout).await.map(Reached::Tcp)
                    }
                    Ok(to) => Ok(Reached::Udp(to)),
                    Err(e) => Err(e),
                };
                let outcome = reached.as_ref().map(|_| ()).map_err(|e| e.to_string());
                origins.record(&tunnel_id, &target, outcome, kakuremichi_rt::unix_now());
                match reached? {
                    Reached::Tcp(origin) => {
                        kakuremichi_rt::copy::copy_bidirectional(stream, origin)
                            .await
                            .map(|_| ())
                    }
                    Reached::Udp(to) => crate::udp::carry(stream, to).await,
                }
            };
            if let Err(e) = future::or(carried, cancel).await {
                log::warn!("tunnel {tunnel_id}: connection from {from} to {target}: {e}");
            }
        })
        .detach();
    }
}

/// A target that answered: a TCP connection, or a UDP address (datagrams need no handshake).
enum Reached {
    Tcp(smol::net::TcpStream),
    Udp(SocketAddr),
}

/// A connection to `target` within `connect_timeout`. On failure the overlay stream is
/// dropped, which closes it: the gateway answers 502 at once.
pub(crate) async fn connect(
    target: SocketAddr,
    connect_timeout: Duration,
) -> std::io::Result<smol::net::TcpStream> {
    let connect = smol::net::TcpStream::connect(target);
    let timeout = async {
        Timer::after(connect_timeout).await;
        Err(std::io::Error::new(
            std::io::ErrorKind::TimedOut,
            "target did not accept in time",
        ))
    };
    let origin = future::or(connect, timeout).await?;
    let _ = origin.set_nodelay(true);
    Ok(origin)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn service(tunnel: &str, target: &str) -> Service {
        Service {
            tunnel_id: tunnel.into(),
            port: 1000,
            target: target.parse().unwrap(),
            transport: Transport::Tcp,
            connect_timeout_ms: None,
            health: None,
            replicated: false,
        }
    }

    #[test]
    fn a_failing_origin_is_kept_until_a_connection_succeeds() {
        let changes = Arc::new(AtomicU64::new(0));
        let counted = changes.clone();
        let origins = Origins::new(move || {
            counted.fetch_add(1, Ordering::Relaxed);
        });
        let target: Target = "127.0.0.1:3000".parse().unwrap();
        origins.record("t1", &target, Err("connection refused".into()), 100);
        origins.record("t1", &target, Err("timed out".into()), 160);
        let failing = origins.failing();
        assert_eq!(failing.len(), 1);
        // The run of failures began at the first; the error is the latest.
        assert_eq!(
            (failing[0].since, failing[0].error.as_str()),
            (100, "timed out")
        );
        origins.record("t1", &target, Ok(()), 200);
        assert!(origins.failing().is_empty());
    }

    #[test]
    fn failures_of_tunnels_gone_or_retargeted_are_forgotten() {
        let origins = Origins::new(|| {});
        let old: Target = "127.0.0.1:3000".parse().unwrap();
        origins.record("moved", &old, Err("refused".into()), 1);
        origins.record("gone", &old, Err("refused".into()), 1);
        origins.record("same", &old, Err("refused".into()), 1);
        origins.keep_only(&[
            service("moved", "127.0.0.1:4000"),
            service("same", "127.0.0.1:3000"),
        ]);
        let left: Vec<String> = origins.failing().into_iter().map(|f| f.tunnel_id).collect();
        assert_eq!(left, ["same"]);
    }
}
