//! The sans-I/O stack: WireGuard peers, smoltcp's interface and TCP sockets, and listener
//! backlogs. The caller owns the UDP socket and the clock: it feeds datagrams in with
//! [`Core::receive_datagram`], calls [`Core::poll`], sends what [`Core::poll_transmit`] hands
//! out, and calls again after [`Core::poll_delay`].
//!
//! smoltcp has no listen backlog (one listening socket takes one connection), so each SYN for
//! a listened port with a 4-tuple no socket owns yet gets a fresh listening socket before the
//! interface sees it; established ones move to the listener's bounded backlog.

use crate::device::QueueDevice;
use crate::peer::{DropCounters, PeerSpec, PeerStats, PeerTable};
use smoltcp::iface::{Config, Interface, SocketHandle, SocketSet};
use smoltcp::socket::tcp;
use smoltcp::time::{Duration, Instant};
use smoltcp::wire::{
    HardwareAddress, IpAddress, IpCidr, IpEndpoint, IpProtocol, Ipv4Packet, TcpPacket,
};
use std::collections::{HashMap, VecDeque};
use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4};
use std::task::Waker;

/// The most bytes of receive and of send buffer a TCP socket grows to; bounds each stream's
/// window.
pub const TCP_BUFFER_BYTES: usize = 256 * 1024;
/// What a socket starts with. Most overlay connections are idle (WebSockets, pooled
/// keep-alive connections): they keep this; busy ones grow (see [`grow_buffers_for_read`]).
pub const TCP_FIRST_BUFFER_BYTES: usize = 1024;
/// Connections accepted by the stack but not yet by the application, per listened port,
/// and connections still in their handshake: a burst of this many at once is taken in.
pub const MAX_BACKLOG: usize = 4096;
/// Keepalive probes on idle connections, so a vanished peer is noticed.
const TCP_KEEPALIVE: Duration = Duration::from_secs(3);
/// A connection whose peer is silent this long (unanswered data, SYN or keepalives) is aborted.
const TCP_TIMEOUT: Duration = Duration::from_secs(7);
/// How long a socket the application dropped may take to finish closing.
const ORPHAN_LINGER: Duration = Duration::from_secs(30);
const EPHEMERAL_PORTS: std::ops::RangeInclusive<u16> = 49152..=65535;
/// How often the packet pools and the socket table let go of memory a period did not need.
const POOL_TRIM_SECONDS: u32 = 5;

/// Why a connection could not be started.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ConnectError {
    /// The stack has no overlay address yet.
    NoAddress,
    /// No peer owns the destination address.
    NoRoute,
    /// Every ephemeral port is in use.
    NoPorts,
}

/// Why a port could not be listened on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ListenError {
    /// Someone listens on this port already.
    InUse,
    /// Port 0 cannot be listened on.
    Unaddressable,
}

#[derive(Default)]
struct Listener {
    /// Sockets in the handshake, not yet established.
    pending: Vec<SocketHandle>,
    /// Established connections waiting for `accept`.
    backlog: VecDeque<SocketHandle>,
    waker: Option<Waker>,
}

struct Orphan {
    handle: SocketHandle,
    deadline: Instant,
    aborted: bool,
}

/// One node's userspace network. See the module docs for the calling protocol.
pub struct Core {
    iface: Interface,
    device: QueueDevice,
    sockets: SocketSet<'static>,
    peers: PeerTable,
    address: Option<Ipv4Addr>,
    listeners: HashMap<u16, Listener>,
    orphans: Vec<Orphan>,
    next_ephemeral: u16,
    /// Seconds of timer ticks, for trimming the buffer pools.
    seconds: u32,
}

impl Core {
    /// A stack with this WireGuard private key, no address and no peers. `random_seed` seeds
    /// TCP initial sequence numbers and the first ephemeral port, so a restarted node does not
    /// reuse its previous run's connection tuples.
    pub fn new(private_key: [u8; 32], random_seed: u64, now: Instant) -> Self {
        let mut device = QueueDevice::default();
        let mut config = Config::new(HardwareAddress::Ip);
        config.random_seed = random_seed;
        let iface = Interface::new(config, &mut device, now);
        let span = u64::from(EPHEMERAL_PORTS.end() - EPHEMERAL_PORTS.start()) + 1;
        let first_port = EPHEMERAL_PORTS.start() + (random_seed % span) as u16;
        Core {
            iface,
            device,
            sockets: SocketSet::new(Vec::new()),
            peers: PeerTable::new(private_key),
            address: None,
            listeners: HashMap::new(),
            orphans: Vec::new(),
            next_ephemeral: first_port,
            seconds: 0,
        }
    }

