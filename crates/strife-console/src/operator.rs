//! The operator's pages (admin only): the network, the live payments feed, settlement with
//! its chart, and users and accounts. Every action is the admin gRPC method of the same name.

use std::fmt::Write;
use std::sync::Arc;

use axum::extract::rejection::PathRejection;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Redirect, Response};
use serde::Deserialize;
use strife_common::money;
use strife_common::Failure;
use strife_proto::v1 as pb;

use strife_present::{money as show_money, timestamp};

use crate::form::{accepted, FormInput};
use crate::html::{self, csrf_field, escape, notice, payments_table, Page};
use crate::session::Session;
use crate::state::{call, Console, Operator};

pub async fn network(
    State(console): State<Arc<Console>>,
    Operator { session }: Operator,
) -> Response {
    let view = match console.service.network_view(&call(&session)).await {
        Ok(view) => view,
        Err(failure) => return html::refusal_page("Network", Some(&session), &failure),
    };
    let scan_note = match &view.legs_unknown {
        None => String::new(),
        Some(failure) => {
            tracing::warn!(%failure, "console: cannot read unfinished payments");
            notice(
                "error",
                "Legs in doubt could not be read from the store just now.",
            )
        }
    };
    let mut rows = String::new();
    for bank in &view.banks {
        let (prepares, latency, error_rate) = if bank.prepares > 0 {
            (
                bank.prepares.to_string(),
                format!("{:.1} ms", bank.mean_prepare_latency.as_secs_f64() * 1000.0),
                format!("{:.1} %", bank.failed as f64 * 100.0 / bank.prepares as f64),
            )
        } else {
            ("0".into(), "-".into(), "-".into())
        };
        let _ = write!(
            rows,
            "<tr id=\"bank-{id}\"><td>{id}</td><td><span class=\"state {class}\">{state}</span></td>\
             <td class=\"num\">{prepares}</td><td class=\"num\">{latency}</td><td class=\"num\">{error_rate}</td>\
             <td class=\"num\">{doubt}</td></tr>",
            id = escape(&bank.bank_id),
            class = if bank.up { "up" } else { "down" },
            state = if bank.up { "up" } else { "down" },
            doubt = bank.legs_in_doubt,
        );
    }
    let body = format!(
        "{scan_note}<p>Up/down is the bank's registration in etcd, as this gateway follows it. Prepare \
         latency and error rate (NO votes, timeouts, failures) count since this gateway started. \
         Reload to update.</p>\
         <div class=\"scroll\"><table id=\"banks\"><thead><tr><th>Bank</th><th>State</th><th>Prepares</th>\
         <th>Mean prepare latency</th><th>Error rate</th><th>Legs in doubt</th></tr></thead><tbody>{rows}</tbody></table></div>\
         <p>Payments in doubt (phase-2 retrier): {}</p>",
        view.payments_in_doubt
    );
    Page::new("Network", Some(&session), body).into_response()
}

pub async fn payments(Operator { session }: Operator) -> Response {
    let body = format!(
        "<p>Every payment decided from now on appears here as it is decided.</p>{}",
        payments_table(&[], Some("/events"))
    );
    Page::new("Live payments", Some(&session), body).into_response()
}

/// Calls an admin method, answering the refusal page on failure.
macro_rules! admin_call {
    ($console:expr, $session:expr, $title:expr, $method:ident, $body:expr) => {
        match $console.service.$method(&call($session), $body).await {
            Ok(response) => response,
            Err(failure) => return html::refusal_page($title, Some($session), &failure),
        }
    };
}

/// Minor units of an optional money value (0 when absent).
fn minor(value: Option<&pb::Money>) -> i64 {
    value.map_or(0, |value| value.amount_minor)
}

