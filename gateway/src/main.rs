//! `kakuremichi-gateway`: the public entry. Needs only `CONTROL_URL` and `API_KEY`.

use argh::FromArgs;
use kakuremichi_gateway::front::TrustedFronts;
use kakuremichi_gateway::ports::PortSettings;
use kakuremichi_nodelink::node::ControlSettings;
use kakuremichi_proto::ports::{parse_ranges, PortPolicy};
use std::net::SocketAddr;
use std::path::PathBuf;

/// kakuremichi gateway: routes public HTTP by hostname into WireGuard tunnels.
#[derive(FromArgs)]
struct Args {
    /// control URL (or env CONTROL_URL), e.g. http://control.example.com:7080
    #[argh(option)]
    control_url: Option<String>,
    /// API key from Control (or env API_KEY)
    #[argh(option)]
    api_key: Option<String>,
    /// PEM file of extra CA certificates to trust for an https CONTROL_URL, e.g. Control's
    /// internal CA from /ca.pem (or env CONTROL_CA)
    #[argh(option)]
    control_ca: Option<PathBuf>,
    /// directory for the WireGuard key and cached config (or env STATE_DIR; default
    /// ./gateway-state)
    #[argh(option)]
    state_dir: Option<PathBuf>,
    /// HTTP listen address (default 0.0.0.0:80)
    #[argh(option, default = "\"0.0.0.0:80\".parse().unwrap()")]
    http_listen: SocketAddr,
    /// HTTPS listen address (default 0.0.0.0:443)
    #[argh(option, default = "\"0.0.0.0:443\".parse().unwrap()")]
    https_listen: SocketAddr,
    /// HTTPS port clients see, for redirects from HTTP (default: the --https-listen port)
    #[argh(option)]
    https_public_port: Option<u16>,
    /// HTTP port clients see, where Control may send browsers back after a login (default:
    /// the --http-listen port)
    #[argh(option)]
    http_public_port: Option<u16>,
    /// wireguard UDP listen address (default 0.0.0.0:51820)
    #[argh(option, default = "\"0.0.0.0:51820\".parse().unwrap()")]
    wireguard_listen: SocketAddr,
    /// host:port agents use to reach the WireGuard socket (default: the listen address when
    /// it is a specific IP)
    #[argh(option)]
    wireguard_endpoint: Option<String>,
    /// admin listener for /healthz, /readyz, /metrics (default 127.0.0.1:9090)
    #[argh(option, default = "\"127.0.0.1:9090\".parse().unwrap()")]
    admin_listen: SocketAddr,
    /// requests in flight to one tunnel's agent at once (default 256); more wait in line
    #[argh(option, default = "256")]
    upstream_connections: usize,
    /// seconds a request waits in line for a free connection to its agent before it gets a
    /// 503 with Retry-After (default 10)
    #[argh(option, default = "10")]
    upstream_queue_timeout: u64,
    /// seconds a request body may stay silent before the request is answered 408
    /// (default 60)
    #[argh(
        option,
        default = "kakuremichi_gateway::body::BODY_IDLE_TIMEOUT.as_secs()"
    )]
    body_idle_timeout: u64,
    /// count each tunnel's requests, bytes and latency for Control's charts and /metrics:
    /// on (default) or off
    #[argh(option, default = "String::from(\"on\")")]
    traffic_counts: String,
    /// requests kept per tunnel for Control's Logs page (default 1000; 0 keeps none)
    #[argh(
        option,
        default = "kakuremichi_gateway::request_log::DEFAULT_PER_TUNNEL"
    )]
    request_log_entries: usize,
    /// also write each request as a JSON line to this file (0600), rotated by size
    #[argh(option)]
    access_log: Option<std::path::PathBuf>,
    /// size in MB at which --access-log is rotated (default 10)
    #[argh(option, default = "10")]
    access_log_max_mb: u64,
    /// rotated --access-log files kept (default 5)
    #[argh(option, default = "5")]
    access_log_keep: usize,
    /// public TCP ports tcp tunnels may take, e.g. 10000-20000,5432 (default: any port the
    /// gateway's own listeners do not use)
    #[argh(option, default = "String::from(\"1-65535\")")]
    tcp_ports: String,
    /// public UDP ports udp tunnels may take (default: any but the WireGuard port)
    #[argh(option, default = "String::from(\"1-65535\")")]
    udp_ports: String,
    /// seconds after which a silent UDP client flow is forgotten (default 60)
    #[argh(option, default = "60")]
    udp_idle_timeout: u64,
    /// UDP client flows at once per public port (default 1024); datagrams from further
    /// clients are dropped
    #[argh(option, default = "1024")]
    udp_flows: usize,
    /// seconds a draining gateway lets requests, WebSockets and tcp-tunnel connections in
    /// flight finish before it closes them (default 30)
    #[argh(option, default = "30")]
    drain_timeout: u64,
    /// milliseconds between probes of the agents of tunnels with several agents (default
    /// 250); an agent that misses one is not used until it answers again
    #[argh(option, default = "250")]
    replica_probe_interval_ms: u64,
    /// milliseconds a replica probe waits for the agent at most (default 1000); less, down
    /// to 300, where the agent's probes answer quickly
    #[argh(option, default = "1000")]
    replica_probe_timeout_ms: u64,
    /// TCP address where agents whose network drops UDP carry WireGuard instead (default:
    /// the --wireguard-listen address over TCP, which is where agents look; "off": none)
    #[argh(option)]
    wireguard_tcp_listen: Option<String>,
    /// addresses or networks of load balancers in front of the gateway whose connections
    /// start with a PROXY protocol v1/v2 header naming the client, e.g. 10.0.0.0/8 (default:
    /// none; headers from anyone else are never read)
    #[argh(option)]
    proxy_protocol_from: Option<String>,
    /// threads that run TLS, HTTP and the tunnels (default: one per core the gateway may
    /// use, as CPU affinity or a container's CPU limit says)
    #[argh(option)]
    threads: Option<usize>,
    #[argh(subcommand)]
    command: Option<Command>,
}

