//! What callers ask for, read field by field from a JSON object: the API's bodies, the
//! tunnel form (mapped to the same object) and the CLI's flags (which send it). Each getter
//! takes its field out and names it in its error, and [`Fields::finish`] refuses the fields
//! no getter took; [`new_tunnel`] and [`tunnel_patch`] turn an object into the one change
//! the store takes.

use crate::access::TunnelAccess;
use crate::error::Error;
use crate::model::GatewayChoice;
use crate::model::{OriginScheme, OriginSettings};
use crate::model::{Replica, TunnelKind, TunnelRecord};
use crate::store::{NewTunnel, TunnelPatch};
use crate::Control;
use kakuremichi_proto::ids::Target;
use kakuremichi_proto::ports::PortRange;
use kakuremichi_proto::proxy_protocol::ProxyProtocol;
use kakuremichi_proto::ProtoError;
use serde_json::{Map, Value};

/// A JSON object whose fields are taken one by one; leftovers are unknown fields.
pub struct Fields(Map<String, Value>);

impl Fields {
    pub fn new(map: Map<String, Value>) -> Self {
        Fields(map)
    }
    pub fn take(&mut self, name: &str) -> Option<Value> {
        self.0.remove(name).filter(|value| !value.is_null())
    }
    pub fn string(&mut self, name: &str) -> Result<Option<String>, Error> {
        match self.0.remove(name) {
            None | Some(Value::Null) => Ok(None),
            Some(Value::String(s)) => Ok(Some(s)),
            Some(_) => Err(Error::invalid(name, "must be a string")),
        }
    }
    pub fn required(&mut self, name: &str) -> Result<String, Error> {
        self.string(name)?
            .ok_or_else(|| Error::invalid(name, "is required"))
    }
    pub fn parsed<T: std::str::FromStr<Err = ProtoError>>(
        &mut self,
        name: &str,
    ) -> Result<Option<T>, Error> {
        let reason = |e: ProtoError| match e {
            ProtoError::Invalid { reason, .. } => reason,
            other => other.to_string(),
        };
        self.string(name)?
            .map(|s| s.parse::<T>().map_err(|e| Error::invalid(name, reason(e))))
            .transpose()
    }
    pub fn boolean(&mut self, name: &str) -> Result<Option<bool>, Error> {
        match self.0.remove(name) {
            None | Some(Value::Null) => Ok(None),
            Some(Value::Bool(b)) => Ok(Some(b)),
            Some(_) => Err(Error::invalid(name, "must be true or false")),
        }
    }
    pub fn number(&mut self, name: &str) -> Result<Option<u64>, Error> {
        match self.0.remove(name) {
            None | Some(Value::Null) => Ok(None),
            Some(Value::Number(n)) => n
                .as_u64()
                .map(Some)
                .ok_or_else(|| Error::invalid(name, "must be a whole number of 0 or more")),
            Some(_) => Err(Error::invalid(name, "must be a number")),
        }
    }
    pub fn finish(self) -> Result<(), Error> {
        match self.0.keys().next() {
            Some(unknown) => Err(Error::invalid(unknown, "unknown field")),
            None => Ok(()),
        }
    }

    /// `port` (a number) or `ports` (`"20000-20010"`, or a number).
    pub fn ports(&mut self) -> Result<Option<PortRange>, Error> {
        let single = self.number("port")?;
        let range = match self.0.remove("ports") {
            None | Some(Value::Null) => None,
            Some(Value::Number(n)) => Some(n.to_string()),
            Some(Value::String(s)) => Some(s),
            Some(_) => {
                return Err(Error::invalid(
                    "ports",
                    "must be \"first-last\" or a number",
                ))
            }
        };
        let parsed = match (single, range) {
            (Some(_), Some(_)) => {
                return Err(Error::invalid("port", "give port or ports, not both"))
            }
            (Some(port), None) => u16::try_from(port)
                .map_err(|_| ProtoError::Invalid {
                    field: "port",
                    reason: format!("{port} is not a port"),
                })
                .and_then(PortRange::single),
            (None, Some(range)) => range.parse(),
            (None, None) => return Ok(None),
        };
        parsed
            .map(Some)
            .map_err(|e| Error::invalid("port", e.to_string()))
    }

    /// `proxy_protocol`: `"v1"`, `"v2"`, or `"none"` to turn it off.
    pub fn proxy_protocol(&mut self) -> Result<Option<Option<ProxyProtocol>>, Error> {
        match self.string("proxy_protocol")?.as_deref() {
            None => Ok(None),
            Some("none") => Ok(Some(None)),
            Some(raw) => raw.parse().map(|p| Some(Some(p))).map_err(|_| {
                Error::invalid("proxy_protocol", format!("{raw:?} is not v1, v2 or none"))
            }),
        }
    }

    /// `target` (`https://` for an HTTPS origin), whose port may be a range matching the
    /// public one.
    pub fn target(
        &mut self,
        ports: Option<PortRange>,
    ) -> Result<Option<(Target, OriginScheme)>, Error> {
        self.string("target")?
            .map(|raw| crate::tunnels::parse_scheme_target(&raw, ports))
            .transpose()
    }

