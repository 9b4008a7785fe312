//! Agents and gateways: list, enrol (the key shown once), read, rename, disable, label or
//! drain, rotate the key of, delete.

use super::Json;
use crate::error::Error;
use crate::model::{NodeRecord, State};
use crate::routes::{ApiResult, Call};
use crate::Control;
use kakuremichi_proto::ids::NodeKind;
use serde_json::{json, Value};

pub fn list(call: &Call, kind: NodeKind) -> ApiResult {
    let control = &call.control;
    let state = control.store.state()?;
    let nodes = state
        .nodes
        .iter()
        .filter(|n| n.kind == kind)
        .map(|n| node_json(control, &state, n))
        .collect();
    Ok((200, Value::Array(nodes)))
}

pub fn create(call: &Call, body: Json, kind: NodeKind) -> ApiResult {
    let mut fields = body.fields()?;
    let name = fields
        .string("name")?
        .unwrap_or_else(|| kind.as_str().to_string());
    crate::model::check_name(&name).map_err(|why| Error::invalid("name", why))?;
    fields.finish()?;
    let (record, api_key) = call.control.store.create_node(kind, name)?;
    Ok((201, with_key(&call.control, &record, &api_key)))
}

/// The node of `kind` the path names, with the store's state it was found in.
fn find(call: &Call, kind: NodeKind) -> Result<(State, NodeRecord), Error> {
    let state = call.control.store.state()?;
    let id = call.param("id");
    let node = state
        .nodes
        .iter()
        .find(|n| n.id == id && n.kind == kind)
        .cloned()
        .ok_or_else(|| Error::not_found(kind.as_str(), id))?;
    Ok((state, node))
}

pub fn get(call: &Call, kind: NodeKind) -> ApiResult {
    let (state, node) = find(call, kind)?;
    Ok((200, node_json(&call.control, &state, &node)))
}

/// Rename, enable or disable a node; label or drain a gateway.
pub fn change(call: &Call, body: Json, kind: NodeKind) -> ApiResult {
    let control = &call.control;
    find(call, kind)?;
    let mut fields = body.fields()?;
    let name = fields.string("name")?;
    if let Some(name) = &name {
        crate::model::check_name(name).map_err(|why| Error::invalid("name", why))?;
    }
    let enabled = fields.boolean("enabled")?;
    let gateway_only = |field: &str| match kind {
        NodeKind::Gateway => Ok(()),
        NodeKind::Agent => Err(Error::invalid(field, "only gateways have it")),
    };
    let labels = match fields.take("labels") {
        Some(value) => {
            gateway_only("labels")?;
            Some(crate::fleet::labels_from_json(&value)?)
        }
        None => None,
    };
    let draining = fields.boolean("draining")?;
    if draining.is_some() {
        gateway_only("draining")?;
    }
    fields.finish()?;
    let node = control.store.update_node(call.param("id"), |node| {
        node.name = name.unwrap_or_else(|| node.name.clone());
        node.disabled = enabled.map_or(node.disabled, |enabled| !enabled);
        node.labels = labels.unwrap_or_else(|| node.labels.clone());
        node.draining = draining.unwrap_or(node.draining);
    })?;
    Ok((200, node_json(control, &control.store.state()?, &node)))
}

pub fn rotate_key(call: &Call, kind: NodeKind) -> ApiResult {
    find(call, kind)?;
    let (node, api_key) = call.control.store.rotate_node_key(call.param("id"))?;
    Ok((200, with_key(&call.control, &node, &api_key)))
}

pub fn delete(call: &Call, kind: NodeKind) -> ApiResult {
    let (_, node) = find(call, kind)?;
    call.control.store.delete_node(&node.id)?;
    Ok((200, json!({ "deleted": node.id })))
}

/// A node's JSON with its new API key and the install snippets that carry it: shown once.
fn with_key(control: &Control, node: &NodeRecord, api_key: &str) -> Value {
    let mut body = match control.store.state() {
        Ok(state) => node_json(control, &state, node),
        Err(e) => json!({ "id": node.id, "store": e.to_string() }),
    };
    body["api_key"] = json!(api_key);
    body["install"] = Value::Object(
        crate::install::snippets(
            node.kind,
            &control.public_url,
            api_key,
            !control.releases.is_empty(),
        )
        .into_iter()
        .map(|snippet| (snippet.key.to_string(), Value::String(snippet.text)))
        .collect(),
    );
    body
}

/// A node as the API shows it; `state` is the store's, for its health against its peers.
fn node_json(control: &Control, state: &State, node: &NodeRecord) -> Value {
    let presence = control.hub.presence(&node.id);
    let (health, health_reason) = crate::fleet::health_now(&control.hub, state, node);
    let mut value = json!({
        "id": node.id,
        "name": node.name,
        "overlay_ip": node.overlay_ip.to_string(),
        "public_key": node.public_key.map(|k| k.to_string()),
        "version": node.version,
        "allow_targets": node.allow_targets,
        "enabled": !node.disabled,
        "online": presence.online,
        "health": health.as_str(),
        "health_reason": health_reason,
        "last_seen": presence.last_seen,
        "created_at": node.created_at,
    });
    if node.kind == NodeKind::Gateway {
        value["wireguard_endpoint"] = json!(node.wireguard_endpoint);
        value["labels"] = json!(node.labels);
        value["draining"] = json!(node.draining);
    }
    if let Some(status) = presence.status {
        value["status"] = json!({
            "config_version": status.config_version,
            "peers_up": status.peers_up,
            "rx_bytes": status.rx_bytes,
            "tx_bytes": status.tx_bytes,
        });
    }
    value
}
