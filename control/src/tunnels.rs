//! What a tunnel publishes and the rules for it, as plain data: its kind, the hostname or
//! public ports it owns, the agent service ports it takes, and whether every gateway can
//! serve it. The store calls [`check`] on every tunnel it creates or changes.

use crate::error::Error;
use crate::model::{NodeRecord, Replica, TunnelRecord, FIRST_SERVICE_PORT};
use kakuremichi_proto::ids::{NodeKind, Target};
use kakuremichi_proto::messages::{OriginOptions, OriginTls};
use kakuremichi_proto::ports::{PortRange, Transport, MAX_TUNNEL_PORTS};
use kakuremichi_proto::targets::TargetRules;
use serde::{Deserialize, Serialize};
use std::ops::Range;

/// What a tunnel carries and how clients reach it.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TunnelKind {
    /// HTTP(S) by hostname, terminated at the gateways.
    #[default]
    Http,
    /// TLS by SNI on the HTTPS port, passed through undecrypted.
    Tls,
    /// Raw TCP on public ports.
    Tcp,
    /// UDP datagrams on public ports.
    Udp,
}

impl std::str::FromStr for TunnelKind {
    type Err = Error;
    fn from_str(raw: &str) -> Result<Self, Error> {
        match raw {
            "http" => Ok(TunnelKind::Http),
            "tls" => Ok(TunnelKind::Tls),
            "tcp" => Ok(TunnelKind::Tcp),
            "udp" => Ok(TunnelKind::Udp),
            other => Err(Error::invalid(
                "kind",
                format!("{other:?} is not http, tls, tcp or udp"),
            )),
        }
    }
}

impl TunnelKind {
    /// The name used in the API.
    pub fn as_str(self) -> &'static str {
        match self {
            TunnelKind::Http => "http",
            TunnelKind::Tls => "tls",
            TunnelKind::Tcp => "tcp",
            TunnelKind::Udp => "udp",
        }
    }

    /// Reached by hostname (`http`, `tls`) rather than by port.
    pub fn by_hostname(self) -> bool {
        matches!(self, TunnelKind::Http | TunnelKind::Tls)
    }

    /// The public ports' transport, for port tunnels.
    pub fn transport(self) -> Option<Transport> {
        match self {
            TunnelKind::Tcp => Some(Transport::Tcp),
            TunnelKind::Udp => Some(Transport::Udp),
            TunnelKind::Http | TunnelKind::Tls => None,
        }
    }
}

/// What an `http` tunnel's origin speaks.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum OriginScheme {
    /// HTTP/1.1.
    #[default]
    Http,
    /// HTTP/1.1 over TLS, end to end from the gateway.
    Https,
    /// HTTP/2 without TLS, prior knowledge (gRPC servers).
    H2c,
}

impl OriginScheme {
    /// As written before `://`.
    pub fn as_str(self) -> &'static str {
        match self {
            OriginScheme::Http => "http",
            OriginScheme::Https => "https",
            OriginScheme::H2c => "h2c",
        }
    }
}

/// How gateways and the agent reach a tunnel's origin, beyond its target.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct OriginSettings {
    /// `http` tunnels: what the target speaks, from its scheme (`https://…`, `h2c://…`).
    #[serde(default)]
    pub scheme: OriginScheme,
    /// Check an HTTPS origin's certificate; off is the "No TLS Verify" of self-signed origins.
    #[serde(default = "yes")]
    pub tls_verify: bool,
    /// A private CA's PEM certificates to trust for an HTTPS origin.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ca_pem: Option<String>,
    /// SNI and certificate name for an HTTPS origin, when not the target's host.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub server_name: Option<String>,
    /// The `Host` header the origin gets instead of the client's.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub host_header: Option<String>,
    /// How long the agent waits for the target to accept.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub connect_timeout_secs: Option<u64>,
    /// HTML shown instead of the gateway's own page when the origin cannot be reached.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bad_gateway_page: Option<String>,
    /// HTML shown for paths of the hostname that no tunnel serves (with path prefixes).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub not_found_page: Option<String>,
}

fn yes() -> bool {
    true
}

impl Default for OriginSettings {
    fn default() -> Self {
        OriginSettings {
            scheme: OriginScheme::Http,
            tls_verify: true,
            ca_pem: None,
            server_name: None,
            host_header: None,
            connect_timeout_secs: None,
            bad_gateway_page: None,
            not_found_page: None,
        }
    }
}

