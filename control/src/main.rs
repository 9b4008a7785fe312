//! `kakuremichi-control`: serve Control, or manage its store from the command line.

use argh::FromArgs;
use kakuremichi_control::cli;
use std::path::PathBuf;

/// kakuremichi control plane.
#[derive(FromArgs)]
struct Args {
    /// directory of the LMDB store (default ./data)
    #[argh(option, default = "PathBuf::from(\"./data\")")]
    data_dir: PathBuf,
    /// address to listen on (default 127.0.0.1:7080)
    #[argh(option, default = "\"127.0.0.1:7080\".parse().unwrap()")]
    listen: std::net::SocketAddr,
    /// overlay network for node addresses, fixed at first start (default 10.77.0.0/16)
    #[argh(option, default = "\"10.77.0.0/16\".parse().unwrap()")]
    overlay_cidr: kakuremichi_control::model::OverlayNet,
    /// URL nodes use to reach Control, shown in install snippets (default http://<listen>)
    #[argh(option)]
    public_url: Option<String>,
    /// ACME directory URL for `acme` certificates, e.g.
    /// https://acme-v02.api.letsencrypt.org/directory
    #[argh(option)]
    acme_directory: Option<String>,
    /// contact email for the ACME account
    #[argh(option)]
    acme_email: Option<String>,
    /// extra PEM roots to trust for the ACME directory's HTTPS (e.g. Pebble's test CA)
    #[argh(option)]
    acme_ca_bundle: Option<PathBuf>,
    /// public hostname of Control (e.g. control.example.com): gateways serve it over HTTPS by
    /// proxying to --control-upstream, so nodes can use https://control.example.com
    #[argh(option)]
    control_hostname: Option<kakuremichi_proto::ids::Hostname>,
    /// where gateways reach Control directly (default: the --listen address)
    #[argh(option)]
    control_upstream: Option<String>,
    /// ACME challenge gateways answer: http-01 (port 80, default) or tls-alpn-01 (port 443)
    #[argh(option, default = "Default::default()")]
    acme_challenge: kakuremichi_control::certs::acme::ChallengeKind,
    /// issuer of tunnels created without one: acme, internal, manual or none (default: acme
    /// with --acme-directory, else internal)
    #[argh(option)]
    default_issuer: Option<kakuremichi_control::model::Issuer>,
    /// milliseconds between heartbeats on node sessions; a node silent for 3 is offline
    /// (default 15000; shorter only for tests)
    #[argh(option, default = "15_000")]
    heartbeat_interval_ms: u64,
    /// seconds a browser session lives without a request (default 43200, 12 h)
    #[argh(option, default = "43_200")]
    session_idle_secs: u64,
    /// seconds a browser session lives at most after login (default 604800, 7 days)
    #[argh(option, default = "604_800")]
    session_max_secs: u64,
    /// directory shared with a one-shot deployment's nodes: Control writes a gateway's and
    /// an agent's API keys there (gateway.key, agent.key; see README's docker-compose)
    #[argh(option)]
    join_dir: Option<PathBuf>,
    /// directory of agent binaries (kakuremichi-agent-x86_64, kakuremichi-agent-aarch64)
    /// served with /install.sh for one-line installs (default: $KAKUREMICHI_RELEASE_DIR,
    /// which the control image sets to the agents it carries)
    #[argh(option)]
    release_dir: Option<PathBuf>,
    /// which nodes --join-dir enrols: gateway, agent or both, comma-separated (default both)
    #[argh(option, default = "String::from(\"gateway,agent\")")]
    join: String,
    /// comma-separated addresses or CIDRs of reverse proxies in front of Control whose
    /// X-Real-IP names the client, for login throttling (connected gateways are always
    /// believed)
    #[argh(option, default = "String::new()")]
    trusted_proxies: String,
    /// hours of per-minute traffic points kept per tunnel and gateway before they are
    /// added into hourly points (default 48)
    #[argh(option, default = "48")]
    traffic_minutes_hours: u64,
    /// days of hourly traffic points kept (default 90)
    #[argh(option, default = "90")]
    traffic_hours_days: u64,
    /// seconds between looks at the alert rules, and between a notice's retries at the
    /// least (default 15)
    #[argh(option, default = "15")]
    alert_interval_secs: u64,
    /// seconds between roll-ups of minute points into hours (default 300)
    #[argh(option, default = "300")]
    traffic_rollup_secs: u64,
    #[argh(subcommand)]
    command: Option<Command>,
}

#[derive(FromArgs)]
#[argh(subcommand)]
// Parsed once at start; argh's subcommands cannot be boxed.
#[allow(clippy::large_enum_variant)]
enum Command {
    Alert(kakuremichi_control::cli::alerts::AlertCommand),
    Token(TokenCommand),
    User(UserCommand),
    Tunnel(TunnelCommand),
    Gateway(GatewayCommand),
    Healthcheck(Healthcheck),
}

