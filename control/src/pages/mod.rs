//! Control's pages: pure functions from data to HTML (Maud), one module per screen, one
//! stylesheet. They work without JavaScript.

pub mod access;
pub mod account;
pub mod alerts;
pub mod certificates;
pub mod charts;
pub mod dashboard;
pub mod login;
pub mod logs;
pub mod nodes;
pub mod setup;
pub mod tokens;
pub mod tunnel;
pub mod tunnel_form;
pub mod tunnels;
pub mod users;

use crate::auth::UserRecord;
use maud::{html, Markup, DOCTYPE};

/// The stylesheet every page links, served at `/style.css`.
pub const STYLE: &str = include_str!("style.css");

/// A whole page: head, the top bar (with the user and a logout button when logged in) and
/// `content`. `csrf` is the session's form token.
pub fn layout(title: &str, who: Option<(&UserRecord, &str)>, content: Markup) -> Markup {
    html! {
        (DOCTYPE)
        html lang="en" {
            head {
                meta charset="utf-8";
                meta name="viewport" content="width=device-width, initial-scale=1";
                title { (title) " · kakuremichi" }
                link rel="stylesheet" href="/style.css";
            }
            body {
                header.top {
                    a.brand href="/" { "kakuremichi" }
                    @if let Some((user, csrf)) = who {
                        nav {
                            a href="/" aria-current=[(title == "Dashboard").then_some("page")] { "Dashboard" }
                            a href="/tunnels" aria-current=[title.contains("unnel").then_some("page")] { "Tunnels" }
                            a href="/agents" aria-current=[title.contains("gent").then_some("page")] { "Agents" }
                            a href="/gateways" aria-current=[title.contains("ateway").then_some("page")] { "Gateways" }
                            a href="/logs" aria-current=[(title == "Logs").then_some("page")] { "Logs" }
                            a href="/alerts" aria-current=[(title == "Alerts").then_some("page")] { "Alerts" }
                            a href="/certificates" aria-current=[(title == "Certificates").then_some("page")] { "Certificates" }
                            @if user.role == crate::auth::Role::Admin {
                                a href="/users" aria-current=[(title == "Users").then_some("page")] { "Users" }
                                a href="/tokens" aria-current=[title.contains("token").then_some("page")] { "Tokens" }
                            }
                            a.who href="/account" aria-current=[(title == "Account").then_some("page")] { (user.name) " · " (user.role.as_str()) }
                            form method="post" action="/logout" {
                                input type="hidden" name="csrf" value=(csrf);
                                button.link type="submit" { "Log out" }
                            }
                        }
                    }
                }
                main { (content) }
            }
        }
    }
}

/// A question before something that cannot be undone: a form posting to `action`.
pub fn confirm_page(
    who: (&UserRecord, &str),
    title: &str,
    explanation: &str,
    action: &str,
    button: &str,
    back: &str,
) -> Markup {
    let csrf = who.1;
    layout(
        title,
        Some(who),
        html! {
            div.card.narrow {
                h1 { (title) }
                p { (explanation) }
                form method="post" action=(action) {
                    input type="hidden" name="csrf" value=(csrf);
                    div.actions {
                        button.danger type="submit" { (button) }
                        a href=(back) { "Cancel" }
                    }
                }
            }
        },
    )
}

/// A block of text to copy, with a copy button where a script runs ([`COPY_SCRIPT`]).
pub fn copyable(id: &str, text: &str) -> Markup {
    html! {
        div.copy {
            pre id=(id) { (text) }
            button.small.copy-button type="button" data-copy=(id) hidden { "Copy" }
        }
    }
}

/// Copy buttons, shown only where a script runs; without it, the text is there to select.
pub const COPY_SCRIPT: &str = "document.querySelectorAll('[data-copy]').forEach(function (b) {\
  b.hidden = false;\
  b.addEventListener('click', function () {\
    navigator.clipboard.writeText(document.getElementById(b.dataset.copy).textContent)\
      .then(function () { b.textContent = 'Copied'; });\
  });\
});";

/// Reloads a page of live states (dashboard, tunnels, nodes, certificates) every 10 s, except
/// while someone is typing in one of its forms or the tab is hidden.
pub const REFRESH_SCRIPT: &str = "setInterval(function () {\
  var typing = document.activeElement && /^(INPUT|TEXTAREA|SELECT)$/.test(document.activeElement.tagName);\
  if (!typing && document.visibilityState === 'visible') location.reload();\
}, 10000);";

/// Control's `Content-Security-Policy`: its own stylesheet, [`COPY_SCRIPT`] and
/// [`REFRESH_SCRIPT`] by their hashes and no other script, never framed.
pub fn content_security_policy() -> &'static str {
    static POLICY: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    POLICY.get_or_init(|| {
        use base64::Engine;
        let hashes: Vec<String> = [COPY_SCRIPT, REFRESH_SCRIPT]
            .iter()
            .map(|script| {
                let digest = ring::digest::digest(&ring::digest::SHA256, script.as_bytes());
                format!(
                    "'sha256-{}'",
                    base64::engine::general_purpose::STANDARD.encode(digest.as_ref())
                )
            })
            .collect();
        format!(
            "default-src 'self'; script-src {}; object-src 'none'; \
             frame-ancestors 'none'; base-uri 'none'",
            hashes.join(" ")
        )
    })
}

/// Unix seconds as `HH:MM UTC`.
pub fn clock(at: u64) -> String {
    let time = time::OffsetDateTime::from_unix_timestamp(at as i64)
        .unwrap_or(time::OffsetDateTime::UNIX_EPOCH);
    format!("{:02}:{:02} UTC", time.hour(), time.minute())
}

/// How long ago `at` was, in words.
pub fn ago(at: u64, now: u64) -> String {
    match now.saturating_sub(at) {
        s if s < 60 => "just now".into(),
        s if s < 3600 => format!("{} min ago", s / 60),
        s if s < 86_400 => format!("{} h ago", s / 3600),
        s => format!("{} days ago", s / 86_400),
    }
}

/// A labelled form field with its error, if any.
pub fn field(
    label: &str,
    name: &str,
    kind: &str,
    value: &str,
    error: Option<&str>,
    autocomplete: &str,
) -> Markup {
    input_field(label, name, kind, value, error, autocomplete, true)
}

/// A field that may stay empty (a form with fields for several kinds of thing).
pub fn optional_field(label: &str, name: &str, value: &str, error: Option<&str>) -> Markup {
    input_field(label, name, "text", value, error, "off", false)
}

fn input_field(
    label: &str,
    name: &str,
    kind: &str,
    value: &str,
    error: Option<&str>,
    autocomplete: &str,
    required: bool,
) -> Markup {
    html! {
        label.field {
            span { (label) }
            input type=(kind) name=(name) value=(value) autocomplete=(autocomplete)
                aria-invalid=[error.map(|_| "true")] required[required];
            @if let Some(error) = error {
                span.error { (error) }
            }
        }
    }
}
