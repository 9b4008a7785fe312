//! Public TCP and UDP ports of `tcp` and `udp` tunnels, opened and closed as snapshots say.
//!
//! TCP: each accepted connection is spliced to the agent's service port over the overlay,
//! after a PROXY header when the tunnel asks for one. UDP: each client address is a flow;
//! its datagrams travel to the agent framed on one overlay connection per public port (see
//! `kakuremichi_proto::datagrams`), and replies leave from the same public port.
//!
//! Dropping a port's entry closes its listener and every connection or flow through it.

use crate::drain::Drain;
use crate::front::TrustedFronts;
use crate::replicas::AgentDialer;
use crate::traffic::{OpenConnection, Outcome, Traffic};
use async_io::{Async, Timer};
use futures_lite::{future, AsyncReadExt, AsyncWriteExt};
use kakuremichi_netstack::TcpStream;
use kakuremichi_proto::datagrams::{self, Frame};
use kakuremichi_proto::messages::{PortRoute, Upstream};
use kakuremichi_proto::ports::{PortPolicy, PortRange, Transport};
use kakuremichi_proto::proxy_protocol;
use kakuremichi_proto::traffic::Failure;
use std::collections::HashMap;
use std::io;
use std::net::{IpAddr, SocketAddr, TcpListener, UdpSocket};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

/// How port tunnels behave; the defaults suit most, the tests shorten the timers.
#[derive(Clone, Debug)]
pub struct PortSettings {
    /// Address the public ports bind to (the HTTP listener's).
    pub bind_ip: IpAddr,
    /// Which ports tunnels may take, and the gateway's own.
    pub policy: PortPolicy,
    /// A UDP flow silent this long is forgotten (and its agent socket closed).
    pub udp_idle_timeout: Duration,
    /// Most UDP flows at once per public port; datagrams from further clients are dropped.
    pub udp_flows: usize,
    /// Most TCP connections at once per public port; further ones are closed at accept.
    pub tcp_connections: usize,
}

impl PortSettings {
    /// Every port tunnels may ask for; the gateway's own ports are reserved in `policy`.
    pub fn new(bind_ip: IpAddr, policy: PortPolicy) -> Self {
        PortSettings {
            bind_ip,
            policy,
            udp_idle_timeout: Duration::from_secs(60),
            udp_flows: 1024,
            tcp_connections: 4096,
        }
    }
}

/// Datagrams queued towards the agent per public port before new ones are dropped.
const UDP_QUEUE: usize = 1024;

/// Counters for `/metrics`.
#[derive(Default)]
pub struct PortMetrics {
    pub tcp_connections: AtomicU64,
    pub tcp_refused: AtomicU64,
    pub udp_datagrams_in: AtomicU64,
    pub udp_datagrams_out: AtomicU64,
    /// Datagrams dropped: the flow table was full or the agent could not keep up.
    pub udp_dropped: AtomicU64,
}

struct Open {
    upstream: Arc<RwLock<Upstream>>,
    _task: smol::Task<()>,
}

/// The open public ports.
pub struct PortListeners {
    agents: AgentDialer,
    settings: PortSettings,
    fronts: TrustedFronts,
    drain: Arc<Drain>,
    metrics: Arc<PortMetrics>,
    traffic: Traffic,
    open: HashMap<(Transport, u16), Open>,
}

impl PortListeners {
    /// No port open yet.
    pub fn new(
        agents: AgentDialer,
        settings: PortSettings,
        fronts: TrustedFronts,
        drain: Arc<Drain>,
        (metrics, traffic): (Arc<PortMetrics>, Traffic),
    ) -> Self {
        PortListeners {
            agents,
            settings,
            fronts,
            drain,
            metrics,
            traffic,
            open: HashMap::new(),
        }
    }

    /// The ports open now.
    pub fn open_ports(&self) -> usize {
        self.open.len()
    }

