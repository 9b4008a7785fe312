//! A change reaches the nodes it concerns and costs the others nothing: a session whose
//! node's config did not change sends it nothing, and Control still counts that node as
//! up to date.

use kakuremichi_tests::{metric, wait_for, Cluster, Node};
use std::time::Duration;

fn snapshots(node: &Node, prefix: &str) -> f64 {
    metric(&node.metrics(), &format!("{prefix}_config_snapshots_total")).unwrap_or(-1.0)
}

fn pushed(cluster: &Cluster) -> f64 {
    metric(
        &cluster.control_metrics(),
        "kakuremichi_control_snapshots_pushed_total",
    )
    .unwrap_or(-1.0)
}

#[test]
fn an_edit_reaches_the_nodes_it_concerns_and_no_other() {
    let mut cluster = Cluster::with_control_args("fanout", &["--heartbeat-interval-ms", "200"]);
    let origin = kakuremichi_tests::Origin::start("fanout");
    cluster.add_gateway();
    let agents: Vec<usize> = (0..4).map(|_| cluster.add_agent()).collect();
    for &agent in &agents {
        let id = cluster.agents[agent].id.clone();
        cluster.wait_online("agent", &id);
    }
    let tunnel = cluster.create_tunnel("edited.localhost", agents[0], &origin.addr.to_string());
    cluster
        .wait_until(0, "edited.localhost", Duration::from_secs(10), |a| {
            a.status == 200
        })
        .unwrap_or_else(|| panic!("the tunnel never answered\n{}", cluster.logs()));
    // Settle: every node has what the creation gave it.
    std::thread::sleep(Duration::from_millis(600));
    let counts = |cluster: &Cluster| -> Vec<f64> {
        std::iter::once(snapshots(&cluster.gateways[0], "kakuremichi_gateway"))
            .chain(
                agents
                    .iter()
                    .map(|&a| snapshots(&cluster.agents[a], "kakuremichi_agent")),
            )
            .collect()
    };
    let before = counts(&cluster);
    let pushed_before = pushed(&cluster);
    let body = serde_json::json!({ "target": origin.addr.to_string(), "enabled": false });
    let path = format!("/api/v1/tunnels/{tunnel}");
    assert_eq!(
        cluster.api("PATCH", &path, Some(&body.to_string())).status,
        200
    );
    cluster
        .wait_until(0, "edited.localhost", Duration::from_secs(2), |a| {
            a.status == 404
        })
        .unwrap_or_else(|| panic!("the edit never reached the gateway\n{}", cluster.logs()));
    // Longer than a heartbeat, when a session also looks for changes it was not told of.
    std::thread::sleep(Duration::from_millis(600));
    let after = counts(&cluster);
    assert!(
        after[0] > before[0],
        "the gateway got nothing: {before:?} → {after:?}"
    );
    assert!(
        after[1] > before[1],
        "the tunnel's agent got nothing: {before:?} → {after:?}"
    );
    assert_eq!(
        after[2..],
        before[2..],
        "agents the edit does not concern got a snapshot"
    );
    assert_eq!(
        pushed(&cluster) - pushed_before,
        (after[0] - before[0]) + (after[1] - before[1])
    );
    // The untouched agents count as up to date, not as applying the new revision.
    for &agent in &agents {
        let id = cluster.agents[agent].id.clone();
        let healthy = wait_for(Duration::from_secs(5), || {
            (cluster.node_status("agent", &id)["health"] == "healthy").then_some(())
        });
        assert!(
            healthy.is_some(),
            "agent {agent}: {}",
            cluster.node_status("agent", &id)
        );
    }
    println!(
        "fanout: one edit: gateway {} and its agent {} snapshots; 3 other agents 0",
        after[0] - before[0],
        after[1] - before[1]
    );
}
