//! Checks of every service's target between connections, so a stopped origin shows at
//! Control before a visitor finds it: a TCP connect, or an HTTP `GET` of the tunnel's path
//! expecting its status, every interval. A failure is reported like a refused connection
//! ([`crate::forward::Origins`]); while it lasts, an agent that shares the tunnel with
//! others closes the service port, so gateways send its requests to the healthy ones.

use crate::forward::{connect, Port};
use async_io::Timer;
use futures_lite::{future, AsyncReadExt, AsyncWriteExt};
use kakuremichi_proto::messages::{HealthCheck, Service, DEFAULT_HEALTH_INTERVAL_SECS};
use kakuremichi_proto::ports::Transport;
use std::net::SocketAddr;
use std::sync::{Arc, RwLock};
use std::time::Duration;

/// The first check of a new service, soon after it starts.
const FIRST_CHECK: Duration = Duration::from_secs(1);
/// How long a check waits for the status line.
const ANSWER_TIMEOUT: Duration = Duration::from_secs(5);

/// What a service's checks do.
#[derive(Clone, Debug, PartialEq)]
pub struct Watch {
    pub check: HealthCheck,
    /// Other agents serve the tunnel too.
    pub replicated: bool,
}

impl Watch {
    pub fn of(service: &Service) -> Watch {
        Watch {
            check: service.health.clone().unwrap_or(HealthCheck {
                interval_secs: DEFAULT_HEALTH_INTERVAL_SECS,
                ..HealthCheck::default()
            }),
            replicated: service.replicated,
        }
    }
}

/// Check `port`'s target as `watch` says, for as long as the port is served.
pub(crate) async fn watch(port: Arc<Port>, watch: Arc<RwLock<Watch>>) {
    let mut wait = FIRST_CHECK;
    loop {
        Timer::after(wait).await;
        let Watch { check, replicated } = watch.read().unwrap_or_else(|p| p.into_inner()).clone();
        wait = Duration::from_secs(check.interval_secs.max(1));
        let (target, transport, connect_timeout) = port.target();
        if check.interval_secs == 0 || transport == Transport::Udp {
            // Unchecked: connections alone say how the target is.
            let _ = port.open();
            continue;
        }
        let outcome = match port.allowed.resolve(&target).await {
            Ok(to) => check_once(to, target.host(), &check, connect_timeout).await,
            Err(e) => Err(e.to_string()),
        };
        if let Err(why) = &outcome {
            log::debug!(
                "tunnel {}: {target} failed its check: {why}",
                port.tunnel_id
            );
        }
        let http = check.http_path.is_some();
        let now = kakuremichi_rt::unix_now();
        port.origins
            .record_check(&port.tunnel_id, &target, outcome, (now, http));
        match replicated && port.origins.is_failing(&port.tunnel_id) {
            true => {
                if port.close() {
                    log::warn!(
                        "tunnel {}: {target} fails its check; service port closed, the tunnel's other agents serve it",
                        port.tunnel_id
                    );
                }
            }
            false => {
                if let Err(e) = port.open() {
                    log::error!("tunnel {}: cannot listen again: {e}", port.tunnel_id);
                }
            }
        }
    }
}

/// One check of the target at `to`.
pub async fn check_once(
    to: SocketAddr,
    host: &str,
    check: &HealthCheck,
    connect_timeout: Duration,
) -> Result<(), String> {
    let mut stream = connect(to, connect_timeout)
        .await
        .map_err(|e| e.to_string())?;
    let Some(path) = &check.http_path else {
        return Ok(());
    };
    let ask = async {
        let request = format!(
            "GET {path} HTTP/1.1\r\nHost: {host}\r\nUser-Agent: kakuremichi-health-check\r\n\
             Connection: close\r\n\r\n"
        );
        stream.write_all(request.as_bytes()).await?;
        let mut head = Vec::with_capacity(64);
        let mut byte = [0u8; 1];
        while head.len() < 1024 && !head.ends_with(b"\r\n") {
            if stream.read(&mut byte).await? == 0 {
                break;
            }
            head.push(byte[0]);
        }
        Ok::<_, std::io::Error>(head)
    };
    let timeout = async {
        Timer::after(ANSWER_TIMEOUT).await;
        Err(std::io::Error::new(
            std::io::ErrorKind::TimedOut,
            "no answer in time",
        ))
    };
    let head = future::or(ask, timeout)
        .await
        .map_err(|e| format!("GET {path}: {e}"))?;
    let line = String::from_utf8_lossy(&head);
    let status = status_of(&line).ok_or_else(|| format!("GET {path}: not an HTTP answer"))?;
    let passes = match check.expect_status {
        Some(expected) => status == expected,
        None => (200..400).contains(&status),
    };
    match passes {
        true => Ok(()),
        false => Err(format!("GET {path} answered {status}")),
    }
}

/// The status of an HTTP/1 status line.
fn status_of(line: &str) -> Option<u16> {
    let mut parts = line.split(' ');
    parts.next().filter(|v| v.starts_with("HTTP/1."))?;
    parts
        .next()?
        .parse()
        .ok()
        .filter(|s| (100..600).contains(s))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::{Read, Write};

    /// An origin that answers every request with `status` once per connection.
    fn origin(status: u16) -> SocketAddr {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        std::thread::spawn(move || {
            for mut stream in listener.incoming().flatten() {
                let mut buffer = [0u8; 1024];
                let _ = stream.read(&mut buffer);
                let _ = write!(stream, "HTTP/1.1 {status} X\r\nContent-Length: 0\r\n\r\n");
            }
        });
        addr
    }

    #[test]
    fn checks_pass_on_the_status_they_expect_and_name_what_failed() {
        smol::block_on(async {
            let timeout = Duration::from_secs(2);
            let http = |path: &str, expect: Option<u16>| HealthCheck {
                interval_secs: 1,
                http_path: Some(path.into()),
                expect_status: expect,
            };
            let tcp = HealthCheck::default();
            let up = origin(204);
            assert_eq!(check_once(up, "h", &tcp, timeout).await, Ok(()));
            assert_eq!(
                check_once(up, "h", &http("/health", None), timeout).await,
                Ok(())
            );
            let failing = check_once(up, "h", &http("/health", Some(200)), timeout).await;
            assert_eq!(failing, Err("GET /health answered 204".into()));
            let down = origin(503);
            let failing = check_once(down, "h", &http("/", None), timeout).await;
            assert_eq!(failing, Err("GET / answered 503".into()));
            let closed = std::net::TcpListener::bind("127.0.0.1:0")
                .unwrap()
                .local_addr()
                .unwrap();
            assert!(check_once(closed, "h", &tcp, timeout).await.is_err());
        });
        assert_eq!(status_of("HTTP/1.1 200 OK\r\n"), Some(200));
        assert_eq!(status_of("SSH-2.0-OpenSSH\r\n"), None);
    }
}
