//! Traffic: what gateways counted, as series over a range (`?range=1h|24h|7d|90d`) for a
//! tunnel, an agent's tunnels, one gateway, or everything.

use super::answer;
use super::Json;
use crate::error::Error;
use crate::routes::{ApiResult, Call};
use crate::traffic::series::Range;
use crate::traffic::{this_minute, Scope};
use kakuremichi_proto::ids::NodeKind;

pub fn of_tunnel(call: &Call, _: Json) -> ApiResult {
    series(call, Scope::Tunnel(call.param("id")))
}

pub fn of_node(call: &Call, kind: NodeKind) -> ApiResult {
    let id = call.param("id");
    let state = call.control.store.shared_state()?;
    if state.node(id).is_none_or(|node| node.kind != kind) {
        return Err(Error::not_found(kind.as_str(), id));
    }
    match kind {
        NodeKind::Agent => series(call, Scope::Agent(id)),
        NodeKind::Gateway => series(call, Scope::Gateway(id)),
    }
}

pub fn of_all(call: &Call, _: Json) -> ApiResult {
    series(call, Scope::All)
}

fn series(call: &Call, scope: Scope<'_>) -> ApiResult {
    let range = Range::parse(call.query("range").as_deref())?;
    let state = call.control.store.shared_state()?;
    let series = call
        .control
        .traffic
        .series_of(&state, scope, range, this_minute())?;
    answer(200, series)
}
