//! Your own account: change the password, see where you are logged in and end sessions.

use super::{ago, field, layout};
use crate::auth::sessions::SessionRecord;
use crate::auth::UserRecord;
use maud::{html, Markup, PreEscaped};

/// Where two-factor login stands for this account and session.
pub enum TwoFactor<'a> {
    Off,
    /// Being enrolled: the secret, and its QR code as SVG.
    Enrolling {
        secret: &'a str,
        qr_svg: &'a str,
    },
    On {
        recovery_codes_left: usize,
    },
}

/// What the account page shows besides the forms.
pub struct AccountView<'a> {
    pub current_session: &'a str,
    pub sessions: &'a [SessionRecord],
    pub two_factor: TwoFactor<'a>,
    /// The form at fault (`password`, `totp`) and why.
    pub error: Option<(&'a str, &'a str)>,
    pub notice: Option<&'a str>,
    pub now: u64,
}

pub fn page(user: &UserRecord, csrf: &str, view: &AccountView) -> Markup {
    let error_for = |form: &str| view.error.filter(|(f, _)| *f == form).map(|(_, m)| m);
    let (current_session, sessions, notice, now) =
        (view.current_session, view.sessions, view.notice, view.now);
    let password_error = error_for("password");
    layout(
        "Account",
        Some((user, csrf)),
        html! {
            h1 { "Account: " (user.name) }
            @if let Some(notice) = notice { p.notice role="status" { (notice) } }
            h2 { "Change password" }
            div.card {
                form method="post" action="/account/password" {
                    input type="hidden" name="csrf" value=(csrf);
                    (field("Current password", "current", "password", "", password_error, "current-password"))
                    (field("New password (10 characters or more)", "password", "password", "", None, "new-password"))
                    (field("New password again", "confirm", "password", "", None, "new-password"))
                    p.muted { "Changing it ends your other sessions." }
                    button type="submit" { "Change password" }
                }
            }
            h2 { "Two-factor login" }
            div.card {
                @match view.two_factor {
                    TwoFactor::Off => {
                        p { "Off: a password alone logs in." }
                        form method="post" action="/account/totp/start" {
                            input type="hidden" name="csrf" value=(csrf);
                            button type="submit" { "Turn on two-factor login" }
                        }
                    }
                    TwoFactor::Enrolling { secret, qr_svg } => {
                        p { "Scan this with an authenticator app (or type the key), then enter the code it shows." }
                        div.qr { (PreEscaped(qr_svg)) }
                        p { "Key: " code id="totp-secret" { (secret) } }
                        form method="post" action="/account/totp/confirm" {
                            input type="hidden" name="csrf" value=(csrf);
                            (field("Code", "code", "text", "", error_for("totp"), "one-time-code"))
                            button type="submit" { "Turn on" }
                        }
                    }
                    TwoFactor::On { recovery_codes_left } => {
                        p { span.dot.good {} "On. " (recovery_codes_left) " recovery codes left." }
                        form method="post" action="/account/totp/off" {
                            input type="hidden" name="csrf" value=(csrf);
                            (field("Current password, to turn it off", "current", "password", "", error_for("totp"), "current-password"))
                            button.danger type="submit" { "Turn off two-factor login" }
                        }
                    }
                }
            }
            h2 { "Sessions" }
            div.card.table {
                table {
                    thead { tr { th { "Started" } th { "Last used" } th { "From" } th { "Browser" } th { "" } } }
                    tbody {
                        @for session in sessions {
                            tr {
                                td data-label="Started" { (ago(session.created_at, now)) }
                                td data-label="Last used" { (ago(session.last_seen, now)) }
                                td data-label="From" { (session.address) }
                                td data-label="Browser" { span.muted { (session.user_agent.chars().take(60).collect::<String>()) } }
                                td.row-actions {
                                    @if session.id == current_session {
                                        span.muted { "this one" }
                                    } @else {
                                        form.inline method="post" action={"/account/sessions/" (session.id) "/end"} {
                                            input type="hidden" name="csrf" value=(csrf);
                                            button.small type="submit" { "End" }
                                        }
                                    }
                                }
                            }
                        }
                    }
                }
            }
            form method="post" action="/logout" {
                input type="hidden" name="csrf" value=(csrf);
                input type="hidden" name="everywhere" value="true";
                p { button.small type="submit" { "Log out everywhere" } " " span.muted { "Ends every session above and your sessions on every tunnel." } }
            }
        },
    )
}

/// Recovery codes, shown once after two-factor login is turned on.
pub fn recovery_page(user: &UserRecord, csrf: &str, codes: &[String]) -> Markup {
    layout(
        "Account",
        Some((user, csrf)),
        html! {
            h1 { "Two-factor login is on" }
            p.notice { "Keep these recovery codes somewhere safe: each logs in once without your app. They are shown only now." }
            div.card {
                (super::copyable("recovery-codes", &codes.join("\n")))
                p { a href="/account" { "Done" } }
            }
            script { (PreEscaped(super::COPY_SCRIPT)) }
        },
    )
}
