//! WireGuard over TCP, for networks that drop UDP.
//!
//! The same WireGuard datagrams, each preceded by its length as two big-endian bytes, on a
//! TCP connection to the gateway's WireGuard port. Neither end's WireGuard knows: on each
//! side a loopback UDP socket stands in for the far end, and [`pump`] moves datagrams
//! between it and the TCP connection. WireGuard authenticates every datagram, so the
//! carrier adds no trust of its own; it only bounds what a stranger can make it hold.

use crate::unverified::AnyCertificate;
use async_io::{Async, Timer};
use futures_lite::{future, AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use futures_rustls::rustls::{self, pki_types::ServerName};
use kakuremichi_proto::messages::WIREGUARD_ALPN;
use std::io;
use std::net::{SocketAddr, UdpSocket};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Bytes before each datagram on the stream.
const LENGTH_BYTES: usize = 2;

/// Bytes of datagrams gathered into one write to the stream (and read from it at once).
const OUTBOUND_BATCH: usize = 64 * 1024;

/// A carrier with no datagram either way for this long is closed (agents send a keepalive
/// every 25 s).
pub const IDLE_TIMEOUT: Duration = Duration::from_secs(120);

/// A loopback UDP socket that talks only to `peer` (the node's own WireGuard socket, or the
/// stand-in on the other end).
pub fn loopback_socket_for(peer: SocketAddr) -> io::Result<Async<UdpSocket>> {
    let local = match peer {
        SocketAddr::V4(_) => SocketAddr::from(([127, 0, 0, 1], 0)),
        SocketAddr::V6(_) => SocketAddr::from((std::net::Ipv6Addr::LOCALHOST, 0)),
    };
    let socket = UdpSocket::bind(local)?;
    socket.connect(peer)?;
    // WireGuard sends in bursts; a default-sized buffer drops the tail of one while the
    // carrier writes the head, and the TCP inside halves its window for each drop.
    if let Err(e) = kakuremichi_netstack::udp::enlarge_buffers(&socket) {
        log::debug!("wireguard over tcp: socket buffers: {e}");
    }
    Async::new(socket)
}

/// The address at which a node's own WireGuard socket, bound to `bound`, is reached from
/// the same host.
pub fn local_wireguard_addr(bound: SocketAddr) -> SocketAddr {
    match bound.ip() {
        ip if ip.is_unspecified() && bound.is_ipv4() => {
            SocketAddr::from(([127, 0, 0, 1], bound.port()))
        }
        ip if ip.is_unspecified() => {
            SocketAddr::from((std::net::Ipv6Addr::LOCALHOST, bound.port()))
        }
        _ => bound,
    }
}

/// The gateway's end: carriers for its WireGuard socket at `wireguard`, at most `limit` at
/// once, whether they arrive on the TCP port or as TLS on the HTTPS port. Each gets its own
/// loopback socket, so WireGuard sees each agent at an address of its own and answers it
/// there.
#[derive(Clone)]
pub struct Carriers {
    wireguard: SocketAddr,
    limit: u64,
    live: Arc<AtomicU64>,
}

impl Carriers {
    /// No carrier yet.
    pub fn new(wireguard: SocketAddr, limit: usize) -> Self {
        Carriers {
            wireguard,
            limit: limit as u64,
            live: Arc::new(AtomicU64::new(0)),
        }
    }

    /// Accept carriers on `listener` forever.
    pub async fn serve(&self, listener: smol::net::TcpListener) {
        loop {
            match listener.accept().await {
                Ok((stream, from)) => {
                    let _ = stream.set_nodelay(true);
                    self.carry(stream, from);
                }
                Err(e) => {
                    log::warn!("wireguard over tcp: accept: {e}");
                    Timer::after(Duration::from_millis(100)).await;
                }
            }
        }
    }

    /// Carry datagrams over `stream` (a TCP connection or a TLS one) until it ends.
    pub fn carry<S>(&self, stream: S, from: SocketAddr)
    where
        S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    {
        if self.live.load(Ordering::Relaxed) >= self.limit {
            log::warn!(
                "wireguard over tcp: {} carriers open; refused {from}",
                self.limit
            );
            return;
        }
        let socket = match loopback_socket_for(self.wireguard) {
            Ok(socket) => socket,
            Err(e) => return log::warn!("wireguard over tcp: no loopback socket for {from}: {e}"),
        };
        self.live.fetch_add(1, Ordering::Relaxed);
        let live = self.live.clone();
        kakuremichi_rt::spawn(async move {
            log::info!("wireguard over tcp: carrier from {from}");
            let ended = pump(stream, socket, IDLE_TIMEOUT).await;
            live.fetch_sub(1, Ordering::Relaxed);
            log::info!("wireguard over tcp: carrier from {from} closed ({ended:?})");
        })
        .detach();
    }
}

/// A carrier to a gateway's WireGuard port over TCP, within `timeout`.
pub async fn connect_tcp(addr: SocketAddr, timeout: Duration) -> io::Result<smol::net::TcpStream> {
    let stream = within(timeout, smol::net::TcpStream::connect(addr)).await?;
    let _ = stream.set_nodelay(true);
    Ok(stream)
}

/// A carrier to a gateway's HTTPS port, as TLS with ALPN [`WIREGUARD_ALPN`], within
/// `timeout`. The gateway's certificate is not checked against any authority: the TLS only
/// makes the connection look like the HTTPS a restrictive network lets through, and
/// WireGuard inside authenticates the gateway by its key. The handshake's signatures are
/// still checked against the certificate presented.
pub async fn connect_tls(
    addr: SocketAddr,
    timeout: Duration,
) -> io::Result<futures_rustls::client::TlsStream<smol::net::TcpStream>> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = rustls::ClientConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .map_err(io::Error::other)?
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(AnyCertificate::new(provider)))
        .with_no_client_auth();
    config.alpn_protocols = vec![WIREGUARD_ALPN.to_vec()];
    let connector = futures_rustls::TlsConnector::from(Arc::new(config));
    let tcp = connect_tcp(addr, timeout).await?;
    // An address as the name: no SNI is sent, and the gateway answers with its fallback
    // certificate, which names no tenant.
    let name = ServerName::IpAddress(addr.ip().into());
    let tls = within(timeout, connector.connect(name, tcp)).await?;
    if tls.get_ref().1.alpn_protocol() != Some(WIREGUARD_ALPN) {
        return Err(io::Error::other(
            "the gateway does not carry WireGuard over TLS",
        ));
    }
    Ok(tls)
}

