use super::*;
use serde_json::json;

fn refused(body: Value) -> (String, String) {
    let e = read::<TunnelFields>(body).unwrap_err();
    (e.field().unwrap_or_default().to_string(), e.reason())
}

#[test]
fn errors_name_the_field_at_fault() {
    assert_eq!(refused(json!({"hostname": 5})).0, "hostname");
    assert_eq!(refused(json!({"port": 70000})).0, "port");
    assert_eq!(
        refused(json!({"origin": {"tls_verify": "no"}})).0,
        "origin.tls_verify"
    );
    assert_eq!(
        refused(json!({"origin": {"tls_verfy": false}})),
        ("origin.tls_verfy".into(), "unknown field".into())
    );
    assert_eq!(
        refused(json!({"hostnme": "a.example"})),
        ("hostnme".into(), "unknown field".into())
    );
    assert_eq!(
        refused(json!({"agents": [{"agent": "agt_1"}]})),
        ("agents[0].target".into(), "is required".into())
    );
    assert_eq!(
        read::<Name>(json!({"name": []})).unwrap_err().field(),
        Some("name")
    );
    let kind = refused(json!({"kind": "smtp"}));
    assert_eq!(kind.0, "kind");
    assert!(kind.1.contains("`tcp`"), "{}", kind.1);
}

#[test]
fn null_clears_an_origin_setting_and_absent_keeps_it() {
    let fields: OriginFields =
        read(json!({"host_header": null, "server_name": "a.example"})).unwrap();
    let mut origin = OriginSettings {
        host_header: Some("old.example".into()),
        connect_timeout_secs: Some(9),
        ..OriginSettings::default()
    };
    fields.apply(&mut origin);
    assert_eq!(origin.host_header, None);
    assert_eq!(origin.server_name.as_deref(), Some("a.example"));
    assert_eq!(origin.connect_timeout_secs, Some(9));
}

#[test]
fn a_tunnel_sent_back_as_the_api_shows_it_is_unchanged() {
    let body = json!({
        "kind": "http", "hostname": "shop.example.com", "path_prefix": "/api",
        "agents": [{"agent": "agt_1", "target": "https://10.0.0.5:8443"},
                   {"agent": "agt_2", "target": "https://10.0.0.6:8443"}],
        "origin": {"tls_verify": false, "host_header": "shop.internal", "connect_timeout_secs": 3},
        "proxy_protocol": "none", "gateways": "region=tokyo", "enabled": false,
        "access": {"users": ["alice"], "bypass": ["/health"]},
    });
    let spec = read::<TunnelFields>(body)
        .unwrap()
        .build(None, Issuer::Internal, &[])
        .unwrap();
    assert_eq!(spec.issuer, Issuer::Internal);
    assert_eq!(spec.replicas.len(), 1);
    assert_eq!(spec.path_prefix.as_deref(), Some("/api"));
    let mut shown = serde_json::to_value(TunnelFields::of(&spec)).unwrap();
    // What the API shows of access is not what it takes (service tokens, a password's
    // presence); the rest goes back as it came.
    shown.as_object_mut().unwrap().remove("access");
    let again = read::<TunnelFields>(shown)
        .unwrap()
        .build(Some(&spec), Issuer::Acme, &[])
        .unwrap();
    assert_eq!(again, spec);
}

#[test]
fn a_change_names_only_what_changes_and_kind_is_fixed() {
    let new = json!({"kind": "tcp", "port": 15432, "agent": "agt_1", "target": "127.0.0.1:5432"});
    let spec = read::<TunnelFields>(new)
        .unwrap()
        .build(None, Issuer::Acme, &[])
        .unwrap();
    assert_eq!(
        spec.issuer,
        Issuer::None,
        "a new port tunnel has no certificate"
    );
    let change = read::<TunnelFields>(json!({"enabled": false})).unwrap();
    let changed = change.build(Some(&spec), Issuer::Acme, &[]).unwrap();
    assert_eq!(
        changed,
        TunnelSpec {
            enabled: false,
            ..spec.clone()
        }
    );
    let kind = read::<TunnelFields>(json!({"kind": "udp"})).unwrap();
    assert_eq!(
        kind.build(Some(&spec), Issuer::Acme, &[])
            .unwrap_err()
            .field(),
        Some("kind")
    );
    let missing = read::<TunnelFields>(json!({"hostname": "a.example.com"})).unwrap();
    assert_eq!(
        missing.build(None, Issuer::Acme, &[]).unwrap_err().field(),
        Some("agent")
    );
}

#[test]
fn health_checks_are_checked_with_their_reasons() {
    let build = |body: serde_json::Value| {
        let fields = read::<TunnelFields>(body).unwrap();
        fields.build(None, Issuer::Acme, &[])
    };
    let base = |origin: serde_json::Value, target: &str| json!({"hostname": "app.example.com", "agent": "agt_1", "target": target, "origin": origin});
    let spec = build(base(
        json!({"health_path": "/healthz", "health_status": 204, "health_interval_secs": 5}),
        "127.0.0.1:8080",
    ))
    .unwrap();
    let check = spec.origin.health_check().unwrap();
    assert_eq!(
        (
            check.interval_secs,
            check.http_path.as_deref(),
            check.expect_status
        ),
        (5, Some("/healthz"), Some(204))
    );
    assert_eq!(
        build(base(json!({}), "127.0.0.1:8080"))
            .unwrap()
            .origin
            .health_check(),
        None,
        "the agent's default"
    );
    for (origin, target, why) in [
        (
            json!({"health_path": "healthz"}),
            "127.0.0.1:8080",
            "starting with /",
        ),
        (
            json!({"health_path": "/a b"}),
            "127.0.0.1:8080",
            "without spaces",
        ),
        (json!({"health_status": 99}), "127.0.0.1:8080", "100 to 599"),
        (
            json!({"health_interval_secs": 4000}),
            "127.0.0.1:8080",
            "3600",
        ),
        (
            json!({"health_path": "/"}),
            "https://127.0.0.1:8443",
            "plain-HTTP",
        ),
    ] {
        let error = build(base(origin.clone(), target))
            .and_then(|spec| spec.origin.check(spec.kind).map(|_| spec));
        let error = error.expect_err(&origin.to_string()).to_string();
        assert!(error.contains(why), "{origin}: {error}");
    }
}
