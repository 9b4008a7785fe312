//! Clients that measure: bulk download and upload, paced latency, idle connections.

use anyhow::{bail, Context as _};
use async_io::{Async, Timer};
use futures_lite::{AsyncRead, AsyncWrite};
use http_body_util::BodyExt;
use hyper::client::conn::http1::SendRequest;
use kakuremichi_rt::http::Body;
use kakuremichi_rt::io::FuturesIo;
use std::net::{SocketAddr, TcpStream, ToSocketAddrs};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

pub(crate) trait Stream: AsyncRead + AsyncWrite + Send + Unpin {}
impl<T: AsyncRead + AsyncWrite + Send + Unpin> Stream for T {}

/// Where to send requests: the URL's scheme, host (for `Host` and SNI) and path, the address
/// to connect to, and the CA to trust for HTTPS.
#[derive(Clone)]
pub(crate) struct Target {
    uri: hyper::Uri,
    host: String,
    connect: SocketAddr,
    tls: Option<futures_rustls::TlsConnector>,
}

impl Target {
    pub(crate) fn new(
        url: &str,
        connect: Option<SocketAddr>,
        ca: Option<&PathBuf>,
    ) -> anyhow::Result<Self> {
        let uri: hyper::Uri = url.parse().with_context(|| format!("url {url}"))?;
        let https = match uri.scheme_str() {
            Some("http") => false,
            Some("https") => true,
            _ => bail!("url {url}: http:// or https:// expected"),
        };
        let host = uri.host().context("url without host")?.to_string();
        let port = uri.port_u16().unwrap_or(if https { 443 } else { 80 });
        let connect = match connect {
            Some(addr) => addr,
            None => (host.as_str(), port)
                .to_socket_addrs()?
                .next()
                .context("host has no address")?,
        };
        let tls = if https {
            Some(tls_connector(ca)?)
        } else {
            None
        };
        Ok(Target {
            uri,
            host,
            connect,
            tls,
        })
    }

    pub(crate) async fn open(&self) -> anyhow::Result<Box<dyn Stream>> {
        let tcp = Async::<TcpStream>::connect(self.connect)
            .await
            .with_context(|| format!("connect {}", self.connect))?;
        tcp.get_ref().set_nodelay(true)?;
        Ok(match &self.tls {
            None => Box::new(tcp),
            Some(connector) => {
                let name =
                    futures_rustls::rustls::pki_types::ServerName::try_from(self.host.clone())?;
                Box::new(
                    connector
                        .connect(name, tcp)
                        .await
                        .context("TLS handshake")?,
                )
            }
        })
    }

    async fn connection(&self) -> anyhow::Result<SendRequest<Body>> {
        let io = self.open().await?;
        let (sender, connection) =
            hyper::client::conn::http1::handshake(FuturesIo::new(io)).await?;
        smol::spawn(async move {
            let _ = connection.with_upgrades().await;
        })
        .detach();
        Ok(sender)
    }

    fn request(&self, method: &str, path: &str, body: Body) -> hyper::Request<Body> {
        let mut request = hyper::Request::new(body);
        *request.method_mut() = method.parse().unwrap_or(hyper::Method::GET);
        *request.uri_mut() = path.parse().unwrap_or_else(|_| self.uri.clone());
        if let Ok(host) = hyper::header::HeaderValue::from_str(&self.host) {
            request.headers_mut().insert(hyper::header::HOST, host);
        }
        request
    }
}