    /// Open exactly the routes' ports; a port whose upstream changed keeps its listener and
    /// sends new connections to the new upstream. Returns the ports that could not be opened
    /// and why, for the gateway's health.
    pub fn reconcile(&mut self, routes: &[PortRoute]) -> Vec<String> {
        self.open
            .retain(|key, _| routes.iter().any(|r| (r.transport, r.port) == *key));
        let mut problems = Vec::new();
        for route in routes {
            let key = (route.transport, route.port);
            if let Some(open) = self.open.get(&key) {
                *open.upstream.write().unwrap_or_else(|p| p.into_inner()) = route.upstream.clone();
                continue;
            }
            match self.start(route) {
                Ok(open) => {
                    self.open.insert(key, open);
                }
                Err(why) => {
                    let problem = format!(
                        "tunnel {}: cannot open {} port {}: {why}",
                        route.upstream.tunnel_id,
                        route.transport.as_str(),
                        route.port
                    );
                    log::error!("{problem}");
                    problems.push(problem);
                }
            }
        }
        problems
    }

    fn start(&self, route: &PortRoute) -> Result<Open, String> {
        let range = PortRange::single(route.port).map_err(|e| e.to_string())?;
        if let Some(why) = self.settings.policy.refuses(route.transport, range) {
            return Err(why);
        }
        let addr = SocketAddr::new(self.settings.bind_ip, route.port);
        let upstream = Arc::new(RwLock::new(route.upstream.clone()));
        let (agents, metrics) = (self.agents.clone(), self.metrics.clone());
        let task = match route.transport {
            Transport::Tcp => {
                let listener = Async::<TcpListener>::bind(addr).map_err(|e| e.to_string())?;
                let limit = self.settings.tcp_connections;
                kakuremichi_rt::spawn(accept_tcp(
                    listener,
                    agents,
                    upstream.clone(),
                    (metrics, self.traffic.clone()),
                    (self.fronts.clone(), self.drain.clone()),
                    limit,
                ))
            }
            Transport::Udp => {
                let socket = Async::<UdpSocket>::bind(addr).map_err(|e| e.to_string())?;
                // Many clients send at once; a small buffer would drop their bursts.
                if let Err(e) = kakuremichi_netstack::udp::enlarge_buffers(socket.get_ref()) {
                    log::debug!("udp port {}: socket buffers: {e}", route.port);
                }
                let flows = Flows::new(self.settings.udp_flows);
                let relay = UdpRelay {
                    socket: Arc::new(socket),
                    agents,
                    upstream: upstream.clone(),
                    metrics,
                    flows: Arc::new(Mutex::new(flows)),
                    traffic: self.traffic.clone(),
                    counted: Mutex::default(),
                };
                kakuremichi_rt::spawn(relay.run(self.settings.udp_idle_timeout))
            }
        };
        log::info!(
            "tunnel {}: {} port {} open",
            route.upstream.tunnel_id,
            route.transport.as_str(),
            route.port
        );
        Ok(Open {
            upstream,
            _task: task,
        })
    }
}

