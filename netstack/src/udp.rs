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
/// Most bytes in one segmentation-offload send (the kernel's limit for one UDP send).
const MAX_SEND_BYTES: usize = 65_000;

/// The node's UDP socket with batched I/O.
pub struct WireSocket {
    socket: Async<UdpSocket>,
    state: UdpSocketState,
    receive_buffers: Vec<Vec<u8>>,
    receive_meta: Vec<RecvMeta>,
    send_buffer: Vec<u8>,
}

impl WireSocket {
    /// Bind and configure the socket.
    pub fn bind(listen: SocketAddr) -> io::Result<Self> {
        let socket = Async::<UdpSocket>::bind(listen)?;
        let state = UdpSocketState::new(socket.get_ref().into())?;
        Ok(WireSocket {
            socket,
            state,
            receive_buffers: vec![vec![0; RECEIVE_BUFFER_BYTES]; RECEIVE_BUFFERS],
            receive_meta: vec![RecvMeta::default(); RECEIVE_BUFFERS],
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
        let mut slices: Vec<IoSliceMut<'_>> = self
            .receive_buffers
            .iter_mut()
            .map(|b| IoSliceMut::new(b))
            .collect();
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

    /// Send datagrams from the front of `queue`, removing those the kernel took. Returns
    /// `false` when the socket is full and some remain.
    pub fn send_from(&mut self, queue: &mut VecDeque<(SocketAddr, Vec<u8>)>) -> bool {
        while let Some((destination, first)) = queue.front() {
            let (destination, segment) = (*destination, first.len());
            // A run: same destination, same size, except that the last may be shorter.
            let most = self
                .state
                .max_gso_segments()
                .min(MAX_SEND_BYTES / segment.max(1));
            let mut count = 0;
            self.send_buffer.clear();
            for (to, datagram) in queue.iter().take(most.max(1)) {
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
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return false,
                // Lost like any datagram on the way; TCP inside retransmits.
                Err(e) => log::debug!("wireguard send to {destination}: {e}"),
            }
            queue.drain(..count);
        }
        true
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
