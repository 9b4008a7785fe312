//! Helpers for end-to-end tests: start the real `kakuremichi-*` binaries on free loopback
//! ports with their own state directories, talk to them with `curl`, and run small origins.
//!
//! The binaries are taken from the cargo target directory this test binary was built in
//! (`cargo build --bins` first; the README's test command does).

pub mod browser;
pub mod cluster;
pub mod dns;
pub mod fanout;
pub mod nat;
pub mod origin;
pub mod pebble;
pub mod servers;
pub mod simulator;

pub use cluster::{Cluster, Node};
pub use origin::{EchoOrigin, Origin, ShapedOrigin};

use std::time::{Duration, Instant};

/// Poll `check` every 50 ms until it returns `Some`, or give up after `limit`.
pub fn wait_for<T>(limit: Duration, mut check: impl FnMut() -> Option<T>) -> Option<T> {
    let start = Instant::now();
    loop {
        if let Some(value) = check() {
            return Some(value);
        }
        if start.elapsed() > limit {
            return None;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Ports handed out below the kernel's ephemeral range (32768 and up), one after another
/// from a random start: a port from `bind(0)` could be taken meanwhile as the source port of
/// some connection, or handed to a test running in parallel, and then the node that was
/// meant to listen on it failed with "Address already in use".
fn next_port(bindable: impl Fn(u16) -> bool) -> u16 {
    use std::sync::atomic::{AtomicU16, Ordering};
    static NEXT: AtomicU16 = AtomicU16::new(0);
    const FIRST: u16 = 20_000;
    const SPAN: u16 = 12_000;
    if NEXT.load(Ordering::Relaxed) == 0 {
        let mut seed = [0u8; 2];
        getrandom::fill(&mut seed).expect("randomness");
        let start = FIRST + u16::from_le_bytes(seed) % SPAN;
        let _ = NEXT.compare_exchange(0, start, Ordering::Relaxed, Ordering::Relaxed);
    }
    for _ in 0..SPAN {
        let port = NEXT.fetch_add(1, Ordering::Relaxed);
        let port = FIRST + port.wrapping_sub(FIRST) % SPAN;
        if bindable(port) {
            return port;
        }
    }
    panic!("no free port between {FIRST} and {}", FIRST + SPAN);
}

/// A loopback TCP port nobody listens on right now, and that no other caller in this
/// process was given.
pub fn free_tcp_port() -> u16 {
    next_port(|port| std::net::TcpListener::bind(("127.0.0.1", port)).is_ok())
}

/// A loopback UDP port nobody uses right now, and that no other caller in this process was
/// given.
pub fn free_udp_port() -> u16 {
    next_port(|port| std::net::UdpSocket::bind(("127.0.0.1", port)).is_ok())
}

/// An HTTP answer as curl saw it.
#[derive(Debug, Clone)]
pub struct Answer {
    pub status: u16,
    pub body: String,
}

impl Answer {
    /// The body as JSON (panics with the body if it is not).
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_str(&self.body).unwrap_or_else(|e| panic!("not JSON ({e}): {}", self.body))
    }
}

/// Run curl with `args`; status 0 means curl could not connect or timed out.
pub fn curl(args: &[&str]) -> Answer {
    let output = std::process::Command::new("curl")
        .args(["-sS", "--max-time", "15", "-w", "\n%{http_code}"])
        .args(args)
        .output()
        .expect("curl runs");
    let text = String::from_utf8_lossy(&output.stdout).to_string();
    let (body, status) = text.rsplit_once('\n').unwrap_or(("", "0"));
    Answer {
        status: status.trim().parse().unwrap_or(0),
        body: body.to_string(),
    }
}

/// A curl client that keeps cookies across requests, as a browser does, and the last
/// response's headers.
pub struct CookieJar {
    jar: std::path::PathBuf,
    headers: std::path::PathBuf,
}

impl CookieJar {
    /// A jar named `name` in `dir`.
    pub fn new(dir: &std::path::Path, name: &str) -> CookieJar {
        CookieJar {
            jar: dir.join(format!("{name}.cookies")),
            headers: dir.join(format!("{name}.headers")),
        }
    }

    /// The jar's file (curl's cookie format).
    pub fn file(&self) -> &std::path::Path {
        &self.jar
    }

    /// Request `url` with the jar's cookies and any `extra` curl arguments.
    pub fn request(&self, url: &str, extra: &[&str]) -> Answer {
        let (jar, headers) = (
            self.jar.display().to_string(),
            self.headers.display().to_string(),
        );
        let mut args = vec!["-b", &jar, "-c", &jar, "-D", &headers];
        args.extend_from_slice(extra);
        args.push(url);
        curl(&args)
    }

    /// A header of the last response.
    pub fn header(&self, name: &str) -> Option<String> {
        std::fs::read_to_string(&self.headers)
            .ok()?
            .lines()
            .filter_map(|line| line.split_once(':'))
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.trim().to_string())
    }
}

/// The value of one sample in Prometheus text (`name` including any `{labels}`), if present.
pub fn metric(text: &str, name: &str) -> Option<f64> {
    text.lines()
        .filter(|line| !line.starts_with('#'))
        .find_map(|line| {
            line.strip_prefix(name)?
                .strip_prefix(' ')?
                .trim()
                .parse()
                .ok()
        })
}

/// Resident memory of a process in KiB (`VmRSS`), or 0 once it is gone.
pub fn rss_kib(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|status| {
            status
                .lines()
                .find_map(|l| l.strip_prefix("VmRSS:"))
                .and_then(|v| v.split_whitespace().next()?.parse().ok())
        })
        .unwrap_or(0)
}

