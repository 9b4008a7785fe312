//! What a tunnel publishes and the rules for it, as plain data: its kind, the hostname or
//! public ports it owns, the agent service ports it takes, and whether every gateway can
//! serve it. The store calls [`check`] on every tunnel it creates or changes.

use crate::error::Error;
use crate::model::{
    NodeRecord, OriginScheme, Replica, TunnelKind, TunnelRecord, FIRST_SERVICE_PORT,
};
use kakuremichi_proto::ids::{NodeKind, Target};
use kakuremichi_proto::ports::{PortRange, MAX_TUNNEL_PORTS};
use kakuremichi_proto::targets::TargetRules;
use std::ops::Range;

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
        .filter(|t| t.spec.agents().any(|(id, _)| agent_ids.contains(&id)))
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
    for (agent_id, target) in tunnel.spec.agents() {
        let reported = nodes
            .iter()
            .find(|n| n.id == agent_id)
            .and_then(|agent| Some((agent, agent.allow_targets.as_deref()?)));
        let Some((agent, text)) = reported else {
            continue;
        };
        let rules = TargetRules::parse(text, None).unwrap_or_default();
        let last = target.port().saturating_add(tunnel.spec.port_count() - 1);
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
    if tunnel.spec.replicas.is_empty() {
        return Ok(());
    }
    if tunnel.spec.kind == TunnelKind::Udp {
        return Err(Error::invalid(
            "agents",
            "udp tunnels have one agent: a datagram flow cannot move between replicas",
        ));
    }
    if tunnel.spec.replicas.len() + 1 > MAX_AGENTS {
        return Err(Error::invalid(
            "agents",
            format!("a tunnel has at most {MAX_AGENTS} agents"),
        ));
    }
    let mut seen = std::collections::HashSet::new();
    for (agent_id, target) in tunnel.spec.agents() {
        if !seen.insert(agent_id) {
            return Err(Error::invalid(
                "agents",
                format!("agent {agent_id} is listed twice"),
            ));
        }
        if u32::from(target.port()) + u32::from(tunnel.spec.port_count()) - 1 > 65_535 {
            return Err(Error::invalid(
                "agents",
                format!(
                    "{} ports from {target} run past 65535",
                    tunnel.spec.port_count()
                ),
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
    match tunnel.spec.kind.transport() {
        None => {
            let hostname = tunnel
                .spec
                .hostname
                .as_ref()
                .ok_or_else(|| Error::invalid("hostname", "is required"))?;
            if tunnel.spec.ports.is_some() {
                return Err(Error::invalid(
                    "ports",
                    format!(
                        "{} tunnels are reached by hostname",
                        tunnel.spec.kind.as_str()
                    ),
                ));
            }
            if !tunnel.spec.request_log.is_off() && tunnel.spec.kind != TunnelKind::Http {
                return Err(Error::invalid(
                    "request_log",
                    "only http tunnels log requests",
                ));
            }
            if let Err(why) = tunnel.spec.request_log.check() {
                return Err(Error::invalid("request_log", why));
            }
            if tunnel.spec.path_prefix.is_some() && tunnel.spec.kind != TunnelKind::Http {
                return Err(Error::invalid(
                    "path_prefix",
                    "only http tunnels split a hostname by path",
                ));
            }
            let neighbours: Vec<&TunnelRecord> = others
                .filter(|t| t.spec.kind.by_hostname() && t.spec.hostname.as_ref() == Some(hostname))
                .collect();
            // A passthrough hostname is one TLS stream, which cannot be split by path; http
            // tunnels share the hostname's certificate, so they must agree on its issuer.
            for other in neighbours {
                let clash =
                    if tunnel.spec.kind == TunnelKind::Tls || other.spec.kind == TunnelKind::Tls {
                        Some(format!("{hostname} is already published"))
                    } else if other.spec.same_place(&tunnel.spec) {
                        Some(match &tunnel.spec.path_prefix {
                            Some(prefix) => format!("{hostname}{prefix} is already published"),
                            None => format!("{hostname} is already published"),
                        })
                    } else if other.spec.issuer != tunnel.spec.issuer {
                        Some(format!(
                            "tunnels on {hostname} share its certificate: use issuer {}",
                            other.spec.issuer.as_str()
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
            let ports = tunnel.spec.ports.ok_or_else(|| {
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
            if u32::from(tunnel.spec.target.port()) + u32::from(ports.len()) - 1 > 65_535 {
                return Err(Error::invalid(
                    "target",
                    format!(
                        "{} ports from {} run past 65535",
                        ports.len(),
                        tunnel.spec.target
                    ),
                ));
            }
            if tunnel.spec.access != crate::access::TunnelAccess::default() {
                return Err(Error::invalid(
                    "access",
                    "access rules apply to http tunnels; a port tunnel is open to every address",
                ));
            }
            if let Some(clash) = others
                .filter(|t| t.spec.kind == tunnel.spec.kind)
                .find(|t| t.spec.ports.is_some_and(|theirs| theirs.overlaps(ports)))
            {
                return Err(Error::conflict(
                    "port",
                    format!("{} is already taken by tunnel {}", ports, clash.label()),
                ));
            }
            let gateways = nodes.iter().filter(|n| {
                n.kind == NodeKind::Gateway && !n.disabled && tunnel.spec.gateways.selects(n)
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
    tunnel.spec.origin.check(tunnel.spec.kind)?;
    if tunnel.spec.proxy_protocol.is_some()
        && !matches!(tunnel.spec.kind, TunnelKind::Tcp | TunnelKind::Tls)
    {
        return Err(Error::invalid(
            "proxy_protocol",
            "applies to tcp and tls tunnels (http tunnels send X-Forwarded-For)",
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests;
