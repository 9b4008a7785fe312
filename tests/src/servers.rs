//! Real servers from Debian's packages, started on loopback for the port-tunnel tests:
//! PostgreSQL, dnsmasq (DNS over UDP), nginx (reads the PROXY protocol), `openssl s_server`
//! (an origin holding its own certificate) and nghttpd (HTTP/2 without TLS). Each is killed
//! when dropped.

use crate::{free_tcp_port, free_udp_port, wait_for};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

/// A server process, killed on drop.
pub struct Server {
    child: Child,
    /// The loopback port it serves on.
    pub port: u16,
    /// Its own directory (data, config, logs).
    pub dir: PathBuf,
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn is_root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .is_ok_and(|o| o.stdout.starts_with(b"0\n"))
}

/// `program args…`, as the `postgres` user when we are root (PostgreSQL refuses root).
fn as_postgres(program: &Path, args: &[&str]) -> Command {
    if is_root() {
        let mut command = Command::new("runuser");
        command
            .args(["-u", "postgres", "--"])
            .arg(program)
            .args(args);
        command
    } else {
        let mut command = Command::new(program);
        command.args(args);
        command
    }
}

fn postgres_bin(name: &str) -> PathBuf {
    let versions = std::fs::read_dir("/usr/lib/postgresql").expect(
        "PostgreSQL server (Debian's postgresql package; scripts/install-deps installs it)",
    );
    let mut dirs: Vec<PathBuf> = versions.flatten().map(|e| e.path()).collect();
    dirs.sort();
    dirs.last()
        .expect("a PostgreSQL version")
        .join("bin")
        .join(name)
}

fn spawn(mut command: Command, log: &Path) -> Child {
    let out = std::fs::File::create(log).expect("log file");
    command
        .stdin(Stdio::null())
        .stdout(out.try_clone().expect("log file"))
        .stderr(out)
        .spawn()
        .unwrap_or_else(|e| panic!("starting {command:?}: {e}"))
}

/// PostgreSQL on `127.0.0.1`, trusting every local connection, with a `bench` database.
pub fn postgres(parent: &Path) -> Server {
    let dir = parent.join("postgres");
    std::fs::create_dir_all(&dir).expect("postgres dir");
    if is_root() {
        let status = Command::new("chown")
            .args(["-R", "postgres", &dir.display().to_string()])
            .status()
            .expect("chown");
        assert!(status.success());
        // The parents must be enterable by the postgres user.
        let _ = Command::new("chmod")
            .args(["o+x", &parent.display().to_string()])
            .status();
    }
    let data = dir.join("data").display().to_string();
    let initdb = as_postgres(
        &postgres_bin("initdb"),
        &["-D", &data, "--auth=trust", "-U", "postgres", "-E", "UTF8"],
    )
    .output()
    .expect("initdb");
    assert!(
        initdb.status.success(),
        "initdb: {}",
        String::from_utf8_lossy(&initdb.stderr)
    );
    let port = free_tcp_port();
    let port_text = port.to_string();
    let socket_dir = dir.display().to_string();
    let command = as_postgres(
        &postgres_bin("postgres"),
        &[
            "-D",
            &data,
            "-h",
            "127.0.0.1",
            "-p",
            &port_text,
            "-k",
            &socket_dir,
            "-c",
            "fsync=off",
            "-c",
            "max_connections=200",
        ],
    );
    let child = spawn(command, &dir.join("postgres.log"));
    let server = Server { child, port, dir };
    wait_for(Duration::from_secs(20), || {
        psql("127.0.0.1", port, "select 1").then_some(())
    })
    .unwrap_or_else(|| panic!("PostgreSQL did not start: {}", server.log("postgres.log")));
    server
}

