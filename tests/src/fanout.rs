//! A fleet of simulated nodes ([`crate::simulator`]) beside a real Control, and what a change
//! costs it: how long an edit takes to reach the nodes it concerns, what the others get, what
//! Control spends and how fast its API answers meanwhile. `tests/simulated_fleet.rs` asserts
//! on these at a small scale; the `kakuremichi-fanout` benchmark prints them at large ones.

use crate::simulator::{Received, SimulatedNode};
use crate::{wait_for, Cluster};
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// `name` from the environment as a number, else `default`.
pub fn from_env(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// The `p` quantile (0 to 1) of `sorted`, which is not empty.
pub fn percentile(sorted: &[Duration], p: f64) -> Duration {
    let index = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[index]
}

/// Milliseconds, rounded, for printing.
pub fn ms(d: Duration) -> String {
    format!("{:.0} ms", d.as_secs_f64() * 1000.0)
}

/// How long `GET path` takes Control at `control` to answer in full; panics unless 200.
pub fn timed_get(control: SocketAddr, path: &str, token: &str) -> Duration {
    let start = Instant::now();
    let mut stream = TcpStream::connect(control).expect("connect to Control");
    stream
        .set_read_timeout(Some(Duration::from_secs(30)))
        .expect("timeout");
    let request = format!(
        "GET {path} HTTP/1.1\r\nHost: control\r\nAuthorization: Bearer {token}\r\nConnection: close\r\n\r\n"
    );
    stream.write_all(request.as_bytes()).expect("send");
    let mut answer = String::new();
    stream.read_to_string(&mut answer).expect("read");
    assert!(answer.starts_with("HTTP/1.1 200"), "{path}: {answer}");
    start.elapsed()
}

/// Requests `paths` in turn from another thread until stopped: what an operator's browser
/// and scripts see while the fleet is pushed to.
pub struct ApiWatch {
    stop: Arc<AtomicBool>,
    thread: std::thread::JoinHandle<Vec<Duration>>,
}

impl ApiWatch {
    pub fn start(control: SocketAddr, token: &str, paths: Vec<String>) -> ApiWatch {
        let stop = Arc::new(AtomicBool::new(false));
        let (watching, token) = (stop.clone(), token.to_string());
        let thread = std::thread::spawn(move || {
            let mut timings = Vec::new();
            for path in paths.iter().cycle() {
                if watching.load(Ordering::Relaxed) {
                    break;
                }
                timings.push(timed_get(control, path, &token));
                std::thread::sleep(Duration::from_millis(20));
            }
            timings
        });
        ApiWatch { stop, thread }
    }

    /// Every answer's time, sorted.
    pub fn stop(self) -> Vec<Duration> {
        self.stop.store(true, Ordering::Relaxed);
        let mut timings = self.thread.join().expect("the API watcher");
        timings.sort();
        timings
    }
}

/// Configs each node received after `since`.
pub fn received_after(nodes: &[SimulatedNode], since: Instant) -> Vec<Vec<Received>> {
    nodes
        .iter()
        .map(|n| n.configs().into_iter().filter(|c| c.at > since).collect())
        .collect()
}

/// Control's CPU time so far (user and system), from `/proc`.
pub fn cpu_seconds(pid: u32) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    // Fields after the command name, which is in parentheses and may hold spaces.
    let fields: Vec<&str> = stat
        .rsplit_once(')')
        .map_or("", |(_, rest)| rest)
        .split_whitespace()
        .collect();
    let ticks = |i: usize| fields.get(i).and_then(|f| f.parse::<f64>().ok());
    // utime and stime are fields 14 and 15 of the file, 11 and 12 after the name.
    (ticks(11).unwrap_or(0.0) + ticks(12).unwrap_or(0.0)) / 100.0
}

/// Control's resident memory in bytes, from `/proc`.
pub fn rss_bytes(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    let line = status.lines().find(|l| l.starts_with("VmRSS:"));
    let kb = line.and_then(|l| l.split_whitespace().nth(1)?.parse::<u64>().ok());
    kb.unwrap_or(0) * 1024
}