/// The largest CA bundle or error page a tunnel carries: each goes to every gateway.
pub const MAX_ORIGIN_TEXT: usize = 64 * 1024;
/// The longest connect timeout a tunnel may ask for.
pub const MAX_CONNECT_TIMEOUT_SECS: u64 = 300;

impl OriginSettings {
    /// Change the settings `value` (a JSON object) names; unknown keys are refused.
    pub fn apply_json(&mut self, value: &serde_json::Value) -> Result<(), Error> {
        let object = value
            .as_object()
            .ok_or_else(|| Error::invalid("origin", "must be an object"))?;
        let text = |key: &str, value: &serde_json::Value| -> Result<Option<String>, Error> {
            match value {
                serde_json::Value::Null => Ok(None),
                serde_json::Value::String(s) if s.is_empty() => Ok(None),
                serde_json::Value::String(s) => Ok(Some(s.clone())),
                _ => Err(Error::invalid("origin", format!("{key} must be a string"))),
            }
        };
        for (key, value) in object {
            match key.as_str() {
                "tls_verify" => {
                    self.tls_verify = value.as_bool().ok_or_else(|| {
                        Error::invalid("origin", "tls_verify must be true or false")
                    })?
                }
                "ca_pem" => self.ca_pem = text(key, value)?,
                "server_name" => self.server_name = text(key, value)?,
                "host_header" => self.host_header = text(key, value)?,
                "bad_gateway_page" => self.bad_gateway_page = text(key, value)?,
                "not_found_page" => self.not_found_page = text(key, value)?,
                "connect_timeout_secs" => {
                    self.connect_timeout_secs = match value {
                        serde_json::Value::Null => None,
                        other => Some(other.as_u64().ok_or_else(|| {
                            Error::invalid("origin", "connect_timeout_secs must be a whole number")
                        })?),
                    }
                }
                other => {
                    return Err(Error::invalid(
                        "origin",
                        format!("{other:?} is not an origin setting"),
                    ))
                }
            }
        }
        Ok(())
    }

    /// The settings as the API shows them (the CA and page by size, not content).
    pub fn to_json(&self) -> serde_json::Value {
        serde_json::json!({
            "tls_verify": self.tls_verify,
            "ca_pem": self.ca_pem,
            "server_name": self.server_name,
            "host_header": self.host_header,
            "connect_timeout_secs": self.connect_timeout_secs,
            "bad_gateway_page": self.bad_gateway_page,
            "not_found_page": self.not_found_page,
        })
    }

    fn check(&self, kind: TunnelKind) -> Result<(), Error> {
        let http_only = self.scheme != OriginScheme::Http
            || !self.tls_verify
            || self.ca_pem.is_some()
            || self.server_name.is_some()
            || self.host_header.is_some()
            || self.bad_gateway_page.is_some()
            || self.not_found_page.is_some();
        if http_only && kind != TunnelKind::Http {
            return Err(Error::invalid(
                "origin",
                "https targets, TLS, Host and error page settings apply to http tunnels",
            ));
        }
        let tls_only = !self.tls_verify || self.ca_pem.is_some() || self.server_name.is_some();
        if tls_only && self.scheme != OriginScheme::Https {
            return Err(Error::invalid(
                "origin",
                "TLS settings need an https:// target",
            ));
        }
        for (name, text) in [
            ("ca_pem", &self.ca_pem),
            ("bad_gateway_page", &self.bad_gateway_page),
            ("not_found_page", &self.not_found_page),
        ] {
            if text.as_ref().is_some_and(|t| t.len() > MAX_ORIGIN_TEXT) {
                return Err(Error::invalid(
                    "origin",
                    format!("{name} is larger than {} KiB", MAX_ORIGIN_TEXT / 1024),
                ));
            }
        }
        if let Some(pem) = &self.ca_pem {
            if !pem.contains("-----BEGIN CERTIFICATE-----") {
                return Err(Error::invalid("origin", "ca_pem holds no PEM certificate"));
            }
        }
        if let Some(name) = &self.server_name {
            let is_ip = name.parse::<std::net::IpAddr>().is_ok();
            if !is_ip && name.parse::<kakuremichi_proto::ids::Hostname>().is_err() {
                return Err(Error::invalid(
                    "origin",
                    format!("server_name {name:?} is not a host name or IP address"),
                ));
            }
        }
        if let Some(host) = &self.host_header {
            let printable =
                !host.is_empty() && host.len() <= 255 && host.bytes().all(|b| b.is_ascii_graphic());
            if !printable {
                return Err(Error::invalid(
                    "origin",
                    "host_header must be a host name, with a port if needed",
                ));
            }
        }
        if self
            .connect_timeout_secs
            .is_some_and(|s| !(1..=MAX_CONNECT_TIMEOUT_SECS).contains(&s))
        {
            return Err(Error::invalid(
                "origin",
                format!("connect_timeout_secs must be 1 to {MAX_CONNECT_TIMEOUT_SECS}"),
            ));
        }
        Ok(())
    }
}

