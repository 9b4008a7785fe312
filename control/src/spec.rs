//! What callers send, as serde types: the API's bodies, the tunnel form (which fills a
//! [`TunnelFields`]) and the CLI's flags (which send one). [`read`] turns a JSON value into
//! one, naming the field of the first error and refusing fields the type does not have;
//! [`TunnelFields::build`] turns a tunnel's into the [`TunnelSpec`] the store keeps, for a
//! new tunnel or over the current one, and [`TunnelFields::of`] is the API's view of a
//! tunnel, so a field is read and shown in one place.

use crate::error::Error;
use crate::model::{GatewayChoice, Issuer, NodeRecord, OriginSettings};
use crate::model::{TunnelKind, TunnelRecord, TunnelSpec};
use crate::tunnels::{parse_path_prefix, parse_replica, parse_scheme_target};
use kakuremichi_proto::ports::PortRange;
use kakuremichi_proto::request_log::LogDetails;
use schemars::{json_schema, JsonSchema, Schema, SchemaGenerator};
use serde::de::{DeserializeOwned, Error as _};
use serde::{Deserialize, Deserializer, Serialize};
use serde_json::Value;

/// `value` as a `T`: a wrong type or value names its field (`origin.tls_verify`), and so
/// does a field `T` does not have.
pub fn read<T: DeserializeOwned>(value: Value) -> Result<T, Error> {
    let mut unknown = None;
    let mut note_unknown = |path: serde_ignored::Path| {
        // `?` stands for the `Some` of an optional field: not a name anyone sent.
        let names: Vec<String> = path
            .to_string()
            .split('.')
            .filter(|s| *s != "?")
            .map(String::from)
            .collect();
        unknown.get_or_insert_with(|| names.join("."));
    };
    let ignored = serde_ignored::Deserializer::new(value, &mut note_unknown);
    let read: T = serde_path_to_error::deserialize(ignored).map_err(|e| {
        let path = e.path().to_string();
        let message = e.into_inner().to_string();
        // A missing field fails at the object that lacks it; serde names it in the message.
        let missing = message
            .strip_prefix("missing field `")
            .and_then(|rest| rest.strip_suffix('`'));
        match (missing, path.as_str()) {
            (Some(name), ".") => Error::invalid(name, "is required"),
            (Some(name), parent) => Error::invalid(&format!("{parent}.{name}"), "is required"),
            (None, ".") => Error::invalid("body", message),
            (None, path) => Error::invalid(path, message),
        }
    })?;
    match unknown {
        Some(field) => Err(Error::invalid(&field, "unknown field")),
        None => Ok(read),
    }
}

/// A field that may be sent as `null` to clear it: absent is `None`, `null` is `Some(None)`.
fn given<'de, D: Deserializer<'de>, T: Deserialize<'de>>(d: D) -> Result<Option<T>, D::Error> {
    T::deserialize(d).map(Some)
}

/// `ports`: `"first-last"` or a single number.
fn number_or_text<'de, D: Deserializer<'de>>(d: D) -> Result<Option<String>, D::Error> {
    match Value::deserialize(d)? {
        Value::Null => Ok(None),
        Value::Number(n) => Ok(Some(n.to_string())),
        Value::String(s) => Ok(Some(s)),
        _ => Err(D::Error::custom("must be \"first-last\" or a number")),
    }
}

/// A tunnel as people write it. Creating one needs `agent` and `target` (or `agents`); a
/// change names only what changes. The API shows a tunnel the same way.
#[derive(Debug, Default, Serialize, Deserialize, JsonSchema)]
pub struct TunnelFields {
    /// `http`, `tls`, `tcp` or `udp`; fixed once created.
    pub kind: Option<TunnelKind>,
    #[schemars(length(min = 1, max = 253))]
    pub hostname: Option<String>,
    /// A single public port (`ports` is shown instead).
    #[serde(skip_serializing)]
    pub port: Option<u16>,
    /// `"first-last"`, the public ports of a tcp or udp tunnel.
    #[serde(default, deserialize_with = "number_or_text")]
    #[schemars(schema_with = "ports_schema")]
    pub ports: Option<String>,
    pub agent: Option<String>,
    /// `host:port`; `https://` or `h2c://` in front for such an origin.
    pub target: Option<String>,
    /// Instead of `agent` and `target`: every agent serving the tunnel, the first taking
    /// their place.
    #[schemars(length(min = 1, max = 8))]
    pub agents: Option<Vec<AgentTarget>>,
    pub enabled: Option<bool>,
    pub issuer: Option<Issuer>,
    /// Who may open it: users, roles, a password, addresses, paths that need nothing.
    #[schemars(schema_with = "crate::access::schema")]
    pub access: Option<Value>,
    pub origin: Option<OriginFields>,
    /// `v1`, `v2`, or `none` to turn it off.
    #[schemars(schema_with = "proxy_protocol_schema")]
    pub proxy_protocol: Option<String>,
    /// `/api`, or `/` to remove it.
    pub path_prefix: Option<String>,
    /// `"all"`, gateway ids, or a label selector (`"region=tokyo"`); `null` is all.
    #[serde(default, deserialize_with = "given")]
    #[schemars(schema_with = "gateways_schema")]
    pub gateways: Option<Value>,
    /// `http`: what the gateways' request log keeps beyond the path.
    pub request_log: Option<RequestLogFields>,
}