/// exit 0 if Control at --listen answers /healthz with 200, else 1
#[derive(FromArgs)]
#[argh(subcommand, name = "healthcheck")]
struct Healthcheck {}

/// list gateways with their health, label, drain, disable or delete one, through the
/// running Control (as the API does)
#[derive(FromArgs)]
#[argh(subcommand, name = "gateway")]
struct GatewayCommand {
    /// an API token (or env KAKUREMICHI_TOKEN); `token create` makes one
    #[argh(option)]
    token: Option<String>,
    #[argh(subcommand)]
    action: GatewayAction,
}

#[derive(FromArgs)]
#[argh(subcommand)]
enum GatewayAction {
    List(GatewayList),
    Update(GatewayUpdate),
    Delete(GatewayDelete),
}

/// every gateway with its health and why, as JSON
#[derive(FromArgs)]
#[argh(subcommand, name = "list")]
struct GatewayList {}

/// delete a gateway (its key stops working at once)
#[derive(FromArgs)]
#[argh(subcommand, name = "delete")]
struct GatewayDelete {
    /// the gateway's id
    #[argh(positional)]
    id: String,
}

/// change a gateway: name, labels, enabled, draining
#[derive(FromArgs)]
#[argh(subcommand, name = "update")]
struct GatewayUpdate {
    /// the gateway's id
    #[argh(positional)]
    id: String,
    #[argh(option)]
    /// a new name
    name: Option<String>,
    #[argh(option)]
    /// labels, e.g. region=tokyo,tier=edge (replaces them all; "" removes them)
    labels: Option<String>,
    #[argh(option)]
    /// true or false
    enabled: Option<bool>,
    #[argh(option)]
    /// true to drain (new requests go elsewhere), false to serve again
    draining: Option<bool>,
}

/// list, create, change and delete tunnels through the running Control (as the API does)
#[derive(FromArgs)]
#[argh(subcommand, name = "tunnel")]
struct TunnelCommand {
    /// an API token (or env KAKUREMICHI_TOKEN); `token create` makes one
    #[argh(option)]
    token: Option<String>,
    #[argh(subcommand)]
    action: TunnelAction,
}

#[derive(FromArgs)]
#[argh(subcommand)]
enum TunnelAction {
    List(TunnelList),
    Create(TunnelCreate),
    Update(TunnelUpdate),
    Delete(TunnelDelete),
}

/// every tunnel, as JSON
#[derive(FromArgs)]
#[argh(subcommand, name = "list")]
struct TunnelList {}

/// delete a tunnel
#[derive(FromArgs)]
#[argh(subcommand, name = "delete")]
struct TunnelDelete {
    /// the tunnel's id
    #[argh(positional)]
    id: String,
}

/// create a tunnel, e.g. `--kind tcp --port 15432 --agent agt_… --target 127.0.0.1:5432`
#[derive(FromArgs)]
#[argh(subcommand, name = "create")]
struct TunnelCreate {
    #[argh(option)]
    /// http (default), tls, tcp or udp
    kind: Option<String>,
    #[argh(option)]
    /// the public hostname (http, tls)
    hostname: Option<String>,
    #[argh(option)]
    /// a public port (tcp, udp)
    port: Option<u16>,
    #[argh(option)]
    /// a public port range, first-last (tcp, udp)
    ports: Option<String>,
    #[argh(option)]
    /// the agent's id
    agent: Option<String>,
    #[argh(option)]
    /// where the agent forwards: host:port, https://host:port, h2c://host:port
    target: Option<String>,
    #[argh(option)]
    /// acme, internal, manual or none (http)
    issuer: Option<String>,
    #[argh(option)]
    /// only this path and below, e.g. /api (http)
    path_prefix: Option<String>,
    #[argh(option)]
    /// v1 or v2: a PROXY header towards the origin (tcp, tls)
    proxy_protocol: Option<String>,
    #[argh(option)]
    /// more fields as a JSON object, e.g. '{"origin":{"tls_verify":false}}'
    json: Option<String>,
}

/// change a tunnel: the fields given are changed, the rest stay
#[derive(FromArgs)]
#[argh(subcommand, name = "update")]
struct TunnelUpdate {
    /// the tunnel's id
    #[argh(positional)]
    id: String,
    #[argh(option)]
    /// the public hostname
    hostname: Option<String>,
    #[argh(option)]
    /// a public port
    port: Option<u16>,
    #[argh(option)]
    /// a public port range, first-last
    ports: Option<String>,
    #[argh(option)]
    /// the agent's id
    agent: Option<String>,
    #[argh(option)]
    /// where the agent forwards
    target: Option<String>,
    #[argh(option)]
    /// v1, v2 or none
    proxy_protocol: Option<String>,
    #[argh(option)]
    /// true or false
    enabled: Option<bool>,
    #[argh(option)]
    /// more fields as a JSON object
    json: Option<String>,
}

