//! Gateways as a fleet: labels, which gateways serve a tunnel, and draining one while a
//! download is in flight. Two gateways, each with its public listeners on its own loopback
//! address.

use kakuremichi_tests::{curl, wait_for, Cluster, Origin};
use serde_json::json;
use std::io::{Read, Write};
use std::time::{Duration, Instant};

const LIVE_LIMIT: Duration = Duration::from_secs(2);

fn status(cluster: &Cluster, gateway: usize, hostname: &str) -> u16 {
    cluster.get(gateway, hostname, "/").status
}

/// Wait until `gateway` answers `hostname` with `wanted`; returns how long that took.
fn becomes(cluster: &Cluster, gateway: usize, hostname: &str, wanted: u16) -> Duration {
    let started = Instant::now();
    wait_for(LIVE_LIMIT, || {
        (status(cluster, gateway, hostname) == wanted).then(|| started.elapsed())
    })
    .unwrap_or_else(|| {
        panic!(
            "gateway {gateway} never answered {wanted} for {hostname} (now {})\n{}",
            status(cluster, gateway, hostname),
            cluster.logs()
        )
    })
}

/// Gateway `a` on 127.0.0.1 and `b` on 127.0.0.2, and an agent online: their indexes and
/// the agent's id.
fn two_gateways_and_an_agent(cluster: &mut Cluster) -> (usize, usize, usize, String) {
    let a = cluster.add_gateway();
    let b = cluster.add_gateway_at("127.0.0.2", kakuremichi_tests::free_tcp_port());
    let agent = cluster.add_agent();
    let agent_id = cluster.agents[agent].id.clone();
    cluster.wait_online("agent", &agent_id);
    (a, b, agent, agent_id)
}

fn patch(cluster: &Cluster, path: &str, body: serde_json::Value) -> serde_json::Value {
    let answer = cluster.api("PATCH", path, Some(&body.to_string()));
    assert_eq!(answer.status, 200, "{path} {body}: {}", answer.body);
    answer.json()
}

