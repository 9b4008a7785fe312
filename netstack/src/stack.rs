//! The I/O edge: a smol task that owns the UDP socket and the timers and drives [`Core`], and
//! async TCP sockets over it.
//!
//! Streams and the driver share the core behind one mutex. A stream that reads or writes
//! nudges the driver, which polls smoltcp and flushes datagrams; smoltcp's wakers wake the
//! streams when data or space appears. Buffers are smoltcp's own, so a slow reader stops the
//! peer through the TCP window: nothing queues without bound.

use crate::core::{ConnectError, Core, ListenError};
use crate::peer::{PeerSpec, PeerStats};
use crate::udp::WireSocket;
use async_io::Timer;
use futures_lite::{future, AsyncRead, AsyncWrite};
use smoltcp::iface::SocketHandle;
use smoltcp::socket::tcp;
use std::io;
use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4};
use std::pin::Pin;
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

/// How often WireGuard's timers run (boringtun expects a few times a second).
const TIMER_TICK: Duration = Duration::from_millis(250);
/// Receive system calls per wakeup before smoltcp is polled (each takes a batch).
const RECEIVE_BATCHES: usize = 8;
/// How long `connect` waits for the handshake.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

struct Shared {
    core: Mutex<Core>,
    nudge: async_channel::Sender<()>,
    epoch: Instant,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, Core> {
        // A panic while holding the lock would leave smoltcp mid-update; the stack is not
        // usable after that, and every caller would fail the same way.
        self.core
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    fn now(&self) -> smoltcp::time::Instant {
        smoltcp::time::Instant::from_micros(self.epoch.elapsed().as_micros() as i64)
    }

    fn nudge(&self) {
        // A full channel already holds a pending nudge: dropping this one is what we want.
        let _ = self.nudge.try_send(());
    }
}

/// A handle to a running userspace stack. Clones share it; the driver stops when the last
/// clone is dropped.
#[derive(Clone)]
pub struct Stack {
    shared: Arc<Shared>,
    local_addr: SocketAddr,
    _driver: Arc<smol::Task<()>>,
}

impl Stack {
    /// Bind the WireGuard UDP socket and start the driver.
    pub async fn bind(listen: SocketAddr, private_key: [u8; 32]) -> io::Result<Stack> {
        let udp = WireSocket::bind(listen)?;
        let local_addr = udp.local_addr()?;
        let epoch = Instant::now();
        let (nudge, nudged) = async_channel::bounded(1);
        let mut seed = [0u8; 8];
        getrandom::fill(&mut seed).map_err(|e| io::Error::other(format!("no randomness: {e}")))?;
        let shared = Arc::new(Shared {
            core: Mutex::new(Core::new(
                private_key,
                u64::from_le_bytes(seed),
                smoltcp::time::Instant::ZERO,
            )),
            nudge,
            epoch,
        });
        let driver = kakuremichi_rt::spawn(drive(shared.clone(), udp, nudged));
        Ok(Stack {
            shared,
            local_addr,
            _driver: Arc::new(driver),
        })
    }

    /// The bound UDP address.
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// Set the overlay address.
    pub fn set_address(&self, ip: Ipv4Addr, prefix: u8) {
        self.shared.lock().set_address(ip, prefix);
    }

    /// The overlay address, once set.
    pub fn address(&self) -> Option<Ipv4Addr> {
        self.shared.lock().address()
    }

    /// Replace the peer set; sessions of peers that stay are kept.
    pub fn set_peers(&self, peers: &[PeerSpec]) {
        self.shared.lock().set_peers(peers);
        self.shared.nudge();
    }

    /// Send a peer a handshake initiation at `to` instead of its endpoint; if it answers
    /// from there, the peer's endpoint moves there (a path is tried without leaving the one
    /// in use). `false` for an unknown peer.
    pub fn probe_handshake(&self, public_key: &[u8; 32], to: SocketAddr) -> bool {
        let sent = self.shared.lock().probe_handshake(public_key, to);
        self.shared.nudge();
        sent
    }

    /// Per-peer counters.
    pub fn peer_stats(&self) -> Vec<PeerStats> {
        self.shared.lock().peer_stats()
    }

    /// What the WireGuard side refused so far, by reason.
    pub fn drops(&self) -> crate::peer::DropCounters {
        self.shared.lock().drops().clone()
    }

    /// Open TCP sockets (including closing ones).
    pub fn socket_count(&self) -> usize {
        self.shared.lock().socket_count()
    }

