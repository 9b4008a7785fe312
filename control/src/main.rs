//! `kakuremichi-control`: serve Control, or manage its store from the command line.

use argh::FromArgs;
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
    #[argh(subcommand)]
    command: Option<Command>,
}

#[derive(FromArgs)]
#[argh(subcommand)]
enum Command {
    Token(TokenCommand),
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

/// create an admin API token and print it
#[derive(FromArgs)]
#[argh(subcommand, name = "create")]
struct TokenCreate {
    /// a name to remember the token by
    #[argh(option, default = "String::from(\"cli\")")]
    name: String,
}

fn main() -> anyhow::Result<()> {
    kakuremichi_rt::logger::init();
    let args: Args = argh::from_env();
    match args.command {
        None => smol::block_on(kakuremichi_control::run(kakuremichi_control::Settings {
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
        }))?,
        Some(Command::Token(TokenCommand {
            action: TokenAction::Create(create),
        })) => {
            let store = kakuremichi_control::store::Store::open(&args.data_dir, args.overlay_cidr)?;
            println!("{}", store.create_token(&create.name)?);
        }
    }
    Ok(())
}