/// One bar per bank and currency: the position (right of the axis: the bank owes; left: it
/// is owed), its reservations stacked on it, and the cap as a line. Server-drawn SVG.
pub fn positions_chart(positions: &[pb::BankPosition]) -> String {
    const WIDTH: i64 = 640;
    const ROW: i64 = 56;
    const AXIS: i64 = 320;
    const HALF: i64 = 300;
    if positions.is_empty() {
        return "<p>No positions yet: no cross-bank payment in an unsettled window.</p>".into();
    }
    let scale_minor = positions
        .iter()
        .map(|position| {
            let used =
                minor(position.position.as_ref()).saturating_add(minor(position.reserved.as_ref()));
            used.unsigned_abs()
                .max(minor(position.position.as_ref()).unsigned_abs())
                .max(minor(position.cap.as_ref()).unsigned_abs())
        })
        .max()
        .unwrap_or(1)
        .max(1);
    let x_of = |value: i64| -> i64 {
        let offset = (value as f64 / scale_minor as f64 * HALF as f64).round() as i64;
        AXIS + offset.clamp(-HALF, HALF)
    };
    let height = ROW * positions.len() as i64 + 24;
    let mut svg = format!(
        "<svg id=\"positions-chart\" viewBox=\"0 0 {WIDTH} {height}\" width=\"100%\" role=\"img\" \
         aria-label=\"Net positions per bank against their caps\" xmlns=\"http://www.w3.org/2000/svg\">\
         <line x1=\"{AXIS}\" y1=\"0\" x2=\"{AXIS}\" y2=\"{height}\" stroke=\"#555\" stroke-width=\"1\"/>\
         <text x=\"{}\" y=\"{}\" font-size=\"11\" fill=\"#555\" text-anchor=\"end\">← owed to the bank</text>\
         <text x=\"{}\" y=\"{}\" font-size=\"11\" fill=\"#555\">the bank owes →</text>",
        AXIS - 6,
        height - 6,
        AXIS + 6,
        height - 6,
    );
    for (index, position) in positions.iter().enumerate() {
        let top = ROW * index as i64 + 4;
        let value = minor(position.position.as_ref());
        let reserved = minor(position.reserved.as_ref());
        let (left, right) = if value >= 0 {
            (AXIS, x_of(value))
        } else {
            (x_of(value), AXIS)
        };
        let fill = if value > 0 { "#c0392b" } else { "#27ae60" };
        let _ = write!(
            svg,
            "<g class=\"bank\" data-bank=\"{bank}\"><rect class=\"position\" x=\"{left}\" y=\"{y}\" width=\"{w}\" height=\"18\" fill=\"{fill}\"/>",
            bank = escape(&position.bank_id),
            y = top + 16,
            w = (right - left).max(1),
        );
        if reserved > 0 {
            let start = x_of(value.max(0));
            let end = x_of(value.max(0).saturating_add(reserved));
            let _ = write!(
                svg,
                "<rect class=\"reserved\" x=\"{start}\" y=\"{}\" width=\"{}\" height=\"18\" fill=\"#e67e22\" opacity=\"0.6\"/>",
                top + 16,
                (end - start).max(1)
            );
        }
        let cap_text = match &position.cap {
            Some(cap) => {
                let cap_x = x_of(cap.amount_minor);
                let _ = write!(
                    svg,
                    "<line class=\"cap\" x1=\"{cap_x}\" y1=\"{}\" x2=\"{cap_x}\" y2=\"{}\" stroke=\"#222\" stroke-width=\"3\"/>",
                    top + 10,
                    top + 40
                );
                let used = value.saturating_add(reserved).max(0);
                let percent = if cap.amount_minor > 0 {
                    format!("{:.0} %", used as f64 * 100.0 / cap.amount_minor as f64)
                } else {
                    "—".into()
                };
                format!(" · cap {} ({percent} used)", show_money(Some(cap)))
            }
            None => " · no cap".into(),
        };
        let _ = write!(
            svg,
            "<text x=\"4\" y=\"{}\" font-size=\"12\" fill=\"#111\">{} {}: {}{}</text></g>",
            top + 12,
            escape(&position.bank_id),
            escape(
                &position
                    .position
                    .as_ref()
                    .map(|money| money.currency.clone())
                    .unwrap_or_default()
            ),
            escape(&show_money(position.position.as_ref())),
            escape(&cap_text),
        );
    }
    svg.push_str("</svg>");
    svg
}

fn window_state(state: i32) -> &'static str {
    match pb::SettlementWindowState::try_from(state) {
        Ok(pb::SettlementWindowState::Open) => "OPEN",
        Ok(pb::SettlementWindowState::Closed) => "CLOSED",
        Ok(pb::SettlementWindowState::Settled) => "SETTLED",
        _ => "UNKNOWN",
    }
}

