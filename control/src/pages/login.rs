//! The login form.

use super::{field, layout};
use maud::{html, Markup};

/// What the form shows.
#[derive(Default)]
pub struct LoginForm<'a> {
    pub name: &'a str,
    /// Why the last attempt failed.
    pub error: Option<&'a str>,
    /// Where to go after logging in (a local path; empty is the dashboard).
    pub next: &'a str,
}

pub fn page(form: &LoginForm) -> Markup {
    layout(
        "Log in",
        None,
        html! {
            div.card.narrow {
                h1 { "Log in" }
                @if let Some(error) = form.error {
                    p.notice.bad role="alert" { (error) }
                }
                form method="post" action="/login" {
                    @if !form.next.is_empty() { input type="hidden" name="next" value=(form.next); }
                    (field("Name", "name", "text", form.name, None, "username"))
                    (field("Password", "password", "password", "", None, "current-password"))
                    button type="submit" { "Log in" }
                }
            }
        },
    )
}

/// The second step of a login with two-factor on.
pub fn code_page(error: Option<&str>, next: &str) -> Markup {
    layout(
        "Log in",
        None,
        html! {
            div.card.narrow {
                h1 { "Enter your code" }
                p.muted { "The 6-digit code from your authenticator app, or one of your recovery codes." }
                @if let Some(error) = error {
                    p.notice.bad role="alert" { (error) }
                }
                form method="post" action="/login/code" {
                    @if !next.is_empty() { input type="hidden" name="next" value=(next); }
                    (field("Code", "code", "text", "", None, "one-time-code"))
                    button type="submit" { "Log in" }
                }
            }
        },
    )
}
