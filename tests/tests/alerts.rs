//! Alerts with the real binaries: a rule on a tunnel's target, a webhook receiver that checks
//! the HMAC and refuses for a while, and a real SMTP server (Python's aiosmtpd). The origin
//! stopped fires once, delivered once to each after the receiver recovers; started again,
//! it resolves once.

use http_body_util::BodyExt;
use kakuremichi_tests::{free_tcp_port, wait_for, Cluster};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

const SECRET: &str = "webhook-hmac-key";

/// What the receiver got: each notice's JSON, with its signature checked.
#[derive(Default)]
struct Received {
    notices: Mutex<Vec<serde_json::Value>>,
    refusing: AtomicBool,
    refused: AtomicUsize,
    bad_signatures: AtomicUsize,
}

fn receiver(received: Arc<Received>) -> u16 {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    std::thread::spawn(move || {
        let listener = async_io::Async::new(listener).unwrap();
        let answer = move |request: hyper::Request<hyper::body::Incoming>, _| {
            let received = received.clone();
            async move {
                if received.refusing.load(Ordering::Relaxed) {
                    received.refused.fetch_add(1, Ordering::Relaxed);
                    return kakuremichi_rt::http::respond(503, "text/plain", "busy\n");
                }
                let signature = request
                    .headers()
                    .get("x-kakuremichi-signature")
                    .and_then(|v| v.to_str().ok())
                    .unwrap_or("")
                    .to_string();
                let body = request.into_body().collect().await.unwrap().to_bytes();
                let key = ring::hmac::Key::new(ring::hmac::HMAC_SHA256, SECRET.as_bytes());
                let tag = ring::hmac::sign(&key, &body);
                let expected: String = tag.as_ref().iter().map(|b| format!("{b:02x}")).collect();
                if signature != format!("sha256={expected}") {
                    received.bad_signatures.fetch_add(1, Ordering::Relaxed);
                    return kakuremichi_rt::http::respond(401, "text/plain", "bad signature\n");
                }
                let json: serde_json::Value = serde_json::from_slice(&body).unwrap();
                received
                    .notices
                    .lock()
                    .unwrap()
                    .push(json["notice"].clone());
                kakuremichi_rt::http::respond(204, "text/plain", "")
            }
        };
        smol::block_on(kakuremichi_rt::http::serve(listener, answer));
    });
    port
}

/// Python's aiosmtpd, keeping each mail in a maildir.
struct Smtp {
    child: Child,
    port: u16,
    maildir: std::path::PathBuf,
}

impl Smtp {
    fn start(dir: &std::path::Path) -> Smtp {
        let (port, maildir) = (free_tcp_port(), dir.join("maildir"));
        let child = Command::new("python3")
            .args(["-m", "aiosmtpd", "-n", "-l", &format!("127.0.0.1:{port}")])
            .args(["-c", "aiosmtpd.handlers.Mailbox"])
            .arg(&maildir)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("python3 -m aiosmtpd (scripts/install-deps installs it)");
        wait_for(Duration::from_secs(10), || {
            std::net::TcpStream::connect(("127.0.0.1", port)).ok()
        })
        .expect("aiosmtpd listens");
        Smtp {
            child,
            port,
            maildir,
        }
    }

    /// Every mail so far, whole.
    fn mails(&self) -> Vec<String> {
        let new = self.maildir.join("new");
        let mut mails: Vec<String> = std::fs::read_dir(new)
            .map(|dir| {
                dir.flatten()
                    .filter_map(|e| std::fs::read_to_string(e.path()).ok())
                    .collect()
            })
            .unwrap_or_default();
        mails.sort();
        mails
    }
}

