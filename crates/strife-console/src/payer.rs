//! Login and the payer's pages: balances and the pay form, history, payment detail, refunds,
//! and capturing or voiding an authorization.

use std::fmt::Write;
use std::sync::Arc;

use axum::extract::{Path, Query, State};
use axum::http::header::{self, HeaderMap};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Redirect, Response};
use axum::{Extension, Form};
use serde::Deserialize;
use strife_common::layout::validate_name;
use strife_common::money;
use strife_common::net::listener::ConnectionHandle;
use strife_common::Failure;
use strife_gateway::roles::Role;
use strife_present::{money as show_money, status_name, timestamp};
use strife_proto::v1 as pb;

use crate::form::{accepted, bad_form, FormInput};
use crate::html::{self, csrf_field, escape, notice, payments_table, Page};
use crate::session::{
    cookie_value, random_token, set_cookie, tokens_match, Session, LOGIN_COOKIE, SESSION_COOKIE,
    SESSION_LIFETIME,
};
use crate::state::{call, Console, LoggedIn};

/// Payments per history page.
const HISTORY_PAGE: u32 = 20;
/// Recent payments on the home page.
const RECENT: u32 = 10;
/// How long a login form stays usable.
const LOGIN_FORM_LIFETIME: std::time::Duration = std::time::Duration::from_secs(15 * 60);

#[derive(Deserialize)]
pub struct LoginForm {
    #[serde(default)]
    username: String,
    #[serde(default)]
    password: String,
    #[serde(default)]
    csrf: String,
}

fn login_page(message: Option<&str>, status: StatusCode) -> Response {
    let token = random_token();
    let mut body = String::new();
    if let Some(message) = message {
        body.push_str(&notice("error", message));
    }
    let _ = write!(
        body,
        "<form method=\"post\" action=\"/login\" id=\"login\" class=\"card\">\
         <input type=\"hidden\" name=\"csrf\" value=\"{token}\">\
         <label>User name <input name=\"username\" autocomplete=\"username\" required></label>\
         <label>Password <input name=\"password\" type=\"password\" autocomplete=\"current-password\" required></label>\
         <button type=\"submit\">Log in</button></form>"
    );
    let mut response = Page::new("Log in", None, body)
        .with_status(status)
        .into_response();
    if let Ok(cookie) = set_cookie(LOGIN_COOKIE, &token, LOGIN_FORM_LIFETIME).parse() {
        response.headers_mut().append(header::SET_COOKIE, cookie);
    }
    response
}

fn cookie(headers: &HeaderMap, name: &str) -> Option<String> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|value| value.to_str().ok())
        .find_map(|cookies| cookie_value(cookies, name))
        .map(str::to_owned)
}

pub async fn login_form(State(console): State<Arc<Console>>, headers: HeaderMap) -> Response {
    if cookie(&headers, SESSION_COOKIE).is_some_and(|id| console.sessions.get(&id).is_some()) {
        return Redirect::to("/").into_response();
    }
    login_page(None, StatusCode::OK)
}

pub async fn login(
    State(console): State<Arc<Console>>,
    connection: Option<Extension<ConnectionHandle>>,
    headers: HeaderMap,
    form: FormInput<LoginForm>,
) -> Response {
    let Form(form) = match form {
        Ok(form) => form,
        Err(rejection) => return bad_form(None, &rejection),
    };
    // Double-submit: the form's token must equal the cookie set with the form.
    let expected = cookie(&headers, LOGIN_COOKIE).unwrap_or_default();
    if !tokens_match(&form.csrf, &expected) {
        return login_page(
            Some("The login form expired or did not come from this console. Please try again."),
            StatusCode::FORBIDDEN,
        );
    }
    // A name that cannot exist is refused before it reaches the lockout table.
    if validate_name("user", &form.username).is_err() || form.password.is_empty() {
        return login_page(
            Some("Wrong user name or password."),
            StatusCode::UNAUTHORIZED,
        );
    }
    // The listener puts the client's address on every request; without it the login could
    // not be throttled per address, so it is not attempted.
    let Some(client) = connection.map(|Extension(connection)| connection.peer_address()) else {
        tracing::error!("console login without a client address");
        return login_page(
            Some("The console cannot take logins right now."),
            StatusCode::INTERNAL_SERVER_ERROR,
        );
    };
    let caller = match console
        .authenticator
        .authenticate_console(&form.username, &form.password, client.ip())
        .await
    {
        Ok(caller) => caller,
        Err(failure) => {
            tracing::info!(
                username = %form.username,
                client = %client.ip(),
                reason = failure.reason(),
                "console login refused"
            );
            let message = match &failure {
                Failure::Unauthenticated => "Wrong user name or password.".to_owned(),
                Failure::ResourceExhausted(detail) if detail.contains("failed logins") => {
                    format!("Locked out: {detail}.")
                }
                Failure::ResourceExhausted(detail) => format!("Please wait: {detail}."),
                other => html::explain(other),
            };
            return login_page(Some(&message), html::http_status(&failure));
        }
    };
    let (id, session) = match console.sessions.open(&caller.username, caller.role) {
        Ok(opened) => opened,
        Err(failure) => {
            return login_page(
                Some(&html::explain(&failure)),
                StatusCode::TOO_MANY_REQUESTS,
            )
        }
    };
    tracing::info!(
        username = %session.username,
        role = session.role.as_str(),
        client = %client.ip(),
        "console login"
    );
    let target = if session.role == Role::Admin {
        "/ops/network"
    } else {
        "/"
    };
    let mut response = Redirect::to(target).into_response();
    for value in [
        set_cookie(SESSION_COOKIE, &id, SESSION_LIFETIME),
        set_cookie(LOGIN_COOKIE, "", std::time::Duration::ZERO),
    ] {
        if let Ok(value) = value.parse() {
            response.headers_mut().append(header::SET_COOKIE, value);
        }
    }
    response
}

