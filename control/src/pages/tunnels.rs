//! The tunnels list: every tunnel with its live state (agent online, certificate, enabled),
//! filtered by text.

use super::layout;
use crate::auth::{Role, UserRecord};
use crate::hub::Hub;
use crate::model::TunnelKind;
use crate::model::{CertState, Issuer, State};
use maud::{html, Markup};

/// One row, with its states already decided.
pub struct Row {
    pub id: String,
    /// The hostname, or the kind and public ports.
    pub name: String,
    /// `http`, `tls`, `tcp` or `udp`.
    pub kind: &'static str,
    /// Every agent serving it (several for replicas), by name, and whether each is online.
    pub agents: Vec<(String, bool)>,
    pub target: String,
    pub enabled: bool,
    /// Who may open it, when not everyone.
    pub access: Option<String>,
    /// What the certificate is doing, and how healthy that is (`good`, `warn`, `bad`, ``).
    pub certificate: (String, &'static str),
    /// Whether it serves, and how healthy that is: disabled, no agent online, the origin
    /// failing, or serving.
    pub state: (String, &'static str),
}

/// The failures of `tunnel`'s origin that its online agents reported (a refused connection,
/// or a failed check), with each agent's id.
pub fn origin_failures(
    tunnel: &crate::model::TunnelRecord,
    hub: &Hub,
) -> Vec<(String, kakuremichi_proto::messages::OriginFailure)> {
    let online_failure = |agent: &str| {
        let presence = hub.presence(agent);
        presence.online.then_some(())?;
        presence
            .status?
            .failing_origins
            .iter()
            .find(|f| f.tunnel_id == tunnel.id)
            .cloned()
    };
    tunnel
        .spec
        .agents()
        .filter_map(|(agent, _)| Some((agent.to_string(), online_failure(agent)?)))
        .collect()
}

/// The rows matching `filter` (in hostname, agent or target, any case), by hostname.
pub fn rows(state: &State, hub: &Hub, filter: &str, now: u64) -> Vec<Row> {
    let needle = filter.trim().to_ascii_lowercase();
    let mut rows: Vec<Row> = state
        .tunnels
        .iter()
        .map(|tunnel| {
            let agents: Vec<(String, bool)> = tunnel
                .spec
                .agents()
                .map(|(id, _)| match state.nodes.iter().find(|n| n.id == id) {
                    Some(agent) => (agent.name.clone(), hub.is_online(&agent.id)),
                    None => (id.to_string(), false),
                })
                .collect();
            let certificate = match (tunnel.spec.kind, tunnel.spec.issuer) {
                (TunnelKind::Tls, _) => ("the origin's own (passed through)".to_string(), ""),
                (TunnelKind::Tcp | TunnelKind::Udp, _) => ("none: raw ports".to_string(), ""),
                (_, Issuer::None) => ("plain HTTP".to_string(), ""),
                _ => match state
                    .certificates
                    .iter()
                    .find(|c| Some(&c.hostname) == tunnel.spec.hostname.as_ref())
                {
                    None if tunnel.spec.issuer == Issuer::Manual => {
                        ("none uploaded yet".to_string(), "bad")
                    }
                    None => ("waiting".to_string(), "warn"),
                    Some(cert) => match cert.state {
                        CertState::Valid => (
                            format!(
                                "valid, {} days left",
                                cert.not_after.saturating_sub(now) / 86_400
                            ),
                            "good",
                        ),
                        CertState::Pending => ("issuing".to_string(), "warn"),
                        CertState::Failed => (
                            format!(
                                "failing: {}",
                                cert.last_error.as_deref().unwrap_or("no reason recorded")
                            ),
                            "bad",
                        ),
                    },
                },
            };
            let online = agents.iter().filter(|(_, online)| *online).count();
            let failures = origin_failures(tunnel, hub);
            let name_of = |id: &str| state.node(id).map_or(id.to_string(), |n| n.name.clone());
            let state = match failures.first() {
                _ if !tunnel.spec.enabled => ("disabled".to_string(), ""),
                _ if online == 0 => ("down: no agent online".to_string(), "bad"),
                Some((_, failure)) if failures.len() >= online => (
                    format!(
                        "502: cannot reach {} ({}) since {}",
                        failure.target,
                        failure.error,
                        super::clock(failure.since)
                    ),
                    "bad",
                ),
                Some((agent, failure)) => (
                    format!(
                        "serving from {} of {online} agents: {} cannot reach {} ({})",
                        online - failures.len(),
                        name_of(agent),
                        failure.target,
                        failure.error
                    ),
                    "warn",
                ),
                None => ("serving".to_string(), "good"),
            };
            Row {
                id: tunnel.id.clone(),
                name: tunnel.label(),
                kind: tunnel.spec.kind.as_str(),
                agents,
                target: tunnel.spec.target_text(),
                enabled: tunnel.spec.enabled,
                access: tunnel.spec.access.summary(),
                certificate,
                state,
            }
        })
        .filter(|row| {
            needle.is_empty()
                || [&row.name, &row.target]
                    .into_iter()
                    .chain(row.agents.iter().map(|(name, _)| name))
                    .any(|field| field.to_ascii_lowercase().contains(&needle))
        })
        .collect();
    rows.sort_by(|a, b| a.name.cmp(&b.name));
    rows
}

pub fn page(user: &UserRecord, csrf: &str, filter: &str, rows: &[Row], total: usize) -> Markup {
    let admin = user.role == Role::Admin;
    layout(
        "Tunnels",
        Some((user, csrf)),
        html! {
            div.toolbar {
                h1 { "Tunnels" }
                @if admin { a.button href="/tunnels/new" { "New tunnel" } }
            }
            form.filter method="get" action="/tunnels" {
                input type="text" name="q" value=(filter) placeholder="Filter by hostname, agent or target" aria-label="Filter";
                button type="submit" { "Filter" }
            }
            p.muted {
                @if filter.is_empty() { (total) (if total == 1 { " tunnel" } else { " tunnels" }) }
                @else { (rows.len()) " of " (total) (if total == 1 { " tunnel matches" } else { " tunnels match" }) }
            }
            script { (maud::PreEscaped(super::REFRESH_SCRIPT)) }
            @if rows.is_empty() {
                div.card { p.muted { "No tunnel to show." @if admin { " " a href="/tunnels/new" { "Create one." } } } }
            } @else {
                div.card.table {
                    table {
                        thead { tr { th { "Published as" } th { "Agent" } th { "Target" } th { "Certificate" } th { "State" } @if admin { th { "" } } } }
                        tbody {
                            @for row in rows {
                                tr {
                                    td data-label="Published as" {
                                        a href={"/tunnels/" (row.id)} { (row.name) }
                                        @if row.kind == "tls" { " " span.badge { "TLS passthrough" } }
                                        br;
                                        @match &row.access {
                                            Some(access) => span.muted { "🔒 " (access) },
                                            None => span.muted { "public" },
                                        }
                                    }
                                    td data-label="Agent" {
                                        @for (i, (agent, online)) in row.agents.iter().enumerate() {
                                            @if i > 0 { br; }
                                            span class={"dot " (if *online { "good" } else { "bad" })} {}
                                            (agent)
                                            @if !online { span.muted { " (offline)" } }
                                        }
                                    }
                                    td data-label="Target" { code { (row.target) } }
                                    td data-label="Certificate" { span class={"dot " (row.certificate.1)} {} (row.certificate.0) }
                                    td data-label="State" { span class={"dot " (row.state.1)} {} (row.state.0) }
                                    @if admin {
                                        td.row-actions {
                                            form.inline method="post" action={"/tunnels/" (row.id) "/enabled"} {
                                                input type="hidden" name="csrf" value=(csrf);
                                                input type="hidden" name="enabled" value=(if row.enabled { "false" } else { "true" });
                                                button.small type="submit" { @if row.enabled { "Disable" } @else { "Enable" } }
                                            }
                                            a.edit href={"/tunnels/" (row.id) "/edit"} { "Edit" }
                                            @if row.kind == "http" { a.edit href={"/tunnels/" (row.id) "/access"} { "Access" } }
                                            a href={"/tunnels/" (row.id) "/delete"} { "Delete" }
                                        }
                                    }
                                }
                            }
                        }
                    }
                }
            }
        },
    )
}
