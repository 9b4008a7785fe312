//! The request log: every gateway's latest requests, asked at once ([`crate::logs`]).

use super::answer;
use crate::logs::{query_of, Found, Gathered, PATIENCE};
use crate::model::State;
use crate::routes::{ApiResult, Call};
use serde::Serialize;
use std::sync::Arc;

/// One request as the API and the Logs page show it: ids with the names they stand for.
#[derive(Serialize)]
pub struct LogView {
    pub time_ms: u64,
    pub gateway: String,
    pub gateway_name: String,
    pub tunnel_id: String,
    pub tunnel: String,
    pub client: String,
    pub user: Option<String>,
    pub method: String,
    pub host: String,
    pub path: String,
    /// When the tunnel keeps it: the query string, secrets redacted.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub query: Option<String>,
    /// When the tunnel names them: request headers.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub headers: Vec<(String, String)>,
    pub status: u16,
    pub bytes_in: u64,
    pub bytes_out: u64,
    pub duration_ms: f64,
    /// The agent that answered: its name, or its overlay address if Control has none.
    pub agent: Option<String>,
}

impl LogView {
    pub fn of(state: &State, found: Found) -> LogView {
        let Found { gateway, entry } = found;
        let gateway_name = state
            .node(&gateway)
            .map_or(gateway.clone(), |g| g.name.clone());
        let tunnel = state
            .tunnel(&entry.tunnel_id)
            .map_or(entry.tunnel_id.clone(), |t| t.label());
        let agent = entry.agent.map(|ip| {
            let named = state.nodes.iter().find(|n| n.overlay_ip.to_string() == ip);
            named.map_or(ip, |n| n.name.clone())
        });
        LogView {
            time_ms: entry.time_ms,
            gateway,
            gateway_name,
            tunnel_id: entry.tunnel_id,
            tunnel,
            client: entry.client,
            user: entry.user,
            method: entry.method,
            host: entry.host,
            path: entry.path,
            query: entry.query,
            headers: entry.headers,
            status: entry.status,
            bytes_in: entry.bytes_in,
            bytes_out: entry.bytes_out,
            duration_ms: entry.micros as f64 / 1000.0,
            agent,
        }
    }
}

/// What a query found, and how many gateways it heard from.
#[derive(Serialize)]
pub struct LogsView {
    pub entries: Vec<LogView>,
    pub gateways_asked: usize,
    pub gateways_answered: usize,
}

impl LogsView {
    pub fn of(state: &State, gathered: Gathered) -> LogsView {
        LogsView {
            entries: (gathered.entries.into_iter())
                .map(|found| LogView::of(state, found))
                .collect(),
            gateways_asked: gathered.asked,
            gateways_answered: gathered.answered,
        }
    }
}

pub async fn query(call: Arc<Call>) -> ApiResult {
    let query = query_of(|name| call.query(name), kakuremichi_rt::unix_now_ms())?;
    let gathered = call.control.logs.ask(query, PATIENCE).await;
    let state = call.control.store.shared_state()?;
    answer(200, LogsView::of(&state, gathered))
}