#[derive(Deserialize)]
pub struct CsrfOnly {
    #[serde(default)]
    csrf: String,
}

pub async fn logout(
    State(console): State<Arc<Console>>,
    LoggedIn { session }: LoggedIn,
    headers: HeaderMap,
    form: FormInput<CsrfOnly>,
) -> Response {
    if let Err(refused) = accepted(&session, form, |form| &form.csrf) {
        return *refused;
    }
    if let Some(id) = cookie(&headers, SESSION_COOKIE) {
        console.sessions.close(&id);
    }
    tracing::info!(username = %session.username, "console logout");
    let mut response = Redirect::to("/login").into_response();
    if let Ok(value) = set_cookie(SESSION_COOKIE, "", std::time::Duration::ZERO).parse() {
        response.headers_mut().append(header::SET_COOKIE, value);
    }
    response
}

/// What the pay form is redrawn with after a refusal.
#[derive(Default)]
struct PayDraft {
    to: String,
    amount: String,
    memo: String,
}

fn balances_table(accounts: &[pb::AccountBalance]) -> String {
    if accounts.is_empty() {
        return "<p>No accounts linked to this user.</p>".into();
    }
    let mut rows = String::new();
    for account in accounts {
        let _ = write!(
            rows,
            "<tr><td>{}</td><td>{}</td><td class=\"num\">{}</td><td class=\"num\">{}</td><td class=\"num\">{}</td></tr>",
            escape(&account.bank_id),
            escape(&account.account_number),
            escape(&show_money(account.balance.as_ref())),
            escape(&show_money(account.held.as_ref())),
            escape(&show_money(account.available.as_ref())),
        );
    }
    format!(
        "<div class=\"scroll\"><table id=\"balances\"><thead><tr><th>Bank</th><th>Account</th><th>Balance</th>\
         <th>Held</th><th>Available</th></tr></thead><tbody>{rows}</tbody></table></div>"
    )
}

/// The pay form. Its idempotency key is fixed here, when the form is drawn: a double click
/// or a resubmit sends the same key, and `Pay` answers with the same payment.
fn pay_form(session: &Session, accounts: &[pb::AccountBalance], draft: &PayDraft) -> String {
    let mut options = String::new();
    for account in accounts {
        let currency = account
            .balance
            .as_ref()
            .map(|balance| balance.currency.as_str())
            .unwrap_or_default();
        let _ = write!(
            options,
            "<option value=\"{bank}\">{bank} · {number} ({currency})</option>",
            bank = escape(&account.bank_id),
            number = escape(&account.account_number),
            currency = escape(currency),
        );
    }
    format!(
        "<form method=\"post\" action=\"/pay\" id=\"pay\" class=\"card\">{csrf}\
         <input type=\"hidden\" name=\"idempotency_key\" value=\"{key}\">\
         <label>From <select name=\"from_bank_id\">{options}</select></label>\
         <label>To (user name) <input name=\"to\" required value=\"{to}\" autocomplete=\"off\"></label>\
         <label>Amount <input name=\"amount\" required inputmode=\"decimal\" placeholder=\"12.50\" value=\"{amount}\"></label>\
         <label>Memo <input name=\"memo\" value=\"{memo}\"></label>\
         <button type=\"submit\" id=\"pay-button\">Pay</button></form>",
        csrf = csrf_field(session),
        key = strife_common::keys::new_key(),
        to = escape(&draft.to),
        amount = escape(&draft.amount),
        memo = escape(&draft.memo),
    )
}