#[derive(FromArgs)]
#[argh(subcommand)]
enum Command {
    Healthcheck(Healthcheck),
}

/// exit 0 if the gateway's admin listener answers /healthz with 200, else 1
#[derive(FromArgs)]
#[argh(subcommand, name = "healthcheck")]
struct Healthcheck {}

fn main() -> anyhow::Result<()> {
    kakuremichi_rt::logger::init();
    let args: Args = argh::from_env();
    // Before anything spawns a task.
    kakuremichi_rt::exec::set_threads(
        args.threads
            .unwrap_or_else(kakuremichi_rt::exec::every_core),
    );
    if let Some(Command::Healthcheck(_)) = args.command {
        kakuremichi_rt::stop::healthcheck_and_exit(args.admin_listen);
    }
    let wireguard_endpoint = match args.wireguard_endpoint {
        Some(endpoint) => endpoint,
        None if !args.wireguard_listen.ip().is_unspecified() => args.wireguard_listen.to_string(),
        None => anyhow::bail!(
            "--wireguard-endpoint is required when listening on {}: agents need a public host:port",
            args.wireguard_listen
        ),
    };
    let fronts = args
        .proxy_protocol_from
        .as_deref()
        .unwrap_or_default()
        .split(',')
        .filter(|cidr| !cidr.trim().is_empty())
        .map(|cidr| cidr.trim().parse())
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| anyhow::anyhow!("--proxy-protocol-from: {e}"))?;
    let wireguard_tcp_listen = match args.wireguard_tcp_listen.as_deref() {
        Some("off") => None,
        Some(addr) => Some(
            addr.parse()
                .map_err(|e| anyhow::anyhow!("--wireguard-tcp-listen {addr}: {e}"))?,
        ),
        None => Some(args.wireguard_listen),
    };
    let settings = kakuremichi_gateway::Settings {
        fronts: TrustedFronts(fronts),
        wireguard_tcp_listen,
        drain_timeout: std::time::Duration::from_secs(args.drain_timeout),
        replica_probes: kakuremichi_gateway::replicas::ProbeSettings {
            interval: std::time::Duration::from_millis(args.replica_probe_interval_ms.max(10)),
            timeout: std::time::Duration::from_millis(args.replica_probe_timeout_ms.max(10)),
        },
        control: ControlSettings::from_flags_or_env(
            args.control_url,
            args.api_key,
            args.control_ca,
            args.state_dir,
            "./gateway-state",
        )?,
        http_listen: args.http_listen,
        https_listen: args.https_listen,
        https_public_port: args.https_public_port.unwrap_or(args.https_listen.port()),
        http_public_port: args.http_public_port.unwrap_or(args.http_listen.port()),
        wireguard_listen: args.wireguard_listen,
        wireguard_endpoint,
        admin_listen: args.admin_listen,
        upstream_limits: kakuremichi_gateway::pool::Limits {
            connections: args.upstream_connections.max(1),
            queue_timeout: std::time::Duration::from_secs(args.upstream_queue_timeout),
            ..Default::default()
        },
        body_idle_timeout: std::time::Duration::from_secs(args.body_idle_timeout.max(1)),
        request_log_entries: args.request_log_entries,
        access_log: args.access_log.map(|path| {
            let rotation = kakuremichi_gateway::access_log::Rotation {
                max_bytes: args.access_log_max_mb.max(1) << 20,
                keep: args.access_log_keep,
            };
            (path, rotation)
        }),
        count_traffic: match args.traffic_counts.as_str() {
            "on" => true,
            "off" => false,
            other => anyhow::bail!("--traffic-counts: {other:?} is neither on nor off"),
        },
        ports: PortSettings {
            udp_idle_timeout: std::time::Duration::from_secs(args.udp_idle_timeout.max(1)),
            udp_flows: args.udp_flows.max(1),
            ..PortSettings::new(
                args.http_listen.ip(),
                PortPolicy {
                    tcp_allowed: parse_ranges(&args.tcp_ports)
                        .map_err(|e| anyhow::anyhow!("--tcp-ports: {e}"))?,
                    udp_allowed: parse_ranges(&args.udp_ports)
                        .map_err(|e| anyhow::anyhow!("--udp-ports: {e}"))?,
                    tcp_reserved: [
                        (args.http_listen.port(), "HTTP listener"),
                        (args.https_listen.port(), "HTTPS listener"),
                        (args.admin_listen.port(), "admin listener"),
                    ]
                    .into_iter()
                    .chain(wireguard_tcp_listen.map(|a| (a.port(), "WireGuard over TCP")))
                    .map(|(port, what)| (port, what.to_string()))
                    .collect(),
                    udp_reserved: vec![(args.wireguard_listen.port(), "WireGuard socket".into())],
                },
            )
        },
    };
    kakuremichi_rt::stop::run_until_stopped(kakuremichi_gateway::run(settings))?;
    Ok(())
}
