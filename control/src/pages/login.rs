//! The login form.

use super::{field, layout};
use maud::{html, Markup};

/// What the form shows.
#[derive(Default)]
pub struct LoginForm<'a> {
    pub name: &'a str,
    /// Why the last attempt failed.
    pub error: Option<&'a str>,
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
                    (field("Name", "name", "text", form.name, None, "username"))
                    (field("Password", "password", "password", "", None, "current-password"))
                    button type="submit" { "Log in" }
                }
            }
        },
    )
}

/// The second step of a login with two-factor on.
pub fn code_page(error: Option<&str>) -> Markup {
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
                    (field("Code", "code", "text", "", None, "one-time-code"))
                    button type="submit" { "Log in" }
                }
            }
        },
    )
}
