//! WireGuard over TCP, for networks that drop UDP.
//!
//! The same WireGuard datagrams, each preceded by its length as two big-endian bytes, on a
//! TCP connection to the gateway's WireGuard port. Neither end's WireGuard knows: on each
//! side a loopback UDP socket stands in for the far end, and [`pump`] moves datagrams
//! between it and the TCP connection. WireGuard authenticates every datagram, so the
//! carrier adds no trust of its own; it only bounds what a stranger can make it hold.

use async_io::{Async, Timer};
use futures_lite::{future, AsyncReadExt, AsyncWriteExt};
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

/// Accept carriers on `listener` for the WireGuard socket at `wireguard`, at most `limit`
/// at once. Each gets its own loopback socket, so WireGuard sees each agent at an address
/// of its own and answers it there.
pub async fn serve(listener: smol::net::TcpListener, wireguard: SocketAddr, limit: usize) {
    let live = Arc::new(AtomicU64::new(0));
    loop {
        let (stream, from) = match listener.accept().await {
            Ok(accepted) => accepted,
            Err(e) => {
                log::warn!("wireguard over tcp: accept: {e}");
                Timer::after(Duration::from_millis(100)).await;
                continue;
            }
        };
        if live.load(Ordering::Relaxed) >= limit as u64 {
            log::warn!("wireguard over tcp: {limit} carriers open; refused {from}");
            continue;
        }
        let socket = match loopback_socket_for(wireguard) {
            Ok(socket) => socket,
            Err(e) => {
                log::warn!("wireguard over tcp: no loopback socket for {from}: {e}");
                continue;
            }
        };
        live.fetch_add(1, Ordering::Relaxed);
        let live = live.clone();
        smol::spawn(async move {
            log::info!("wireguard over tcp: carrier from {from}");
            let ended = pump(stream, socket, IDLE_TIMEOUT).await;
            live.fetch_sub(1, Ordering::Relaxed);
            log::info!("wireguard over tcp: carrier from {from} closed ({ended:?})");
        })
        .detach();
    }
}

/// Move datagrams between `stream` and `socket` until either ends, fails, or both stay
/// silent for `idle`.
pub async fn pump(
    stream: smol::net::TcpStream,
    socket: Async<UdpSocket>,
    idle: Duration,
) -> io::Result<()> {
    let _ = stream.set_nodelay(true);
    let socket = Arc::new(socket);
    let started = Instant::now();
    let last_activity = Arc::new(AtomicU64::new(0));
    let touch = {
        let last_activity = last_activity.clone();
        move || last_activity.store(started.elapsed().as_millis() as u64, Ordering::Relaxed)
    };
    let (mut reader, mut writer) = (
        futures_lite::io::BufReader::with_capacity(OUTBOUND_BATCH, stream.clone()),
        stream,
    );
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
            let far = smol::spawn(async move {
                let (stream, _) = listener.accept().await.unwrap();
                pump(stream, loopback_socket_for(b_addr).unwrap(), idle).await
            });
            let near_socket = loopback_socket_for(a_addr).unwrap();
            let near_addr = near_socket.get_ref().local_addr().unwrap();
            let stream = smol::net::TcpStream::connect(port).await.unwrap();
            let near = smol::spawn(pump(stream, near_socket, idle));
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
            let far = smol::spawn(async move {
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