#[test]
fn tunnels_choose_gateways_by_id_or_label_live() {
    let mut cluster = Cluster::new("fleet-choice");
    let web = Origin::start("web");
    let (a, b, _, agent_id) = two_gateways_and_an_agent(&mut cluster);
    let (a_id, b_id) = (
        cluster.gateways[a].id.clone(),
        cluster.gateways[b].id.clone(),
    );
    let labelled = patch(
        &cluster,
        &format!("/api/v1/gateways/{b_id}"),
        json!({"labels": "region=tokyo"}),
    );
    assert_eq!(labelled["labels"], json!({"region": "tokyo"}));

    let answer = cluster.api(
        "POST",
        "/api/v1/tunnels",
        Some(&json!({"hostname": "app.localhost", "agent": agent_id, "target": web.addr.to_string(), "issuer": "none", "gateways": "region=tokyo"}).to_string()),
    );
    assert_eq!(answer.status, 201, "{}", answer.body);
    assert_eq!(answer.json()["gateways"], "region=tokyo");
    let id = answer.json()["id"].as_str().unwrap().to_string();
    becomes(&cluster, b, "app.localhost", 200);
    assert_eq!(
        status(&cluster, a, "app.localhost"),
        404,
        "only the labelled gateway serves it"
    );

    // Named instead: the other gateway, live.
    patch(
        &cluster,
        &format!("/api/v1/tunnels/{id}"),
        json!({"gateways": [a_id]}),
    );
    let took = becomes(&cluster, a, "app.localhost", 200);
    becomes(&cluster, b, "app.localhost", 404);
    println!(
        "gateway choice moved to the other gateway in {:.3} s",
        took.as_secs_f64()
    );
    // Every gateway again.
    patch(
        &cluster,
        &format!("/api/v1/tunnels/{id}"),
        json!({"gateways": "all"}),
    );
    becomes(&cluster, b, "app.localhost", 200);
    assert_eq!(status(&cluster, a, "app.localhost"), 200);

    // The same from the CLI: labels off gateway b, and the tunnel follows its selector.
    patch(
        &cluster,
        &format!("/api/v1/tunnels/{id}"),
        json!({"gateways": "region=tokyo"}),
    );
    becomes(&cluster, a, "app.localhost", 404);
    let (ok, out) = cluster.cli("gateway", &["update", &b_id, "--labels", "region=osaka"]);
    assert!(ok, "{out}");
    becomes(&cluster, b, "app.localhost", 404);
    let (ok, out) = cluster.cli("gateway", &["update", &a_id, "--labels", "region=tokyo"]);
    assert!(ok, "{out}");
    becomes(&cluster, a, "app.localhost", 200);
    let (ok, out) = cluster.cli("gateway", &["list"]);
    assert!(ok && out.contains("\"health\""), "{out}");
    let (ok, out) = cluster.cli("gateway", &["update", &a_id, "--labels", "bad label"]);
    assert!(!ok && out.contains("labels"), "{out}");
    patch(
        &cluster,
        &format!("/api/v1/tunnels/{id}"),
        json!({"gateways": "all"}),
    );

    // Bad input changes nothing.
    for (path, body) in [
        (
            format!("/api/v1/gateways/{b_id}"),
            json!({"labels": "region"}),
        ),
        (
            format!("/api/v1/gateways/{b_id}"),
            json!({"labels": {"region": 7}}),
        ),
        (
            format!("/api/v1/agents/{agent_id}"),
            json!({"labels": "region=tokyo"}),
        ),
        (
            format!("/api/v1/agents/{agent_id}"),
            json!({"draining": true}),
        ),
        (
            format!("/api/v1/tunnels/{id}"),
            json!({"gateways": ["gw_nobody"]}),
        ),
        (format!("/api/v1/tunnels/{id}"), json!({"gateways": []})),
        (format!("/api/v1/tunnels/{id}"), json!({"gateways": 5})),
    ] {
        // What a refused change could have touched (status figures move on their own).
        let settings = || {
            let gateways = cluster.api("GET", "/api/v1/gateways", None).json();
            let gateways: Vec<_> = gateways
                .as_array()
                .unwrap()
                .iter()
                .map(|g| (g["id"].clone(), g["labels"].clone(), g["draining"].clone()))
                .collect();
            (
                format!("{gateways:?}"),
                cluster.api("GET", "/api/v1/tunnels", None).body,
            )
        };
        let before = settings();
        let answer = cluster.api("PATCH", &path, Some(&body.to_string()));
        assert_eq!(answer.status, 400, "{path} {body}: {}", answer.body);
        assert_eq!(settings(), before, "{path} {body} changed something");
    }
}

/// An origin whose answer comes in `chunks` chunks of 100 KB, 200 ms apart.
fn slow_download_origin(chunks: usize) -> std::net::SocketAddr {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    std::thread::spawn(move || {
        for mut stream in listener.incoming().flatten() {
            std::thread::spawn(move || {
                let mut head = Vec::new();
                let mut byte = [0u8; 1];
                while !head.ends_with(b"\r\n\r\n") && stream.read_exact(&mut byte).is_ok() {
                    head.push(byte[0]);
                }
                let chunk = vec![b'x'; 100_000];
                let head = format!(
                    "HTTP/1.1 200 OK\r\nContent-Length: {}\r\n\r\n",
                    chunks * 100_000
                );
                let _ = stream.write_all(head.as_bytes());
                for _ in 0..chunks {
                    std::thread::sleep(Duration::from_millis(200));
                    if stream.write_all(&chunk).is_err() {
                        return;
                    }
                }
            });
        }
    });
    addr
}

