//! Posted forms: read, or refused with a page — unreadable (400) or without this session's
//! CSRF token (403). Every POST handler starts here.

use axum::extract::rejection::FormRejection;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Form;

use crate::html::{notice, Page};
use crate::session::Session;
use crate::state::csrf_refusal;

/// A form body, or a page saying it was not one.
pub type FormInput<T> = Result<Form<T>, FormRejection>;

/// The posted form, or the page refusing it: unreadable (400) or without this session's CSRF
/// token (403). Every POST handler starts here.
pub fn accepted<T>(
    session: &Session,
    form: FormInput<T>,
    csrf: impl Fn(&T) -> &String,
) -> Result<T, Box<Response>> {
    let Form(form) = form.map_err(|rejection| Box::new(bad_form(Some(session), &rejection)))?;
    match csrf_refusal(session, csrf(&form)) {
        Some(refused) => Err(Box::new(refused)),
        None => Ok(form),
    }
}

pub fn bad_form(session: Option<&Session>, rejection: &FormRejection) -> Response {
    tracing::debug!(%rejection, "console form rejected");
    Page::new(
        "Bad request",
        session,
        notice(
            "error",
            "The form could not be read. Reload the page and try again.",
        ),
    )
    .with_status(StatusCode::BAD_REQUEST)
    .into_response()
}
