//! The gateway's own HTML pages. They name the hostname a visitor asked for and nothing
//! internal (no addresses, ports or ids).

use hyper::Response;
use kakuremichi_rt::http::{respond, Body};
use maud::{html, Markup, PreEscaped, DOCTYPE};

const STYLE: &str = "body{font-family:system-ui,sans-serif;max-width:36rem;margin:4rem auto;padding:0 1rem;color:#222}\
     h1{font-size:1.4rem}p{color:#555}.error{color:#c0392b}\
     input{font:inherit;padding:.5rem;width:100%;box-sizing:border-box;margin:.25rem 0 .75rem}\
     button{font:inherit;padding:.5rem 1.25rem;border:0;border-radius:6px;background:#2457d6;color:#fff}";

fn page(status: u16, title: &str, message: Markup) -> Response<Body> {
    // Errors carry their code in the tab's title; a login page is no error.
    let heading = match status {
        400.. => format!("{status} {title}"),
        _ => title.to_string(),
    };
    let markup = html! {
        (DOCTYPE)
        html lang="en" {
            head {
                meta charset="utf-8";
                meta name="viewport" content="width=device-width, initial-scale=1";
                title { (heading) }
                style { (PreEscaped(STYLE)) }
            }
            body {
                h1 { (title) }
                (message)
                p { small { "kakuremichi gateway" } }
            }
        }
    };
    let mut response = respond(status, "text/html; charset=utf-8", markup.into_string());
    kakuremichi_rt::http::protect_page(response.headers_mut(), OWN_PAGE_POLICY);
    response
}

/// The gateway's own pages: inline style, a form posting back here, nothing else.
const OWN_PAGE_POLICY: &str = "default-src 'none'; style-src 'unsafe-inline'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'";
/// Pages a tunnel's owner wrote may load what they like, but are never framed.
const OWNER_PAGE_POLICY: &str = "frame-ancestors 'none'";

/// No tunnel serves this host.
pub fn not_found(host: &str) -> Response<Body> {
    page(
        404,
        "Not found",
        html! { p { "No site is published at " b { (host) } " on this gateway." } },
    )
}

/// The tunnel exists but its agent or origin did not answer.
pub fn bad_gateway(hostname: &str) -> Response<Body> {
    page(
        502,
        "Tunnel unavailable",
        html! { p { "The tunnel for " b { (hostname) } " is not reachable right now. Please try again shortly." } },
    )
}

/// HTML a tunnel's owner wrote, served as is with `status`, never cached or framed.
pub fn tunnel_page(status: u16, html: &str) -> Response<Body> {
    let mut response = respond(status, "text/html; charset=utf-8", html.to_string());
    kakuremichi_rt::http::protect_page(response.headers_mut(), OWNER_PAGE_POLICY);
    response
}

/// The tunnel serves HTTPS, and its certificate is not there yet.
pub fn certificate_pending(hostname: &str) -> Response<Body> {
    page(
        503,
        "Certificate on its way",
        html! { p { "The HTTPS certificate for " b { (hostname) } " is being issued. This page will work in a moment; please try again shortly." } },
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
    let mut response = page(status, title, html! { p { (reason) } });
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
        html! { p { "The site at " b { (hostname) } " is receiving more requests than it can take right now. Please try again in a moment." } },
    );
    response.headers_mut().insert(
        hyper::header::RETRY_AFTER,
        hyper::header::HeaderValue::from_static("1"),
    );
    response
}

/// The gateway is being drained: this request goes elsewhere (a load balancer or the
/// client's next DNS answer), and this connection closes.
pub fn draining() -> Response<Body> {
    let mut response = page(
        503,
        "Gateway going out of service",
        html! { p { "This gateway is being taken out of service. Please try again: another gateway will answer." } },
    );
    let headers = response.headers_mut();
    headers.insert(
        hyper::header::RETRY_AFTER,
        hyper::header::HeaderValue::from_static("1"),
    );
    headers.insert(
        hyper::header::CONNECTION,
        hyper::header::HeaderValue::from_static("close"),
    );
    response
}

/// An IP rule keeps this client out.
pub fn forbidden(hostname: &str) -> Response<Body> {
    page(
        403,
        "Not allowed",
        html! { p { b { (hostname) } " cannot be opened from your network." } },
    )
}

/// A credential was missing or wrong, for a client that is not a browser.
pub fn unauthorized(hostname: &str) -> Response<Body> {
    page(
        401,
        "Login required",
        html! { p { b { (hostname) } " needs a login, a password or a service token." } },
    )
}

/// Too many wrong passwords from here or for this tunnel.
pub fn throttled(hostname: &str, retry_after: u64) -> Response<Body> {
    let mut response = page(
        429,
        "Too many attempts",
        html! { p { "Too many wrong passwords for " b { (hostname) } ". Try again in " (retry_after) " s." } },
    );
    if let Ok(value) = hyper::header::HeaderValue::from_str(&retry_after.to_string()) {
        response
            .headers_mut()
            .insert(hyper::header::RETRY_AFTER, value);
    }
    response
}

/// The tunnel's login page: a password form and/or the way to log in with Control.
pub fn login(
    hostname: &str,
    return_to: &str,
    password: bool,
    control_login: Option<&str>,
    error: Option<&str>,
    status: u16,
) -> Response<Body> {
    // The return path rides in the action too: the gateway picks the tunnel (of a hostname
    // split by path) before it reads the body.
    let action = format!(
        "/.kakuremichi/login?{}",
        form_urlencoded::Serializer::new(String::new())
            .append_pair("return", return_to)
            .finish()
    );
    let body = html! {
        p { b { (hostname) } " is private." }
        @if let Some(error) = error {
            p.error role="alert" { (error) }
        }
        @if password {
            form method="post" action=(action) {
                input type="hidden" name="return" value=(return_to);
                label { "Password" br; input type="password" name="password" autocomplete="current-password" autofocus required; }
                button type="submit" { "Open" }
            }
        }
        @if let Some(url) = control_login {
            p { a href=(url) { "Log in with your kakuremichi account" } }
        }
    };
    page(status, "Login required", body)
}

/// An assertion that is expired, used, forged or for someone not allowed.
pub fn login_link_refused(hostname: &str) -> Response<Body> {
    page(
        403,
        "Login not accepted",
        html! { p { "This login link for " b { (hostname) } " is expired, already used, or not for an account that may open it. " a href="/" { "Try again" } "." } },
    )
}

/// The session cookie was cleared.
pub fn logged_out(hostname: &str) -> Response<Body> {
    page(
        200,
        "Logged out",
        html! { p { "You are logged out of " b { (hostname) } "." } },
    )
}