async fn home_page(
    console: &Console,
    session: &Session,
    message: Option<String>,
    status: StatusCode,
    draft: &PayDraft,
) -> Response {
    let balances = console
        .service
        .get_balances(&call(session), pb::GetBalancesRequest::default())
        .await;
    let accounts = match balances {
        Ok(response) => response.accounts,
        Err(failure) => return html::refusal_page("Home", Some(session), &failure),
    };
    let recent = console
        .service
        .list_history(
            &call(session),
            pb::ListHistoryRequest {
                page_size: RECENT,
                page_token: String::new(),
            },
        )
        .await
        .map(|response| response.payments)
        .unwrap_or_default();
    let mut body = String::new();
    if let Some(message) = message {
        body.push_str(&notice("error", &message));
    }
    let _ = write!(
        body,
        "<section><h2>Balances</h2>{}</section>\
         <section><h2>Pay</h2>{}</section>\
         <section><h2>Recent payments</h2>{}<p><a href=\"/history\">All history</a></p></section>",
        balances_table(&accounts),
        pay_form(session, &accounts, draft),
        payments_table(&recent, Some("/events")),
    );
    Page::new(&format!("Hello, {}", session.username), Some(session), body)
        .with_status(status)
        .into_response()
}

pub async fn home(State(console): State<Arc<Console>>, LoggedIn { session }: LoggedIn) -> Response {
    home_page(
        &console,
        &session,
        None,
        StatusCode::OK,
        &PayDraft::default(),
    )
    .await
}

#[derive(Deserialize)]
pub struct PayForm {
    #[serde(default)]
    csrf: String,
    #[serde(default)]
    idempotency_key: String,
    #[serde(default)]
    from_bank_id: String,
    #[serde(default)]
    to: String,
    #[serde(default)]
    amount: String,
    #[serde(default)]
    memo: String,
}

pub async fn pay(
    State(console): State<Arc<Console>>,
    LoggedIn { session }: LoggedIn,
    form: FormInput<PayForm>,
) -> Response {
    let form = match accepted(&session, form, |form| &form.csrf) {
        Ok(form) => form,
        Err(refused) => return *refused,
    };
    let draft = PayDraft {
        to: form.to.trim().to_owned(),
        amount: form.amount.clone(),
        memo: form.memo.clone(),
    };
    // The amount is typed in the paying account's currency, parsed as the CLI parses it.
    let balances = console
        .service
        .get_balances(&call(&session), pb::GetBalancesRequest::default())
        .await;
    let accounts = match balances {
        Ok(response) => response.accounts,
        Err(failure) => return html::refusal_page("Pay", Some(&session), &failure),
    };
    let Some(currency_code) = accounts
        .iter()
        .find(|account| account.bank_id == form.from_bank_id)
        .or(accounts.first())
        .and_then(|account| account.balance.as_ref())
        .map(|balance| balance.currency.clone())
    else {
        return home_page(
            &console,
            &session,
            Some("You have no account to pay from.".into()),
            StatusCode::UNPROCESSABLE_ENTITY,
            &draft,
        )
        .await;
    };
    let amount_minor = match money::currency(&currency_code)
        .map_err(|error| error.to_string())
        .and_then(|currency| {
            money::parse_amount(&form.amount, currency).map_err(|error| error.to_string())
        }) {
        Ok(amount_minor) => amount_minor,
        Err(problem) => {
            return home_page(
                &console,
                &session,
                Some(format!("Invalid amount: {problem}.")),
                StatusCode::BAD_REQUEST,
                &draft,
            )
            .await
        }
    };
    let body = pb::PayRequest {
        idempotency_key: form.idempotency_key.clone(),
        to_username: draft.to.clone(),
        amount: Some(pb::Money {
            amount_minor,
            currency: currency_code,
        }),
        from_bank_id: form.from_bank_id.clone(),
        to_bank_id: String::new(),
        memo: form.memo.clone(),
        metadata: Default::default(),
    };
    let paid = console.service.pay(&call(&session), body).await;
    match paid {
        // POST-redirect-GET: reloading the result page never pays again.
        Ok(payment) => Redirect::to(&format!("/payments/{}", payment.payment_id)).into_response(),
        Err(refusal) => {
            let mut message = match &refusal.failure {
                Failure::NotFound(detail) if detail.starts_with("user ") => {
                    format!("Unknown payee: {detail}.")
                }
                other => html::explain(other),
            };
            // A refused payment was recorded (then declined): name it.
            if let Some(payment_id) = &refusal.payment_id {
                let _ = write!(message, " (payment {payment_id})");
            }
            home_page(
                &console,
                &session,
                Some(message),
                html::http_status(&refusal.failure),
                &draft,
            )
            .await
        }
    }
}

