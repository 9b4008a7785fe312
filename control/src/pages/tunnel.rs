//! One tunnel's own page: how it is published, whether it serves, and its traffic.

use super::charts;
use super::layout;
use super::tunnels::Row;
use crate::auth::{Role, UserRecord};
use crate::traffic::series::Series;
use maud::{html, Markup};

pub fn page(user: &UserRecord, csrf: &str, row: &Row, series: &Series) -> Markup {
    let admin = user.role == Role::Admin;
    let base = format!("/tunnels/{}", row.id);
    layout(
        &format!("Tunnel {}", row.name),
        Some((user, csrf)),
        html! {
            p.muted { a href="/tunnels" { "Tunnels" } " ›" }
            div.toolbar {
                h1 { (row.name) @if row.kind != "http" { " " span.badge { (row.kind) } } }
                @if admin {
                    div.row-actions {
                        a.button href={(base) "/edit"} { "Edit" }
                        @if row.kind == "http" { a.edit href={(base) "/access"} { "Access" } }
                        a href={(base) "/delete"} { "Delete" }
                    }
                }
            }
            div.card {
                dl.facts {
                    dt { "State" } dd { span class={"dot " (row.state.1)} {} (row.state.0) }
                    dt { "Agent" }
                    dd {
                        @for (i, (agent, online)) in row.agents.iter().enumerate() {
                            @if i > 0 { ", " }
                            span class={"dot " (if *online { "good" } else { "bad" })} {}
                            (agent)
                            @if !online { span.muted { " (offline)" } }
                        }
                    }
                    dt { "Target" } dd { code { (row.target) } }
                    dt { "Who may open it" } dd { (row.access.as_deref().unwrap_or("everyone")) }
                    dt { "Certificate" } dd { span class={"dot " (row.certificate.1)} {} (row.certificate.0) }
                }
            }
            div.card { (charts::traffic(series, &base)) }
        },
    )
}