async fn within<T>(
    timeout: Duration,
    work: impl std::future::Future<Output = io::Result<T>>,
) -> io::Result<T> {
    future::or(work, async {
        Timer::after(timeout).await;
        Err(io::Error::new(io::ErrorKind::TimedOut, "no answer in time"))
    })
    .await
}

/// Move datagrams between `stream` and `socket` until either ends, fails, or both stay
/// silent for `idle`.
pub async fn pump<S>(stream: S, socket: Async<UdpSocket>, idle: Duration) -> io::Result<()>
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let socket = Arc::new(socket);
    let started = Instant::now();
    let last_activity = Arc::new(AtomicU64::new(0));
    let touch = {
        let last_activity = last_activity.clone();
        move || last_activity.store(started.elapsed().as_millis() as u64, Ordering::Relaxed)
    };
    let (reader, mut writer) = futures_lite::io::split(stream);
    let mut reader = futures_lite::io::BufReader::with_capacity(OUTBOUND_BATCH, reader);
    let inbound = {
        let (socket, touch) = (socket.clone(), touch.clone());
        async move {
            let mut datagram = vec![0u8; usize::from(u16::MAX)];
            loop {
                let mut length = [0u8; LENGTH_BYTES];
                reader.read_exact(&mut length).await?;
                let length = usize::from(u16::from_be_bytes(length));
                reader.read_exact(&mut datagram[..length]).await?;
                touch();
                // A full socket buffer drops the datagram, as the network would.
                let _ = socket.send(&datagram[..length]).await;
            }
        }
    };
    let outbound = async move {
        // Datagrams waiting together go out in one write: a write per datagram cost a system
        // call each and kept the carrier at a fraction of UDP's speed.
        let mut batch = Vec::with_capacity(OUTBOUND_BATCH + LENGTH_BYTES + usize::from(u16::MAX));
        let mut datagram = vec![0u8; usize::from(u16::MAX)];
        loop {
            let mut length = socket.recv(&mut datagram).await?;
            touch();
            loop {
                if let Ok(prefix) = u16::try_from(length) {
                    batch.extend_from_slice(&prefix.to_be_bytes());
                    batch.extend_from_slice(&datagram[..length]);
                }
                if batch.len() >= OUTBOUND_BATCH {
                    break;
                }
                match socket.get_ref().recv(&mut datagram) {
                    Ok(more) => length = more,
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                    Err(e) => return Err(e),
                }
            }
            writer.write_all(&batch).await?;
            batch.clear();
        }
    };
    let watchdog = async {
        loop {
            Timer::after(idle / 4).await;
            let quiet =
                started.elapsed().as_millis() as u64 - last_activity.load(Ordering::Relaxed);
            if quiet > idle.as_millis() as u64 {
                return Err(io::Error::new(io::ErrorKind::TimedOut, "carrier idle"));
            }
        }
    };
    future::or(future::or(inbound, outbound), watchdog).await
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Two loopback UDP sockets talk through a TCP connection as if directly.
    #[test]
    fn datagrams_cross_the_stream_both_ways_and_idle_carriers_close() {
        smol::block_on(async {
            let (a, b) = (
                Async::<UdpSocket>::bind(([127, 0, 0, 1], 0)).unwrap(),
                Async::<UdpSocket>::bind(([127, 0, 0, 1], 0)).unwrap(),
            );
            let (a_addr, b_addr) = (
                a.get_ref().local_addr().unwrap(),
                b.get_ref().local_addr().unwrap(),
            );
            let listener = smol::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
            let port = listener.local_addr().unwrap();
            let idle = Duration::from_millis(300);
            let far = kakuremichi_rt::spawn(async move {
                let (stream, _) = listener.accept().await.unwrap();
                pump(stream, loopback_socket_for(b_addr).unwrap(), idle).await
            });
            let near_socket = loopback_socket_for(a_addr).unwrap();
            let near_addr = near_socket.get_ref().local_addr().unwrap();
            let stream = smol::net::TcpStream::connect(port).await.unwrap();
            let near = kakuremichi_rt::spawn(pump(stream, near_socket, idle));
            let mut buffer = vec![0u8; 70_000];
            for size in [0usize, 1, 148, 1420, 65_507] {
                let sent = vec![size as u8; size];
                a.send_to(&sent, near_addr).await.unwrap();
                let (got, from) = b.recv_from(&mut buffer).await.unwrap();
                assert_eq!(&buffer[..got], &sent[..], "a → b, {size} bytes");
                b.send_to(&sent, from).await.unwrap();
                let (got, _) = a.recv_from(&mut buffer).await.unwrap();
                assert_eq!(&buffer[..got], &sent[..], "b → a, {size} bytes");
            }
            // Silent for more than `idle`: both ends close, many periods of the watchdog.
            let ended = future::or(async { Some((near.await, far.await)) }, async {
                Timer::after(Duration::from_secs(3)).await;
                None
            })
            .await;
            let (near, far) = ended.expect("idle carriers close");
            assert!(near.is_err() && far.is_err());
        });
    }

    /// Garbage on the stream ends the carrier; nothing panics, nothing reaches the socket
    /// beyond whole frames.
    #[test]
    fn a_truncated_frame_ends_the_carrier() {
        smol::block_on(async {
            let sink = Async::<UdpSocket>::bind(([127, 0, 0, 1], 0)).unwrap();
            let sink_addr = sink.get_ref().local_addr().unwrap();
            let listener = smol::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
            let port = listener.local_addr().unwrap();
            let far = kakuremichi_rt::spawn(async move {
                let (stream, _) = listener.accept().await.unwrap();
                pump(
                    stream,
                    loopback_socket_for(sink_addr).unwrap(),
                    IDLE_TIMEOUT,
                )
                .await
            });
            let mut stream = smol::net::TcpStream::connect(port).await.unwrap();
            stream
                .write_all(&[0, 3, b'a', b'b', b'c', 0xff, 0xff, 1])
                .await
                .unwrap();
            drop(stream);
            assert!(far.await.is_err());
            let mut buffer = [0u8; 16];
            let got = sink.recv(&mut buffer).await.unwrap();
            assert_eq!(&buffer[..got], b"abc");
        });
    }
}
