//! The spine: Control, a gateway and agents as real processes, traffic over userspace
//! WireGuard on loopback.

use kakuremichi_tests::{curl, wait_for, Cluster, Origin};
use std::time::{Duration, Instant};

const LIVE_CONFIG_LIMIT: Duration = Duration::from_secs(2);

fn origin_of(answer: &kakuremichi_tests::Answer) -> Option<String> {
    (answer.status == 200).then(|| {
        answer.json()["origin"]
            .as_str()
            .unwrap_or_default()
            .to_string()
    })
}

#[test]
fn tunnel_serves_and_every_edit_applies_live() {
    let mut cluster = Cluster::new("live");
    let origin_a = Origin::start("a");
    let origin_b = Origin::start("b");
    cluster.add_gateway();
    let agent = cluster.add_agent();
    let agent_id = cluster.agents[agent].id.clone();
    cluster.wait_online("agent", &agent_id);
    let status = cluster.node_status("agent", &agent_id);
    assert!(
        status["public_key"].as_str().is_some_and(|k| k.len() == 44),
        "{status}"
    );
    assert_eq!(status["version"], env!("CARGO_PKG_VERSION"));

    let started = Instant::now();
    let id = cluster.create_tunnel("app.localhost", agent, &origin_a.addr.to_string());
    cluster
        .wait_until(0, "app.localhost", Duration::from_secs(10), |a| {
            origin_of(a).as_deref() == Some("a")
        })
        .unwrap_or_else(|| panic!("tunnel never served\n{}", cluster.logs()));
    println!(
        "tunnel POST to first 200 through the gateway: {:.3} s",
        started.elapsed().as_secs_f64()
    );

    // Forwarding headers reach the origin.
    let seen = cluster.get(0, "app.localhost", "/some/path?q=1").json();
    assert_eq!(seen["path"], "/some/path");
    assert_eq!(seen["x_forwarded_for"], "127.0.0.1");
    assert_eq!(seen["x_real_ip"], "127.0.0.1");
    assert_eq!(seen["x_forwarded_proto"], "http");
    assert!(
        seen["x_forwarded_host"]
            .as_str()
            .unwrap()
            .starts_with("app.localhost"),
        "{seen}"
    );

    // Edit the target.
    let patch = format!(r#"{{"target":"{}"}}"#, origin_b.addr);
    assert_eq!(
        cluster
            .api("PATCH", &format!("/api/v1/tunnels/{id}"), Some(&patch))
            .status,
        200
    );
    cluster
        .wait_until(0, "app.localhost", LIVE_CONFIG_LIMIT, |a| {
            origin_of(a).as_deref() == Some("b")
        })
        .unwrap_or_else(|| panic!("target edit not applied within 2 s\n{}", cluster.logs()));

    // Disable, enable.
    assert_eq!(
        cluster
            .api(
                "PATCH",
                &format!("/api/v1/tunnels/{id}"),
                Some(r#"{"enabled":false}"#)
            )
            .status,
        200
    );
    cluster
        .wait_until(0, "app.localhost", LIVE_CONFIG_LIMIT, |a| a.status == 404)
        .unwrap_or_else(|| panic!("disable not applied within 2 s\n{}", cluster.logs()));
    assert_eq!(
        cluster
            .api(
                "PATCH",
                &format!("/api/v1/tunnels/{id}"),
                Some(r#"{"enabled":true}"#)
            )
            .status,
        200
    );
    cluster
        .wait_until(0, "app.localhost", LIVE_CONFIG_LIMIT, |a| a.status == 200)
        .unwrap_or_else(|| panic!("enable not applied within 2 s\n{}", cluster.logs()));

    // Rename the hostname.
    assert_eq!(
        cluster
            .api(
                "PATCH",
                &format!("/api/v1/tunnels/{id}"),
                Some(r#"{"hostname":"renamed.localhost"}"#)
            )
            .status,
        200
    );
    cluster
        .wait_until(0, "renamed.localhost", LIVE_CONFIG_LIMIT, |a| {
            a.status == 200
        })
        .unwrap_or_else(|| panic!("rename not applied within 2 s\n{}", cluster.logs()));
    assert_eq!(cluster.get(0, "app.localhost", "/").status, 404);

    // Delete.
    assert_eq!(
        cluster
            .api("DELETE", &format!("/api/v1/tunnels/{id}"), None)
            .status,
        200
    );
    cluster
        .wait_until(0, "renamed.localhost", LIVE_CONFIG_LIMIT, |a| {
            a.status == 404
        })
        .unwrap_or_else(|| panic!("delete not applied within 2 s\n{}", cluster.logs()));
    assert_eq!(
        cluster
            .api("GET", &format!("/api/v1/tunnels/{id}"), None)
            .status,
        404
    );
}

#[test]
fn two_agents_with_two_tunnels_each_serve_at_once() {
    let mut cluster = Cluster::new("two-agents");
    cluster.add_gateway();
    let origins: Vec<Origin> = (0..4).map(|i| Origin::start(&format!("o{i}"))).collect();
    let agents = [cluster.add_agent(), cluster.add_agent()];
    for (i, origin) in origins.iter().enumerate() {
        cluster.create_tunnel(
            &format!("t{i}.localhost"),
            agents[i / 2],
            &origin.addr.to_string(),
        );
    }
    for i in 0..4 {
        let host = format!("t{i}.localhost");
        cluster
            .wait_until(0, &host, Duration::from_secs(10), |a| a.status == 200)
            .unwrap_or_else(|| panic!("{host} never served\n{}", cluster.logs()));
    }
    // All four at once, several rounds, each answered by its own origin.
    let cluster = &cluster;
    std::thread::scope(|scope| {
        let handles: Vec<_> = (0..4)
            .map(|i| {
                scope.spawn(move || {
                    for _ in 0..10 {
                        let answer = cluster.get(0, &format!("t{i}.localhost"), "/");
                        assert_eq!(
                            origin_of(&answer).as_deref(),
                            Some(format!("o{i}").as_str()),
                            "{answer:?}"
                        );
                    }
                })
            })
            .collect();
        for handle in handles {
            handle.join().expect("concurrent requests");
        }
    });
}

#[test]
fn unknown_hosts_dead_agents_and_refusing_origins_get_pages() {
    let mut cluster = Cluster::new("pages");
    cluster.add_gateway();
    let agent = cluster.add_agent();
    let origin = Origin::start("o");
    let closed_port = kakuremichi_tests::free_tcp_port();
    cluster.create_tunnel("up.localhost", agent, &origin.addr.to_string());
    cluster.create_tunnel(
        "refused.localhost",
        agent,
        &format!("127.0.0.1:{closed_port}"),
    );
    cluster
        .wait_until(0, "up.localhost", Duration::from_secs(10), |a| {
            a.status == 200
        })
        .unwrap_or_else(|| panic!("tunnel never served\n{}", cluster.logs()));

    let unknown = cluster.get(0, "nobody.localhost", "/");
    assert_eq!(unknown.status, 404);
    assert!(unknown.body.contains("<html") && unknown.body.contains("nobody.localhost"));

    // The origin refuses: 502 at once, naming the tunnel, nothing internal. Its route may
    // come in a later config than the first tunnel's: until then the gateway answers 404.
    cluster
        .wait_until(0, "refused.localhost", Duration::from_secs(10), |a| {
            a.status != 404
        })
        .unwrap_or_else(|| panic!("the second tunnel never reached the gateway"));
    let started = Instant::now();
    let refused = cluster.get(0, "refused.localhost", "/");
    assert_eq!(refused.status, 502, "{refused:?}");
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "502 took {:?}",
        started.elapsed()
    );
    assert!(refused.body.contains("refused.localhost"));
    assert!(
        !refused.body.contains("10.77.") && !refused.body.contains(&closed_port.to_string()),
        "{}",
        refused.body
    );

    // The agent dies: 502 within 10 s.
    cluster.agents[agent].kill9();
    let died = Instant::now();
    let answer = wait_for(Duration::from_secs(12), || {
        Some(cluster.get(0, "up.localhost", "/")).filter(|a| a.status == 502)
    })
    .unwrap_or_else(|| panic!("no 502 after the agent died\n{}", cluster.logs()));
    assert!(
        died.elapsed() <= Duration::from_secs(10),
        "502 only after {:?}",
        died.elapsed()
    );
    assert!(answer.body.contains("up.localhost"));
    println!(
        "502 after agent death: {:.2} s",
        died.elapsed().as_secs_f64()
    );
}

#[test]
fn every_component_recovers_from_kill_9() {
    let mut cluster = Cluster::new("recovery");
    let origin = Origin::start("o");
    cluster.add_gateway();
    let agent = cluster.add_agent();
    cluster.create_tunnel("app.localhost", agent, &origin.addr.to_string());
    let serves = |cluster: &Cluster, limit: Duration, what: &str| {
        cluster
            .wait_until(0, "app.localhost", limit, |a| a.status == 200)
            .unwrap_or_else(|| panic!("{what}: tunnel not serving\n{}", cluster.logs()))
    };
    serves(&cluster, Duration::from_secs(10), "start");

    // Control down: the data plane keeps serving.
    cluster.control.kill9();
    serves(&cluster, Duration::from_secs(1), "control down");

    // Gateway and agent restarted while Control is down: both serve from their caches.
    cluster.gateways[0].restart();
    cluster.agents[agent].restart();
    serves(
        &cluster,
        Duration::from_secs(10),
        "gateway and agent restarted without control",
    );

    // Control back: nodes reconnect within 10 s.
    cluster.control.start();
    let back = Instant::now();
    let (gateway_id, agent_id) = (
        cluster.gateways[0].id.clone(),
        cluster.agents[agent].id.clone(),
    );
    wait_for(Duration::from_secs(10), || {
        let gateway = cluster.node_status("gateway", &gateway_id)["online"].as_bool() == Some(true);
        let agent = cluster.node_status("agent", &agent_id)["online"].as_bool() == Some(true);
        (gateway && agent).then_some(())
    })
    .unwrap_or_else(|| panic!("nodes did not reconnect within 10 s\n{}", cluster.logs()));
    println!(
        "nodes reconnected {:.2} s after Control restarted",
        back.elapsed().as_secs_f64()
    );

    // Each of gateway and agent killed and restarted with Control up.
    cluster.gateways[0].restart();
    serves(&cluster, Duration::from_secs(10), "gateway restarted");
    cluster.agents[agent].restart();
    serves(&cluster, Duration::from_secs(10), "agent restarted");

    // A change made after all that still reaches both.
    let second = Origin::start("second");
    cluster.create_tunnel("second.localhost", agent, &second.addr.to_string());
    cluster
        .wait_until(0, "second.localhost", Duration::from_secs(3), |a| {
            a.status == 200
        })
        .unwrap_or_else(|| panic!("new tunnel after recovery not served\n{}", cluster.logs()));
}

#[test]
fn nodes_are_disabled_rotated_and_deleted_live() {
    let mut cluster = Cluster::new("lifecycle");
    let origin = Origin::start("a");
    cluster.add_gateway();
    let agent = cluster.add_agent();
    let (agent_id, gateway_id) = (
        cluster.agents[agent].id.clone(),
        cluster.gateways[0].id.clone(),
    );
    let tunnel = cluster.create_tunnel("app.localhost", agent, &origin.addr.to_string());
    let serving = |cluster: &Cluster, limit| {
        cluster.wait_until(0, "app.localhost", limit, |a| a.status == 200)
    };
    serving(&cluster, Duration::from_secs(10))
        .unwrap_or_else(|| panic!("tunnel never served\n{}", cluster.logs()));
    let patch = |kind: &str, id: &str, body: &str| {
        cluster.api("PATCH", &format!("/api/v1/{kind}s/{id}"), Some(body))
    };

    // A disabled agent or gateway stops serving within 2 s, stays connected, and comes back
    // within 2 s of being enabled.
    for (kind, id) in [("agent", &agent_id), ("gateway", &gateway_id)] {
        let answer = patch(kind, id, r#"{"enabled":false}"#);
        assert_eq!(answer.status, 200, "{}", answer.body);
        assert_eq!(answer.json()["enabled"], false);
        cluster
            .wait_until(0, "app.localhost", LIVE_CONFIG_LIMIT, |a| a.status == 404)
            .unwrap_or_else(|| panic!("{kind} disable not applied in 2 s\n{}", cluster.logs()));
        assert_eq!(cluster.node_status(kind, id)["online"], true);
        assert_eq!(patch(kind, id, r#"{"enabled":true}"#).status, 200);
        serving(&cluster, LIVE_CONFIG_LIMIT)
            .unwrap_or_else(|| panic!("{kind} enable not applied in 2 s\n{}", cluster.logs()));
    }
    // Bad input changes nothing.
    for body in [
        r#"{"enabled":"no"}"#,
        r#"{"name":""}"#,
        r#"{"colour":"red"}"#,
    ] {
        assert_eq!(patch("agent", &agent_id, body).status, 400, "{body}");
    }
    assert_eq!(
        patch("gateway", &agent_id, "{}").status,
        404,
        "kind is checked"
    );
    let renamed = patch("agent", &agent_id, r#"{"name":"kitchen-pi"}"#);
    assert_eq!(renamed.json()["name"], "kitchen-pi");
    assert_eq!(renamed.json()["enabled"], true);

    // A rotated key: the session ends, the old key is refused, the new one works.
    let rotated = cluster.api(
        "POST",
        &format!("/api/v1/agents/{agent_id}/rotate-key"),
        None,
    );
    assert_eq!(rotated.status, 200, "{}", rotated.body);
    let new_key = rotated.json()["api_key"].as_str().unwrap().to_string();
    assert!(rotated.json()["install"]["docker_compose"]
        .as_str()
        .is_some_and(|s| s.contains(&new_key)));
    wait_for(Duration::from_secs(10), || {
        cluster.agents[agent]
            .log()
            .contains("rejected the API key")
            .then_some(())
    })
    .unwrap_or_else(|| panic!("old key still accepted\n{}", cluster.logs()));
    cluster.agents[agent].kill9();
    cluster.agents[agent].set_env("API_KEY", &new_key);
    cluster.agents[agent].start();
    cluster.wait_online("agent", &agent_id);
    serving(&cluster, Duration::from_secs(10))
        .unwrap_or_else(|| panic!("not served after rotation\n{}", cluster.logs()));

    // An agent that carries a tunnel is not deleted; once free, it is, and its key dies.
    let refused = cluster.api("DELETE", &format!("/api/v1/agents/{agent_id}"), None);
    assert_eq!(refused.status, 409, "{}", refused.body);
    assert!(refused.body.contains("app.localhost"), "{}", refused.body);
    assert_eq!(cluster.node_status("agent", &agent_id)["online"], true);
    let path = format!("/api/v1/tunnels/{tunnel}");
    assert_eq!(cluster.api("DELETE", &path, None).status, 200);
    for (kind, id) in [("agent", &agent_id), ("gateway", &gateway_id)] {
        let path = format!("/api/v1/{kind}s/{id}");
        assert_eq!(cluster.api("DELETE", &path, None).status, 200);
        assert_eq!(cluster.api("GET", &path, None).status, 404);
    }
    let logs_refusal = |node: &kakuremichi_tests::Node| node.log().contains("rejected the API key");
    wait_for(Duration::from_secs(10), || {
        (logs_refusal(&cluster.gateways[0])
            && cluster.agents[agent]
                .log()
                .matches("rejected the API key")
                .count()
                >= 2)
            .then_some(())
    })
    .unwrap_or_else(|| panic!("deleted nodes' keys still accepted\n{}", cluster.logs()));
}

#[test]
fn every_binary_answers_healthcheck_and_stops_at_once_on_sigterm() {
    let mut cluster = Cluster::new("sigterm");
    cluster.add_gateway();
    let agent = cluster.add_agent();
    let agent_id = cluster.agents[agent].id.clone();
    cluster.wait_online("agent", &agent_id);
    let nodes = [
        &mut cluster.agents[0],
        &mut cluster.gateways[0],
        &mut cluster.control,
    ];
    for node in nodes {
        assert!(
            node.healthcheck(),
            "{} healthcheck while running",
            node.name
        );
        let started = Instant::now();
        let status = node.terminate(Duration::from_secs(2));
        let status = status.unwrap_or_else(|| panic!("{} ignored SIGTERM for 2 s", node.name));
        assert!(status.success(), "{} exited with {status}", node.name);
        println!(
            "{}: stopped {:.3} s after SIGTERM",
            node.name,
            started.elapsed().as_secs_f64()
        );
        assert!(
            !node.healthcheck(),
            "{} healthcheck after it stopped",
            node.name
        );
    }
}

#[test]
fn wrong_api_key_is_refused_clearly_and_retried() {
    let mut cluster = Cluster::new("wrong-key");
    let agent = cluster.add_agent_with_key(Some("kmk_not-a-real-key"));
    let refused = wait_for(Duration::from_secs(10), || {
        cluster.agents[agent]
            .log()
            .contains("rejected the API key")
            .then_some(())
    });
    assert!(refused.is_some(), "no clear log line\n{}", cluster.logs());
    // Still running, and still retrying.
    std::thread::sleep(Duration::from_secs(2));
    assert!(
        cluster.agents[agent].is_running(),
        "agent exited on a wrong key"
    );
    assert!(
        cluster.agents[agent]
            .log()
            .matches("rejected the API key")
            .count()
            >= 2,
        "{}",
        cluster.agents[agent].log()
    );
    // What Control answers on the wire.
    let answer = curl(&[
        "-H",
        "Authorization: Bearer kmk_wrong",
        &cluster.control_url("/ws/agent"),
    ]);
    assert_eq!(answer.status, 401);
}

#[test]
fn bad_api_input_gets_a_field_error_and_changes_nothing() {
    let mut cluster = Cluster::new("bad-input");
    let agent = cluster.add_agent();
    let agent_id = cluster.agents[agent].id.clone();
    // The agent's first hello records its key and moves the revision: wait for it, so the
    // revision below can only move by a request this test makes.
    cluster.wait_online("agent", &agent_id);
    let before = cluster.api("GET", "/api/v1/tunnels", None).body;
    let revision = |c: &Cluster| {
        curl(&[&c.control_url("/metrics")])
            .body
            .lines()
            .find(|l| l.starts_with("kakuremichi_control_revision "))
            .map(str::to_string)
    };
    let revision_before = revision(&cluster);
    let cases = [
        ("{", "body"),
        ("[]", "body"),
        (
            r#"{"hostname":"a b","agent":"AGENT","target":"127.0.0.1:80"}"#,
            "hostname",
        ),
        (
            r#"{"hostname":"ok.localhost","agent":"AGENT","target":"nope"}"#,
            "target",
        ),
        (
            r#"{"hostname":"ok.localhost","agent":"AGENT","target":"127.0.0.1:0"}"#,
            "target",
        ),
        (
            r#"{"hostname":"ok.localhost","agent":"agt_missing","target":"127.0.0.1:80"}"#,
            "agent",
        ),
        (
            r#"{"hostname":"ok.localhost","agent":"AGENT","target":"127.0.0.1:80","extra":1}"#,
            "extra",
        ),
        (
            r#"{"hostname":"ok.localhost","agent":"AGENT","target":"127.0.0.1:80","enabled":"yes"}"#,
            "enabled",
        ),
        (
            r#"{"hostname":"ok.localhost","agent":"AGENT","target":"127.0.0.1:80","kind":"smtp"}"#,
            "kind",
        ),
        (r#"{"agent":"AGENT","target":"127.0.0.1:80"}"#, "hostname"),
    ];
    for (body, field) in cases {
        let body = body.replace("AGENT", &agent_id);
        let answer = cluster.api("POST", "/api/v1/tunnels", Some(&body));
        assert_eq!(answer.status, 400, "{body}: {answer:?}");
        assert_eq!(answer.json()["field"], field, "{body}: {answer:?}");
    }
    let oversized = format!(r#"{{"hostname":"{}"}}"#, "a".repeat(100_000));
    assert_eq!(
        cluster
            .api("POST", "/api/v1/tunnels", Some(&oversized))
            .status,
        400
    );
    let unauthenticated = curl(&[
        "-X",
        "POST",
        "--data",
        "{}",
        &cluster.control_url("/api/v1/agents"),
    ]);
    assert_eq!(unauthenticated.status, 401);
    assert_eq!(
        cluster
            .api("PATCH", "/api/v1/tunnels/tun_missing", Some("{}"))
            .status,
        404
    );
    assert_eq!(cluster.api("GET", "/api/v1/tunnels", None).body, before);
    assert_eq!(
        revision(&cluster),
        revision_before,
        "a refused request changed the store"
    );
}

#[test]
fn gateway_shrugs_off_garbage_and_oversized_requests() {
    let mut cluster = Cluster::new("garbage");
    let origin = Origin::start("o");
    cluster.add_gateway();
    let agent = cluster.add_agent();
    cluster.create_tunnel("app.localhost", agent, &origin.addr.to_string());
    cluster
        .wait_until(0, "app.localhost", Duration::from_secs(10), |a| {
            a.status == 200
        })
        .unwrap_or_else(|| panic!("tunnel never served\n{}", cluster.logs()));

    // Garbage on the WireGuard port: random bytes, fake headers of every message type.
    let socket = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    let target = format!("127.0.0.1:{}", cluster.gateway_wireguard_port(0));
    let mut noise = [0u8; 1500];
    for i in 0..2000usize {
        getrandom::fill(&mut noise).unwrap();
        noise[0] = (i % 5) as u8;
        let len = [0, 1, 4, 32, 92, 148, 64, 1500][i % 8];
        let _ = socket.send_to(&noise[..len], &target);
    }
    // Oversized header block and a malformed request line on the HTTP port.
    let huge = format!("X-Big: {}", "a".repeat(100_000));
    let port = cluster.gateways[0].http_port;
    let answer = curl(&[
        "-H",
        &huge,
        "-H",
        "Host: app.localhost",
        &format!("http://127.0.0.1:{port}/"),
    ]);
    assert!(
        answer.status == 431 || answer.status == 400 || answer.status == 0,
        "{answer:?}"
    );
    let mut raw = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
    std::io::Write::write_all(&mut raw, b"\x00\xff GARBAGE\r\n\r\n").unwrap();

    assert!(
        cluster.gateways[0].is_running(),
        "gateway died\n{}",
        cluster.logs()
    );
    let after = cluster.get(0, "app.localhost", "/");
    assert_eq!(after.status, 200, "{after:?}\n{}", cluster.logs());
    let admin = cluster.gateways[0].admin_port;
    assert_eq!(
        curl(&[&format!("http://127.0.0.1:{admin}/healthz")]).status,
        200
    );
    assert_eq!(
        curl(&[&format!("http://127.0.0.1:{admin}/readyz")]).status,
        200
    );
    let metrics = curl(&[&format!("http://127.0.0.1:{admin}/metrics")]).body;
    assert!(
        metrics.contains("kakuremichi_gateway_requests_total"),
        "{metrics}"
    );
}

#[test]
fn websockets_and_streamed_uploads_pass_through() {
    use async_tungstenite::tungstenite::Message;
    use futures_lite::StreamExt;

    let mut cluster = Cluster::new("websocket");
    cluster.add_gateway();
    let agent = cluster.add_agent();
    let echo = kakuremichi_tests::EchoOrigin::start();
    let origin = Origin::start("upload");
    cluster.create_tunnel("ws.localhost", agent, &echo.addr.to_string());
    cluster.create_tunnel("upload.localhost", agent, &origin.addr.to_string());
    cluster
        .wait_until(0, "upload.localhost", Duration::from_secs(10), |a| {
            a.status == 200
        })
        .unwrap_or_else(|| panic!("tunnel never served\n{}", cluster.logs()));

    // WebSocket: upgrade through the gateway, then messages both ways.
    let port = cluster.gateways[0].http_port;
    smol::block_on(async {
        let tcp = smol::net::TcpStream::connect(("127.0.0.1", port))
            .await
            .unwrap();
        let url = format!("ws://ws.localhost:{port}/socket");
        let (mut ws, response) = async_tungstenite::client_async(url, tcp)
            .await
            .expect("upgrade through the gateway");
        assert_eq!(response.status(), 101);
        for i in 0..20 {
            let text = format!("message {i} {}", "x".repeat(i * 100));
            ws.send(Message::text(text.clone())).await.unwrap();
            let echoed = ws.next().await.expect("an echo").expect("a frame");
            assert_eq!(echoed.into_text().unwrap().as_str(), text);
        }
        ws.close(None).await.unwrap();
    });

    // A 20 MB upload streams through to the origin.
    let file = cluster.dir.join("upload.bin");
    std::fs::write(&file, vec![42u8; 20 << 20]).unwrap();
    let resolve = format!("upload.localhost:{port}:127.0.0.1");
    let data = format!("@{}", file.display());
    let answer = curl(&[
        "--resolve",
        &resolve,
        "--data-binary",
        &data,
        &format!("http://upload.localhost:{port}/up"),
    ]);
    assert_eq!(answer.status, 200, "{answer:?}");
    assert_eq!(answer.json()["body_bytes"], 20 << 20);
}