    /// `agents`: `[{"agent": id, "target": …}, …]`, the first taking the place of `agent` and
    /// `target`, the rest replicas. Every target speaks the same scheme.
    pub fn agents(&mut self, ports: Option<PortRange>) -> Result<Option<Agents>, Error> {
        let Some(value) = self.take("agents") else {
            return Ok(None);
        };
        let invalid = |why: &str| Error::invalid("agents", why.to_string());
        let list = value
            .as_array()
            .filter(|list| !list.is_empty())
            .ok_or_else(|| invalid("must be a list of {\"agent\", \"target\"} objects"))?;
        let mut pairs = Vec::with_capacity(list.len());
        for entry in list {
            let field = |name: &str| {
                entry
                    .get(name)
                    .and_then(Value::as_str)
                    .ok_or_else(|| invalid(&format!("every entry needs a string {name:?}")))
            };
            pairs.push((field("agent")?, field("target")?));
        }
        let ((agent_id, target), others) =
            pairs.split_first().ok_or_else(|| invalid("is empty"))?;
        let (target, scheme) = crate::tunnels::parse_scheme_target(target, ports)?;
        Ok(Some(Agents {
            agent_id: agent_id.to_string(),
            target,
            scheme,
            replicas: others
                .iter()
                .map(|(agent, target)| crate::tunnels::parse_replica(agent, target, ports, scheme))
                .collect::<Result<_, _>>()?,
        }))
    }

    /// `gateways`: `"all"`, gateway ids, or a label selector (`"region=tokyo"`).
    pub fn gateways(&mut self, control: &Control) -> Result<Option<GatewayChoice>, Error> {
        match self.0.remove("gateways") {
            None => Ok(None),
            Some(value) => {
                let nodes = control.store.state()?.nodes;
                GatewayChoice::from_json(&value, &nodes).map(Some)
            }
        }
    }

    /// `path_prefix`: `"/api"`, or `"/"` to remove it.
    pub fn path_prefix(&mut self) -> Result<Option<Option<String>>, Error> {
        self.string("path_prefix")?
            .map(|raw| crate::tunnels::parse_path_prefix(&raw))
            .transpose()
    }

    /// `origin` settings applied over `current`, with the target's scheme; `None` when
    /// neither was given.
    pub fn origin(
        &mut self,
        current: &OriginSettings,
        scheme: Option<OriginScheme>,
    ) -> Result<Option<OriginSettings>, Error> {
        let given = self.take("origin");
        if given.is_none() && scheme.is_none() {
            return Ok(None);
        }
        let mut origin = current.clone();
        if let Some(scheme) = scheme {
            origin.scheme = scheme;
        }
        if let Some(value) = given {
            origin.apply_json(&value)?;
        }
        Ok(Some(origin))
    }
}

/// A tunnel's agents as `agents` gives them.
pub struct Agents {
    pub agent_id: String,
    pub target: Target,
    pub scheme: OriginScheme,
    pub replicas: Vec<Replica>,
}

/// The tunnel `fields` describe, checked field by field (the store checks it against the
/// other tunnels); unknown fields are refused.
pub fn new_tunnel(control: &Control, mut fields: Fields) -> Result<NewTunnel, Error> {
    let kind: TunnelKind = match fields.string("kind")? {
        Some(kind) => kind.parse()?,
        None => TunnelKind::Http,
    };
    let ports = fields.ports()?;
    let agents = match fields.agents(ports)? {
        Some(agents) => agents,
        None => {
            let (target, scheme) = fields
                .target(ports)?
                .ok_or_else(|| Error::invalid("target", "is required"))?;
            Agents {
                agent_id: fields.required("agent")?,
                target,
                scheme,
                replicas: Vec::new(),
            }
        }
    };
    let scheme = agents.scheme;
    let new = NewTunnel {
        kind,
        hostname: fields.parsed("hostname")?,
        agent_id: agents.agent_id,
        target: agents.target,
        replicas: agents.replicas,
        origin: fields
            .origin(&OriginSettings::default(), Some(scheme))?
            .unwrap_or_default(),
        ports,
        enabled: fields.boolean("enabled")?.unwrap_or(true),
        issuer: fields.parsed("issuer")?.unwrap_or(control.default_issuer),
        access: match fields.take("access") {
            Some(value) => {
                let mut access = TunnelAccess::default();
                access.apply_json(&value)?;
                access
            }
            None => TunnelAccess::default(),
        },
        proxy_protocol: fields.proxy_protocol()?.flatten(),
        path_prefix: fields.path_prefix()?.flatten(),
        gateways: fields.gateways(control)?.unwrap_or_default(),
    };
    fields.finish()?;
    Ok(new)
}

/// A tunnel change; an `access` object changes the rules it names on top of `current`.
pub fn tunnel_patch(
    control: &Control,
    mut fields: Fields,
    current: &TunnelRecord,
) -> Result<TunnelPatch, Error> {
    let ports = fields.ports()?;
    let (target, agent_id, replicas) = match fields.agents(ports.or(current.ports))? {
        Some(agents) => (
            Some((agents.target, agents.scheme)),
            Some(agents.agent_id),
            Some(agents.replicas),
        ),
        None => (
            fields.target(ports.or(current.ports))?,
            fields.string("agent")?,
            None,
        ),
    };
    let patch = TunnelPatch {
        hostname: fields.parsed("hostname")?,
        origin: fields.origin(&current.origin, target.as_ref().map(|(_, scheme)| *scheme))?,
        target: target.map(|(target, _)| target),
        ports,
        agent_id,
        replicas,
        enabled: fields.boolean("enabled")?,
        issuer: fields.parsed("issuer")?,
        access: match fields.take("access") {
            Some(value) => {
                let mut access = current.access.clone();
                access.apply_json(&value)?;
                Some(access)
            }
            None => None,
        },
        proxy_protocol: fields.proxy_protocol()?,
        path_prefix: fields.path_prefix()?,
        gateways: fields.gateways(control)?,
    };
    if let Some(kind) = fields.string("kind")? {
        if kind != current.kind.as_str() {
            return Err(Error::invalid(
                "kind",
                "a tunnel's kind cannot change; create a new tunnel",
            ));
        }
    }
    fields.finish()?;
    Ok(patch)
}