fn ports_schema(_: &mut SchemaGenerator) -> Schema {
    json_schema!({ "type": ["string", "integer", "null"], "description": "\"first-last\", at most 1000 ports" })
}

fn proxy_protocol_schema(_: &mut SchemaGenerator) -> Schema {
    json_schema!({ "enum": ["v1", "v2", "none", null] })
}

fn gateways_schema(_: &mut SchemaGenerator) -> Schema {
    json_schema!({
        "type": ["string", "array", "null"], "items": { "type": "string" },
        "description": "\"all\", gateway ids, or a label selector such as \"region=tokyo\"",
    })
}

/// What `check_name` takes: 1 to 64 characters, none a control character.
pub fn name_schema(_: &mut SchemaGenerator) -> Schema {
    json_schema!({
        "type": "string", "minLength": 1, "maxLength": 64,
        "pattern": "^[^\\u0000-\\u001f\\u007f-\\u009f]*$",
    })
}

/// One agent serving a tunnel and its target.
#[derive(Debug, Serialize, Deserialize, JsonSchema)]
pub struct AgentTarget {
    pub agent: String,
    pub target: String,
}

/// How gateways and the agent reach an origin (see [`OriginSettings`]); `null` or `""`
/// clears a setting.
#[derive(Debug, Default, Serialize, Deserialize, JsonSchema)]
pub struct OriginFields {
    pub tls_verify: Option<bool>,
    #[serde(default, deserialize_with = "given")]
    pub ca_pem: Option<Option<String>>,
    #[serde(default, deserialize_with = "given")]
    pub server_name: Option<Option<String>>,
    #[serde(default, deserialize_with = "given")]
    pub host_header: Option<Option<String>>,
    #[serde(default, deserialize_with = "given")]
    #[schemars(range(min = 1, max = 300))]
    pub connect_timeout_secs: Option<Option<u64>>,
    /// A path the agent GETs to check the origin (none: a TCP connect).
    #[serde(default, deserialize_with = "given")]
    pub health_path: Option<Option<String>>,
    /// The status that check expects (none: any 2xx or 3xx).
    #[serde(default, deserialize_with = "given")]
    #[schemars(range(min = 100, max = 599))]
    pub health_status: Option<Option<u16>>,
    /// Seconds between checks; 0: none (none: 30).
    #[serde(default, deserialize_with = "given")]
    #[schemars(range(min = 0, max = 3600))]
    pub health_interval_secs: Option<Option<u64>>,
    #[serde(default, deserialize_with = "given")]
    pub bad_gateway_page: Option<Option<String>>,
    #[serde(default, deserialize_with = "given")]
    pub not_found_page: Option<Option<String>>,
}

impl OriginFields {
    fn of(origin: &OriginSettings) -> Self {
        OriginFields {
            tls_verify: Some(origin.tls_verify),
            ca_pem: Some(origin.ca_pem.clone()),
            server_name: Some(origin.server_name.clone()),
            host_header: Some(origin.host_header.clone()),
            connect_timeout_secs: Some(origin.connect_timeout_secs),
            health_path: Some(origin.health_path.clone()),
            health_status: Some(origin.health_status),
            health_interval_secs: Some(origin.health_interval_secs),
            bad_gateway_page: Some(origin.bad_gateway_page.clone()),
            not_found_page: Some(origin.not_found_page.clone()),
        }
    }