async fn accept_tcp(
    listener: Async<TcpListener>,
    agents: AgentDialer,
    upstream: Arc<RwLock<Upstream>>,
    (metrics, traffic): (Arc<PortMetrics>, Traffic),
    (fronts, drain): (TrustedFronts, Arc<Drain>),
    limit: usize,
) {
    // Connections are owned by this task's executor scope: dropping the task (the port
    // closed) drops them all.
    let executor = smol::Executor::new();
    let live = Arc::new(AtomicU64::new(0));
    let accept = async {
        loop {
            let (mut client, peer) = match listener.accept().await {
                Ok(accepted) => accepted,
                Err(e) => {
                    log::warn!("accept: {e}");
                    Timer::after(Duration::from_millis(100)).await;
                    continue;
                }
            };
            if live.load(Ordering::Relaxed) >= limit as u64 || drain.is_draining() {
                metrics.tcp_refused.fetch_add(1, Ordering::Relaxed);
                continue;
            }
            metrics.tcp_connections.fetch_add(1, Ordering::Relaxed);
            let _ = client.get_ref().set_nodelay(true);
            let upstream = upstream.read().unwrap_or_else(|p| p.into_inner()).clone();
            let (agents, fronts, cut) = (agents.clone(), fronts.clone(), drain.cut());
            let traffic = traffic.clone();
            let slot = Slot::take(&live);
            executor
                .spawn(async move {
                    let _slot = slot;
                    let from = match fronts.client_of(&mut client, peer).await {
                        Ok(from) => from,
                        Err(e) => return log::debug!("front {peer}: {e}"),
                    };
                    let spliced =
                        async { splice((&agents, &traffic), &upstream, client, from, &[]).await };
                    let cut = async {
                        cut.await;
                        Ok(())
                    };
                    if let Err(e) = future::or(spliced, cut).await {
                        log::debug!("tunnel {}: connection from {from}: {e}", upstream.tunnel_id);
                    }
                })
                .detach();
        }
    };
    executor.run(accept).await
}

/// One of a port's connection slots, given back when dropped.
struct Slot(Arc<AtomicU64>);

