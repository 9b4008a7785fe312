//! Agents and gateways: the list with live state, one node's page (rename, disable, rotate
//! its key, delete), enrolment, and the one-time page with a new API key and install
//! snippets.

use super::{field, layout};
use crate::auth::{Role, UserRecord};
use crate::fleet::Fleet;
use crate::fleet::Health;
use crate::hub::Hub;
use crate::install::Snippet;
use crate::model::{NodeRecord, State};
use kakuremichi_proto::ids::NodeKind;
use kakuremichi_proto::messages::NodeStatus;
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
    pub id: String,
    pub name: String,
    pub online: bool,
    pub disabled: bool,
    pub overlay_ip: String,
    pub version: String,
    /// The WireGuard public key, once the node said it.
    pub public_key: Option<String>,
    /// Whether the node applied the store's current config revision (online nodes only).
    pub config_current: Option<bool>,
    /// Agents: their tunnels; gateways: their WireGuard endpoint.
    pub detail: String,
    pub last_seen: Option<u64>,
    /// What the node last reported, while online.
    pub status: Option<std::sync::Arc<NodeStatus>>,
    /// Gateways: their labels, `key=value, …`.
    pub labels: String,
    /// Gateways: refusing new requests while those in flight finish.
    pub draining: bool,
    /// Healthy, degraded or down, and why.
    pub health: (Health, String),
    /// Agents: public keys of the gateways they have a live WireGuard session with.
    pub live_peers: Vec<String>,
    /// Agents: what they forward to, in words.
    pub allow_targets: String,
}

/// An agent's `ALLOW_TARGETS`, as its page says it.
fn allowed_targets_in_words(reported: Option<&str>) -> String {
    match reported {
        None => "not reported (the agent is older or has not connected)".into(),
        Some("") => {
            "any target but link-local and cloud metadata addresses and its own status port (no ALLOW_TARGETS)"
                .into()
        }
        Some(list) => list.replace(',', ", "),
    }
}

pub fn rows(state: &State, hub: &Hub, kind: NodeKind) -> Vec<Row> {
    let fleet = Fleet::now(hub, state);
    let mut rows: Vec<Row> = state
        .nodes
        .iter()
        .filter(|n| n.kind == kind)
        .map(|node| row(state, &fleet, node))
        .collect();
    rows.sort_by(|a, b| b.online.cmp(&a.online).then(a.name.cmp(&b.name)));
    rows
}

pub fn row(state: &State, fleet: &Fleet, node: &NodeRecord) -> Row {
    let presence = fleet.hub().presence(&node.id);
    Row {
        id: node.id.clone(),
        name: node.name.clone(),
        online: presence.online,
        disabled: node.disabled,
        overlay_ip: node.overlay_ip.to_string(),
        version: node
            .version
            .clone()
            .unwrap_or_else(|| "never connected".into()),
        public_key: node.public_key.as_ref().map(ToString::to_string),
        config_current: presence.applied.map(|applied| applied >= state.revision),
        detail: match node.kind {
            NodeKind::Agent => {
                let count = state
                    .tunnels
                    .iter()
                    .filter(|t| t.spec.target_on(&node.id).is_some())
                    .count();
                format!("{count} tunnel{}", if count == 1 { "" } else { "s" })
            }
            NodeKind::Gateway => node.wireguard_endpoint.clone().unwrap_or_default(),
        },
        last_seen: presence.last_seen,
        status: presence.status.clone(),
        labels: node
            .labels
            .iter()
            .map(|(k, v)| format!("{k}={v}"))
            .collect::<Vec<_>>()
            .join(", "),
        draining: node.draining,
        health: fleet.health(node),
        // For the agents × gateways matrix, which has a row per agent: a gateway's would
        // name every agent.
        live_peers: match node.kind {
            NodeKind::Agent => presence
                .live_peers
                .iter()
                .map(ToString::to_string)
                .collect(),
            NodeKind::Gateway => Vec::new(),
        },
        allow_targets: allowed_targets_in_words(node.allow_targets.as_deref()),
    }
}

fn seen(last_seen: Option<u64>, now: u64) -> String {
    last_seen.map_or_else(|| "not seen".into(), |at| super::ago(at, now))
}