#[test]
fn a_draining_gateway_finishes_a_download_and_sends_new_requests_elsewhere() {
    let mut cluster = Cluster::new("fleet-drain");
    let slow = slow_download_origin(10);
    let (a, b, agent, _) = two_gateways_and_an_agent(&mut cluster);
    cluster.create_tunnel("dl.localhost", agent, &slow.to_string());
    // Whether a gateway takes new requests is read on a quick tunnel beside the slow one.
    let quick = Origin::start("quick");
    cluster.create_tunnel("quick.localhost", agent, &quick.addr.to_string());
    for gateway in [a, b] {
        wait_for(Duration::from_secs(10), || {
            (status(&cluster, gateway, "quick.localhost") == 200).then_some(())
        })
        .unwrap_or_else(|| panic!("gateway {gateway} never served\n{}", cluster.logs()));
    }
    // A download through gateway a, under way when the drain starts.
    let node = &cluster.gateways[a];
    let url = format!("http://dl.localhost:{}/", node.http_port);
    let resolve = format!("dl.localhost:{}:127.0.0.1", node.http_port);
    let download = std::thread::spawn(move || curl(&["--resolve", &resolve, &url]));
    std::thread::sleep(Duration::from_millis(300));
    let a_id = cluster.gateways[a].id.clone();
    let drained = patch(
        &cluster,
        &format!("/api/v1/gateways/{a_id}"),
        json!({"draining": true}),
    );
    assert_eq!(drained["draining"], true);
    let took = becomes(&cluster, a, "quick.localhost", 503);
    println!(
        "drain: new requests refused {:.3} s after the PATCH",
        took.as_secs_f64()
    );
    let refused = cluster.get(a, "quick.localhost", "/");
    assert!(
        refused.body.contains("going out of service"),
        "{}",
        refused.body
    );
    let ready = curl(&[&format!(
        "http://127.0.0.1:{}/readyz",
        cluster.gateways[a].admin_port
    )]);
    assert_eq!(
        ready.status, 503,
        "a draining gateway is not ready: {}",
        ready.body
    );
    assert_eq!(
        status(&cluster, b, "quick.localhost"),
        200,
        "the other gateway serves"
    );
    let finished = download.join().unwrap();
    assert_eq!(
        (finished.status, finished.body.len()),
        (200, 1_000_000),
        "the download completed"
    );

    // Serving again.
    patch(
        &cluster,
        &format!("/api/v1/gateways/{a_id}"),
        json!({"draining": false}),
    );
    becomes(&cluster, a, "quick.localhost", 200);
    let ready = curl(&[&format!(
        "http://127.0.0.1:{}/readyz",
        cluster.gateways[a].admin_port
    )]);
    assert_eq!(ready.status, 200);
}

/// A gateway's `health` and `health_reason` from the API.
fn health(cluster: &Cluster, id: &str) -> (String, String) {
    let node = cluster.node_status("gateway", id);
    (
        node["health"].as_str().unwrap_or_default().to_string(),
        node["health_reason"]
            .as_str()
            .unwrap_or_default()
            .to_string(),
    )
}

