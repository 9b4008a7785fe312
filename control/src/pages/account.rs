//! Your own account: change the password, see where you are logged in and end sessions.

use super::{ago, field, layout};
use crate::auth::sessions::SessionRecord;
use crate::auth::UserRecord;
use maud::{html, Markup};

pub fn page(
    user: &UserRecord,
    csrf: &str,
    current_session: &str,
    sessions: &[SessionRecord],
    password_error: Option<&str>,
    notice: Option<&str>,
    now: u64,
) -> Markup {
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
        },
    )
}
