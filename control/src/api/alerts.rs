//! Alerts: rules, channels, what fires and what was delivered; a test notice on demand.

use super::views::Done;
use super::{answer, Json};
use crate::alerts::deliver::Delivery;
use crate::alerts::engine::Firing;
use crate::alerts::spec::{ChannelView, NewChannel, NewRule};
use crate::alerts::{self, Channel, Rule, CHANNELS, FIRING, RULES};
use crate::error::Error;
use crate::routes::{ApiResult, Call};
use crate::Control;
use serde::Serialize;
use std::sync::Arc;

/// Everything about alerts at once, as the pages show it.
#[derive(Serialize)]
pub struct AlertsView {
    pub rules: Vec<Rule>,
    pub channels: Vec<ChannelView>,
    pub firing: Vec<Firing>,
    pub deliveries: Vec<Delivery>,
    /// Notices waiting for a retry.
    pub waiting: usize,
}

impl AlertsView {
    pub fn of(control: &Control) -> Result<AlertsView, Error> {
        let outbox = control.alerts.outbox();
        Ok(AlertsView {
            rules: alerts::rules(control)?,
            channels: alerts::channels(control)?
                .iter()
                .map(ChannelView::of)
                .collect(),
            firing: control.store.meta(FIRING)?.unwrap_or_default(),
            deliveries: outbox.log(),
            waiting: outbox.waiting(),
        })
    }
}

pub fn overview(call: &Call, _: Json) -> ApiResult {
    answer(200, AlertsView::of(&call.control)?)
}

/// Keep a new rule; its id.
pub fn add_rule(control: &Control, fields: NewRule) -> Result<Rule, Error> {
    let state = control.store.shared_state()?;
    let channels = alerts::channels(control)?;
    let rule = fields.build(&state, &channels)?;
    let kept = rule.clone();
    control.store.update_meta(RULES, |rules: &mut Vec<Rule>| {
        rules.push(kept);
        Ok(())
    })?;
    Ok(rule)
}

/// Keep a new channel.
pub fn add_channel(control: &Control, fields: NewChannel) -> Result<Channel, Error> {
    let channel = fields.build()?;
    let kept = channel.clone();
    control
        .store
        .update_meta(CHANNELS, |channels: &mut Vec<Channel>| {
            channels.push(kept);
            Ok(())
        })?;
    Ok(channel)
}

/// Delete rule `id`.
pub fn remove_rule(control: &Control, id: &str) -> Result<(), Error> {
    control.store.update_meta(RULES, |rules: &mut Vec<Rule>| {
        let before = rules.len();
        rules.retain(|r| r.id != id);
        match rules.len() < before {
            true => Ok(()),
            false => Err(Error::not_found("rule", id)),
        }
    })
}

/// Delete channel `id`, and its place in every rule.
pub fn remove_channel(control: &Control, id: &str) -> Result<(), Error> {
    control
        .store
        .update_meta(CHANNELS, |channels: &mut Vec<Channel>| {
            let before = channels.len();
            channels.retain(|c| c.id != id);
            match channels.len() < before {
                true => Ok(()),
                false => Err(Error::not_found("channel", id)),
            }
        })?;
    control.store.update_meta(RULES, |rules: &mut Vec<Rule>| {
        for rule in rules.iter_mut() {
            rule.channels.retain(|c| c != id);
        }
        Ok(())
    })
}

/// Send channel `id` a test notice now: what happened.
pub async fn test_channel(control: &Control, id: &str) -> Result<Result<(), String>, Error> {
    let channels = alerts::channels(control)?;
    let channel =
        (channels.iter().find(|c| c.id == id)).ok_or_else(|| Error::not_found("channel", id))?;
    let notice = alerts::test_notice(channel, kakuremichi_rt::unix_now());
    Ok(alerts::deliver::send(channel, &notice).await)
}

#[derive(Serialize)]
struct Tested {
    delivered: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    error: Option<String>,
}

pub fn create_rule(call: &Call, body: Json) -> ApiResult {
    answer(201, add_rule(&call.control, body.read()?)?)
}

pub fn create_channel(call: &Call, body: Json) -> ApiResult {
    answer(
        201,
        ChannelView::of(&add_channel(&call.control, body.read()?)?),
    )
}

pub fn delete_rule(call: &Call, _: Json) -> ApiResult {
    let id = call.param("id");
    remove_rule(&call.control, id)?;
    answer(200, Done::Deleted(id))
}

pub fn delete_channel(call: &Call, _: Json) -> ApiResult {
    let id = call.param("id");
    remove_channel(&call.control, id)?;
    answer(200, Done::Deleted(id))
}

pub async fn test(call: Arc<Call>) -> ApiResult {
    let outcome = test_channel(&call.control, call.param("id")).await?;
    answer(
        200,
        Tested {
            delivered: outcome.is_ok(),
            error: outcome.err(),
        },
    )
}
