//! The benchmark origin.

use anyhow::Context as _;
use bytes::Bytes;
use futures_lite::{stream, AsyncReadExt};
use http_body_util::{BodyExt, StreamBody};
use hyper::body::{Frame, Incoming};
use hyper::{Request, Response};
use kakuremichi_rt::http::{respond, Body};
use std::convert::Infallible;

/// Size of each chunk of a streamed body.
pub const CHUNK_BYTES: usize = 256 * 1024;

/// Serve the benchmark endpoints.
#[derive(argh::FromArgs)]
#[argh(subcommand, name = "origin")]
pub struct OriginArgs {
    /// address to listen on
    #[argh(option)]
    listen: std::net::SocketAddr,
}

pub async fn run(args: OriginArgs) -> anyhow::Result<()> {
    let listener = async_io::Async::<std::net::TcpListener>::bind(args.listen)
        .with_context(|| format!("listen on {}", args.listen))?;
    println!("origin on {}", listener.get_ref().local_addr()?);
    kakuremichi_rt::http::serve(listener, |request, _peer| handle(request)).await;
    Ok(())
}

/// A body of `len` bytes made of one shared chunk, so the origin spends no time on it.
pub fn repeated_body(len: u64) -> Body {
    let chunk = Bytes::from(vec![b'k'; CHUNK_BYTES]);
    let chunks = (0..len.div_ceil(CHUNK_BYTES as u64)).map(move |i| {
        let left = len - i * CHUNK_BYTES as u64;
        Ok::<_, Infallible>(Frame::data(
            chunk.slice(..left.min(CHUNK_BYTES as u64) as usize),
        ))
    });
    StreamBody::new(stream::iter(chunks))
        .map_err(|never| match never {})
        .boxed()
}

async fn handle(mut request: Request<Incoming>) -> Response<Body> {
    let path = request.uri().path().to_string();
    match (request.method().as_str(), path.as_str()) {
        ("GET", "/1k") => respond(200, "application/octet-stream", vec![b'k'; 1024]),
        ("GET", "/hold") => {
            let upgrade = hyper::upgrade::on(&mut request);
            smol::spawn(async move {
                if let Ok(upgraded) = upgrade.await {
                    let mut io = kakuremichi_rt::io::HyperIo(upgraded);
                    let mut buf = [0u8; 512];
                    while matches!(io.read(&mut buf).await, Ok(n) if n > 0) {}
                }
            })
            .detach();
            let mut response = respond(101, "text/plain", "");
            response.headers_mut().insert(
                hyper::header::UPGRADE,
                hyper::header::HeaderValue::from_static("bench-hold"),
            );
            response.headers_mut().insert(
                hyper::header::CONNECTION,
                hyper::header::HeaderValue::from_static("upgrade"),
            );
            response
        }
        ("GET", "/ws") => websocket_echo(request),
        ("POST", "/sink") => {
            let mut body = request.into_body();
            let mut total = 0u64;
            while let Some(frame) = body.frame().await {
                match frame {
                    Ok(frame) => {
                        total += frame.data_ref().map_or(0, |d| d.len() as u64);
                    }
                    Err(e) => return respond(400, "text/plain", format!("body: {e}\n")),
                }
            }
            respond(200, "text/plain", total.to_string())
        }
        ("GET", p) if p.starts_with("/bytes/") => match p["/bytes/".len()..].parse::<u64>() {
            Ok(len) => {
                let mut response = Response::new(repeated_body(len));
                response.headers_mut().insert(
                    hyper::header::CONTENT_LENGTH,
                    hyper::header::HeaderValue::from(len),
                );
                response
            }
            Err(_) => respond(400, "text/plain", "bad length\n"),
        },
        _ => respond(404, "text/plain", "no such benchmark endpoint\n"),
    }
}

/// Accept a WebSocket and echo every message until it closes.
fn websocket_echo(mut request: Request<Incoming>) -> Response<Body> {
    use async_tungstenite::tungstenite::handshake::derive_accept_key;
    use async_tungstenite::tungstenite::protocol::Role;
    let Some(key) = request.headers().get("sec-websocket-key") else {
        return respond(400, "text/plain", "not a WebSocket handshake\n");
    };
    let accept = derive_accept_key(key.as_bytes());
    let upgrade = hyper::upgrade::on(&mut request);
    smol::spawn(async move {
        let Ok(upgraded) = upgrade.await else {
            return;
        };
        let mut ws = async_tungstenite::WebSocketStream::from_raw_socket(
            kakuremichi_rt::io::HyperIo(upgraded),
            Role::Server,
            None,
        )
        .await;
        while let Some(Ok(message)) = futures_lite::StreamExt::next(&mut ws).await {
            if message.is_close() || ws.send(message).await.is_err() {
                break;
            }
        }
    })
    .detach();
    let mut response = respond(101, "text/plain", "");
    for (name, value) in [
        (hyper::header::UPGRADE, "websocket".to_string()),
        (hyper::header::CONNECTION, "upgrade".to_string()),
        (hyper::header::SEC_WEBSOCKET_ACCEPT, accept),
    ] {
        if let Ok(value) = hyper::header::HeaderValue::from_str(&value) {
            response.headers_mut().insert(name, value);
        }
    }
    response
}