    /// Set this node's overlay address; `prefix` is the overlay network's length.
    pub fn set_address(&mut self, ip: Ipv4Addr, prefix: u8) {
        self.address = Some(ip);
        self.iface.update_ip_addrs(|addrs| {
            addrs.clear();
            // A fresh Vec-backed list has room; an error here would mean capacity 0.
            let _ = addrs.push(IpCidr::new(IpAddress::Ipv4(ip), prefix.min(32)));
        });
    }

    /// The overlay address, once set.
    pub fn address(&self) -> Option<Ipv4Addr> {
        self.address
    }

    /// Replace the peer set (see [`PeerTable::set_peers`]).
    pub fn set_peers(&mut self, specs: &[PeerSpec]) {
        self.peers.set_peers(specs);
    }

    /// See [`PeerTable::probe_handshake`].
    pub fn probe_handshake(&mut self, public_key: &[u8; 32], to: std::net::SocketAddr) -> bool {
        self.peers.probe_handshake(public_key, to)
    }

    /// Per-peer counters.
    pub fn peer_stats(&self) -> Vec<PeerStats> {
        self.peers.stats()
    }

    /// What the peer table refused so far.
    pub fn drops(&self) -> &DropCounters {
        &self.peers.drops
    }

    /// Take in one UDP datagram from the network.
    pub fn receive_datagram(&mut self, now: Instant, from: SocketAddr, datagram: &[u8]) {
        let before = self.device.rx.len();
        self.peers
            .handle_datagram(from, datagram, &mut self.device.rx);
        for i in before..self.device.rx.len() {
            if self.prepare_listener_for(i) {
                // Let this SYN take its listening socket before another SYN in the batch
                // sees that socket still listening and counts on it too.
                self.poll(now);
                break;
            }
        }
    }

    /// If packet `i` of the receive queue opens a connection to a listened port, make sure a
    /// listening socket waits for it. Returns whether the SYN must be processed before the
    /// next packet is looked at (a listening socket is there for it).
    fn prepare_listener_for(&mut self, i: usize) -> bool {
        let Some((remote, port)) = self
            .device
            .rx
            .get(i)
            .and_then(|p| parse_syn(p, self.address))
        else {
            return false;
        };
        let Some(listener) = self.listeners.get(&port) else {
            return false;
        };
        let mut listening = false;
        for (_, socket) in self.sockets.iter() {
            #[allow(irrefutable_let_patterns)]
            let smoltcp::socket::Socket::Tcp(socket) = socket
            else {
                continue;
            };
            if socket.local_endpoint().map(|e| e.port) == Some(port)
                && socket.remote_endpoint() == Some(remote)
            {
                return false; // A retransmitted SYN, for the socket that has this tuple.
            }
            // A socket whose handshake was reset goes back to listening; it takes this SYN.
            listening |=
                socket.state() == tcp::State::Listen && socket.listen_endpoint().port == port;
        }
        if listening {
            return true;
        }
        if listener.pending.len() + listener.backlog.len() >= MAX_BACKLOG {
            return false; // smoltcp answers with a reset: the application is not keeping up.
        }
        let mut socket = new_tcp_socket();
        if socket.listen(port).is_err() {
            return false;
        }
        let handle = self.sockets.add(socket);
        if let Some(listener) = self.listeners.get_mut(&port) {
            listener.pending.push(handle);
        }
        true
    }

    /// Let smoltcp process what arrived and emit what it has to send, then encrypt that.
    pub fn poll(&mut self, now: Instant) {
        self.iface.poll(now, &mut self.device, &mut self.sockets);
        while let Some(packet) = self.device.tx.pop_front() {
            self.peers.send_packet(&packet);
            self.device.pool.give(packet);
        }
        for packet in self.device.spent.drain(..) {
            self.peers.pool.give(packet);
        }
        self.promote_accepted();
        self.reap_orphans(now);
    }

