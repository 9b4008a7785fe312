//! Alerts: rules say which problems matter and for how long; channels say where a person
//! hears of them. Every [`Alerts::every`] Control looks at what is wrong now
//! ([`conditions`]), the [`engine`] turns a problem that lasted a rule's duration into one
//! "firing" notice and its end into one "resolved" notice, and [`deliver`] sends each to
//! the rule's channels, retrying with backoff until the channel takes it.
//!
//! Rules and channels are kept in the store (`alert_rules`, `alert_channels`); which
//! problems are firing is kept there too, so a restarted Control neither repeats a firing
//! nor forgets to resolve one. Deliveries waiting for a retry live in memory.

pub mod conditions;
pub mod deliver;
pub mod engine;
pub mod spec;

use crate::error::Error;
use crate::Control;
use serde::{Deserialize, Serialize};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// Meta keys of the rules, the channels and what is firing.
pub const RULES: &str = "alert_rules";
pub const CHANNELS: &str = "alert_channels";
pub const FIRING: &str = "alert_firing";

/// What a rule watches.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum RuleKind {
    /// An enabled agent or gateway is offline.
    NodeOffline,
    /// A gateway serves with something wrong (peers missing, a port refused).
    GatewayDegraded,
    /// An agent reaches a gateway only over TCP or TLS: its network drops UDP.
    AgentOnFallback,
    /// A tunnel's target refuses connections or fails its check.
    TargetFailing,
    /// A certificate fails to renew, or expires within `threshold` days (default 14).
    Certificate,
    /// A tunnel answered at least `threshold` percent 5xx over the last 5 minutes (of 20
    /// requests or more).
    ErrorRate,
    /// A tunnel's p99 latency over the last 5 minutes is above `threshold` milliseconds.
    LatencyP99,
}

impl RuleKind {
    pub const ALL: [RuleKind; 7] = [
        RuleKind::NodeOffline,
        RuleKind::GatewayDegraded,
        RuleKind::AgentOnFallback,
        RuleKind::TargetFailing,
        RuleKind::Certificate,
        RuleKind::ErrorRate,
        RuleKind::LatencyP99,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            RuleKind::NodeOffline => "node_offline",
            RuleKind::GatewayDegraded => "gateway_degraded",
            RuleKind::AgentOnFallback => "agent_on_fallback",
            RuleKind::TargetFailing => "target_failing",
            RuleKind::Certificate => "certificate",
            RuleKind::ErrorRate => "error_rate",
            RuleKind::LatencyP99 => "latency_p99",
        }
    }

    /// What a person reads in the pages.
    pub fn describe(self) -> &'static str {
        match self {
            RuleKind::NodeOffline => "an agent or gateway is offline",
            RuleKind::GatewayDegraded => "a gateway is degraded",
            RuleKind::AgentOnFallback => "an agent reaches a gateway only over TCP/TLS",
            RuleKind::TargetFailing => "a tunnel's target fails",
            RuleKind::Certificate => "a certificate fails or expires within N days",
            RuleKind::ErrorRate => "a tunnel answers N % or more 5xx",
            RuleKind::LatencyP99 => "a tunnel's p99 latency is above N ms",
        }
    }
}

/// One rule.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Rule {
    pub id: String,
    pub name: String,
    pub kind: RuleKind,
    /// How long a problem lasts before the rule fires.
    pub for_secs: u64,
    /// Days, percent or milliseconds, by kind.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub threshold: Option<f64>,
    /// Only this tunnel (tunnel kinds); none: every tunnel.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tunnel: Option<String>,
    /// The channels it notifies; empty: every channel.
    #[serde(default)]
    pub channels: Vec<String>,
}

/// How a channel is reached.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum ChannelKind {
    /// A JSON POST, signed with HMAC-SHA256 of the body in `X-Kakuremichi-Signature`.
    Webhook,
    /// An ntfy topic URL.
    Ntfy,
    /// A Gotify `/message?token=…` URL.
    Gotify,
    /// A Discord webhook URL.
    Discord,
    /// A Slack incoming-webhook URL.
    Slack,
    /// Mail over SMTP.
    Email,
}

