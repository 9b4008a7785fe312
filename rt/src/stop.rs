//! Stopping cleanly: a process in a container is PID 1, which the kernel does not kill on
//! SIGTERM unless it asks to be, so `docker stop` would wait out its grace period and then
//! kill. Every binary races its work against [`stopped`], and containers probe liveness with
//! [`healthcheck`] (scratch images have no curl).

use futures_lite::StreamExt;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::Duration;

/// Resolves when the process gets SIGTERM or SIGINT (or at once, with a log line, if the
/// handlers cannot be installed — then the default actions still apply outside PID 1).
pub async fn stopped() {
    use async_signal::{Signal, Signals};
    match Signals::new([Signal::Term, Signal::Int]) {
        Ok(mut signals) => {
            if let Some(Ok(signal)) = signals.next().await {
                log::info!("{signal:?}: stopping");
            }
        }
        Err(e) => {
            log::warn!("cannot handle SIGTERM/SIGINT ({e}); the default actions apply");
            std::future::pending::<()>().await
        }
    }
}

/// Ask a health listener at `addr` (a wildcard address means this host's loopback) whether
/// the process is alive: `Ok` on a 200 from `/healthz`, otherwise why not.
pub fn healthcheck(mut addr: SocketAddr) -> Result<(), String> {
    if addr.ip().is_unspecified() {
        addr.set_ip(std::net::Ipv4Addr::LOCALHOST.into());
    }
    let timeout = Duration::from_secs(3);
    let mut stream =
        TcpStream::connect_timeout(&addr, timeout).map_err(|e| format!("{addr}: {e}"))?;
    let _ = stream.set_read_timeout(Some(timeout));
    stream
        .write_all(b"GET /healthz HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n")
        .map_err(|e| e.to_string())?;
    let mut head = [0u8; 12];
    stream.read_exact(&mut head).map_err(|e| e.to_string())?;
    match &head[9..12] {
        b"200" => Ok(()),
        status => Err(format!("status {}", String::from_utf8_lossy(status))),
    }
}

/// Run `work` until it ends or the process is told to stop; `Ok` on a stop. This thread
/// runs tasks meanwhile (see [`crate::exec`]).
pub fn run_until_stopped<T, E>(
    work: impl std::future::Future<Output = Result<T, E>> + Send + 'static,
) -> Result<(), E>
where
    T: Send + 'static,
    E: Send + 'static,
{
    crate::exec::block_on(futures_lite::future::or(
        async { work.await.map(|_| ()) },
        async {
            stopped().await;
            Ok(())
        },
    ))
}

/// The `healthcheck` subcommand: exit 0 when the listener at `addr` is healthy, else say why
/// and exit 1.
pub fn healthcheck_and_exit(addr: SocketAddr) -> ! {
    match healthcheck(addr) {
        Ok(()) => std::process::exit(0),
        Err(why) => {
            eprintln!("unhealthy: {why}");
            std::process::exit(1)
        }
    }
}