/// manage the people who log in to Control's pages
#[derive(FromArgs)]
#[argh(subcommand, name = "user")]
struct UserCommand {
    #[argh(subcommand)]
    action: UserAction,
}

#[derive(FromArgs)]
#[argh(subcommand)]
enum UserAction {
    Add(UserAdd),
}

/// add a user and print a generated password once (or read one line from stdin)
#[derive(FromArgs)]
#[argh(subcommand, name = "add")]
struct UserAdd {
    /// the user's login name
    #[argh(positional)]
    name: String,
    /// make the user an administrator (otherwise a member)
    #[argh(switch)]
    admin: bool,
    /// read the password from the first line of standard input instead of generating one
    #[argh(switch)]
    password_stdin: bool,
}

/// manage admin API tokens
#[derive(FromArgs)]
#[argh(subcommand, name = "token")]
struct TokenCommand {
    #[argh(subcommand)]
    action: TokenAction,
}

#[derive(FromArgs)]
#[argh(subcommand)]
enum TokenAction {
    Create(TokenCreate),
}

/// create an API token and print it
#[derive(FromArgs)]
#[argh(subcommand, name = "create")]
struct TokenCreate {
    /// a name to remember the token by
    #[argh(option, default = "String::from(\"cli\")")]
    name: String,
    /// a token that may only read (the API's GET routes and /metrics), for monitoring
    #[argh(switch)]
    read_only: bool,
}

/// The node kinds of `--join`.
fn join_kinds(list: &str) -> anyhow::Result<Vec<kakuremichi_proto::ids::NodeKind>> {
    use kakuremichi_proto::ids::NodeKind;
    list.split(',')
        .map(|kind| match kind.trim() {
            "gateway" => Ok(NodeKind::Gateway),
            "agent" => Ok(NodeKind::Agent),
            other => anyhow::bail!("--join: {other:?} is not gateway or agent"),
        })
        .collect()
}

fn trusted_proxies(list: &str) -> anyhow::Result<Vec<kakuremichi_proto::access::Cidr>> {
    list.split(',')
        .map(str::trim)
        .filter(|item| !item.is_empty())
        .map(|item| {
            item.parse()
                .map_err(|e| anyhow::anyhow!("--trusted-proxies: {item:?}: {e}"))
        })
        .collect()
}

/// Print Control's answer to a CLI call; an error answer makes the exit status 1.
fn report(answer: Result<(u16, String), String>) -> anyhow::Result<()> {
    let (status, text) = answer.map_err(anyhow::Error::msg)?;
    println!("{}", text.trim_end());
    if status >= 400 {
        std::process::exit(1);
    }
    Ok(())
}