impl Slot {
    fn take(live: &Arc<AtomicU64>) -> Slot {
        live.fetch_add(1, Ordering::Relaxed);
        Slot(live.clone())
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

/// Forward `client` to the agent until either side closes: the PROXY header if the tunnel
/// wants one, then `already_read` (bytes taken from the client to choose the route), then
/// both directions.
/// The connection is counted in the tunnel's traffic.
pub(crate) async fn splice(
    (agents, traffic): (&AgentDialer, &Traffic),
    upstream: &Upstream,
    client: Async<std::net::TcpStream>,
    from: SocketAddr,
    already_read: &[u8],
) -> io::Result<()> {
    let mut agent = match agents.connect(upstream).await {
        Ok(agent) => agent,
        Err(e) => {
            traffic.refused(&upstream.tunnel_id, Outcome::Failed(Failure::Unreachable));
            return Err(e);
        }
    };
    let mut connection = traffic.connection(&upstream.tunnel_id);
    connection.moved(already_read.len() as u64, 0);
    // A replica a probe finds gone will not answer: its connections end then, as its HTTP
    // requests do, not when TCP gives up. Counted from now, before anything is sent.
    let gone = agents.health.until_probed_down(*agent.peer_addr().ip());
    let mut first = match upstream.proxy_protocol {
        Some(version) => {
            let local = client.get_ref().local_addr()?;
            proxy_protocol::header(version, Transport::Tcp, from, local)
        }
        None => Vec::new(),
    };
    first.extend_from_slice(already_read);
    if !first.is_empty() {
        agent.write_all(&first).await?;
    }
    // async-net's stream, because closing its write side sends FIN: a bare `Async`'s close
    // only flushes, so an origin that hung up left the client waiting.
    let client = smol::net::TcpStream::from(client);
    let gone = async {
        gone.await;
        Err(io::Error::other("the agent stopped answering its probes"))
    };
    let copied = kakuremichi_rt::copy::copy_bidirectional(client, agent);
    let (bytes_in, bytes_out) = futures_lite::future::or(copied, gone).await?;
    connection.moved(bytes_in, bytes_out);
    Ok(())
}

/// Client flows of one UDP port: address ↔ flow id, with when each was last heard.
struct Flows {
    limit: usize,
    next_id: u32,
    by_client: HashMap<SocketAddr, u32>,
    by_id: HashMap<u32, (SocketAddr, Instant)>,
}

impl Flows {
    fn new(limit: usize) -> Self {
        Flows {
            limit,
            next_id: 0,
            by_client: HashMap::new(),
            by_id: HashMap::new(),
        }
    }

    /// The flow of `client`, made if there is room.
    fn flow_of(&mut self, client: SocketAddr, now: Instant) -> Option<u32> {
        if let Some(&id) = self.by_client.get(&client) {
            self.by_id.insert(id, (client, now));
            return Some(id);
        }
        if self.by_client.len() >= self.limit {
            return None;
        }
        let id = self.next_id;
        self.next_id = self.next_id.wrapping_add(1);
        self.by_client.insert(client, id);
        self.by_id.insert(id, (client, now));
        Some(id)
    }

    fn client_of(&self, id: u32) -> Option<SocketAddr> {
        self.by_id.get(&id).map(|(client, _)| *client)
    }

    /// Forget flows silent since before `cutoff`; returns their ids.
    fn expire(&mut self, cutoff: Instant) -> Vec<u32> {
        let expired: Vec<u32> = self
            .by_id
            .iter()
            .filter(|(_, (_, seen))| *seen < cutoff)
            .map(|(id, _)| *id)
            .collect();
        for id in &expired {
            if let Some((client, _)) = self.by_id.remove(id) {
                self.by_client.remove(&client);
            }
        }
        expired
    }

    fn clear(&mut self) {
        self.by_client.clear();
        self.by_id.clear();
    }
}

struct UdpRelay {
    socket: Arc<Async<UdpSocket>>,
    agents: AgentDialer,
    upstream: Arc<RwLock<Upstream>>,
    metrics: Arc<PortMetrics>,
    flows: Arc<Mutex<Flows>>,
    traffic: Traffic,
    /// Each flow counted as a connection of the tunnel while it lasts.
    counted: Mutex<HashMap<u32, OpenConnection>>,
}

impl UdpRelay {
    async fn run(self, idle_timeout: Duration) {
        let (to_agent, outgoing) = async_channel::bounded::<Vec<u8>>(UDP_QUEUE);
        let receive = async {
            let mut buffer = vec![0u8; datagrams::MAX_DATAGRAM];
            loop {
                let Ok((len, client)) = self.socket.recv_from(&mut buffer).await else {
                    continue;
                };
                self.metrics
                    .udp_datagrams_in
                    .fetch_add(1, Ordering::Relaxed);
                let flow = self.lock_flows().flow_of(client, Instant::now());
                if let Some(flow) = flow {
                    self.count(flow, len as u64, 0);
                }
                let mut frame = Vec::with_capacity(datagrams::FRAME_HEADER + len);
                let framed = flow.map(|flow| datagrams::encode(flow, &buffer[..len], &mut frame));
                if !matches!(framed, Some(Ok(()))) || to_agent.try_send(frame).is_err() {
                    self.metrics.udp_dropped.fetch_add(1, Ordering::Relaxed);
                }
            }
        };
        let expire = async {
            loop {
                Timer::after(idle_timeout / 4).await;
                let ended = self.lock_flows().expire(Instant::now() - idle_timeout);
                let mut counted = self.counted.lock().unwrap_or_else(|p| p.into_inner());
                for flow in &ended {
                    counted.remove(flow);
                }
                drop(counted);
                for flow in ended {
                    let mut frame = Vec::new();
                    datagrams::encode_end(flow, &mut frame);
                    // A full queue means the carrier is stuck; it will be replaced and the
                    // agent then forgets every flow anyway.
                    let _ = to_agent.try_send(frame);
                }
            }
        };
        let carry = async {
            loop {
                let upstream = self
                    .upstream
                    .read()
                    .unwrap_or_else(|p| p.into_inner())
                    .clone();
                // Wait for something to send before reaching for the agent.
                let Ok(first) = outgoing.recv().await else {
                    return;
                };
                match self.agents.connect(&upstream).await {
                    Ok(carrier) => {
                        if let Err(e) = self.carry(carrier, first, &outgoing).await {
                            log::debug!("tunnel {}: udp carrier: {e}", upstream.tunnel_id);
                        }
                    }
                    Err(e) => {
                        log::warn!("tunnel {}: udp: {e}", upstream.tunnel_id);
                        self.metrics.udp_dropped.fetch_add(1, Ordering::Relaxed);
                    }
                }
                // The agent forgot every flow with the connection.
                self.lock_flows().clear();
                self.counted
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .clear();
            }
        };
        future::or(future::or(receive, expire), carry).await
    }

    fn lock_flows(&self) -> std::sync::MutexGuard<'_, Flows> {
        self.flows.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Count a datagram of `flow` in the tunnel's traffic; a new flow is a new connection.
    fn count(&self, flow: u32, bytes_in: u64, bytes_out: u64) {
        let upstream = self.upstream.read().unwrap_or_else(|p| p.into_inner());
        let mut counted = self.counted.lock().unwrap_or_else(|p| p.into_inner());
        counted
            .entry(flow)
            .or_insert_with(|| self.traffic.connection(&upstream.tunnel_id));
        drop(counted);
        self.traffic.moved(&upstream.tunnel_id, bytes_in, bytes_out);
    }

    /// Send queued frames on `carrier` and replies back to clients until it fails.
    async fn carry(
        &self,
        carrier: TcpStream,
        first: Vec<u8>,
        outgoing: &async_channel::Receiver<Vec<u8>>,
    ) -> io::Result<()> {
        let (mut reader, mut writer) = futures_lite::io::split(carrier);
        let send = async {
            writer.write_all(&first).await?;
            while let Ok(frame) = outgoing.recv().await {
                writer.write_all(&frame).await?;
                // Flush only when nothing else waits: a burst goes out in few segments.
                if outgoing.is_empty() {
                    writer.flush().await?;
                }
            }
            Ok(())
        };
        let replies = async {
            let mut buffer = Vec::with_capacity(64 * 1024);
            let mut chunk = vec![0u8; 64 * 1024];
            loop {
                let n = reader.read(&mut chunk).await?;
                if n == 0 {
                    return Err(io::Error::new(
                        io::ErrorKind::UnexpectedEof,
                        "the agent closed",
                    ));
                }
                buffer.extend_from_slice(&chunk[..n]);
                let mut used = 0;
                while let Some((frame, len)) = datagrams::decode(&buffer[used..])
                    .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e))?
                {
                    used += len;
                    let Frame::Datagram(flow, datagram) = frame else {
                        continue;
                    };
                    let client = self.lock_flows().client_of(flow);
                    if let Some(client) = client {
                        if self.socket.send_to(datagram, client).await.is_ok() {
                            self.count(flow, 0, datagram.len() as u64);
                            self.metrics
                                .udp_datagrams_out
                                .fetch_add(1, Ordering::Relaxed);
                        }
                    }
                }
                buffer.drain(..used);
            }
        };
        future::or(send, replies).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flows_are_bounded_and_expire() {
        let mut flows = Flows::new(2);
        let start = Instant::now();
        let (a, b, c): (SocketAddr, SocketAddr, SocketAddr) = (
            "203.0.113.1:1".parse().unwrap(),
            "203.0.113.2:1".parse().unwrap(),
            "203.0.113.3:1".parse().unwrap(),
        );
        let flow_a = flows.flow_of(a, start).unwrap();
        assert_eq!(flows.flow_of(a, start), Some(flow_a));
        flows.flow_of(b, start).unwrap();
        assert_eq!(flows.flow_of(c, start), None, "the table is full");
        // a keeps talking, b falls silent.
        let later = start + Duration::from_secs(30);
        flows.flow_of(a, later);
        let expired = flows.expire(start + Duration::from_secs(10));
        assert_eq!(expired.len(), 1);
        assert_eq!(flows.client_of(flow_a), Some(a));
        let flow_c = flows.flow_of(c, later).unwrap();
        assert_ne!(flow_c, flow_a);
        assert_eq!(flows.client_of(flow_c), Some(c));
    }
}
