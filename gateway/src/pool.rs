//! Keep-alive HTTP/1.1 connections to agents' service ports, over the netstack.
//!
//! A connection goes back into the pool as soon as its response head arrived; it is handed
//! out again only once hyper reports it ready (the previous body finished), and dropped once
//! closed or idle too long.

use crate::routes::Upstream;
use hyper::client::conn::http1::{self, SendRequest};
use kakuremichi_netstack::Stack;
use kakuremichi_rt::http::Body;
use kakuremichi_rt::io::FuturesIo;
use std::collections::HashMap;
use std::io;
use std::sync::{Mutex, MutexGuard};
use std::time::{Duration, Instant};

/// Idle connections older than this are closed rather than reused.
const IDLE_TIMEOUT: Duration = Duration::from_secs(60);
/// Connections kept per upstream.
const MAX_PER_UPSTREAM: usize = 64;

struct Pooled {
    sender: SendRequest<Body>,
    returned: Instant,
}

/// A connection to one upstream.
pub struct Conn {
    /// Sends requests on the connection.
    pub sender: SendRequest<Body>,
    /// Whether it served a request before (and so may have been closed by the far end
    /// meanwhile).
    pub reused: bool,
    upstream: Upstream,
}

/// Start HTTP/1.1 on a fresh connection; the connection task runs until it closes.
async fn handshake<I>(io: I, upstream: &Upstream) -> io::Result<SendRequest<Body>>
where
    I: futures_lite::AsyncRead + futures_lite::AsyncWrite + Unpin + Send + 'static,
{
    let (sender, connection) = http1::Builder::new()
        .handshake(FuturesIo(io))
        .await
        .map_err(|e| io::Error::other(format!("HTTP handshake with {upstream}: {e}")))?;
    let name = upstream.to_string();
    // The sender lives in the pool; the connection task ends when the connection closes.
    smol::spawn(async move {
        if let Err(e) = connection.with_upgrades().await {
            log::debug!("upstream connection {name}: {e}");
        }
    })
    .detach();
    Ok(sender)
}

/// Connections to upstreams, by address.
pub struct Pool {
    stack: Stack,
    idle: Mutex<HashMap<Upstream, Vec<Pooled>>>,
}

impl Pool {
    /// An empty pool dialing through `stack`.
    pub fn new(stack: Stack) -> Self {
        Pool {
            stack,
            idle: Mutex::new(HashMap::new()),
        }
    }

    fn lock(&self) -> MutexGuard<'_, HashMap<Upstream, Vec<Pooled>>> {
        // The map holds plain handles; nothing is left half-done by a panic.
        self.idle.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// A ready pooled connection, or a new one.
    pub async fn checkout(&self, upstream: &Upstream) -> io::Result<Conn> {
        if let Some(sender) = self.take_ready(upstream) {
            return Ok(Conn {
                sender,
                reused: true,
                upstream: upstream.clone(),
            });
        }
        self.connect(upstream).await
    }

    fn take_ready(&self, upstream: &Upstream) -> Option<SendRequest<Body>> {
        let mut idle = self.lock();
        let list = idle.get_mut(upstream)?;
        list.retain(|p| {
            let idle_too_long = p.sender.is_ready() && p.returned.elapsed() > IDLE_TIMEOUT;
            !p.sender.is_closed() && !idle_too_long
        });
        let position = list.iter().position(|p| p.sender.is_ready())?;
        Some(list.swap_remove(position).sender)
    }

    /// A new connection.
    pub async fn connect(&self, upstream: &Upstream) -> io::Result<Conn> {
        let sender = match upstream {
            Upstream::Overlay(addr) => {
                handshake(self.stack.connect(*addr).await?, upstream).await?
            }
            Upstream::Direct(addr) => {
                let connect = smol::net::TcpStream::connect(addr.as_str());
                let timeout = async {
                    async_io::Timer::after(kakuremichi_netstack::stack::CONNECT_TIMEOUT).await;
                    Err(io::Error::new(
                        io::ErrorKind::TimedOut,
                        format!("no answer from {addr}"),
                    ))
                };
                let stream = futures_lite::future::or(connect, timeout).await?;
                let _ = stream.set_nodelay(true);
                handshake(stream, upstream).await?
            }
        };
        Ok(Conn {
            sender,
            reused: false,
            upstream: upstream.clone(),
        })
    }

    /// Return a connection whose response head arrived.
    pub fn checkin(&self, conn: Conn) {
        let mut idle = self.lock();
        let list = idle.entry(conn.upstream).or_default();
        if list.len() < MAX_PER_UPSTREAM {
            list.push(Pooled {
                sender: conn.sender,
                returned: Instant::now(),
            });
        }
    }

    /// Connections held, busy or idle.
    pub fn size(&self) -> usize {
        self.lock().values().map(Vec::len).sum()
    }
}