    fn apply(self, origin: &mut OriginSettings) {
        let text = |given: Option<String>| given.filter(|text| !text.is_empty());
        let OriginFields {
            tls_verify,
            ca_pem,
            server_name,
            host_header,
            connect_timeout_secs,
            health_path,
            health_status,
            health_interval_secs,
            bad_gateway_page,
            not_found_page,
        } = self;
        origin.tls_verify = tls_verify.unwrap_or(origin.tls_verify);
        for (setting, given) in [
            (&mut origin.ca_pem, ca_pem),
            (&mut origin.server_name, server_name),
            (&mut origin.host_header, host_header),
            (&mut origin.health_path, health_path),
            (&mut origin.bad_gateway_page, bad_gateway_page),
            (&mut origin.not_found_page, not_found_page),
        ] {
            if let Some(given) = given {
                *setting = text(given);
            }
        }
        if let Some(timeout) = connect_timeout_secs {
            origin.connect_timeout_secs = timeout;
        }
        if let Some(status) = health_status {
            origin.health_status = status;
        }
        if let Some(interval) = health_interval_secs {
            origin.health_interval_secs = interval;
        }
    }
}

/// What the request log keeps of a tunnel's requests beyond the path: the query string
/// (secret parameters redacted) and named headers (never credentials).
#[derive(Debug, Default, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RequestLogFields {
    #[serde(default)]
    pub query: bool,
    #[serde(default)]
    pub headers: Vec<String>,
    /// Query parameters redacted besides token, password, secret, key, code, session, …
    #[serde(default)]
    pub redact: Vec<String>,
}

impl RequestLogFields {
    fn of(details: &LogDetails) -> Self {
        RequestLogFields {
            query: details.query,
            headers: details.headers.clone(),
            redact: details.redact.clone(),
        }
    }

    fn into_details(self) -> LogDetails {
        let lower = |names: Vec<String>| {
            names
                .into_iter()
                .map(|n| n.trim().to_ascii_lowercase())
                .collect()
        };
        LogDetails {
            query: self.query,
            headers: lower(self.headers),
            redact: lower(self.redact),
        }
    }
}

/// The API's view of a tunnel: its fields as they are written, and what Control assigned.
#[derive(Serialize)]
pub struct TunnelView<'a> {
    id: &'a str,
    #[serde(flatten)]
    fields: TunnelFields,
    service_port: u16,
    created_at: u64,
}

impl<'a> TunnelView<'a> {
    pub fn of(tunnel: &'a TunnelRecord) -> Self {
        TunnelView {
            id: &tunnel.id,
            fields: TunnelFields::of(&tunnel.spec),
            service_port: tunnel.service_port,
            created_at: tunnel.created_at,
        }
    }
}

impl TunnelFields {
    /// Every field of `spec`, as a caller would write it.
    pub fn of(spec: &TunnelSpec) -> Self {
        TunnelFields {
            kind: Some(spec.kind),
            hostname: spec.hostname.as_ref().map(ToString::to_string),
            port: None,
            ports: spec.ports.map(|p| p.to_string()),
            agent: Some(spec.agent_id.clone()),
            target: Some(spec.target_text()),
            agents: Some(
                spec.agents()
                    .map(|(agent, target)| AgentTarget {
                        agent: agent.to_string(),
                        target: spec.target_text_for(target),
                    })
                    .collect(),
            ),
            enabled: Some(spec.enabled),
            issuer: Some(spec.issuer),
            access: Some(spec.access.to_json()),
            origin: Some(OriginFields::of(&spec.origin)),
            proxy_protocol: spec.proxy_protocol.map(|p| p.as_str().to_string()),
            path_prefix: spec.path_prefix.clone(),
            gateways: Some(spec.gateways.to_json()),
            request_log: Some(RequestLogFields::of(&spec.request_log)),
        }
    }

