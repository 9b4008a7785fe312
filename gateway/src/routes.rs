//! Which tunnel serves a hostname. Plain data built from a config snapshot.

use crate::origin::OriginTlsClient;
use hyper::header::HeaderValue;
use kakuremichi_proto::access::AccessPolicy;
use kakuremichi_proto::ids::Hostname;
use kakuremichi_proto::messages::{under_prefix, ControlRoute, HttpRoute};
use kakuremichi_proto::request_log::LogDetails;
use std::collections::HashMap;
use std::net::{Ipv4Addr, SocketAddrV4};
use std::sync::Arc;

/// Where a route's requests are sent.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum Upstream {
    /// A tunnel's service port on its agent's overlay address.
    Overlay {
        addr: SocketAddrV4,
        /// TLS for an HTTPS origin.
        tls: Option<OriginTlsClient>,
        /// HTTP/2 with prior knowledge, for h2c origins (gRPC).
        http2: bool,
    },
    /// Control itself, over the network the gateway shares with it (`host:port`).
    Direct(String),
}

impl Upstream {
    /// The agent it goes to, if it goes through the overlay.
    pub fn agent(&self) -> Option<Ipv4Addr> {
        match self {
            Upstream::Overlay { addr, .. } => Some(*addr.ip()),
            Upstream::Direct(_) => None,
        }
    }

    /// Whether requests go out as HTTP/2.
    pub fn speaks_http2(&self) -> bool {
        matches!(self, Upstream::Overlay { http2: true, .. })
    }
}

impl std::fmt::Display for Upstream {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Upstream::Overlay {
                addr,
                tls: None,
                http2: false,
            } => write!(f, "{addr}"),
            Upstream::Overlay {
                addr, tls: Some(_), ..
            } => write!(f, "https via {addr}"),
            Upstream::Overlay {
                addr, http2: true, ..
            } => write!(f, "h2c via {addr}"),
            Upstream::Direct(addr) => f.write_str(addr),
        }
    }
}

/// Where one hostname's requests go.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Route {
    /// The tunnel's id.
    pub tunnel_id: String,
    /// The public hostname, for pages and logs.
    pub hostname: Hostname,
    /// Where requests go.
    pub upstream: Upstream,
    /// The same service on the tunnel's other agents.
    pub replicas: Vec<Upstream>,
    /// Served over HTTPS (plain HTTP redirects) rather than plain HTTP.
    pub https: bool,
    /// Who may open it; `None` is public.
    pub access: Option<Arc<AccessPolicy>>,
    /// The `Host` the origin gets instead of the client's.
    pub host_header: Option<HeaderValue>,
    /// The tunnel's own page for an unreachable origin.
    pub bad_gateway_page: Option<Arc<str>>,
    /// Only paths under this prefix.
    pub path_prefix: Option<String>,
    /// What the request log keeps beyond the path, when the tunnel asks.
    pub log: Option<Arc<LogDetails>>,
}

/// Every route of one hostname, longest path prefix first.
#[derive(Clone, Debug, Default)]
pub struct HostRoutes {
    routes: Vec<Route>,
    /// Whether the path picks a route or meets an access rule here: then the gateway decides
    /// on, and forwards, the normalised path ([`kakuremichi_proto::path`]).
    path_decides: bool,
    /// For paths no route takes.
    pub not_found_page: Option<Arc<str>>,
}

impl Route {
    /// Where to send a request, in the order to try: with replicas, the live agents in
    /// turn, then the rest. Without replicas (most tunnels) nothing is copied.
    pub fn upstreams(
        &self,
        health: &crate::replicas::ReplicaHealth,
    ) -> std::borrow::Cow<'_, [Upstream]> {
        if self.replicas.is_empty() {
            return std::borrow::Cow::Borrowed(std::slice::from_ref(&self.upstream));
        }
        let all: Vec<&Upstream> = std::iter::once(&self.upstream)
            .chain(&self.replicas)
            .collect();
        let agents: Vec<Ipv4Addr> = all.iter().filter_map(|u| u.agent()).collect();
        health
            .order(&agents)
            .into_iter()
            .filter_map(|agent| all.iter().find(|u| u.agent() == Some(agent)))
            .map(|u| (*u).clone())
            .collect::<Vec<_>>()
            .into()
    }
}

impl HostRoutes {
    /// The route for a request path.
    pub fn for_path(&self, path: &str) -> Option<&Route> {
        self.routes
            .iter()
            .find(|r| under_prefix(r.path_prefix.as_deref(), path))
    }

    /// Whether requests for this hostname are decided on their normalised path.
    pub fn path_decides(&self) -> bool {
        self.path_decides
    }

    /// Any of them: they agree on what belongs to the hostname (HTTPS, certificate).
    pub fn any(&self) -> &Route {
        // A HostRoutes is only made with at least one route.
        &self.routes[0]
    }
}

/// Hostname → its routes.
#[derive(Clone, Debug, Default)]
pub struct RouteTable {
    by_host: HashMap<Hostname, HostRoutes>,
    /// Routes that could not be served, and why.
    pub problems: Vec<String>,
}