impl TunnelRecord {
    /// The target as people write it: `https://host:port` for an HTTPS origin, a port range
    /// as `host:first-last`.
    pub fn target_text(&self) -> String {
        self.target_text_for(&self.target)
    }

    /// [`Self::target_text`] of one agent's target.
    pub fn target_text_for(&self, target: &Target) -> String {
        let target = match self.ports {
            Some(ports) if ports.len() > 1 => {
                format!("{}-{}", target, target.port() + ports.len() - 1)
            }
            _ => target.to_string(),
        };
        match self.origin.scheme {
            OriginScheme::Http => target,
            scheme => format!("{}://{target}", scheme.as_str()),
        }
    }

    /// The origin options gateways apply to this tunnel's requests.
    pub fn origin_options(&self) -> OriginOptions {
        OriginOptions {
            h2c: self.origin.scheme == OriginScheme::H2c,
            tls: (self.origin.scheme == OriginScheme::Https).then(|| OriginTls {
                server_name: self
                    .origin
                    .server_name
                    .clone()
                    .unwrap_or_else(|| self.target.host().to_string()),
                verify: self.origin.tls_verify,
                ca_pem: self.origin.ca_pem.clone(),
            }),
            host_header: self.origin.host_header.clone(),
            bad_gateway_page: self.origin.bad_gateway_page.clone(),
            not_found_page: self.origin.not_found_page.clone(),
        }
    }

    /// Whether the tunnel's path prefix covers `other`'s: same prefix on the same hostname.
    fn same_place(&self, other: &TunnelRecord) -> bool {
        self.hostname == other.hostname && self.path_prefix == other.path_prefix
    }

    /// How many agent service ports the tunnel takes: one per public port.
    pub fn port_count(&self) -> u16 {
        self.ports.map_or(1, PortRange::len)
    }

    /// The agent service ports the tunnel takes.
    pub fn service_ports(&self) -> Range<u32> {
        let first = u32::from(self.service_port);
        first..first + u32::from(self.port_count())
    }

    /// `(service port, target)` for each public port, in order (one pair for hostname
    /// tunnels). [`check`] proved every target port fits in a `u16`.
    pub fn forwards(&self) -> impl Iterator<Item = (u16, Target)> + '_ {
        self.forwards_to(&self.target)
    }

    /// [`Self::forwards`] onto one agent's `target` (the tunnel's or a replica's).
    pub fn forwards_to<'a>(
        &'a self,
        target: &'a Target,
    ) -> impl Iterator<Item = (u16, Target)> + 'a {
        (0..self.port_count())
            .map(move |i| (self.service_port + i, target.with_port(target.port() + i)))
    }

    /// Every agent serving the tunnel with its target, the primary first.
    pub fn agents(&self) -> impl Iterator<Item = (&str, &Target)> {
        std::iter::once((self.agent_id.as_str(), &self.target)).chain(
            self.replicas
                .iter()
                .map(|r| (r.agent_id.as_str(), &r.target)),
        )
    }

    /// The target on `agent_id`, if that agent serves the tunnel.
    pub fn target_on(&self, agent_id: &str) -> Option<&Target> {
        self.agents()
            .find(|(id, _)| *id == agent_id)
            .map(|(_, target)| target)
    }

    /// Whether a request for `path` is under the tunnel's path prefix (always, without one).
    pub fn serves_path(&self, path: &str) -> bool {
        kakuremichi_proto::messages::under_prefix(self.path_prefix.as_deref(), path)
    }

    /// What people call it: the hostname (with its path prefix), or `tcp 15432`.
    pub fn label(&self) -> String {
        match (&self.hostname, self.ports) {
            (Some(hostname), None) => {
                format!("{hostname}{}", self.path_prefix.as_deref().unwrap_or(""))
            }
            (Some(hostname), Some(ports)) => format!("{hostname} ({} {ports})", self.kind.as_str()),
            (None, Some(ports)) => format!("{} {ports}", self.kind.as_str()),
            (None, None) => self.id.clone(),
        }
    }
}