/// Whether `psql -c <sql>` against `host:port` succeeds (5 s connect timeout).
pub fn psql(host: &str, port: u16, sql: &str) -> bool {
    Command::new("psql")
        .args([
            "-h",
            host,
            "-p",
            &port.to_string(),
            "-U",
            "postgres",
            "-d",
            "postgres",
            "-tAc",
            sql,
        ])
        .env("PGCONNECT_TIMEOUT", "5")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

/// dnsmasq answering `*.example.test` with `192.0.2.7`, on UDP `127.0.0.1:port`.
pub fn dnsmasq(parent: &Path) -> Server {
    let dir = parent.join("dnsmasq");
    std::fs::create_dir_all(&dir).expect("dnsmasq dir");
    let port = free_udp_port();
    let mut command = Command::new("dnsmasq");
    command.args([
        "--keep-in-foreground",
        "--no-resolv",
        "--no-hosts",
        "--bind-interfaces",
        "--listen-address=127.0.0.1",
        &format!("--port={port}"),
        "--address=/example.test/192.0.2.7",
        "--cache-size=0",
        "--dns-forward-max=1000",
        &format!("--pid-file={}", dir.join("pid").display()),
        "--log-facility=-",
    ]);
    if is_root() {
        command.arg("--user=root");
    }
    let child = spawn(command, &dir.join("dnsmasq.log"));
    let server = Server { child, port, dir };
    wait_for(Duration::from_secs(10), || {
        crate::dns::query(
            &format!("127.0.0.1:{port}"),
            "up.example.test",
            Duration::from_millis(200),
        )
        .ok()
        .map(|_| ())
    })
    .unwrap_or_else(|| panic!("dnsmasq did not start: {}", server.log("dnsmasq.log")));
    server
}

/// nginx with an HTTP listener that expects the PROXY protocol and logs the address it
/// carried as `addr:port` per request in `access.log`.
pub fn nginx_proxy_protocol(parent: &Path) -> Server {
    nginx(
        parent,
        "nginx",
        "log_format carried '$proxy_protocol_addr:$proxy_protocol_port';\n\
         access_log {logs}/access.log carried;\n\
         server { listen 127.0.0.1:{port} proxy_protocol; location / { return 200 \"nginx saw $proxy_protocol_addr\\n\"; } }",
    )
}

/// Marks what an origin serves only under `/admin`: no visitor without credentials may ever
/// receive a body holding it.
pub const PROTECTED: &str = "PROTECTED-CONTENT";

/// nginx as an origin that normalises paths as nginx does (merges slashes, removes dot
/// segments, decodes `%XX`, `%2F` included, before matching a location): `/admin/…` answers
/// [`PROTECTED`] and the path nginx matched, `/webhooks/…` a hook, the rest a public page.
pub fn nginx_paths(parent: &Path) -> Server {
    nginx(
        parent,
        "nginx-paths",
        "access_log {logs}/access.log;\n\
         server { listen 127.0.0.1:{port};\n\
           location /admin { return 200 \"PROTECTED-CONTENT nginx $uri\\n\"; }\n\
           location /webhooks/ { return 200 \"hook nginx $uri\\n\"; }\n\
           location / { return 200 \"public nginx $uri\\n\"; } }",
    )
}

/// nginx in `parent/name` with `http_body` inside its `http` block, where `{port}` is the
/// port it gets and `{logs}` its log directory.
fn nginx(parent: &Path, name: &str, http_body: &str) -> Server {
    let dir = parent.join(name);
    std::fs::create_dir_all(dir.join("logs")).expect("nginx dir");
    let port = free_tcp_port();
    let http_body = http_body
        .replace("{port}", &port.to_string())
        .replace("{logs}", &dir.join("logs").display().to_string());
    let config = format!(
        "daemon off;\nworker_processes 1;\nerror_log {dir}/logs/error.log;\npid {dir}/nginx.pid;\n\
         {user}events {{ worker_connections 256; }}\n\
         http {{\n  client_body_temp_path {dir}/body; proxy_temp_path {dir}/proxy;\n\
           fastcgi_temp_path {dir}/fastcgi; uwsgi_temp_path {dir}/uwsgi; scgi_temp_path {dir}/scgi;\n\
           {http_body}\n}}\n",
        dir = dir.display(),
        user = if is_root() { "user root;\n" } else { "" },
    );
    let conf = dir.join("nginx.conf");
    std::fs::write(&conf, config).expect("nginx.conf");
    let mut command = Command::new("nginx");
    command.args([
        "-p",
        &dir.display().to_string(),
        "-c",
        &conf.display().to_string(),
    ]);
    let child = spawn(command, &dir.join("nginx.out"));
    let server = Server { child, port, dir };
    server.listening("nginx", "logs/error.log")
}

/// A WSGI app (Python's wsgiref server) that reads paths as the most forgiving frameworks
/// do: it decodes `PATH_INFO` a second time, takes `\` for `/`, drops `;` parameters,
/// removes dot segments and ignores case. Under `/admin` it answers [`PROTECTED`].
pub fn wsgi_paths(parent: &Path) -> Server {
    let dir = parent.join("wsgi-paths");
    std::fs::create_dir_all(&dir).expect("wsgi dir");
    let port = free_tcp_port();
    let app = format!(
        r#"import posixpath, re, sys
from urllib.parse import unquote
from wsgiref.simple_server import make_server, WSGIRequestHandler

def app(environ, start):
    raw = environ.get("PATH_INFO", "/")
    path = unquote(raw).replace("\\", "/").replace("\x00", "")
    path = "/".join(segment.split(";")[0] for segment in path.split("/"))
    path = posixpath.normpath(path).lower()
    if path == "/admin" or path.startswith("/admin/"):
        body = "{PROTECTED} wsgi " + path
    elif path.startswith("/webhooks/"):
        body = "hook wsgi " + path
    else:
        body = "public wsgi " + path
    start("200 OK", [("Content-Type", "text/plain")])
    return [(body + "\n").encode()]

class Quiet(WSGIRequestHandler):
    def log_message(self, *args):
        sys.stderr.write(self.requestline + "\n")

make_server("127.0.0.1", {port}, app, handler_class=Quiet).serve_forever()
"#
    );
    let script = dir.join("app.py");
    std::fs::write(&script, app).expect("app.py");
    let mut command = Command::new("python3");
    command.arg(&script);
    let child = spawn(command, &dir.join("wsgi.log"));
    let server = Server { child, port, dir };
    server.listening("the WSGI app", "wsgi.log")
}

/// `openssl s_server -www` for `hostname` with a certificate of its own, signed by a private
/// CA of its own (`ca.pem` in its directory, for clients to trust; `origin.pem` is the leaf).
pub fn tls_origin(parent: &Path, hostname: &str) -> Server {
    let dir = parent.join("tls-origin");
    std::fs::create_dir_all(&dir).expect("tls origin dir");
    let file = |name: &str| dir.join(name).display().to_string();
    let openssl = |args: &[&str]| {
        let out = Command::new("openssl")
            .args(args)
            .output()
            .expect("openssl");
        assert!(
            out.status.success(),
            "openssl {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    };
    let ec = [
        "-newkey",
        "ec",
        "-pkeyopt",
        "ec_paramgen_curve:P-256",
        "-nodes",
    ];
    openssl(
        &[
            &["req", "-x509"][..],
            &ec,
            &[
                "-days",
                "2",
                "-subj",
                "/CN=origin test CA",
                "-keyout",
                &file("ca.key"),
                "-out",
                &file("ca.pem"),
            ],
        ]
        .concat(),
    );
    openssl(
        &[
            &["req"][..],
            &ec,
            &[
                "-subj",
                &format!("/CN={hostname}"),
                "-keyout",
                &file("origin.key"),
                "-out",
                &file("origin.csr"),
            ],
        ]
        .concat(),
    );
    std::fs::write(
        dir.join("san.ext"),
        format!("subjectAltName=DNS:{hostname}\n"),
    )
    .expect("san.ext");
    openssl(&[
        "x509",
        "-req",
        "-in",
        &file("origin.csr"),
        "-CA",
        &file("ca.pem"),
        "-CAkey",
        &file("ca.key"),
        "-CAcreateserial",
        "-days",
        "2",
        "-extfile",
        &file("san.ext"),
        "-out",
        &file("origin.pem"),
    ]);
    let (cert, key) = (dir.join("origin.pem"), dir.join("origin.key"));
    let port = free_tcp_port();
    let mut command = Command::new("openssl");
    command
        .args([
            "s_server",
            "-www",
            "-accept",
            &format!("127.0.0.1:{port}"),
            "-naccept",
            "1000000",
        ])
        .arg("-cert")
        .arg(&cert)
        .arg("-key")
        .arg(&key);
    let child = spawn(command, &dir.join("s_server.log"));
    let server = Server { child, port, dir };
    server.listening("openssl s_server", "s_server.log")
}

/// nghttpd serving `files` (name, content) over HTTP/2 without TLS (h2c, prior knowledge).
pub fn h2c_origin(parent: &Path, files: &[(&str, &str)]) -> Server {
    let dir = parent.join("nghttpd");
    std::fs::create_dir_all(dir.join("htdocs")).expect("nghttpd dir");
    for (name, content) in files {
        std::fs::write(dir.join("htdocs").join(name), content).expect("nghttpd file");
    }
    let port = free_tcp_port();
    let mut command = Command::new("nghttpd");
    command
        .args(["--no-tls", "--address=127.0.0.1", "-d"])
        .arg(dir.join("htdocs"))
        .arg(port.to_string());
    let child = spawn(command, &dir.join("nghttpd.log"));
    let server = Server { child, port, dir };
    server.listening("nghttpd", "nghttpd.log")
}

impl Server {
    /// The server, once its TCP port accepts (within 10 s; else a panic with `log`, a file in
    /// its directory, naming it `what`).
    fn listening(self, what: &str, log: &str) -> Server {
        let port = self.port;
        wait_for(Duration::from_secs(10), || {
            std::net::TcpStream::connect(("127.0.0.1", port))
                .ok()
                .map(|_| ())
        })
        .unwrap_or_else(|| panic!("{what} did not start: {}", self.log(log)));
        self
    }

    /// A file in its directory, as text (for failure messages and logs).
    pub fn log(&self, name: &str) -> String {
        std::fs::read_to_string(self.dir.join(name)).unwrap_or_default()
    }
}
