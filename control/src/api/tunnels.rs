//! Tunnels: list, create, read, change, delete; their service tokens; and new login keys
//! for every tunnel.

use super::answer;
use super::views::{self, Done};
use super::Json;
use crate::error::Error;
use crate::model::TunnelRecord;
use crate::routes::{ApiResult, Call};
use crate::spec::{Name, TunnelFields, TunnelView};
use crate::Control;
use serde::Serialize;

pub fn list(call: &Call, _: Json) -> ApiResult {
    let state = call.control.store.shared_state()?;
    let hub = &call.control.hub;
    let tunnels: Vec<_> = (state.tunnels.iter()).map(|t| Live::of(t, hub)).collect();
    answer(200, tunnels)
}

/// A tunnel with how its origin is doing now.
#[derive(Serialize)]
struct Live<'a> {
    #[serde(flatten)]
    tunnel: TunnelView<'a>,
    health: Health,
}

/// `healthy`, `degraded` (some agents' targets fail), `failing` (every online agent's
/// does), `no agent online` or `disabled`; with each failure its agent saw.
#[derive(Serialize)]
struct Health {
    state: &'static str,
    failing: Vec<FailingOrigin>,
}

#[derive(Serialize)]
struct FailingOrigin {
    agent: String,
    target: String,
    error: String,
    since: u64,
}

impl<'a> Live<'a> {
    fn of(tunnel: &'a TunnelRecord, hub: &crate::hub::Hub) -> Live<'a> {
        let failing: Vec<FailingOrigin> = crate::pages::tunnels::origin_failures(tunnel, hub)
            .into_iter()
            .map(|(agent, f)| FailingOrigin {
                agent,
                target: f.target,
                error: f.error,
                since: f.since,
            })
            .collect();
        let online = tunnel
            .spec
            .agents()
            .filter(|(a, _)| hub.is_online(a))
            .count();
        let state = match failing.len() {
            _ if !tunnel.spec.enabled => "disabled",
            _ if online == 0 => "no agent online",
            0 => "healthy",
            n if n >= online => "failing",
            _ => "degraded",
        };
        Live {
            tunnel: TunnelView::of(tunnel),
            health: Health { state, failing },
        }
    }
}

pub fn create(call: &Call, body: Json) -> ApiResult {
    let fields: TunnelFields = body.read()?;
    let issuer = call.control.default_issuer;
    let tunnel = (call.control.store).create_tunnel(|nodes| fields.build(None, issuer, nodes))?;
    answer(201, TunnelView::of(&tunnel))
}

pub fn get(call: &Call, _: Json) -> ApiResult {
    let tunnel = find_tunnel(&call.control, call.param("id"))?;
    answer(200, Live::of(&tunnel, &call.control.hub))
}

pub fn change(call: &Call, body: Json) -> ApiResult {
    find_tunnel(&call.control, call.param("id"))?;
    let fields: TunnelFields = body.read()?;
    let issuer = call.control.default_issuer;
    let tunnel = call
        .control
        .store
        .update_tunnel(call.param("id"), |current, nodes| {
            fields.build(Some(current), issuer, nodes)
        })?;
    answer(200, TunnelView::of(&tunnel))
}

pub fn delete(call: &Call, _: Json) -> ApiResult {
    let id = call.param("id");
    call.control.store.delete_tunnel(id)?;
    answer(200, Done::Deleted(id))
}

pub fn service_tokens(call: &Call, _: Json) -> ApiResult {
    let tunnel = find_tunnel(&call.control, call.param("id"))?;
    Ok((200, tunnel.spec.access.to_json()["service_tokens"].clone()))
}

/// A new service token, its secret shown once.
pub fn add_service_token(call: &Call, body: Json) -> ApiResult {
    let name = body.read::<Name>()?.required()?;
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
    control.store.shared_state()?.tunnel(id).cloned()
}