/// Wait up to 30 s for the summed RSS of `pids` to come back to at most twice `idle_kib`
/// (plus 4 MiB for a debug build's slack); panics with the figures if it does not.
pub fn assert_memory_comes_back(pids: &[u32], idle_kib: u64) {
    let total = || pids.iter().map(|&pid| rss_kib(pid)).sum::<u64>();
    let back = wait_for(Duration::from_secs(30), || {
        let now = total();
        (now <= idle_kib * 2 + 4096).then_some(now)
    });
    assert!(
        back.is_some(),
        "RSS stayed at {} KiB after the load (idle {idle_kib} KiB)",
        total()
    );
}

/// A TCP relay on loopback to `target` that can be cut: a network partition between one
/// node and the server it dials, with nothing else changed.
pub struct Relay {
    /// Where clients connect.
    pub addr: std::net::SocketAddr,
    cut: std::sync::Arc<std::sync::atomic::AtomicBool>,
    streams: std::sync::Arc<std::sync::Mutex<Vec<std::net::TcpStream>>>,
}

impl Relay {
    /// Relay every connection to `target` until [`Relay::cut`].
    pub fn start(target: std::net::SocketAddr) -> Relay {
        use std::sync::atomic::Ordering;
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("relay port");
        let addr = listener.local_addr().expect("relay address");
        let relay = Relay {
            addr,
            cut: Default::default(),
            streams: Default::default(),
        };
        let (cut, streams) = (relay.cut.clone(), relay.streams.clone());
        std::thread::spawn(move || {
            for client in listener.incoming().flatten() {
                if cut.load(Ordering::SeqCst) {
                    drop(client);
                    continue;
                }
                let Ok(server) = std::net::TcpStream::connect(target) else {
                    continue;
                };
                let mut held = streams.lock().unwrap_or_else(|p| p.into_inner());
                for (mut from, mut to) in [
                    (client.try_clone(), server.try_clone()),
                    (server.try_clone(), client.try_clone()),
                ]
                .into_iter()
                .filter_map(|(a, b)| Some((a.ok()?, b.ok()?)))
                {
                    std::thread::spawn(move || {
                        let _ = std::io::copy(&mut from, &mut to);
                        let _ = to.shutdown(std::net::Shutdown::Both);
                    });
                }
                held.extend([client, server]);
            }
        });
        relay
    }

    /// Cut every relayed connection and refuse new ones from now on.
    pub fn cut(&self) {
        self.cut.store(true, std::sync::atomic::Ordering::SeqCst);
        for stream in self
            .streams
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .drain(..)
        {
            let _ = stream.shutdown(std::net::Shutdown::Both);
        }
    }
}

/// `request` sent as it is on a new TCP connection to `to`, from local address `from` when
/// given, and read until the far end closes or `limit` passes: the answer's status code (0 if
/// none came) and all of the answer.
pub fn raw_exchange(
    to: std::net::SocketAddr,
    from: Option<std::net::IpAddr>,
    request: &[u8],
    limit: Duration,
) -> (u16, String) {
    use std::io::{Read, Write};
    let socket = socket2::Socket::new(
        socket2::Domain::for_address(to),
        socket2::Type::STREAM,
        None,
    )
    .expect("a socket");
    if let Some(from) = from {
        socket
            .bind(&std::net::SocketAddr::new(from, 0).into())
            .expect("bind the local address");
    }
    if socket.connect(&to.into()).is_err() {
        return (0, String::new());
    }
    let mut stream: std::net::TcpStream = socket.into();
    let _ = stream.set_read_timeout(Some(limit));
    if stream.write_all(request).is_err() {
        return (0, String::new());
    }
    let mut answer = Vec::new();
    let _ = stream.read_to_end(&mut answer);
    let text = String::from_utf8_lossy(&answer).into_owned();
    let status = text
        .strip_prefix("HTTP/1.1 ")
        .and_then(|rest| rest.get(..3))
        .and_then(|code| code.parse().ok())
        .unwrap_or(0);
    (status, text)
}

/// A self-signed leaf (CA:FALSE, SAN) for `hostname` made with openssl: (cert path, key path).
pub fn openssl_leaf(
    dir: &std::path::Path,
    name: &str,
    hostname: &str,
) -> (std::path::PathBuf, std::path::PathBuf) {
    let (cert, key) = (
        dir.join(format!("{name}.crt")),
        dir.join(format!("{name}.key")),
    );
    let status = std::process::Command::new("openssl")
        .args([
            "req",
            "-x509",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:P-256",
            "-nodes",
            "-days",
            "30",
        ])
        .args(["-subj", &format!("/CN={hostname}")])
        .args([
            "-addext",
            &format!("subjectAltName=DNS:{hostname}"),
            "-addext",
            "basicConstraints=critical,CA:FALSE",
        ])
        .arg("-keyout")
        .arg(&key)
        .arg("-out")
        .arg(&cert)
        .output()
        .expect("openssl runs");
    assert!(
        status.status.success(),
        "{}",
        String::from_utf8_lossy(&status.stderr)
    );
    (cert, key)
}
