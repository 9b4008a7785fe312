//! The WireGuard UDP socket, batched: many datagrams per system call each way.
//!
//! A bulk transfer is some 90,000 datagrams a second per direction. One `sendto` or
//! `recvfrom` each made system calls the largest cost of the tunnel, so sending coalesces
//! runs of equal-sized datagrams to one peer into a single segmentation-offload (GSO) send,
//! and receiving takes whole batches (`recvmmsg`) of coalesced (GRO) buffers. quinn-udp does
//! the socket options and falls back to one datagram per call where the kernel cannot.

use async_io::Async;
use quinn_udp::{RecvMeta, Transmit, UdpSocketState};
use std::collections::VecDeque;
use std::io::{self, IoSliceMut};
use std::net::{SocketAddr, UdpSocket};

/// Receive buffers per system call.
const RECEIVE_BUFFERS: usize = 8;
/// One receive buffer: the largest UDP payload, which also bounds a GRO-coalesced run.
const RECEIVE_BUFFER_BYTES: usize = 65_536;
/// Kernel socket buffer asked for in each direction.
const SOCKET_BUFFER_BYTES: libc::c_int = 4 << 20;
/// Most bytes in one segmentation-offload send (the kernel's limit for one UDP send).
const MAX_SEND_BYTES: usize = 65_000;

/// The node's UDP socket with batched I/O.
pub struct WireSocket {
    socket: Async<UdpSocket>,
    state: UdpSocketState,
    /// `RECEIVE_BUFFERS` buffers of `RECEIVE_BUFFER_BYTES`, back to back.
    receive_buffer: Vec<u8>,
    receive_meta: [RecvMeta; RECEIVE_BUFFERS],
    send_buffer: Vec<u8>,
}

impl WireSocket {
    /// Bind and configure the socket.
    pub fn bind(listen: SocketAddr) -> io::Result<Self> {
        let socket = Async::<UdpSocket>::bind(listen)?;
        let state = UdpSocketState::new(socket.get_ref().into())?;
        tune(socket.get_ref(), listen.is_ipv4())?;
        Ok(WireSocket {
            socket,
            state,
            receive_buffer: vec![0; RECEIVE_BUFFERS * RECEIVE_BUFFER_BYTES],
            receive_meta: [RecvMeta::default(); RECEIVE_BUFFERS],
            send_buffer: Vec::with_capacity(MAX_SEND_BYTES),
        })
    }

    /// The bound address.
    pub fn local_addr(&self) -> io::Result<SocketAddr> {
        self.socket.get_ref().local_addr()
    }

