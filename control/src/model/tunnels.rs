//! A tunnel as the store keeps it: its kind, where its traffic goes (agents and targets), how
//! it reaches its origin, and the service ports it takes.

use super::gateways::GatewayChoice;
use super::Issuer;
use crate::access::TunnelAccess;
use crate::error::Error;
use kakuremichi_proto::ids::{Hostname, Target};
use kakuremichi_proto::messages::{OriginOptions, OriginTls};
use kakuremichi_proto::ports::{PortRange, Transport};
use kakuremichi_proto::proxy_protocol::ProxyProtocol;
use kakuremichi_proto::request_log::LogDetails;
use serde::{Deserialize, Serialize};
use std::ops::Range;

/// First service port handed to tunnels on an agent's overlay address.
pub const FIRST_SERVICE_PORT: u16 = 20000;

/// A published service: what people decided ([`TunnelSpec`]) and what Control assigned.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct TunnelRecord {
    pub id: String,
    /// Stored inline, so records keep the shape they had before the spec was its own type.
    #[serde(flatten)]
    pub spec: TunnelSpec,
    /// The first of the agent service ports it takes (one per public port).
    pub service_port: u16,
    pub created_at: u64,
}

/// Everything about a tunnel that the API, the form and the CLI set; [`crate::spec`] reads
/// it from what they send and [`crate::tunnels::check`] holds it to the rules.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct TunnelSpec {
    /// What it carries; records from before port tunnels are `http`.
    #[serde(default)]
    pub kind: TunnelKind,
    /// `http` and `tls`: the name clients ask for. Port tunnels may carry one as a label.
    #[serde(default)]
    pub hostname: Option<Hostname>,
    /// `tcp` and `udp`: the public ports, mapped one to one onto the target's.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ports: Option<PortRange>,
    pub agent_id: String,
    /// For a port range, the target of its first port.
    pub target: Target,
    /// Other agents serving it too, each with its own target: gateways spread connections
    /// over the healthy ones.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub replicas: Vec<Replica>,
    pub enabled: bool,
    /// Who issues the hostname's certificate; `none` serves plain HTTP.
    #[serde(default)]
    pub issuer: Issuer,
    /// Who may open it; empty is public.
    #[serde(default)]
    pub access: TunnelAccess,
    /// `tcp` and `tls`: a PROXY header in front of each connection to the origin.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub proxy_protocol: Option<ProxyProtocol>,
    /// HTTPS origins, `Host` override, connect timeout, error page.
    #[serde(default)]
    pub origin: OriginSettings,
    /// Which gateways serve it.
    #[serde(default, skip_serializing_if = "is_all")]
    pub gateways: GatewayChoice,
    /// `http`: only requests under this path (`/api`); several tunnels may share a hostname.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub path_prefix: Option<String>,
    /// `http`: what the gateways' request log keeps beyond the path (nothing by default).
    #[serde(default, skip_serializing_if = "LogDetails::is_off")]
    pub request_log: LogDetails,
}

/// One more agent serving a tunnel (see [`TunnelRecord::replicas`]).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Replica {
    pub agent_id: String,
    /// Its own target, of the same shape as the tunnel's.
    pub target: Target,
}

/// What a tunnel carries and how clients reach it.
#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema,
)]
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
    /// A path the agent `GET`s to check the origin; none: a TCP connect.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub health_path: Option<String>,
    /// The status the check expects; none: any 2xx or 3xx.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub health_status: Option<u16>,
    /// Seconds between checks (0: none); none: the agent's default.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub health_interval_secs: Option<u64>,
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
            health_path: None,
            health_status: None,
            health_interval_secs: None,
            bad_gateway_page: None,
            not_found_page: None,
        }
    }
}

/// The largest CA bundle or error page a tunnel carries: each goes to every gateway.
pub const MAX_ORIGIN_TEXT: usize = 64 * 1024;

/// The longest connect timeout a tunnel may ask for.
pub const MAX_CONNECT_TIMEOUT_SECS: u64 = 300;
/// The longest time between two checks of an origin.
pub const MAX_HEALTH_INTERVAL_SECS: u64 = 3_600;