    fn promote_accepted(&mut self) {
        for listener in self.listeners.values_mut() {
            let mut woke = false;
            listener.pending.retain(|&handle| {
                let state = self.sockets.get::<tcp::Socket>(handle).state();
                match state {
                    tcp::State::Listen | tcp::State::SynReceived => true,
                    tcp::State::Closed => {
                        self.sockets.remove(handle);
                        false
                    }
                    _ => {
                        listener.backlog.push_back(handle);
                        woke = true;
                        false
                    }
                }
            });
            if woke {
                if let Some(waker) = listener.waker.take() {
                    waker.wake();
                }
            }
        }
    }

    fn reap_orphans(&mut self, now: Instant) {
        let sockets = &mut self.sockets;
        self.orphans.retain_mut(|orphan| {
            let socket = sockets.get_mut::<tcp::Socket>(orphan.handle);
            let done = matches!(socket.state(), tcp::State::Closed | tcp::State::TimeWait);
            if done || orphan.aborted {
                sockets.remove(orphan.handle);
                return false;
            }
            if now >= orphan.deadline {
                // Removed on the next poll, after the reset has gone out.
                socket.abort();
                orphan.aborted = true;
            }
            true
        });
    }

    /// Run WireGuard's timers; see [`PeerTable::update_timers`].
    pub fn update_timers(&mut self, new_second: bool) {
        self.peers.update_timers(new_second);
        if new_second {
            self.seconds = self.seconds.wrapping_add(1);
            if self.seconds.is_multiple_of(POOL_TRIM_SECONDS) {
                self.peers.pool.trim();
                self.device.pool.trim();
                // After 10,000 connections closed, their empty slots held about 8 MB in each
                // of gateway and agent, and every poll walked them.
                self.sockets.shrink_to_fit();
            }
        }
    }

    /// The next datagram to send, if any.
    pub fn poll_transmit(&mut self) -> Option<(SocketAddr, Vec<u8>)> {
        self.peers.to_network.pop_front()
    }

    /// Offer the datagrams waiting to be sent, oldest first, to `send`, which returns how
    /// many from the front it took. Returns whether none are left.
    pub fn transmit(
        &mut self,
        send: impl FnOnce(&VecDeque<(SocketAddr, Vec<u8>)>) -> usize,
    ) -> bool {
        let sent = send(&self.peers.to_network);
        for (_, datagram) in self.peers.to_network.drain(..sent) {
            self.peers.pool.give(datagram);
        }
        self.peers.to_network.is_empty()
    }

    /// How long until smoltcp needs polling again, if it has a deadline.
    pub fn poll_delay(&mut self, now: Instant) -> Option<Duration> {
        self.iface.poll_delay(now, &self.sockets)
    }

    /// Start a TCP connection to `remote` inside the overlay.
    pub fn tcp_connect(&mut self, remote: SocketAddrV4) -> Result<SocketHandle, ConnectError> {
        let local = self.address.ok_or(ConnectError::NoAddress)?;
        if !self.peers.has_route(*remote.ip()) {
            return Err(ConnectError::NoRoute);
        }
        let port = self.free_ephemeral_port().ok_or(ConnectError::NoPorts)?;
        let mut socket = new_tcp_socket();
        socket
            .connect(
                self.iface.context(),
                IpEndpoint::new(IpAddress::Ipv4(*remote.ip()), remote.port()),
                (IpAddress::Ipv4(local), port),
            )
            .map_err(|_| ConnectError::NoAddress)?;
        Ok(self.sockets.add(socket))
    }

    fn free_ephemeral_port(&mut self) -> Option<u16> {
        let used: std::collections::HashSet<u16> = self
            .sockets
            .iter()
            .filter_map(|(_, s)| match s {
                smoltcp::socket::Socket::Tcp(t) => t.local_endpoint().map(|e| e.port),
                #[allow(unreachable_patterns)]
                _ => None,
            })
            .collect();
        let span = EPHEMERAL_PORTS.end() - EPHEMERAL_PORTS.start() + 1;
        for _ in 0..span {
            let port = self.next_ephemeral;
            self.next_ephemeral = if port == *EPHEMERAL_PORTS.end() {
                *EPHEMERAL_PORTS.start()
            } else {
                port + 1
            };
            if !used.contains(&port) {
                return Some(port);
            }
        }
        None
    }

    /// Accept connections to `port`.
    pub fn tcp_listen(&mut self, port: u16) -> Result<(), ListenError> {
        if port == 0 {
            return Err(ListenError::Unaddressable);
        }
        if self.listeners.contains_key(&port) {
            return Err(ListenError::InUse);
        }
        self.listeners.insert(port, Listener::default());
        Ok(())
    }

