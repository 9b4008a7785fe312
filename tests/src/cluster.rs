//! A Control, gateways and agents as real processes on loopback.

use crate::{curl, free_tcp_port, free_udp_port, wait_for, Answer};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

/// Where cargo put the binaries: the test executable lives in `target/<profile>/deps/`.
pub fn bin_dir() -> PathBuf {
    if let Some(dir) = std::env::var_os("KAKUREMICHI_BIN_DIR") {
        return PathBuf::from(dir);
    }
    let exe = std::env::current_exe().expect("test executable path");
    exe.parent()
        .and_then(Path::parent)
        .expect("target/<profile>")
        .to_path_buf()
}

/// One kakuremichi process, restartable, killed when dropped.
pub struct Node {
    pub name: String,
    binary: PathBuf,
    /// A command the binary runs under (`ip netns exec …`), or none.
    wrapper: Vec<String>,
    args: Vec<String>,
    env: Vec<(String, String)>,
    log: PathBuf,
    child: Option<Child>,
    /// The node's id in Control (empty for Control itself).
    pub id: String,
    /// HTTP port (gateways), status/admin port (agents, gateways), or API port (Control).
    pub http_port: u16,
    pub https_port: u16,
    pub admin_port: u16,
    /// The address the public listeners are on.
    pub ip: String,
}

impl Node {
    fn new(
        name: &str,
        binary: &str,
        args: Vec<String>,
        env: Vec<(String, String)>,
        dir: &Path,
    ) -> Node {
        Node {
            name: name.to_string(),
            binary: bin_dir().join(binary),
            wrapper: Vec::new(),
            args,
            env,
            log: dir.join(format!("{name}.log")),
            child: None,
            id: String::new(),
            http_port: 0,
            https_port: 0,
            ip: "127.0.0.1".into(),
            admin_port: 0,
        }
    }

    /// Start the process (appending to its log).
    pub fn start(&mut self) {
        assert!(self.child.is_none(), "{} already running", self.name);
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log)
            .expect("log file");
        let mut command = match self.wrapper.split_first() {
            Some((program, args)) => {
                let mut command = Command::new(program);
                command.args(args).arg(&self.binary);
                command
            }
            None => Command::new(&self.binary),
        };
        let child = command
            .args(&self.args)
            .envs(self.env.iter().map(|(k, v)| (k, v)))
            .env("KAKUREMICHI_LOG", "debug")
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("log handle"))
            .stderr(log)
            .spawn()
            .unwrap_or_else(|e| {
                panic!(
                    "starting {}: {e} (run `cargo build --bins` first)",
                    self.binary.display()
                )
            });
        self.child = Some(child);
    }

    /// `kill -9` and reap.
    pub fn kill9(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Add arguments for the next start.
    pub fn add_args(&mut self, extra: &[&str]) {
        self.args.extend(extra.iter().map(|a| a.to_string()));
    }

    /// Set an environment variable for the next start.
    pub fn set_env(&mut self, name: &str, value: &str) {
        self.env.retain(|(n, _)| n != name);
        self.env.push((name.into(), value.into()));
    }

    /// Send SIGTERM (what `docker stop` sends) and wait up to `limit` for the exit: its
    /// status, or `None` if the process was still running (it is then killed).
    pub fn terminate(&mut self, limit: Duration) -> Option<std::process::ExitStatus> {
        let mut child = self.child.take()?;
        let _ = Command::new("kill")
            .args(["-TERM", &child.id().to_string()])
            .status();
        let deadline = std::time::Instant::now() + limit;
        while std::time::Instant::now() < deadline {
            if let Ok(Some(status)) = child.try_wait() {
                return Some(status);
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        let _ = child.kill();
        let _ = child.wait();
        None
    }

    /// Run the binary's `healthcheck` subcommand with the node's arguments: whether it
    /// reports healthy.
    pub fn healthcheck(&self) -> bool {
        Command::new(&self.binary)
            .args(&self.args)
            .arg("healthcheck")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|status| status.success())
    }

    /// Kill and start again.
    pub fn restart(&mut self) {
        self.kill9();
        self.start();
    }

    /// Whether the process is still running.
    pub fn is_running(&mut self) -> bool {
        self.child
            .as_mut()
            .is_some_and(|c| matches!(c.try_wait(), Ok(None)))
    }

    /// The process id while it runs.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// The node's `/metrics` text (gateways' admin and agents' status listeners).
    pub fn metrics(&self) -> String {
        let url = format!("http://127.0.0.1:{}/metrics", self.admin_port);
        match self.wrapper.split_first() {
            Some((program, args)) => {
                let out = Command::new(program)
                    .args(args)
                    .args(["curl", "-s", "--max-time", "5", &url])
                    .output()
                    .expect("curl through the wrapper");
                String::from_utf8_lossy(&out.stdout).into_owned()
            }
            None => curl(&[&url]).body,
        }
    }

    /// Everything the process logged so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        self.kill9();
    }
}

