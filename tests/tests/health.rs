//! Checks of every target with the real binaries: two agents serve one tunnel, each with its
//! own origin (Python's http.server, a real server we can stop). An origin stopped is
//! failing within two check periods, its agent closes the tunnel's port and visitors are
//! served by the other without one error; started again, it serves within two periods. Then
//! many periods pass without a change of state.

use kakuremichi_tests::{free_tcp_port, wait_for, Cluster};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// Python's http.server in a directory of its own, serving `who.txt` with its name.
struct PythonOrigin {
    dir: std::path::PathBuf,
    port: u16,
    child: Option<Child>,
}

impl PythonOrigin {
    fn new(dir: std::path::PathBuf, name: &str) -> PythonOrigin {
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join("who.txt"), name).unwrap();
        let mut origin = PythonOrigin {
            dir,
            port: free_tcp_port(),
            child: None,
        };
        origin.start();
        origin
    }

    fn start(&mut self) {
        let child = Command::new("python3")
            .args([
                "-m",
                "http.server",
                &self.port.to_string(),
                "--bind",
                "127.0.0.1",
            ])
            .current_dir(&self.dir)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("python3 -m http.server");
        self.child = Some(child);
        let port = self.port;
        wait_for(Duration::from_secs(10), || {
            std::net::TcpStream::connect(("127.0.0.1", port)).ok()
        })
        .expect("http.server listens");
    }

    fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

impl Drop for PythonOrigin {
    fn drop(&mut self) {
        self.stop();
    }
}

fn health(cluster: &Cluster, tunnel: &str) -> serde_json::Value {
    cluster
        .api("GET", &format!("/api/v1/tunnels/{tunnel}"), None)
        .json()["health"]
        .clone()
}

#[test]
fn a_stopped_origin_is_failing_within_two_periods_its_replica_serves_and_it_recovers() {
    const PERIOD: Duration = Duration::from_secs(1);
    let mut cluster = Cluster::with_control_args("health", &["--heartbeat-interval-ms", "500"]);
    let mut first = PythonOrigin::new(cluster.dir.join("origin-a"), "a");
    let second = PythonOrigin::new(cluster.dir.join("origin-b"), "b");
    cluster.add_gateway();
    let (a, b) = (cluster.add_agent(), cluster.add_agent());
    let (a_id, b_id) = (cluster.agents[a].id.clone(), cluster.agents[b].id.clone());
    let body = serde_json::json!({
        "hostname": "checked.localhost",
        "agents": [
            {"agent": a_id, "target": format!("127.0.0.1:{}", first.port)},
            {"agent": b_id, "target": format!("127.0.0.1:{}", second.port)},
        ],
        "issuer": "none",
        "origin": {"health_path": "/who.txt", "health_interval_secs": 1},
    });
    let created = cluster.api("POST", "/api/v1/tunnels", Some(&body.to_string()));
    assert_eq!(created.status, 201, "{}", created.body);
    let tunnel = created.json()["id"].as_str().unwrap().to_string();
    let who = || cluster.get(0, "checked.localhost", "/who.txt");
    let served_by = |name: &str| {
        wait_for(Duration::from_secs(20), || {
            (who().body == name).then_some(())
        })
        .unwrap_or_else(|| panic!("never served by {name}\n{}", cluster.logs()));
    };
    served_by("a");
    served_by("b");
    wait_for(Duration::from_secs(10), || {
        (health(&cluster, &tunnel)["state"] == "healthy").then_some(())
    })
    .unwrap_or_else(|| panic!("never healthy: {}", health(&cluster, &tunnel)));

    // Stop a's origin: failing within two periods (and a heartbeat to tell Control).
    first.stop();
    let stopped = Instant::now();
    let failing = wait_for(Duration::from_secs(10), || {
        let h = health(&cluster, &tunnel);
        (h["state"] == "degraded").then_some(h)
    })
    .unwrap_or_else(|| {
        panic!(
            "never degraded: {}\n{}",
            health(&cluster, &tunnel),
            cluster.logs()
        )
    });
    let took = stopped.elapsed();
    assert!(
        took <= 2 * PERIOD + Duration::from_millis(1_500),
        "degraded after {took:?}"
    );
    assert_eq!(failing["failing"][0]["agent"], a_id.as_str(), "{failing}");
    println!(
        "health: a stopped origin showed failing after {:.2} s",
        took.as_secs_f64()
    );
    // Visitors never see it: a's port is closed, b answers every request.
    std::thread::sleep(PERIOD);
    for _ in 0..50 {
        let answer = who();
        assert_eq!((answer.status, answer.body.as_str()), (200, "b"));
    }
    let page = {
        let browser = kakuremichi_tests::browser::log_in_admin(&cluster);
        browser.get("/tunnels").body
    };
    assert!(page.contains("serving from 1 of 2 agents"), "{page}");

    // Started again: healthy within two periods, and a serves again.
    first.start();
    let started = Instant::now();
    wait_for(Duration::from_secs(10), || {
        (health(&cluster, &tunnel)["state"] == "healthy").then_some(())
    })
    .unwrap_or_else(|| panic!("never healthy again: {}", health(&cluster, &tunnel)));
    let took = started.elapsed();
    assert!(
        took <= 2 * PERIOD + Duration::from_millis(1_500),
        "healthy after {took:?}"
    );
    served_by("a");
    println!(
        "health: a restarted origin showed healthy after {:.2} s",
        took.as_secs_f64()
    );

    // Ten periods on, nothing flaps.
    let until = Instant::now() + 10 * PERIOD;
    while Instant::now() < until {
        assert_eq!(health(&cluster, &tunnel)["state"], "healthy");
        std::thread::sleep(PERIOD / 4);
    }

    // Both origins down: the tunnel is failing, and says why.
    first.stop();
    drop(second);
    wait_for(Duration::from_secs(10), || {
        (health(&cluster, &tunnel)["state"] == "failing").then_some(())
    })
    .unwrap_or_else(|| panic!("never failing: {}", health(&cluster, &tunnel)));
}