async fn settlement_page(
    console: &Console,
    session: &Session,
    message: Option<(&str, String)>,
    status: StatusCode,
) -> Response {
    let positions = admin_call!(
        console,
        session,
        "Settlement",
        get_positions,
        pb::GetPositionsRequest {}
    )
    .positions;
    let windows = admin_call!(
        console,
        session,
        "Settlement",
        list_settlement_windows,
        pb::ListSettlementWindowsRequest {
            page_size: 20,
            page_token: String::new(),
        }
    )
    .windows;
    let mut body = String::new();
    if let Some((kind, text)) = message {
        body.push_str(&notice(kind, &text));
    }
    body.push_str("<section><h2>Open window: positions</h2>");
    body.push_str(&positions_chart(&positions));
    let mut rows = String::new();
    for position in &positions {
        let _ = write!(
            rows,
            "<tr><td>{}</td><td class=\"num\">{}</td><td class=\"num\">{}</td><td class=\"num\">{}</td><td class=\"num\">{}</td></tr>",
            escape(&position.bank_id),
            escape(&show_money(position.position.as_ref())),
            escape(&show_money(position.reserved.as_ref())),
            escape(&show_money(position.cap.as_ref())),
            escape(&show_money(position.headroom.as_ref())),
        );
    }
    let _ = write!(
        body,
        "<div class=\"scroll\"><table id=\"positions\"><thead><tr><th>Bank</th><th>Position</th><th>Reserved</th>\
         <th>Cap</th><th>Headroom</th></tr></thead><tbody>{rows}</tbody></table></div></section>"
    );
    let open = windows
        .iter()
        .find(|window| window.state == pb::SettlementWindowState::Open as i32);
    if let Some(open) = open {
        let _ = write!(
            body,
            "<section><h2>Close the open window</h2><form method=\"post\" action=\"/ops/settlement/close\" id=\"close-window\" class=\"card\">{}\
             <input type=\"hidden\" name=\"window_id\" value=\"{}\"><p>Window {} has been open since {} UTC.</p>\
             <button type=\"submit\">Close window {}</button></form></section>",
            csrf_field(session),
            open.window_id,
            open.window_id,
            timestamp(open.opened_unix_ms),
            open.window_id
        );
    }
    let _ = write!(
        body,
        "<section><h2>Net debit caps</h2><form method=\"post\" action=\"/ops/settlement/cap\" id=\"cap\" class=\"card\">{}\
         <label>Bank <input name=\"bank_id\" required></label>\
         <label>Currency <input name=\"currency\" value=\"USD\" required></label>\
         <label>Cap (empty: no cap) <input name=\"cap\" inputmode=\"decimal\"></label>\
         <button type=\"submit\">Set cap</button></form></section>",
        csrf_field(session)
    );
    let mut window_rows = String::new();
    for window in &windows {
        let _ = write!(
            window_rows,
            "<tr><td><a href=\"/ops/windows/{id}\">{id}</a></td><td>{state}</td><td>{opened}</td><td>{closed}</td><td>{settled}</td></tr>",
            id = window.window_id,
            state = window_state(window.state),
            opened = timestamp(window.opened_unix_ms),
            closed = timestamp(window.closed_unix_ms),
            settled = timestamp(window.settled_unix_ms),
        );
    }
    let _ = write!(
        body,
        "<section><h2>Windows</h2><div class=\"scroll\"><table id=\"windows\"><thead><tr><th>Window</th><th>State</th>\
         <th>Opened (UTC)</th><th>Closed</th><th>Settled</th></tr></thead><tbody>{window_rows}</tbody></table></div></section>"
    );
    Page::new("Settlement", Some(session), body)
        .with_status(status)
        .into_response()
}

pub async fn settlement(
    State(console): State<Arc<Console>>,
    Operator { session }: Operator,
) -> Response {
    settlement_page(&console, &session, None, StatusCode::OK).await
}

#[derive(Deserialize)]
pub struct CloseForm {
    #[serde(default)]
    csrf: String,
    #[serde(default)]
    window_id: u64,
}

pub async fn close_window(
    State(console): State<Arc<Console>>,
    Operator { session }: Operator,
    form: FormInput<CloseForm>,
) -> Response {
    let form = match accepted(&session, form, |form| &form.csrf) {
        Ok(form) => form,
        Err(refused) => return *refused,
    };
    // The window drawn on the page: a second click (or a stale page) cannot close the next.
    let report = admin_call!(
        console,
        &session,
        "Settlement",
        close_settlement_window,
        pb::CloseSettlementWindowRequest {
            window_id: form.window_id,
        }
    );
    let closed = report
        .window
        .map_or(form.window_id, |window| window.window_id);
    Redirect::to(&format!("/ops/windows/{closed}")).into_response()
}