impl ChannelKind {
    pub const ALL: [ChannelKind; 6] = [
        ChannelKind::Webhook,
        ChannelKind::Ntfy,
        ChannelKind::Gotify,
        ChannelKind::Discord,
        ChannelKind::Slack,
        ChannelKind::Email,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            ChannelKind::Webhook => "webhook",
            ChannelKind::Ntfy => "ntfy",
            ChannelKind::Gotify => "gotify",
            ChannelKind::Discord => "discord",
            ChannelKind::Slack => "slack",
            ChannelKind::Email => "email",
        }
    }
}

/// SMTP security.
#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema,
)]
#[serde(rename_all = "snake_case")]
pub enum SmtpSecurity {
    /// Plain, then STARTTLS (required).
    #[default]
    Starttls,
    /// TLS from the first byte (port 465).
    Tls,
    /// No TLS: only for a relay on the same host or network.
    None,
}

/// Where mail goes.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Smtp {
    pub host: String,
    pub port: u16,
    #[serde(default)]
    pub security: SmtpSecurity,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub username: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub password: Option<String>,
    pub from: String,
    pub to: String,
    /// PEM certificates to trust for the server's TLS besides the web's roots (a private CA
    /// or a self-signed relay).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ca_pem: Option<String>,
}

/// One channel. Its secret and SMTP password are never shown again.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Channel {
    pub id: String,
    pub name: String,
    pub kind: ChannelKind,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub url: Option<String>,
    /// Webhooks: the HMAC key.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub secret: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub smtp: Option<Smtp>,
}

/// The alerting part of Control: its timing and what it is doing.
pub struct Alerts {
    /// How often problems are looked at and due deliveries sent.
    pub every: Duration,
    pub engine: Mutex<engine::Engine>,
    pub outbox: Mutex<deliver::Outbox>,
}

impl Alerts {
    pub fn new(every: Duration) -> Alerts {
        Alerts {
            every,
            engine: Mutex::default(),
            outbox: Mutex::default(),
        }
    }

    pub fn outbox(&self) -> std::sync::MutexGuard<'_, deliver::Outbox> {
        self.outbox.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// A notice that only says the channel works, for its "send test".
pub fn test_notice(channel: &Channel, now: u64) -> engine::Notice {
    engine::Notice {
        id: format!("test/{}/{now}", channel.id),
        rule_id: "test".into(),
        rule: "test notice".into(),
        subject: channel.name.clone(),
        message: "a test notice from kakuremichi: this channel works".into(),
        state: "test",
        since: now,
        at: now,
    }
}

/// The rules in the store.
pub fn rules(control: &Control) -> Result<Vec<Rule>, Error> {
    Ok(control.store.meta(RULES)?.unwrap_or_default())
}

/// The channels in the store.
pub fn channels(control: &Control) -> Result<Vec<Channel>, Error> {
    Ok(control.store.meta(CHANNELS)?.unwrap_or_default())
}

/// Look at what is wrong and send what is due, every [`Alerts::every`], for as long as
/// Control runs.
pub async fn run(control: Arc<Control>) {
    match control.store.meta::<Vec<engine::Firing>>(FIRING) {
        Ok(Some(firing)) => control
            .alerts
            .engine
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .restore(firing),
        Ok(None) => {}
        Err(e) => log::warn!("alerts: what was firing could not be read: {e}"),
    }
    loop {
        async_io::Timer::after(control.alerts.every).await;
        if let Err(e) = evaluate(&control) {
            log::warn!("alerts: {e}");
        }
        deliver::send_due(&control).await;
    }
}

/// One look: problems now, notices for what started or ended, queued for their channels.
fn evaluate(control: &Control) -> Result<(), Error> {
    let rules = rules(control)?;
    let channels = channels(control)?;
    let now = kakuremichi_rt::unix_now();
    let problems = conditions::now(control, &rules, now)?;
    let (notices, firing) = {
        let mut engine = control
            .alerts
            .engine
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        let notices = engine.observe(now, &rules, problems);
        let changed = !notices.is_empty();
        (notices, changed.then(|| engine.firing()))
    };
    if let Some(firing) = firing {
        control.store.put_meta(FIRING, &firing)?;
    }
    let mut outbox = control.alerts.outbox();
    for notice in notices {
        let rule = rules.iter().find(|r| r.id == notice.rule_id);
        for channel in &channels {
            let wanted =
                rule.is_none_or(|r| r.channels.is_empty() || r.channels.contains(&channel.id));
            if wanted {
                outbox.queue(notice.clone(), &channel.id, now);
            }
        }
    }
    Ok(())
}
