//! A fleet of simulated nodes (tests/src/simulator.rs: the real node protocol over Control's
//! WebSocket, no data plane) beside a real Control: an edit reaches the nodes it concerns
//! within a second and no other, a node that reconnects costs the other agents nothing, a
//! burst of edits converges, and Control keeps answering `/healthz` while it pushes.
//!
//! `FLEET_AGENTS`, `FLEET_GATEWAYS` and `FLEET_TUNNELS` scale it (300, 3 and 100 by default),
//! `FLEET_HEARTBEAT_MS` sets Control's heartbeat (500 ms; 15 s in production, a node silent
//! for three is dropped); the figures it prints are the benchmark's, the assertions hold at
//! any size.

use kakuremichi_tests::simulator::{Received, SimulatedNode};
use kakuremichi_tests::{wait_for, Cluster};
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant};

fn from_env(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// How long `GET /healthz` takes, answered in full.
fn healthz(control: SocketAddr) -> Duration {
    let start = Instant::now();
    let mut stream = TcpStream::connect(control).expect("connect to Control");
    stream
        .set_read_timeout(Some(Duration::from_secs(30)))
        .expect("timeout");
    stream
        .write_all(b"GET /healthz HTTP/1.1\r\nHost: control\r\nConnection: close\r\n\r\n")
        .expect("send");
    let mut answer = String::new();
    stream.read_to_string(&mut answer).expect("read");
    assert!(answer.starts_with("HTTP/1.1 200"), "healthz: {answer}");
    start.elapsed()
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    let index = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[index]
}

fn ms(d: Duration) -> String {
    format!("{:.0} ms", d.as_secs_f64() * 1000.0)
}

/// Configs each node received after `since`.
fn received_after(nodes: &[SimulatedNode], since: Instant) -> Vec<Vec<Received>> {
    nodes
        .iter()
        .map(|n| n.configs().into_iter().filter(|c| c.at > since).collect())
        .collect()
}

/// Watch `/healthz` from another thread until `done`; the slowest answer.
fn slowest_healthz_while(control: SocketAddr, done: impl FnOnce()) -> Duration {
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let watching = stop.clone();
    let watcher = std::thread::spawn(move || {
        let mut slowest = Duration::ZERO;
        while !watching.load(std::sync::atomic::Ordering::Relaxed) {
            slowest = slowest.max(healthz(control));
            std::thread::sleep(Duration::from_millis(20));
        }
        slowest
    });
    done();
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    watcher.join().expect("the healthz watcher")
}

struct Fleet {
    /// Control's heartbeat interval: a session also looks for changes on each.
    heartbeat: Duration,
    gateways: Vec<SimulatedNode>,
    agents: Vec<SimulatedNode>,
    agent_keys: Vec<String>,
    tunnels: Vec<String>,
}

fn connect_all(control: SocketAddr, kind: &str, nodes: &[(String, String)]) -> Vec<SimulatedNode> {
    nodes
        .iter()
        .map(|(id, key)| SimulatedNode::connect(control, kind, id, key))
        .collect()
}

/// Wait until every node has a config; the time it took.
fn wait_configured(nodes: &[SimulatedNode], limit: Duration) -> Duration {
    let start = Instant::now();
    let all = wait_for(limit, || {
        nodes.iter().all(|n| !n.configs().is_empty()).then_some(())
    });
    let missing: Vec<_> = nodes
        .iter()
        .filter(|n| n.configs().is_empty())
        .map(|n| (n.id.clone(), n.ended()))
        .collect();
    assert!(all.is_some(), "nodes without a config: {missing:?}");
    start.elapsed()
}

fn start_fleet(cluster: &Cluster, agents: usize, tunnels: usize) -> Fleet {
    let control: SocketAddr = format!("127.0.0.1:{}", cluster.control.http_port)
        .parse()
        .expect("Control's address");
    let gateway_ids: Vec<_> = (0..from_env("FLEET_GATEWAYS", 3))
        .map(|_| cluster.enrol("gateway"))
        .collect();
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
    let gateways = connect_all(control, "gateway", &gateway_ids);
    wait_configured(&gateways, Duration::from_secs(20));
    let agent_nodes = connect_all(control, "agent", &agent_ids);
    wait_configured(&agent_nodes, Duration::from_secs(60));
    let largest = |nodes: &[SimulatedNode]| {
        let sizes = nodes.iter().flat_map(|n| n.configs()).map(|c| c.bytes);
        sizes.max().unwrap_or(0) / 1000
    };
    println!(
        "simulated fleet: {} gateways, {agents} agents, {tunnels} tunnels configured {} after connecting; largest config: gateway {} KB, agent {} KB",
        gateway_ids.len(),
        ms(start.elapsed()),
        largest(&gateways),
        largest(&agent_nodes),
    );
    Fleet {
        heartbeat: Duration::ZERO,
        gateways,
        agents: agent_nodes,
        agent_keys: agent_ids.into_iter().map(|(_, key)| key).collect(),
        tunnels: tunnel_ids,
    }
}

/// Let the last pushes of the ramp land: no config anywhere for half a second.
fn settle(fleet: &Fleet) {
    let quiet = wait_for(Duration::from_secs(30), || {
        let since = Instant::now() - Duration::from_millis(500);
        let all = fleet.gateways.iter().chain(&fleet.agents);
        all.clone()
            .all(|n| n.configs().last().is_none_or(|c| c.at < since))
            .then_some(())
    });
    assert!(quiet.is_some(), "the fleet never stopped receiving configs");
}

/// Send `change` to `path`; wait until the agent at `agent` (and every gateway if
/// `gateways_concerned`) has a new config, and check that no other node got one. The slowest
/// of the concerned nodes, and how many configs the others got.
fn edit(
    cluster: &Cluster,
    fleet: &Fleet,
    path: &str,
    change: &serde_json::Value,
    gateways_concerned: bool,
    agent: usize,
) -> (Duration, usize) {
    let before = Instant::now();
    let answer = cluster.api("PATCH", path, Some(&change.to_string()));
    assert_eq!(answer.status, 200, "{change}: {}", answer.body);
    let gateways = fleet.gateways.iter().filter(|_| gateways_concerned);
    let concerned: Vec<&SimulatedNode> = gateways.chain([&fleet.agents[agent]]).collect();
    let arrived = wait_for(Duration::from_secs(20), || {
        concerned
            .iter()
            .all(|n| n.configs().last().is_some_and(|c| c.at > before))
            .then_some(())
    });
    let missing: Vec<_> = concerned
        .iter()
        .filter(|n| n.configs().last().is_none_or(|c| c.at < before))
        .map(|n| (n.id.clone(), n.configs().len(), n.ended()))
        .collect();
    assert!(
        arrived.is_some(),
        "{change} did not reach its nodes in 20 s: {} of {} missing, {missing:?}",
        missing.len(),
        concerned.len()
    );
    let slowest = concerned
        .iter()
        .map(|n| n.configs().last().expect("a config").at - before)
        .max()
        .expect("one node at least");
    assert!(
        slowest < Duration::from_secs(2),
        "{change} took {} to reach its nodes",
        ms(slowest)
    );
    // A heartbeat and more, when a session also looks for changes it was not told of.
    std::thread::sleep(fleet.heartbeat + Duration::from_millis(700));
    let count = |nodes: &[SimulatedNode], skip: Option<usize>| -> usize {
        received_after(nodes, before)
            .iter()
            .enumerate()
            .filter(|(i, _)| Some(*i) != skip)
            .map(|(_, configs)| configs.len())
            .sum()
    };
    let mut others = count(&fleet.agents, Some(agent));
    if !gateways_concerned {
        others += count(&fleet.gateways, None);
    }
    assert_eq!(others, 0, "{change}: nodes it does not concern got configs");
    (slowest, others)
}

#[test]
fn a_large_fleet_gets_an_edit_in_a_second_and_only_where_it_matters() {
    let agents = from_env("FLEET_AGENTS", 300);
    let tunnels = from_env("FLEET_TUNNELS", 100).max(20);
    let heartbeat = from_env("FLEET_HEARTBEAT_MS", 500).to_string();
    let cluster = Cluster::with_control_args("simfleet", &["--heartbeat-interval-ms", &heartbeat]);
    let control: SocketAddr = format!("127.0.0.1:{}", cluster.control.http_port)
        .parse()
        .expect("Control's address");
    let mut fleet = start_fleet(&cluster, agents, tunnels);
    fleet.heartbeat = Duration::from_millis(heartbeat.parse().expect("a number"));
    settle(&fleet);

    // A new target concerns the tunnel's agent alone; turning the tunnel off concerns the
    // gateways too. Each reaches the nodes it concerns within a second and nobody else.
    let edited = 0;
    let agent = edited % agents;
    let path = format!("/api/v1/tunnels/{}", fleet.tunnels[edited]);
    let retarget = serde_json::json!({ "target": "127.0.0.1:10" });
    let (latency, others) = edit(&cluster, &fleet, &path, &retarget, false, agent);
    println!(
        "simulated fleet: a new target reached its agent in {}; {others} configs to the other {} nodes",
        ms(latency),
        agents - 1 + fleet.gateways.len()
    );
    let disable = serde_json::json!({ "enabled": false });
    let (latency, others) = edit(&cluster, &fleet, &path, &disable, true, agent);
    println!(
        "simulated fleet: turning a tunnel off reached the {} gateways and its agent in {}; {others} configs to the other {} agents",
        fleet.gateways.len(),
        ms(latency),
        agents - 1
    );

    // A node that restarts (a new session, a new instance) costs the other agents nothing.
    let restarted = agents - 1;
    let before = Instant::now();
    let (id, key) = (
        fleet.agents[restarted].id.clone(),
        fleet.agent_keys[restarted].clone(),
    );
    fleet.agents[restarted] = SimulatedNode::connect(control, "agent", &id, &key);
    wait_configured(&fleet.agents[restarted..], Duration::from_secs(5));
    std::thread::sleep(fleet.heartbeat + Duration::from_millis(700));
    let others: usize = received_after(&fleet.agents[..restarted], before)
        .iter()
        .map(Vec::len)
        .sum();
    assert_eq!(others, 0, "an agent reconnecting sent other agents configs");

    // A burst: 20 other tunnels edited at once from 20 clients; each agent concerned gets it, and
    // Control keeps answering its health check meanwhile.
    let before = Instant::now();
    let slowest = slowest_healthz_while(control, || {
        std::thread::scope(|scope| {
            for i in 1..=20 {
                let path = format!("/api/v1/tunnels/{}", fleet.tunnels[i]);
                let cluster = &cluster;
                scope.spawn(move || {
                    let body = serde_json::json!({ "target": "127.0.0.1:11" }).to_string();
                    assert_eq!(cluster.api("PATCH", &path, Some(&body)).status, 200);
                });
            }
        });
        let converged = wait_for(Duration::from_secs(10), || {
            (1..=20)
                .all(|i| {
                    let agent = &fleet.agents[i % agents];
                    agent.configs().last().is_some_and(|c| c.at > before)
                })
                .then_some(())
        });
        assert!(converged.is_some(), "20 edits did not converge in 10 s");
    });
    let mut delays: Vec<Duration> = (1..=20)
        .map(|i| {
            fleet.agents[i % agents]
                .configs()
                .last()
                .expect("a config")
                .at
                - before
        })
        .collect();
    delays.sort();
    assert!(
        slowest < Duration::from_secs(1),
        "/healthz took {} during the burst",
        ms(slowest)
    );
    let sent: usize = received_after(&fleet.gateways, before)
        .iter()
        .chain(&received_after(&fleet.agents, before))
        .flatten()
        .map(|c| c.bytes)
        .sum();
    println!(
        "simulated fleet: 20 parallel edits: agents had them p50 {}, max {}; {} KB sent; slowest /healthz {}",
        ms(percentile(&delays, 0.5)),
        ms(percentile(&delays, 1.0)),
        sent / 1000,
        ms(slowest)
    );
    let ended: Vec<_> = fleet
        .gateways
        .iter()
        .chain(&fleet.agents)
        .filter_map(|n| n.ended().map(|why| (n.id.clone(), why)))
        .collect();
    assert!(ended.is_empty(), "sessions ended: {ended:?}");
}
