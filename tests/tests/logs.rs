//! The request log with the real binaries: two gateways each keep their latest requests,
//! Control's API and Logs page ask both at once and filter them, a login's user is named,
//! and nothing secret a client sent (its Authorization header, its cookies, the query
//! string) is kept anywhere: not in the answers, not in the gateways' access log files.

use kakuremichi_tests::browser::log_in_admin;
use kakuremichi_tests::{curl, wait_for, Cluster, ShapedOrigin};
use serde_json::Value;
use std::time::Duration;

const SECRET: &str = "s3cr3t-b3ar3r-d0-n0t-l0g";

fn logs(cluster: &Cluster, query: &str) -> Value {
    let answer = cluster.api("GET", &format!("/api/v1/logs{query}"), None);
    assert_eq!(answer.status, 200, "{query}: {}", answer.body);
    answer.json()
}

fn get(cluster: &Cluster, gateway: usize, path: &str, extra: &[&str]) -> u16 {
    let node = &cluster.gateways[gateway];
    let resolve = format!("logged.localhost:{}:{}", node.http_port, node.ip);
    let url = format!("http://logged.localhost:{}{path}", node.http_port);
    let mut args = vec!["--resolve", &resolve];
    args.extend_from_slice(extra);
    args.push(&url);
    curl(&args).status
}

