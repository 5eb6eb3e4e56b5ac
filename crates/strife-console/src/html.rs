//! HTML building blocks: escaping (every string that did not come from this file goes
//! through [`escape`]), the page frame, and money, times and statuses shown exactly as the
//! CLI shows them (`strife_present`).

use std::fmt::Write;

use axum::http::StatusCode;
use axum::response::{Html, IntoResponse, Response};
use strife_common::Failure;
use strife_gateway::roles::Role;
use strife_present::{money, status_name, timestamp};
use strife_proto::v1 as pb;

use crate::session::Session;

/// Escapes text for HTML element content and quoted attribute values.
pub fn escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for character in text.chars() {
        match character {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            other => out.push(other),
        }
    }
    out
}

/// The sentence for a refusal, worded as everywhere (`strife_present`: the CLI says the same
/// words) and set as a sentence on the page: capital first letter, closing full stop. Never
/// an internal error's detail (the service's failures carry it only to the server log).
pub fn explain(failure: &Failure) -> String {
    sentence(&strife_present::refusal_for(failure))
}

/// `text` with a capital first letter and a closing full stop.
pub fn sentence(text: &str) -> String {
    let mut characters = text.chars();
    let mut out: String = match characters.next() {
        Some(first) => first.to_uppercase().chain(characters).collect(),
        None => String::new(),
    };
    if !out.ends_with(['.', '!', '?']) {
        out.push('.');
    }
    out
}

/// The HTTP status a refusal is shown with (`Failure::http_status`, one table for every web
/// transport).
pub fn http_status(failure: &Failure) -> StatusCode {
    StatusCode::from_u16(failure.http_status()).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR)
}

/// A message box: `error` or `ok`.
pub fn notice(kind: &str, text: &str) -> String {
    format!(
        "<p class=\"notice {kind}\" role=\"alert\" id=\"notice\">{}</p>",
        escape(text)
    )
}

/// The CSRF hidden field every form carries.
pub fn csrf_field(session: &Session) -> String {
    format!(
        "<input type=\"hidden\" name=\"csrf\" value=\"{}\">",
        escape(&session.csrf)
    )
}

/// One page: frame, navigation for the session's role, and `body`.
pub struct Page<'a> {
    pub title: &'a str,
    pub session: Option<&'a Session>,
    pub body: String,
    pub status: StatusCode,
}

impl<'a> Page<'a> {
    pub fn new(title: &'a str, session: Option<&'a Session>, body: String) -> Self {
        Page {
            title,
            session,
            body,
            status: StatusCode::OK,
        }
    }

    pub fn with_status(mut self, status: StatusCode) -> Self {
        self.status = status;
        self
    }
}

impl IntoResponse for Page<'_> {
    fn into_response(self) -> Response {
        let mut nav = String::new();
        if let Some(session) = self.session {
            nav.push_str(
                "<nav><a href=\"/\">Home</a> <a href=\"/history\">History</a> <a href=\"/keys\">API keys</a>",
            );
            if session.role == Role::Admin {
                nav.push_str(
                    " <a href=\"/ops/network\">Network</a> <a href=\"/ops/payments\">Payments</a> \
                     <a href=\"/ops/settlement\">Settlement</a> <a href=\"/ops/users\">Users</a>",
                );
            }
            let _ = write!(
                nav,
                " <form method=\"post\" action=\"/logout\" class=\"inline\">{}\
                 <button type=\"submit\" id=\"logout\">Log out {}</button></form></nav>",
                csrf_field(session),
                escape(&session.username)
            );
        }
        let page = format!(
            "<!doctype html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">\
             <meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\
             <title>{title} · Strife</title><link rel=\"stylesheet\" href=\"/static/console.css\">\
             <script src=\"/static/console.js\" defer></script></head>\
             <body><header><strong>Strife</strong> {nav}</header><main><h1>{title}</h1>{body}</main></body></html>\n",
            title = escape(self.title),
            body = self.body,
        );
        (self.status, Html(page)).into_response()
    }
}

/// An error page for a refusal.
pub fn refusal_page(title: &str, session: Option<&Session>, failure: &Failure) -> Response {
    Page::new(title, session, notice("error", &explain(failure)))
        .with_status(http_status(failure))
        .into_response()
}

/// Rows of payments (the history and the live feed share them; `console.js` builds the same
/// cells for payments that arrive live).
pub fn payment_rows(payments: &[pb::Payment]) -> String {
    let mut rows = String::new();
    for payment in payments {
        let _ = write!(
            rows,
            "<tr id=\"p-{id}\"><td><a href=\"/payments/{id}\">{short}</a></td><td>{when}</td>\
             <td>{from}</td><td>{to}</td><td class=\"num\">{amount}</td><td>{status}</td><td>{reason}</td></tr>",
            id = escape(&payment.payment_id),
            short = escape(payment.payment_id.get(..8).unwrap_or(&payment.payment_id)),
            when = timestamp(payment.created_unix_ms),
            from = escape(&payment.from_username),
            to = escape(&payment.to_username),
            amount = escape(&money(payment.amount.as_ref())),
            status = status_name(payment.status),
            reason = escape(&payment.reason),
        );
    }
    rows
}

/// A payments table; `live` names the event stream that adds rows without a reload.
pub fn payments_table(payments: &[pb::Payment], live: Option<&str>) -> String {
    let live = live
        .map(|url| format!(" data-live=\"{}\"", escape(url)))
        .unwrap_or_default();
    let empty = if payments.is_empty() {
        "<p id=\"no-payments\">No payments yet.</p>"
    } else {
        ""
    };
    format!(
        "<div class=\"scroll\"><table id=\"payments\"{live}><thead><tr><th>Payment</th><th>Created (UTC)</th>\
         <th>From</th><th>To</th><th>Amount</th><th>Status</th><th>Reason</th></tr></thead>\
         <tbody>{}</tbody></table></div>{empty}",
        payment_rows(payments)
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escaping_covers_markup_and_quotes() {
        assert_eq!(
            escape("<script>\"x\" & 'y'</script>"),
            "&lt;script&gt;&quot;x&quot; &amp; &#39;y&#39;&lt;/script&gt;"
        );
    }

    #[test]
    fn money_is_shown_as_the_cli_shows_it() {
        let usd = pb::Money {
            amount_minor: 1250,
            currency: "USD".into(),
        };
        assert_eq!(money(Some(&usd)), "12.50 USD");
        assert_eq!(money(None), "-");
    }

    #[test]
    fn refusals_read_as_sentences() {
        let declined =
            Failure::precondition(strife_common::reason::INSUFFICIENT_FUNDS, "balance too low");
        assert_eq!(explain(&declined), "Payment declined: balance too low.");
        assert_eq!(http_status(&declined), StatusCode::UNPROCESSABLE_ENTITY);
        let internal = Failure::internal("store", "/var/lib/secret.db: disk I/O error");
        assert!(
            !explain(&internal).contains("secret"),
            "{}",
            explain(&internal)
        );
    }
}
