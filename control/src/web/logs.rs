//! The Logs page: the gateways' latest requests, filtered, refreshed every few seconds.

use super::Page;
use crate::api::logs::LogsView;
use crate::logs::{query_of, PATIENCE};
use crate::pages;
use crate::routes::PageResult;
use std::sync::Arc;

pub async fn page(page: Arc<Page>) -> PageResult {
    let filter = pages::logs::Filter::of(|name| page.query(name));
    let query = query_of(|name| page.query(name), kakuremichi_rt::unix_now_ms());
    let state = page.state()?;
    let tunnels: Vec<(String, String)> = (state.tunnels.iter())
        .map(|t| (t.id.clone(), t.label()))
        .collect();
    let (user, csrf) = page.who();
    let (status, found, refusal) = match query {
        Ok(query) => {
            let gathered = page.control.logs.ask(query, PATIENCE).await;
            (200, Some(LogsView::of(&state, gathered)), None)
        }
        Err(e) => (400, None, Some(e.to_string())),
    };
    let shown = pages::logs::page(
        user,
        csrf,
        &filter,
        &tunnels,
        found.as_ref(),
        refusal.as_deref(),
    );
    Ok((status, shown))
}