#[derive(Deserialize)]
pub struct HistoryQuery {
    #[serde(default)]
    page: String,
}

pub async fn history(
    State(console): State<Arc<Console>>,
    LoggedIn { session }: LoggedIn,
    query: Result<Query<HistoryQuery>, axum::extract::rejection::QueryRejection>,
) -> Response {
    let page_token = query.map(|Query(query)| query.page).unwrap_or_default();
    let first_page = page_token.is_empty();
    let listed = console
        .service
        .list_history(
            &call(&session),
            pb::ListHistoryRequest {
                page_size: HISTORY_PAGE,
                page_token,
            },
        )
        .await;
    let page = match listed {
        Ok(page) => page,
        Err(failure) => return html::refusal_page("History", Some(&session), &failure),
    };
    let mut body = payments_table(&page.payments, first_page.then_some("/events"));
    body.push_str("<p class=\"paging\">");
    if !first_page {
        body.push_str("<a href=\"/history\">Newest</a> ");
    }
    if !page.next_page_token.is_empty() {
        let _ = write!(
            body,
            "<a href=\"/history?page={}\" id=\"older\">Older</a>",
            escape(&page.next_page_token)
        );
    }
    body.push_str("</p>");
    Page::new("History", Some(&session), body).into_response()
}

fn detail_row(label: &str, value: &str) -> String {
    format!("<tr><th>{}</th><td>{}</td></tr>", escape(label), value)
}

pub async fn payment(
    State(console): State<Arc<Console>>,
    LoggedIn { session }: LoggedIn,
    Path(payment_id): Path<String>,
) -> Response {
    let found = console
        .service
        .get_payment(
            &call(&session),
            pb::GetPaymentRequest {
                payment_id: payment_id.clone(),
            },
        )
        .await;
    let payment = match found {
        Ok(payment) => payment,
        Err(failure) => return html::refusal_page("Payment", Some(&session), &failure),
    };
    // Its refunds, newest first (one page: a payment refunded in more than 100 parts shows
    // the latest 100).
    let refunds = if payment.refund_of.is_empty() {
        let listed = console
            .service
            .list_refunds(
                &call(&session),
                pb::ListRefundsRequest {
                    payment_id: payment.payment_id.clone(),
                    page_size: 100,
                    page_token: String::new(),
                },
            )
            .await;
        match listed {
            Ok(listed) => listed.refunds,
            Err(failure) => return html::refusal_page("Payment", Some(&session), &failure),
        }
    } else {
        Vec::new()
    };
    payment_page(&session, &payment, &refunds, None, StatusCode::OK)
}