#[derive(Deserialize)]
pub struct CapForm {
    #[serde(default)]
    csrf: String,
    #[serde(default)]
    bank_id: String,
    #[serde(default)]
    currency: String,
    #[serde(default)]
    cap: String,
}

pub async fn set_cap(
    State(console): State<Arc<Console>>,
    Operator { session }: Operator,
    form: FormInput<CapForm>,
) -> Response {
    let form = match accepted(&session, form, |form| &form.csrf) {
        Ok(form) => form,
        Err(refused) => return *refused,
    };
    let currency_code = form.currency.trim().to_uppercase();
    let cap_minor = if form.cap.trim().is_empty() {
        None
    } else {
        let parsed = money::currency(&currency_code)
            .map_err(|error| error.to_string())
            .and_then(|currency| {
                money::parse_amount_allow_zero(&form.cap, currency)
                    .map_err(|error| error.to_string())
            });
        match parsed {
            Ok(cap) => Some(cap),
            Err(problem) => {
                return settlement_page(
                    &console,
                    &session,
                    Some(("error", format!("Invalid cap: {problem}."))),
                    StatusCode::BAD_REQUEST,
                )
                .await
            }
        }
    };
    let result = console
        .service
        .set_net_debit_cap(
            &call(&session),
            pb::SetNetDebitCapRequest {
                bank_id: form.bank_id.trim().to_owned(),
                currency: currency_code,
                cap_minor,
            },
        )
        .await;
    match result {
        Ok(position) => {
            let text = match &position.cap {
                Some(cap) => format!(
                    "Cap of {} set to {}.",
                    position.bank_id,
                    show_money(Some(cap))
                ),
                None => format!("Cap of {} removed.", position.bank_id),
            };
            settlement_page(&console, &session, Some(("ok", text)), StatusCode::OK).await
        }
        Err(failure) => {
            settlement_page(
                &console,
                &session,
                Some(("error", html::explain(&failure))),
                html::http_status(&failure),
            )
            .await
        }
    }
}

/// The page for a window id in the path that is not a number.
fn no_such_window(session: &Session) -> Response {
    Page::new(
        "Settlement window",
        Some(session),
        notice("error", "There is no such settlement window."),
    )
    .with_status(StatusCode::NOT_FOUND)
    .into_response()
}

pub async fn window_report(
    State(console): State<Arc<Console>>,
    Operator { session }: Operator,
    path: Result<Path<u64>, PathRejection>,
) -> Response {
    let Ok(Path(window_id)) = path else {
        return no_such_window(&session);
    };
    let report = admin_call!(
        console,
        &session,
        "Settlement report",
        get_settlement_report,
        pb::GetSettlementReportRequest { window_id }
    );
    let window = report.window.unwrap_or_default();
    let mut body = format!(
        "<p>Window {} is <strong id=\"window-state\">{}</strong>. Opened {} UTC, closed {}, settled {}.</p>",
        window.window_id,
        window_state(window.state),
        timestamp(window.opened_unix_ms),
        timestamp(window.closed_unix_ms),
        timestamp(window.settled_unix_ms)
    );
    let mut bilateral = String::new();
    for total in &report.bilateral {
        let _ = write!(
            bilateral,
            "<tr><td>{}</td><td>{}</td><td class=\"num\">{}</td><td class=\"num\">{}</td></tr>",
            escape(&total.payer_bank_id),
            escape(&total.payee_bank_id),
            escape(&show_money(total.amount.as_ref())),
            total.payments
        );
    }
    let mut nets = String::new();
    for net in &report.nets {
        let _ = write!(
            nets,
            "<tr><td>{}</td><td class=\"num\">{}</td></tr>",
            escape(&net.bank_id),
            escape(&show_money(net.net.as_ref()))
        );
    }
    let _ = write!(
        body,
        "<h2>Bilateral totals</h2><div class=\"scroll\"><table id=\"bilateral\"><thead><tr><th>Payer bank</th><th>Payee bank</th>\
         <th>Amount</th><th>Payments</th></tr></thead><tbody>{bilateral}</tbody></table></div>\
         <h2>Net amounts</h2><p>Positive: the bank pays in; negative: it is paid.</p><div class=\"scroll\"><table id=\"nets\">\
         <thead><tr><th>Bank</th><th>Net</th></tr></thead><tbody>{nets}</tbody></table></div>"
    );
    if window.state == pb::SettlementWindowState::Closed as i32 {
        let _ = write!(
            body,
            "<form method=\"post\" action=\"/ops/windows/{}/settle\" class=\"card\">{}\
             <button type=\"submit\">Mark settled</button></form>",
            window.window_id,
            csrf_field(&session)
        );
    }
    body.push_str("<p><a href=\"/ops/settlement\">Back to settlement</a></p>");
    Page::new(
        &format!("Settlement window {}", window.window_id),
        Some(&session),
        body,
    )
    .into_response()
}

