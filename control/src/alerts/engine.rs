//! From problems seen at each look to notices: a problem must last its rule's `for_secs`
//! before it fires, fires once, and resolves once when it is gone. Pure: time comes in.

use super::Rule;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// Something wrong now that a rule watches.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Problem {
    pub rule_id: String,
    /// What it is about: a node, a tunnel, a hostname.
    pub subject: String,
    pub message: String,
}

/// A firing or resolving, as channels get it.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Notice {
    /// The same for the firing and its resolving: `rule/subject/since`.
    pub id: String,
    pub rule_id: String,
    pub rule: String,
    pub subject: String,
    pub message: String,
    /// `firing` or `resolved`.
    pub state: &'static str,
    /// Unix seconds the problem was first seen.
    pub since: u64,
    /// Unix seconds of this notice.
    pub at: u64,
}

/// A problem that fired and has not resolved, as the store keeps it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Firing {
    pub rule_id: String,
    pub subject: String,
    pub message: String,
    pub since: u64,
}

#[derive(Clone, Debug)]
struct Seen {
    since: u64,
    message: String,
    fired: bool,
}

/// Every problem seen, by (rule, subject).
#[derive(Debug, Default)]
pub struct Engine {
    seen: BTreeMap<(String, String), Seen>,
}

impl Engine {
    /// What was firing when Control stopped.
    pub fn restore(&mut self, firing: Vec<Firing>) {
        for f in firing {
            let seen = Seen {
                since: f.since,
                message: f.message,
                fired: true,
            };
            self.seen.insert((f.rule_id, f.subject), seen);
        }
    }

    /// What fires now, to keep.
    pub fn firing(&self) -> Vec<Firing> {
        (self.seen.iter())
            .filter(|(_, s)| s.fired)
            .map(|((rule_id, subject), s)| Firing {
                rule_id: rule_id.clone(),
                subject: subject.clone(),
                message: s.message.clone(),
                since: s.since,
            })
            .collect()
    }

    /// The problems of one look at `now`: the notices they cause.
    pub fn observe(&mut self, now: u64, rules: &[Rule], problems: Vec<Problem>) -> Vec<Notice> {
        let mut notices = Vec::new();
        let mut still = std::collections::BTreeSet::new();
        for problem in problems {
            let Some(rule) = rules.iter().find(|r| r.id == problem.rule_id) else {
                continue;
            };
            let key = (problem.rule_id.clone(), problem.subject.clone());
            still.insert(key.clone());
            let seen = self.seen.entry(key).or_insert(Seen {
                since: now,
                message: problem.message.clone(),
                fired: false,
            });
            if !seen.fired {
                seen.message = problem.message;
            }
            if !seen.fired && now.saturating_sub(seen.since) >= rule.for_secs {
                seen.fired = true;
                notices.push(notice(rule, &problem.subject, seen, "firing", now));
            }
        }
        let gone: Vec<(String, String)> = (self.seen.keys())
            .filter(|key| !still.contains(*key))
            .cloned()
            .collect();
        for key in gone {
            let Some(seen) = self.seen.remove(&key) else {
                continue;
            };
            if !seen.fired {
                continue;
            }
            // A rule deleted meanwhile resolves under its id.
            let rule = rules
                .iter()
                .find(|r| r.id == key.0)
                .cloned()
                .unwrap_or(Rule {
                    id: key.0.clone(),
                    name: key.0.clone(),
                    kind: super::RuleKind::NodeOffline,
                    for_secs: 0,
                    threshold: None,
                    tunnel: None,
                    channels: Vec::new(),
                });
            notices.push(notice(&rule, &key.1, &seen, "resolved", now));
        }
        notices
    }
}

fn notice(rule: &Rule, subject: &str, seen: &Seen, state: &'static str, now: u64) -> Notice {
    Notice {
        id: format!("{}/{subject}/{}", rule.id, seen.since),
        rule_id: rule.id.clone(),
        rule: rule.name.clone(),
        subject: subject.to_string(),
        message: seen.message.clone(),
        state,
        since: seen.since,
        at: now,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::alerts::RuleKind;

    fn rule(for_secs: u64) -> Rule {
        Rule {
            id: "rul_1".into(),
            name: "origin down".into(),
            kind: RuleKind::TargetFailing,
            for_secs,
            threshold: None,
            tunnel: None,
            channels: Vec::new(),
        }
    }

    fn problem(subject: &str) -> Problem {
        Problem {
            rule_id: "rul_1".into(),
            subject: subject.into(),
            message: format!("{subject} cannot reach its target"),
        }
    }

    /// A hundred looks a second apart: a problem that comes and goes faster than the rule's
    /// duration never fires; one that lasts fires once and resolves once.
    #[test]
    fn a_problem_fires_once_after_its_duration_and_resolves_once() {
        let rules = [rule(5)];
        let mut engine = Engine::default();
        let mut notices = Vec::new();
        for now in 1_000..1_100u64 {
            let flapping = (now % 6) < 3; // three seconds on, three off: never five
            let lasting = (1_020..1_060).contains(&now);
            let mut problems = Vec::new();
            if flapping {
                problems.push(problem("tun_flaps"));
            }
            if lasting {
                problems.push(problem("tun_down"));
            }
            notices.extend(engine.observe(now, &rules, problems));
        }
        let summary: Vec<(&str, &str, u64)> = notices
            .iter()
            .map(|n| (n.subject.as_str(), n.state, n.at))
            .collect();
        assert_eq!(
            summary,
            [
                ("tun_down", "firing", 1_025),
                ("tun_down", "resolved", 1_060)
            ]
        );
        assert_eq!(
            notices[0].id, notices[1].id,
            "a firing and its resolving share an id"
        );
    }

    #[test]
    fn what_fired_survives_a_restart_and_resolves_after_it() {
        let rules = [rule(0)];
        let mut engine = Engine::default();
        assert_eq!(engine.observe(10, &rules, vec![problem("gw_1")]).len(), 1);
        let kept = engine.firing();
        let mut restarted = Engine::default();
        restarted.restore(kept);
        assert!(
            restarted
                .observe(20, &rules, vec![problem("gw_1")])
                .is_empty(),
            "not again"
        );
        let resolved = restarted.observe(30, &rules, vec![]);
        assert_eq!(
            (resolved.len(), resolved[0].state, resolved[0].since),
            (1, "resolved", 10)
        );
    }
}
