//! `kakuremichi-control alert …`: alert rules and channels from a shell, through the running
//! Control's API (the same bodies the API and the pages read).

use crate::alerts::spec::{NewChannel, NewRule};
use crate::alerts::{ChannelKind, RuleKind, SmtpSecurity};
use argh::FromArgs;
use serde_json::Value;

/// list, add and delete alert rules and channels, and send a channel a test notice, through
/// the running Control (as the API does)
#[derive(FromArgs)]
#[argh(subcommand, name = "alert")]
pub struct AlertCommand {
    /// an API token (or env KAKUREMICHI_TOKEN); `token create` makes one
    #[argh(option)]
    pub token: Option<String>,
    #[argh(subcommand)]
    action: AlertAction,
}

#[derive(FromArgs)]
#[argh(subcommand)]
enum AlertAction {
    List(List),
    AddRule(AddRule),
    DeleteRule(DeleteRule),
    AddChannel(AddChannel),
    DeleteChannel(DeleteChannel),
    Test(Test),
}

/// rules, channels (never their secrets), what fires and the latest deliveries, as JSON
#[derive(FromArgs)]
#[argh(subcommand, name = "list")]
struct List {}

/// add a rule
#[derive(FromArgs)]
#[argh(subcommand, name = "add-rule")]
struct AddRule {
    /// its name
    #[argh(option)]
    name: String,
    /// node_offline, gateway_degraded, agent_on_fallback, target_failing, certificate,
    /// error_rate or latency_p99
    #[argh(option, from_str_fn(rule_kind))]
    kind: RuleKind,
    /// seconds a problem lasts before the rule fires (default 60)
    #[argh(option)]
    for_secs: Option<u64>,
    /// days (certificate), percent (error_rate) or milliseconds (latency_p99)
    #[argh(option)]
    threshold: Option<f64>,
    /// only this tunnel's id
    #[argh(option)]
    tunnel: Option<String>,
    /// a channel id to tell (repeat for more; none: every channel)
    #[argh(option)]
    channel: Vec<String>,
}

/// delete a rule
#[derive(FromArgs)]
#[argh(subcommand, name = "delete-rule")]
struct DeleteRule {
    /// the rule's id
    #[argh(positional)]
    id: String,
}

/// add a channel
#[derive(FromArgs)]
#[argh(subcommand, name = "add-channel")]
struct AddChannel {
    /// its name
    #[argh(option)]
    name: String,
    /// webhook, ntfy, gotify, discord, slack or email
    #[argh(option, from_str_fn(channel_kind))]
    kind: ChannelKind,
    /// the URL (every kind but email)
    #[argh(option)]
    url: Option<String>,
    /// webhooks: the HMAC-SHA256 key (or env KAKUREMICHI_ALERT_SECRET)
    #[argh(option)]
    secret: Option<String>,
    /// email: host:port of the SMTP server
    #[argh(option)]
    smtp_server: Option<String>,
    /// email: starttls (default), tls or none
    #[argh(option, from_str_fn(smtp_security))]
    smtp_security: Option<SmtpSecurity>,
    /// email: the SMTP user
    #[argh(option)]
    smtp_username: Option<String>,
    /// email: the SMTP password is in env KAKUREMICHI_SMTP_PASSWORD (not on the command line)
    #[argh(switch)]
    smtp_password_from_env: bool,
    /// email: the sender
    #[argh(option)]
    mail_from: Option<String>,
    /// email: the recipient
    #[argh(option)]
    mail_to: Option<String>,
}

/// delete a channel (and its place in every rule)
#[derive(FromArgs)]
#[argh(subcommand, name = "delete-channel")]
struct DeleteChannel {
    /// the channel's id
    #[argh(positional)]
    id: String,
}

/// send a channel a test notice now
#[derive(FromArgs)]
#[argh(subcommand, name = "test")]
struct Test {
    /// the channel's id
    #[argh(positional)]
    id: String,
}

fn named<T: Copy + serde::Serialize>(all: &[T], given: &str) -> Result<T, String> {
    let name = |k: &T| {
        serde_json::to_value(k)
            .ok()
            .and_then(|v| v.as_str().map(str::to_string))
    };
    all.iter()
        .find(|k| name(k).as_deref() == Some(given))
        .copied()
        .ok_or_else(|| {
            let names: Vec<String> = all.iter().filter_map(name).collect();
            format!("one of {}", names.join(", "))
        })
}

fn rule_kind(given: &str) -> Result<RuleKind, String> {
    named(&RuleKind::ALL, given)
}

fn channel_kind(given: &str) -> Result<ChannelKind, String> {
    named(&ChannelKind::ALL, given)
}

fn smtp_security(given: &str) -> Result<SmtpSecurity, String> {
    named(
        &[
            SmtpSecurity::Starttls,
            SmtpSecurity::Tls,
            SmtpSecurity::None,
        ],
        given,
    )
}

impl AlertCommand {
    /// The API call the command makes: method, path under `/api/v1`, body.
    pub fn request(self) -> Result<(&'static str, String, Option<Value>), String> {
        Ok(match self.action {
            AlertAction::List(_) => ("GET", "alerts".into(), None),
            AlertAction::AddRule(a) => {
                let rule = NewRule {
                    name: a.name,
                    kind: Some(a.kind),
                    for_secs: a.for_secs,
                    threshold: a.threshold,
                    tunnel: a.tunnel,
                    channels: (!a.channel.is_empty()).then_some(a.channel),
                };
                ("POST", "alerts/rules".into(), Some(body(&rule)?))
            }
            AlertAction::DeleteRule(d) => ("DELETE", format!("alerts/rules/{}", d.id), None),
            AlertAction::AddChannel(a) => {
                let env = |name: &str| std::env::var(name).ok().filter(|v| !v.is_empty());
                let channel = NewChannel {
                    name: a.name,
                    kind: Some(a.kind),
                    url: a.url,
                    secret: a.secret.or_else(|| env("KAKUREMICHI_ALERT_SECRET")),
                    smtp_server: a.smtp_server,
                    smtp_security: a.smtp_security,
                    smtp_username: a.smtp_username,
                    smtp_password: match a.smtp_password_from_env {
                        true => Some(
                            env("KAKUREMICHI_SMTP_PASSWORD")
                                .ok_or("KAKUREMICHI_SMTP_PASSWORD is not set")?,
                        ),
                        false => None,
                    },
                    mail_from: a.mail_from,
                    mail_to: a.mail_to,
                    smtp_ca_pem: None,
                };
                ("POST", "alerts/channels".into(), Some(body(&channel)?))
            }
            AlertAction::DeleteChannel(d) => ("DELETE", format!("alerts/channels/{}", d.id), None),
            AlertAction::Test(t) => ("POST", format!("alerts/channels/{}/test", t.id), None),
        })
    }
}

/// `value` as JSON, without the fields left out.
fn body<T: serde::Serialize>(value: &T) -> Result<Value, String> {
    let mut value = serde_json::to_value(value).map_err(|e| e.to_string())?;
    if let Value::Object(fields) = &mut value {
        fields.retain(|_, v| !v.is_null());
    }
    Ok(value)
}
