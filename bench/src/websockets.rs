//! Many WebSockets held open at once, each echoing one message per interval: the idle-swarm
//! case (chat and dashboard apps keep thousands of quiet sockets per gateway).

use crate::client::Target;
use async_io::Timer;
use async_tungstenite::tungstenite::Message;
use futures_lite::{future, StreamExt};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Open N WebSockets to the origin's `/ws` echo and have each echo a message per interval.
#[derive(argh::FromArgs)]
#[argh(subcommand, name = "websockets")]
pub struct WebSocketsArgs {
    /// base URL (http:// or https://)
    #[argh(option)]
    url: String,
    /// connect here instead of resolving the URL's host
    #[argh(option)]
    connect: Option<SocketAddr>,
    /// CA certificate (PEM) to trust for https
    #[argh(option)]
    ca: Option<PathBuf>,
    /// sockets to open
    #[argh(option, default = "10000")]
    count: usize,
    /// handshakes under way at once while opening
    #[argh(option, default = "200")]
    opening: usize,
    /// seconds between one socket's messages
    #[argh(option, default = "60")]
    interval: u64,
    /// messages each socket sends (one per interval) before closing
    #[argh(option, default = "2")]
    rounds: u32,
}

#[derive(Default)]
struct Tally {
    open: AtomicU64,
    echoes: AtomicU64,
    failures: AtomicU64,
}

/// Prints `websockets open=… echoes=… failures=…` once all are open (`phase=open`), and at
/// the end (`phase=done`); fails if any socket failed.
pub async fn run(args: WebSocketsArgs) -> anyhow::Result<()> {
    let target = Arc::new(Target::new(&args.url, args.connect, args.ca.as_ref())?);
    let ws_url = format!(
        "{}://{}/ws",
        if args.url.starts_with("https") {
            "wss"
        } else {
            "ws"
        },
        args.url
            .split("://")
            .nth(1)
            .unwrap_or_default()
            .trim_end_matches('/')
    );
    let tally = Arc::new(Tally::default());
    let opening = Arc::new(smol::lock::Semaphore::new(args.opening));
    let interval = Duration::from_secs(args.interval);
    let started = Instant::now();
    let sockets: Vec<_> = (0..args.count)
        .map(|i| {
            let (target, tally, opening, url) = (
                target.clone(),
                tally.clone(),
                opening.clone(),
                ws_url.clone(),
            );
            smol::spawn(async move {
                let result = async {
                    let mut ws = {
                        let _turn = opening.acquire().await;
                        let stream = target.open().await?;
                        async_tungstenite::client_async(url.as_str(), stream)
                            .await?
                            .0
                    };
                    tally.open.fetch_add(1, Ordering::Relaxed);
                    // Spread the messages over the interval.
                    let offset = interval.mul_f64((i % 1000) as f64 / 1000.0);
                    Timer::after(offset).await;
                    for round in 0..args.rounds {
                        let text = format!("socket {i} round {round}");
                        ws.send(Message::text(text.clone())).await?;
                        let echo = future::or(async { ws.next().await }, async {
                            Timer::after(Duration::from_secs(30)).await;
                            None
                        })
                        .await;
                        match echo {
                            Some(Ok(m)) if m.to_text().ok() == Some(text.as_str()) => {
                                tally.echoes.fetch_add(1, Ordering::Relaxed);
                            }
                            other => anyhow::bail!("socket {i}: {other:?} instead of its echo"),
                        }
                        if round + 1 < args.rounds {
                            Timer::after(interval).await;
                        }
                    }
                    ws.close(None).await?;
                    anyhow::Ok(())
                }
                .await;
                if let Err(e) = result {
                    if tally.failures.fetch_add(1, Ordering::Relaxed) < 5 {
                        eprintln!("websocket {i}: {e:#}");
                    }
                }
            })
        })
        .collect();
    let report = |phase: &str| {
        println!(
            "websockets phase={phase} open={} echoes={} failures={} seconds={:.1}",
            tally.open.load(Ordering::Relaxed),
            tally.echoes.load(Ordering::Relaxed),
            tally.failures.load(Ordering::Relaxed),
            started.elapsed().as_secs_f64()
        );
    };
    while tally.open.load(Ordering::Relaxed) + tally.failures.load(Ordering::Relaxed)
        < args.count as u64
    {
        Timer::after(Duration::from_millis(100)).await;
    }
    report("open");
    for socket in sockets {
        socket.await;
    }
    report("done");
    match tally.failures.load(Ordering::Relaxed) {
        0 => Ok(()),
        n => anyhow::bail!("{n} of {} WebSockets failed", args.count),
    }
}
