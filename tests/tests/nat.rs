//! An agent behind a real NAT ([`Nat`]: network namespaces, so root; `scripts/test` runs these
//! with `--ignored`): its LAN takes no connection from outside, yet two gateways on the WAN
//! serve its origin; one gateway killed costs the other nothing; the router dropping UDP, then
//! TCP to the WireGuard port, moves the agent to TCP and then to TLS on the HTTPS port, and
//! back to UDP when UDP passes. Each case has its own network and fleet; each asserts on what
//! the gateways answer, Control's API and the agent's `/metrics`.
//! (Draining and replicas, which NAT does not change, are in `fleet.rs`.)

use kakuremichi_tests::cluster::bin_dir;
use kakuremichi_tests::nat::Nat;
use kakuremichi_tests::{curl, free_tcp_port, metric, wait_for, Cluster};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

const HOSTNAME: &str = "app.localhost";

/// Two gateways on the WAN, an agent and its origin on the LAN, a tunnel to the origin.
struct Home {
    // Dropped in this order: the fleet, the origin, then the network under them.
    cluster: Cluster,
    origin: Child,
    nat: Nat,
    agent_id: String,
}

impl Drop for Home {
    fn drop(&mut self) {
        let _ = self.origin.kill();
        let _ = self.origin.wait();
    }
}

/// Start it all; `agent_args` are given to the agent (path checks and retries made short).
fn home(name: &str, agent_args: &[&str]) -> Home {
    let nat = Nat::new();
    // Frequent heartbeats carry the agent's status to Control quickly.
    let mut cluster =
        Cluster::listening_on(name, &nat.wan_ip(1), &["--heartbeat-interval-ms", "300"]);
    cluster.wireguard_on_gateway_ip = true;
    cluster.agent_wrapper = nat.in_lan();
    cluster.add_gateway_at(&nat.wan_ip(1), free_tcp_port());
    cluster.add_gateway_at(&nat.wan_ip(2), free_tcp_port());
    let origin_addr = format!("{}:8080", nat.lan_ip());
    let origin = Command::new(&nat.in_lan()[0])
        .args(&nat.in_lan()[1..])
        .arg(bin_dir().join("kakuremichi-demo-origin"))
        .arg(&origin_addr)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("demo origin on the LAN");
    let agent = cluster.add_agent();
    let agent_id = cluster.agents[agent].id.clone();
    if !agent_args.is_empty() {
        cluster.agents[agent].kill9();
        cluster.agents[agent].add_args(agent_args);
        cluster.agents[agent].start();
    }
    cluster.wait_online("agent", &agent_id);
    cluster.create_tunnel(HOSTNAME, agent, &origin_addr);
    Home {
        cluster,
        origin,
        nat,
        agent_id,
    }
}

impl Home {
    fn status(&self, gateway: usize) -> u16 {
        self.cluster.get(gateway, HOSTNAME, "/").status
    }

    /// Wait up to `limit` until `gateway` answers `wanted`; how long it took.
    fn becomes(&self, gateway: usize, wanted: u16, limit: Duration) -> Duration {
        let started = Instant::now();
        wait_for(limit, || {
            (self.status(gateway) == wanted).then(|| started.elapsed())
        })
        .unwrap_or_else(|| {
            panic!(
                "gateway {gateway} never answered {wanted} within {limit:?} (now {})\n{}",
                self.status(gateway),
                self.cluster.logs()
            )
        })
    }

    /// The agent's gateways by how WireGuard reaches them, from its `/metrics`.
    fn paths(&self, path: &str) -> f64 {
        let text = self.cluster.agents[0].metrics();
        let name = format!("kakuremichi_agent_gateway_paths{{path=\"{path}\"}}");
        metric(&text, &name).unwrap_or(-1.0)
    }

    /// Wait up to `limit` until both gateways are reached by `path`; how long it took.
    fn both_over(&self, path: &str, limit: Duration) -> Duration {
        let started = Instant::now();
        wait_for(limit, || {
            (self.paths(path) == 2.0).then(|| started.elapsed())
        })
        .unwrap_or_else(|| {
            panic!(
                "the agent never reached both gateways over {path} within {limit:?}:\n{}\n{}",
                self.cluster.agents[0].metrics(),
                self.cluster.logs()
            )
        })
    }

    /// Control's reason for the agent's health.
    fn health_reason(&self) -> String {
        let node = self.cluster.node_status("agent", &self.agent_id);
        node["health_reason"]
            .as_str()
            .unwrap_or_default()
            .to_string()
    }

    /// Wait until Control's reason for the agent's health contains `words`.
    fn reason_says(&self, words: &str) {
        let said = wait_for(Duration::from_secs(10), || {
            self.health_reason().contains(words).then_some(())
        });
        assert!(
            said.is_some(),
            "Control never said {words:?}: {}",
            self.health_reason()
        );
    }
}

#[test]
#[ignore = "needs root: network namespaces (scripts/test runs it)"]
fn an_agent_behind_nat_is_served_by_both_gateways_and_its_lan_stays_closed() {
    let home = home("nat-served", &[]);
    let origin = format!("http://{}:8080/", home.nat.lan_ip());
    let inside =
        home.nat
            .run_in_lan(&["curl", "-s", "-o", "/dev/null", "--max-time", "3", &origin]);
    assert!(inside.status.success(), "the origin answers on its LAN");
    let outside = curl(&["--max-time", "2", &origin]);
    assert_eq!(outside.status, 0, "the LAN took a connection from the WAN");
    let a = home.becomes(0, 200, Duration::from_secs(15));
    let b = home.becomes(1, 200, Duration::from_secs(15));
    println!("nat: served through gateway A after {a:?}, B {b:?} more");
}

