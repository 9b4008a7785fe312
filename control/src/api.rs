//! The REST API under `/api/v1`: admin-token authenticated JSON. Input is parsed field by
//! field so an error names the field; nothing is written unless the whole request is valid.

use crate::access::TunnelAccess;
use crate::auth::{password, Role, UserRecord};
use crate::error::Error;
use crate::fleet::GatewayChoice;
use crate::model::{
    CertRecord, Issuer, NodeRecord, Replica, State, TokenRecord, TokenScope, TunnelRecord,
};
use crate::store::{NewTunnel, TunnelPatch};
use crate::tunnels::{OriginScheme, OriginSettings, TunnelKind};
use crate::Control;
use http_body_util::{BodyExt, Limited};
use hyper::{Method, Request, Response};
use kakuremichi_proto::ids::{Hostname, NodeKind, Target};
use kakuremichi_proto::ports::PortRange;
use kakuremichi_proto::proxy_protocol::ProxyProtocol;
use kakuremichi_proto::ProtoError;
use kakuremichi_rt::http::{respond, Body};
use serde_json::{json, Map, Value};

/// Largest JSON body the API reads.
pub const MAX_BODY_BYTES: usize = 64 * 1024;

/// Answer one `/api/v1/…` request.
pub async fn handle(control: &Control, request: Request<Body>) -> Response<Body> {
    let path = request.uri().path().to_string();
    match route(control, request).await {
        Ok((status, body)) => json_response(status, &body),
        Err(Error::MethodNotAllowed) => {
            let mut response = error_response(&Error::MethodNotAllowed);
            let allowed = crate::openapi::allowed_methods(&path).join(", ");
            if let Ok(value) = hyper::header::HeaderValue::from_str(&allowed) {
                response.headers_mut().insert(hyper::header::ALLOW, value);
            }
            response
        }
        Err(e) => error_response(&e),
    }
}

/// The JSON form of an error.
pub fn error_response(e: &Error) -> Response<Body> {
    let status = e.status();
    let message = if status >= 500 {
        log::error!("api: {e}");
        "internal error; see Control's log".to_string()
    } else {
        e.to_string()
    };
    let mut body = json!({ "error": message });
    if let Some(field) = e.field() {
        body["field"] = json!(field);
    }
    json_response(status, &body)
}

fn json_response(status: u16, body: &Value) -> Response<Body> {
    respond(status, "application/json", format!("{body}\n"))
}

/// What the request's `Authorization: Bearer` API token may do; 401 without a live one.
pub fn token_scope(control: &Control, headers: &hyper::HeaderMap) -> Result<TokenScope, Error> {
    match crate::auth::bearer(headers.get(hyper::header::AUTHORIZATION)) {
        Some(token) => control
            .store
            .token_scope(token)?
            .ok_or(Error::Unauthorized("unknown API token")),
        None => Err(Error::Unauthorized(
            "send Authorization: Bearer <token> (kakuremichi-control token create)",
        )),
    }
}

