//! The API described for machines: an OpenAPI 3.1 document served at
//! `/api/v1/openapi.json`. `tests/tests/pages.rs` calls every operation it lists against the
//! real routes.

use serde_json::{json, Value};

/// An object schema with these properties, `required` among them; the API refuses others.
fn object(properties: Value, required: &[&str]) -> Value {
    json!({
        "type": "object", "properties": properties, "required": required,
        "additionalProperties": false,
    })
}

fn body(schema: Value) -> Value {
    // A body with no required field may be left out (`POST /agents` with none enrols one).
    let required = schema["required"].as_array().is_some_and(|r| !r.is_empty());
    json!({ "required": required, "content": { "application/json": { "schema": schema } } })
}

fn operation(summary: &str, request: Option<Value>, created: bool) -> Value {
    let status = if created { "201" } else { "200" };
    let mut op = json!({
        "summary": summary,
        "responses": {
            status: { "description": "done", "content": { "application/json": {} } },
            "400": { "description": "bad input; `field` names the field" },
            "401": { "description": "no or unknown token" },
            "403": { "description": "a read-only token may not change anything" },
            "404": { "description": "no such resource; `error` names it" },
            "409": { "description": "clashes with what exists; `field` names the field" },
        }
    });
    if let Some(request) = request {
        op["requestBody"] = body(request);
    }
    op
}

fn id_parameter() -> Value {
    json!([{ "name": "id", "in": "path", "required": true, "schema": { "type": "string" } }])
}

/// One node (`kind` with its article): read, rename or disable, delete.
fn node_paths(kind: &str, patch: &Value) -> Value {
    json!({
        "parameters": id_parameter(),
        "get": operation(&format!("{kind} with its state"), None, false),
        "patch": operation(&format!("rename, disable or enable {kind}"), Some(patch.clone()), false),
        "delete": operation(&format!("delete {kind} (its key stops working at once)"), None, false),
    })
}

fn rotate_key_path(kind: &str) -> Value {
    json!({
        "parameters": id_parameter(),
        "post": operation(&format!("give {kind} a new API key, shown once; the old key stops working"), None, false),
    })
}

/// The document, with `server` as the base URL.
pub fn document(server: &str) -> Value {
    let string = json!({ "type": "string" });
    let boolean = json!({ "type": "boolean" });
    let strings = json!({ "type": "array", "items": { "type": "string" } });
    // What check_name takes: 1 to 64 characters, none a control character.
    let name = json!({ "type": "string", "minLength": 1, "maxLength": 64, "pattern": "^[^\\u0000-\\u001f\\u007f-\\u009f]*$" });
    let node = object(
        json!({ "name": { "anyOf": [name, { "type": "null" }] } }),
        &[],
    );
    let node_patch = object(json!({ "name": name, "enabled": boolean }), &[]);
    let gateway_patch = object(
        json!({
            "name": name, "enabled": boolean, "draining": boolean,
            "labels": {
                "anyOf": [{ "type": "object", "additionalProperties": { "type": "string" } }, { "type": "string" }],
                "description": "{\"region\":\"tokyo\"} or \"region=tokyo,…\"",
            },
        }),
        &[],
    );
    let tunnel_fields = json!({
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
    });
    json!({
        "openapi": "3.1.0",
        "info": { "title": "kakuremichi Control API", "version": env!("CARGO_PKG_VERSION") },
        "servers": [{ "url": format!("{}/api/v1", server.trim_end_matches('/')) }],
        "components": { "securitySchemes": { "token": { "type": "http", "scheme": "bearer" } } },
        "security": [{ "token": [] }],
        "paths": {
            "/agents": {
                "get": operation("agents with their state", None, false),
                "post": operation("enrol an agent; its API key and install snippets, once", Some(node.clone()), true),
            },
            "/gateways": {
                "get": operation("gateways with their state", None, false),
                "post": operation("enrol a gateway; its API key and install snippets, once", Some(node), true),
            },
            "/agents/{id}": node_paths("an agent", &node_patch),
            "/agents/{id}/rotate-key": rotate_key_path("an agent"),
            "/gateways/{id}": node_paths("a gateway", &gateway_patch),
            "/gateways/{id}/rotate-key": rotate_key_path("a gateway"),
            "/tunnels": {
                "get": operation("tunnels", None, false),
                "post": operation("create a tunnel", Some(object(tunnel_fields.clone(), &[])), true),
            },
            "/tunnels/{id}": {
                "parameters": id_parameter(),
                "get": operation("one tunnel", None, false),
                "patch": operation("change a tunnel's fields", Some(object(tunnel_fields, &[])), false),
                "delete": operation("delete a tunnel", None, false),
            },
            "/tunnels/{id}/service-tokens": {
                "parameters": id_parameter(),
                "get": operation("a tunnel's service tokens (never the tokens themselves)", None, false),
                "post": operation("a new service token (`Authorization: Bearer kst_…` passes the tunnel's access rules); the token, once", Some(object(json!({ "name": name }), &["name"])), true),
            },
            "/tunnels/{id}/service-tokens/{token_id}": {
                "parameters": [
                    { "name": "id", "in": "path", "required": true, "schema": { "type": "string" } },
                    { "name": "token_id", "in": "path", "required": true, "schema": { "type": "string" } },
                ],
                "delete": operation("revoke a service token; gateways refuse it within a second", None, false),
            },
            "/access/rotate-keys": {
                "post": operation("new keys for tunnel logins: every tunnel session and login link made before is refused", None, false),
            },
            "/certificates": {
                "get": operation("certificates by hostname, with their state", None, false),
                "post": operation("upload a manual certificate", Some(object(json!({
                    "hostname": { "type": "string", "minLength": 1, "maxLength": 253 },
                    "certificate_pem": string, "key_pem": string,
                }), &["hostname", "certificate_pem", "key_pem"])), true),
            },
            "/certificates/{hostname}/retry": {
                "parameters": [{ "name": "hostname", "in": "path", "required": true, "schema": { "type": "string" } }],
                "post": operation("retry a failing certificate's order now", None, false),
            },
            "/tokens": {
                "get": operation("admin API tokens (never the tokens themselves)", None, false),
                "post": operation("create a token; the token, once", Some(object(json!({
                    "name": name, "expires_days": { "type": "integer", "minimum": 0 },
                    "scope": { "enum": ["admin", "read"] },
                }), &["name"])), true),
            },
            "/tokens/{id}": {
                "parameters": id_parameter(),
                "delete": operation("revoke a token", None, false),
            },
            "/users": {
                "get": operation("users", None, false),
                "post": operation("add a user; a generated password, once, unless one is given", Some(object(json!({
                    "name": { "type": "string", "pattern": "^[A-Za-z0-9._@-]{1,64}$" },
                    "role": { "enum": ["admin", "member"] },
                    "password": { "type": "string", "minLength": 10, "maxLength": 128 },
                }), &["name"])), true),
            },
            "/users/{id}": {
                "parameters": id_parameter(),
                "patch": operation("disable, enable or change the role of a user", Some(object(json!({
                    "disabled": boolean, "role": { "enum": ["admin", "member"] },
                }), &[])), false),
                "delete": operation("delete a user and end their sessions", None, false),
            },
        }
    })
}
