//! `kakuremichi-agent`: publishes local services through kakuremichi gateways. Needs only
//! `CONTROL_URL` and `API_KEY`.

use argh::FromArgs;
use kakuremichi_nodelink::node::ControlSettings;
use std::net::SocketAddr;
use std::path::PathBuf;

/// kakuremichi agent: outbound-only tunnel endpoint beside your apps.
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
    /// directory for the WireGuard key and cached config (or env STATE_DIR; default ./agent-state)
    #[argh(option)]
    state_dir: Option<PathBuf>,
    /// loopback status listener for /healthz, /readyz, /metrics (default 127.0.0.1:9091)
    #[argh(option, default = "\"127.0.0.1:9091\".parse().unwrap()")]
    status_listen: SocketAddr,
    /// local UDP address for WireGuard (default 0.0.0.0:0, any port)
    #[argh(option, default = "\"0.0.0.0:0\".parse().unwrap()")]
    wireguard_bind: SocketAddr,
    /// seconds without a WireGuard session over UDP after which a gateway is reached over
    /// TCP instead (default 4; 0: never)
    #[argh(option, default = "4")]
    tcp_fallback_after: u64,
    /// seconds between tries of UDP while a gateway is reached over TCP (default 30)
    #[argh(option, default = "30")]
    udp_retry: u64,
    /// seconds between checks that a gateway still answers through its session, over UDP or
    /// a TCP/TLS carrier (default 10); one unanswered for 3 s counts as no session
    #[argh(option, default = "10")]
    path_check: u64,
    /// targets this agent may forward to, whatever Control says: addresses, networks, host
    /// names or *, each with :PORT or :FIRST-LAST, comma-separated (or env ALLOW_TARGETS;
    /// default any, but link-local and cloud metadata addresses and the status port)
    #[argh(option)]
    allow_targets: Option<String>,
    #[argh(subcommand)]
    command: Option<Command>,
}

#[derive(FromArgs)]
#[argh(subcommand)]
enum Command {
    Healthcheck(Healthcheck),
}

/// exit 0 if the agent's status listener answers /healthz with 200, else 1
#[derive(FromArgs)]
#[argh(subcommand, name = "healthcheck")]
struct Healthcheck {}

fn main() -> anyhow::Result<()> {
    kakuremichi_rt::logger::init();
    let args: Args = argh::from_env();
    if let Some(Command::Healthcheck(_)) = args.command {
        kakuremichi_rt::stop::healthcheck_and_exit(args.status_listen);
    }
    let allow_targets = args
        .allow_targets
        .or_else(|| std::env::var("ALLOW_TARGETS").ok())
        .unwrap_or_default();
    let allow_targets =
        kakuremichi_proto::targets::TargetRules::parse(&allow_targets, Some(args.status_listen))?;
    if !allow_targets.text().is_empty() {
        log::info!("forwarding only to ALLOW_TARGETS {}", allow_targets.text());
    }
    let settings = kakuremichi_agent::Settings {
        allow_targets,
        control: ControlSettings::from_flags_or_env(
            args.control_url,
            args.api_key,
            args.control_ca,
            args.state_dir,
            "./agent-state",
        )?,
        status_listen: args.status_listen,
        wireguard_bind: args.wireguard_bind,
        tcp_fallback: (args.tcp_fallback_after > 0).then(|| kakuremichi_agent::fallback::Timing {
            after: std::time::Duration::from_secs(args.tcp_fallback_after),
            retry_udp: std::time::Duration::from_secs(args.udp_retry.max(1)),
            check_every: std::time::Duration::from_secs(args.path_check.max(1)),
        }),
    };
    kakuremichi_rt::stop::run_until_stopped(kakuremichi_agent::run(settings))?;
    Ok(())
}