#[test]
fn control_shows_each_gateways_health_and_why() {
    // Nodes report every heartbeat: short ones make the health move within the test.
    let mut cluster =
        Cluster::with_control_args("fleet-health", &["--heartbeat-interval-ms", "300"]);
    let web = Origin::start("web");
    let (a, b, agent, agent_id) = two_gateways_and_an_agent(&mut cluster);
    let (a_id, b_id) = (
        cluster.gateways[a].id.clone(),
        cluster.gateways[b].id.clone(),
    );
    // Both reach the agent once a tunnel makes traffic flow.
    cluster.create_tunnel("app.localhost", agent, &web.addr.to_string());
    for gateway in [a, b] {
        becomes(&cluster, gateway, "app.localhost", 200);
    }
    for id in [&a_id, &b_id] {
        wait_for(Duration::from_secs(5), || {
            (health(&cluster, id).0 == "healthy").then_some(())
        })
        .unwrap_or_else(|| {
            panic!(
                "{id} never healthy: {:?}\n{}",
                health(&cluster, id),
                cluster.logs()
            )
        });
    }
    wait_for(Duration::from_secs(5), || {
        (cluster.node_status("agent", &agent_id)["health"] == "healthy").then_some(())
    })
    .unwrap_or_else(|| {
        panic!(
            "agent never healthy: {}",
            cluster.node_status("agent", &agent_id)
        )
    });

    // Another program holds a port on gateway b: a tcp tunnel there leaves it degraded,
    // saying which port and why; gateway a opens it and stays healthy.
    let port = kakuremichi_tests::free_tcp_port();
    let _squatter = std::net::TcpListener::bind(("127.0.0.2", port)).unwrap();
    let body =
        json!({"kind": "tcp", "port": port, "agent": agent_id, "target": web.addr.to_string()});
    assert_eq!(
        cluster
            .api("POST", "/api/v1/tunnels", Some(&body.to_string()))
            .status,
        201
    );
    // Degraded first while it applies the revision, then for the port.
    let (state, why) = wait_for(Duration::from_secs(5), || {
        let (state, why) = health(&cluster, &b_id);
        (state == "degraded" && why.contains("cannot open")).then_some((state, why))
    })
    .unwrap_or_else(|| {
        panic!(
            "gateway b never degraded: {:?}\n{}",
            health(&cluster, &b_id),
            cluster.logs()
        )
    });
    assert!(
        why.contains(&format!("cannot open tcp port {port}")),
        "{state}: {why}"
    );
    // Gateway a opened the port; once it applied the revision it is healthy again.
    wait_for(Duration::from_secs(5), || {
        (health(&cluster, &a_id).0 == "healthy").then_some(())
    })
    .unwrap_or_else(|| panic!("gateway a: {:?}", health(&cluster, &a_id)));

    // A gateway that is gone is down.
    cluster.gateways[b].kill9();
    wait_for(Duration::from_secs(60), || {
        (health(&cluster, &b_id).0 == "down").then_some(())
    })
    .unwrap_or_else(|| {
        panic!(
            "a killed gateway never showed down: {:?}",
            health(&cluster, &b_id)
        )
    });
}

#[test]
fn a_drain_cuts_what_is_still_open_at_its_deadline() {
    let mut cluster = Cluster::new("fleet-drain-deadline");
    // 40 chunks, 200 ms apart: eight seconds, far past the one-second deadline.
    let slow = slow_download_origin(40);
    cluster.gateway_args = vec!["--drain-timeout".into(), "1".into()];
    let gateway = cluster.add_gateway();
    let agent = cluster.add_agent();
    let agent_id = cluster.agents[agent].id.clone();
    cluster.wait_online("agent", &agent_id);
    cluster.create_tunnel("dl.localhost", agent, &slow.to_string());
    // Whether the gateway takes new requests is read on a quick tunnel beside the slow one.
    let quick = Origin::start("quick");
    cluster.create_tunnel("quick.localhost", agent, &quick.addr.to_string());
    wait_for(Duration::from_secs(10), || {
        (status(&cluster, gateway, "quick.localhost") == 200).then_some(())
    })
    .unwrap_or_else(|| panic!("the gateway never served\n{}", cluster.logs()));
    let node = &cluster.gateways[gateway];
    let url = format!("http://dl.localhost:{}/", node.http_port);
    let resolve = format!("dl.localhost:{}:127.0.0.1", node.http_port);
    let download = std::thread::spawn(move || {
        let started = Instant::now();
        (curl(&["--resolve", &resolve, &url]), started.elapsed())
    });
    std::thread::sleep(Duration::from_millis(300));
    let id = cluster.gateways[gateway].id.clone();
    patch(
        &cluster,
        &format!("/api/v1/gateways/{id}"),
        json!({"draining": true}),
    );
    let (answer, took) = download.join().unwrap();
    assert!(answer.body.len() < 4_000_000, "the download was cut short");
    assert!(
        took > Duration::from_millis(1200) && took < Duration::from_secs(4),
        "cut {took:?} after it started (the drain began 0.3 s in, with a 1 s deadline)"
    );
    println!(
        "drain deadline 1 s: the download ended {:.2} s after it started",
        took.as_secs_f64()
    );
    // Serving again.
    patch(
        &cluster,
        &format!("/api/v1/gateways/{id}"),
        json!({"draining": false}),
    );
    becomes(&cluster, gateway, "quick.localhost", 200);
}