impl Drop for Smtp {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn http_server(dir: &std::path::Path, port: u16) -> Child {
    std::fs::create_dir_all(dir).unwrap();
    let child = Command::new("python3")
        .args([
            "-m",
            "http.server",
            &port.to_string(),
            "--bind",
            "127.0.0.1",
        ])
        .current_dir(dir)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("python3 -m http.server");
    wait_for(Duration::from_secs(10), || {
        std::net::TcpStream::connect(("127.0.0.1", port)).ok()
    })
    .expect("http.server listens");
    child
}

#[test]
fn a_failing_target_fires_once_reaches_a_recovered_webhook_and_a_mailbox_and_resolves_once() {
    let mut cluster = Cluster::with_control_args(
        "alerts",
        &[
            "--heartbeat-interval-ms",
            "500",
            "--alert-interval-secs",
            "1",
        ],
    );
    let received = Arc::new(Received::default());
    let webhook = receiver(received.clone());
    let smtp = Smtp::start(&cluster.dir);
    let origin_port = free_tcp_port();
    let mut origin = http_server(&cluster.dir.join("site"), origin_port);
    cluster.add_gateway();
    let agent = cluster.add_agent();
    let agent_id = cluster.agents[agent].id.clone();
    let body = serde_json::json!({
        "hostname": "watched.localhost", "agent": agent_id, "issuer": "none",
        "target": format!("127.0.0.1:{origin_port}"),
        "origin": {"health_path": "/", "health_interval_secs": 1},
    });
    let tunnel = cluster.api("POST", "/api/v1/tunnels", Some(&body.to_string()));
    assert_eq!(tunnel.status, 201, "{}", tunnel.body);
    let api = |method: &str, path: &str, body: serde_json::Value| {
        let answer = cluster.api(method, path, Some(&body.to_string()));
        assert!(
            answer.status < 300,
            "{method} {path}: {} {}",
            answer.status,
            answer.body
        );
        answer.json()
    };
    let hook = api(
        "POST",
        "/api/v1/alerts/channels",
        serde_json::json!({
            "name": "receiver", "kind": "webhook", "url": format!("http://127.0.0.1:{webhook}/hook"), "secret": SECRET,
        }),
    );
    assert_eq!(hook["signed"], true);
    assert!(
        !hook.to_string().contains(SECRET),
        "the secret is never shown: {hook}"
    );
    api(
        "POST",
        "/api/v1/alerts/channels",
        serde_json::json!({
            "name": "mail", "kind": "email", "smtp_server": format!("127.0.0.1:{}", smtp.port),
            "smtp_security": "none", "mail_from": "kakuremichi@example.test", "mail_to": "oncall@example.test",
        }),
    );
    // The rule from the CLI, as a shell user makes it.
    let rule = [
        "add-rule",
        "--name",
        "origin down",
        "--kind",
        "target_failing",
        "--for-secs",
        "2",
    ];
    let (made, out) = cluster.cli("alert", &rule);
    assert!(made, "{out}");
    let (made, out) = cluster.cli(
        "alert",
        &["add-rule", "--name", "x", "--kind", "everything"],
    );
    assert!(!made && out.contains("target_failing"), "{out}");
    // Bad input is refused with its field and changes nothing.
    let refused = cluster.api(
        "POST",
        "/api/v1/alerts/rules",
        Some(r#"{"name":"x","kind":"target_failing","channels":["chn_nope"]}"#),
    );
    assert_eq!(
        (refused.status, refused.json()["field"].as_str()),
        (400, Some("channels"))
    );
    let refused = cluster.api(
        "POST",
        "/api/v1/alerts/channels",
        Some(r#"{"name":"x","kind":"slack","url":"ftp://x"}"#),
    );
    assert_eq!(refused.status, 400);
    let (listed, out) = cluster.cli("alert", &["list"]);
    assert!(listed, "{out}");
    let listed: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(listed["rules"].as_array().unwrap().len(), 1, "{listed}");
    assert!(!out.contains(SECRET), "the CLI never shows a secret");
    // The test button's API: taken by the receiver.
    let tested = api(
        "POST",
        &format!(
            "/api/v1/alerts/channels/{}/test",
            hook["id"].as_str().unwrap()
        ),
        serde_json::json!({}),
    );
    assert_eq!(tested["delivered"], true, "{tested}");
    assert_eq!(received.notices.lock().unwrap().len(), 1);
    received.notices.lock().unwrap().clear();

    // The receiver refuses for a while; the origin stops.
    received.refusing.store(true, Ordering::Relaxed);
    let stopped = Instant::now();
    let _ = origin.kill();
    let _ = origin.wait();
    let mailed = wait_for(Duration::from_secs(30), || smtp.mails().first().cloned())
        .unwrap_or_else(|| panic!("no mail\n{}", cluster.logs()));
    let mail_delay = stopped.elapsed();
    assert!(
        mailed.contains("FIRING") && mailed.contains("watched.localhost"),
        "{mailed}"
    );
    wait_for(Duration::from_secs(10), || {
        (received.refused.load(Ordering::Relaxed) >= 2).then_some(())
    })
    .expect("the webhook is tried again while it refuses");
    received.refusing.store(false, Ordering::Relaxed);
    wait_for(Duration::from_secs(30), || {
        (!received.notices.lock().unwrap().is_empty()).then_some(())
    })
    .unwrap_or_else(|| panic!("the webhook never got the alert\n{}", cluster.logs()));
    let hook_delay = stopped.elapsed();
    std::thread::sleep(Duration::from_secs(4));
    {
        let notices = received.notices.lock().unwrap();
        assert_eq!(notices.len(), 1, "exactly once: {notices:?}");
        assert_eq!(notices[0]["state"], "firing");
    }
    assert_eq!(smtp.mails().len(), 1, "one mail");
    assert_eq!(received.bad_signatures.load(Ordering::Relaxed), 0);
    let overview = api("GET", "/api/v1/alerts", serde_json::json!({}));
    assert_eq!(
        overview["firing"].as_array().unwrap().len(),
        1,
        "{overview}"
    );
    let deliveries = overview["deliveries"].as_array().unwrap();
    assert!(
        deliveries.iter().any(|d| d["outcome"] == "retrying"),
        "{overview}"
    );
    println!(
        "alerts: origin stopped -> mail {:.1} s, webhook (refusing for a while) {:.1} s",
        mail_delay.as_secs_f64(),
        hook_delay.as_secs_f64()
    );

    // Started again: resolved, once each.
    let started = Instant::now();
    let mut origin = http_server(&cluster.dir.join("site"), origin_port);
    wait_for(Duration::from_secs(30), || {
        (received.notices.lock().unwrap().len() == 2).then_some(())
    })
    .unwrap_or_else(|| panic!("never resolved\n{}", cluster.logs()));
    println!(
        "alerts: origin started -> resolved at the webhook {:.1} s",
        started.elapsed().as_secs_f64()
    );
    wait_for(Duration::from_secs(10), || {
        (smtp.mails().len() == 2).then_some(())
    })
    .expect("a resolved mail");
    std::thread::sleep(Duration::from_secs(3));
    let notices = received.notices.lock().unwrap();
    assert_eq!(notices.len(), 2, "{notices:?}");
    assert_eq!(
        (notices[1]["state"].as_str(), &notices[1]["id"]),
        (Some("resolved"), &notices[0]["id"])
    );
    assert!(smtp.mails().iter().any(|m| m.contains("RESOLVED")));
    let overview = api("GET", "/api/v1/alerts", serde_json::json!({}));
    assert!(overview["firing"].as_array().unwrap().is_empty());
    let _ = origin.kill();
    let _ = origin.wait();
}

#[test]
fn a_mail_server_that_requires_starttls_and_a_password_takes_the_test_notice() {
    let cluster = Cluster::new("alerts-starttls");
    let (cert, key) = kakuremichi_tests::openssl_leaf(&cluster.dir, "smtp", "localhost");
    let (port, maildir) = (free_tcp_port(), cluster.dir.join("starttls-mail"));
    let script = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("smtp_server.py");
    let mut server = Command::new("python3")
        .arg(script)
        .args([port.to_string(), maildir.display().to_string()])
        .args([&cert, &key])
        .args(["alerter", "the smtp password"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("tests/smtp_server.py (aiosmtpd)");
    wait_for(Duration::from_secs(10), || {
        std::net::TcpStream::connect(("127.0.0.1", port)).ok()
    })
    .expect("the SMTP server listens");
    let channel = |password: &str| {
        let body = serde_json::json!({
            "name": "mail", "kind": "email", "smtp_server": format!("localhost:{port}"),
            "smtp_security": "starttls", "smtp_username": "alerter", "smtp_password": password,
            "smtp_ca_pem": std::fs::read_to_string(&cert).unwrap(),
            "mail_from": "kakuremichi@example.test", "mail_to": "oncall@example.test",
        });
        let made = cluster.api("POST", "/api/v1/alerts/channels", Some(&body.to_string()));
        assert_eq!(made.status, 201, "{}", made.body);
        assert!(!made.body.contains(password), "the password is never shown");
        made.json()["id"].as_str().unwrap().to_string()
    };
    let test = |id: &str| {
        cluster
            .api("POST", &format!("/api/v1/alerts/channels/{id}/test"), None)
            .json()
    };
    let wrong = test(&channel("not the password"));
    assert_eq!(wrong["delivered"], false, "{wrong}");
    let right = test(&channel("the smtp password"));
    assert_eq!(right["delivered"], true, "{right}");
    let mails: Vec<String> = std::fs::read_dir(&maildir)
        .unwrap()
        .flatten()
        .filter_map(|e| std::fs::read_to_string(e.path()).ok())
        .collect();
    assert_eq!(mails.len(), 1, "{mails:?}");
    assert!(mails[0].contains("this channel works"), "{}", mails[0]);
    let _ = Command::new("kill").arg(server.id().to_string()).status();
    let _ = server.wait();
}
