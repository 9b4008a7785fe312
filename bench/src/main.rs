//! `kakuremichi-bench`: the pieces `scripts/bench` puts around the real binaries.
//!
//! - `origin`: an HTTP/1.1 origin that is never the bottleneck: `GET /bytes/N` streams N
//!   bytes, `POST /sink` swallows a body and answers its length, `GET /1k` answers 1 KB,
//!   `GET /hold` upgrades and keeps the connection open, idle; `GET /ws` is a WebSocket
//!   echo.
//! - `transfer`, `latency`, `idle`, `websockets`: clients for those endpoints over HTTP or HTTPS,
//!   each printing one line of figures.
//! - `tunnel`: one end of a bare netstack tunnel (WireGuard + smoltcp, no HTTP, no TLS), to
//!   measure the overlay on its own.

mod client;
mod origin;
mod tunnel;
mod websockets;

use argh::FromArgs;

/// Benchmark helpers for kakuremichi's data plane.
#[derive(FromArgs)]
struct Args {
    #[argh(subcommand)]
    command: Command,
}

#[derive(FromArgs)]
#[argh(subcommand)]
enum Command {
    Origin(origin::OriginArgs),
    Transfer(client::TransferArgs),
    Latency(client::LatencyArgs),
    Idle(client::IdleArgs),
    Tunnel(tunnel::TunnelArgs),
    WebSockets(websockets::WebSocketsArgs),
}

fn main() {
    let args: Args = argh::from_env();
    let result = smol::block_on(async {
        match args.command {
            Command::Origin(a) => origin::run(a).await,
            Command::Transfer(a) => client::transfer(a).await,
            Command::Latency(a) => client::latency(a).await,
            Command::Idle(a) => client::idle(a).await,
            Command::Tunnel(a) => tunnel::run(a).await,
            Command::WebSockets(a) => websockets::run(a).await,
        }
    });
    if let Err(e) = result {
        eprintln!("kakuremichi-bench: {e:#}");
        std::process::exit(1);
    }
}