    /// Hand each waiting datagram to `deliver`, one system call's worth. Returns how many
    /// there were; 0 when nothing is waiting.
    pub fn receive(&mut self, mut deliver: impl FnMut(SocketAddr, &[u8])) -> usize {
        // On the stack: this runs once per system call, and nothing else on the receive
        // path allocates.
        let mut buffers = self.receive_buffer.chunks_mut(RECEIVE_BUFFER_BYTES);
        let mut slices: [IoSliceMut<'_>; RECEIVE_BUFFERS] =
            std::array::from_fn(|_| IoSliceMut::new(buffers.next().unwrap_or_default()));
        let filled = match self.state.recv(
            self.socket.get_ref().into(),
            &mut slices,
            &mut self.receive_meta,
        ) {
            Ok(filled) => filled,
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => return 0,
            Err(e) => {
                // ICMP errors from earlier sends surface here on Linux; they are not ours
                // to act on.
                log::debug!("wireguard socket receive: {e}");
                return 0;
            }
        };
        let mut datagrams = 0;
        for (meta, buffer) in self.receive_meta.iter().zip(&slices).take(filled) {
            let stride = meta.stride.max(1);
            for datagram in buffer[..meta.len].chunks(stride) {
                deliver(meta.addr, datagram);
                datagrams += 1;
            }
        }
        datagrams
    }

    /// Send datagrams from the front of `queue` until it is done or the socket is full.
    /// Returns how many went (or were dropped by a send error, as the network would).
    pub fn send_from(&mut self, queue: &VecDeque<(SocketAddr, Vec<u8>)>) -> usize {
        let mut done = 0;
        while let Some((destination, first)) = queue.get(done) {
            let (destination, segment) = (*destination, first.len());
            // A run: same destination, same size, except that the last may be shorter.
            let most = self
                .state
                .max_gso_segments()
                .min(MAX_SEND_BYTES / segment.max(1));
            let mut count = 0;
            self.send_buffer.clear();
            for (to, datagram) in queue.range(done..).take(most.max(1)) {
                if *to != destination || datagram.len() > segment {
                    break;
                }
                self.send_buffer.extend_from_slice(datagram);
                count += 1;
                if datagram.len() < segment {
                    break;
                }
            }
            let transmit = Transmit {
                destination,
                ecn: None,
                contents: &self.send_buffer,
                segment_size: (count > 1).then_some(segment),
                src_ip: None,
            };
            match self.state.try_send(self.socket.get_ref().into(), &transmit) {
                Ok(()) => {}
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return done,
                // Lost like any datagram on the way; TCP inside retransmits.
                Err(e) => log::debug!("wireguard send to {destination}: {e}"),
            }
            done += count;
        }
        done
    }

    /// Wait until a datagram may be waiting.
    pub async fn readable(&self) -> io::Result<()> {
        self.socket.readable().await
    }

    /// Wait until the socket may take more.
    pub async fn writable(&self) -> io::Result<()> {
        self.socket.writable().await
    }
}

/// Socket options quinn-udp does not set, or sets for QUIC's sake rather than ours.
fn tune(socket: &UdpSocket, ipv4: bool) -> io::Result<()> {
    // quinn-udp sets "don't fragment" and ignores path MTU, as QUIC wants. WireGuard has no
    // path MTU discovery of its own: on a path narrower than our 1480-byte datagrams they
    // would vanish, and every connection through the tunnel would stall. Back to the kernel
    // default, which fragments to the learned path MTU (and makes segmentation offload fall
    // back to single sends when a segment no longer fits).
    if ipv4 {
        set_option(
            socket,
            libc::IPPROTO_IP,
            libc::IP_MTU_DISCOVER,
            libc::IP_PMTUDISC_WANT,
        )?;
    } else {
        set_option(
            socket,
            libc::IPPROTO_IPV6,
            libc::IPV6_MTU_DISCOVER,
            libc::IPV6_PMTUDISC_WANT,
        )?;
    }
    // The default buffers hold three or four coalesced batches; when the other side bursts,
    // a whole batch is dropped at once and the TCP inside halves its window.
    enlarge_buffers(socket)
}

/// Ask for 4 MiB socket buffers each way, so bursts are queued rather than dropped.
/// Privileged processes get them regardless of net.core.rmem_max/wmem_max; others get what
/// those allow (raising them helps, see the README).
pub fn enlarge_buffers(socket: &UdpSocket) -> io::Result<()> {
    for (forced, plain) in [
        (libc::SO_RCVBUFFORCE, libc::SO_RCVBUF),
        (libc::SO_SNDBUFFORCE, libc::SO_SNDBUF),
    ] {
        if set_option(socket, libc::SOL_SOCKET, forced, SOCKET_BUFFER_BYTES).is_err() {
            set_option(socket, libc::SOL_SOCKET, plain, SOCKET_BUFFER_BYTES)?;
        }
    }
    Ok(())
}

#[allow(unsafe_code)]
fn set_option(
    socket: &UdpSocket,
    level: libc::c_int,
    option: libc::c_int,
    value: libc::c_int,
) -> io::Result<()> {
    use std::os::fd::AsRawFd;
    // SAFETY: the descriptor is open for the call (borrowed from `socket`), and the option
    // value is a live c_int whose exact size is passed.
    let result = unsafe {
        libc::setsockopt(
            socket.as_raw_fd(),
            level,
            option,
            (&value as *const libc::c_int).cast(),
            std::mem::size_of::<libc::c_int>() as libc::socklen_t,
        )
    };
    if result == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}
