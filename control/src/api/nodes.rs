//! Agents and gateways: list, enrol (the key shown once), read, rename, disable, label or
//! drain, rotate the key of, delete.

use super::views::{Done, Node, NodeWithKey};
use super::{answer, Json};
use crate::error::Error;
use crate::fleet::Fleet;
use crate::model::{NodeRecord, State};
use crate::routes::{ApiResult, Call};
use crate::spec::Name;
use kakuremichi_proto::ids::NodeKind;
use schemars::{json_schema, JsonSchema, Schema, SchemaGenerator};
use serde::Deserialize;
use serde_json::Value;

pub fn list(call: &Call, kind: NodeKind) -> ApiResult {
    let control = &call.control;
    let state = control.store.shared_state()?;
    let fleet = Fleet::now(&control.hub, &state);
    let nodes = state
        .nodes
        .iter()
        .filter(|n| n.kind == kind)
        .map(|n| Node::of(control, &fleet, n))
        .collect::<Vec<_>>();
    answer(200, nodes)
}

pub fn create(call: &Call, body: Json, kind: NodeKind) -> ApiResult {
    let name = (body.read::<Name>()?.name).unwrap_or_else(|| kind.as_str().to_string());
    crate::model::check_name(&name).map_err(|why| Error::invalid("name", why))?;
    let (record, api_key) = call.control.store.create_node(kind, name)?;
    let state = call.control.store.shared_state()?;
    answer(
        201,
        NodeWithKey::of(&call.control, &state, &record, &api_key),
    )
}

/// The node of `kind` the path names, with the store's state it was found in.
fn find(call: &Call, kind: NodeKind) -> Result<(std::sync::Arc<State>, NodeRecord), Error> {
    let state = call.control.store.shared_state()?;
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
    let fleet = Fleet::now(&call.control.hub, &state);
    answer(200, Node::of(&call.control, &fleet, &node))
}

/// `PATCH /agents/{id}` and `/gateways/{id}`: what changes.
#[derive(Deserialize, JsonSchema)]
pub struct NodeChange {
    #[schemars(schema_with = "crate::spec::name_schema")]
    name: Option<String>,
    enabled: Option<bool>,
    /// Gateways: `{"region": "tokyo"}` or `"region=tokyo,…"`.
    #[schemars(schema_with = "labels_schema")]
    labels: Option<Value>,
    /// Gateways: take no new connections, so it can be stopped.
    draining: Option<bool>,
}

fn labels_schema(_: &mut SchemaGenerator) -> Schema {
    json_schema!({
        "anyOf": [{ "type": "object", "additionalProperties": { "type": "string" } }, { "type": "string" }],
        "description": "{\"region\":\"tokyo\"} or \"region=tokyo,…\"",
    })
}

/// Rename, enable or disable a node; label or drain a gateway.
pub fn change(call: &Call, body: Json, kind: NodeKind) -> ApiResult {
    let control = &call.control;
    find(call, kind)?;
    let NodeChange {
        name,
        enabled,
        labels,
        draining,
    } = body.read()?;
    if let Some(name) = &name {
        crate::model::check_name(name).map_err(|why| Error::invalid("name", why))?;
    }
    let gateway_only = |field: &str| match kind {
        NodeKind::Gateway => Ok(()),
        NodeKind::Agent => Err(Error::invalid(field, "only gateways have it")),
    };
    let labels = match labels {
        Some(value) => {
            gateway_only("labels")?;
            Some(crate::model::labels_from_json(&value)?)
        }
        None => None,
    };
    if draining.is_some() {
        gateway_only("draining")?;
    }
    let node = control.store.update_node(call.param("id"), |node| {
        node.name = name.unwrap_or_else(|| node.name.clone());
        node.disabled = enabled.map_or(node.disabled, |enabled| !enabled);
        node.labels = labels.unwrap_or_else(|| node.labels.clone());
        node.draining = draining.unwrap_or(node.draining);
    })?;
    let state = control.store.shared_state()?;
    answer(
        200,
        Node::of(control, &Fleet::now(&control.hub, &state), &node),
    )
}

pub fn rotate_key(call: &Call, kind: NodeKind) -> ApiResult {
    find(call, kind)?;
    let (node, api_key) = call.control.store.rotate_node_key(call.param("id"))?;
    let state = call.control.store.shared_state()?;
    answer(200, NodeWithKey::of(&call.control, &state, &node, &api_key))
}

pub fn delete(call: &Call, kind: NodeKind) -> ApiResult {
    let (_, node) = find(call, kind)?;
    call.control.store.delete_node(&node.id)?;
    answer(200, Done::Deleted(&node.id))
}
