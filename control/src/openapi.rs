//! The API described for machines: an OpenAPI 3.1 document served at
//! `/api/v1/openapi.json`, built from the route table ([`crate::routes`]): every `/api/v1`
//! route and method is in it, with the token it needs, and [`DOCS`] says what each does and
//! takes (a test holds the two to each other). `tests/tests/pages.rs` calls every operation
//! it lists against the real routes.

use crate::api::accounts::{NewToken, NewUser, UserChange};
use crate::api::certificates::Upload;
use crate::api::nodes::NodeChange;
use crate::model::TokenScope;
use crate::routes::{self, Handler, Section};
use crate::spec::{schema_of, Name, TunnelFields};
use serde_json::{json, Map, Value};

/// What one operation takes as its body: the schema of the serde type its handler reads.
type Takes = Option<fn() -> Value>;

const NOTHING: Takes = None;
const NODE: Takes = Some(schema_of::<Name>);
const NODE_CHANGE: Takes = Some(schema_of::<NodeChange>);
const TUNNEL: Takes = Some(schema_of::<TunnelFields>);
const CERTIFICATE: Takes = Some(schema_of::<Upload>);
const TOKEN: Takes = Some(schema_of::<NewToken>);
const USER: Takes = Some(schema_of::<NewUser>);
const USER_CHANGE: Takes = Some(schema_of::<UserChange>);

