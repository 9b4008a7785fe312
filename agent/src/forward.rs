//! Service ports: one overlay listener per tunnel, each connection forwarded to the tunnel's
//! target. Reconciled against every snapshot: new ports start; removed ones stop and close
//! their connections; a changed target closes connections to the old one (a gateway's pooled
//! keep-alive connection would otherwise keep reaching it).

use async_io::Timer;
use futures_lite::future;
use kakuremichi_netstack::{Stack, TcpListener, TcpStream};
use kakuremichi_proto::ids::Target;
use kakuremichi_proto::messages::Service;
use kakuremichi_proto::ports::Transport;
use kakuremichi_proto::targets::TargetRules;
use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, RwLock};
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

/// How long to wait for a target to accept, unless its tunnel says otherwise.
const TARGET_CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// Where a service's connections go now. Dropping it closes every connection forwarded to
/// that target: each holds a receiver of `cancel`, which then reports closed.
struct Destination {
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
}

fn connect_timeout_of(service: &Service) -> Duration {
    service
        .connect_timeout_ms
        .map_or(TARGET_CONNECT_TIMEOUT, Duration::from_millis)
}

struct Running {
    destination: Arc<RwLock<Destination>>,
    _accept_loop: smol::Task<()>,
}

impl Drop for Running {
    fn drop(&mut self) {
        self.destination
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .cancel
            .close();
    }
}

/// The service ports currently listened on.
pub struct Services {
    stack: Stack,
    allowed: Arc<Allowed>,
    running: HashMap<u16, Running>,
}

impl Services {
    /// No services yet; targets outside `allowed` are refused.
    pub fn new(stack: Stack, allowed: Arc<Allowed>) -> Self {
        Services {
            stack,
            allowed,
            running: HashMap::new(),
        }
    }

    /// Listen on exactly the snapshot's service ports.
    pub fn reconcile(&mut self, services: &[Service]) {
        self.running
            .retain(|port, _| services.iter().any(|s| s.port == *port));
        for service in services {
            if let Some(running) = self.running.get(&service.port) {
                let mut destination = running
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
                continue;
            }
            match self.stack.listen(service.port) {
                Ok(listener) => {
                    let destination = Arc::new(RwLock::new(Destination::new(service)));
                    let task = smol::spawn(accept_loop(
                        listener,
                        destination.clone(),
                        self.allowed.clone(),
                        service.tunnel_id.clone(),
                    ));
                    self.running.insert(
                        service.port,
                        Running {
                            destination,
                            _accept_loop: task,
                        },
                    );
                }
                Err(e) => log::error!(
                    "tunnel {}: cannot listen on service port {}: {e}",
                    service.tunnel_id,
                    service.port
                ),
            }
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
    allowed: Arc<Allowed>,
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
        let (tunnel_id, allowed) = (tunnel_id.clone(), allowed.clone());
        // A forwarded connection lives until either side closes it or its target changes.
        smol::spawn(async move {
            let cancel = async {
                let _ = cancelled.recv().await;
                Ok(())
            };
            let carried = async {
                // On refusal the overlay stream is dropped, which closes it.
                let to = allowed.resolve(&target).await?;
                match transport {
                    Transport::Tcp => forward(stream, to, connect_timeout).await,
                    Transport::Udp => crate::udp::carry(stream, to).await,
                }
            };
            if let Err(e) = future::or(carried, cancel).await {
                log::warn!("tunnel {tunnel_id}: connection from {from} to {target}: {e}");
            }
        })
        .detach();
    }
}

async fn forward(
    overlay: TcpStream,
    target: SocketAddr,
    connect_timeout: Duration,
) -> std::io::Result<()> {
    let connect = smol::net::TcpStream::connect(target);
    let timeout = async {
        Timer::after(connect_timeout).await;
        Err(std::io::Error::new(
            std::io::ErrorKind::TimedOut,
            "target did not accept in time",
        ))
    };
    // On failure the overlay stream is dropped, which closes it: the gateway answers 502 at once.
    let origin = future::or(connect, timeout).await?;
    let _ = origin.set_nodelay(true);
    kakuremichi_rt::copy::copy_bidirectional(overlay, origin).await?;
    Ok(())
}