/// Which origin answered, if the answer is one of the describing origin's.
fn origin_name(answer: &kakuremichi_tests::Answer) -> Option<String> {
    let body: serde_json::Value = serde_json::from_str(&answer.body).ok()?;
    Some(body["origin"].as_str()?.to_string())
}

#[test]
fn a_tunnels_agents_share_it_and_a_killed_one_is_skipped_within_the_detection_window() {
    let mut cluster = Cluster::new("fleet-replicas");
    let gateway = cluster.add_gateway();
    let (one, two) = (cluster.add_agent(), cluster.add_agent());
    let ids = [
        cluster.agents[one].id.clone(),
        cluster.agents[two].id.clone(),
    ];
    for id in &ids {
        cluster.wait_online("agent", id);
    }
    let (origin_one, origin_two) = (Origin::start("one"), Origin::start("two"));
    let port = kakuremichi_tests::free_tcp_port();
    let agents = json!([
        {"agent": ids[0], "target": origin_one.addr.to_string()},
        {"agent": ids[1], "target": origin_two.addr.to_string()},
    ]);
    for body in [
        json!({"hostname": "twin.localhost", "agents": agents, "issuer": "none"}),
        json!({"kind": "tcp", "port": port, "agents": agents}),
    ] {
        let answer = cluster.api("POST", "/api/v1/tunnels", Some(&body.to_string()));
        assert_eq!(answer.status, 201, "{body}: {}", answer.body);
        assert_eq!(answer.json()["agents"], agents, "{}", answer.body);
    }
    // The same agent twice, or a udp tunnel with replicas, is refused.
    for body in [
        json!({"hostname": "dup.localhost", "issuer": "none", "agents": [
            {"agent": ids[0], "target": "127.0.0.1:1"}, {"agent": ids[0], "target": "127.0.0.1:2"}]}),
        json!({"kind": "udp", "port": kakuremichi_tests::free_udp_port(), "agents": agents}),
        json!({"hostname": "mixed.localhost", "issuer": "none", "agents": [
            {"agent": ids[0], "target": "127.0.0.1:1"}, {"agent": ids[1], "target": "https://127.0.0.1:2"}]}),
    ] {
        let answer = cluster.api("POST", "/api/v1/tunnels", Some(&body.to_string()));
        assert_eq!(answer.status, 400, "{body}: {}", answer.body);
    }
    let tcp_url = format!("http://127.0.0.1:{port}/");
    let http_port = cluster.gateways[gateway].http_port;
    let resolve = format!("twin.localhost:{http_port}:127.0.0.1");
    let http_url = format!("http://twin.localhost:{http_port}/");
    let through = |via_tcp: bool| match via_tcp {
        true => curl(&["--max-time", "10", &tcp_url]),
        false => curl(&["--max-time", "10", "--resolve", &resolve, &http_url]),
    };
    for via_tcp in [false, true] {
        let both = wait_for(Duration::from_secs(10), || {
            let names: std::collections::HashSet<String> = (0..10)
                .filter_map(|_| origin_name(&through(via_tcp)))
                .collect();
            (names.len() == 2).then_some(())
        });
        assert!(
            both.is_some(),
            "tcp {via_tcp}: requests never reached both agents\n{}",
            cluster.logs()
        );
    }

    // Kill agent two under four request loops (http and tcp).
    let stop = std::sync::atomic::AtomicBool::new(false);
    let records = std::sync::Mutex::new(Vec::new());
    let killed_at = std::thread::scope(|scope| {
        for via_tcp in [false, true, false, true] {
            let (stop, records, through) = (&stop, &records, &through);
            scope.spawn(move || {
                while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                    let started = Instant::now();
                    let answer = through(via_tcp);
                    let took = started.elapsed();
                    let record = (started, answer.status, origin_name(&answer), via_tcp, took);
                    records.lock().unwrap().push(record);
                }
            });
        }
        std::thread::sleep(Duration::from_secs(1));
        let killed_at = Instant::now();
        cluster.agents[two].kill9();
        std::thread::sleep(Duration::from_secs(6));
        stop.store(true, std::sync::atomic::Ordering::Relaxed);
        killed_at
    });
    let records = records.into_inner().unwrap();
    // The bound: in-flight requests on a killed replica move on or fail within 1 s.
    let window = Duration::from_secs(1);
    let failed: Vec<_> = records
        .iter()
        .filter(|(_, status, name, ..)| *status != 200 || name.is_none())
        .collect();
    let after: Vec<_> = records
        .iter()
        .filter(|(started, ..)| *started > killed_at + window)
        .collect();
    println!(
        "replicas: {} requests, {} failed (all started within {:?} of the kill: {:?}), {} after the window",
        records.len(),
        failed.len(),
        window,
        failed
            .iter()
            .map(|(started, status, _, tcp, _)| (started.saturating_duration_since(killed_at), *status, *tcp))
            .collect::<Vec<_>>(),
        after.len()
    );
    // Nobody waits out a timeout on the dead agent: a dial to it gives way to the other
    // within its patience, and a request it had is ended once its probe misses.
    let slowest = records.iter().map(|r| r.4).max().unwrap_or_default();
    let slow: Vec<_> = records
        .iter()
        .filter(|r| r.4 > window)
        .map(|r| (r.0.saturating_duration_since(killed_at), r.1, r.3, r.4))
        .collect();
    println!("replicas: the slowest request took {slowest:?}");
    assert!(
        slow.is_empty(),
        "requests that waited (started after the kill, status, tcp, took): {slow:?}"
    );
    for (started, status, _, via_tcp, _) in &failed {
        assert!(
            *started + Duration::from_millis(200) >= killed_at && *started <= killed_at + window,
            "a request (tcp {via_tcp}) failed with {status} outside the detection window, {:?} after the kill\n{}",
            started.saturating_duration_since(killed_at),
            cluster.logs()
        );
    }
    assert!(
        after.len() >= 20,
        "too few requests after the window: {}",
        after.len()
    );
    assert!(
        after
            .iter()
            .all(|(_, status, name, ..)| *status == 200 && name.as_deref() == Some("one")),
        "after the window every request goes to agent one"
    );

    // Back: agent two takes requests again.
    cluster.agents[two].start();
    let back = wait_for(Duration::from_secs(15), || {
        (0..10)
            .any(|_| origin_name(&through(false)).as_deref() == Some("two"))
            .then_some(())
    });
    assert!(
        back.is_some(),
        "agent two never served again\n{}",
        cluster.logs()
    );
}