fn payment_page(
    session: &Session,
    payment: &pb::Payment,
    refunds: &[pb::Payment],
    message: Option<String>,
    status: StatusCode,
) -> Response {
    let mut body = String::new();
    if let Some(message) = message {
        body.push_str(&notice("error", &message));
    }
    let state = status_name(payment.status);
    let mut rows = String::new();
    rows.push_str(&detail_row("Payment", &escape(&payment.payment_id)));
    rows.push_str(&detail_row(
        "Status",
        &format!(
            "<span id=\"status\" class=\"status {}\">{state}</span>",
            state.to_lowercase()
        ),
    ));
    if !payment.reason.is_empty() || !payment.reason_code.is_empty() {
        rows.push_str(&detail_row(
            "Reason",
            &format!(
                "{} <code>{}</code>",
                escape(&payment.reason),
                escape(&payment.reason_code)
            ),
        ));
    }
    rows.push_str(&detail_row(
        "From",
        &format!(
            "{} ({} · {})",
            escape(&payment.from_username),
            escape(&payment.from_bank_id),
            escape(&payment.from_account)
        ),
    ));
    rows.push_str(&detail_row(
        "To",
        &format!(
            "{} ({} · {})",
            escape(&payment.to_username),
            escape(&payment.to_bank_id),
            escape(&payment.to_account)
        ),
    ));
    rows.push_str(&detail_row(
        "Amount",
        &format!(
            "<span id=\"amount\">{}</span>",
            escape(&show_money(payment.amount.as_ref()))
        ),
    ));
    if payment.refunded.is_some() {
        rows.push_str(&detail_row(
            "Refunded",
            &escape(&show_money(payment.refunded.as_ref())),
        ));
    }
    if !payment.refund_of.is_empty() {
        rows.push_str(&detail_row(
            "Refund of",
            &format!(
                "<a href=\"/payments/{id}\">{id}</a>",
                id = escape(&payment.refund_of)
            ),
        ));
    }
    rows.push_str(&detail_row("Memo", &escape(&payment.memo)));
    // Ordered by key, as stored (the message's map has no order of its own).
    let metadata: std::collections::BTreeMap<&String, &String> = payment.metadata.iter().collect();
    for (key, value) in metadata {
        rows.push_str(&detail_row(
            &format!("Metadata {key}"),
            &format!("<span class=\"metadata\">{}</span>", escape(value)),
        ));
    }
    rows.push_str(&detail_row(
        "Created (UTC)",
        &timestamp(payment.created_unix_ms),
    ));
    rows.push_str(&detail_row(
        "Decided (UTC)",
        &timestamp(payment.decided_unix_ms),
    ));
    rows.push_str(&detail_row(
        "Idempotency key",
        &escape(&payment.idempotency_key),
    ));
    if payment.expires_unix_ms != 0 {
        let left_ms = payment.expires_unix_ms - strife_common::time::now_unix_ms();
        let left = if payment.status == pb::PaymentStatus::Authorized as i32 && left_ms > 0 {
            format!(
                " <span id=\"time-left\">({} s left)</span>",
                left_ms / 1_000
            )
        } else {
            String::new()
        };
        rows.push_str(&detail_row(
            "Authorization expires (UTC)",
            &format!("{}{left}", timestamp(payment.expires_unix_ms)),
        ));
    }
    let _ = write!(
        body,
        "<div class=\"scroll\"><table class=\"detail\">{rows}</table></div>"
    );
    if !refunds.is_empty() {
        body.push_str("<h2>Refunds</h2><div class=\"scroll\"><table id=\"refunds\"><tr><th>When (UTC)</th><th>Amount</th><th>Status</th><th>Refund</th></tr>");
        for refund in refunds {
            let _ = write!(
                body,
                "<tr><td>{when}</td><td>{amount}</td><td>{state}</td><td><a href=\"/payments/{id}\">{id}</a></td></tr>",
                when = timestamp(refund.created_unix_ms),
                amount = escape(&show_money(refund.amount.as_ref())),
                state = status_name(refund.status),
                id = escape(&refund.payment_id),
            );
        }
        body.push_str("</table></div>");
    }
    // The payee (or the admin) may refund a committed payment that is not itself a refund.
    let may_refund = (payment.to_username == session.username || session.role == Role::Admin)
        && payment.status == pb::PaymentStatus::Committed as i32
        && payment.refund_of.is_empty();
    if may_refund {
        let _ = write!(
            body,
            "<h2>Refund</h2><form method=\"post\" action=\"/payments/{id}/refund\" id=\"refund\" class=\"card\">{csrf}\
             <input type=\"hidden\" name=\"idempotency_key\" value=\"{key}\">\
             <label>Amount (empty: the rest) <input name=\"amount\" inputmode=\"decimal\"></label>\
             <label>Reason <input name=\"reason\"></label>\
             <button type=\"submit\">Refund</button></form>",
            id = escape(&payment.payment_id),
            csrf = csrf_field(session),
            key = strife_common::keys::new_key(),
        );
    }
    if payment.status == pb::PaymentStatus::Authorized as i32 {
        // Capture: the payee or the admin; void: the payer too (docs/SPEC.md §4).
        let is_admin = session.role == Role::Admin;
        let is_payee = payment.to_username == session.username;
        let id = escape(&payment.payment_id);
        let csrf = csrf_field(session);
        body.push_str("<h2>Authorization</h2><div class=\"card\">");
        if is_admin || is_payee {
            let _ = write!(
                body,
                "<form method=\"post\" action=\"/payments/{id}/capture\" id=\"capture\">{csrf}\
                 <button type=\"submit\">Capture</button></form>"
            );
        }
        let _ = write!(
            body,
            "<form method=\"post\" action=\"/payments/{id}/void\" id=\"void\">{csrf}\
             <button type=\"submit\">Void (release the hold)</button></form></div>"
        );
    }
    body.push_str("<p><a href=\"/history\">Back to history</a></p>");
    Page::new("Payment", Some(session), body)
        .with_status(status)
        .into_response()
}

