//! The Logs page: the latest requests every gateway kept, newest first, with filters.

use super::layout;
use crate::api::logs::LogsView;
use crate::auth::UserRecord;
use maud::{html, Markup};

/// The filter as the person typed it, to show it again.
#[derive(Default)]
pub struct Filter {
    pub tunnel: String,
    pub status: String,
    pub client: String,
    pub user: String,
    pub minutes: String,
}

impl Filter {
    pub fn of(parameter: impl Fn(&str) -> Option<String>) -> Filter {
        let get = |name: &str| parameter(name).unwrap_or_default();
        Filter {
            tunnel: get("tunnel"),
            status: get("status"),
            client: get("client"),
            user: get("user"),
            minutes: get("minutes"),
        }
    }
}

/// `(HH:MM:SS.mmm, YYYY-MM-DD)` in UTC.
fn time_of(ms: u64) -> (String, String) {
    let time = time::OffsetDateTime::from_unix_timestamp((ms / 1000) as i64)
        .unwrap_or(time::OffsetDateTime::UNIX_EPOCH);
    let clock = format!(
        "{:02}:{:02}:{:02}.{:03}",
        time.hour(),
        time.minute(),
        time.second(),
        ms % 1000
    );
    let day = format!(
        "{}-{:02}-{:02}",
        time.year(),
        u8::from(time.month()),
        time.day()
    );
    (clock, day)
}

fn status_health(status: u16) -> &'static str {
    match status {
        500.. => "bad",
        400..=499 => "warn",
        _ => "good",
    }
}

pub fn page(
    user: &UserRecord,
    csrf: &str,
    filter: &Filter,
    tunnels: &[(String, String)],
    found: Option<&LogsView>,
    refusal: Option<&str>,
) -> Markup {
    let classes = [
        ("", "any status"),
        ("2", "2xx"),
        ("3", "3xx"),
        ("4", "4xx"),
        ("5", "5xx"),
    ];
    layout(
        "Logs",
        Some((user, csrf)),
        html! {
            h1 { "Logs" }
            form.filter.logs method="get" action="/logs" {
                select name="tunnel" aria-label="Tunnel" {
                    option value="" { "every tunnel" }
                    @for (id, label) in tunnels {
                        option value=(id) selected[*id == filter.tunnel] { (label) }
                    }
                }
                select name="status" aria-label="Status" {
                    @for (value, label) in classes {
                        option value=(value) selected[value == filter.status] { (label) }
                    }
                }
                input type="text" name="client" value=(filter.client) placeholder="client address" aria-label="Client address";
                input type="text" name="user" value=(filter.user) placeholder="user" aria-label="User";
                input type="number" name="minutes" value=(filter.minutes) placeholder="minutes back" min="1" aria-label="Minutes back";
                button type="submit" { "Filter" }
            }
            @if let Some(refusal) = refusal { p.notice.bad role="alert" { (refusal) } }
            @if let Some(found) = found {
                p.muted {
                    (found.entries.len()) " requests, newest first, from "
                    (found.gateways_answered) " of " (found.gateways_asked) " gateways"
                    @if found.gateways_answered < found.gateways_asked { " (the others did not answer in time)" }
                    ". The page follows new requests every 10 seconds."
                }
                script { (maud::PreEscaped(super::REFRESH_SCRIPT)) }
                @if found.entries.is_empty() {
                    div.card { p.muted { "No request matches. Gateways keep each tunnel's latest 1,000 requests in memory; a restarted gateway starts empty." } }
                } @else {
                    div.card.table {
                        table.logs {
                            thead { tr { th { "Time (UTC)" } th { "Request" } th { "Status" } th { "Client" } th { "In / out" } th { "Took" } th { "Gateway → agent" } } }
                            tbody {
                                @for entry in &found.entries {
                                    @let (clock, day) = time_of(entry.time_ms);
                                    tr {
                                        td.nowrap data-label="Time" title=(day) { (clock) }
                                        td data-label="Request" {
                                            code { (entry.method) " " (entry.path) @if let Some(query) = &entry.query { "?" (query) } }
                                            @for (name, value) in &entry.headers { br; span.muted { (name) ": " (value) } }
                                            br;
                                            span.muted { a href={"/tunnels/" (entry.tunnel_id)} { (entry.tunnel) } " · " (entry.host) }
                                        }
                                        td data-label="Status" { span class={"dot " (status_health(entry.status))} {} (entry.status) }
                                        td data-label="Client" {
                                            (entry.client)
                                            @if let Some(user) = &entry.user { br; span.muted { "👤 " (user) } }
                                        }
                                        td.nowrap data-label="In / out" { (super::charts::bytes(entry.bytes_in)) " / " (super::charts::bytes(entry.bytes_out)) }
                                        td.nowrap data-label="Took" { (format!("{:.1} ms", entry.duration_ms)) }
                                        td data-label="Gateway → agent" {
                                            (entry.gateway_name) " → " (entry.agent.as_deref().unwrap_or("none"))
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