/// A path prefix as a tunnel keeps it: starts with `/`, no trailing `/` (so `/api` and
/// `/api/` are one prefix), no query or fragment; `/` alone is no prefix.
pub fn parse_path_prefix(raw: &str) -> Result<Option<String>, Error> {
    let invalid = |why: &str| Error::invalid("path_prefix", why.to_string());
    if !raw.starts_with('/') {
        return Err(invalid("must start with /"));
    }
    if raw.len() > 256 {
        return Err(invalid("is longer than 256 characters"));
    }
    if raw.contains(['?', '#']) || raw.split('/').any(|part| part == ".." || part == ".") {
        return Err(invalid(
            "must be a plain path, without ?, # or dot segments",
        ));
    }
    if !raw.bytes().all(|b| b.is_ascii_graphic()) {
        return Err(invalid("must be printable ASCII (percent-encode the rest)"));
    }
    if !kakuremichi_proto::path::is_normal(raw) {
        return Err(invalid(
            "must be in normal form: no //, no encoded unreserved characters, no %2F, %5C or %00",
        ));
    }
    let trimmed = raw.trim_end_matches('/');
    Ok((!trimmed.is_empty()).then(|| trimmed.to_string()))
}

/// A target with its scheme: `https://host:port` is an HTTPS origin, `http://` or none a
/// plain one.
pub fn parse_scheme_target(
    raw: &str,
    ports: Option<PortRange>,
) -> Result<(Target, OriginScheme), Error> {
    let (scheme, rest) = match raw.split_once("://") {
        Some(("https", rest)) => (OriginScheme::Https, rest),
        Some(("h2c", rest)) => (OriginScheme::H2c, rest),
        Some(("http", rest)) => (OriginScheme::Http, rest),
        Some((scheme, _)) => {
            return Err(Error::invalid(
                "target",
                format!("{scheme}:// is not http://, https:// or h2c://"),
            ))
        }
        None => (OriginScheme::Http, raw),
    };
    Ok((parse_target(rest.trim_end_matches('/'), ports)?, scheme))
}

/// One more agent of a tunnel (see [`TunnelRecord::replicas`]): its target must speak the
/// tunnel's `scheme`.
pub fn parse_replica(
    agent_id: &str,
    target: &str,
    ports: Option<PortRange>,
    scheme: OriginScheme,
) -> Result<Replica, Error> {
    let (target, theirs) = parse_scheme_target(target, ports)?;
    if theirs != scheme {
        return Err(Error::invalid(
            "agents",
            "every target must use the same scheme",
        ));
    }
    Ok(Replica {
        agent_id: agent_id.to_string(),
        target,
    })
}

/// A target whose port may be a range (`host:5000-5010`), which must then have as many
/// ports as the public range.
pub fn parse_target(raw: &str, ports: Option<PortRange>) -> Result<Target, Error> {
    let invalid = |e: kakuremichi_proto::ProtoError| Error::invalid("target", e.to_string());
    let Some((host, range)) = raw.rsplit_once(':').filter(|(_, p)| p.contains('-')) else {
        return raw.parse().map_err(invalid);
    };
    let range: PortRange = range.parse().map_err(invalid)?;
    let public = ports.map_or(1, PortRange::len);
    if range.len() != public {
        return Err(Error::invalid(
            "target",
            format!(
                "{range} has {} ports but the public range has {public}",
                range.len()
            ),
        ));
    }
    format!("{host}:{}", range.first()).parse().map_err(invalid)
}