impl RouteTable {
    /// The table for a snapshot's routes, plus Control's own route if it has one.
    pub fn new(routes: &[HttpRoute], control: Option<&ControlRoute>) -> Self {
        let mut by_host: HashMap<Hostname, HostRoutes> = HashMap::new();
        let mut problems = Vec::new();
        // Shortest prefix first, so the page of the tunnel that takes the most of a hostname
        // speaks for its unserved paths.
        let mut ordered: Vec<&HttpRoute> = routes.iter().collect();
        ordered.sort_by_key(|r| r.path_prefix.as_ref().map_or(0, String::len));
        for r in ordered {
            let tls = match r.origin.tls.as_ref().map(OriginTlsClient::new).transpose() {
                Ok(tls) => tls,
                Err(why) => {
                    let problem =
                        format!("tunnel {} ({}): {why}; not served", r.tunnel_id, r.hostname);
                    log::error!("{problem}");
                    problems.push(problem);
                    continue;
                }
            };
            let host = by_host.entry(r.hostname.clone()).or_default();
            if host.not_found_page.is_none() {
                host.not_found_page = r.origin.not_found_page.as_deref().map(Arc::from);
            }
            host.routes.push(Route {
                tunnel_id: r.tunnel_id.clone(),
                hostname: r.hostname.clone(),
                upstream: Upstream::Overlay {
                    addr: SocketAddrV4::new(r.agent_ip, r.service_port),
                    tls: tls.clone(),
                    http2: r.origin.h2c,
                },
                replicas: r
                    .replica_ips
                    .iter()
                    .map(|ip| Upstream::Overlay {
                        addr: SocketAddrV4::new(*ip, r.service_port),
                        tls: tls.clone(),
                        http2: r.origin.h2c,
                    })
                    .collect(),
                https: r.https,
                access: (!r.access.is_public()).then(|| Arc::new(r.access.clone())),
                host_header: r
                    .origin
                    .host_header
                    .as_deref()
                    .and_then(|h| HeaderValue::from_str(h).ok()),
                bad_gateway_page: r.origin.bad_gateway_page.as_deref().map(Arc::from),
                path_prefix: r.path_prefix.clone(),
                log: (!r.log.is_off()).then(|| Arc::new(r.log.clone())),
            });
        }
        for host in by_host.values_mut() {
            host.routes
                .sort_by_key(|r| std::cmp::Reverse(r.path_prefix.as_ref().map_or(0, String::len)));
            host.path_decides = host
                .routes
                .iter()
                .any(|r| r.path_prefix.is_some() || r.access.is_some());
        }
        if let Some(control) = control {
            let route = Route {
                tunnel_id: "control".into(),
                hostname: control.hostname.clone(),
                upstream: Upstream::Direct(control.upstream.clone()),
                replicas: Vec::new(),
                https: true,
                access: None,
                host_header: None,
                bad_gateway_page: None,
                path_prefix: None,
                log: None,
            };
            let host = HostRoutes {
                routes: vec![route],
                path_decides: false,
                not_found_page: None,
            };
            by_host.insert(control.hostname.clone(), host);
        }
        RouteTable { by_host, problems }
    }

    /// The routes for a `Host` header value (any port is ignored, case does not matter).
    pub fn lookup(&self, host: &str) -> Option<&HostRoutes> {
        let name = match host.rsplit_once(':') {
            Some((name, port))
                if !name.ends_with(']') && port.bytes().all(|b| b.is_ascii_digit()) =>
            {
                name
            }
            _ => host,
        };
        self.by_host.get(&name.parse::<Hostname>().ok()?)
    }

    /// Whether some route sends requests to `upstream`.
    pub fn routes_to(&self, upstream: &Upstream) -> bool {
        self.by_host
            .values()
            .flat_map(|host| &host.routes)
            .any(|route| route.upstream == *upstream || route.replicas.contains(upstream))
    }

    /// The agents that share some tunnel with another agent (the ones worth probing).
    pub fn replica_agents(&self) -> impl Iterator<Item = Ipv4Addr> + '_ {
        self.by_host
            .values()
            .flat_map(|host| &host.routes)
            .filter(|route| !route.replicas.is_empty())
            .flat_map(|route| std::iter::once(&route.upstream).chain(&route.replicas))
            .filter_map(Upstream::agent)
    }

    /// How many hostnames are routed (however many paths each splits into).
    pub fn len(&self) -> usize {
        self.by_host.len()
    }

    /// Whether no hostname is routed.
    pub fn is_empty(&self) -> bool {
        self.by_host.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lookup_ignores_port_and_case() {
        let table = RouteTable::new(
            &[HttpRoute {
                tunnel_id: "tun_1".into(),
                hostname: "app.localhost".parse().unwrap(),
                agent_ip: "10.77.0.2".parse().unwrap(),
                service_port: 20000,
                replica_ips: vec![],
                https: false,
                access: Default::default(),
                origin: Default::default(),
                path_prefix: None,
                log: Default::default(),
            }],
            None,
        );
        let route = table.lookup("APP.localhost:8080").unwrap().any();
        assert_eq!(route.upstream.to_string(), "10.77.0.2:20000");
        assert!(table.lookup("app.localhost").is_some());
        assert!(table.lookup("other.localhost").is_none());
        assert!(table.lookup("").is_none());
        assert!(table.lookup("app.localhost:x").is_none());
        let control = ControlRoute {
            hostname: "control.localhost".parse().unwrap(),
            upstream: "127.0.0.1:7080".into(),
        };
        let table = RouteTable::new(&[], Some(&control));
        let route = table.lookup("control.localhost").unwrap().any();
        assert_eq!(
            (route.upstream.clone(), route.https),
            (Upstream::Direct("127.0.0.1:7080".into()), true)
        );
    }
}
