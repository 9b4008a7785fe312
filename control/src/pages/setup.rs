//! First run: the one-time page that creates the first administrator. It asks for the setup
//! code Control printed in its log, so only whoever runs Control can claim it.

use super::{field, layout};
use maud::{html, Markup};

/// What the form shows, with an error per field.
#[derive(Default)]
pub struct SetupForm<'a> {
    pub name: &'a str,
    pub code_error: Option<&'a str>,
    pub name_error: Option<&'a str>,
    pub password_error: Option<&'a str>,
}

pub fn page(form: &SetupForm) -> Markup {
    layout(
        "Set up",
        None,
        html! {
            div.card.narrow {
                h1 { "Create the first administrator" }
                p.muted {
                    "Control printed a setup code in its log when it started "
                    "(" code { "first run: … setup code" } "). Enter it here."
                }
                form method="post" action="/setup" {
                    (field("Setup code", "code", "text", "", form.code_error, "one-time-code"))
                    (field("Name", "name", "text", form.name, form.name_error, "username"))
                    (field("Password (10 characters or more)", "password", "password", "", form.password_error, "new-password"))
                    (field("Password again", "confirm", "password", "", None, "new-password"))
                    button type="submit" { "Create administrator" }
                }
            }
        },
    )
}