/// A block of `count` service ports that no tunnel (other than `except`) of any of
/// `agent_ids` takes (a tunnel's replicas all listen on the same ports): the first at or
/// after `cursor`, wrapping round to the lowest only when the top is reached. Ports are thus
/// not reused until every other has been handed out, so a gateway still routing by an old
/// snapshot reaches a closed port, not the newer tunnel that took its place.
pub fn allocate_service_ports(
    tunnels: &[TunnelRecord],
    agent_ids: &[&str],
    count: u16,
    except: Option<&str>,
    cursor: u16,
) -> Option<u16> {
    let mut taken: Vec<Range<u32>> = tunnels
        .iter()
        .filter(|t| Some(t.id.as_str()) != except)
        .filter(|t| t.agents().any(|(id, _)| agent_ids.contains(&id)))
        .map(TunnelRecord::service_ports)
        .collect();
    taken.sort_by_key(|range| range.start);
    let first_free_from = |from: u32| {
        let mut start = from;
        for range in &taken {
            if range.end <= start {
                continue;
            }
            if start + u32::from(count) <= range.start {
                break;
            }
            start = range.end;
        }
        u16::try_from(start + u32::from(count) - 1)
            .ok()
            .map(|_| start as u16)
    };
    let cursor = u32::from(cursor.max(FIRST_SERVICE_PORT));
    first_free_from(cursor).or_else(|| first_free_from(u32::from(FIRST_SERVICE_PORT)))
}

/// Each agent's target is inside the `ALLOW_TARGETS` the agent reported (the agent refuses
/// the rest anyway; this says why before anyone finds a 502).
fn check_allowed_targets(tunnel: &TunnelRecord, nodes: &[NodeRecord]) -> Result<(), Error> {
    for (agent_id, target) in tunnel.agents() {
        let reported = nodes
            .iter()
            .find(|n| n.id == agent_id)
            .and_then(|agent| Some((agent, agent.allow_targets.as_deref()?)));
        let Some((agent, text)) = reported else {
            continue;
        };
        let rules = TargetRules::parse(text, None).unwrap_or_default();
        let last = target.port().saturating_add(tunnel.port_count() - 1);
        if let Some(port) = (target.port()..=last).find(|&p| !rules.may_allow(target.host(), p)) {
            let list = match text {
                "" => "any but link-local and cloud metadata addresses".to_string(),
                list => list.to_string(),
            };
            return Err(Error::invalid(
                "target",
                format!(
                    "{}:{port} is outside agent {}'s ALLOW_TARGETS ({list})",
                    target.host(),
                    agent.name
                ),
            ));
        }
    }
    Ok(())
}

/// The most agents one tunnel may have.
pub const MAX_AGENTS: usize = 8;

/// A tunnel's agents are distinct, few, and have targets of the tunnel's shape.
fn check_replicas(tunnel: &TunnelRecord) -> Result<(), Error> {
    if tunnel.replicas.is_empty() {
        return Ok(());
    }
    if tunnel.kind == TunnelKind::Udp {
        return Err(Error::invalid(
            "agents",
            "udp tunnels have one agent: a datagram flow cannot move between replicas",
        ));
    }
    if tunnel.replicas.len() + 1 > MAX_AGENTS {
        return Err(Error::invalid(
            "agents",
            format!("a tunnel has at most {MAX_AGENTS} agents"),
        ));
    }
    let mut seen = std::collections::HashSet::new();
    for (agent_id, target) in tunnel.agents() {
        if !seen.insert(agent_id) {
            return Err(Error::invalid(
                "agents",
                format!("agent {agent_id} is listed twice"),
            ));
        }
        if u32::from(target.port()) + u32::from(tunnel.port_count()) - 1 > 65_535 {
            return Err(Error::invalid(
                "agents",
                format!("{} ports from {target} run past 65535", tunnel.port_count()),
            ));
        }
    }
    Ok(())
}

