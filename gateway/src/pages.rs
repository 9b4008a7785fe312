//! The gateway's own HTML pages. They name the hostname a visitor asked for and nothing
//! internal (no addresses, ports or ids).

use hyper::Response;
use kakuremichi_rt::http::{respond, Body};

fn escape(text: &str) -> String {
    text.chars()
        .map(|c| match c {
            '<' => "&lt;".to_string(),
            '>' => "&gt;".to_string(),
            '&' => "&amp;".to_string(),
            '"' => "&quot;".to_string(),
            '\'' => "&#39;".to_string(),
            c => c.to_string(),
        })
        .collect()
}

fn page(status: u16, title: &str, message: &str) -> Response<Body> {
    let html = format!(
        "<!doctype html>\n<html lang=\"en\"><head><meta charset=\"utf-8\"><title>{status} {title}</title>\
         <style>body{{font-family:system-ui,sans-serif;max-width:36rem;margin:4rem auto;padding:0 1rem;color:#222}}\
         h1{{font-size:1.4rem}}p{{color:#555}}</style></head>\
         <body><h1>{title}</h1><p>{message}</p><p><small>kakuremichi gateway</small></p></body></html>\n"
    );
    let mut response = respond(status, "text/html; charset=utf-8", html);
    response.headers_mut().insert(
        hyper::header::CACHE_CONTROL,
        hyper::header::HeaderValue::from_static("no-store"),
    );
    response
}

/// No tunnel serves this host.
pub fn not_found(host: &str) -> Response<Body> {
    page(
        404,
        "Not found",
        &format!(
            "No site is published at <b>{}</b> on this gateway.",
            escape(host)
        ),
    )
}

/// The tunnel exists but its agent or origin did not answer.
pub fn bad_gateway(hostname: &str) -> Response<Body> {
    page(
        502,
        "Tunnel unavailable",
        &format!(
            "The tunnel for <b>{}</b> is not reachable right now. Please try again shortly.",
            escape(hostname)
        ),
    )
}

/// The tunnel serves HTTPS, and its certificate is not there yet.
pub fn certificate_pending(hostname: &str) -> Response<Body> {
    page(
        503,
        "Certificate on its way",
        &format!("The HTTPS certificate for <b>{}</b> is being issued. This page will work in a moment; please try again shortly.", escape(hostname)),
    )
}

/// The request itself is unusable (no Host).
pub fn bad_request(reason: &str) -> Response<Body> {
    client_error(400, reason)
}

/// The client's request failed on its side: 400 (malformed) or 408 (too slow).
pub fn client_error(status: u16, reason: &str) -> Response<Body> {
    let title = match status {
        408 => "Request timeout",
        _ => "Bad request",
    };
    let mut response = page(status, title, &escape(reason));
    response.headers_mut().insert(
        hyper::header::CONNECTION,
        hyper::header::HeaderValue::from_static("close"),
    );
    response
}

/// Every connection to the tunnel's agent stayed busy for the queue timeout: come back
/// in a second.
pub fn overloaded(hostname: &str) -> Response<Body> {
    let mut response = page(
        503,
        "Busy",
        &format!(
            "The site at <b>{}</b> is receiving more requests than it can take right now. Please try again in a moment.",
            escape(hostname)
        ),
    );
    response.headers_mut().insert(
        hyper::header::RETRY_AFTER,
        hyper::header::HeaderValue::from_static("1"),
    );
    response
}
