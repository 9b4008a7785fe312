//! The fan-out benchmark (scripts/bench fanout): a real Control and a fleet of simulated
//! nodes speaking its real protocol; prints what edits cost at the scale asked for.
//!
//! FLEET_AGENTS, FLEET_GATEWAYS, FLEET_TUNNELS (1,000, 100, 500), FLEET_EDITS (20 one after
//! another, half concerning one agent, half every gateway too), FLEET_HEARTBEAT_MS (15,000,
//! the production interval; edits do not wait for heartbeats, but each edit is followed by
//! one, to catch configs a session sends when it looks for changes on its own).
//! Control is taken from KAKUREMICHI_BIN_DIR, as in the tests: use a release build.

use kakuremichi_tests::fanout::{cpu_seconds, from_env, ms, percentile, rss_bytes, Fleet};
use kakuremichi_tests::Cluster;
use std::time::{Duration, Instant};

fn main() {
    let agents = from_env("FLEET_AGENTS", 1000);
    let gateways = from_env("FLEET_GATEWAYS", 100);
    let tunnels = from_env("FLEET_TUNNELS", 500).max(2);
    let edits = from_env("FLEET_EDITS", 20).clamp(2, tunnels - 1);
    let heartbeat = from_env("FLEET_HEARTBEAT_MS", 15_000);
    let cluster = Cluster::with_control_args(
        "fanout",
        &["--heartbeat-interval-ms", &heartbeat.to_string()],
    );
    let pid = cluster.control.pid().expect("Control runs");
    // Release builds abort on panic, so the cluster is not dropped: stop Control here.
    let report = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |panic| {
        report(panic);
        let _ = std::process::Command::new("kill")
            .arg(pid.to_string())
            .status();
    }));
    let heartbeat = Duration::from_millis(heartbeat as u64);
    println!(
        "fan-out: {agents} agents, {gateways} gateways, {tunnels} tunnels, heartbeat {}",
        ms(heartbeat)
    );
    let setup = Instant::now();
    let fleet = Fleet::start(&cluster, gateways, agents, tunnels, heartbeat);
    let failed_at_start = fleet.ended().len();
    let (gateway_bytes, agent_bytes) = fleet.largest_configs();
    println!(
        "  enrolled, created and connected in {:.0} s; cold start {} ({failed_at_start} sessions failed); first configs: gateway {} KB, agent {} KB",
        setup.elapsed().as_secs_f64(),
        ms(fleet.cold_start),
        gateway_bytes / 1000,
        agent_bytes / 1000
    );
    fleet.settle();
    let sessions = (agents + gateways) as u64;
    let rss = rss_bytes(pid);
    let quiet = Instant::now();
    let idle_cpu = cpu_seconds(pid);
    std::thread::sleep(Duration::from_secs(3));
    let idle_rate = (cpu_seconds(pid) - idle_cpu) / quiet.elapsed().as_secs_f64();
    println!(
        "  idle: Control RSS {} MB, {} KB per session; CPU {:.1}% of a core",
        rss / 1_000_000,
        rss / sessions / 1000,
        idle_rate * 100.0
    );
    print_heartbeat_gaps(&fleet);

    // Edits one after another: the first half alone, for Control's CPU per edit; the second
    // half with the API watched meanwhile.
    let edit = |k: usize| {
        let (change, gateways_concerned) = match k % 2 {
            0 => (serde_json::json!({ "target": "127.0.0.1:10" }), false),
            _ => (serde_json::json!({ "enabled": false }), true),
        };
        fleet.edit(&cluster, 1 + k, &change, gateways_concerned)
    };
    let alone = edits / 2;
    let (start, cpu_before) = (Instant::now(), cpu_seconds(pid));
    let mut done: Vec<_> = (0..alone).map(edit).collect();
    let busy = cpu_seconds(pid) - cpu_before - idle_rate * start.elapsed().as_secs_f64();
    let watch = fleet.watch_api(&cluster.token);
    done.extend((alone..edits).map(edit));
    let api = watch.stop();
    let mut delays: Vec<Duration> = done.iter().flat_map(|e| e.delays.clone()).collect();
    delays.sort();
    let bytes: usize = done.iter().map(|e| e.bytes).sum();
    let others: usize = done.iter().map(|e| e.others).sum();
    println!(
        "  {edits} edits: reached their nodes p50 {} p99 {} max {} ({} deliveries); {} KB sent per edit; {others} configs to nodes not concerned; Control CPU {:.0} ms per edit (the first {alone}, above idle)",
        ms(percentile(&delays, 0.5)),
        ms(percentile(&delays, 0.99)),
        ms(percentile(&delays, 1.0)),
        delays.len(),
        bytes / edits / 1000,
        busy.max(0.0) * 1000.0 / alone as f64
    );
    println!(
        "  API during the last {} edits: p50 {} p99 {} max {} ({} requests: /healthz, a tunnel, the gateways list)",
        edits - alone,
        ms(percentile(&api, 0.5)),
        ms(percentile(&api, 0.99)),
        ms(percentile(&api, 1.0)),
        api.len()
    );

    // 100 edits in 10 s, each to another tunnel's agent.
    let burst = 100.min(tunnels - edits - 1);
    let first = edits + 1;
    let started = Instant::now();
    let finished: Vec<Instant> = std::thread::scope(|scope| {
        let handles: Vec<_> = (0..burst)
            .map(|i| {
                let (cluster, fleet) = (&cluster, &fleet);
                scope.spawn(move || {
                    std::thread::sleep(Duration::from_millis(100 * i as u64));
                    let path = format!("/api/v1/tunnels/{}", fleet.tunnels[first + i]);
                    let body = serde_json::json!({ "target": "127.0.0.1:12" }).to_string();
                    assert_eq!(cluster.api("PATCH", &path, Some(&body)).status, 200);
                    Instant::now()
                })
            })
            .collect();
        handles
            .into_iter()
            .map(|h| h.join().expect("an edit"))
            .collect()
    });
    let last = finished.iter().max().copied().unwrap_or(started);
    let agent_of = |i: usize| &fleet.agents[(first + i) % agents];
    let converged = kakuremichi_tests::wait_for(Duration::from_secs(60), || {
        let arrivals: Option<Vec<Instant>> = (0..burst)
            .map(|i| {
                agent_of(i)
                    .configs()
                    .last()
                    .map(|c| c.at)
                    .filter(|at| *at > started)
            })
            .collect();
        arrivals?.into_iter().max()
    });
    match converged {
        Some(at) => println!(
            "  {burst} edits in {:.1} s: converged {} after the last was answered",
            (last - started).as_secs_f64(),
            ms(at.saturating_duration_since(last))
        ),
        None => println!("  {burst} edits: did not converge within 60 s"),
    }
    println!("  sessions ended over the run: {}", fleet.ended().len());
    print_heartbeat_gaps(&fleet);
}

/// The longest waits between Control's heartbeats, over every session and over those that
/// ended: a session Control dropped as silent after a long gap was stalled on Control's side.
fn print_heartbeat_gaps(fleet: &Fleet) {
    let gaps = |ended: bool| {
        let nodes = fleet.nodes().filter(|n| n.ended().is_some() == ended);
        let mut gaps: Vec<Duration> = nodes.map(|n| n.longest_heartbeat_gap()).collect();
        gaps.sort();
        gaps
    };
    for (which, gaps) in [("open", gaps(false)), ("ended", gaps(true))] {
        if gaps.is_empty() {
            continue;
        }
        println!(
            "  longest wait between Control's heartbeats, {} {which} sessions: p50 {} p99 {} max {}",
            gaps.len(),
            ms(percentile(&gaps, 0.5)),
            ms(percentile(&gaps, 0.99)),
            ms(percentile(&gaps, 1.0))
        );
    }
}
