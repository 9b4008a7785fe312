//! The pages a visitor sees when logging in to a tunnel through Control: no such tunnel, or
//! not allowed in.

use super::layout;
use crate::auth::UserRecord;
use maud::{html, Markup};

/// The login link names no tunnel that Control users may log in to.
pub fn no_tunnel(hostname: &str) -> Markup {
    layout(
        "No such tunnel",
        None,
        html! {
            div.card.narrow {
                h1 { "No login here" }
                p { "No tunnel at " code { (hostname) } " takes kakuremichi logins." }
            }
        },
    )
}

/// The user is logged in but the tunnel does not admit them.
pub fn not_allowed(who: (&UserRecord, &str), hostname: &str) -> Markup {
    layout(
        "Not allowed",
        Some(who),
        html! {
            div.card.narrow {
                h1 { "Not allowed" }
                p { (who.0.name) " may not open " code { (hostname) } ". Ask an administrator to add you to its access rules." }
            }
        },
    )
}

/// The access rules form's values as sent (or as stored), and an error for one field.
#[derive(Clone, Copy, Default)]
pub struct RulesForm<'a> {
    pub users: &'a str,
    pub admins: bool,
    pub members: bool,
    /// Whether the tunnel has a password now.
    pub has_password: bool,
    pub allow_ips: &'a str,
    pub deny_ips: &'a str,
    pub bypass: &'a str,
    pub session_hours: &'a str,
    /// The field at fault (`access.users`, …) and why.
    pub error: Option<(&'a str, &'a str)>,
}

impl RulesForm<'_> {
    fn error_for(&self, name: &str) -> Option<&str> {
        self.error
            .filter(|(field, _)| field.strip_prefix("access.") == Some(name))
            .map(|(_, message)| message)
    }
}

/// A service token as the page lists it.
pub struct TokenRow<'a> {
    pub id: &'a str,
    pub name: &'a str,
    pub created: String,
}

/// One tunnel's access rules and service tokens; `new_token` is a token just made (shown
/// once).
pub fn rules_page(
    who: (&UserRecord, &str),
    tunnel: (&str, &str),
    form: &RulesForm,
    tokens: &[TokenRow],
    new_token: Option<(&str, &str)>,
    saved: bool,
) -> Markup {
    let (id, hostname) = tunnel;
    let csrf = who.1;
    let base = format!("/tunnels/{id}/access");
    layout(
        &format!("Access to {hostname}"),
        Some(who),
        html! {
            p.muted { a href="/tunnels" { "Tunnels" } " / " (hostname) }
            h1 { "Who may open " (hostname) }
            @if saved {
                p.notice.good role="status" { "Saved. Every gateway applies these rules within a second or two." }
            }
            @if let Some((name, token)) = new_token {
                div.card {
                    p.notice { "Copy the service token " b { (name) } " now: it is shown only this once." }
                    (super::copyable("service-token", token))
                    p.muted { "Send it as " code { "Authorization: Bearer …" } "." }
                }
                script { (maud::PreEscaped(super::COPY_SCRIPT)) }
            }
            (rules_form(form, &base, csrf))
            (service_tokens(tokens, &base, csrf))
            p.muted { a.danger-link href="/access/rotate-keys" { "Sign everyone out of every tunnel" } " (new login keys; service tokens keep working)" }
        },
    )
}

/// The rules as a form, with each field's error beside it.
fn rules_form(form: &RulesForm, base: &str, csrf: &str) -> Markup {
    let text_area = |label: &str, name: &str, value: &str, hint: &str| {
        let error = form.error_for(name);
        html! {
            label.field {
                span { (label) }
                textarea name=(name) rows="3" aria-invalid=[error.map(|_| "true")] { (value) }
                span.muted.hint { (hint) }
                @if let Some(error) = error { span.error { (error) } }
            }
        }
    };
    html! {
    div.card {
        p.muted { "Leave everything empty for a public tunnel. Gateways check these rules themselves, also while Control is down." }
        form method="post" action=(base) {
            input type="hidden" name="csrf" value=(csrf);
            h2 { "Control users" }
            label.field {
                span { "Users by name" }
                input type="text" name="users" value=(form.users) autocomplete="off"
                    placeholder="alice, bob" aria-invalid=[form.error_for("users").map(|_| "true")];
                @if let Some(error) = form.error_for("users") { span.error { (error) } }
            }
            label.check { input type="checkbox" name="role_admin" value="true" checked[form.admins]; " Every administrator" }
            label.check { input type="checkbox" name="role_member" value="true" checked[form.members]; " Every member" }
            h2 { "Password or PIN" }
            label.field {
                span { @if form.has_password { "New password (empty keeps the current one)" } @else { "Password (optional)" } }
                input type="password" name="password" autocomplete="new-password"
                    aria-invalid=[form.error_for("password").map(|_| "true")];
                @if let Some(error) = form.error_for("password") { span.error { (error) } }
            }
            @if form.has_password {
                label.check { input type="checkbox" name="remove_password" value="true"; " Remove the password" }
            }
            h2 { "Networks and paths" }
            (text_area("Allowed networks (only these get in)", "allow_ips", form.allow_ips, "One address or network per line, e.g. 203.0.113.0/24."))
            (text_area("Denied networks", "deny_ips", form.deny_ips, "Checked first, before any login."))
            (text_area("Paths without login", "bypass", form.bypass, "One per line: /health, or /webhooks/* for everything below."))
            label.field {
                span { "Session length (hours)" }
                input type="text" name="session_hours" value=(form.session_hours) inputmode="numeric"
                    aria-invalid=[form.error_for("session_hours").map(|_| "true")];
                @if let Some(error) = form.error_for("session_hours") { span.error { (error) } }
            }
            div.actions {
                button type="submit" { "Save rules" }
                a href="/tunnels" { "Cancel" }
            }
        }
    }
    }
}

/// A tunnel's service tokens, with a form for a new one.
fn service_tokens(tokens: &[TokenRow], base: &str, csrf: &str) -> Markup {
    html! {
    h2 { "Service tokens" }
    div.card {
        p.muted { "For scripts and API clients that cannot log in through a page." }
        @if !tokens.is_empty() {
            table {
                tbody {
                    @for token in tokens {
                        tr {
                            td data-label="Name" { (token.name) }
                            td data-label="Created" { span.muted { (token.created) } }
                            td.row-actions {
                                form.inline method="post" action={(base) "/tokens/" (token.id) "/revoke"} {
                                    input type="hidden" name="csrf" value=(csrf);
                                    button.small type="submit" { "Revoke" }
                                }
                            }
                        }
                    }
                }
            }
        }
        form method="post" action={(base) "/tokens"} {
            input type="hidden" name="csrf" value=(csrf);
            label.field {
                span { "Name" }
                input type="text" name="name" required autocomplete="off" placeholder="deploy script";
            }
            button type="submit" { "Create service token" }
        }
    }
    }
}