/// Forward datagrams arriving on `127.0.0.1:port` to `127.0.0.1:to` and the answers back
/// to whoever sent last: UDP that passes again.
fn udp_forwarder(port: u16, to: u16) {
    let front = std::net::UdpSocket::bind(("127.0.0.1", port)).expect("bind the forwarder");
    let back = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    back.connect(("127.0.0.1", to)).unwrap();
    let client = std::sync::Arc::new(std::sync::Mutex::new(None));
    let (front_out, back_in, client_out) = (
        front.try_clone().unwrap(),
        back.try_clone().unwrap(),
        client.clone(),
    );
    std::thread::spawn(move || {
        let mut buffer = vec![0u8; 65_536];
        while let Ok((len, from)) = front.recv_from(&mut buffer) {
            *client.lock().unwrap() = Some(from);
            let _ = back.send(&buffer[..len]);
        }
    });
    std::thread::spawn(move || {
        let mut buffer = vec![0u8; 65_536];
        while let Ok(len) = back_in.recv(&mut buffer) {
            if let Some(client) = *client_out.lock().unwrap() {
                let _ = front_out.send_to(&buffer[..len], client);
            }
        }
    });
}

/// A gateway whose agents are told a WireGuard endpoint (`127.0.0.1:port`) where UDP goes
/// nowhere, as behind a network that drops it, with `gateway_args` added; then an agent
/// started with a tunnel to an origin. Returns the cluster, the gateway's WireGuard UDP
/// port, the endpoint's port, the agent's index and id, and how long after its start the
/// agent served (within 10 s).
fn agent_behind_dropped_udp(
    name: &str,
    gateway_args: impl Fn(&str) -> Vec<String>,
) -> (Cluster, u16, u16, usize, String, Duration) {
    // Frequent heartbeats carry the agent's status to Control quickly.
    let mut cluster = Cluster::with_control_args(name, &["--heartbeat-interval-ms", "300"]);
    let gateway = cluster.add_gateway();
    let gateway_id = cluster.gateways[gateway].id.clone();
    let udp = cluster.gateway_wireguard_port(gateway);
    let port = kakuremichi_tests::free_tcp_port();
    let endpoint = format!("127.0.0.1:{port}");
    let node = &mut cluster.gateways[gateway];
    node.kill9();
    let args = gateway_args(&endpoint);
    let args: Vec<&str> = ["--wireguard-endpoint", &endpoint]
        .into_iter()
        .chain(args.iter().map(String::as_str))
        .collect();
    node.add_args(&args);
    node.start();
    cluster.wait_online("gateway", &gateway_id);
    let origin = Origin::start("behind");
    let agent = cluster.add_agent();
    let agent_id = cluster.agents[agent].id.clone();
    cluster.agents[agent].kill9();
    cluster.agents[agent].add_args(&["--udp-retry", "1"]);
    cluster.create_tunnel("fallback.localhost", agent, &origin.addr.to_string());
    let started = Instant::now();
    cluster.agents[agent].start();
    let serving = wait_for(Duration::from_secs(15), || {
        (status(&cluster, gateway, "fallback.localhost") == 200).then(|| started.elapsed())
    })
    .unwrap_or_else(|| panic!("never served over the fallback\n{}", cluster.logs()));
    assert!(
        serving <= Duration::from_secs(10),
        "served over the fallback only after {serving:?}"
    );
    (cluster, udp, port, agent, agent_id, serving)
}