async fn route(control: &Control, request: Request<Body>) -> Result<(u16, Value), Error> {
    // The description of the API is public: it holds nothing but the routes.
    if request.method() == Method::GET && request.uri().path() == "/api/v1/openapi.json" {
        return Ok((200, crate::openapi::document(&control.public_url)));
    }
    let scope = token_scope(control, request.headers())?;
    if scope == TokenScope::Read && request.method() != Method::GET {
        return Err(Error::Forbidden("this token may only read"));
    }
    let path = request.uri().path().trim_end_matches('/').to_string();
    let segments: Vec<&str> = path.split('/').skip(3).collect(); // "", "api", "v1"
    let method = request.method().clone();
    match (method, segments.as_slice()) {
        (Method::GET, ["agents"]) => list_nodes(control, NodeKind::Agent),
        (Method::GET, ["gateways"]) => list_nodes(control, NodeKind::Gateway),
        (Method::POST, ["agents"]) => {
            create_node(control, NodeKind::Agent, read_json(request).await?)
        }
        (Method::POST, ["gateways"]) => {
            create_node(control, NodeKind::Gateway, read_json(request).await?)
        }
        (method, [kind @ ("agents" | "gateways"), id, rest @ ..]) => {
            let kind = if *kind == "agents" {
                NodeKind::Agent
            } else {
                NodeKind::Gateway
            };
            let id = id.to_string();
            let action = match rest {
                [] => String::new(),
                [action] => action.to_string(),
                _ => return Err(Error::not_found("endpoint", &path)),
            };
            change_node(control, kind, &id, method, &action, request).await
        }
        (Method::GET, ["tunnels"]) => {
            let state = control.store.state()?;
            Ok((
                200,
                Value::Array(state.tunnels.iter().map(tunnel_json).collect()),
            ))
        }
        (Method::POST, ["tunnels"]) => create_tunnel(control, read_json(request).await?),
        (Method::GET, ["tunnels", id]) => Ok((200, tunnel_json(&find_tunnel(control, id)?))),
        (Method::PATCH, ["tunnels", id]) => {
            let current = find_tunnel(control, id)?;
            let patch = parse_patch(control, read_json(request).await?, &current)?;
            let id = current.id;
            let tunnel = control.store.update_tunnel(&id, patch)?;
            Ok((200, tunnel_json(&tunnel)))
        }
        (Method::DELETE, ["tunnels", id]) => {
            control.store.delete_tunnel(id)?;
            Ok((200, json!({ "deleted": id })))
        }
        (Method::GET, ["tunnels", id, "service-tokens"]) => {
            let tunnel = find_tunnel(control, id)?;
            Ok((200, tunnel.access.to_json()["service_tokens"].clone()))
        }
        (Method::POST, ["tunnels", id, "service-tokens"]) => {
            let id = id.to_string();
            let mut fields = read_json(request).await?;
            let name = fields.required("name")?;
            fields.finish()?;
            let (record, token) = control.store.add_service_token(&id, &name)?;
            let body = json!({
                "id": record.id, "name": record.name, "created_at": record.created_at,
                "token": token,
            });
            Ok((201, body))
        }
        (Method::DELETE, ["tunnels", id, "service-tokens", token_id]) => {
            control.store.revoke_service_token(id, token_id)?;
            Ok((200, json!({ "revoked": token_id })))
        }
        (Method::POST, ["access", "rotate-keys"]) => {
            control.store.rotate_access_keys()?;
            Ok((200, json!({ "rotated": true })))
        }
        (Method::GET, ["tokens"]) => Ok((
            200,
            Value::Array(control.store.tokens()?.iter().map(token_json).collect()),
        )),
        (Method::POST, ["tokens"]) => create_token(control, read_json(request).await?),
        (Method::DELETE, ["tokens", id]) => {
            control.store.revoke_token(id)?;
            Ok((200, json!({ "revoked": id })))
        }
        (Method::GET, ["users"]) => Ok((
            200,
            Value::Array(control.store.users()?.iter().map(user_json).collect()),
        )),
        (Method::POST, ["users"]) => {
            let created = create_user(control, read_json(request).await?);
            created
        }
        (Method::PATCH, ["users", id]) => {
            let id = id.to_string();
            let mut fields = read_json(request).await?;
            let disabled = fields.boolean("disabled")?;
            let role = match fields.string("role")?.as_deref() {
                None => None,
                Some("admin") => Some(Role::Admin),
                Some("member") => Some(Role::Member),
                Some(_) => return Err(Error::invalid("role", "must be admin or member")),
            };
            fields.finish()?;
            let user = control.store.update_user(&id, |user| {
                user.disabled = disabled.unwrap_or(user.disabled);
                user.role = role.unwrap_or(user.role);
            })?;
            Ok((200, user_json(&user)))
        }
        (Method::DELETE, ["users", id]) => {
            control.store.delete_user(id)?;
            Ok((200, json!({ "deleted": id })))
        }
        (Method::GET, ["certificates"]) => {
            let state = control.store.state()?;
            Ok((
                200,
                Value::Array(state.certificates.iter().map(certificate_json).collect()),
            ))
        }
        (Method::POST, ["certificates"]) => upload_certificate(control, read_json(request).await?),
        (Method::POST, ["certificates", hostname, "retry"]) => {
            let record = control.store.retry_certificate(hostname)?;
            Ok((200, certificate_json(&record)))
        }
        (
            _,
            ["agents" | "gateways" | "tunnels" | "certificates" | "tokens" | "users" | "access", ..],
        ) => Err(Error::MethodNotAllowed),
        _ => Err(Error::not_found("endpoint", &path)),
    }
}

fn find_tunnel(control: &Control, id: &str) -> Result<TunnelRecord, Error> {
    let state = control.store.state()?;
    state
        .tunnels
        .into_iter()
        .find(|t| t.id == id)
        .ok_or_else(|| Error::not_found("tunnel", id))
}