/// Control plus any number of gateways and agents, each with its own ports and state.
pub struct Cluster {
    pub dir: PathBuf,
    pub control: Node,
    pub token: String,
    pub gateways: Vec<Node>,
    pub agents: Vec<Node>,
    /// Extra arguments for every gateway started from now on.
    pub gateway_args: Vec<String>,
    /// Gateways from now on take WireGuard on their public address, not loopback.
    pub wireguard_on_gateway_ip: bool,
    /// The command agents from now on run under (`ip netns exec <lan>`).
    pub agent_wrapper: Vec<String>,
}

impl Cluster {
    /// Start Control with a fresh store and make an admin token.
    pub fn new(name: &str) -> Cluster {
        Cluster::with_control_args(name, &[])
    }

    /// Start Control with extra arguments (ACME settings, default issuer).
    pub fn with_control_args(name: &str, extra: &[&str]) -> Cluster {
        Cluster::listening_on(name, "127.0.0.1", extra)
    }

    /// Start Control with its API on `ip` (which agents elsewhere can reach).
    pub fn listening_on(name: &str, ip: &str, extra: &[&str]) -> Cluster {
        Cluster::start(name, ip, extra, None)
    }

    /// Start Control with its store in `data` (a directory on a file system of the test's
    /// choosing) rather than in the test directory.
    pub fn storing_in(name: &str, data: &Path) -> Cluster {
        Cluster::start(name, "127.0.0.1", &[], Some(data))
    }

    fn start(name: &str, ip: &str, extra: &[&str], data: Option<&Path>) -> Cluster {
        let mut nonce = [0u8; 4];
        getrandom::fill(&mut nonce).expect("randomness");
        let dir = std::env::temp_dir().join(format!(
            "kakuremichi-{name}-{}-{:08x}",
            std::process::id(),
            u32::from_le_bytes(nonce)
        ));
        std::fs::create_dir_all(&dir).expect("test directory");
        let port = free_tcp_port();
        let data = data
            .map_or_else(|| dir.join("control-data"), Path::to_path_buf)
            .display()
            .to_string();
        let token_output = Command::new(bin_dir().join("kakuremichi-control"))
            .args(["--data-dir", &data, "token", "create", "--name", "tests"])
            .output()
            .expect("kakuremichi-control token create");
        assert!(
            token_output.status.success(),
            "token create failed: {}",
            String::from_utf8_lossy(&token_output.stderr)
        );
        let token = String::from_utf8_lossy(&token_output.stdout)
            .trim()
            .to_string();
        let mut args = vec![
            "--data-dir".into(),
            data,
            "--listen".into(),
            format!("{ip}:{port}"),
        ];
        args.extend(extra.iter().map(|a| a.to_string()));
        let mut control = Node::new("control", "kakuremichi-control", args, vec![], &dir);
        control.http_port = port;
        control.ip = ip.to_string();
        control.start();
        let cluster = Cluster {
            dir,
            control,
            token,
            gateways: Vec::new(),
            agents: Vec::new(),
            gateway_args: Vec::new(),
            wireguard_on_gateway_ip: false,
            agent_wrapper: Vec::new(),
        };
        wait_for(Duration::from_secs(10), || {
            (curl(&[&cluster.control_url("/healthz")]).status == 200).then_some(())
        })
        .expect("control answers /healthz");
        cluster
    }