/// One operation's description: method, path under `/api/v1`, summary, body, and whether it
/// answers 201.
struct Doc(&'static str, &'static str, &'static str, Takes, bool);

const RULE: Takes = Some(schema_of::<crate::alerts::spec::NewRule>);
const CHANNEL: Takes = Some(schema_of::<crate::alerts::spec::NewChannel>);

const DOCS: &[Doc] = &[
    Doc("GET", "/alerts", "alert rules, channels (never their secrets), what fires, the latest deliveries", NOTHING, false),
    Doc("POST", "/alerts/rules", "a new alert rule", RULE, true),
    Doc("DELETE", "/alerts/rules/{id}", "delete an alert rule", NOTHING, false),
    Doc("POST", "/alerts/channels", "a new alert channel: webhook (HMAC-signed), ntfy, gotify, discord, slack or email", CHANNEL, true),
    Doc("DELETE", "/alerts/channels/{id}", "delete an alert channel", NOTHING, false),
    Doc("POST", "/alerts/channels/{id}/test", "send the channel a test notice now; whether it was taken", NOTHING, false),
    Doc("GET", "/agents", "agents with their state", NOTHING, false),
    Doc("POST", "/agents", "enrol an agent; its API key and install snippets, once", NODE, true),
    Doc("GET", "/agents/{id}", "an agent with its state", NOTHING, false),
    Doc("PATCH", "/agents/{id}", "rename, disable or enable an agent", NODE_CHANGE, false),
    Doc("DELETE", "/agents/{id}", "delete an agent (its key stops working at once)", NOTHING, false),
    Doc("POST", "/agents/{id}/rotate-key", "give an agent a new API key, shown once; the old key stops working", NOTHING, false),
    Doc("GET", "/agents/{id}/traffic", "traffic of the agent's tunnels: requests, status classes, bytes, connections, denials, failures, p50/p99 latency per step of `?range=` 1h (default), 24h, 7d or 90d", NOTHING, false),
    Doc("GET", "/gateways", "gateways with their state", NOTHING, false),
    Doc("POST", "/gateways", "enrol a gateway; its API key and install snippets, once", NODE, true),
    Doc("GET", "/gateways/{id}", "a gateway with its state", NOTHING, false),
    Doc("PATCH", "/gateways/{id}", "rename, disable, enable, label or drain a gateway", NODE_CHANGE, false),
    Doc("DELETE", "/gateways/{id}", "delete a gateway (its key stops working at once)", NOTHING, false),
    Doc("POST", "/gateways/{id}/rotate-key", "give a gateway a new API key, shown once; the old key stops working", NOTHING, false),
    Doc("GET", "/gateways/{id}/traffic", "traffic through the gateway, every tunnel, per step of `?range=` 1h (default), 24h, 7d or 90d", NOTHING, false),
    Doc("GET", "/traffic", "traffic of every tunnel through every gateway, per step of `?range=` 1h (default), 24h, 7d or 90d", NOTHING, false),
    Doc("GET", "/logs", "the latest requests of every gateway's log, newest first; `?tunnel=` id, `status=` 1-5 (the class), `client=` address, `user=` name, `minutes=` back, `limit=` at most 500", NOTHING, false),
    Doc("GET", "/tunnels", "tunnels", NOTHING, false),
    Doc("POST", "/tunnels", "create a tunnel", TUNNEL, true),
    Doc("GET", "/tunnels/{id}", "one tunnel", NOTHING, false),
    Doc("PATCH", "/tunnels/{id}", "change a tunnel's fields", TUNNEL, false),
    Doc("DELETE", "/tunnels/{id}", "delete a tunnel", NOTHING, false),
    Doc("GET", "/tunnels/{id}/traffic", "the tunnel's traffic through every gateway, per step of `?range=` 1h (default), 24h, 7d or 90d", NOTHING, false),
    Doc("GET", "/tunnels/{id}/service-tokens", "a tunnel's service tokens (never the tokens themselves)", NOTHING, false),
    Doc("POST", "/tunnels/{id}/service-tokens", "a new service token (`Authorization: Bearer kst_…` passes the tunnel's access rules); the token, once", NODE, true),
    Doc("DELETE", "/tunnels/{id}/service-tokens/{token_id}", "revoke a service token; gateways refuse it within a second", NOTHING, false),
    Doc("POST", "/access/rotate-keys", "new keys for tunnel logins: every tunnel session and login link made before is refused", NOTHING, false),
    Doc("GET", "/certificates", "certificates by hostname, with their state", NOTHING, false),
    Doc("POST", "/certificates", "upload a manual certificate", CERTIFICATE, true),
    Doc("POST", "/certificates/{hostname}/retry", "retry a failing certificate's order now", NOTHING, false),
    Doc("GET", "/tokens", "admin API tokens (never the tokens themselves)", NOTHING, false),
    Doc("POST", "/tokens", "create a token; the token, once", TOKEN, true),
    Doc("DELETE", "/tokens/{id}", "revoke a token", NOTHING, false),
    Doc("GET", "/users", "users", NOTHING, false),
    Doc("POST", "/users", "add a user; a generated password, once, unless one is given", USER, true),
    Doc("PATCH", "/users/{id}", "disable, enable or change the role of a user", USER_CHANGE, false),
    Doc("DELETE", "/users/{id}", "delete a user and end their sessions", NOTHING, false),
];

/// The description of `method path`, if [`DOCS`] has one.
fn doc(method: &str, path: &str) -> Option<&'static Doc> {
    DOCS.iter().find(|d| d.0 == method && d.1 == path)
}

fn operation(doc: Option<&Doc>, scope: TokenScope) -> Value {
    let (summary, takes, created) = match doc {
        Some(Doc(_, _, summary, takes, created)) => (*summary, *takes, *created),
        None => ("(not described)", NOTHING, false),
    };
    let status = if created { "201" } else { "200" };
    let mut op = json!({
        "summary": summary,
        "description": match scope {
            TokenScope::Read => "Any API token may call it.",
            TokenScope::Admin => "Needs an admin token; a read-only token gets 403.",
        },
        "responses": {
            status: { "description": "done", "content": { "application/json": {} } },
            "400": { "description": "bad input; `field` names the field" },
            "401": { "description": "no or unknown token" },
            "403": { "description": "a read-only token may not change anything" },
            "404": { "description": "no such resource; `error` names it" },
            "409": { "description": "clashes with what exists; `field` names the field" },
        }
    });
    if let Some(schema) = takes.map(|schema| schema()) {
        // A body with no required field may be left out (`POST /agents` with none enrols one).
        let required = schema["required"].as_array().is_some_and(|r| !r.is_empty());
        op["requestBody"] = json!({ "required": required, "content": { "application/json": { "schema": schema } } });
    }
    op
}