    /// The tunnel these fields describe: a new one (`current` none, `default_issuer` its
    /// issuer unless given) or `current` with what they name changed. Each field is checked
    /// alone here, and against the other tunnels by the store.
    pub fn build(
        self,
        current: Option<&TunnelSpec>,
        default_issuer: Issuer,
        nodes: &[NodeRecord],
    ) -> Result<TunnelSpec, Error> {
        let kind = match (self.kind, current) {
            (Some(kind), Some(current)) if kind != current.kind => {
                return Err(Error::invalid(
                    "kind",
                    "a tunnel's kind cannot change; create a new tunnel",
                ))
            }
            (kind, current) => kind.or(current.map(|c| c.kind)).unwrap_or_default(),
        };
        let ports = match (self.port, self.ports) {
            (Some(_), Some(_)) => {
                return Err(Error::invalid("port", "give port or ports, not both"))
            }
            (Some(port), None) => Some(PortRange::single(port)),
            (None, Some(range)) => Some(range.parse()),
            (None, None) => None,
        }
        .transpose()
        .map_err(|e| Error::invalid("port", e.to_string()))?
        .or(current.and_then(|c| c.ports));
        let required = |name: &str| Error::invalid(name, "is required");
        let (agent_id, (target, scheme), replicas) = match self.agents {
            Some(agents) => {
                let invalid = || Error::invalid("agents", "must list at least one agent");
                let (first, others) = agents.split_first().ok_or_else(invalid)?;
                let (target, scheme) = parse_scheme_target(&first.target, ports)?;
                let replicas = others
                    .iter()
                    .map(|r| parse_replica(&r.agent, &r.target, ports, scheme))
                    .collect::<Result<_, _>>()?;
                (first.agent.clone(), (target, scheme), replicas)
            }
            None => (
                match (self.agent, current) {
                    (Some(agent), _) => agent,
                    (None, Some(current)) => current.agent_id.clone(),
                    (None, None) => return Err(required("agent")),
                },
                match (self.target, current) {
                    (Some(target), _) => parse_scheme_target(&target, ports)?,
                    (None, Some(current)) => (current.target.clone(), current.origin.scheme),
                    (None, None) => return Err(required("target")),
                },
                current.map(|c| c.replicas.clone()).unwrap_or_default(),
            ),
        };
        let mut origin = current.map(|c| c.origin.clone()).unwrap_or_default();
        origin.scheme = scheme;
        if let Some(fields) = self.origin {
            fields.apply(&mut origin);
        }
        let mut access = current.map(|c| c.access.clone()).unwrap_or_default();
        if let Some(value) = self.access {
            access.apply_json(&value)?;
        }
        let issuer = match (self.issuer, current) {
            // A new port tunnel has no certificate of its own.
            (_, None) if kind != TunnelKind::Http => Issuer::None,
            (Some(issuer), _) => issuer,
            (None, Some(current)) => current.issuer,
            (None, None) => default_issuer,
        };
        let proxy_protocol = match self.proxy_protocol.as_deref() {
            None => current.and_then(|c| c.proxy_protocol),
            Some("none") => None,
            Some(raw) => Some(raw.parse().map_err(|_| {
                Error::invalid("proxy_protocol", format!("{raw:?} is not v1, v2 or none"))
            })?),
        };
        Ok(TunnelSpec {
            kind,
            hostname: match self.hostname {
                Some(raw) => Some(
                    raw.parse()
                        .map_err(|e| Error::invalid("hostname", reason(e)))?,
                ),
                None => current.and_then(|c| c.hostname.clone()),
            },
            ports,
            agent_id,
            target,
            replicas,
            enabled: self.enabled.or(current.map(|c| c.enabled)).unwrap_or(true),
            issuer,
            access,
            proxy_protocol,
            origin,
            gateways: match self.gateways {
                Some(value) => GatewayChoice::from_json(&value, nodes)?,
                None => current.map(|c| c.gateways.clone()).unwrap_or_default(),
            },
            path_prefix: match self.path_prefix {
                Some(raw) => parse_path_prefix(&raw)?,
                None => current.and_then(|c| c.path_prefix.clone()),
            },
            request_log: match self.request_log {
                Some(fields) => fields.into_details(),
                None => current.map(|c| c.request_log.clone()).unwrap_or_default(),
            },
        })
    }
}

/// A protocol type's complaint without the field name it carries (the error names it).
pub fn reason(e: kakuremichi_proto::ProtoError) -> String {
    match e {
        kakuremichi_proto::ProtoError::Invalid { reason, .. } => reason,
        other => other.to_string(),
    }
}

/// `{"name": …}`: what a service token, and optionally a node, is called.
#[derive(Debug, Deserialize, JsonSchema)]
pub struct Name {
    #[schemars(schema_with = "name_schema")]
    pub name: Option<String>,
}

impl Name {
    pub fn required(self) -> Result<String, Error> {
        self.name
            .ok_or_else(|| Error::invalid("name", "is required"))
    }
}

/// The JSON schema of `T` as a body, every subschema inline; the API refuses fields a body
/// does not name ([`read`]), so no object admits others.
pub fn schema_of<T: JsonSchema>() -> Value {
    let generator = schemars::generate::SchemaSettings::draft2020_12()
        .with(|s| s.inline_subschemas = true)
        .into_generator();
    let mut schema = generator.into_root_schema_for::<T>().to_value();
    if let Value::Object(root) = &mut schema {
        root.remove("$schema");
        root.remove("title");
    }
    closed(&mut schema);
    schema
}

fn closed(schema: &mut Value) {
    match schema {
        Value::Object(object) => {
            if object.contains_key("properties") {
                object.insert("additionalProperties".into(), Value::Bool(false));
            }
            object.values_mut().for_each(closed);
        }
        Value::Array(items) => items.iter_mut().for_each(closed),
        _ => {}
    }
}

#[cfg(test)]
mod tests;