    /// Control's `/metrics` text.
    pub fn control_metrics(&self) -> String {
        let bearer = format!("Authorization: Bearer {}", self.token);
        curl(&["-H", &bearer, &self.control_url("/metrics")]).body
    }

    /// `http://<control address>:<control port><path>`.
    pub fn control_url(&self, path: &str) -> String {
        format!(
            "http://{}:{}{path}",
            self.control.ip, self.control.http_port
        )
    }

    /// `kakuremichi-control COMMAND ARGS…` (`tunnel`, `gateway`) against this Control with the
    /// admin token: its exit status and output.
    pub fn cli(&self, command: &str, args: &[&str]) -> (bool, String) {
        let listen = format!("{}:{}", self.control.ip, self.control.http_port);
        let out = Command::new(bin_dir().join("kakuremichi-control"))
            .args(["--listen", &listen, command, "--token", &self.token])
            .args(args)
            .output()
            .expect("kakuremichi-control");
        let text = String::from_utf8_lossy(&out.stdout).to_string()
            + &String::from_utf8_lossy(&out.stderr);
        (out.status.success(), text)
    }

    /// `kakuremichi-control user add NAME` on this Control's store, with `secret` on stdin.
    pub fn add_user(&self, name: &str, admin: bool, secret: &str) {
        use std::io::Write;
        let data = self.dir.join("control-data");
        let mut command = Command::new(bin_dir().join("kakuremichi-control"));
        command
            .arg("--data-dir")
            .arg(&data)
            .args(["user", "add", "--password-stdin"]);
        if admin {
            command.arg("--admin");
        }
        let mut add = command
            .arg(name)
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .spawn()
            .expect("user add runs");
        let mut stdin = add.stdin.take().expect("stdin is piped");
        stdin.write_all(format!("{secret}\n").as_bytes()).unwrap();
        drop(stdin);
        assert!(add.wait().unwrap().success(), "user add {name}");
    }

    /// Call the REST API with the admin token.
    pub fn api(&self, method: &str, path: &str, body: Option<&str>) -> Answer {
        let auth = format!("Authorization: Bearer {}", self.token);
        let url = self.control_url(path);
        let mut args = vec![
            "-X",
            method,
            "-H",
            &auth,
            "-H",
            "Content-Type: application/json",
            &url,
        ];
        if let Some(body) = body {
            args.extend(["--data-binary", body]);
        }
        curl(&args)
    }

    /// Enrol a node of `kind` through the API: its id and API key.
    pub fn enrol(&self, kind: &str) -> (String, String) {
        let answer = self.api("POST", &format!("/api/v1/{kind}s"), Some("{}"));
        assert_eq!(answer.status, 201, "enrol {kind}: {}", answer.body);
        let json = answer.json();
        (
            json["id"].as_str().unwrap().to_string(),
            json["api_key"].as_str().unwrap().to_string(),
        )
    }

    /// Enrol and start a gateway; returns its index.
    pub fn add_gateway(&mut self) -> usize {
        self.add_gateway_at("127.0.0.1", free_tcp_port())
    }

    /// Enrol and start a gateway whose public listeners are on `ip` (any 127.0.0.0/8 address)
    /// with plain HTTP on `http`; returns its index.
    pub fn add_gateway_at(&mut self, ip: &str, http: u16) -> usize {
        self.add_gateway_with_ports(ip, http, free_tcp_port())
    }