fn tls_connector(ca: Option<&PathBuf>) -> anyhow::Result<futures_rustls::TlsConnector> {
    use futures_rustls::rustls::{self, pki_types::pem::PemObject};
    let mut roots = rustls::RootCertStore::empty();
    if let Some(path) = ca {
        for cert in rustls::pki_types::CertificateDer::pem_file_iter(path)
            .with_context(|| format!("CA file {}", path.display()))?
        {
            roots.add(cert?)?;
        }
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()?
        .with_root_certificates(roots)
        .with_no_client_auth();
    Ok(futures_rustls::TlsConnector::from(Arc::new(config)))
}

fn gbit_per_s(bytes: u64, elapsed: Duration) -> f64 {
    bytes as f64 * 8.0 / elapsed.as_secs_f64() / 1e9
}

/// Move N bytes in one request: `download` from the origin's `/bytes/N`, `upload` to its
/// `/sink`.
#[derive(argh::FromArgs)]
#[argh(subcommand, name = "transfer")]
pub struct TransferArgs {
    /// download or upload
    #[argh(option)]
    direction: String,
    /// base URL (http:// or https://)
    #[argh(option)]
    url: String,
    /// connect here instead of resolving the URL's host
    #[argh(option)]
    connect: Option<SocketAddr>,
    /// CA certificate (PEM) to trust for https
    #[argh(option)]
    ca: Option<PathBuf>,
    /// bytes to move
    #[argh(option)]
    bytes: u64,
}

pub async fn transfer(args: TransferArgs) -> anyhow::Result<()> {
    let target = Target::new(&args.url, args.connect, args.ca.as_ref())?;
    let mut sender = target.connection().await?;
    let request = match args.direction.as_str() {
        "download" => target.request(
            "GET",
            &format!("/bytes/{}", args.bytes),
            kakuremichi_rt::http::full(""),
        ),
        "upload" => {
            let mut request =
                target.request("POST", "/sink", crate::origin::repeated_body(args.bytes));
            request.headers_mut().insert(
                hyper::header::CONTENT_LENGTH,
                hyper::header::HeaderValue::from(args.bytes),
            );
            request
        }
        other => bail!("--direction {other}: download or upload expected"),
    };
    let started = Instant::now();
    let response = sender.send_request(request).await?;
    let status = response.status();
    let mut body = response.into_body();
    let mut received = 0u64;
    let mut answer = Vec::new();
    while let Some(frame) = body.frame().await {
        if let Some(data) = frame?.data_ref() {
            received += data.len() as u64;
            if answer.len() < 64 {
                answer.extend_from_slice(data);
            }
        }
    }
    let elapsed = started.elapsed();
    // A download counts the bytes that arrived; an upload, what the origin says it got.
    let moved = match args.direction.as_str() {
        "download" => received,
        _ => String::from_utf8_lossy(&answer).trim().parse().unwrap_or(0),
    };
    if !status.is_success() || moved != args.bytes {
        bail!(
            "{} answered {status}, {moved} of {} bytes moved",
            args.direction,
            args.bytes
        );
    }
    println!(
        "{} bytes={moved} seconds={:.3} gbit_per_s={:.3}",
        args.direction,
        elapsed.as_secs_f64(),
        gbit_per_s(moved, elapsed)
    );
    Ok(())
}

/// Request `/1k` at a fixed rate over keep-alive connections; latency counts from the moment
/// each request was due, so a stall is not hidden by requests that were never sent.
#[derive(argh::FromArgs)]
#[argh(subcommand, name = "latency")]
pub struct LatencyArgs {
    /// base URL (http:// or https://)
    #[argh(option)]
    url: String,
    /// connect here instead of resolving the URL's host
    #[argh(option)]
    connect: Option<SocketAddr>,
    /// CA certificate (PEM) to trust for https
    #[argh(option)]
    ca: Option<PathBuf>,
    /// requests per second
    #[argh(option, default = "1000")]
    rate: u32,
    /// seconds measured (after one second of warm-up)
    #[argh(option, default = "10")]
    seconds: u32,
    /// keep-alive connections
    #[argh(option, default = "32")]
    connections: usize,
}

pub async fn latency(args: LatencyArgs) -> anyhow::Result<()> {
    let target = Target::new(&args.url, args.connect, args.ca.as_ref())?;
    let (idle_tx, idle_rx) = async_channel::unbounded();
    for _ in 0..args.connections {
        idle_tx.send(target.connection().await?).await?;
    }
    let warmup = args.rate as usize;
    let total = warmup + args.rate as usize * args.seconds as usize;
    let interval = Duration::from_secs_f64(1.0 / f64::from(args.rate));
    let (done_tx, done_rx) = async_channel::unbounded::<anyhow::Result<Duration>>();
    let started = Instant::now();
    for i in 0..total {
        let due = started + interval * i as u32;
        Timer::at(due).await;
        let (idle_tx, idle_rx, done_tx, target) = (
            idle_tx.clone(),
            idle_rx.clone(),
            done_tx.clone(),
            target.clone(),
        );
        smol::spawn(async move {
            let result = async {
                let mut sender: SendRequest<Body> = idle_rx.recv().await?;
                let response = sender
                    .send_request(target.request("GET", "/1k", kakuremichi_rt::http::full("")))
                    .await?;
                let status = response.status();
                let body = response.into_body().collect().await?.to_bytes();
                if !status.is_success() || body.len() != 1024 {
                    bail!("/1k answered {status} with {} bytes", body.len());
                }
                let latency = due.elapsed();
                idle_tx.send(sender).await?;
                Ok(latency)
            }
            .await;
            let _ = done_tx.send(result).await;
        })
        .detach();
    }
    let mut samples = Vec::with_capacity(total - warmup);
    for i in 0..total {
        let latency = done_rx.recv().await??;
        if i >= warmup {
            samples.push(latency);
        }
    }
    let elapsed = started.elapsed();
    samples.sort();
    let pick = |q: f64| samples[((samples.len() - 1) as f64 * q) as usize].as_secs_f64() * 1e3;
    println!(
        "latency requests={} rate={:.0} p50_ms={:.3} p90_ms={:.3} p99_ms={:.3} max_ms={:.3}",
        samples.len(),
        total as f64 / elapsed.as_secs_f64(),
        pick(0.50),
        pick(0.90),
        pick(0.99),
        pick(1.0)
    );
    Ok(())
}

/// Open N connections to `/hold`, upgrade them, and keep them idle.
#[derive(argh::FromArgs)]
#[argh(subcommand, name = "idle")]
pub struct IdleArgs {
    /// base URL (http:// or https://)
    #[argh(option)]
    url: String,
    /// connect here instead of resolving the URL's host
    #[argh(option)]
    connect: Option<SocketAddr>,
    /// CA certificate (PEM) to trust for https
    #[argh(option)]
    ca: Option<PathBuf>,
    /// connections to hold
    #[argh(option, default = "1000")]
    count: usize,
    /// seconds to hold them once all are open
    #[argh(option, default = "10")]
    seconds: u64,
}

pub async fn idle(args: IdleArgs) -> anyhow::Result<()> {
    let target = Target::new(&args.url, args.connect, args.ca.as_ref())?;
    let mut held = Vec::with_capacity(args.count);
    for i in 0..args.count {
        let mut sender = target.connection().await?;
        let mut request = target.request("GET", "/hold", kakuremichi_rt::http::full(""));
        for (name, value) in [
            (hyper::header::UPGRADE, "bench-hold"),
            (hyper::header::CONNECTION, "upgrade"),
        ] {
            request
                .headers_mut()
                .insert(name, hyper::header::HeaderValue::from_static(value));
        }
        let response = sender.send_request(request).await?;
        if response.status() != hyper::StatusCode::SWITCHING_PROTOCOLS {
            bail!("connection {i}: /hold answered {}", response.status());
        }
        held.push(hyper::upgrade::on(response).await?);
    }
    println!("idle connections={} open", held.len());
    Timer::after(Duration::from_secs(args.seconds)).await;
    Ok(())
}