#[derive(Deserialize)]
pub struct CsrfForm {
    #[serde(default)]
    csrf: String,
}

pub async fn mark_settled(
    State(console): State<Arc<Console>>,
    Operator { session }: Operator,
    path: Result<Path<u64>, PathRejection>,
    form: FormInput<CsrfForm>,
) -> Response {
    if let Err(refused) = accepted(&session, form, |form| &form.csrf) {
        return *refused;
    }
    let Ok(Path(window_id)) = path else {
        return no_such_window(&session);
    };
    let _report = admin_call!(
        console,
        &session,
        "Settlement",
        mark_settled,
        pb::MarkSettledRequest { window_id }
    );
    Redirect::to(&format!("/ops/windows/{window_id}")).into_response()
}

#[derive(Deserialize, Default)]
pub struct UsersQuery {
    #[serde(default)]
    user: String,
}

async fn users_page(
    console: &Console,
    session: &Session,
    lookup: &str,
    message: Option<(&str, String)>,
    status: StatusCode,
) -> Response {
    let mut body = String::new();
    if let Some((kind, text)) = message {
        body.push_str(&notice(kind, &text));
    }
    let mut bank_options = String::new();
    for bank in console.service.registered_banks() {
        let _ = write!(bank_options, "<option>{}</option>", escape(&bank));
    }
    let _ = write!(
        body,
        "<section><h2>Register a user</h2><form method=\"post\" action=\"/ops/users/register\" id=\"register\" class=\"card\">{csrf}\
         <label>User name <input name=\"username\" required autocomplete=\"off\"></label>\
         <label>Password <input name=\"password\" type=\"password\" required autocomplete=\"new-password\"></label>\
         <button type=\"submit\">Register</button></form></section>\
         <section><h2>Open an account</h2><form method=\"post\" action=\"/ops/users/open-account\" id=\"open-account\" class=\"card\">{csrf}\
         <input type=\"hidden\" name=\"idempotency_key\" value=\"{key}\">\
         <label>User name <input name=\"username\" required autocomplete=\"off\"></label>\
         <label>Bank <select name=\"bank_id\">{bank_options}</select></label>\
         <label>Currency <input name=\"currency\" value=\"USD\" required></label>\
         <label>Opening deposit <input name=\"deposit\" inputmode=\"decimal\" placeholder=\"0.00\"></label>\
         <label>Holder name <input name=\"holder_name\"></label>\
         <button type=\"submit\">Open account</button></form></section>\
         <section><h2>Look up a user's accounts</h2><form method=\"get\" action=\"/ops/users\" class=\"card\">\
         <label>User name <input name=\"user\" value=\"{lookup}\"></label><button type=\"submit\">Show</button></form>",
        csrf = csrf_field(session),
        key = strife_common::keys::new_key(),
        lookup = escape(lookup),
    );
    if !lookup.is_empty() {
        let found = console
            .service
            .get_balances(
                &call(session),
                pb::GetBalancesRequest {
                    username: lookup.to_owned(),
                },
            )
            .await;
        match found {
            Ok(balances) => {
                let mut rows = String::new();
                for account in balances.accounts {
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
                let _ = write!(
                    body,
                    "<div class=\"scroll\"><table id=\"user-accounts\"><thead><tr><th>Bank</th><th>Account</th><th>Balance</th>\
                     <th>Held</th><th>Available</th></tr></thead><tbody>{rows}</tbody></table></div>"
                );
            }
            Err(failure) => body.push_str(&notice("error", &html::explain(&failure))),
        }
    }
    body.push_str("</section>");
    Page::new("Users and accounts", Some(session), body)
        .with_status(status)
        .into_response()
}

pub async fn users(
    State(console): State<Arc<Console>>,
    Operator { session }: Operator,
    query: Result<Query<UsersQuery>, axum::extract::rejection::QueryRejection>,
) -> Response {
    let lookup = query.map(|Query(query)| query.user).unwrap_or_default();
    users_page(&console, &session, lookup.trim(), None, StatusCode::OK).await
}

#[derive(Deserialize)]
pub struct RegisterForm {
    #[serde(default)]
    csrf: String,
    #[serde(default)]
    username: String,
    #[serde(default)]
    password: String,
}

fn outcome<T>(
    result: Result<T, Failure>,
    ok: impl FnOnce(T) -> String,
) -> (Option<(&'static str, String)>, StatusCode) {
    match result {
        Ok(value) => (Some(("ok", ok(value))), StatusCode::OK),
        Err(failure) => (
            Some(("error", html::explain(&failure))),
            html::http_status(&failure),
        ),
    }
}

pub async fn register_user(
    State(console): State<Arc<Console>>,
    Operator { session }: Operator,
    form: FormInput<RegisterForm>,
) -> Response {
    let form = match accepted(&session, form, |form| &form.csrf) {
        Ok(form) => form,
        Err(refused) => return *refused,
    };
    let username = form.username.trim().to_owned();
    let result = console
        .service
        .register_user(
            &call(&session),
            pb::RegisterUserRequest {
                username: username.clone(),
                password: form.password,
            },
        )
        .await;
    let (message, status) = outcome(result, |user| format!("User {} registered.", user.username));
    users_page(&console, &session, "", message, status).await
}

#[derive(Deserialize)]
pub struct OpenAccountForm {
    #[serde(default)]
    csrf: String,
    #[serde(default)]
    idempotency_key: String,
    #[serde(default)]
    username: String,
    #[serde(default)]
    bank_id: String,
    #[serde(default)]
    currency: String,
    #[serde(default)]
    deposit: String,
    #[serde(default)]
    holder_name: String,
}

pub async fn open_account(
    State(console): State<Arc<Console>>,
    Operator { session }: Operator,
    form: FormInput<OpenAccountForm>,
) -> Response {
    let form = match accepted(&session, form, |form| &form.csrf) {
        Ok(form) => form,
        Err(refused) => return *refused,
    };
    let username = form.username.trim().to_owned();
    let currency_code = form.currency.trim().to_uppercase();
    let opening_deposit = if form.deposit.trim().is_empty() {
        None
    } else {
        let parsed = money::currency(&currency_code)
            .map_err(|error| error.to_string())
            .and_then(|currency| {
                money::parse_amount_allow_zero(&form.deposit, currency)
                    .map_err(|error| error.to_string())
            });
        match parsed {
            Ok(amount_minor) => Some(pb::Money {
                amount_minor,
                currency: currency_code.clone(),
            }),
            Err(problem) => {
                return users_page(
                    &console,
                    &session,
                    "",
                    Some(("error", format!("Invalid deposit: {problem}."))),
                    StatusCode::BAD_REQUEST,
                )
                .await
            }
        }
    };
    let result = console
        .service
        .open_account(
            &call(&session),
            pb::GatewayOpenAccountRequest {
                username: username.clone(),
                bank_id: form.bank_id,
                currency: currency_code,
                opening_deposit,
                holder_name: form.holder_name,
                idempotency_key: form.idempotency_key,
            },
        )
        .await;
    let (message, status) = outcome(result, |account| {
        format!(
            "Account {} opened for {} at {}.",
            account.account_number, account.username, account.bank_id
        )
    });
    users_page(&console, &session, &username, message, status).await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_positions_chart_is_an_svg_bar_per_bank_with_the_cap_drawn() {
        use strife_proto::v1 as pb;
        let usd = |amount_minor| {
            Some(pb::Money {
                amount_minor,
                currency: "USD".into(),
            })
        };
        let chart = positions_chart(&[
            pb::BankPosition {
                bank_id: "bank0".into(),
                position: usd(1250),
                reserved: usd(0),
                cap: usd(5000),
                headroom: usd(3750),
            },
            pb::BankPosition {
                bank_id: "<b>".into(),
                position: usd(-1250),
                reserved: usd(0),
                cap: None,
                headroom: None,
            },
        ]);
        assert!(chart.starts_with("<svg"));
        assert_eq!(chart.matches("class=\"position\"").count(), 2);
        assert_eq!(chart.matches("class=\"cap\"").count(), 1);
        assert!(chart.contains("25 % used"));
        assert!(chart.contains("&lt;b&gt;") && !chart.contains("<b>"));
    }
}
