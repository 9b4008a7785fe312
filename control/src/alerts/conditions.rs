//! What is wrong now, for each rule: read from the store's state, the live sessions and
//! the traffic history. Each problem names its subject, so one rule watches many things.

use super::engine::Problem;
use super::{Rule, RuleKind};
use crate::error::Error;
use crate::fleet::{Fleet, Health};
use crate::model::{CertState, State};
use crate::Control;
use kakuremichi_proto::ids::NodeKind;
use kakuremichi_proto::traffic::TrafficCounts;

/// The minutes of traffic the rate and latency rules look at.
pub const TRAFFIC_MINUTES: u64 = 5;
/// Fewer requests than this say nothing of a tunnel's error share.
const MIN_REQUESTS: u64 = 20;

/// Every rule's problems at `now` (Unix seconds).
pub fn now(control: &Control, rules: &[Rule], now: u64) -> Result<Vec<Problem>, Error> {
    if rules.is_empty() {
        return Ok(Vec::new());
    }
    let state = control.store.shared_state()?;
    let fleet = Fleet::now(&control.hub, &state);
    let traffic = match rules
        .iter()
        .any(|r| matches!(r.kind, RuleKind::ErrorRate | RuleKind::LatencyP99))
    {
        true => {
            let ids = state.tunnels.iter().map(|t| t.id.as_str());
            let minute = now / kakuremichi_proto::traffic::MINUTE_SECONDS;
            control.traffic.recent(ids, TRAFFIC_MINUTES, minute)?
        }
        false => Vec::new(),
    };
    let mut problems = Vec::new();
    for rule in rules {
        let mut found = |subject: String, message: String| {
            problems.push(Problem {
                rule_id: rule.id.clone(),
                subject,
                message,
            })
        };
        match rule.kind {
            RuleKind::NodeOffline | RuleKind::GatewayDegraded => {
                for node in state.nodes.iter().filter(|n| !n.disabled) {
                    match (rule.kind, fleet.health(node)) {
                        (RuleKind::NodeOffline, (Health::Down, why)) => found(
                            node.id.clone(),
                            format!("{} {} is offline: {why}", node.kind.as_str(), node.name),
                        ),
                        (RuleKind::GatewayDegraded, (Health::Degraded, why))
                            if node.kind == NodeKind::Gateway =>
                        {
                            found(
                                node.id.clone(),
                                format!("gateway {} is degraded: {why}", node.name),
                            )
                        }
                        _ => {}
                    }
                }
            }
            RuleKind::AgentOnFallback => {
                for node in state.nodes.iter().filter(|n| n.kind == NodeKind::Agent) {
                    let presence = control.hub.presence(&node.id);
                    let Some(status) = presence.status.filter(|_| presence.online) else {
                        continue;
                    };
                    if let Some(problem) =
                        status.problems.iter().find(|p| p.contains("reached over"))
                    {
                        found(node.id.clone(), format!("agent {}: {problem}", node.name))
                    }
                }
            }
            RuleKind::TargetFailing => {
                for tunnel in tunnels(&state, rule) {
                    for (agent, failure) in
                        crate::pages::tunnels::origin_failures(tunnel, &control.hub)
                    {
                        let agent = state.node(&agent).map_or(agent.clone(), |n| n.name.clone());
                        found(
                            format!("{}@{agent}", tunnel.id),
                            format!(
                                "tunnel {}: agent {agent} cannot reach {} ({})",
                                tunnel.label(),
                                failure.target,
                                failure.error
                            ),
                        )
                    }
                }
            }
            RuleKind::Certificate => {
                let days = rule.threshold.unwrap_or(14.0).max(0.0) as u64;
                for cert in &state.certificates {
                    let left = cert.not_after.saturating_sub(now) / 86_400;
                    match cert.state {
                        CertState::Failed => found(
                            cert.hostname.to_string(),
                            format!(
                                "certificate for {} failing: {}",
                                cert.hostname,
                                cert.last_error.as_deref().unwrap_or("no reason recorded")
                            ),
                        ),
                        CertState::Valid if cert.not_after < now + days * 86_400 => found(
                            cert.hostname.to_string(),
                            format!("certificate for {} expires in {left} days", cert.hostname),
                        ),
                        _ => {}
                    }
                }
            }
            RuleKind::ErrorRate | RuleKind::LatencyP99 => {
                for tunnel in tunnels(&state, rule) {
                    let Some((_, counts)) = traffic.iter().find(|(id, _)| *id == tunnel.id) else {
                        continue;
                    };
                    if let Some(message) = over(rule, counts) {
                        found(
                            tunnel.id.clone(),
                            format!("tunnel {}: {message}", tunnel.label()),
                        );
                    }
                }
            }
        }
    }
    Ok(problems)
}

/// The tunnels a rule watches.
fn tunnels<'a>(
    state: &'a State,
    rule: &'a Rule,
) -> impl Iterator<Item = &'a crate::model::TunnelRecord> {
    (state.tunnels.iter())
        .filter(|t| t.spec.enabled)
        .filter(move |t| rule.tunnel.as_ref().is_none_or(|id| *id == t.id))
}

/// Whether a tunnel's recent traffic crosses a rate or latency rule, and how.
fn over(rule: &Rule, counts: &TrafficCounts) -> Option<String> {
    match rule.kind {
        RuleKind::ErrorRate => {
            let (requests, errors) = (counts.requests(), counts.status[4]);
            let share = 100.0 * errors as f64 / requests.max(1) as f64;
            (requests >= MIN_REQUESTS && share >= rule.threshold.unwrap_or(10.0)).then(|| {
                format!("{share:.0} % of {requests} requests answered 5xx in the last {TRAFFIC_MINUTES} minutes")
            })
        }
        RuleKind::LatencyP99 => {
            let p99 = counts.latency.quantile(0.99)? as f64 / 1000.0;
            (p99 > rule.threshold.unwrap_or(1000.0))
                .then(|| format!("p99 latency {p99:.0} ms over the last {TRAFFIC_MINUTES} minutes"))
        }
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rule(kind: RuleKind, threshold: f64) -> Rule {
        Rule {
            id: "rul_1".into(),
            name: "r".into(),
            kind,
            for_secs: 0,
            threshold: Some(threshold),
            tunnel: None,
            channels: Vec::new(),
        }
    }

    #[test]
    fn rates_need_enough_requests_and_latency_its_threshold() {
        let mut counts = TrafficCounts::default();
        for i in 0..19 {
            counts.answered(if i < 10 { 502 } else { 200 });
            counts.latency.record(300_000);
        }
        assert_eq!(
            over(&rule(RuleKind::ErrorRate, 10.0), &counts),
            None,
            "19 requests say nothing"
        );
        counts.answered(200);
        let message = over(&rule(RuleKind::ErrorRate, 10.0), &counts).unwrap();
        assert!(message.starts_with("50 % of 20 requests"), "{message}");
        assert_eq!(over(&rule(RuleKind::ErrorRate, 60.0), &counts), None);
        assert!(over(&rule(RuleKind::LatencyP99, 250.0), &counts).is_some());
        assert!(over(&rule(RuleKind::LatencyP99, 400.0), &counts).is_none());
    }
}
