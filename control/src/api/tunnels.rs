//! Tunnels: list, create, read, change, delete; their service tokens; and new login keys
//! for every tunnel.

use super::answer;
use super::fields::{Agents, Fields};
use super::views::{self, Done};
use super::Json;
use crate::access::TunnelAccess;
use crate::error::Error;
use crate::model::TunnelRecord;
use crate::model::{OriginSettings, TunnelKind};
use crate::routes::{ApiResult, Call};
use crate::store::{NewTunnel, TunnelPatch};
use crate::Control;

pub fn list(call: &Call, _: Json) -> ApiResult {
    let state = call.control.store.state()?;
    let tunnels: Vec<_> = state.tunnels.iter().map(views::Tunnel::of).collect();
    answer(200, tunnels)
}

pub fn create(call: &Call, body: Json) -> ApiResult {
    let control = &call.control;
    let mut fields = body.fields()?;
    let kind: TunnelKind = match fields.string("kind")? {
        Some(kind) => kind.parse()?,
        None => TunnelKind::Http,
    };
    let ports = fields.ports()?;
    let agents = match fields.agents(ports)? {
        Some(agents) => agents,
        None => {
            let (target, scheme) = fields
                .target(ports)?
                .ok_or_else(|| Error::invalid("target", "is required"))?;
            Agents {
                agent_id: fields.required("agent")?,
                target,
                scheme,
                replicas: Vec::new(),
            }
        }
    };
    let scheme = agents.scheme;
    let new = NewTunnel {
        kind,
        hostname: fields.parsed("hostname")?,
        agent_id: agents.agent_id,
        target: agents.target,
        replicas: agents.replicas,
        origin: fields
            .origin(&OriginSettings::default(), Some(scheme))?
            .unwrap_or_default(),
        ports,
        enabled: fields.boolean("enabled")?.unwrap_or(true),
        issuer: fields.parsed("issuer")?.unwrap_or(control.default_issuer),
        access: match fields.take("access") {
            Some(value) => {
                let mut access = TunnelAccess::default();
                access.apply_json(&value)?;
                access
            }
            None => TunnelAccess::default(),
        },
        proxy_protocol: fields.proxy_protocol()?.flatten(),
        path_prefix: fields.path_prefix()?.flatten(),
        gateways: fields.gateways(control)?.unwrap_or_default(),
    };
    fields.finish()?;
    let tunnel = control.store.create_tunnel(new)?;
    answer(201, views::Tunnel::of(&tunnel))
}

pub fn get(call: &Call, _: Json) -> ApiResult {
    let tunnel = find_tunnel(&call.control, call.param("id"))?;
    answer(200, views::Tunnel::of(&tunnel))
}

pub fn change(call: &Call, body: Json) -> ApiResult {
    let current = find_tunnel(&call.control, call.param("id"))?;
    let patch = parse_patch(&call.control, body.fields()?, &current)?;
    let tunnel = call.control.store.update_tunnel(&current.id, patch)?;
    answer(200, views::Tunnel::of(&tunnel))
}

pub fn delete(call: &Call, _: Json) -> ApiResult {
    let id = call.param("id");
    call.control.store.delete_tunnel(id)?;
    answer(200, Done::Deleted(id))
}

pub fn service_tokens(call: &Call, _: Json) -> ApiResult {
    let tunnel = find_tunnel(&call.control, call.param("id"))?;
    Ok((200, tunnel.access.to_json()["service_tokens"].clone()))
}

/// A new service token, its secret shown once.
pub fn add_service_token(call: &Call, body: Json) -> ApiResult {
    let mut fields = body.fields()?;
    let name = fields.required("name")?;
    fields.finish()?;
    let (record, token) = call
        .control
        .store
        .add_service_token(call.param("id"), &name)?;
    let made = views::ServiceToken {
        id: &record.id,
        name: &record.name,
        created_at: record.created_at,
        token: &token,
    };
    answer(201, made)
}

pub fn revoke_service_token(call: &Call, _: Json) -> ApiResult {
    let token_id = call.param("token_id");
    call.control
        .store
        .revoke_service_token(call.param("id"), token_id)?;
    answer(200, Done::Revoked(token_id))
}

pub fn rotate_access_keys(call: &Call, _: Json) -> ApiResult {
    call.control.store.rotate_access_keys()?;
    answer(200, Done::Rotated(true))
}

fn find_tunnel(control: &Control, id: &str) -> Result<TunnelRecord, Error> {
    control.store.state()?.tunnel(id).cloned()
}

/// A tunnel change; an `access` object changes the rules it names on top of `current`.
fn parse_patch(
    control: &Control,
    mut fields: Fields,
    current: &TunnelRecord,
) -> Result<TunnelPatch, Error> {
    let ports = fields.ports()?;
    let (target, agent_id, replicas) = match fields.agents(ports.or(current.ports))? {
        Some(agents) => (
            Some((agents.target, agents.scheme)),
            Some(agents.agent_id),
            Some(agents.replicas),
        ),
        None => (
            fields.target(ports.or(current.ports))?,
            fields.string("agent")?,
            None,
        ),
    };
    let patch = TunnelPatch {
        hostname: fields.parsed("hostname")?,
        origin: fields.origin(&current.origin, target.as_ref().map(|(_, scheme)| *scheme))?,
        target: target.map(|(target, _)| target),
        ports,
        agent_id,
        replicas,
        enabled: fields.boolean("enabled")?,
        issuer: fields.parsed("issuer")?,
        access: match fields.take("access") {
            Some(value) => {
                let mut access = current.access.clone();
                access.apply_json(&value)?;
                Some(access)
            }
            None => None,
        },
        proxy_protocol: fields.proxy_protocol()?,
        path_prefix: fields.path_prefix()?,
        gateways: fields.gateways(control)?,
    };
    if let Some(kind) = fields.string("kind")? {
        if kind != current.kind.as_str() {
            return Err(Error::invalid(
                "kind",
                "a tunnel's kind cannot change; create a new tunnel",
            ));
        }
    }
    fields.finish()?;
    Ok(patch)
}
