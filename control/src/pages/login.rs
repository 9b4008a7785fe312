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
