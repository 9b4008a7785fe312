//! # kakuremichi-netstack
//!
//! A node's whole network inside the overlay, in userspace: WireGuard (boringtun) carries IPv4
//! packets to and from several peers over one UDP socket, and a TCP/IP stack (smoltcp) turns
//! them into streams. Nothing listens on the host's interfaces except that UDP socket.
//!
//! Layers, bottom up:
//! - [`peer`]: the WireGuard peer table. One `Tunn` per peer, lookup by session index, key and
//!   overlay address; roaming; AllowedIPs (each peer's /32); shared handshake rate limiting.
//!   Plain data: datagrams in, datagrams and IP packets out.
//! - [`pool`]: recycled packet buffers shared by the layers below.
//! - [`device`]: a smoltcp `phy::Device` over packet queues.
//! - [`core`]: the sans-I/O stack: peer table + smoltcp interface + sockets + listener
//!   backlogs. The caller passes time and datagrams in and takes datagrams out.
//! - [`udp`]: the UDP socket with batched, segmentation-offloaded sends and receives.
//! - [`stack`]: the smol driver that owns the UDP socket and timers, and the async
//!   [`TcpStream`]/[`TcpListener`] (futures `AsyncRead`/`AsyncWrite`) built on [`core`].
//!
//! ```no_run
//! # async fn demo() -> std::io::Result<()> {
//! use kakuremichi_netstack::{Stack, PeerSpec};
//! let stack = Stack::bind("0.0.0.0:51820".parse().unwrap(), [7u8; 32]).await?;
//! stack.set_address("10.77.0.2".parse().unwrap(), 16);
//! stack.set_peers(&[PeerSpec {
//!     public_key: [9u8; 32],
//!     overlay_ip: "10.77.0.1".parse().unwrap(),
//!     endpoint: Some("203.0.113.7:51820".parse().unwrap()),
//!     persistent_keepalive: Some(25),
//!     incarnation: 0,
//! }]);
//! let listener = stack.listen(20000)?;
//! let (stream, from) = listener.accept().await?;
//! # Ok(()) }
//! ```
#![deny(unsafe_code)]
#![warn(missing_docs)]

pub mod core;
pub mod device;
pub mod peer;
pub mod pool;
pub mod stack;
pub mod udp;

pub use peer::{public_key_of, PeerSpec, PeerStats};
pub use stack::{Stack, TcpListener, TcpStream};

/// The IP MTU inside the tunnel: fits a 1500-byte path after WireGuard's 80 bytes of
/// IPv6+UDP+WireGuard overhead, as wg-quick's default does.
pub const TUNNEL_MTU: usize = 1420;
