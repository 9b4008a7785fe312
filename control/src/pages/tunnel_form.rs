//! Creating a tunnel, and confirming a tunnel's deletion.

use super::{field, layout, optional_field};
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
    pub kind: &'a str,
    pub hostname: &'a str,
    pub ports: &'a str,
    pub agent: &'a str,
    pub target: &'a str,
    pub issuer: &'a str,
    pub proxy_protocol: &'a str,
    pub skip_tls_verify: bool,
    pub path_prefix: &'a str,
    pub gateways: &'a str,
    /// Other agents, `agent=target` separated by commas.
    pub replicas: &'a str,
    pub host_header: &'a str,
    pub connect_timeout: &'a str,
    pub enabled: bool,
    /// The field at fault and why.
    pub error: Option<(&'a str, &'a str)>,
}

impl TunnelForm<'_> {
    fn error_for(&self, name: &str) -> Option<&str> {
        self.error.filter(|(f, _)| *f == name).map(|(_, m)| m)
    }
}

/// The fields the form shows errors beside; others are shown above it.
const FIELDS: [&str; 14] = [
    "gateways",
    "agents",
    "path_prefix",
    "origin",
    "host_header",
    "connect_timeout",
    "kind",
    "hostname",
    "ports",
    "port",
    "agent",
    "target",
    "issuer",
    "proxy_protocol",
];

const ISSUERS: [(&str, &str); 4] = [
    ("acme", "ACME (Let's Encrypt or the configured CA)"),
    ("internal", "Control's internal CA"),
    ("manual", "Uploaded certificate"),
    ("none", "None: plain HTTP"),
];

const KINDS: [(&str, &str); 4] = [
    ("http", "HTTP(S) by hostname: the gateways terminate TLS"),
    (
        "tls",
        "TLS passthrough by hostname: the origin keeps its own certificate",
    ),
    ("tcp", "TCP on public ports"),
    ("udp", "UDP on public ports"),
];

const PROXY_PROTOCOLS: [(&str, &str); 3] = [
    ("none", "None"),
    ("v1", "PROXY protocol v1 (text)"),
    ("v2", "PROXY protocol v2 (binary)"),
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
                @if let Some((field_name, message)) = form.error.filter(|(f, _)| !FIELDS.contains(f)) {
                    p.notice.bad role="alert" { (field_name) ": " (message) }
                }
                @if agents.is_empty() {
                    p.notice { "No agent yet: enrol one first (POST /api/v1/agents), then come back." }
                }
                form method="post" action=(action) {
                    input type="hidden" name="csrf" value=(csrf);
                    (choice("Kind", "kind", &KINDS, form.kind, form.error_for("kind")))
                    (optional_field("Public hostname (http and tls; optional label for tcp and udp)", "hostname", form.hostname, form.error_for("hostname")))
                    (optional_field("Path prefix, e.g. /api (http; empty: every path)", "path_prefix", form.path_prefix, form.error_for("path_prefix")))
                    (optional_field("Public port or range, e.g. 15432 or 20000-20010 (tcp and udp)", "ports", form.ports, form.error_for("ports").or(form.error_for("port"))))
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
                    (field("Target the agent forwards to (host:port as the agent sees it; https://host:port for an HTTPS origin, h2c://host:port for HTTP/2 without TLS such as gRPC)", "target", "text", form.target, form.error_for("target"), "off"))
                    (optional_field("More agents serving it (replicas): agent id=target, separated by commas; requests are spread over the healthy ones", "replicas", form.replicas, form.error_for("agents")))
                    (optional_field("Gateways: all (empty), ids separated by commas, or labels such as region=tokyo", "gateways", form.gateways, form.error_for("gateways")))
                    (choice("Certificate (http)", "issuer", &ISSUERS, form.issuer, form.error_for("issuer")))
                    (choice("Client address to the origin (tcp and tls)", "proxy_protocol", &PROXY_PROTOCOLS, form.proxy_protocol, form.error_for("proxy_protocol")))
                    details open[form.skip_tls_verify || !form.host_header.is_empty() || !form.connect_timeout.is_empty() || form.error_for("origin").is_some()] {
                        summary { "Origin options" }
                        label.check {
                            input type="checkbox" name="skip_tls_verify" value="true" checked[form.skip_tls_verify];
                            " Skip TLS verification of an https:// target (self-signed origins)"
                        }
                        @if let Some(error) = form.error_for("origin") { p.notice.bad role="alert" { (error) } }
                        (optional_field("Host header sent to the origin (empty: the client's)", "host_header", form.host_header, form.error_for("host_header")))
                        (optional_field("Connect timeout in seconds (empty: 5)", "connect_timeout", form.connect_timeout, form.error_for("connect_timeout")))
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

fn choice(
    label: &str,
    name: &str,
    options: &[(&str, &str)],
    chosen: &str,
    error: Option<&str>,
) -> Markup {
    html! {
        label.field {
            span { (label) }
            select name=(name) aria-invalid=[error.map(|_| "true")] {
                @for (value, text) in options {
                    option value=(value) selected[*value == chosen] { (text) }
                }
            }
            @if let Some(error) = error { span.error { (error) } }
        }
    }
}