/// How many gateways the agent reaches by `path` (`udp`, `tcp`, `tls`), from its `/metrics`.
fn gateways_over(cluster: &Cluster, agent: usize, path: &str) -> f64 {
    let text = cluster.agents[agent].metrics();
    let name = format!("kakuremichi_agent_gateway_paths{{path=\"{path}\"}}");
    kakuremichi_tests::metric(&text, &name).unwrap_or(-1.0)
}

#[test]
fn an_agent_that_reaches_only_https_carries_wireguard_over_tls() {
    // No TCP at the WireGuard port either: only the gateway's HTTPS port answers.
    let (cluster, _, _, agent, _, serving) = agent_behind_dropped_udp("fleet-tls-fallback", |_| {
        vec!["--wireguard-tcp-listen".into(), "off".into()]
    });
    assert_eq!(
        gateways_over(&cluster, agent, "tls"),
        1.0,
        "{}",
        cluster.logs()
    );
    for i in 0..50 {
        let answer = cluster.get(0, "fallback.localhost", &format!("/{i}"));
        assert_eq!(answer.status, 200, "request {i} over TLS: {}", answer.body);
    }
    println!("tls fallback: serving {serving:?} after the agent started");
}

#[test]
fn an_agent_that_udp_does_not_reach_carries_wireguard_over_tcp_and_returns_to_udp() {
    let (cluster, udp, port, agent, agent_id, serving) =
        agent_behind_dropped_udp("fleet-tcp-fallback", |endpoint| {
            vec!["--wireguard-tcp-listen".into(), endpoint.to_string()]
        });
    let gateway = 0;
    assert_eq!(
        gateways_over(&cluster, agent, "tcp"),
        1.0,
        "{}",
        cluster.logs()
    );
    // Control shows why: the agent is degraded, reaching the gateway over TCP.
    let reason = wait_for(Duration::from_secs(10), || {
        let reason = cluster.node_status("agent", &agent_id)["health_reason"].to_string();
        reason.contains("over TCP").then_some(reason)
    });
    assert!(
        reason.is_some(),
        "{}",
        cluster.node_status("agent", &agent_id)
    );
    for i in 0..50 {
        let answer = cluster.get(gateway, "fallback.localhost", &format!("/{i}"));
        assert_eq!(answer.status, 200, "request {i} over TCP: {}", answer.body);
    }

    // UDP passes again: the agent's next try over UDP is answered and it moves back.
    udp_forwarder(port, udp);
    let opened = Instant::now();
    let back = wait_for(Duration::from_secs(10), || {
        (gateways_over(&cluster, agent, "udp") == 1.0).then(|| opened.elapsed())
    })
    .unwrap_or_else(|| panic!("never moved back to UDP\n{}", cluster.logs()));
    for i in 0..50 {
        let answer = cluster.get(gateway, "fallback.localhost", &format!("/{i}"));
        assert_eq!(
            answer.status, 200,
            "request {i} back on UDP: {}",
            answer.body
        );
    }
    let healthy = wait_for(Duration::from_secs(10), || {
        (cluster.node_status("agent", &agent_id)["health"] == "healthy").then_some(())
    });
    assert!(
        healthy.is_some(),
        "{}",
        cluster.node_status("agent", &agent_id)
    );
    println!("tcp fallback: serving {serving:?} after the agent started; back on UDP {back:?} after UDP passed");
}

