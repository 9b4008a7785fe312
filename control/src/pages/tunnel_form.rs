//! The form that creates and edits a tunnel: its fields, and how they map to and from the
//! fields the API takes.

use super::{field, layout, optional_field};
use crate::auth::UserRecord;
use crate::error::Error;
use crate::model::Issuer;
use crate::spec::{AgentTarget, OriginFields, TunnelFields};
use maud::{html, Markup};
use std::collections::HashMap;

/// An agent to choose, with whether it is online.
pub struct AgentChoice {
    pub id: String,
    pub name: String,
    pub online: bool,
}

/// What the form shows: each field's text by its name (as sent, or from a tunnel), and an
/// error for one field.
pub struct TunnelForm<'a> {
    pub values: HashMap<String, String>,
    /// The field at fault and why.
    pub error: Option<(&'a str, &'a str)>,
}

impl TunnelForm<'_> {
    fn error_for(&self, name: &str) -> Option<&str> {
        self.error.filter(|(f, _)| *f == name).map(|(_, m)| m)
    }

    fn value(&self, name: &str) -> &str {
        self.values.get(name).map_or("", |v| v.trim())
    }

    fn checked(&self, name: &str) -> bool {
        self.values.contains_key(name)
    }

    /// A new tunnel's form: enabled, with the default issuer.
    pub fn new(issuer: Issuer) -> Self {
        let values = [("issuer", issuer.as_str()), ("enabled", "true")];
        TunnelForm {
            values: values.map(|(k, v)| (k.to_string(), v.to_string())).into(),
            error: None,
        }
    }

    /// The form of a tunnel as it is, from the fields the API shows for it.
    pub fn of(fields: TunnelFields) -> Self {
        let mut values = HashMap::new();
        let mut set = |name: &str, value: String| {
            if !value.is_empty() {
                values.insert(name.to_string(), value);
            }
        };
        let text = |value: Option<String>| value.unwrap_or_default();
        set(
            "kind",
            fields.kind.map(|k| k.as_str().into()).unwrap_or_default(),
        );
        set("hostname", text(fields.hostname));
        set("ports", text(fields.ports));
        set("path_prefix", text(fields.path_prefix));
        set(
            "issuer",
            fields.issuer.map(|i| i.as_str().into()).unwrap_or_default(),
        );
        set(
            "proxy_protocol",
            fields.proxy_protocol.unwrap_or("none".into()),
        );
        let mut agents = fields.agents.unwrap_or_default().into_iter();
        if let Some(first) = agents.next() {
            set("agent", first.agent);
            set("target", first.target);
        }
        let replicas: Vec<String> = agents
            .map(|r| format!("{}={}", r.agent, r.target))
            .collect();
        set("replicas", replicas.join(", "));
        set(
            "gateways",
            fields.gateways.map(gateways_text).unwrap_or_default(),
        );
        let origin = fields.origin.unwrap_or_default();
        if origin.tls_verify == Some(false) {
            set("skip_tls_verify", "true".into());
        }
        set(
            "host_header",
            origin.host_header.flatten().unwrap_or_default(),
        );
        let timeout = origin.connect_timeout_secs.flatten();
        set(
            "connect_timeout",
            timeout.map(|s| s.to_string()).unwrap_or_default(),
        );
        set(
            "health_path",
            origin.health_path.flatten().unwrap_or_default(),
        );
        let interval = origin.health_interval_secs.flatten();
        set(
            "health_interval",
            interval.map(|s| s.to_string()).unwrap_or_default(),
        );
        if fields.enabled == Some(true) {
            set("enabled", "true".into());
        }
        TunnelForm {
            values,
            error: None,
        }
    }

    /// What the form sent, as the fields the API takes, so one reader ([`TunnelFields::build`])
    /// checks both: every field the form shows is sent (an edit changes them all), empty ones
    /// as "none" where the API says so. `agent=target, …` are the other agents.
    pub fn fields(&self) -> Result<TunnelFields, Error> {
        let given = |name: &str| Some(self.value(name).to_string()).filter(|v| !v.is_empty());
        let required =
            |name: &'static str| given(name).ok_or_else(|| Error::invalid(name, "is required"));
        let mut agents = vec![AgentTarget {
            agent: required("agent")?,
            target: required("target")?,
        }];
        for entry in self.value("replicas").split([',', '\n']).map(str::trim) {
            if entry.is_empty() {
                continue;
            }
            let (agent, target) = entry.split_once('=').ok_or_else(|| {
                Error::invalid("agents", format!("{entry:?} is not agent id=target"))
            })?;
            agents.push(AgentTarget {
                agent: agent.trim().to_string(),
                target: target.trim().to_string(),
            });
        }
        let connect_timeout = match given("connect_timeout") {
            None => None,
            Some(text) => Some(text.parse::<u64>().map_err(|_| {
                Error::invalid("connect_timeout", "must be a whole number of seconds")
            })?),
        };
        let health_interval = match given("health_interval") {
            None => None,
            Some(text) => Some(text.parse::<u64>().map_err(|_| {
                Error::invalid("health_interval", "must be a whole number of seconds")
            })?),
        };
        Ok(TunnelFields {
            kind: given("kind").map(|raw| raw.parse()).transpose()?,
            hostname: given("hostname"),
            ports: given("ports"),
            issuer: given("issuer")
                .map(|raw| raw.parse())
                .transpose()
                .map_err(|e| Error::invalid("issuer", crate::spec::reason(e)))?,
            proxy_protocol: Some(given("proxy_protocol").unwrap_or("none".into())),
            path_prefix: Some(given("path_prefix").unwrap_or("/".into())),
            gateways: Some(given("gateways").unwrap_or("all".into()).into()),
            agents: Some(agents),
            origin: Some(OriginFields {
                tls_verify: Some(!self.checked("skip_tls_verify")),
                host_header: Some(given("host_header")),
                connect_timeout_secs: Some(connect_timeout),
                health_path: Some(given("health_path")),
                health_interval_secs: Some(health_interval),
                ..OriginFields::default()
            }),
            enabled: Some(self.checked("enabled")),
            ..TunnelFields::default()
        })
    }
}