/// Simulated gateways and agents, connected to one Control, and the tunnels they serve.
pub struct Fleet {
    pub control: SocketAddr,
    /// Control's heartbeat interval: a session also looks for changes on each.
    pub heartbeat: Duration,
    pub gateways: Vec<SimulatedNode>,
    pub agents: Vec<SimulatedNode>,
    pub agent_keys: Vec<String>,
    /// Tunnel `i` is served by agent `i % agents`.
    pub tunnels: Vec<String>,
    /// From the first connection until every node had its config.
    pub cold_start: Duration,
}

fn connect_all(
    control: SocketAddr,
    kind: &str,
    nodes: &[(String, String)],
    heartbeat: Duration,
) -> Vec<SimulatedNode> {
    nodes
        .iter()
        .map(|(id, key)| SimulatedNode::connect(control, kind, id, key, heartbeat))
        .collect()
}

/// Wait until every node has a config; panics, naming those without, after `limit`.
pub fn wait_configured(nodes: &[SimulatedNode], limit: Duration) {
    let all = wait_for(limit, || {
        nodes.iter().all(|n| !n.configs().is_empty()).then_some(())
    });
    let missing: Vec<_> = nodes
        .iter()
        .filter(|n| n.configs().is_empty())
        .map(|n| (n.id.clone(), n.ended()))
        .collect();
    assert!(all.is_some(), "nodes without a config: {missing:?}");
}

impl Fleet {
    /// Enrol `gateways` and `agents` through the API, create `tunnels` (plain HTTP), then
    /// connect them all at once and wait until each has its config.
    pub fn start(
        cluster: &Cluster,
        gateways: usize,
        agents: usize,
        tunnels: usize,
        heartbeat: Duration,
    ) -> Fleet {
        let control: SocketAddr = format!("127.0.0.1:{}", cluster.control.http_port)
            .parse()
            .expect("Control's address");
        let gateway_ids: Vec<_> = (0..gateways).map(|_| cluster.enrol("gateway")).collect();
        let agent_ids: Vec<_> = (0..agents).map(|_| cluster.enrol("agent")).collect();
        let tunnel_ids = (0..tunnels)
            .map(|i| {
                let body = serde_json::json!({
                    "hostname": format!("t{i}.localhost"),
                    "agent": agent_ids[i % agents].0,
                    "target": "127.0.0.1:9",
                    "issuer": "none",
                });
                let answer = cluster.api("POST", "/api/v1/tunnels", Some(&body.to_string()));
                assert_eq!(answer.status, 201, "create tunnel {i}: {}", answer.body);
                answer.json()["id"].as_str().expect("an id").to_string()
            })
            .collect();
        let start = Instant::now();
        let gateway_nodes = connect_all(control, "gateway", &gateway_ids, heartbeat);
        let agent_nodes = connect_all(control, "agent", &agent_ids, heartbeat);
        let limit = Duration::from_secs(30) + Duration::from_millis(20 * agents as u64);
        wait_configured(&gateway_nodes, limit);
        wait_configured(&agent_nodes, limit);
        Fleet {
            control,
            heartbeat,
            gateways: gateway_nodes,
            agents: agent_nodes,
            agent_keys: agent_ids.into_iter().map(|(_, key)| key).collect(),
            tunnels: tunnel_ids,
            cold_start: start.elapsed(),
        }
    }

    /// Watch what an operator reads while the fleet is pushed to: `/healthz`, a tunnel and
    /// the gateways list (with each gateway's health).
    pub fn watch_api(&self, token: &str) -> ApiWatch {
        let paths = vec![
            "/healthz".into(),
            format!("/api/v1/tunnels/{}", self.tunnels[0]),
            "/api/v1/gateways".into(),
        ];
        ApiWatch::start(self.control, token, paths)
    }

    pub fn nodes(&self) -> impl Iterator<Item = &SimulatedNode> + Clone {
        self.gateways.iter().chain(&self.agents)
    }

