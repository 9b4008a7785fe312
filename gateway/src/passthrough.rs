//! TLS passthrough on the HTTPS port: the ClientHello's SNI picks a `tls` tunnel, whose
//! connections are spliced to the agent undecrypted; every other connection is terminated
//! as before, its already-read bytes replayed to rustls.

use futures_lite::{AsyncRead, AsyncReadExt, AsyncWrite};
use futures_rustls::rustls::server::Acceptor;
use kakuremichi_proto::ids::Hostname;
use kakuremichi_proto::messages::{PassthroughRoute, Upstream};
use std::collections::HashMap;
use std::io;
use std::pin::Pin;
use std::sync::RwLock;
use std::task::{Context, Poll};

/// The largest ClientHello read before giving up: real ones are well under 2 KiB, and even
/// post-quantum key shares keep them under 4 KiB.
const MAX_CLIENT_HELLO: usize = 16 * 1024;

/// Passthrough hostnames and where their connections go.
#[derive(Default)]
pub struct PassthroughTable {
    routes: RwLock<HashMap<Hostname, Upstream>>,
}

impl PassthroughTable {
    /// Serve exactly these routes.
    pub fn update(&self, routes: &[PassthroughRoute]) {
        let table = routes
            .iter()
            .map(|r| (r.hostname.clone(), r.upstream.clone()))
            .collect();
        *self.routes.write().unwrap_or_else(|p| p.into_inner()) = table;
    }

    /// Whether any hostname is passed through (else the HTTPS port skips reading ahead).
    pub fn is_empty(&self) -> bool {
        self.routes
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .is_empty()
    }

    /// Where a connection naming `sni` goes, if it is passed through.
    pub fn lookup(&self, sni: &str) -> Option<Upstream> {
        let hostname: Hostname = sni.parse().ok()?;
        self.routes
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .get(&hostname)
            .cloned()
    }
}

/// Read until a whole ClientHello has arrived. Returns the bytes read and the SNI it names,
/// if any. Anything that is not a ClientHello, or is larger than any real one, is an error.
pub async fn read_client_hello<S: AsyncRead + Unpin>(
    stream: &mut S,
) -> io::Result<(Vec<u8>, Option<String>)> {
    let mut acceptor = Acceptor::default();
    let mut seen = Vec::with_capacity(2048);
    let mut chunk = [0u8; 2048];
    loop {
        let n = stream.read(&mut chunk).await?;
        if n == 0 {
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                "closed before a ClientHello",
            ));
        }
        seen.extend_from_slice(&chunk[..n]);
        if seen.len() > MAX_CLIENT_HELLO {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                "ClientHello too large",
            ));
        }
        acceptor.read_tls(&mut &chunk[..n])?;
        match acceptor.accept() {
            Ok(None) => continue,
            Ok(Some(accepted)) => {
                let sni = accepted.client_hello().server_name().map(str::to_string);
                return Ok((seen, sni));
            }
            Err((e, _)) => return Err(io::Error::new(io::ErrorKind::InvalidData, e)),
        }
    }
}

/// A stream whose first bytes were already read: they are read again first.
pub struct Replay<S> {
    prefix: Vec<u8>,
    position: usize,
    inner: S,
}

impl<S> Replay<S> {
    /// `prefix` then the rest of `inner`.
    pub fn new(prefix: Vec<u8>, inner: S) -> Self {
        Replay {
            prefix,
            position: 0,
            inner,
        }
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for Replay<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut [u8],
    ) -> Poll<io::Result<usize>> {
        let this = &mut *self;
        if this.position < this.prefix.len() {
            let rest = &this.prefix[this.position..];
            let n = rest.len().min(buf.len());
            buf[..n].copy_from_slice(&rest[..n]);
            this.position += n;
            if this.position == this.prefix.len() {
                this.prefix = Vec::new();
                this.position = 0;
            }
            return Poll::Ready(Ok(n));
        }
        Pin::new(&mut this.inner).poll_read(cx, buf)
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Replay<S> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }
    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }
    fn poll_close(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_close(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use futures_lite::future::block_on;

    #[test]
    fn garbage_and_truncated_hellos_are_errors() {
        let mut garbage: &[u8] = b"GET / HTTP/1.1\r\nHost: x\r\n\r\n";
        assert!(block_on(read_client_hello(&mut garbage)).is_err());
        // A TLS handshake record header promising more than ever arrives.
        let mut cut: &[u8] = &[0x16, 0x03, 0x01, 0x02, 0x00, 0x01];
        assert!(block_on(read_client_hello(&mut cut)).is_err());
        let mut empty: &[u8] = b"";
        assert!(block_on(read_client_hello(&mut empty)).is_err());
    }

    #[test]
    fn arbitrary_bytes_after_a_handshake_header_never_panic() {
        let mut seed: u64 = 0xdead_beef_cafe_f00d;
        for round in 0..5_000 {
            let mut bytes = vec![0x16, 0x03, 0x01];
            bytes.extend((0..(round % 300) + 2).map(|_| {
                seed ^= seed << 13;
                seed ^= seed >> 7;
                seed ^= seed << 17;
                seed as u8
            }));
            let mut reader = &bytes[..];
            // An error or a hello (garbage rarely parses), never a panic.
            let _ = block_on(read_client_hello(&mut reader));
        }
    }

    #[test]
    fn replay_gives_the_prefix_first() {
        let inner: &[u8] = b" world";
        let mut replay = Replay::new(b"hello".to_vec(), futures_lite::io::Cursor::new(inner));
        let mut out = String::new();
        block_on(replay.read_to_string(&mut out)).unwrap();
        assert_eq!(out, "hello world");
    }
}