#[test]
fn both_gateways_logs_in_one_query_filtered_bounded_and_without_secrets() {
    let mut cluster = Cluster::new("request-log");
    let access_log = cluster.dir.join("access.jsonl");
    cluster.gateway_args = vec!["--request-log-entries".into(), "50".into()];
    cluster.add_gateway();
    cluster.gateway_args = vec!["--access-log".into(), access_log.display().to_string()];
    cluster.add_gateway();
    let origin = ShapedOrigin::start();
    let agent = cluster.add_agent();
    let tunnel = cluster.create_tunnel("logged.localhost", agent, &origin.addr.to_string());
    for gateway in 0..2 {
        wait_for(Duration::from_secs(15), || {
            (get(&cluster, gateway, "/", &[]) == 200).then_some(())
        })
        .unwrap_or_else(|| panic!("tunnel never served\n{}", cluster.logs()));
    }
    // Requests with secrets in every place a client puts them.
    let auth = format!("Authorization: Bearer {SECRET}");
    let cookie = format!("Cookie: session={SECRET}");
    let path = format!("/404/10?token={SECRET}");
    assert_eq!(get(&cluster, 1, &path, &["-H", &auth, "-H", &cookie]), 404);
    assert_eq!(get(&cluster, 1, "/503/10", &["-H", &auth]), 503);
    for i in 0..120 {
        assert_eq!(get(&cluster, i % 2, &format!("/200/{i}"), &[]), 200);
    }

    let all = logs(&cluster, "?limit=500");
    assert_eq!(
        (
            all["gateways_asked"].as_u64(),
            all["gateways_answered"].as_u64()
        ),
        (Some(2), Some(2)),
        "{all}"
    );
    let entries = all["entries"].as_array().unwrap();
    let through = |name: &str| entries.iter().filter(|e| e["gateway"] == name).count();
    let (first, second) = (
        cluster.gateways[0].id.clone(),
        cluster.gateways[1].id.clone(),
    );
    assert_eq!(through(&first), 50, "the first gateway keeps 50 per tunnel");
    assert!(through(&second) > 50, "the second keeps its default 1,000");
    let times: Vec<u64> = entries
        .iter()
        .map(|e| e["time_ms"].as_u64().unwrap())
        .collect();
    assert!(times.windows(2).all(|w| w[0] >= w[1]), "newest first");
    let newest = &entries[0];
    assert_eq!(newest["path"], "/200/119");
    assert_eq!(newest["tunnel_id"], tunnel.as_str());
    assert_eq!(newest["tunnel"], "logged.localhost");
    assert_eq!(newest["bytes_out"], 119);
    let agent_name = cluster.node_status("agent", &cluster.agents[agent].id)["name"].clone();
    assert_eq!(newest["agent"], agent_name, "{newest}");

    // Filters: status class, tunnel, client, a window.
    let errors = logs(&cluster, "?status=5");
    let errors = errors["entries"].as_array().unwrap();
    assert_eq!(errors.len(), 1, "{errors:?}");
    assert_eq!(
        (errors[0]["status"].as_u64(), &errors[0]["gateway"]),
        (Some(503), &Value::from(second.as_str()))
    );
    let not_found = logs(&cluster, &format!("?status=4&tunnel={tunnel}"));
    assert_eq!(
        not_found["entries"][0]["path"], "/404/10",
        "the path without its query"
    );
    assert_eq!(
        logs(&cluster, "?client=192.0.2.1")["entries"]
            .as_array()
            .unwrap()
            .len(),
        0
    );
    assert_eq!(
        logs(&cluster, "?client=127.0.0.1&limit=5")["entries"]
            .as_array()
            .unwrap()
            .len(),
        5
    );
    assert_eq!(
        cluster.api("GET", "/api/v1/logs?status=7", None).status,
        400
    );

    // Nothing secret anywhere: the API's answer, the page, the access log file.
    let browser = log_in_admin(&cluster);
    let page = browser.get("/logs?status=4");
    assert_eq!(page.status, 200);
    assert!(
        page.body.contains("/404/10") && page.body.contains("2 gateways"),
        "{}",
        page.body
    );
    let file = wait_for(Duration::from_secs(5), || {
        let text = std::fs::read_to_string(&access_log).ok()?;
        (text.lines().count() >= 61).then_some(text)
    })
    .expect("the second gateway's access log has its requests");
    for line in file.lines() {
        serde_json::from_str::<Value>(line).expect("each line is JSON");
    }
    for (what, text) in [
        ("the API", all.to_string()),
        ("the page", page.body),
        ("the access log", file),
    ] {
        assert!(
            !text.contains(SECRET),
            "{what} holds a secret the client sent"
        );
    }
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(&access_log).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600, "the access log is the gateway's alone");

    // A tunnel that opts in keeps the query string and named headers, secrets redacted; a
    // header that carries credentials cannot be asked for.
    let refused = cluster.api(
        "PATCH",
        &format!("/api/v1/tunnels/{tunnel}"),
        Some(r#"{"request_log":{"headers":["cookie"]}}"#),
    );
    assert_eq!(
        (refused.status, refused.json()["field"].as_str()),
        (400, Some("request_log")),
        "{}",
        refused.body
    );
    let details = r#"{"request_log":{"query":true,"headers":["user-agent"],"redact":["otp"]}}"#;
    let changed = cluster.api("PATCH", &format!("/api/v1/tunnels/{tunnel}"), Some(details));
    assert_eq!(changed.status, 200, "{}", changed.body);
    let detailed = format!("/200/1?page=2&token={SECRET}&OTP={SECRET}");
    wait_for(Duration::from_secs(5), || {
        assert_eq!(
            get(&cluster, 1, &detailed, &["-A", "probe/1", "-H", &auth]),
            200
        );
        let found = logs(&cluster, "?limit=1");
        (found["entries"][0]["query"].is_string()).then_some(())
    })
    .expect("the gateways keep the query once the tunnel asks");
    let newest = logs(&cluster, "?limit=1")["entries"][0].clone();
    assert_eq!(
        newest["query"], "page=2&token=REDACTED&OTP=REDACTED",
        "{newest}"
    );
    assert_eq!(
        newest["headers"],
        serde_json::json!([["user-agent", "probe/1"]]),
        "{newest}"
    );
    assert!(!logs(&cluster, "").to_string().contains(SECRET));

    // A gateway that stops answering leaves the others' entries, said so.
    cluster.gateways[0].kill9();
    let partial = logs(&cluster, "");
    assert!(partial["entries"]
        .as_array()
        .unwrap()
        .iter()
        .all(|e| e["gateway"] == second.as_str()));
}
