//! A fleet of simulated nodes (tests/src/simulator.rs: the real node protocol over Control's
//! WebSocket, no data plane) beside a real Control: an edit reaches the nodes it concerns
//! within a second and no other, a node that reconnects costs the other agents nothing, a
//! burst of edits converges, and Control keeps answering its API while it pushes.
//!
//! `FLEET_AGENTS`, `FLEET_GATEWAYS` and `FLEET_TUNNELS` scale it (300, 3 and 100 by default),
//! `FLEET_HEARTBEAT_MS` sets Control's heartbeat (500 ms; 15 s in production, a node silent
//! for three is dropped). The assertions hold at any size; `kakuremichi-fanout` (scripts/bench
//! fanout) prints the same figures at 1,000 and 10,000 agents.

use kakuremichi_tests::fanout::{from_env, ms, percentile, received_after, Fleet};
use kakuremichi_tests::simulator::SimulatedNode;
use kakuremichi_tests::{wait_for, Cluster};
use std::time::{Duration, Instant};

#[test]
fn a_large_fleet_gets_an_edit_in_a_second_and_only_where_it_matters() {
    let agents = from_env("FLEET_AGENTS", 300);
    let tunnels = from_env("FLEET_TUNNELS", 100).max(21);
    let heartbeat = from_env("FLEET_HEARTBEAT_MS", 500);
    let cluster = Cluster::with_control_args(
        "simfleet",
        &["--heartbeat-interval-ms", &heartbeat.to_string()],
    );
    let heartbeat = Duration::from_millis(heartbeat as u64);
    let gateways = from_env("FLEET_GATEWAYS", 3);
    let mut fleet = Fleet::start(&cluster, gateways, agents, tunnels, heartbeat);
    let (gateway_bytes, agent_bytes) = fleet.largest_configs();
    println!(
        "simulated fleet: {gateways} gateways, {agents} agents, {tunnels} tunnels configured {} after connecting; largest config: gateway {} KB, agent {} KB",
        ms(fleet.cold_start),
        gateway_bytes / 1000,
        agent_bytes / 1000,
    );
    fleet.settle();

    // A new target concerns the tunnel's agent alone; turning the tunnel off concerns the
    // gateways too. Each reaches the nodes it concerns within a second and nobody else.
    for (change, gateways_concerned) in [
        (serde_json::json!({ "target": "127.0.0.1:10" }), false),
        (serde_json::json!({ "enabled": false }), true),
    ] {
        let edit = fleet.edit(&cluster, 0, &change, gateways_concerned);
        assert!(
            edit.slowest() < Duration::from_secs(1),
            "{change} took {} to reach its nodes",
            ms(edit.slowest())
        );
        assert_eq!(
            edit.others, 0,
            "{change}: nodes it does not concern got configs"
        );
        println!(
            "simulated fleet: {change} reached the {} nodes it concerns in {}; {} bytes sent in all; {} configs to the others",
            edit.delays.len(),
            ms(edit.slowest()),
            edit.bytes,
            edit.others
        );
    }

    // A node that restarts (a new session, a new instance) costs the other agents nothing.
    let restarted = agents - 1;
    let before = Instant::now();
    let (id, key) = (
        fleet.agents[restarted].id.clone(),
        fleet.agent_keys[restarted].clone(),
    );
    fleet.agents[restarted] =
        SimulatedNode::connect(fleet.control, "agent", &id, &key, fleet.heartbeat);
    kakuremichi_tests::fanout::wait_configured(&fleet.agents[restarted..], Duration::from_secs(5));
    std::thread::sleep(fleet.heartbeat + Duration::from_millis(700));
    let others: usize = received_after(&fleet.agents[..restarted], before)
        .iter()
        .map(Vec::len)
        .sum();
    assert_eq!(others, 0, "an agent reconnecting sent other agents configs");

    // A burst: 20 other tunnels edited at once from 20 clients; each agent concerned gets it, and
    // Control keeps answering its API meanwhile.
    let watch = fleet.watch_api(&cluster.token);
    let before = Instant::now();
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
    let had_it = |i: usize| {
        let agent = &fleet.agents[i % agents];
        agent
            .configs()
            .last()
            .filter(|c| c.at > before)
            .map(|c| c.at - before)
    };
    let converged = wait_for(Duration::from_secs(10), || {
        (1..=20).all(|i| had_it(i).is_some()).then_some(())
    });
    let api = watch.stop();
    assert!(converged.is_some(), "20 edits did not converge in 10 s");
    let mut delays: Vec<Duration> = (1..=20).filter_map(had_it).collect();
    delays.sort();
    let slowest_api = percentile(&api, 1.0);
    assert!(
        slowest_api < Duration::from_secs(1),
        "the API took {} during the burst",
        ms(slowest_api)
    );
    let sent: usize = received_after(&fleet.gateways, before)
        .iter()
        .chain(&received_after(&fleet.agents, before))
        .flatten()
        .map(|c| c.bytes)
        .sum();
    println!(
        "simulated fleet: 20 parallel edits: agents had them p50 {}, max {}; {} KB sent; API p99 {} of {} requests",
        ms(percentile(&delays, 0.5)),
        ms(percentile(&delays, 1.0)),
        sent / 1000,
        ms(percentile(&api, 0.99)),
        api.len()
    );
    assert!(
        fleet.ended().is_empty(),
        "sessions ended: {:?}",
        fleet.ended()
    );

    // Nodes the edits did not concern were nudged for none of them, yet hold the newest
    // config: none is shown still applying one.
    let applying = || -> Vec<String> {
        let listed = cluster.api("GET", "/api/v1/agents", None).json();
        let agents = listed.as_array().cloned().unwrap_or_default();
        let reasons = agents
            .iter()
            .filter_map(|a| a["health_reason"].as_str().map(String::from));
        reasons
            .filter(|why| why.starts_with("applying config"))
            .collect()
    };
    let current = wait_for(Duration::from_secs(5), || {
        applying().is_empty().then_some(())
    });
    assert!(current.is_some(), "agents shown behind: {:?}", applying());

    // Every node reports a session with each peer its config names, after its first report
    // as changes only (a gateway's are every agent): carried along, the whole fleet shows
    // healthy. A reconnected agent's peers and the gateways' new peer come that way.
    let unhealthy = || -> Vec<String> {
        let mut found = Vec::new();
        for kind in ["agents", "gateways"] {
            let listed = cluster.api("GET", &format!("/api/v1/{kind}"), None).json();
            for node in listed.as_array().cloned().unwrap_or_default() {
                if node["health"] != "healthy" {
                    found.push(format!("{}: {}", node["id"], node["health_reason"]));
                }
            }
        }
        found
    };
    let healthy = wait_for(heartbeat * 4 + Duration::from_secs(2), || {
        unhealthy().is_empty().then_some(())
    });
    assert!(healthy.is_some(), "not healthy: {:?}", unhealthy());

    // SIGTERM: every node is told Control is going away (a close frame) before it exits.
    let mut cluster = cluster;
    let exited = cluster.control.terminate(Duration::from_secs(5));
    assert!(
        exited.is_some_and(|s| s.success()),
        "Control on SIGTERM: {exited:?}"
    );
    let all_told = wait_for(Duration::from_secs(2), || {
        let ended = fleet.ended();
        (ended.len() == fleet.nodes().count()).then_some(ended)
    });
    let ended = all_told.unwrap_or_else(|| fleet.ended());
    let told = ended.iter().filter(|(_, why)| why == "closed by Control");
    assert_eq!(told.count(), fleet.nodes().count(), "{ended:?}");
}
