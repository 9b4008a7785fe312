//! The people who log in: add, disable, reset a password, delete (administrators only).

use super::{field, layout};
use crate::auth::UserRecord;
use maud::{html, Markup};

pub fn list_page(
    user: &UserRecord,
    csrf: &str,
    users: &[UserRecord],
    name: &str,
    error: Option<&str>,
) -> Markup {
    layout(
        "Users",
        Some((user, csrf)),
        html! {
            h1 { "Users" }
            div.card.table {
                table {
                    thead { tr { th { "Name" } th { "Role" } th { "State" } th { "" } } }
                    tbody {
                        @for person in users {
                            tr {
                                td data-label="Name" { (person.name) @if person.id == user.id { span.muted { " (you)" } } }
                                td data-label="Role" { (person.role.as_str()) }
                                td data-label="State" {
                                    @if person.disabled { span.dot.bad {} "disabled" } @else { span.dot.good {} "active" }
                                }
                                td.row-actions {
                                    @if person.id != user.id {
                                        form.inline method="post" action={"/users/" (person.id) "/disabled"} {
                                            input type="hidden" name="csrf" value=(csrf);
                                            input type="hidden" name="disabled" value=(if person.disabled { "false" } else { "true" });
                                            button.small type="submit" { @if person.disabled { "Enable" } @else { "Disable" } }
                                        }
                                        " "
                                        form.inline method="post" action={"/users/" (person.id) "/password"} {
                                            input type="hidden" name="csrf" value=(csrf);
                                            button.small type="submit" { "Reset password" }
                                        }
                                        a href={"/users/" (person.id) "/delete"} { "Delete" }
                                    }
                                }
                            }
                        }
                    }
                }
            }
            h2 { "Add a user" }
            div.card {
                form method="post" action="/users/new" {
                    input type="hidden" name="csrf" value=(csrf);
                    (field("Name", "name", "text", name, error, "off"))
                    label.field {
                        span { "Role" }
                        select name="role" {
                            option value="member" { "member: sees tunnels" }
                            option value="admin" { "admin: everything" }
                        }
                    }
                    p.muted { "A password is generated and shown once; give it to the person, who can change it." }
                    button type="submit" { "Add user" }
                }
            }
        },
    )
}

/// The only time a generated password is shown.
pub fn password_page(user: &UserRecord, csrf: &str, for_name: &str, password: &str) -> Markup {
    layout(
        "Password",
        Some((user, csrf)),
        html! {
            h1 { "Password for " (for_name) }
            p.notice { "Shown only this once: pass it on now." }
            div.card {
                div.copy { pre id="password" { (password) } }
                p { a href="/users" { "Done: back to the users" } }
            }
        },
    )
}