/// Online or not, since when, disabled, and whether the latest config is applied.
fn state_cell(row: &Row, now: u64) -> Markup {
    let (health, why) = &row.health;
    let dot = match health {
        Health::Healthy => "good",
        Health::Degraded => "warn",
        Health::Down => "bad",
    };
    html! {
        span class={"dot " (dot)} {}
        (health.as_str())
        @if *health != Health::Healthy || why != "serving" { span.muted { ": " (why) } }
        br;
        @if row.online { "online" } @else { "offline" }
        span.muted { " · " (seen(row.last_seen, now)) }
        @if row.disabled {
            br; span.dot.warn {} "disabled: serves nothing"
        } @else if row.draining {
            br; span.dot.warn {} "draining: new requests get a 503"
        } @else {
            @match row.config_current {
                Some(true) => { br; span.muted { "config up to date" } }
                Some(false) => { br; span.dot.warn {} "applying the latest config" }
                None => {}
            }
        }
    }
}

fn short_key(row: &Row) -> String {
    row.public_key.as_ref().map_or_else(
        || "—".into(),
        |key| key.chars().take(12).collect::<String>() + "…",
    )
}

/// What one node's page shows beside its row.
pub struct Detail<'a> {
    pub row: &'a Row,
    pub kind: NodeKind,
    /// Agents: the hostnames of their tunnels.
    pub tunnels: Vec<String>,
    pub name: &'a str,
    pub name_error: Option<&'a str>,
    /// Why the last action was refused.
    pub refusal: Option<&'a str>,
    /// Agents: their tunnels' traffic; gateways: what went through them.
    pub traffic: crate::traffic::series::Series,
}

pub fn detail_page(user: &UserRecord, csrf: &str, detail: &Detail, now: u64) -> Markup {
    let (title, path) = names(detail.kind);
    let row = detail.row;
    let base = format!("{path}/{}", row.id);
    let admin = user.role == Role::Admin;
    layout(
        &row.name,
        Some((user, csrf)),
        html! {
            p.muted { a href=(path) { (title) } " / " (row.name) }
            h1 { (row.name) }
            @if let Some(refusal) = detail.refusal { p.notice.bad role="alert" { (refusal) } }
            div.card {
                dl.facts {
                    dt { "State" } dd { (state_cell(row, now)) }
                    dt { "Id" } dd { code { (row.id) } }
                    dt { "Overlay address" } dd { code { (row.overlay_ip) } }
                    @if detail.kind == NodeKind::Gateway {
                        dt { "WireGuard endpoint" } dd { code { (row.detail) } }
                        dt { "Labels" } dd { @if row.labels.is_empty() { span.muted { "none" } } @else { (row.labels) } }
                    }
                    dt { "Public key" } dd { code { (row.public_key.as_deref().unwrap_or("not yet known: the node has not connected")) } }
                    dt { "Version" } dd { (row.version) }
                    @if detail.kind == NodeKind::Agent {
                        dt { "Forwards to" } dd { (row.allow_targets) }
                    }
                    @if let Some(status) = &row.status {
                        dt { "WireGuard peers up" } dd { (status.peers_up) }
                        dt { "Traffic" } dd { (super::charts::bytes(status.rx_bytes)) " in, " (super::charts::bytes(status.tx_bytes)) " out" }
                    } @else if row.online {
                        dt { "WireGuard peers up" } dd.muted { "reported with the node's next heartbeat" }
                    }
                    @if detail.kind == NodeKind::Agent {
                        dt { "Tunnels" }
                        dd {
                            @if detail.tunnels.is_empty() { span.muted { "none" } }
                            @for hostname in &detail.tunnels { code { (hostname) } " " }
                        }
                    }
                }
            }
            div.card { (super::charts::traffic(&detail.traffic, &base)) }
            @if admin {
                h2 { "Manage" }
                div.card {
                    form method="post" action={(base) "/name"} {
                        input type="hidden" name="csrf" value=(csrf);
                        (field("Name", "name", "text", detail.name, detail.name_error, "off"))
                        div.actions { button type="submit" { "Rename" } }
                    }
                    hr;
                    @if row.disabled {
                        (toggle(&base, csrf, "enabled", true, "Disabled: it keeps its connection to Control but serves nothing, and no other node peers with it.", "Enable"))
                    } @else {
                        (toggle(&base, csrf, "enabled", false, "Disabling stops it serving within a second; it stays enrolled and can be enabled again at once.", "Disable"))
                    }
                    @if detail.kind == NodeKind::Gateway {
                        hr;
                        form method="post" action={(base) "/labels"} {
                            input type="hidden" name="csrf" value=(csrf);
                            (super::optional_field("Labels, e.g. region=tokyo, tier=edge (tunnels can choose gateways by them)", "labels", &row.labels, None))
                            div.actions { button type="submit" { "Save labels" } }
                        }
                        hr;
                        @if row.draining {
                            (toggle(&base, csrf, "draining", false, "Draining: new requests get a 503 and its /readyz fails, so load balancers move clients to the other gateways; requests in flight finish.", "Serve again"))
                        } @else {
                            (toggle(&base, csrf, "draining", true, "Draining lets requests in flight finish and sends new ones elsewhere, before the gateway is stopped for maintenance.", "Drain"))
                        }
                    }
                    hr;
                    p { "A new API key ends the node's connection; it connects again once restarted with the new key." }
                    div.actions {
                        a.button href={(base) "/rotate-key"} { "Rotate API key" }
                        a.danger-link href={(base) "/delete"} { "Delete " (detail.kind.as_str()) }
                    }
                }
            }
        },
    )
}

