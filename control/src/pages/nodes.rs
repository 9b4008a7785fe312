//! Agents and gateways: the list with live state, enrolment, and the one-time page with the
//! new node's API key and install snippets.

use super::{field, layout};
use crate::auth::{Role, UserRecord};
use crate::hub::Hub;
use crate::install::Snippet;
use crate::model::State;
use kakuremichi_proto::ids::NodeKind;
use maud::{html, Markup, PreEscaped};

/// Plural title and path of a kind's pages.
pub fn names(kind: NodeKind) -> (&'static str, &'static str) {
    match kind {
        NodeKind::Agent => ("Agents", "/agents"),
        NodeKind::Gateway => ("Gateways", "/gateways"),
    }
}

/// One node, with its states decided.
pub struct Row {
    pub name: String,
    pub online: bool,
    pub overlay_ip: String,
    pub version: String,
    /// The start of the WireGuard public key, once the node said it.
    pub public_key: String,
    /// Whether the node applied the store's current config revision (online nodes only).
    pub config_current: Option<bool>,
    /// Agents: their tunnels; gateways: their WireGuard endpoint.
    pub detail: String,
    pub last_seen: Option<u64>,
}

pub fn rows(state: &State, hub: &Hub, kind: NodeKind) -> Vec<Row> {
    let mut rows: Vec<Row> = state
        .nodes
        .iter()
        .filter(|n| n.kind == kind)
        .map(|node| {
            let presence = hub.presence(&node.id);
            Row {
                name: node.name.clone(),
                online: presence.online,
                overlay_ip: node.overlay_ip.to_string(),
                version: node
                    .version
                    .clone()
                    .unwrap_or_else(|| "never connected".into()),
                public_key: node.public_key.as_ref().map_or_else(
                    || "—".into(),
                    |key| key.to_string().chars().take(12).collect::<String>() + "…",
                ),
                config_current: presence.applied.map(|applied| applied >= state.revision),
                detail: match kind {
                    NodeKind::Agent => {
                        let count = state
                            .tunnels
                            .iter()
                            .filter(|t| t.agent_id == node.id)
                            .count();
                        format!("{count} tunnel{}", if count == 1 { "" } else { "s" })
                    }
                    NodeKind::Gateway => node.wireguard_endpoint.clone().unwrap_or_default(),
                },
                last_seen: presence.last_seen,
            }
        })
        .collect();
    rows.sort_by(|a, b| b.online.cmp(&a.online).then(a.name.cmp(&b.name)));
    rows
}

fn seen(last_seen: Option<u64>, now: u64) -> String {
    last_seen.map_or_else(|| "not seen".into(), |at| super::ago(at, now))
}

pub fn list_page(user: &UserRecord, csrf: &str, kind: NodeKind, rows: &[Row], now: u64) -> Markup {
    let (title, path) = names(kind);
    let detail = match kind {
        NodeKind::Agent => "Tunnels",
        NodeKind::Gateway => "WireGuard endpoint",
    };
    layout(
        title,
        Some((user, csrf)),
        html! {
            div.toolbar {
                h1 { (title) }
                @if user.role == Role::Admin { a.button href={(path) "/new"} { "Enrol " (kind.as_str()) } }
            }
            @if rows.is_empty() {
                div.card { p.muted { "None yet." } }
            } @else {
                div.card.table {
                    table {
                        thead { tr { th { "Name" } th { "State" } th { "Overlay address" } th { (detail) } th { "Public key" } th { "Version" } } }
                        tbody {
                            @for row in rows {
                                tr {
                                    td data-label="Name" { (row.name) }
                                    td data-label="State" {
                                        span class={"dot " (if row.online { "good" } else { "bad" })} {}
                                        @if row.online { "online" } @else { "offline" }
                                        span.muted { " · " (seen(row.last_seen, now)) }
                                        @match row.config_current {
                                            Some(true) => { br; span.muted { "config up to date" } }
                                            Some(false) => { br; span.dot.warn {} "applying the latest config" }
                                            None => {}
                                        }
                                    }
                                    td data-label="Overlay address" { code { (row.overlay_ip) } }
                                    td data-label=(detail) { (row.detail) }
                                    td data-label="Public key" { code { (row.public_key) } }
                                    td data-label="Version" { (row.version) }
                                }
                            }
                        }
                    }
                }
            }
        },
    )
}

pub fn new_page(
    user: &UserRecord,
    csrf: &str,
    kind: NodeKind,
    name: &str,
    error: Option<&str>,
) -> Markup {
    let (_, path) = names(kind);
    layout(
        &format!("Enrol {}", kind.as_str()),
        Some((user, csrf)),
        html! {
            div.card.narrow {
                h1 { "Enrol " (kind.as_str()) }
                form method="post" action={(path) "/new"} {
                    input type="hidden" name="csrf" value=(csrf);
                    (field("Name", "name", "text", name, error, "off"))
                    div.actions {
                        button type="submit" { "Enrol" }
                        a href=(path) { "Cancel" }
                    }
                }
            }
        },
    )
}

/// The only time the key is shown: it is stored hashed.
pub fn enrolled_page(
    user: &UserRecord,
    csrf: &str,
    kind: NodeKind,
    name: &str,
    api_key: &str,
    snippets: &[Snippet],
) -> Markup {
    let (_, path) = names(kind);
    layout(
        &format!("{} enrolled", kind.as_str()),
        Some((user, csrf)),
        html! {
            h1 { (name) " is enrolled" }
            p.notice { "Copy the API key now: it is shown only this once (Control keeps only its hash)." }
            div.card {
                h2 { "API key" }
                (super::copyable("api-key", api_key))
                @for snippet in snippets {
                    h2 { (snippet.title) }
                    (super::copyable(snippet.key, &snippet.text))
                }
                p { a href=(path) { "Done: back to the list" } }
            }
            script { (PreEscaped(super::COPY_SCRIPT)) }
        },
    )
}