#[test]
#[ignore = "needs root: network namespaces (scripts/test runs it)"]
fn a_gateway_killed_costs_the_other_nothing_and_serves_again_when_restarted() {
    let mut home = home("nat-kill", &[]);
    home.becomes(0, 200, Duration::from_secs(15));
    home.becomes(1, 200, Duration::from_secs(15));
    let failures = std::thread::scope(|scope| {
        let looping = scope.spawn(|| {
            let until = Instant::now() + Duration::from_secs(4);
            let (mut ok, mut failed) = (0, Vec::new());
            while Instant::now() < until {
                match home.status(1) {
                    200 => ok += 1,
                    other => failed.push(other),
                }
            }
            (ok, failed)
        });
        std::thread::sleep(Duration::from_secs(1));
        // Not `home.cluster.gateways[0].kill9()`: the loop borrows `home`; the process is
        // found by its pid instead.
        let pid = home.cluster.gateways[0].pid().expect("gateway A runs");
        let _ = Command::new("kill").args(["-9", &pid.to_string()]).status();
        looping.join().expect("request loop")
    });
    let (ok, failed) = failures;
    assert!(ok > 20, "only {ok} requests through B");
    assert!(
        failed.is_empty(),
        "{} of {} requests through B failed while A was killed: {failed:?}",
        failed.len(),
        ok + failed.len()
    );
    home.cluster.gateways[0].restart();
    let again = home.becomes(0, 200, Duration::from_secs(15));
    println!("nat: gateway A killed under a loop through B: {ok} requests, 0 failures; A serves again {again:?} after its restart");
}

#[test]
#[ignore = "needs root: network namespaces (scripts/test runs it)"]
fn a_gateway_disabled_and_enabled_from_the_api_follows_within_two_seconds() {
    let home = home("nat-disable", &[]);
    home.becomes(0, 200, Duration::from_secs(15));
    let gateway = home.cluster.gateways[0].id.clone();
    let path = format!("/api/v1/gateways/{gateway}");
    for (enabled, wanted) in [(false, 404), (true, 200)] {
        let body = serde_json::json!({ "enabled": enabled }).to_string();
        assert_eq!(home.cluster.api("PATCH", &path, Some(&body)).status, 200);
        let took = home.becomes(0, wanted, Duration::from_secs(2));
        println!("nat: gateway A enabled={enabled}: {wanted} after {took:?}");
    }
}

#[test]
#[ignore = "needs root: network namespaces (scripts/test runs it)"]
fn udp_dropped_by_the_router_moves_the_agent_to_tcp_and_back_when_it_passes() {
    let home = home("nat-udp", &[]);
    home.becomes(0, 200, Duration::from_secs(15));
    home.nat.drop_udp();
    // A starting agent finds UDP dropped: it serves over TCP within 10 s.
    let mut home = home;
    home.cluster.agents[0].kill9();
    home.cluster.agents[0].add_args(&["--udp-retry", "2", "--path-check", "1"]);
    let started = Instant::now();
    home.cluster.agents[0].start();
    home.both_over("tcp", Duration::from_secs(10));
    home.becomes(0, 200, Duration::from_secs(10));
    let over_tcp = started.elapsed();
    assert!(
        over_tcp <= Duration::from_secs(10),
        "served over TCP only after {over_tcp:?}"
    );
    home.reason_says("over TCP");
    home.nat.open();
    let opened = Instant::now();
    let back = home.both_over("udp", Duration::from_secs(10));
    assert_eq!(home.status(0), 200);
    let healthy = wait_for(Duration::from_secs(10), || {
        (home.cluster.node_status("agent", &home.agent_id)["health"] == "healthy").then_some(())
    });
    assert!(
        healthy.is_some(),
        "{}",
        home.cluster.node_status("agent", &home.agent_id)
    );
    println!("nat: UDP dropped: the starting agent serves over TCP after {over_tcp:?}; UDP let through: back on UDP after {back:?} ({:?} to healthy)", opened.elapsed());
}

#[test]
#[ignore = "needs root: network namespaces (scripts/test runs it)"]
fn udp_then_tcp_dropped_under_a_running_agent_move_it_to_tcp_then_to_tls() {
    let home = home("nat-tls", &["--udp-retry", "2", "--path-check", "1"]);
    home.becomes(0, 200, Duration::from_secs(15));
    home.both_over("udp", Duration::from_secs(10));
    // Live sessions would look current for minutes: the path check notices instead.
    home.nat.drop_udp();
    let tcp = home.both_over("tcp", Duration::from_secs(20));
    home.becomes(0, 200, Duration::from_secs(10));
    home.reason_says("over TCP");
    // Then TCP to the WireGuard port too, as networks that let only HTTPS out do.
    let wireguard_port = home.cluster.gateway_wireguard_port(0);
    home.nat.drop_tcp_port(wireguard_port);
    if home.cluster.gateway_wireguard_port(1) != wireguard_port {
        home.nat
            .drop_tcp_port(home.cluster.gateway_wireguard_port(1));
    }
    let tls = home.both_over("tls", Duration::from_secs(40));
    home.becomes(0, 200, Duration::from_secs(10));
    home.reason_says("over TLS");
    for i in 0..20 {
        let answer = home.cluster.get(1, HOSTNAME, &format!("/{i}"));
        assert_eq!(answer.status, 200, "request {i} over TLS: {}", answer.body);
    }
    println!("nat: UDP dropped under a running agent: both gateways over TCP after {tcp:?}; TCP to the WireGuard ports dropped too: over TLS after {tls:?}");
}
