//! `kakuremichi-demo-origin [addr]`: the quickstart's sample app. Answers every request with
//! a JSON description of it, including the forwarding headers the gateway added.

fn main() {
    let addr = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "127.0.0.1:3000".to_string());
    let listener = match std::net::TcpListener::bind(&addr) {
        Ok(listener) => listener,
        Err(e) => {
            eprintln!("demo origin: cannot listen on {addr}: {e}");
            std::process::exit(1);
        }
    };
    println!("demo origin on http://{addr}");
    kakuremichi_tests::origin::serve_forever(listener, "demo");
}
