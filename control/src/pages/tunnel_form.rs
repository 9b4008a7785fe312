//! Creating a tunnel, and confirming a tunnel's deletion.

use super::{field, layout};
use crate::auth::UserRecord;
use maud::{html, Markup};

/// An agent to choose, with whether it is online.
pub struct AgentChoice {
    pub id: String,
    pub name: String,
    pub online: bool,
}

/// What the form shows: the values sent, and an error for one field.
#[derive(Default)]
pub struct TunnelForm<'a> {
    pub hostname: &'a str,
    pub agent: &'a str,
    pub target: &'a str,
    pub issuer: &'a str,
    pub enabled: bool,
    /// The field at fault and why.
    pub error: Option<(&'a str, &'a str)>,
}

impl TunnelForm<'_> {
    fn error_for(&self, name: &str) -> Option<&str> {
        self.error.filter(|(f, _)| *f == name).map(|(_, m)| m)
    }
}

const ISSUERS: [(&str, &str); 4] = [
    ("acme", "ACME (Let's Encrypt or the configured CA)"),
    ("internal", "Control's internal CA"),
    ("manual", "Uploaded certificate"),
    ("none", "None: plain HTTP"),
];

/// Where the form goes: a new tunnel, or changes to the tunnel with this id.
#[derive(Clone, Copy)]
pub enum Purpose<'a> {
    Create,
    Edit(&'a str),
}

pub fn form_page(
    user: &UserRecord,
    csrf: &str,
    agents: &[AgentChoice],
    form: &TunnelForm,
    purpose: Purpose,
) -> Markup {
    let (title, action, button) = match purpose {
        Purpose::Create => ("New tunnel", "/tunnels/new".to_string(), "Create tunnel"),
        Purpose::Edit(id) => ("Edit tunnel", format!("/tunnels/{id}/edit"), "Save"),
    };
    layout(
        title,
        Some((user, csrf)),
        html! {
            div.card.narrow.wide {
                h1 { (title) }
                @if let Some((field_name, message)) = form.error.filter(|(f, _)| !["hostname", "agent", "target", "issuer"].contains(f)) {
                    p.notice.bad role="alert" { (field_name) ": " (message) }
                }
                @if agents.is_empty() {
                    p.notice { "No agent yet: enrol one first (POST /api/v1/agents), then come back." }
                }
                form method="post" action=(action) {
                    input type="hidden" name="csrf" value=(csrf);
                    (field("Public hostname", "hostname", "text", form.hostname, form.error_for("hostname"), "off"))
                    label.field {
                        span { "Agent" }
                        select name="agent" required aria-invalid=[form.error_for("agent").map(|_| "true")] {
                            @for agent in agents {
                                option value=(agent.id) selected[agent.id == form.agent] {
                                    (agent.name) @if agent.online { " (online)" } @else { " (offline)" }
                                }
                            }
                        }
                        @if let Some(error) = form.error_for("agent") { span.error { (error) } }
                    }
                    (field("Target the agent forwards to (host:port, as the agent sees it)", "target", "text", form.target, form.error_for("target"), "off"))
                    label.field {
                        span { "Certificate" }
                        select name="issuer" {
                            @for (value, label) in ISSUERS {
                                option value=(value) selected[value == form.issuer] { (label) }
                            }
                        }
                        @if let Some(error) = form.error_for("issuer") { span.error { (error) } }
                    }
                    label.check {
                        input type="checkbox" name="enabled" value="true" checked[form.enabled];
                        " Enabled"
                    }
                    div.actions {
                        button type="submit" { (button) }
                        a href="/tunnels" { "Cancel" }
                    }
                }
            }
        },
    )
}