/// The `{name}` segments of a path pattern as OpenAPI path parameters.
fn parameters(path: &str) -> Vec<Value> {
    path.split('/')
        .filter_map(|s| s.strip_prefix('{')?.strip_suffix('}'))
        .map(|name| json!({ "name": name, "in": "path", "required": true, "schema": { "type": "string" } }))
        .collect()
}

/// The `/api/v1` operations of the route table that need a token: (path under `/api/v1`,
/// method, the token's scope).
fn operations() -> impl Iterator<Item = (&'static str, &'static str, TokenScope)> {
    routes::table()
        .routes
        .iter()
        .filter(|route| route.section == Section::Api)
        .filter_map(|route| Some((route.path.strip_prefix("/api/v1")?, route)))
        .flat_map(|(path, route)| {
            route
                .methods
                .iter()
                .filter_map(move |(method, handler)| match handler {
                    Handler::Api(scope, _) | Handler::WaitingApi(scope, _) => {
                        Some((path, method.as_str(), *scope))
                    }
                    _ => None,
                })
        })
}

/// The document, with `server` as the base URL.
pub fn document(server: &str) -> Value {
    let mut paths = Map::new();
    for (path, method, scope) in operations() {
        let item = paths
            .entry(path)
            .or_insert_with(|| json!({ "parameters": parameters(path) }));
        item[method.to_ascii_lowercase()] = operation(doc(method, path), scope);
    }
    json!({
        "openapi": "3.1.0",
        "info": { "title": "kakuremichi Control API", "version": env!("CARGO_PKG_VERSION") },
        "servers": [{ "url": format!("{}/api/v1", server.trim_end_matches('/')) }],
        "components": { "securitySchemes": { "token": { "type": "http", "scheme": "bearer" } } },
        "security": [{ "token": [] }],
        "paths": paths,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_api_route_is_described_and_every_description_is_a_route() {
        let served: Vec<(&str, &str)> = operations().map(|(p, m, _)| (m, p)).collect();
        for (method, path) in &served {
            assert!(
                doc(method, path).is_some(),
                "{method} {path} is not in DOCS"
            );
        }
        for Doc(method, path, ..) in DOCS {
            assert!(
                served.contains(&(*method, *path)),
                "DOCS has {method} {path}, which no route serves"
            );
        }
        assert_eq!(served.len(), DOCS.len());
    }

    #[test]
    fn bodies_are_the_schemas_of_the_types_the_handlers_read() {
        let document = document("https://control.example");
        let body = |path: &str, method: &str| {
            document["paths"][path][method]["requestBody"]["content"]["application/json"]["schema"]
                .clone()
        };
        let tunnel = body("/tunnels", "post");
        let text = tunnel.to_string();
        assert!(!text.contains("$ref") && !text.contains("$defs"), "{text}");
        assert_eq!(tunnel["additionalProperties"], false);
        for field in [
            "kind",
            "hostname",
            "port",
            "ports",
            "agents",
            "origin",
            "path_prefix",
        ] {
            assert!(tunnel["properties"].get(field).is_some(), "{field}: {text}");
        }
        let origin = &tunnel["properties"]["origin"];
        assert!(origin.to_string().contains("tls_verify"), "{origin}");
        assert_eq!(body("/tunnels/{id}", "patch"), tunnel);
        let token = body("/tokens", "post");
        assert_eq!(token["required"], json!(["name"]));
        assert_eq!(
            document["paths"]["/tokens"]["post"]["requestBody"]["required"],
            true
        );
    }

    #[test]
    fn the_document_lists_each_path_with_its_parameters_and_token() {
        let document = document("https://control.example");
        let item = &document["paths"]["/tunnels/{id}/service-tokens/{token_id}"];
        let names: Vec<&str> = item["parameters"]
            .as_array()
            .unwrap()
            .iter()
            .filter_map(|p| p["name"].as_str())
            .collect();
        assert_eq!(names, ["id", "token_id"]);
        assert_eq!(
            item["delete"]["description"],
            "Needs an admin token; a read-only token gets 403."
        );
        assert_eq!(
            document["paths"]["/tunnels"]["get"]["description"],
            "Any API token may call it."
        );
        assert!(document["paths"].get("/openapi.json").is_none());
    }
}
