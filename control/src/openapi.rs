//! The API described for machines: an OpenAPI 3.1 document served at
//! `/api/v1/openapi.json`, built from the route table ([`crate::routes`]): every `/api/v1`
//! route and method is in it, with the token it needs, and [`DOCS`] says what each does and
//! takes (a test holds the two to each other). `tests/tests/pages.rs` calls every operation
//! it lists against the real routes.

use crate::model::TokenScope;
use crate::routes::{self, Handler, Section};
use serde_json::{json, Map, Value};

/// What one operation takes as its body.
#[derive(Clone, Copy)]
enum Takes {
    Nothing,
    Node,
    NodePatch,
    GatewayPatch,
    Tunnel,
    Name,
    Certificate,
    Token,
    User,
    UserPatch,
}

/// One operation's description: method, path under `/api/v1`, summary, body, and whether it
/// answers 201.
struct Doc(&'static str, &'static str, &'static str, Takes, bool);

const DOCS: &[Doc] = &[
    Doc("GET", "/agents", "agents with their state", Takes::Nothing, false),
    Doc("POST", "/agents", "enrol an agent; its API key and install snippets, once", Takes::Node, true),
    Doc("GET", "/agents/{id}", "an agent with its state", Takes::Nothing, false),
    Doc("PATCH", "/agents/{id}", "rename, disable or enable an agent", Takes::NodePatch, false),
    Doc("DELETE", "/agents/{id}", "delete an agent (its key stops working at once)", Takes::Nothing, false),
    Doc("POST", "/agents/{id}/rotate-key", "give an agent a new API key, shown once; the old key stops working", Takes::Nothing, false),
    Doc("GET", "/gateways", "gateways with their state", Takes::Nothing, false),
    Doc("POST", "/gateways", "enrol a gateway; its API key and install snippets, once", Takes::Node, true),
    Doc("GET", "/gateways/{id}", "a gateway with its state", Takes::Nothing, false),
    Doc("PATCH", "/gateways/{id}", "rename, disable, enable, label or drain a gateway", Takes::GatewayPatch, false),
    Doc("DELETE", "/gateways/{id}", "delete a gateway (its key stops working at once)", Takes::Nothing, false),
    Doc("POST", "/gateways/{id}/rotate-key", "give a gateway a new API key, shown once; the old key stops working", Takes::Nothing, false),
    Doc("GET", "/tunnels", "tunnels", Takes::Nothing, false),
    Doc("POST", "/tunnels", "create a tunnel", Takes::Tunnel, true),
    Doc("GET", "/tunnels/{id}", "one tunnel", Takes::Nothing, false),
    Doc("PATCH", "/tunnels/{id}", "change a tunnel's fields", Takes::Tunnel, false),
    Doc("DELETE", "/tunnels/{id}", "delete a tunnel", Takes::Nothing, false),
    Doc("GET", "/tunnels/{id}/service-tokens", "a tunnel's service tokens (never the tokens themselves)", Takes::Nothing, false),
    Doc("POST", "/tunnels/{id}/service-tokens", "a new service token (`Authorization: Bearer kst_…` passes the tunnel's access rules); the token, once", Takes::Name, true),
    Doc("DELETE", "/tunnels/{id}/service-tokens/{token_id}", "revoke a service token; gateways refuse it within a second", Takes::Nothing, false),
    Doc("POST", "/access/rotate-keys", "new keys for tunnel logins: every tunnel session and login link made before is refused", Takes::Nothing, false),
    Doc("GET", "/certificates", "certificates by hostname, with their state", Takes::Nothing, false),
    Doc("POST", "/certificates", "upload a manual certificate", Takes::Certificate, true),
    Doc("POST", "/certificates/{hostname}/retry", "retry a failing certificate's order now", Takes::Nothing, false),
    Doc("GET", "/tokens", "admin API tokens (never the tokens themselves)", Takes::Nothing, false),
    Doc("POST", "/tokens", "create a token; the token, once", Takes::Token, true),
    Doc("DELETE", "/tokens/{id}", "revoke a token", Takes::Nothing, false),
    Doc("GET", "/users", "users", Takes::Nothing, false),
    Doc("POST", "/users", "add a user; a generated password, once, unless one is given", Takes::User, true),
    Doc("PATCH", "/users/{id}", "disable, enable or change the role of a user", Takes::UserPatch, false),
    Doc("DELETE", "/users/{id}", "delete a user and end their sessions", Takes::Nothing, false),
];

/// An object schema with these properties, `required` among them; the API refuses others.
fn object(properties: Value, required: &[&str]) -> Value {
    json!({
        "type": "object", "properties": properties, "required": required,
        "additionalProperties": false,
    })
}

/// The schema of a body.
fn schema(takes: Takes) -> Option<Value> {
    let string = json!({ "type": "string" });
    let boolean = json!({ "type": "boolean" });
    let strings = json!({ "type": "array", "items": { "type": "string" } });
    // What check_name takes: 1 to 64 characters, none a control character.
    let name = json!({ "type": "string", "minLength": 1, "maxLength": 64, "pattern": "^[^\\u0000-\\u001f\\u007f-\\u009f]*$" });
    Some(match takes {
        Takes::Nothing => return None,
        Takes::Node => object(
            json!({ "name": { "anyOf": [name, { "type": "null" }] } }),
            &[],
        ),
        Takes::NodePatch => object(json!({ "name": name, "enabled": boolean }), &[]),
        Takes::GatewayPatch => object(
            json!({
                "name": name, "enabled": boolean, "draining": boolean,
                "labels": {
                    "anyOf": [{ "type": "object", "additionalProperties": { "type": "string" } }, { "type": "string" }],
                    "description": "{\"region\":\"tokyo\"} or \"region=tokyo,…\"",
                },
            }),
            &[],
        ),
        Takes::Tunnel => object(
            json!({
                "hostname": string, "agent": string, "target": string, "enabled": boolean,
                "issuer": { "enum": ["acme", "internal", "manual", "none"] },
                "kind": { "enum": ["http", "tls", "tcp", "udp"] },
                "port": { "type": "integer", "minimum": 1, "maximum": 65535 },
                "ports": { "type": ["string", "integer"], "description": "\"first-last\", at most 1000 ports" },
                "path_prefix": string,
                "agents": {
                    "type": "array", "maxItems": 8,
                    "description": "instead of agent and target: every agent serving the tunnel, the first taking their place",
                    "items": object(json!({ "agent": string, "target": string }), &["agent", "target"]),
                },
                "gateways": { "type": ["string", "array"], "description": "\"all\", gateway ids, or a label selector such as \"region=tokyo\"" },
                "proxy_protocol": { "enum": ["v1", "v2", "none"] },
                "origin": object(json!({
                    "tls_verify": boolean, "ca_pem": { "type": ["string", "null"] },
                    "server_name": { "type": ["string", "null"] }, "host_header": { "type": ["string", "null"] },
                    "connect_timeout_secs": { "type": ["integer", "null"], "minimum": 1, "maximum": 300 },
                    "bad_gateway_page": { "type": ["string", "null"] }, "not_found_page": { "type": ["string", "null"] },
                }), &[]),
                "access": object(json!({
                    "users": strings, "roles": strings, "password": { "type": ["string", "null"] },
                    "allow_ips": strings, "deny_ips": strings, "bypass": strings,
                    "session_hours": { "type": "integer", "minimum": 1 },
                }), &[]),
            }),
            &[],
        ),
        Takes::Name => object(json!({ "name": name }), &["name"]),
        Takes::Certificate => object(
            json!({
                "hostname": { "type": "string", "minLength": 1, "maxLength": 253 },
                "certificate_pem": string, "key_pem": string,
            }),
            &["hostname", "certificate_pem", "key_pem"],
        ),
        Takes::Token => object(
            json!({
                "name": name, "expires_days": { "type": "integer", "minimum": 0 },
                "scope": { "enum": ["admin", "read"] },
            }),
            &["name"],
        ),
        Takes::User => object(
            json!({
                "name": { "type": "string", "pattern": "^[A-Za-z0-9._@-]{1,64}$" },
                "role": { "enum": ["admin", "member"] },
                "password": { "type": "string", "minLength": 10, "maxLength": 128 },
            }),
            &["name"],
        ),
        Takes::UserPatch => object(
            json!({
                "disabled": boolean, "role": { "enum": ["admin", "member"] },
            }),
            &[],
        ),
    })
}

/// The description of `method path`, if [`DOCS`] has one.
fn doc(method: &str, path: &str) -> Option<&'static Doc> {
    DOCS.iter().find(|d| d.0 == method && d.1 == path)
}

fn operation(doc: Option<&Doc>, scope: TokenScope) -> Value {
    let (summary, takes, created) = match doc {
        Some(Doc(_, _, summary, takes, created)) => (*summary, *takes, *created),
        None => ("(not described)", Takes::Nothing, false),
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
    if let Some(schema) = schema(takes) {
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
                    Handler::Api(scope, _) => Some((path, method.as_str(), *scope)),
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
