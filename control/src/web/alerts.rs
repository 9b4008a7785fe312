//! The Alerts page: what fires, the rules, the channels (with a test notice each) and the
//! latest deliveries. Its page is [`crate::pages::alerts`].

use super::{redirect, text, Form, Page};
use crate::alerts::spec::{NewChannel, NewRule};
use crate::alerts::{self, ChannelKind, RuleKind, SmtpSecurity};
use crate::api::alerts::{add_channel as keep_channel, add_rule as keep_rule, AlertsView};
use crate::api::alerts::{remove_channel, remove_rule};
use crate::pages;
use crate::routes::{FormResult, PageResult};

pub fn page(page: &Page) -> PageResult {
    shown(page, 200, None)
}

fn shown(page: &Page, status: u16, refusal: Option<&str>) -> PageResult {
    let view = AlertsView::of(&page.control)?;
    let state = page.state()?;
    let tunnels: Vec<(String, String)> = (state.tunnels.iter())
        .map(|t| (t.id.clone(), t.label()))
        .collect();
    let (user, csrf) = page.who();
    let every = page.control.alerts.every.as_secs();
    Ok((
        status,
        pages::alerts::page(user, csrf, &view, &tunnels, every, refusal),
    ))
}

fn refused(page: &Page, error: crate::Error) -> FormResult {
    match error.field() {
        Some(_) => {
            let (status, markup) = shown(page, 400, Some(&error.to_string()))?;
            Ok(page.html(status, markup))
        }
        None => Err(error),
    }
}

fn number<T: std::str::FromStr>(form: &Form, name: &str) -> Result<Option<T>, crate::Error> {
    match text(form, name).trim() {
        "" => Ok(None),
        given => given
            .parse()
            .map(Some)
            .map_err(|_| crate::Error::invalid(name, "must be a number")),
    }
}

pub fn add_rule(page: &Page, form: &Form) -> FormResult {
    let kind = RuleKind::ALL
        .into_iter()
        .find(|k| k.as_str() == text(form, "kind"));
    let fields = (|| {
        Ok(NewRule {
            name: text(form, "name").to_string(),
            kind,
            for_secs: number(form, "for_secs")?,
            threshold: number(form, "threshold")?,
            tunnel: Some(text(form, "tunnel").to_string()),
            channels: None,
        })
    })();
    match fields.and_then(|fields| keep_rule(&page.control, fields)) {
        Ok(_) => Ok(redirect("/alerts")),
        Err(e) => refused(page, e),
    }
}

pub fn add_channel(page: &Page, form: &Form) -> FormResult {
    let given = |name: &str| Some(text(form, name).to_string());
    let fields = NewChannel {
        name: text(form, "name").to_string(),
        kind: ChannelKind::ALL
            .into_iter()
            .find(|k| k.as_str() == text(form, "kind")),
        url: given("url"),
        secret: given("secret"),
        smtp_server: given("smtp_server"),
        smtp_security: [
            SmtpSecurity::Starttls,
            SmtpSecurity::Tls,
            SmtpSecurity::None,
        ]
        .into_iter()
        .find(|s| format!("{s:?}").eq_ignore_ascii_case(text(form, "smtp_security"))),
        smtp_username: given("smtp_username"),
        smtp_password: given("smtp_password"),
        mail_from: given("mail_from"),
        mail_to: given("mail_to"),
        smtp_ca_pem: given("smtp_ca_pem"),
    };
    match keep_channel(&page.control, fields) {
        Ok(_) => Ok(redirect("/alerts")),
        Err(e) => refused(page, e),
    }
}

pub fn delete_rule(page: &Page, _: &Form) -> FormResult {
    remove_rule(&page.control, page.param("id"))?;
    Ok(redirect("/alerts"))
}

pub fn delete_channel(page: &Page, _: &Form) -> FormResult {
    remove_channel(&page.control, page.param("id"))?;
    Ok(redirect("/alerts"))
}

/// Queue a test notice for the channel: the next look sends it, and its delivery shows.
pub fn test_channel(page: &Page, _: &Form) -> FormResult {
    let id = page.param("id");
    let channels = alerts::channels(&page.control)?;
    let channel = (channels.iter().find(|c| c.id == id))
        .ok_or_else(|| crate::Error::not_found("channel", id))?;
    let now = kakuremichi_rt::unix_now();
    let notice = alerts::test_notice(channel, now);
    page.control.alerts.outbox().queue(notice, id, now);
    Ok(redirect("/alerts?tested=1"))
}
