//! A small HTTP origin on loopback that answers every request with a JSON description of it
//! (its name, path and the forwarding headers it received), served by hyper on its own thread.

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
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind origin");
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
    smol::block_on(kakuremichi_rt::http::serve(
        listener,
        move |request: Request<Incoming>, _| {
            let name = name.clone();
            async move {
                let header = |h: &str| {
                    request
                        .headers()
                        .get(h)
                        .and_then(|v| v.to_str().ok())
                        .unwrap_or("")
                        .to_string()
                };
                let body = serde_json::json!({
                    "origin": name,
                    "path": request.uri().path(),
                    "host": header("host"),
                    "x_forwarded_for": header("x-forwarded-for"),
                    "x_forwarded_proto": header("x-forwarded-proto"),
                    "x_forwarded_host": header("x-forwarded-host"),
                    "x_real_ip": header("x-real-ip"),
                });
                respond(200, "application/json", body.to_string() + "\n")
            }
        },
    ));
}