    /// Stop accepting on `port`; connections not yet accepted are reset.
    pub fn tcp_unlisten(&mut self, port: u16) {
        if let Some(listener) = self.listeners.remove(&port) {
            for handle in listener.pending.into_iter().chain(listener.backlog) {
                self.sockets.get_mut::<tcp::Socket>(handle).abort();
                self.orphans.push(Orphan {
                    handle,
                    deadline: Instant::ZERO,
                    aborted: true,
                });
            }
        }
    }

    /// The next established connection on `port`, or `None` after registering `waker`.
    pub fn tcp_accept(&mut self, port: u16, waker: &Waker) -> Option<SocketHandle> {
        let listener = self.listeners.get_mut(&port)?;
        let handle = listener.backlog.pop_front();
        if handle.is_none() {
            listener.waker = Some(waker.clone());
        }
        handle
    }

    /// The TCP socket behind a handle.
    pub fn tcp(&mut self, handle: SocketHandle) -> &mut tcp::Socket<'static> {
        self.sockets.get_mut::<tcp::Socket>(handle)
    }

    /// The application is done with a socket: close it gracefully, and remove it once closed
    /// or after a linger time.
    pub fn tcp_release(&mut self, handle: SocketHandle, now: Instant) {
        let socket = self.sockets.get_mut::<tcp::Socket>(handle);
        if socket.state() == tcp::State::Closed {
            self.sockets.remove(handle);
            return;
        }
        socket.close();
        self.orphans.push(Orphan {
            handle,
            deadline: now + ORPHAN_LINGER,
            aborted: false,
        });
    }

    /// How many TCP sockets exist (open, handshaking, closing).
    pub fn socket_count(&self) -> usize {
        self.sockets.iter().count()
    }
}

fn new_tcp_socket() -> tcp::Socket<'static> {
    let mut socket = tcp::Socket::new(
        tcp::SocketBuffer::new(vec![0; TCP_FIRST_BUFFER_BYTES]),
        tcp::SocketBuffer::new(vec![0; TCP_FIRST_BUFFER_BYTES]),
    );
    socket.set_max_recv_capacity(TCP_BUFFER_BYTES);
    socket.set_nagle_enabled(false);
    // Without congestion control smoltcp sends a whole window at once, overruns UDP socket
    // buffers and then waits out retransmission timeouts.
    socket.set_congestion_control(tcp::CongestionControl::Cubic);
    socket.set_keep_alive(Some(TCP_KEEPALIVE));
    socket.set_timeout(Some(TCP_TIMEOUT));
    socket
}

/// Before a read: a receive buffer found at least half full means the window, not the
/// reader, limits the stream, so it grows (fourfold, up to [`TCP_BUFFER_BYTES`]).
pub fn grow_buffers_for_read(socket: &mut tcp::Socket<'static>) {
    let capacity = socket.recv_capacity();
    if capacity < TCP_BUFFER_BYTES && socket.recv_queue() * 2 >= capacity {
        socket.grow_recv_buffer((capacity * 4).min(TCP_BUFFER_BYTES));
    }
}

/// Before a write: a full send buffer means the writer outpaces what is acknowledged, so
/// it grows (fourfold, up to [`TCP_BUFFER_BYTES`]).
pub fn grow_buffers_for_write(socket: &mut tcp::Socket<'static>) {
    let capacity = socket.send_capacity();
    if capacity < TCP_BUFFER_BYTES && socket.send_queue() == capacity {
        socket.resize_send_buffer((capacity * 4).min(TCP_BUFFER_BYTES));
    }
}

/// The remote endpoint and local port of a TCP SYN (without ACK) addressed to `local`.
fn parse_syn(packet: &[u8], local: Option<Ipv4Addr>) -> Option<(IpEndpoint, u16)> {
    let ip = Ipv4Packet::new_checked(packet).ok()?;
    if ip.next_header() != IpProtocol::Tcp || Some(ip.dst_addr()) != local {
        return None;
    }
    let tcp = TcpPacket::new_checked(ip.payload()).ok()?;
    if !tcp.syn() || tcp.ack() || tcp.rst() {
        return None;
    }
    Some((
        IpEndpoint::new(IpAddress::Ipv4(ip.src_addr()), tcp.src_port()),
        tcp.dst_port(),
    ))
}
