//! The Alerts page: what fires now, the rules, the channels and the latest deliveries.

use super::{clock, layout};
use crate::alerts::{ChannelKind, RuleKind};
use crate::api::alerts::AlertsView;
use crate::auth::{Role, UserRecord};
use maud::{html, Markup};

fn threshold_of(kind: RuleKind, threshold: Option<f64>) -> String {
    let value = |default: f64| threshold.unwrap_or(default);
    match kind {
        RuleKind::Certificate => format!(" within {} days", value(14.0)),
        RuleKind::ErrorRate => format!(", {} % or more", value(10.0)),
        RuleKind::LatencyP99 => format!(", above {} ms", value(1000.0)),
        _ => String::new(),
    }
}

pub fn page(
    user: &UserRecord,
    csrf: &str,
    view: &AlertsView,
    tunnels: &[(String, String)],
    every_secs: u64,
    refusal: Option<&str>,
) -> Markup {
    let admin = user.role == Role::Admin;
    let channel_name = |id: &str| {
        (view.channels.iter().find(|c| c.id == id)).map_or(id.to_string(), |c| c.name.clone())
    };
    layout(
        "Alerts",
        Some((user, csrf)),
        html! {
            h1 { "Alerts" }
            @if let Some(refusal) = refusal { p.notice.bad role="alert" { (refusal) } }
            h2 { "Firing now" }
            div.card {
                @if view.firing.is_empty() {
                    p.muted { "Nothing is firing. Rules are looked at every " (every_secs) " seconds." }
                } @else {
                    ul.attention {
                        @for firing in &view.firing {
                            li { span.dot.bad {} (firing.message) span.muted { " · since " (clock(firing.since)) } }
                        }
                    }
                }
            }
            h2 { "Rules" }
            div.card {
                @if view.rules.is_empty() {
                    p.muted { "No rule yet: nobody hears of problems until one is added." }
                } @else {
                    div.table {
                        table {
                            thead { tr { th { "Rule" } th { "Fires when" } th { "For" } th { "Tells" } @if admin { th {} } } }
                            tbody {
                                @for rule in &view.rules {
                                    tr {
                                        td data-label="Rule" { (rule.name) }
                                        td data-label="Fires when" {
                                            (rule.kind.describe()) (threshold_of(rule.kind, rule.threshold))
                                            @if let Some(tunnel) = &rule.tunnel { span.muted { " (" (tunnel) ")" } }
                                        }
                                        td data-label="For" { (rule.for_secs) " s" }
                                        td data-label="Tells" {
                                            @if rule.channels.is_empty() { "every channel" }
                                            @else { (rule.channels.iter().map(|c| channel_name(c)).collect::<Vec<_>>().join(", ")) }
                                        }
                                        @if admin {
                                            td.row-actions {
                                                form.inline method="post" action={"/alerts/rules/" (rule.id) "/delete"} {
                                                    input type="hidden" name="csrf" value=(csrf);
                                                    button.small type="submit" { "Delete" }
                                                }
                                            }
                                        }
                                    }
                                }
                            }
                        }
                    }
                }
                @if admin {
                    hr;
                    form.stacked method="post" action="/alerts/rules" {
                        input type="hidden" name="csrf" value=(csrf);
                        label { "Name" input type="text" name="name" required placeholder="origin down"; }
                        label { "Fires when"
                            select name="kind" {
                                @for kind in RuleKind::ALL { option value=(kind.as_str()) { (kind.describe()) } }
                            }
                        }
                        label { "N (days, percent or ms; empty: 14 days, 10 %, 1000 ms)" input type="number" name="threshold" step="any" min="0"; }
                        label { "For at least (seconds; empty: 60)" input type="number" name="for_secs" min="0" max="86400"; }
                        label { "Tunnel"
                            select name="tunnel" {
                                option value="" { "every tunnel" }
                                @for (id, label) in tunnels { option value=(id) { (label) } }
                            }
                        }
                        div.actions { button type="submit" { "Add rule" } }
                    }
                }
            }
            h2 { "Channels" }
            div.card {
                @if view.channels.is_empty() {
                    p.muted { "No channel yet: add a webhook, ntfy, Gotify, Discord, Slack or e-mail." }
                } @else {
                    div.table {
                        table {
                            thead { tr { th { "Channel" } th { "Kind" } th { "To" } @if admin { th {} } } }
                            tbody {
                                @for channel in &view.channels {
                                    tr {
                                        td data-label="Channel" { (channel.name) }
                                        td data-label="Kind" { (channel.kind) @if channel.signed { span.muted { " · signed" } } }
                                        td data-label="To" { code { (channel.to) } }
                                        @if admin {
                                            td.row-actions {
                                                form.inline method="post" action={"/alerts/channels/" (channel.id) "/test"} {
                                                    input type="hidden" name="csrf" value=(csrf);
                                                    button.small type="submit" { "Send test" }
                                                }
                                                " "
                                                form.inline method="post" action={"/alerts/channels/" (channel.id) "/delete"} {
                                                    input type="hidden" name="csrf" value=(csrf);
                                                    button.small type="submit" { "Delete" }
                                                }
                                            }
                                        }
                                    }
                                }
                            }
                        }
                    }
                }
                @if admin {
                    hr;
                    form.stacked method="post" action="/alerts/channels" {
                        input type="hidden" name="csrf" value=(csrf);
                        label { "Name" input type="text" name="name" required placeholder="on-call phone"; }
                        label { "Kind"
                            select name="kind" {
                                @for kind in ChannelKind::ALL { option value=(kind.as_str()) { (kind.as_str()) } }
                            }
                        }
                        label { "URL (every kind but e-mail)" input type="url" name="url" placeholder="https://ntfy.sh/my-topic"; }
                        label { "Webhook secret (signs each body: X-Kakuremichi-Signature: sha256=…)" input type="password" name="secret" autocomplete="off"; }
                        details {
                            summary { "E-mail settings" }
                            label { "SMTP server (host:port)" input type="text" name="smtp_server" placeholder="smtp.example.com:587"; }
                            label { "Security"
                                select name="smtp_security" {
                                    option value="starttls" { "STARTTLS" }
                                    option value="tls" { "TLS (port 465)" }
                                    option value="none" { "none (a relay on this network)" }
                                }
                            }
                            label { "User" input type="text" name="smtp_username" autocomplete="off"; }
                            label { "Password" input type="password" name="smtp_password" autocomplete="off"; }
                            label { "From" input type="email" name="mail_from"; }
                            label { "To" input type="email" name="mail_to"; }
                        }
                        div.actions { button type="submit" { "Add channel" } }
                    }
                }
            }
            h2 { "Deliveries" }
            script { (maud::PreEscaped(super::REFRESH_SCRIPT)) }
            @if view.waiting > 0 { p.muted { (view.waiting) " waiting for a retry." } }
            @if view.deliveries.is_empty() {
                div.card { p.muted { "Nothing sent yet." } }
            } @else {
                div.card.table {
                    table {
                        thead { tr { th { "When" } th { "Notice" } th { "Channel" } th { "Outcome" } } }
                        tbody {
                            @for d in &view.deliveries {
                                tr {
                                    td data-label="When" { (clock(d.at)) }
                                    td data-label="Notice" { (d.state) ": " (d.rule) " · " (d.subject) }
                                    td data-label="Channel" { (channel_name(&d.channel)) }
                                    td data-label="Outcome" {
                                        span class={"dot " (match d.outcome.as_str() { "delivered" => "good", "retrying" => "warn", _ => "bad" })} {}
                                        (d.outcome) " after " (d.attempts) (if d.attempts == 1 { " attempt" } else { " attempts" })
                                        ", " (d.delay_secs) " s after the notice"
                                        @if let Some(error) = &d.error { br; span.muted { (error) } }
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