impl OriginSettings {
    pub(crate) fn check(&self, kind: TunnelKind) -> Result<(), Error> {
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
        if let Some(path) = &self.health_path {
            let plain = path.starts_with('/')
                && path.len() <= 256
                && path.bytes().all(|b| b.is_ascii_graphic());
            if !plain {
                return Err(Error::invalid(
                    "origin",
                    "health_path must be a path starting with /, without spaces",
                ));
            }
            // The agent checks in plain HTTP/1.1; a TLS or HTTP/2 origin is checked by a
            // TCP connect.
            if self.scheme != OriginScheme::Http {
                return Err(Error::invalid(
                    "origin",
                    format!(
                        "health_path checks plain-HTTP origins; a {}:// origin is checked by a TCP connect",
                        self.scheme.as_str()
                    ),
                ));
            }
        }
        if self
            .health_status
            .is_some_and(|s| !(100..=599).contains(&s))
        {
            return Err(Error::invalid("origin", "health_status must be 100 to 599"));
        }
        if self
            .health_interval_secs
            .is_some_and(|s| s > MAX_HEALTH_INTERVAL_SECS)
        {
            return Err(Error::invalid(
                "origin",
                format!("health_interval_secs must be 0 (no checks) to {MAX_HEALTH_INTERVAL_SECS}"),
            ));
        }
        Ok(())
    }
}

impl OriginSettings {
    /// How the agent checks the origin; none when the tunnel says nothing (the agent's
    /// default TCP check).
    pub fn health_check(&self) -> Option<kakuremichi_proto::messages::HealthCheck> {
        let set = self.health_path.is_some()
            || self.health_status.is_some()
            || self.health_interval_secs.is_some();
        set.then(|| kakuremichi_proto::messages::HealthCheck {
            interval_secs: self
                .health_interval_secs
                .unwrap_or(kakuremichi_proto::messages::DEFAULT_HEALTH_INTERVAL_SECS),
            http_path: self.health_path.clone(),
            expect_status: self.health_status,
        })
    }
}

impl TunnelSpec {
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
    pub(crate) fn same_place(&self, other: &TunnelSpec) -> bool {
        self.hostname == other.hostname && self.path_prefix == other.path_prefix
    }

    /// How many agent service ports the tunnel takes: one per public port.
    pub fn port_count(&self) -> u16 {
        self.ports.map_or(1, PortRange::len)
    }

    /// `(service port, target)` for each public port, in order (one pair for hostname
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
}

impl TunnelRecord {
    /// The agent service ports the tunnel takes.
    pub fn service_ports(&self) -> Range<u32> {
        let first = u32::from(self.service_port);
        first..first + u32::from(self.spec.port_count())
    }

    /// tunnels). [`check`] proved every target port fits in a `u16`.
    pub fn forwards(&self) -> impl Iterator<Item = (u16, Target)> + '_ {
        self.forwards_to(&self.spec.target)
    }

    /// [`Self::forwards`] onto one agent's `target` (the tunnel's or a replica's).
    pub fn forwards_to<'a>(
        &'a self,
        target: &'a Target,
    ) -> impl Iterator<Item = (u16, Target)> + 'a {
        (0..self.spec.port_count())
            .map(move |i| (self.service_port + i, target.with_port(target.port() + i)))
    }

    /// What people call it: the hostname (with its path prefix), or `tcp 15432`.
    pub fn label(&self) -> String {
        let spec = &self.spec;
        match (&spec.hostname, spec.ports) {
            (Some(hostname), None) => {
                format!("{hostname}{}", spec.path_prefix.as_deref().unwrap_or(""))
            }
            (Some(hostname), Some(ports)) => format!("{hostname} ({} {ports})", spec.kind.as_str()),
            (None, Some(ports)) => format!("{} {ports}", spec.kind.as_str()),
            (None, None) => self.id.clone(),
        }
    }
}

fn is_all(choice: &GatewayChoice) -> bool {
    *choice == GatewayChoice::All
}