/// Which agent has a WireGuard session with which gateway: agents down, gateways across.
pub struct Matrix<'a> {
    pub agents: &'a [Row],
    pub gateways: &'a [Row],
}

fn matrix(m: &Matrix) -> Markup {
    html! {
        h2 { "Agents × gateways" }
        p.muted { "“up”: the agent has a live WireGuard session with the gateway; “no session”: both are online but have none; “—”: one of them is offline." }
        div.card.table.matrix {
            table {
                thead { tr { th { "Agent" } @for gateway in m.gateways { th { (gateway.name) } } } }
                tbody {
                    @for agent in m.agents {
                        tr {
                            td { (agent.name) }
                            @for gateway in m.gateways {
                                @let up = gateway.public_key.as_ref().is_some_and(|k| agent.live_peers.contains(k));
                                td data-label=(gateway.name) {
                                    @if up { span.dot.good {} "up" }
                                    @else if !agent.online || !gateway.online { span.muted { "—" } }
                                    @else { span.dot.bad {} "no session" }
                                }
                            }
                        }
                    }
                }
            }
        }
    }
}

pub fn list_page(
    user: &UserRecord,
    csrf: &str,
    kind: NodeKind,
    rows: &[Row],
    matrix_of: Option<Matrix>,
    now: u64,
) -> Markup {
    let (title, path) = names(kind);
    let detail = match kind {
        NodeKind::Agent => "Tunnels",
        NodeKind::Gateway => "WireGuard endpoint",
    };
    layout(
        title,
        Some((user, csrf)),
        html! {
            script { (maud::PreEscaped(super::REFRESH_SCRIPT)) }
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
                                    td data-label="Name" { a href={(path) "/" (row.id)} { (row.name) } }
                                    td data-label="State" { (state_cell(row, now)) }
                                    td data-label="Overlay address" { code { (row.overlay_ip) } }
                                    td data-label=(detail) { (row.detail) }
                                    td data-label="Public key" { code { (short_key(row)) } }
                                    td data-label="Version" { (row.version) }
                                }
                            }
                        }
                    }
                }
            }
            @if let Some(m) = matrix_of.filter(|m| !m.agents.is_empty() && !m.gateways.is_empty()) {
                (matrix(&m))
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

/// The only time a key is shown: it is stored hashed. `heading` says why there is one.
pub fn key_page(
    user: &UserRecord,
    csrf: &str,
    kind: NodeKind,
    heading: &str,
    api_key: &str,
    snippets: &[Snippet],
    warning: Option<&str>,
) -> Markup {
    let (_, path) = names(kind);
    layout(
        heading,
        Some((user, csrf)),
        html! {
            h1 { (heading) }
            p.notice { "Copy the API key now: it is shown only this once (Control keeps only its hash)." }
            @if let Some(warning) = warning {
                p.notice.bad { (warning) }
            }
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

/// A form at `{base}/{setting}` that sets one yes/no setting to `to`: what the state means
/// now, and the button that changes it.
fn toggle(base: &str, csrf: &str, setting: &str, to: bool, now: &str, button: &str) -> Markup {
    html! {
        form method="post" action={(base) "/" (setting)} {
            input type="hidden" name="csrf" value=(csrf);
            input type="hidden" name=(setting) value=(to);
            p { (now) }
            div.actions { button type="submit" { (button) } }
        }
    }
}