    /// Enrol and start a gateway with its public listeners on `ip:http` and `ip:https`.
    pub fn add_gateway_with_ports(&mut self, ip: &str, http: u16, https: u16) -> usize {
        let (id, api_key) = self.enrol("gateway");
        let index = self.gateways.len();
        let (admin, wireguard) = (free_tcp_port(), free_udp_port());
        let state = self
            .dir
            .join(format!("gateway{index}-state"))
            .display()
            .to_string();
        let args = vec![
            "--state-dir".into(),
            state,
            "--http-listen".into(),
            format!("{ip}:{http}"),
            "--https-listen".into(),
            format!("{ip}:{https}"),
            "--wireguard-listen".into(),
            match self.wireguard_on_gateway_ip {
                true => format!("{ip}:{wireguard}"),
                false => format!("127.0.0.1:{wireguard}"),
            },
            "--admin-listen".into(),
            format!("127.0.0.1:{admin}"),
        ]
        .into_iter()
        .chain(self.gateway_args.iter().cloned())
        .collect();
        let env = vec![
            ("CONTROL_URL".into(), self.control_url("")),
            ("API_KEY".into(), api_key),
        ];
        let mut node = Node::new(
            &format!("gateway{index}"),
            "kakuremichi-gateway",
            args,
            env,
            &self.dir,
        );
        node.id = id;
        node.http_port = http;
        node.https_port = https;
        node.ip = ip.to_string();
        node.admin_port = admin;
        node.start();
        self.gateways.push(node);
        index
    }

    /// The gateway's WireGuard UDP port.
    pub fn gateway_wireguard_port(&self, gateway: usize) -> u16 {
        let args = &self.gateways[gateway].args;
        let listen = &args[args.iter().position(|a| a == "--wireguard-listen").unwrap() + 1];
        listen.rsplit_once(':').unwrap().1.parse().unwrap()
    }

    /// Enrol and start an agent that reaches Control at `control_url`, trusting `control_ca`.
    pub fn add_agent_via(&mut self, control_url: &str, control_ca: &Path) -> usize {
        let index = self.add_agent();
        let agent = &mut self.agents[index];
        agent.kill9();
        agent.set_env("CONTROL_URL", control_url);
        agent.set_env("CONTROL_CA", &control_ca.display().to_string());
        agent.start();
        index
    }

    /// Enrol and start an agent with `api_key` (or a freshly enrolled one); returns its index.
    pub fn add_agent_with_key(&mut self, api_key: Option<&str>) -> usize {
        let (id, key) = match api_key {
            Some(key) => (String::new(), key.to_string()),
            None => self.enrol("agent"),
        };
        let index = self.agents.len();
        let status = free_tcp_port();
        let state = self
            .dir
            .join(format!("agent{index}-state"))
            .display()
            .to_string();
        let args = vec![
            "--state-dir".into(),
            state,
            "--status-listen".into(),
            format!("127.0.0.1:{status}"),
        ];
        let env = vec![
            ("CONTROL_URL".into(), self.control_url("")),
            ("API_KEY".into(), key),
        ];
        let mut node = Node::new(
            &format!("agent{index}"),
            "kakuremichi-agent",
            args,
            env,
            &self.dir,
        );
        node.id = id;
        node.admin_port = status;
        node.wrapper = self.agent_wrapper.clone();
        node.start();
        self.agents.push(node);
        index
    }

    /// Enrol and start an agent; returns its index.
    pub fn add_agent(&mut self) -> usize {
        self.add_agent_with_key(None)
    }

    /// Create a tunnel; returns its id.
    pub fn create_tunnel(&self, hostname: &str, agent: usize, target: &str) -> String {
        self.create_tunnel_with_issuer(hostname, agent, target, "none")
    }

