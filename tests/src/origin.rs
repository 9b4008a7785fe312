//! A small HTTP origin on loopback that answers every request with a JSON description of it
//! (its name, path, and the forwarding, identity, cookie and authorization headers it
//! received), served by hyper on its own thread.

use http_body_util::BodyExt;
use hyper::body::Incoming;
use hyper::Request;
use kakuremichi_rt::http::respond;
use std::net::{SocketAddr, TcpListener};

/// A running origin. It stops when the test process ends.
pub struct Origin {
    pub addr: SocketAddr,
}

impl Origin {
    /// Start an origin that calls itself `name`.
    pub fn start(name: &str) -> Origin {
        Origin::start_at(name, ([127, 0, 0, 1], 0).into())
    }

    /// Start an origin that calls itself `name` at `addr` (port 0: any free port).
    pub fn start_at(name: &str, addr: SocketAddr) -> Origin {
        let listener = TcpListener::bind(addr).expect("bind origin");
        let addr = listener.local_addr().expect("origin address");
        let name = name.to_string();
        std::thread::spawn(move || serve_forever(listener, &name));
        Origin { addr }
    }
}

/// Serve the describing origin on `listener` on this thread, forever.
pub fn serve_forever(listener: TcpListener, name: &str) {
    let listener = async_io::Async::new(listener).expect("async listener");
    let name = name.to_string();
    let served = std::sync::Arc::new(std::sync::atomic::AtomicU64::new(0));
    let describe = move |request: Request<Incoming>, _| {
        let name = name.clone();
        // Which request this is: a test can tell that others never reached the origin.
        let number = served.fetch_add(1, std::sync::atomic::Ordering::Relaxed) + 1;
        async move {
            let header = |h: &str| {
                let value = request.headers().get(h).and_then(|v| v.to_str().ok());
                value.unwrap_or("").to_string()
            };
            let mut body = serde_json::json!({
                "origin": name,
                "request_number": number,
                "path": request.uri().path(),
                "host": header("host"),
                "x_forwarded_for": header("x-forwarded-for"),
                "x_forwarded_proto": header("x-forwarded-proto"),
                "x_forwarded_host": header("x-forwarded-host"),
                "x_real_ip": header("x-real-ip"),
                "forwarded": header("forwarded"),
                "true_client_ip": header("true-client-ip"),
                "cf_connecting_ip": header("cf-connecting-ip"),
                "user": header("x-kakuremichi-user"),
                "email": header("x-kakuremichi-email"),
                "cookie": header("cookie"),
                "authorization": header("authorization"),
                "header_names": request.headers().keys().map(|name| name.as_str()).collect::<Vec<_>>(),
            });
            // Count the request body as it streams in, without keeping it.
            let mut body_bytes = 0u64;
            let mut incoming = request.into_body();
            while let Some(Ok(frame)) = incoming.frame().await {
                body_bytes += frame.data_ref().map_or(0, |d| d.len() as u64);
            }
            body["body_bytes"] = body_bytes.into();
            respond(200, "application/json", body.to_string() + "\n")
        }
    };
    smol::block_on(kakuremichi_rt::http::serve(listener, describe));
}

/// A WebSocket origin that echoes every message back.
pub struct EchoOrigin {
    pub addr: SocketAddr,
}

impl EchoOrigin {
    /// Start it on a free loopback port.
    pub fn start() -> EchoOrigin {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind echo origin");
        let addr = listener.local_addr().expect("echo origin address");
        std::thread::spawn(move || {
            let listener = async_io::Async::new(listener).expect("async listener");
            smol::block_on(async {
                loop {
                    let Ok((stream, _)) = listener.accept().await else {
                        continue;
                    };
                    smol::spawn(async move {
                        let Ok(mut ws) = async_tungstenite::accept_async(stream).await else {
                            return;
                        };
                        while let Some(Ok(message)) = futures_lite::StreamExt::next(&mut ws).await {
                            if message.is_close() || ws.send(message).await.is_err() {
                                break;
                            }
                        }
                    })
                    .detach();
                }
            });
        });
        EchoOrigin { addr }
    }
}

/// An origin whose answers a test chooses by path: `/<status>/<bytes>` is answered with that
/// status and a body of that many bytes, after the request's body is read to its end.
pub struct ShapedOrigin {
    pub addr: SocketAddr,
}

impl ShapedOrigin {
    /// Start it on a free loopback port.
    pub fn start() -> ShapedOrigin {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind shaped origin");
        let addr = listener.local_addr().expect("shaped origin address");
        std::thread::spawn(move || {
            let listener = async_io::Async::new(listener).expect("async listener");
            let answer = |request: Request<Incoming>, _| async move {
                let mut parts = request.uri().path().trim_start_matches('/').split('/');
                let status = parts.next().and_then(|s| s.parse().ok()).unwrap_or(200u16);
                let bytes = parts.next().and_then(|s| s.parse().ok()).unwrap_or(0usize);
                let mut incoming = request.into_body();
                while let Some(Ok(_)) = incoming.frame().await {}
                respond(status, "application/octet-stream", vec![b'x'; bytes])
            };
            smol::block_on(kakuremichi_rt::http::serve(listener, answer));
        });
        ShapedOrigin { addr }
    }
}