/// The gateways as the API shows them (`"all"`, a label selector, or a list of ids), as
/// the form's one line.
fn gateways_text(shown: serde_json::Value) -> String {
    match shown {
        serde_json::Value::Array(ids) => {
            let ids: Vec<&str> = ids.iter().filter_map(|id| id.as_str()).collect();
            ids.join(",")
        }
        serde_json::Value::String(text) => text,
        _ => String::new(),
    }
}

/// The fields the form shows errors beside; others are shown above it.
const FIELDS: [&str; 16] = [
    "health_path",
    "health_interval",
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
                    (choice("Kind", "kind", &KINDS, form.value("kind"), form.error_for("kind")))
                    (optional_field("Public hostname (http and tls; optional label for tcp and udp)", "hostname", form.value("hostname"), form.error_for("hostname")))
                    (optional_field("Path prefix, e.g. /api (http; empty: every path)", "path_prefix", form.value("path_prefix"), form.error_for("path_prefix")))
                    (optional_field("Public port or range, e.g. 15432 or 20000-20010 (tcp and udp)", "ports", form.value("ports"), form.error_for("ports").or(form.error_for("port"))))
                    label.field {
                        span { "Agent" }
                        select name="agent" required aria-invalid=[form.error_for("agent").map(|_| "true")] {
                            @for agent in agents {
                                option value=(agent.id) selected[agent.id == form.value("agent")] {
                                    (agent.name) @if agent.online { " (online)" } @else { " (offline)" }
                                }
                            }
                        }
                        @if let Some(error) = form.error_for("agent") { span.error { (error) } }
                    }
                    (field("Target the agent forwards to (host:port as the agent sees it; https://host:port for an HTTPS origin, h2c://host:port for HTTP/2 without TLS such as gRPC)", "target", "text", form.value("target"), form.error_for("target"), "off"))
                    (optional_field("More agents serving it (replicas): agent id=target, separated by commas; requests are spread over the healthy ones", "replicas", form.value("replicas"), form.error_for("agents")))
                    (optional_field("Gateways: all (empty), ids separated by commas, or labels such as region=tokyo", "gateways", form.value("gateways"), form.error_for("gateways")))
                    (choice("Certificate (http)", "issuer", &ISSUERS, form.value("issuer"), form.error_for("issuer")))
                    (choice("Client address to the origin (tcp and tls)", "proxy_protocol", &PROXY_PROTOCOLS, form.value("proxy_protocol"), form.error_for("proxy_protocol")))
                    details open[form.checked("skip_tls_verify") || !form.value("host_header").is_empty() || !form.value("connect_timeout").is_empty() || !form.value("health_path").is_empty() || !form.value("health_interval").is_empty() || form.error_for("origin").is_some()] {
                        summary { "Origin options" }
                        label.check {
                            input type="checkbox" name="skip_tls_verify" value="true" checked[form.checked("skip_tls_verify")];
                            " Skip TLS verification of an https:// target (self-signed origins)"
                        }
                        @if let Some(error) = form.error_for("origin") { p.notice.bad role="alert" { (error) } }
                        (optional_field("Host header sent to the origin (empty: the client's)", "host_header", form.value("host_header"), form.error_for("host_header")))
                        (optional_field("Connect timeout in seconds (empty: 5)", "connect_timeout", form.value("connect_timeout"), form.error_for("connect_timeout")))
                        (optional_field("Health check: a path the agent GETs, expecting 2xx or 3xx (empty: a TCP connect)", "health_path", form.value("health_path"), form.error_for("health_path")))
                        (optional_field("Seconds between health checks (empty: 30; 0: none)", "health_interval", form.value("health_interval"), form.error_for("health_interval")))
                    }
                    label.check {
                        input type="checkbox" name="enabled" value="true" checked[form.checked("enabled")];
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
