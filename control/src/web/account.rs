//! One's own account: the password, two-factor login with its recovery codes, and the
//! sessions one has open. The page is [`crate::pages::account`].

use super::{no_store, redirect, text, Form, Page};
use crate::auth::{self, password, sessions, UserRecord};
use crate::error::Error;
use crate::pages::account::{self, AccountView, TwoFactor};
use crate::routes::{FormResult, PageResult};
use hyper::header::COOKIE;

/// The account page of `user` (the visitor, as a change just left them), with an error on a
/// section or a notice.
fn account_page(
    page: &Page,
    user: &UserRecord,
    error: Option<(&str, &str)>,
    notice: Option<&str>,
) -> PageResult {
    let visitor = &page.visitor;
    let sessions = page.control.store.sessions_of(&user.id)?;
    let enrolment = visitor.session.totp_enrolment.as_deref().map(|secret| {
        let uri = auth::totp::uri(secret, &user.name, "kakuremichi");
        (secret, auth::totp::qr_svg(&uri).unwrap_or_default())
    });
    let two_factor = match (&user.totp_secret, &enrolment) {
        (Some(_), _) => TwoFactor::On {
            recovery_codes_left: user.recovery_codes.len(),
        },
        (None, Some((secret, qr_svg))) => TwoFactor::Enrolling { secret, qr_svg },
        (None, None) => TwoFactor::Off,
    };
    let view = AccountView {
        current_session: &visitor.session.id,
        sessions: &sessions,
        two_factor,
        error,
        notice,
        now: auth::unix_now(),
    };
    let status = if error.is_some() { 400 } else { 200 };
    Ok((status, account::page(user, page.who().1, &view)))
}

/// [`account_page`] as a form's answer.
fn answer(page: &Page, error: Option<(&str, &str)>, notice: Option<&str>) -> FormResult {
    let (status, markup) = account_page(page, &page.visitor.user, error, notice)?;
    Ok(page.html(status, markup))
}

pub fn page(page: &Page) -> PageResult {
    account_page(page, &page.visitor.user, None, None)
}

/// Whether the form's `current` field is the visitor's password (asked again before changing
/// a password or turning off two-factor login).
fn knows_password(page: &Page, form: &Form) -> bool {
    password::verify(text(form, "current"), &page.visitor.user.password_hash)
}

const NOT_YOUR_PASSWORD: &str = "This is not your current password.";

pub fn change_password(page: &Page, form: &Form) -> FormResult {
    if !knows_password(page, form) {
        return answer(page, Some(("password", NOT_YOUR_PASSWORD)), None);
    }
    let new = text(form, "password");
    if let Err(why) = password::check_policy(new) {
        let why = format!("New password: {why}.");
        return answer(page, Some(("password", &why)), None);
    }
    if new != text(form, "confirm") {
        return answer(
            page,
            Some(("password", "The two new passwords differ.")),
            None,
        );
    }
    let visitor = &page.visitor;
    let hash = password::hash(new).map_err(Error::Store)?;
    page.control
        .store
        .update_user_keeping(&visitor.user.id, Some(&visitor.session.id), |u| {
            u.password_hash = hash
        })?;
    let notice = "Password changed; your other sessions have ended.";
    answer(page, None, Some(notice))
}

pub fn end_session(page: &Page, _: &Form) -> FormResult {
    let (user_id, id) = (&page.visitor.user.id, page.param("id"));
    page.control
        .store
        .end_sessions(|s| &s.user_id == user_id && s.id == id)?;
    Ok(redirect("/account"))
}

/// The cookie's session token (the visitor's session; checked before the handler ran).
fn session_token(page: &Page) -> &str {
    sessions::token_from_cookies(page.request.headers().get(COOKIE)).unwrap_or("")
}

pub fn start_totp(page: &Page, _: &Form) -> FormResult {
    let secret = auth::totp::new_secret().map_err(Error::Store)?;
    page.control
        .store
        .update_session(session_token(page), |s| s.totp_enrolment = Some(secret))?;
    Ok(redirect("/account"))
}

/// Turn two-factor login on with the code the app shows; the recovery codes, shown once.
pub fn confirm_totp(page: &Page, form: &Form) -> FormResult {
    let visitor = &page.visitor;
    let Some(secret) = visitor.session.totp_enrolment.clone() else {
        return Ok(redirect("/account"));
    };
    if auth::totp::verify(&secret, text(form, "code"), auth::unix_now()).is_none() {
        let why = "That code is not right; check the app's clock and try the next one.";
        return answer(page, Some(("totp", why)), None);
    }
    let codes = auth::totp::new_recovery_codes().map_err(Error::Store)?;
    let user_id = &visitor.user.id;
    let hashes: Vec<String> = codes
        .iter()
        .map(|c| auth::totp::recovery_hash(user_id, c))
        .collect();
    let store = &page.control.store;
    store.update_user(user_id, |u| {
        u.totp_secret = Some(secret);
        u.recovery_codes = hashes;
    })?;
    store.update_session(session_token(page), |s| s.totp_enrolment = None)?;
    let (user, csrf) = page.who();
    Ok(no_store(
        page.html(200, account::recovery_page(user, csrf, &codes)),
    ))
}

pub fn totp_off(page: &Page, form: &Form) -> FormResult {
    if !knows_password(page, form) {
        return answer(page, Some(("totp", NOT_YOUR_PASSWORD)), None);
    }
    let user = page.control.store.update_user(&page.visitor.user.id, |u| {
        u.totp_secret = None;
        u.recovery_codes.clear();
    })?;
    let notice = Some("Two-factor login is off.");
    let (status, markup) = account_page(page, &user, None, notice)?;
    Ok(page.html(status, markup))
}
