//! The pages say what is true: a tunnel whose origin is down shows it and the dashboard lists
//! it, a manual certificate not uploaded yet is listed until it is, saved access rules say
//! so, and an enrolment page whose snippets carry a loopback URL warns.

use kakuremichi_tests::browser::{csrf_of, log_in_admin};
use kakuremichi_tests::{free_tcp_port, openssl_leaf, wait_for, Cluster, Origin};
use std::time::Duration;

#[test]
fn a_tunnel_whose_origin_is_down_is_shown_failing_until_it_answers() {
    let mut cluster = Cluster::new("states-origin");
    cluster.add_gateway();
    let agent = cluster.add_agent();
    let port = free_tcp_port();
    cluster.create_tunnel("down.localhost", agent, &format!("127.0.0.1:{port}"));
    let admin = log_in_admin(&cluster);
    // Nothing listens on the target: the visitor gets 502, and the pages say why.
    wait_for(Duration::from_secs(10), || {
        (cluster.get(0, "down.localhost", "/").status == 502).then_some(())
    })
    .unwrap_or_else(|| panic!("no 502 for a dead origin\n{}", cluster.logs()));
    let failing = wait_for(Duration::from_secs(10), || {
        let page = admin.get("/tunnels").body;
        page.contains("502: cannot reach 127.0.0.1").then_some(page)
    })
    .unwrap_or_else(|| {
        panic!(
            "the tunnels page never showed the failing origin\n{}",
            cluster.logs()
        )
    });
    assert!(!failing.contains(">serving<"), "{failing}");
    let dashboard = admin.get("/").body;
    assert!(
        dashboard.contains("Tunnel down.localhost answers 502"),
        "{dashboard}"
    );
    assert!(!dashboard.contains("Nothing: every node"), "{dashboard}");

    // The origin comes up: the next request succeeds and the state clears.
    let _origin = Origin::start_at("states", ([127, 0, 0, 1], port).into());
    wait_for(Duration::from_secs(10), || {
        (cluster.get(0, "down.localhost", "/").status == 200).then_some(())
    })
    .expect("the tunnel answers once its origin does");
    wait_for(Duration::from_secs(10), || {
        let page = admin.get("/tunnels").body;
        page.contains("serving").then_some(())
    })
    .unwrap_or_else(|| panic!("the tunnel never showed serving\n{}", cluster.logs()));
    let dashboard = wait_for(Duration::from_secs(10), || {
        let page = admin.get("/").body;
        page.contains("Nothing: every node").then_some(page)
    });
    assert!(dashboard.is_some(), "{}", admin.get("/").body);

    // A draining gateway is degraded, and the dashboard says so.
    let gateway = cluster.gateways[0].id.clone();
    let drained = cluster.api(
        "PATCH",
        &format!("/api/v1/gateways/{gateway}"),
        Some(r#"{"draining":true}"#),
    );
    assert_eq!(drained.status, 200, "{drained:?}");
    let dashboard = wait_for(Duration::from_secs(10), || {
        let page = admin.get("/").body;
        page.contains("is degraded: draining").then_some(page)
    });
    assert!(dashboard.is_some(), "{}", admin.get("/").body);
}

#[test]
fn a_manual_certificate_is_listed_until_uploaded_then_valid() {
    let mut cluster = Cluster::new("states-manual");
    cluster.add_gateway();
    let agent = cluster.add_agent();
    let origin = Origin::start("manual-state");
    cluster.create_tunnel_with_issuer(
        "upload.localhost",
        agent,
        &origin.addr.to_string(),
        "manual",
    );
    let admin = log_in_admin(&cluster);
    let tunnels = admin.get("/tunnels").body;
    assert!(tunnels.contains("none uploaded yet"), "{tunnels}");
    let certificates = admin.get("/certificates");
    assert!(
        certificates.body.contains("upload.localhost")
            && certificates.body.contains("none uploaded yet"),
        "{}",
        certificates.body
    );
    assert!(admin
        .get("/")
        .body
        .contains("Certificate for upload.localhost: none uploaded yet"));

    // Uploaded through the page's form, as a person does.
    let (cert, key) = openssl_leaf(&cluster.dir, "upload", "upload.localhost");
    let (cert_pem, key_pem) = (
        std::fs::read_to_string(&cert).unwrap(),
        std::fs::read_to_string(&key).unwrap(),
    );
    let csrf = csrf_of(&certificates.body);
    let fields = [
        ("csrf", csrf.as_str()),
        ("hostname", "upload.localhost"),
        ("certificate_pem", cert_pem.as_str()),
        ("key_pem", key_pem.as_str()),
    ];
    let sent = admin.post("/certificates/new", &fields, Some(&cluster.control_url("")));
    assert_eq!(sent.status, 303, "{sent:?}");
    let certificates = admin.get("/certificates").body;
    assert!(
        !certificates.contains("none uploaded yet"),
        "{certificates}"
    );
    assert!(certificates.contains("valid"), "{certificates}");
    let tunnels = admin.get("/tunnels").body;
    assert!(
        tunnels.contains("valid, 29 days left") || tunnels.contains("valid, 30 days left"),
        "{tunnels}"
    );
}

#[test]
fn saved_access_rules_say_so_and_loopback_snippets_warn() {
    let mut cluster = Cluster::new("states-access");
    let agent = cluster.add_agent();
    let id = cluster.create_tunnel("rules.localhost", agent, "127.0.0.1:9");
    let admin = log_in_admin(&cluster);
    let page = admin.get(&format!("/tunnels/{id}/access")).body;
    assert!(!page.contains("Saved."), "{page}");
    let csrf = csrf_of(&page);
    let form = [
        ("csrf", csrf.as_str()),
        ("users", "root"),
        ("session_hours", "12"),
    ];
    let origin = cluster.control_url("");
    let saved = admin.post(&format!("/tunnels/{id}/access"), &form, Some(&origin));
    assert_eq!(saved.status, 303, "{saved:?}");
    assert_eq!(
        admin.header("location").as_deref(),
        Some(format!("/tunnels/{id}/access?saved=1").as_str())
    );
    let page = admin.get(&format!("/tunnels/{id}/access?saved=1")).body;
    assert!(page.contains("Saved. Every gateway applies"), "{page}");

    // This Control's public URL is a loopback address: the enrolment page says its snippets
    // work only on this machine.
    let form = admin.get("/agents/new").body;
    let csrf = csrf_of(&form);
    let enrolled = admin.post(
        "/agents/new",
        &[("csrf", csrf.as_str()), ("name", "elsewhere")],
        Some(&origin),
    );
    assert_eq!(enrolled.status, 201, "{enrolled:?}");
    assert!(
        enrolled.body.contains("a loopback address"),
        "{}",
        enrolled.body
    );
}
