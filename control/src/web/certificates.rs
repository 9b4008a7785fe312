//! Certificates: the list with the hostnames still waiting for one, uploading one, asking
//! for another attempt now. The page is [`crate::pages::certificates`].

use super::{redirect, text, Form, Page};
use crate::auth;
use crate::error::Error;
use crate::model::{CertRecord, Issuer};
use crate::pages;
use crate::routes::{FormResult, PageResult};

/// The list; `upload_error` is why an upload was refused.
fn certificates_page(page: &Page, upload_error: Option<&str>) -> PageResult {
    let state = page.state()?;
    let mut certificates: Vec<&CertRecord> = state.certificates.iter().collect();
    certificates.sort_by(|a, b| a.hostname.as_str().cmp(b.hostname.as_str()));
    let missing: Vec<(String, Issuer)> = crate::model::hostnames_without_certificate(&state)
        .into_iter()
        .map(|(hostname, issuer)| (hostname.to_string(), issuer))
        .collect();
    let (user, csrf) = page.who();
    let listed = pages::certificates::page(
        user,
        csrf,
        (&certificates, &missing),
        upload_error,
        auth::unix_now(),
    );
    Ok((if upload_error.is_some() { 400 } else { 200 }, listed))
}

pub fn list(page: &Page) -> PageResult {
    certificates_page(page, None)
}

pub fn upload(page: &Page, form: &Form) -> FormResult {
    let stored = text(form, "hostname")
        .trim()
        .parse()
        .map_err(|e: kakuremichi_proto::ProtoError| Error::invalid("hostname", e.to_string()))
        .and_then(|hostname| {
            crate::api::certificates::store_manual(
                &page.control,
                hostname,
                text(form, "certificate_pem").to_string(),
                text(form, "key_pem").to_string(),
            )
        });
    match stored {
        Ok(_) => Ok(redirect("/certificates")),
        Err(e) if e.field().is_some() => {
            let (status, markup) = certificates_page(page, Some(&e.reason()))?;
            Ok(page.html(status, markup))
        }
        Err(e) => Err(e),
    }
}

pub fn retry(page: &Page, _: &Form) -> FormResult {
    page.control
        .store
        .retry_certificate(page.param("hostname"))?;
    Ok(redirect("/certificates"))
}
