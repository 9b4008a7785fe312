//! The dashboard: what runs, and what needs attention first.

use super::layout;
use crate::auth::UserRecord;
use crate::hub::Hub;
use crate::model::{CertState, State};
use crate::traffic::series::Series;
use kakuremichi_proto::ids::NodeKind;
use kakuremichi_proto::traffic::TrafficCounts;
use maud::{html, Markup};

/// Counts and problems drawn from the store and the live sessions.
pub struct Overview {
    pub agents: (usize, usize),
    pub gateways: (usize, usize),
    pub tunnels: usize,
    pub tunnels_disabled: usize,
    pub certificates_valid: usize,
    /// What needs a look, worst first.
    pub attention: Vec<String>,
    /// Every tunnel's traffic over the last day.
    pub traffic: Series,
}

/// A tunnel needs a look when at least this share of its recent answers were 5xx…
const ERROR_SHARE: f64 = 0.1;
/// …of at least this many requests, over [`RECENT_MINUTES`].
const ERROR_MIN_REQUESTS: u64 = 20;
/// The minutes the dashboard looks back for tunnels that answer errors.
pub const RECENT_MINUTES: u64 = 15;

impl Overview {
    /// Online and total per node kind, tunnels, and problems: nodes offline or degraded,
    /// tunnels whose origin fails, certificates failing, expiring or missing (every issuer).
    /// `recent` is what tunnels moved over the last [`RECENT_MINUTES`]: those answering
    /// mostly errors, or not at all, are problems too.
    pub fn of(
        state: &State,
        hub: &Hub,
        (recent, firing): (&[(String, TrafficCounts)], &[crate::alerts::engine::Firing]),
        traffic: Series,
    ) -> Overview {
        let fleet = crate::fleet::Fleet::now(hub, state);
        let count = |kind| {
            let nodes: Vec<_> = state.nodes.iter().filter(|n| n.kind == kind).collect();
            let online = nodes.iter().filter(|n| fleet.is_online(&n.id)).count();
            (online, nodes.len())
        };
        // Alerts that fire come first: someone was told of them.
        let mut attention: Vec<String> = (firing.iter())
            .map(|f| {
                format!(
                    "Alert firing since {}: {}",
                    super::clock(f.since),
                    f.message
                )
            })
            .collect();
        let now = crate::auth::unix_now();
        for cert in &state.certificates {
            if cert.state == CertState::Valid && cert.not_after < now + 14 * 86_400 {
                attention.push(format!(
                    "Certificate for {} expires in {} days",
                    cert.hostname,
                    cert.not_after.saturating_sub(now) / 86_400
                ));
            }
            if cert.state == CertState::Failed {
                attention.push(format!(
                    "Certificate for {} failing: {}",
                    cert.hostname,
                    cert.last_error.as_deref().unwrap_or("no reason recorded")
                ));
            }
        }
        for (hostname, issuer) in crate::model::hostnames_without_certificate(state) {
            attention.push(match issuer {
                crate::model::Issuer::Manual => {
                    format!("Certificate for {hostname}: none uploaded yet (Certificates page)")
                }
                _ => format!("Certificate for {hostname}: not issued yet"),
            });
        }
        for node in &state.nodes {
            if node.disabled {
                continue;
            }
            match fleet.health(node) {
                (crate::fleet::Health::Healthy, _) => {}
                (crate::fleet::Health::Down, why) => {
                    attention.push(format!("{} {}: {why}", node.kind.as_str(), node.name))
                }
                (crate::fleet::Health::Degraded, why) => attention.push(format!(
                    "{} {} is degraded: {why}",
                    node.kind.as_str(),
                    node.name
                )),
            }
        }
        for tunnel in state.tunnels.iter().filter(|t| t.spec.enabled) {
            let failures = super::tunnels::origin_failures(tunnel, hub);
            let online = tunnel
                .spec
                .agents()
                .filter(|(a, _)| hub.is_online(a))
                .count();
            for (agent, failure) in &failures {
                let agent = state.node(agent).map_or(agent.clone(), |n| n.name.clone());
                let (what, rest) = match failures.len() >= online {
                    true => (" answers 502: its agent", ""),
                    false => (": agent", "; its other agents serve it"),
                };
                attention.push(format!(
                    "Tunnel {}{what} {agent} cannot reach {} ({}) since {}{rest}",
                    tunnel.label(),
                    failure.target,
                    failure.error,
                    super::clock(failure.since)
                ));
            }
        }
        for (tunnel, counts) in recent {
            let Ok(tunnel) = state.tunnel(tunnel) else {
                continue;
            };
            let (requests, errors) = (counts.requests(), counts.status[4]);
            if requests >= ERROR_MIN_REQUESTS && errors as f64 >= ERROR_SHARE * requests as f64 {
                attention.push(format!(
                    "Tunnel {} answered {:.0} % of {requests} requests with 5xx in the last \
                     {RECENT_MINUTES} minutes ({} got no answer from any agent)",
                    tunnel.label(),
                    100.0 * errors as f64 / requests as f64,
                    counts.failed_total()
                ));
            }
        }
        Overview {
            traffic,
            agents: count(NodeKind::Agent),
            gateways: count(NodeKind::Gateway),
            tunnels: state.tunnels.len(),
            tunnels_disabled: state.tunnels.iter().filter(|t| !t.spec.enabled).count(),
            certificates_valid: state
                .certificates
                .iter()
                .filter(|c| c.state == CertState::Valid)
                .count(),
            attention,
        }
    }
}

fn stat(label: &str, value: String, health: &str, note: Option<String>) -> Markup {
    html! {
        div.card.stat {
            span.muted { span class={"dot " (health)} {} (label) }
            b { (value) }
            @if let Some(note) = note {
                span.muted { (note) }
            }
        }
    }
}

fn health(online: usize, total: usize) -> &'static str {
    match (online, total) {
        (_, 0) => "",
        (o, t) if o == t => "good",
        (0, _) => "bad",
        _ => "warn",
    }
}

pub fn page(user: &UserRecord, csrf: &str, overview: &Overview) -> Markup {
    let (agents_on, agents) = overview.agents;
    let (gateways_on, gateways) = overview.gateways;
    layout(
        "Dashboard",
        Some((user, csrf)),
        html! {
            h1 { "Dashboard" }
            div.stats {
                (stat("Gateways online", format!("{gateways_on} / {gateways}"), health(gateways_on, gateways), None))
                (stat("Agents online", format!("{agents_on} / {agents}"), health(agents_on, agents), None))
                (stat("Tunnels", overview.tunnels.to_string(), "",
                    (overview.tunnels_disabled > 0).then(|| format!("{} disabled", overview.tunnels_disabled))))
                (stat("Certificates valid", overview.certificates_valid.to_string(), "", None))
            }
            script { (maud::PreEscaped(super::REFRESH_SCRIPT)) }
            h2 { "Needs attention" }
            div.card {
                @if overview.attention.is_empty() {
                    p.muted { "Nothing: every node is healthy, every origin answers and every certificate is fine." }
                } @else {
                    ul.attention {
                        @for item in &overview.attention {
                            li { span.dot.bad {} (item) }
                        }
                    }
                }
            }
            div.card { (super::charts::traffic(&overview.traffic, "/")) }
        },
    )
}
