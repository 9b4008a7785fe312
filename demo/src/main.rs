//! `kakuremichi-demo [ADDR]`: the compose stack's sample app, standing in for yours. Answers
//! every request with a short page saying what arrived (method, path, and who the gateway
//! says the visitor is). One thread per connection; no dependencies, so the image stays tiny.

use std::io::{BufRead, BufReader, Write};
use std::net::{TcpListener, TcpStream};
use std::time::Duration;

/// Longest request head read.
const MAX_HEAD_BYTES: usize = 16 * 1024;

fn main() {
    let addr = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "0.0.0.0:8080".into());
    let listener = match TcpListener::bind(&addr) {
        Ok(listener) => listener,
        Err(e) => {
            eprintln!("kakuremichi-demo: cannot listen on {addr}: {e}");
            std::process::exit(1);
        }
    };
    println!("kakuremichi demo app on http://{addr}");
    for stream in listener.incoming().flatten() {
        std::thread::spawn(move || serve(stream));
    }
}

/// Answer requests on one keep-alive connection until it closes or breaks.
fn serve(stream: TcpStream) {
    let _ = stream.set_read_timeout(Some(Duration::from_secs(30)));
    let Ok(mut writer) = stream.try_clone() else {
        return;
    };
    let mut reader = BufReader::new(stream);
    loop {
        let mut head = Vec::new();
        loop {
            let mut line = String::new();
            match reader.read_line(&mut line) {
                Ok(0) | Err(_) => return,
                Ok(_) if line == "\r\n" || line == "\n" => break,
                Ok(_) if head.iter().map(String::len).sum::<usize>() > MAX_HEAD_BYTES => return,
                Ok(_) => head.push(line),
            }
        }
        let request = head
            .first()
            .map(|l| l.trim_end().to_string())
            .unwrap_or_default();
        let header = |name: &str| {
            head.iter()
                .filter_map(|line| line.split_once(':'))
                .find(|(n, _)| n.trim().eq_ignore_ascii_case(name))
                .map(|(_, v)| v.trim().to_string())
        };
        if header("content-length").is_some_and(|n| n != "0")
            || header("transfer-encoding").is_some()
        {
            // A sample app with nothing to post to: bodies are not read, so the connection
            // cannot be reused.
            let _ = writer.write_all(b"HTTP/1.1 405 Method Not Allowed\r\ncontent-length: 0\r\nconnection: close\r\n\r\n");
            return;
        }
        let visitor = header("x-kakuremichi-user").unwrap_or_else(|| "anyone".into());
        let body = format!(
            "kakuremichi demo app\nrequest: {request}\nhost: {}\nvisitor: {visitor}\nfrom: {}\n",
            header("host").unwrap_or_default(),
            header("x-forwarded-for").unwrap_or_default(),
        );
        let answer = format!(
            "HTTP/1.1 200 OK\r\ncontent-type: text/plain; charset=utf-8\r\ncontent-length: {}\r\n\r\n{body}",
            body.len()
        );
        if writer.write_all(answer.as_bytes()).is_err() {
            return;
        }
    }
}