async fn read_json(request: Request<Body>) -> Result<Fields, Error> {
    let bytes = Limited::new(request.into_body(), MAX_BODY_BYTES)
        .collect()
        .await
        .map_err(|_| {
            Error::invalid(
                "body",
                format!("unreadable or larger than {MAX_BODY_BYTES} bytes"),
            )
        })?
        .to_bytes();
    let value: Value = if bytes.is_empty() {
        Value::Object(Map::new())
    } else {
        serde_json::from_slice(&bytes)
            .map_err(|e| Error::invalid("body", format!("not JSON: {e}")))?
    };
    match value {
        Value::Object(map) => Ok(Fields(map)),
        _ => Err(Error::invalid("body", "expected a JSON object")),
    }
}

/// A JSON object whose fields are taken one by one; leftovers are unknown fields.
struct Fields(Map<String, Value>);

impl Fields {
    fn take(&mut self, name: &str) -> Option<Value> {
        self.0.remove(name).filter(|value| !value.is_null())
    }
    fn string(&mut self, name: &str) -> Result<Option<String>, Error> {
        match self.0.remove(name) {
            None | Some(Value::Null) => Ok(None),
            Some(Value::String(s)) => Ok(Some(s)),
            Some(_) => Err(Error::invalid(name, "must be a string")),
        }
    }
    fn required(&mut self, name: &str) -> Result<String, Error> {
        self.string(name)?
            .ok_or_else(|| Error::invalid(name, "is required"))
    }
    fn parsed<T: std::str::FromStr<Err = ProtoError>>(
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
    fn boolean(&mut self, name: &str) -> Result<Option<bool>, Error> {
        match self.0.remove(name) {
            None | Some(Value::Null) => Ok(None),
            Some(Value::Bool(b)) => Ok(Some(b)),
            Some(_) => Err(Error::invalid(name, "must be true or false")),
        }
    }
    fn number(&mut self, name: &str) -> Result<Option<u64>, Error> {
        match self.0.remove(name) {
            None | Some(Value::Null) => Ok(None),
            Some(Value::Number(n)) => n
                .as_u64()
                .map(Some)
                .ok_or_else(|| Error::invalid(name, "must be a whole number of 0 or more")),
            Some(_) => Err(Error::invalid(name, "must be a number")),
        }
    }
    fn finish(self) -> Result<(), Error> {
        match self.0.keys().next() {
            Some(unknown) => Err(Error::invalid(unknown, "unknown field")),
            None => Ok(()),
        }
    }
}

impl Fields {
    /// `port` (a number) or `ports` (`"20000-20010"`, or a number).
    fn ports(&mut self) -> Result<Option<PortRange>, Error> {
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
    fn proxy_protocol(&mut self) -> Result<Option<Option<ProxyProtocol>>, Error> {
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
    fn target(
        &mut self,
        ports: Option<PortRange>,
    ) -> Result<Option<(Target, OriginScheme)>, Error> {
        self.string("target")?
            .map(|raw| crate::tunnels::parse_scheme_target(&raw, ports))
            .transpose()
    }

    /// `agents`: `[{"agent": id, "target": …}, …]`, the first taking the place of `agent` and
    /// `target`, the rest replicas. Every target speaks the same scheme.
    fn agents(&mut self, ports: Option<PortRange>) -> Result<Option<Agents>, Error> {
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
    fn gateways(&mut self, control: &Control) -> Result<Option<GatewayChoice>, Error> {
        match self.0.remove("gateways") {
            None => Ok(None),
            Some(value) => {
                let nodes = control.store.state()?.nodes;
                GatewayChoice::from_json(&value, &nodes).map(Some)
            }
        }
    }

    /// `path_prefix`: `"/api"`, or `"/"` to remove it.
    fn path_prefix(&mut self) -> Result<Option<Option<String>>, Error> {
        self.string("path_prefix")?
            .map(|raw| crate::tunnels::parse_path_prefix(&raw))
            .transpose()
    }

    /// `origin` settings applied over `current`, with the target's scheme; `None` when
    /// neither was given.
    fn origin(
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
struct Agents {
    agent_id: String,
    target: Target,
    scheme: OriginScheme,
    replicas: Vec<Replica>,
}

fn create_tunnel(control: &Control, mut fields: Fields) -> Result<(u16, Value), Error> {
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
    let tunnel = control.store.create_tunnel(new)?;
    Ok((201, tunnel_json(&tunnel)))
}

/// A tunnel change; an `access` object changes the rules it names on top of `current`.
fn parse_patch(
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

fn create_token(control: &Control, mut fields: Fields) -> Result<(u16, Value), Error> {
    let name = fields.required("name")?;
    let expires_at = fields
        .number("expires_days")?
        .map(|days| crate::auth::unix_now() + days.min(3650) * 86_400);
    let scope = match fields.string("scope")? {
        Some(text) => TokenScope::parse(&text)?,
        None => TokenScope::Admin,
    };
    fields.finish()?;
    let (record, token) = control.store.create_token(&name, expires_at, scope)?;
    let mut body = token_json(&record);
    body["token"] = json!(token);
    Ok((201, body))
}

fn token_json(token: &TokenRecord) -> Value {
    json!({
        "id": token.id,
        "name": token.name,
        "created_at": token.created_at,
        "expires_at": token.expires_at,
        "scope": token.scope.as_str(),
    })
}

fn create_user(control: &Control, mut fields: Fields) -> Result<(u16, Value), Error> {
    let name = fields.required("name")?;
    let role = match fields.string("role")?.as_deref() {
        None | Some("member") => Role::Member,
        Some("admin") => Role::Admin,
        Some(_) => return Err(Error::invalid("role", "must be admin or member")),
    };
    let given = fields.string("password")?;
    fields.finish()?;
    if let Some(given) = &given {
        password::check_policy(given).map_err(|why| Error::invalid("password", why))?;
    }
    let secret = given.clone().unwrap_or_else(password::generate);
    let hash = password::hash(&secret).map_err(Error::Store)?;
    let user = control.store.create_user(&name, role, hash, false)?;
    let mut body = user_json(&user);
    if given.is_none() {
        body["password"] = json!(secret);
    }
    Ok((201, body))
}

fn user_json(user: &UserRecord) -> Value {
    json!({
        "id": user.id,
        "name": user.name,
        "role": user.role.as_str(),
        "disabled": user.disabled,
        "created_at": user.created_at,
    })
}

fn create_node(
    control: &Control,
    kind: NodeKind,
    mut fields: Fields,
) -> Result<(u16, Value), Error> {
    let name = fields
        .string("name")?
        .unwrap_or_else(|| kind.as_str().to_string());
    crate::model::check_name(&name).map_err(|why| Error::invalid("name", why))?;
    fields.finish()?;
    let (record, api_key) = control.store.create_node(kind, name)?;
    Ok((201, with_key(control, &record, &api_key)))
}

/// One node of `kind`: read it, rename or enable/disable it (`PATCH`), rotate its key or
/// delete it.
async fn change_node(
    control: &Control,
    kind: NodeKind,
    id: &str,
    method: Method,
    action: &str,
    request: Request<Body>,
) -> Result<(u16, Value), Error> {
    let state = control.store.state()?;
    let node = state
        .nodes
        .iter()
        .find(|n| n.id == id && n.kind == kind)
        .ok_or_else(|| Error::not_found(kind.as_str(), id))?;
    let (status, body) = match (method, action) {
        (Method::GET, "") => return Ok((200, node_json(control, &state, node))),
        (Method::PATCH, "") => {
            let mut fields = read_json(request).await?;
            let name = fields.string("name")?;
            if let Some(name) = &name {
                crate::model::check_name(name).map_err(|why| Error::invalid("name", why))?;
            }
            let enabled = fields.boolean("enabled")?;
            let gateway_only = |field: &str| match kind {
                NodeKind::Gateway => Ok(()),
                NodeKind::Agent => Err(Error::invalid(field, "only gateways have it")),
            };
            let labels = match fields.take("labels") {
                Some(value) => {
                    gateway_only("labels")?;
                    Some(crate::fleet::labels_from_json(&value)?)
                }
                None => None,
            };
            let draining = fields.boolean("draining")?;
            if draining.is_some() {
                gateway_only("draining")?;
            }
            fields.finish()?;
            let node = control.store.update_node(id, |node| {
                node.name = name.unwrap_or_else(|| node.name.clone());
                node.disabled = enabled.map_or(node.disabled, |enabled| !enabled);
                node.labels = labels.unwrap_or_else(|| node.labels.clone());
                node.draining = draining.unwrap_or(node.draining);
            })?;
            (200, node_json(control, &control.store.state()?, &node))
        }
        (Method::POST, "rotate-key") => {
            let (node, api_key) = control.store.rotate_node_key(id)?;
            (200, with_key(control, &node, &api_key))
        }
        (Method::DELETE, "") => {
            control.store.delete_node(id)?;
            (200, json!({ "deleted": id }))
        }
        _ => return Err(Error::MethodNotAllowed),
    };
    Ok((status, body))
}

/// A node's JSON with its new API key and the install snippets that carry it: shown once.
fn with_key(control: &Control, node: &NodeRecord, api_key: &str) -> Value {
    let mut body = match control.store.state() {
        Ok(state) => node_json(control, &state, node),
        Err(e) => json!({ "id": node.id, "store": e.to_string() }),
    };
    body["api_key"] = json!(api_key);
    body["install"] = Value::Object(
        crate::install::snippets(
            node.kind,
            &control.public_url,
            api_key,
            !control.releases.is_empty(),
        )
        .into_iter()
        .map(|snippet| (snippet.key.to_string(), Value::String(snippet.text)))
        .collect(),
    );
    body
}

fn list_nodes(control: &Control, kind: NodeKind) -> Result<(u16, Value), Error> {
    let state = control.store.state()?;
    let nodes = state
        .nodes
        .iter()
        .filter(|n| n.kind == kind)
        .map(|n| node_json(control, &state, n))
        .collect();
    Ok((200, Value::Array(nodes)))
}

/// A node as the API shows it; `state` is the store's, for its health against its peers.
fn node_json(control: &Control, state: &State, node: &NodeRecord) -> Value {
    let presence = control.hub.presence(&node.id);
    let (health, health_reason) = crate::fleet::health_now(&control.hub, state, node);
    let mut value = json!({
        "id": node.id,
        "name": node.name,
        "overlay_ip": node.overlay_ip.to_string(),
        "public_key": node.public_key.map(|k| k.to_string()),
        "version": node.version,
        "allow_targets": node.allow_targets,
        "enabled": !node.disabled,
        "online": presence.online,
        "health": health.as_str(),
        "health_reason": health_reason,
        "last_seen": presence.last_seen,
        "created_at": node.created_at,
    });
    if node.kind == NodeKind::Gateway {
        value["wireguard_endpoint"] = json!(node.wireguard_endpoint);
        value["labels"] = json!(node.labels);
        value["draining"] = json!(node.draining);
    }
    if let Some(status) = presence.status {
        value["status"] = json!({
            "config_version": status.config_version,
            "peers_up": status.peers_up,
            "rx_bytes": status.rx_bytes,
            "tx_bytes": status.tx_bytes,
        });
    }
    value
}

fn tunnel_json(tunnel: &TunnelRecord) -> Value {
    json!({
        "id": tunnel.id,
        "kind": tunnel.kind.as_str(),
        "hostname": tunnel.hostname.as_ref().map(Hostname::as_str),
        "ports": tunnel.ports.map(|p| p.to_string()),
        "proxy_protocol": tunnel.proxy_protocol.map(ProxyProtocol::as_str),
        "path_prefix": tunnel.path_prefix,
        "gateways": tunnel.gateways.to_json(),
        "agent": tunnel.agent_id,
        "target": tunnel.target_text(),
        "agents": tunnel.agents().map(|(agent, target)| json!({
            "agent": agent,
            "target": tunnel.target_text_for(target),
        })).collect::<Vec<_>>(),
        "origin": tunnel.origin.to_json(),
        "service_port": tunnel.service_port,
        "enabled": tunnel.enabled,
        "issuer": tunnel.issuer.as_str(),
        "access": tunnel.access.to_json(),
        "created_at": tunnel.created_at,
    })
}

fn certificate_json(cert: &CertRecord) -> Value {
    json!({
        "hostname": cert.hostname.as_str(),
        "issuer": cert.issuer.as_str(),
        "state": cert.state,
        "serial": cert.serial,
        "not_before": (cert.not_before > 0).then_some(cert.not_before),
        "not_after": (cert.not_after > 0).then_some(cert.not_after),
        "last_error": cert.last_error,
        "failures": cert.failures,
        "next_attempt": (cert.next_attempt > 0).then_some(cert.next_attempt),
    })
}

/// A manual certificate: checked (parses, key matches, covers the hostname, not expired),
/// then stored and pushed like any other.
fn upload_certificate(control: &Control, mut fields: Fields) -> Result<(u16, Value), Error> {
    let hostname: Hostname = fields
        .parsed("hostname")?
        .ok_or_else(|| Error::invalid("hostname", "is required"))?;
    let chain = fields.required("certificate_pem")?;
    let key = fields.required("key_pem")?;
    fields.finish()?;
    let record = store_manual_certificate(control, hostname, chain, key)?;
    Ok((201, certificate_json(&record)))
}

/// Check an uploaded certificate and keep it (the API and the pages).
pub fn store_manual_certificate(
    control: &Control,
    hostname: Hostname,
    chain: String,
    key: String,
) -> Result<CertRecord, Error> {
    let info =
        crate::certs::inspect::check_manual(&chain, &key, &hostname, crate::auth::unix_now())?;
    let record = info.into_record(hostname, Issuer::Manual, chain, key);
    control.store.put_certificate(&record)?;
    Ok(record)
}
