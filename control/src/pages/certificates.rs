//! Certificates: their state, expiry, last error and next attempt; retry a failing one now;
//! upload a manual one.

use super::{field, layout};
use crate::auth::{Role, UserRecord};
use crate::model::{CertRecord, CertState, Issuer};
use maud::{html, Markup};

pub fn page(
    user: &UserRecord,
    csrf: &str,
    (certificates, missing): (&[&CertRecord], &[(String, Issuer)]),
    upload_error: Option<&str>,
    now: u64,
) -> Markup {
    let admin = user.role == Role::Admin;
    layout(
        "Certificates",
        Some((user, csrf)),
        html! {
            script { (maud::PreEscaped(super::REFRESH_SCRIPT)) }
            h1 { "Certificates" }
            @if certificates.is_empty() && missing.is_empty() {
                div.card { p.muted { "None yet: tunnels with HTTPS get theirs when they are created." } }
            } @else {
                div.card.table {
                    table {
                        thead { tr { th { "Hostname" } th { "Issuer" } th { "State" } th { "Expires" } th { "" } } }
                        tbody {
                            @for (hostname, issuer) in missing {
                                tr {
                                    td data-label="Hostname" { (hostname) }
                                    td data-label="Issuer" { (issuer.as_str()) }
                                    td data-label="State" {
                                        @if *issuer == Issuer::Manual {
                                            span.dot.bad {} "none uploaded yet: upload it below"
                                        } @else {
                                            span.dot.warn {} "not issued yet"
                                        }
                                    }
                                    td data-label="Expires" { span.muted { "—" } }
                                    td.row-actions {}
                                }
                            }
                            @for cert in certificates {
                                tr {
                                    td data-label="Hostname" { (cert.hostname) }
                                    td data-label="Issuer" { (cert.issuer.as_str()) }
                                    td data-label="State" {
                                        @match cert.state {
                                            CertState::Valid => { span.dot.good {} "valid" }
                                            CertState::Pending => { span.dot.warn {} "issuing" }
                                            CertState::Failed => {
                                                span.dot.bad {} "failing: " (cert.last_error.as_deref().unwrap_or("no reason recorded"))
                                                br;
                                                span.muted { "next attempt in " (cert.next_attempt.saturating_sub(now)) " s" }
                                            }
                                        }
                                    }
                                    td data-label="Expires" {
                                        @if cert.chain_pem.is_some() {
                                            "in " (cert.not_after.saturating_sub(now) / 86_400) " days"
                                        } @else { span.muted { "—" } }
                                    }
                                    td.row-actions {
                                        @if admin && cert.state == CertState::Failed {
                                            form.inline method="post" action={"/certificates/" (cert.hostname) "/retry"} {
                                                input type="hidden" name="csrf" value=(csrf);
                                                button.small type="submit" { "Retry now" }
                                            }
                                        }
                                    }
                                }
                            }
                        }
                    }
                }
            }
            @if admin {
                h2 { "Upload a certificate" }
                div.card {
                    p.muted { "For a tunnel whose issuer is " code { "manual" } ": the chain and its key, PEM. They are checked for a matching key, the hostname and expiry." }
                    form method="post" action="/certificates/new" {
                        input type="hidden" name="csrf" value=(csrf);
                        (field("Hostname", "hostname", "text", "", upload_error, "off"))
                        label.field { span { "Certificate chain (PEM)" } textarea name="certificate_pem" rows="6" required {} }
                        label.field { span { "Private key (PEM)" } textarea name="key_pem" rows="6" required {} }
                        button type="submit" { "Upload" }
                    }
                }
            }
        },
    )
}