/// Whether `tunnel` may exist beside `others` and be served by the enabled `gateways`.
pub fn check(
    tunnel: &TunnelRecord,
    others: &[TunnelRecord],
    nodes: &[NodeRecord],
) -> Result<(), Error> {
    let others = others.iter().filter(|t| t.id != tunnel.id);
    match tunnel.kind.transport() {
        None => {
            let hostname = tunnel
                .hostname
                .as_ref()
                .ok_or_else(|| Error::invalid("hostname", "is required"))?;
            if tunnel.ports.is_some() {
                return Err(Error::invalid(
                    "ports",
                    format!("{} tunnels are reached by hostname", tunnel.kind.as_str()),
                ));
            }
            if tunnel.path_prefix.is_some() && tunnel.kind != TunnelKind::Http {
                return Err(Error::invalid(
                    "path_prefix",
                    "only http tunnels split a hostname by path",
                ));
            }
            let neighbours: Vec<&TunnelRecord> = others
                .filter(|t| t.kind.by_hostname() && t.hostname.as_ref() == Some(hostname))
                .collect();
            // A passthrough hostname is one TLS stream, which cannot be split by path; http
            // tunnels share the hostname's certificate, so they must agree on its issuer.
            for other in neighbours {
                let clash = if tunnel.kind == TunnelKind::Tls || other.kind == TunnelKind::Tls {
                    Some(format!("{hostname} is already published"))
                } else if other.same_place(tunnel) {
                    Some(match &tunnel.path_prefix {
                        Some(prefix) => format!("{hostname}{prefix} is already published"),
                        None => format!("{hostname} is already published"),
                    })
                } else if other.issuer != tunnel.issuer {
                    Some(format!(
                        "tunnels on {hostname} share its certificate: use issuer {}",
                        other.issuer.as_str()
                    ))
                } else {
                    None
                };
                if let Some(why) = clash {
                    return Err(Error::conflict("hostname", why));
                }
            }
        }
        Some(transport) => {
            let ports = tunnel.ports.ok_or_else(|| {
                Error::invalid(
                    "port",
                    format!("a {} tunnel needs a public port", transport.as_str()),
                )
            })?;
            if ports.len() > MAX_TUNNEL_PORTS {
                return Err(Error::invalid(
                    "port",
                    format!("{ports} has more than {MAX_TUNNEL_PORTS} ports"),
                ));
            }
            if u32::from(tunnel.target.port()) + u32::from(ports.len()) - 1 > 65_535 {
                return Err(Error::invalid(
                    "target",
                    format!(
                        "{} ports from {} run past 65535",
                        ports.len(),
                        tunnel.target
                    ),
                ));
            }
            if tunnel.access != crate::access::TunnelAccess::default() {
                return Err(Error::invalid(
                    "access",
                    "access rules apply to http tunnels; a port tunnel is open to every address",
                ));
            }
            if let Some(clash) = others
                .filter(|t| t.kind == tunnel.kind)
                .find(|t| t.ports.is_some_and(|theirs| theirs.overlaps(ports)))
            {
                return Err(Error::conflict(
                    "port",
                    format!("{} is already taken by tunnel {}", ports, clash.label()),
                ));
            }
            let gateways = nodes.iter().filter(|n| {
                n.kind == NodeKind::Gateway && !n.disabled && tunnel.gateways.selects(n)
            });
            for gateway in gateways {
                let policy = gateway.port_policy.as_ref();
                if let Some(why) = policy.and_then(|p| p.refuses(transport, ports)) {
                    return Err(Error::conflict(
                        "port",
                        format!("gateway {}: {why}", gateway.name),
                    ));
                }
            }
        }
    }
    check_replicas(tunnel)?;
    check_allowed_targets(tunnel, nodes)?;
    tunnel.origin.check(tunnel.kind)?;
    if tunnel.proxy_protocol.is_some() && !matches!(tunnel.kind, TunnelKind::Tcp | TunnelKind::Tls)
    {
        return Err(Error::invalid(
            "proxy_protocol",
            "applies to tcp and tls tunnels (http tunnels send X-Forwarded-For)",
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::access::TunnelAccess;
    use crate::model::Issuer;
    use kakuremichi_proto::ports::{parse_ranges, PortPolicy};
    use std::net::Ipv4Addr;

    fn port_tunnel(id: &str, kind: TunnelKind, ports: &str, service_port: u16) -> TunnelRecord {
        TunnelRecord {
            id: id.into(),
            kind,
            hostname: None,
            ports: Some(ports.parse().unwrap()),
            agent_id: "agt_1".into(),
            target: "127.0.0.1:5432".parse().unwrap(),
            replicas: Vec::new(),
            service_port,
            enabled: true,
            issuer: Issuer::None,
            access: TunnelAccess::default(),
            proxy_protocol: None,
            origin: OriginSettings::default(),
            path_prefix: None,
            gateways: crate::fleet::GatewayChoice::All,
            created_at: 0,
        }
    }

    fn gateway(policy: Option<PortPolicy>) -> NodeRecord {
        let overlay_ip = Ipv4Addr::new(10, 77, 0, 1);
        NodeRecord {
            port_policy: policy,
            ..NodeRecord::enrolled(
                "gw_1",
                NodeKind::Gateway,
                "tokyo",
                overlay_ip,
                String::new(),
                0,
            )
        }
    }

    #[test]
    fn service_port_blocks_fill_gaps_and_never_overlap() {
        let tunnels = vec![
            port_tunnel("a", TunnelKind::Tcp, "1000-1002", 20000),
            port_tunnel("b", TunnelKind::Tcp, "2000", 20005),
        ];
        assert_eq!(
            allocate_service_ports(&tunnels, &["agt_1"], 2, None, FIRST_SERVICE_PORT),
            Some(20003)
        );
        assert_eq!(
            allocate_service_ports(&tunnels, &["agt_1"], 3, None, FIRST_SERVICE_PORT),
            Some(20006)
        );
        assert_eq!(
            allocate_service_ports(&tunnels, &["agt_1"], 5, Some("b"), FIRST_SERVICE_PORT),
            Some(20003)
        );
        assert_eq!(
            allocate_service_ports(&tunnels, &["agt_2"], 3, None, FIRST_SERVICE_PORT),
            Some(20000)
        );
        let full = vec![port_tunnel("c", TunnelKind::Tcp, "1-1000", 65000)];
        assert_eq!(
            allocate_service_ports(&full, &["agt_1"], 600, None, FIRST_SERVICE_PORT),
            Some(20000)
        );
        assert_eq!(
            allocate_service_ports(
                &[port_tunnel("d", TunnelKind::Tcp, "1-1000", 20000)],
                &["agt_1"],
                1000,
                None,
                FIRST_SERVICE_PORT
            ),
            Some(21000)
        );
        // After the cursor first, around to the lowest free block only at the top.
        assert_eq!(
            allocate_service_ports(&tunnels, &["agt_1"], 1, None, 20004),
            Some(20004)
        );
        assert_eq!(
            allocate_service_ports(&tunnels, &["agt_1"], 1, None, 20005),
            Some(20006)
        );
        assert_eq!(
            allocate_service_ports(&tunnels, &["agt_1"], 2, None, 65535),
            Some(20003)
        );
        let near_the_top = vec![port_tunnel("e", TunnelKind::Tcp, "1-1000", 64600)];
        assert_eq!(
            allocate_service_ports(&near_the_top, &["agt_1"], 1000, None, FIRST_SERVICE_PORT),
            Some(20000)
        );
        let crowded: Vec<TunnelRecord> = (0..45)
            .map(|i| {
                port_tunnel(
                    &format!("t{i}"),
                    TunnelKind::Tcp,
                    "1-1000",
                    20000 + i * 1000,
                )
            })
            .collect();
        assert_eq!(
            allocate_service_ports(&crowded, &["agt_1"], 536, None, FIRST_SERVICE_PORT),
            Some(65000)
        );
        assert_eq!(
            allocate_service_ports(&crowded, &["agt_1"], 537, None, FIRST_SERVICE_PORT),
            None,
            "no room left"
        );
    }

    #[test]
    fn target_ranges_must_match_the_public_range() {
        let ports = Some("15000-15002".parse().unwrap());
        assert_eq!(
            parse_target("db:5000-5002", ports).unwrap().to_string(),
            "db:5000"
        );
        assert_eq!(
            parse_target("db:5000", ports).unwrap().to_string(),
            "db:5000"
        );
        let err = parse_target("db:5000-5001", ports).unwrap_err().to_string();
        assert!(
            err.contains("5000-5001 has 2 ports but the public range has 3"),
            "{err}"
        );
        assert!(parse_target("[::1]:5000-5002", ports).is_ok());
        assert!(parse_target("db:x-y", ports).is_err());
    }

    #[test]
    fn path_prefixes_split_a_hostname_with_one_certificate() {
        assert_eq!(parse_path_prefix("/api/").unwrap().as_deref(), Some("/api"));
        assert_eq!(parse_path_prefix("/").unwrap(), None);
        for bad in ["api", "/a?b", "/a/../b", "/a b"] {
            assert!(parse_path_prefix(bad).is_err(), "{bad}");
        }
        let http = |id: &str, prefix: Option<&str>, issuer: Issuer| TunnelRecord {
            kind: TunnelKind::Http,
            hostname: Some("shop.example.com".parse().unwrap()),
            ports: None,
            path_prefix: prefix.map(String::from),
            issuer,
            ..port_tunnel(id, TunnelKind::Http, "1", 20000)
        };
        let root = http("a", None, Issuer::Acme);
        check(
            &http("b", Some("/api"), Issuer::Acme),
            std::slice::from_ref(&root),
            &[],
        )
        .unwrap();
        let same = check(
            &http("b", None, Issuer::Acme),
            std::slice::from_ref(&root),
            &[],
        );
        assert!(same.unwrap_err().to_string().contains("already published"));
        let issuer = check(
            &http("b", Some("/api"), Issuer::Internal),
            std::slice::from_ref(&root),
            &[],
        );
        assert!(issuer.unwrap_err().to_string().contains("use issuer acme"));
        let passthrough = TunnelRecord {
            kind: TunnelKind::Tls,
            ..http("c", None, Issuer::None)
        };
        assert!(check(&passthrough, &[http("d", Some("/x"), Issuer::Acme)], &[]).is_err());
    }

    #[test]
    fn ranges_map_one_to_one() {
        let tunnel = port_tunnel("a", TunnelKind::Tcp, "15000-15002", 20010);
        let forwards: Vec<(u16, String)> =
            tunnel.forwards().map(|(p, t)| (p, t.to_string())).collect();
        assert_eq!(
            forwards,
            [
                (20010, "127.0.0.1:5432".to_string()),
                (20011, "127.0.0.1:5433".to_string()),
                (20012, "127.0.0.1:5434".to_string())
            ]
        );
        assert_eq!(tunnel.label(), "tcp 15000-15002");
    }

    #[test]
    fn clashes_and_gateway_policies_are_refused_with_the_reason() {
        let others = vec![port_tunnel("a", TunnelKind::Tcp, "15000-15010", 20000)];
        let clash = port_tunnel("b", TunnelKind::Tcp, "15010-15011", 20011);
        let err = check(&clash, &others, &[]).unwrap_err().to_string();
        assert!(
            err.contains("already taken by tunnel tcp 15000-15010"),
            "{err}"
        );
        // The same number over UDP is another port.
        check(
            &port_tunnel("b", TunnelKind::Udp, "15010", 20011),
            &others,
            &[],
        )
        .unwrap();
        let policy = PortPolicy {
            tcp_allowed: parse_ranges("10000-20000").unwrap(),
            tcp_reserved: vec![(443, "HTTPS listener".into())],
            ..PortPolicy::default()
        };
        let nodes = vec![gateway(Some(policy))];
        let err = check(&port_tunnel("c", TunnelKind::Tcp, "443", 1), &[], &nodes)
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("gateway tokyo: tcp port 443 is the gateway's own HTTPS listener"),
            "{err}"
        );
        let err = check(&port_tunnel("c", TunnelKind::Udp, "53", 1), &[], &nodes)
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("outside the gateway's --udp-ports (none)"),
            "{err}"
        );
        // A gateway that has not said its policy yet refuses what it cannot open itself.
        check(
            &port_tunnel("c", TunnelKind::Udp, "53", 1),
            &[],
            &[gateway(None)],
        )
        .unwrap();
        let too_many = check(&port_tunnel("g", TunnelKind::Tcp, "1000-2000", 1), &[], &[]);
        assert!(too_many
            .unwrap_err()
            .to_string()
            .contains("more than 1000 ports"));
        let mut past_end = port_tunnel("d", TunnelKind::Tcp, "15000-15010", 1);
        past_end.target = "127.0.0.1:65530".parse().unwrap();
        assert!(check(&past_end, &[], &[]).is_err());
        let mut hostname_kind = port_tunnel("e", TunnelKind::Tls, "15000", 1);
        hostname_kind.hostname = Some("db.example.com".parse().unwrap());
        assert!(check(&hostname_kind, &[], &[]).is_err());
        let mut v1_on_udp = port_tunnel("f", TunnelKind::Udp, "15000", 1);
        v1_on_udp.proxy_protocol = Some(kakuremichi_proto::proxy_protocol::ProxyProtocol::V1);
        assert!(check(&v1_on_udp, &[], &[]).is_err());
    }
}
