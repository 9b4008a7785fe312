//! Admin API tokens: create (shown once), list, revoke.

use super::{ago, field, layout};
use crate::auth::UserRecord;
use crate::model::{TokenRecord, TokenScope};
use maud::{html, Markup};

pub fn list_page(
    user: &UserRecord,
    csrf: &str,
    tokens: &[TokenRecord],
    error: Option<&str>,
    now: u64,
) -> Markup {
    layout(
        "API tokens",
        Some((user, csrf)),
        html! {
            h1 { "API tokens" }
            p.muted { "A full token can do everything an administrator can through " code { "/api/v1" } "; a read-only token can only read it and " code { "/metrics" } "." }
            @if !tokens.is_empty() {
                div.card.table {
                    table {
                        thead { tr { th { "Name" } th { "Access" } th { "Created" } th { "Expires" } th { "" } } }
                        tbody {
                            @for token in tokens {
                                tr {
                                    td data-label="Name" { (token.name) }
                                    td data-label="Access" {
                                        @match token.scope {
                                            TokenScope::Admin => { "full" }
                                            TokenScope::Read => { "read only" }
                                        }
                                    }
                                    td data-label="Created" { (ago(token.created_at, now)) }
                                    td data-label="Expires" {
                                        @match token.expires_at {
                                            None => { "never" }
                                            Some(at) if at <= now => { span.dot.bad {} "expired" }
                                            Some(at) => { "in " ((at - now) / 86_400) " days" }
                                        }
                                    }
                                    td.row-actions {
                                        form.inline method="post" action={"/tokens/" (token.id) "/revoke"} {
                                            input type="hidden" name="csrf" value=(csrf);
                                            button.small type="submit" { "Revoke" }
                                        }
                                    }
                                }
                            }
                        }
                    }
                }
            }
            h2 { "Create a token" }
            div.card {
                form method="post" action="/tokens/new" {
                    input type="hidden" name="csrf" value=(csrf);
                    (field("Name (what uses it)", "name", "text", "", error, "off"))
                    label.field {
                        span { "Access" }
                        select name="scope" {
                            option value="admin" selected { "Full" }
                            option value="read" { "Read only" }
                        }
                    }
                    label.field {
                        span { "Expires" }
                        select name="expires_days" {
                            option value="30" { "in 30 days" }
                            option value="90" selected { "in 90 days" }
                            option value="365" { "in a year" }
                            option value="" { "never" }
                        }
                    }
                    button type="submit" { "Create token" }
                }
            }
        },
    )
}

pub fn created_page(user: &UserRecord, csrf: &str, name: &str, token: &str) -> Markup {
    layout(
        "API token",
        Some((user, csrf)),
        html! {
            h1 { "Token " (name) }
            p.notice { "Copy it now: it is shown only this once (Control keeps only its hash)." }
            div.card {
                (super::copyable("token", token))
                p { "Use it as " code { "Authorization: Bearer …" } ". " a href="/tokens" { "Done: back to the tokens" } }
            }
            script { (maud::PreEscaped(super::COPY_SCRIPT)) }
        },
    )
}