#[derive(Deserialize)]
pub struct RefundForm {
    #[serde(default)]
    csrf: String,
    #[serde(default)]
    idempotency_key: String,
    #[serde(default)]
    amount: String,
    #[serde(default)]
    reason: String,
}

pub async fn refund(
    State(console): State<Arc<Console>>,
    LoggedIn { session }: LoggedIn,
    Path(payment_id): Path<String>,
    form: FormInput<RefundForm>,
) -> Response {
    let form = match accepted(&session, form, |form| &form.csrf) {
        Ok(form) => form,
        Err(refused) => return *refused,
    };
    let original = console
        .service
        .get_payment(
            &call(&session),
            pb::GetPaymentRequest {
                payment_id: payment_id.clone(),
            },
        )
        .await;
    let original = match original {
        Ok(payment) => payment,
        Err(failure) => return html::refusal_page("Refund", Some(&session), &failure),
    };
    let amount = if form.amount.trim().is_empty() {
        None
    } else {
        let currency_code = original
            .amount
            .as_ref()
            .map(|amount| amount.currency.clone())
            .unwrap_or_default();
        let parsed = money::currency(&currency_code)
            .map_err(|error| error.to_string())
            .and_then(|currency| {
                money::parse_amount(&form.amount, currency).map_err(|error| error.to_string())
            });
        match parsed {
            Ok(amount_minor) => Some(pb::Money {
                amount_minor,
                currency: currency_code,
            }),
            Err(problem) => {
                return payment_page(
                    &session,
                    &original,
                    &[],
                    Some(format!("Invalid amount: {problem}.")),
                    StatusCode::BAD_REQUEST,
                )
            }
        }
    };
    let refunded = console
        .service
        .refund(
            &call(&session),
            pb::RefundRequest {
                payment_id,
                amount,
                idempotency_key: form.idempotency_key,
                reason: form.reason,
                metadata: Default::default(),
            },
        )
        .await;
    match refunded {
        Ok(refund) => Redirect::to(&format!("/payments/{}", refund.payment_id)).into_response(),
        Err(refusal) => payment_page(
            &session,
            &original,
            &[],
            Some(html::explain(&refusal.failure)),
            html::http_status(&refusal.failure),
        ),
    }
}

#[derive(Deserialize)]
pub struct EndAuthorizationForm {
    #[serde(default)]
    csrf: String,
}

pub async fn capture(
    State(console): State<Arc<Console>>,
    LoggedIn { session }: LoggedIn,
    Path(payment_id): Path<String>,
    form: FormInput<EndAuthorizationForm>,
) -> Response {
    end_authorization(&console, session, payment_id, form, true).await
}

pub async fn void(
    State(console): State<Arc<Console>>,
    LoggedIn { session }: LoggedIn,
    Path(payment_id): Path<String>,
    form: FormInput<EndAuthorizationForm>,
) -> Response {
    end_authorization(&console, session, payment_id, form, false).await
}

/// Capture or void from the payment page; the page again, with the outcome or the refusal.
async fn end_authorization(
    console: &Console,
    session: Session,
    payment_id: String,
    form: FormInput<EndAuthorizationForm>,
    capture: bool,
) -> Response {
    if let Err(refused) = accepted(&session, form, |form| &form.csrf) {
        return *refused;
    }
    let caller = call(&session);
    let ended = if capture {
        // The console captures the whole amount (the API and the CLI also capture part).
        let request = pb::CaptureRequest {
            payment_id: payment_id.clone(),
            amount: None,
        };
        console.service.capture(&caller, request).await
    } else {
        let request = pb::VoidRequest {
            payment_id: payment_id.clone(),
        };
        console.service.void(&caller, request).await
    };
    match ended {
        Ok(payment) => Redirect::to(&format!("/payments/{}", payment.payment_id)).into_response(),
        Err(refusal) => {
            let current = console
                .service
                .get_payment(&caller, pb::GetPaymentRequest { payment_id })
                .await;
            match current {
                Ok(payment) => payment_page(
                    &session,
                    &payment,
                    &[],
                    Some(html::explain(&refusal.failure)),
                    html::http_status(&refusal.failure),
                ),
                Err(failure) => html::refusal_page("Payment", Some(&session), &failure),
            }
        }
    }
}