    /// Connect to a TCP port inside the overlay, waiting at most [`CONNECT_TIMEOUT`].
    pub async fn connect(&self, remote: SocketAddrV4) -> io::Result<TcpStream> {
        let handle = self
            .shared
            .lock()
            .tcp_connect(remote)
            .map_err(|e| match e {
                ConnectError::NoAddress => io::Error::new(
                    io::ErrorKind::NotConnected,
                    "overlay address not configured",
                ),
                ConnectError::NoRoute => io::Error::new(
                    io::ErrorKind::HostUnreachable,
                    format!("no peer owns {}", remote.ip()),
                ),
                ConnectError::NoPorts => {
                    io::Error::new(io::ErrorKind::AddrInUse, "no free ephemeral port")
                }
            })?;
        let stream = TcpStream {
            shared: self.shared.clone(),
            handle,
            peer: remote,
        };
        self.shared.nudge();
        let established = future::poll_fn(|cx| {
            let mut core = self.shared.lock();
            let socket = core.tcp(handle);
            match socket.state() {
                tcp::State::SynSent | tcp::State::SynReceived => {
                    socket.register_send_waker(cx.waker());
                    Poll::Pending
                }
                tcp::State::Closed => Poll::Ready(Err(io::Error::new(
                    io::ErrorKind::ConnectionRefused,
                    format!("{remote} refused or did not answer"),
                ))),
                _ => Poll::Ready(Ok(())),
            }
        });
        let timeout = async {
            Timer::after(CONNECT_TIMEOUT).await;
            Err(io::Error::new(
                io::ErrorKind::TimedOut,
                format!("no answer from {remote}"),
            ))
        };
        future::or(established, timeout).await?;
        Ok(stream)
    }

    /// Accept TCP connections on a port of the overlay address.
    pub fn listen(&self, port: u16) -> io::Result<TcpListener> {
        self.shared.lock().tcp_listen(port).map_err(|e| match e {
            ListenError::InUse => io::Error::new(
                io::ErrorKind::AddrInUse,
                format!("port {port} is already listened on"),
            ),
            ListenError::Unaddressable => io::Error::new(io::ErrorKind::InvalidInput, "port 0"),
        })?;
        Ok(TcpListener {
            shared: self.shared.clone(),
            port,
        })
    }
}

/// What ended the driver's wait.
enum Woken {
    Readable,
    Other,
}

async fn drive(shared: Arc<Shared>, mut udp: WireSocket, nudged: async_channel::Receiver<()>) {
    let mut next_tick = Instant::now();
    let mut ticks: u32 = 0;
    // Each wait used to make a timer and read the socket once more: under load that was a
    // timer insertion and removal (each waking the reactor) and a receive call that found
    // nothing, per wakeup. The timer is kept and only moved earlier; the socket is read only
    // when it was reported readable or the last round stopped at its batch limit.
    let mut timer = Timer::at(next_tick);
    let mut timer_deadline = next_tick;
    let mut may_receive = true;
    loop {
        let delay;
        let blocked_on_send;
        {
            let mut core = shared.lock();
            let now = shared.now();
            if may_receive {
                may_receive = false;
                for batch in 0..RECEIVE_BATCHES {
                    if udp.receive(|from, datagram| core.receive_datagram(now, from, datagram)) == 0
                    {
                        break;
                    }
                    may_receive = batch + 1 == RECEIVE_BATCHES;
                }
            }
            if Instant::now() >= next_tick {
                ticks = ticks.wrapping_add(1);
                core.update_timers(ticks.is_multiple_of(4));
                next_tick = Instant::now() + TIMER_TICK;
            }
            core.poll(now);
            blocked_on_send = !core.transmit(|queue| udp.send_from(queue));
            let until_tick = next_tick.saturating_duration_since(Instant::now());
            delay = core
                .poll_delay(now)
                .map(|d| Duration::from_micros(d.total_micros()))
                .map_or(until_tick, |d| d.min(until_tick));
        }
        if (delay.is_zero() || may_receive) && !blocked_on_send {
            future::yield_now().await;
            continue;
        }
        let deadline = Instant::now() + delay;
        // A timer that fires early costs one idle round; moving it costs the reactor a wakeup.
        if deadline < timer_deadline || timer_deadline <= Instant::now() {
            timer.set_at(deadline);
            timer_deadline = deadline;
        }
        let readable = async {
            let _ = udp.readable().await;
            Woken::Readable
        };
        let writable = async {
            if blocked_on_send {
                let _ = udp.writable().await;
            } else {
                future::pending::<()>().await;
            }
            Woken::Other
        };
        let nudge = async {
            if nudged.recv().await.is_err() {
                future::pending::<()>().await;
            }
            Woken::Other
        };
        let fired = async {
            (&mut timer).await;
            Woken::Other
        };
        let woken = future::or(future::or(readable, writable), future::or(nudge, fired)).await;
        may_receive = matches!(woken, Woken::Readable);
    }
}

/// A TCP connection inside the overlay. Dropping it closes it gracefully.
pub struct TcpStream {
    shared: Arc<Shared>,
    handle: SocketHandle,
    peer: SocketAddrV4,
}

impl std::fmt::Debug for TcpStream {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TcpStream")
            .field("peer", &self.peer)
            .finish_non_exhaustive()
    }
}

