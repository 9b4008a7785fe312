//! Thousands of HTTPS tunnels reach a gateway whole. Certificates travel in their own
//! messages, ahead of the config that refers to them by digest, so no message nears the
//! 4 MiB limit however many there are (past it, gateways looped on "Message too long" and new
//! tunnels answered 404), and a new certificate costs one message, not all of them again.
//!
//! `MANY_CERTIFICATES` sets how many tunnels (4,000 by default: the internal CA's
//! certificates and keys then come to more than 4 MiB).

use kakuremichi_tests::{curl, metric, wait_for, Cluster, Origin};
use std::time::{Duration, Instant};

const OLD_LIMIT: u64 = 4 << 20;

fn certificates(cluster: &Cluster) -> f64 {
    metric(
        &cluster.gateways[0].metrics(),
        "kakuremichi_gateway_certificates",
    )
    .unwrap_or(-1.0)
}

#[test]
fn thousands_of_https_tunnels_reach_a_gateway() {
    let count: usize = std::env::var("MANY_CERTIFICATES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(4000);
    let mut cluster = Cluster::new("manycerts");
    let origin = Origin::start("manycerts");
    cluster.add_gateway();
    let agent = cluster.add_agent();
    let agent_id = cluster.agents[agent].id.clone();
    cluster.wait_online("agent", &agent_id);
    let hostname = |i: usize| format!("t{i}.many.test");

    let start = Instant::now();
    std::thread::scope(|scope| {
        for worker in 0..8 {
            let (cluster, agent_id, origin) = (&cluster, &agent_id, origin.addr.to_string());
            scope.spawn(move || {
                for i in (worker..count).step_by(8) {
                    let body = serde_json::json!({
                        "hostname": hostname(i),
                        "agent": agent_id,
                        "target": origin,
                        "issuer": "internal",
                    });
                    let answer = cluster.api("POST", "/api/v1/tunnels", Some(&body.to_string()));
                    assert_eq!(answer.status, 201, "tunnel {i}: {}", answer.body);
                }
            });
        }
    });
    let created = start.elapsed();
    let held = wait_for(Duration::from_secs(180), || {
        (certificates(&cluster) == count as f64).then_some(())
    });
    assert!(
        held.is_some(),
        "the gateway holds {} of {count} certificates\n{}",
        certificates(&cluster),
        cluster.logs()
    );
    let delivered = start.elapsed();

    // Past the old limit: the gateway's cached config holds every certificate and key.
    let cached = cluster.dir.join("gateway0-state/config.json");
    let size = || std::fs::metadata(&cached).map_or(0, |m| m.len());
    let past = wait_for(Duration::from_secs(10), || (size() > OLD_LIMIT).then(size));
    assert!(
        past.is_some(),
        "only {} bytes of config: not the case",
        size()
    );
    let size = size();

    let ca = curl(&[&cluster.control_url("/ca.pem")]);
    let ca_file = cluster.dir.join("internal-ca.pem");
    std::fs::write(&ca_file, &ca.body).expect("write the CA");
    for i in [0, count / 2, count - 1] {
        let answer = cluster.get_https(0, &hostname(i), "/", &ca_file, &[]);
        assert_eq!(answer.status, 200, "{}: {answer:?}", hostname(i));
    }

    // One more serves too, and the gateway kept its first session all along: a message over
    // the limit makes it drop the session and connect again.
    cluster.create_tunnel_with_issuer(
        "one-more.many.test",
        agent,
        &origin.addr.to_string(),
        "internal",
    );
    let serves = wait_for(Duration::from_secs(20), || {
        let answer = cluster.get_https(0, "one-more.many.test", "/", &ca_file, &[]);
        (answer.status == 200).then_some(())
    });
    assert!(serves.is_some(), "a tunnel added to {count} never served");
    let sessions = metric(
        &cluster.gateways[0].metrics(),
        "kakuremichi_gateway_control_sessions_total",
    );
    assert_eq!(sessions, Some(1.0), "the gateway had to connect again");
    println!(
        "many certificates: {count} HTTPS tunnels created in {:.1} s, all on the gateway after {:.1} s; its config with them is {:.1} MB",
        created.as_secs_f64(),
        delivered.as_secs_f64(),
        size as f64 / 1e6
    );
}