    /// The largest config each kind was sent, in bytes.
    pub fn largest_configs(&self) -> (usize, usize) {
        let largest = |nodes: &[SimulatedNode]| {
            let sizes = nodes.iter().flat_map(|n| n.configs()).map(|c| c.bytes);
            sizes.max().unwrap_or(0)
        };
        (largest(&self.gateways), largest(&self.agents))
    }

    /// Sessions that ended, and why.
    pub fn ended(&self) -> Vec<(String, String)> {
        self.nodes()
            .filter_map(|n| n.ended().map(|why| (n.id.clone(), why)))
            .collect()
    }

    /// Let the last pushes land: no config anywhere for half a second.
    pub fn settle(&self) {
        let quiet = wait_for(Duration::from_secs(60), || {
            let since = Instant::now() - Duration::from_millis(500);
            self.nodes()
                .all(|n| n.configs().last().is_none_or(|c| c.at < since))
                .then_some(())
        });
        assert!(quiet.is_some(), "the fleet never stopped receiving configs");
    }

    /// Send `change` to tunnel `tunnel`; wait until its agent (and every gateway if
    /// `gateways_concerned`) has a new config, then a heartbeat more, and count what every
    /// node was sent meanwhile.
    pub fn edit(
        &self,
        cluster: &Cluster,
        tunnel: usize,
        change: &serde_json::Value,
        gateways_concerned: bool,
    ) -> Edit {
        let path = format!("/api/v1/tunnels/{}", self.tunnels[tunnel]);
        let agent = tunnel % self.agents.len();
        let before = Instant::now();
        let answer = cluster.api("PATCH", &path, Some(&change.to_string()));
        assert_eq!(answer.status, 200, "{change}: {}", answer.body);
        let gateways = self.gateways.iter().filter(|_| gateways_concerned);
        let concerned: Vec<&SimulatedNode> = gateways.chain([&self.agents[agent]]).collect();
        let arrived = wait_for(Duration::from_secs(20), || {
            concerned
                .iter()
                .all(|n| n.configs().last().is_some_and(|c| c.at > before))
                .then_some(())
        });
        let missing: Vec<_> = concerned
            .iter()
            .filter(|n| n.configs().last().is_none_or(|c| c.at < before))
            .map(|n| {
                let gap = n.longest_heartbeat_gap();
                (n.id.clone(), n.configs().len(), n.ended(), gap)
            })
            .collect();
        assert!(
            arrived.is_some(),
            "{change} did not reach its nodes in 20 s: {} of {} missing, {missing:?}",
            missing.len(),
            concerned.len()
        );
        let mut delays: Vec<Duration> = concerned
            .iter()
            .map(|n| n.configs().last().expect("a config").at - before)
            .collect();
        delays.sort();
        // A heartbeat and more, when a session also looks for changes it was not told of.
        std::thread::sleep(self.heartbeat + Duration::from_millis(700));
        let (mut others, mut bytes) = (0, 0);
        let all = self.gateways.iter().map(|n| (n, gateways_concerned));
        let agents = self.agents.iter().enumerate();
        for (node, wanted) in all.chain(agents.map(|(i, n)| (n, i == agent))) {
            let got: Vec<Received> = node
                .configs()
                .into_iter()
                .filter(|c| c.at > before)
                .collect();
            bytes += got.iter().map(|c| c.bytes).sum::<usize>();
            if !wanted {
                others += got.len();
            }
        }
        Edit {
            delays,
            bytes,
            others,
        }
    }
}

/// What one edit cost the fleet.
pub struct Edit {
    /// How long each node it concerns took to have it, sorted.
    pub delays: Vec<Duration>,
    /// Config bytes sent to every node.
    pub bytes: usize,
    /// Configs sent to nodes it does not concern.
    pub others: usize,
}

impl Edit {
    pub fn slowest(&self) -> Duration {
        self.delays.last().copied().unwrap_or_default()
    }
}