impl TcpStream {
    /// The remote end's overlay address and port.
    pub fn peer_addr(&self) -> SocketAddrV4 {
        self.peer
    }
}

impl AsyncRead for TcpStream {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut [u8],
    ) -> Poll<io::Result<usize>> {
        let mut core = self.shared.lock();
        let socket = core.tcp(self.handle);
        crate::core::grow_buffers_for_read(socket);
        if socket.can_recv() {
            let n = socket
                .recv_slice(buf)
                .map_err(|e| io::Error::other(e.to_string()))?;
            drop(core);
            // The window opened: let the driver tell the peer.
            self.shared.nudge();
            return Poll::Ready(Ok(n));
        }
        if !socket.may_recv() {
            return Poll::Ready(match socket.state() {
                tcp::State::Closed if socket.remote_endpoint().is_none() => Err(io::Error::new(
                    io::ErrorKind::ConnectionReset,
                    "connection reset or timed out",
                )),
                _ => Ok(0),
            });
        }
        socket.register_recv_waker(cx.waker());
        Poll::Pending
    }
}

impl AsyncWrite for TcpStream {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let mut core = self.shared.lock();
        let socket = core.tcp(self.handle);
        if !socket.may_send() {
            return Poll::Ready(Err(io::Error::new(
                io::ErrorKind::BrokenPipe,
                "connection closed",
            )));
        }
        crate::core::grow_buffers_for_write(socket);
        if socket.can_send() {
            let n = socket
                .send_slice(buf)
                .map_err(|e| io::Error::other(e.to_string()))?;
            drop(core);
            self.shared.nudge();
            return Poll::Ready(Ok(n));
        }
        socket.register_send_waker(cx.waker());
        Poll::Pending
    }

    fn poll_flush(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        // Bytes in smoltcp's send buffer are on their way; the driver was nudged on write.
        Poll::Ready(Ok(()))
    }

    fn poll_close(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.shared.lock().tcp(self.handle).close();
        self.shared.nudge();
        Poll::Ready(Ok(()))
    }
}

impl Drop for TcpStream {
    fn drop(&mut self) {
        let now = self.shared.now();
        self.shared.lock().tcp_release(self.handle, now);
        self.shared.nudge();
    }
}

/// Accepts connections on one overlay port. Dropping it stops listening.
pub struct TcpListener {
    shared: Arc<Shared>,
    port: u16,
}

impl std::fmt::Debug for TcpListener {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TcpListener")
            .field("port", &self.port)
            .finish_non_exhaustive()
    }
}

impl TcpListener {
    /// The next connection, with its remote overlay address.
    pub async fn accept(&self) -> io::Result<(TcpStream, SocketAddrV4)> {
        let handle =
            future::poll_fn(
                |cx| match self.shared.lock().tcp_accept(self.port, cx.waker()) {
                    Some(handle) => Poll::Ready(handle),
                    None => Poll::Pending,
                },
            )
            .await;
        let peer = match self.shared.lock().tcp(handle).remote_endpoint() {
            Some(smoltcp::wire::IpEndpoint {
                addr: smoltcp::wire::IpAddress::Ipv4(ip),
                port,
            }) => SocketAddrV4::new(ip, port),
            _ => SocketAddrV4::new(Ipv4Addr::UNSPECIFIED, 0),
        };
        Ok((
            TcpStream {
                shared: self.shared.clone(),
                handle,
                peer,
            },
            peer,
        ))
    }

    /// The port listened on.
    pub fn port(&self) -> u16 {
        self.port
    }
}

impl Drop for TcpListener {
    fn drop(&mut self) {
        self.shared.lock().tcp_unlisten(self.port);
        self.shared.nudge();
    }
}