fn main() -> anyhow::Result<()> {
    kakuremichi_rt::exec::set_threads(kakuremichi_rt::exec::every_core());
    kakuremichi_rt::logger::init();
    let args: Args = argh::from_env();
    match args.command {
        Some(Command::Healthcheck(_)) => kakuremichi_rt::stop::healthcheck_and_exit(args.listen),
        // `run` stops on SIGTERM itself: it closes the node sessions first.
        None => kakuremichi_rt::exec::wait_on(kakuremichi_control::run(
            kakuremichi_control::Settings {
                data_dir: args.data_dir,
                listen: args.listen,
                overlay: args.overlay_cidr,
                public_url: args.public_url,
                acme: args.acme_directory.map(|directory| {
                    kakuremichi_control::certs::acme::AcmeSettings {
                        directory,
                        email: args.acme_email,
                        extra_roots: args.acme_ca_bundle,
                        challenge: args.acme_challenge,
                    }
                }),
                default_issuer: args.default_issuer,
                control_hostname: args.control_hostname,
                control_upstream: args.control_upstream,
                heartbeat: std::time::Duration::from_millis(args.heartbeat_interval_ms.max(10)),
                session_limits: kakuremichi_control::auth::sessions::SessionLimits {
                    idle_secs: args.session_idle_secs.max(1),
                    absolute_secs: args.session_max_secs.max(1),
                },
                release_dir: args
                    .release_dir
                    .or_else(|| std::env::var_os("KAKUREMICHI_RELEASE_DIR").map(PathBuf::from)),
                trusted_proxies: trusted_proxies(&args.trusted_proxies)?,
                join_dir: match args.join_dir {
                    Some(dir) => Some((dir, join_kinds(&args.join)?)),
                    None => None,
                },
                alert_interval: std::time::Duration::from_secs(args.alert_interval_secs.max(1)),
                traffic_retention: kakuremichi_control::traffic::Retention {
                    minutes: args.traffic_minutes_hours.max(1) * 60,
                    hours: args.traffic_hours_days.max(1) * 24 * 60,
                    every: std::time::Duration::from_secs(args.traffic_rollup_secs.max(1)),
                },
            },
        ))?,
        Some(Command::User(UserCommand {
            action: UserAction::Add(add),
        })) => {
            use kakuremichi_control::auth::{password, Role};
            let store = kakuremichi_control::store::Store::open(&args.data_dir, args.overlay_cidr)?;
            let (secret, generated) = if add.password_stdin {
                let mut line = String::new();
                std::io::stdin().read_line(&mut line)?;
                (line.trim_end_matches(['\r', '\n']).to_string(), false)
            } else {
                (password::generate(), true)
            };
            password::check_policy(&secret).map_err(|m| anyhow::anyhow!("password: {m}"))?;
            let hash = password::hash(&secret).map_err(anyhow::Error::msg)?;
            let role = if add.admin { Role::Admin } else { Role::Member };
            let user = store.create_user(&add.name, role, hash, false)?;
            println!("added {} ({})", user.name, role.as_str());
            if generated {
                println!("password: {secret}");
            }
        }
        Some(Command::Tunnel(TunnelCommand { token, action })) => {
            use kakuremichi_control::cli::tunnel_body;
            use kakuremichi_control::spec::TunnelFields;
            let (method, path, body) = match action {
                TunnelAction::List(_) => ("GET", "tunnels".to_string(), None),
                TunnelAction::Delete(delete) => ("DELETE", format!("tunnels/{}", delete.id), None),
                TunnelAction::Create(c) => {
                    let fields = TunnelFields {
                        kind: c.kind.map(|kind| kind.parse()).transpose()?,
                        hostname: c.hostname,
                        port: c.port,
                        ports: c.ports,
                        agent: c.agent,
                        target: c.target,
                        issuer: c.issuer.map(|issuer| issuer.parse()).transpose()?,
                        path_prefix: c.path_prefix,
                        proxy_protocol: c.proxy_protocol,
                        ..TunnelFields::default()
                    };
                    ("POST", "tunnels".to_string(), Some((fields, c.json)))
                }
                TunnelAction::Update(u) => {
                    let fields = TunnelFields {
                        hostname: u.hostname,
                        port: u.port,
                        ports: u.ports,
                        agent: u.agent,
                        target: u.target,
                        proxy_protocol: u.proxy_protocol,
                        enabled: u.enabled,
                        ..TunnelFields::default()
                    };
                    ("PATCH", format!("tunnels/{}", u.id), Some((fields, u.json)))
                }
            };
            let body = body
                .map(|(fields, json)| tunnel_body(&fields, json.as_deref()))
                .transpose()
                .map_err(anyhow::Error::msg)?;
            report(cli::call(args.listen, token, method, &path, body))?;
        }
        Some(Command::Alert(alert)) => {
            let token = alert.token.clone();
            let (method, path, body) = alert.request().map_err(anyhow::Error::msg)?;
            report(cli::call(args.listen, token, method, &path, body))?;
        }
        Some(Command::Gateway(GatewayCommand { token, action })) => {
            let (method, path, body) = match action {
                GatewayAction::List(_) => ("GET", "gateways".to_string(), None),
                GatewayAction::Delete(delete) => {
                    ("DELETE", format!("gateways/{}", delete.id), None)
                }
                GatewayAction::Update(u) => {
                    let mut body = serde_json::Map::new();
                    if let Some(name) = u.name {
                        body.insert("name".into(), name.into());
                    }
                    if let Some(labels) = u.labels {
                        body.insert("labels".into(), labels.into());
                    }
                    if let Some(enabled) = u.enabled {
                        body.insert("enabled".into(), enabled.into());
                    }
                    if let Some(draining) = u.draining {
                        body.insert("draining".into(), draining.into());
                    }
                    let path = format!("gateways/{}", u.id);
                    ("PATCH", path, Some(serde_json::Value::Object(body)))
                }
            };
            report(cli::call(args.listen, token, method, &path, body))?;
        }
        Some(Command::Token(TokenCommand {
            action: TokenAction::Create(create),
        })) => {
            let store = kakuremichi_control::store::Store::open(&args.data_dir, args.overlay_cidr)?;
            let scope = match create.read_only {
                true => kakuremichi_control::model::TokenScope::Read,
                false => kakuremichi_control::model::TokenScope::Admin,
            };
            println!("{}", store.create_token(&create.name, None, scope)?.1);
        }
    }
    Ok(())
}