    /// Create a tunnel whose certificate comes from `issuer`; returns its id.
    pub fn create_tunnel_with_issuer(
        &self,
        hostname: &str,
        agent: usize,
        target: &str,
        issuer: &str,
    ) -> String {
        let agent = &self.agents[agent].id;
        let body = serde_json::json!({ "hostname": hostname, "agent": agent, "target": target, "issuer": issuer }).to_string();
        let answer = self.api("POST", "/api/v1/tunnels", Some(&body));
        assert_eq!(answer.status, 201, "create tunnel: {}", answer.body);
        answer.json()["id"].as_str().unwrap().to_string()
    }

    /// `GET http://<hostname>/<path>` through a gateway (resolved to the gateway's port).
    pub fn get(&self, gateway: usize, hostname: &str, path: &str) -> Answer {
        let node = &self.gateways[gateway];
        let resolve = format!("{hostname}:{}:{}", node.http_port, node.ip);
        curl(&[
            "--resolve",
            &resolve,
            &format!("http://{hostname}:{}{path}", node.http_port),
        ])
    }

    /// `GET https://<hostname>/<path>` through a gateway, trusting `ca_file`; `extra` adds
    /// curl arguments (e.g. `--http2`, `-w`).
    pub fn get_https(
        &self,
        gateway: usize,
        hostname: &str,
        path: &str,
        ca_file: &Path,
        extra: &[&str],
    ) -> Answer {
        let node = &self.gateways[gateway];
        let resolve = format!("{hostname}:{}:{}", node.https_port, node.ip);
        let ca = ca_file.display().to_string();
        let url = format!("https://{hostname}:{}{path}", node.https_port);
        let mut args = vec!["--resolve", &resolve, "--cacert", &ca];
        args.extend_from_slice(extra);
        args.push(&url);
        curl(&args)
    }

    /// The certificate record of `hostname` from the API.
    pub fn certificate(&self, hostname: &str) -> serde_json::Value {
        let list = self.api("GET", "/api/v1/certificates", None).json();
        list.as_array()
            .and_then(|a| a.iter().find(|c| c["hostname"] == hostname))
            .cloned()
            .unwrap_or_default()
    }

    /// Wait until `check` accepts what the gateway answers for `hostname`; returns how long
    /// that took.
    pub fn wait_until(
        &self,
        gateway: usize,
        hostname: &str,
        limit: Duration,
        mut check: impl FnMut(&Answer) -> bool,
    ) -> Option<Duration> {
        let start = std::time::Instant::now();
        wait_for(limit, || {
            check(&self.get(gateway, hostname, "/")).then(|| start.elapsed())
        })
    }

    /// The node's entry in `GET /api/v1/{agents,gateways}`.
    pub fn node_status(&self, kind: &str, id: &str) -> serde_json::Value {
        let list = self.api("GET", &format!("/api/v1/{kind}s"), None).json();
        list.as_array()
            .and_then(|a| a.iter().find(|n| n["id"] == id))
            .cloned()
            .unwrap_or_default()
    }

    /// Wait until Control shows the node of `kind` online (its hello recorded); panics with
    /// every log after 10 s.
    pub fn wait_online(&self, kind: &str, id: &str) {
        wait_for(Duration::from_secs(10), || {
            (self.node_status(kind, id)["online"] == true).then_some(())
        })
        .unwrap_or_else(|| panic!("{kind} {id} never online\n{}", self.logs()));
    }

    /// Logs of every process, for failure messages.
    pub fn logs(&self) -> String {
        std::iter::once(&self.control)
            .chain(&self.gateways)
            .chain(&self.agents)
            .map(|n| format!("===== {} =====\n{}", n.name, n.log()))
            .collect::<Vec<_>>()
            .join("\n")
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        self.gateways.clear();
        self.agents.clear();
        self.control.kill9();
        if !std::thread::panicking() {
            let _ = std::fs::remove_dir_all(&self.dir);
        } else {
            eprintln!("logs kept in {}", self.dir.display());
        }
    }
}