#[test]
fn the_wireguard_tcp_port_takes_hundreds_of_strangers_sending_garbage_and_lets_go() {
    let mut cluster = Cluster::new("fleet-carriers");
    let carrier_port = kakuremichi_tests::free_tcp_port();
    cluster.gateway_args = vec![
        "--wireguard-tcp-listen".into(),
        format!("127.0.0.1:{carrier_port}"),
    ];
    let gateway = cluster.add_gateway();
    let agent = cluster.add_agent();
    let agent_id = cluster.agents[agent].id.clone();
    cluster.wait_online("agent", &agent_id);
    let origin = Origin::start("app");
    cluster.create_tunnel("app.localhost", agent, &origin.addr.to_string());
    becomes(&cluster, gateway, "app.localhost", 200);
    let pid = cluster.gateways[gateway].pid().expect("gateway runs");
    let idle = kakuremichi_tests::rss_kib(pid);
    let dropped = |cluster: &Cluster| {
        kakuremichi_tests::metric(
            &cluster.gateways[gateway].metrics(),
            "kakuremichi_gateway_wireguard_dropped_total{reason=\"not_wireguard\"}",
        )
        .unwrap_or(0.0)
    };
    let before = dropped(&cluster);

    // 300 strangers at once, each sending 50 length-prefixed frames of junk, then holding on.
    let strangers: Vec<std::net::TcpStream> = std::thread::scope(|scope| {
        let handles: Vec<_> = (0..300u32)
            .map(|i| {
                scope.spawn(move || {
                    let mut stream =
                        std::net::TcpStream::connect(("127.0.0.1", carrier_port)).expect("connect");
                    let mut frames = Vec::new();
                    for j in 0..50u32 {
                        let len = (i * 7919 + j * 104_729) % 1400 + 1;
                        frames.extend_from_slice(&(len as u16).to_be_bytes());
                        frames.extend((0..len).map(|k| (k * 31 + i + j) as u8 | 0x80));
                    }
                    stream.write_all(&frames).expect("send junk");
                    stream
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    // 15,000 datagrams in one burst overflow the WireGuard socket's buffer, as they would
    // from the network: some are dropped by the kernel before WireGuard sees them.
    let refused = wait_for(Duration::from_secs(10), || {
        let count = dropped(&cluster) - before;
        (count >= 300.0).then_some(count)
    });
    assert!(
        refused.is_some(),
        "the junk was not seen and refused: {}",
        dropped(&cluster) - before
    );
    assert_eq!(
        status(&cluster, gateway, "app.localhost"),
        200,
        "serving with 300 strangers on"
    );
    drop(strangers);
    kakuremichi_tests::assert_memory_comes_back(&[pid], idle);
    assert_eq!(
        status(&cluster, gateway, "app.localhost"),
        200,
        "serving after they left"
    );
    println!(
        "carriers: 300 strangers, {} junk datagrams refused as not WireGuard; RSS idle {idle} KiB, now {} KiB",
        refused.unwrap_or_default(),
        kakuremichi_tests::rss_kib(pid)
    );
}
