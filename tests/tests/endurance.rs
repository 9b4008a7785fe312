//! Over time: periodic mechanisms run for many periods, with their intervals shortened by
//! configuration, and a quiet cluster stays quiet.

use kakuremichi_tests::{metric, wait_for, Cluster};
use std::time::Duration;

/// Heartbeats every 150 ms: a node silent for 450 ms is dropped.
const HEARTBEAT_MS: u64 = 150;
/// How many heartbeat periods the cluster is watched for.
const PERIODS: u64 = 60;

#[test]
fn idle_sessions_survive_many_heartbeat_periods_without_reconnect_or_repush() {
    let heartbeat = HEARTBEAT_MS.to_string();
    let mut cluster =
        Cluster::with_control_args("heartbeat", &["--heartbeat-interval-ms", &heartbeat]);
    cluster.add_gateway();
    cluster.add_agent();
    let connected = |text: &str, prefix: &str| {
        metric(text, &format!("{prefix}_control_connected")) == Some(1.0)
    };
    wait_for(Duration::from_secs(10), || {
        (connected(&cluster.gateways[0].metrics(), "kakuremichi_gateway")
            && connected(&cluster.agents[0].metrics(), "kakuremichi_agent"))
        .then_some(())
    })
    .unwrap_or_else(|| panic!("nodes never connected\n{}", cluster.logs()));
    // Let the first snapshots and status reports settle.
    std::thread::sleep(Duration::from_millis(HEARTBEAT_MS * 4));
    let control_before = cluster.control_metrics();
    let snapshots = |cluster: &Cluster| -> Vec<Option<f64>> {
        [
            (&cluster.gateways[0], "kakuremichi_gateway"),
            (&cluster.agents[0], "kakuremichi_agent"),
        ]
        .iter()
        .map(|(node, prefix)| metric(&node.metrics(), &format!("{prefix}_config_snapshots_total")))
        .collect()
    };
    let snapshots_before = snapshots(&cluster);
    let opened = |text: &str| metric(text, "kakuremichi_control_sessions_opened_total");
    let pushed = |text: &str| metric(text, "kakuremichi_control_snapshots_pushed_total");
    assert_eq!(opened(&control_before), Some(2.0), "{control_before}");

    std::thread::sleep(Duration::from_millis(HEARTBEAT_MS * PERIODS));

    // Each side gives up after three silent periods, so a session that lasted 60 periods
    // heard the other side all along, in both directions.
    let control_after = cluster.control_metrics();
    assert_eq!(
        opened(&control_after),
        Some(2.0),
        "a node reconnected\n{}",
        cluster.logs()
    );
    assert_eq!(
        pushed(&control_after),
        pushed(&control_before),
        "config re-pushed to an idle cluster\n{control_after}"
    );
    for (node, prefix) in [
        (&cluster.gateways[0], "kakuremichi_gateway"),
        (&cluster.agents[0], "kakuremichi_agent"),
    ] {
        let text = node.metrics();
        assert_eq!(
            metric(&text, &format!("{prefix}_control_sessions_total")),
            Some(1.0),
            "{} reconnected\n{text}\n{}",
            node.name,
            cluster.logs()
        );
    }
    assert_eq!(
        snapshots(&cluster),
        snapshots_before,
        "a node received snapshots while nothing changed"
    );
    let agents = cluster.api("GET", "/api/v1/agents", None).json();
    assert_eq!(agents[0]["online"], true, "{agents}");
}

#[test]
fn a_silent_node_is_dropped_within_three_heartbeats() {
    let heartbeat = HEARTBEAT_MS.to_string();
    let mut cluster =
        Cluster::with_control_args("silent", &["--heartbeat-interval-ms", &heartbeat]);
    let agent = cluster.add_agent();
    let id = cluster.agents[agent].id.clone();
    wait_for(Duration::from_secs(10), || {
        (cluster.node_status("agent", &id)["online"] == true).then_some(())
    })
    .unwrap_or_else(|| panic!("agent never online\n{}", cluster.logs()));
    // SIGSTOP: the socket stays open but the node says nothing.
    let pid = cluster.agents[agent].pid().expect("agent runs");
    let stop = |signal: &str| {
        std::process::Command::new("kill")
            .args([signal, &pid.to_string()])
            .status()
            .expect("kill runs");
    };
    stop("-STOP");
    let offline = wait_for(Duration::from_millis(HEARTBEAT_MS * 3 + 2000), || {
        (cluster.node_status("agent", &id)["online"] == false).then_some(())
    });
    stop("-CONT");
    offline.unwrap_or_else(|| panic!("a stopped agent stayed online\n{}", cluster.logs()));
    // It comes back with a new session once it runs again.
    wait_for(Duration::from_secs(10), || {
        (cluster.node_status("agent", &id)["online"] == true).then_some(())
    })
    .unwrap_or_else(|| panic!("agent never came back\n{}", cluster.logs()));
}
