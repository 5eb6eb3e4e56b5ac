//! Every route of the console, the headers every answer carries, and the request log.

use std::sync::Arc;

use axum::http::header::{self, HeaderValue};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Router;

use crate::state::Console;
use crate::{events, html, keys, operator, payer};

/// Largest request body (forms are a few fields).
pub const MAX_BODY_BYTES: usize = 16 * 1024;

const CSS: &str = include_str!("assets/console.css");
const JS: &str = include_str!("assets/console.js");

fn asset(content_type: &'static str, body: &'static str) -> Response {
    (
        [
            (header::CONTENT_TYPE, HeaderValue::from_static(content_type)),
            (
                header::CACHE_CONTROL,
                HeaderValue::from_static("public, max-age=300"),
            ),
        ],
        body,
    )
        .into_response()
}

/// Headers on every answer: no inline script or style (so injected markup cannot run), no
/// framing, no caching of pages with balances, HTTPS only.
async fn security_headers(mut response: Response) -> Response {
    let headers = response.headers_mut();
    let set = |headers: &mut axum::http::HeaderMap, name, value: &'static str| {
        headers.insert(name, HeaderValue::from_static(value));
    };
    set(
        headers,
        header::CONTENT_SECURITY_POLICY,
        "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self'; frame-ancestors 'none'; form-action 'self'; base-uri 'none'",
    );
    set(headers, header::X_CONTENT_TYPE_OPTIONS, "nosniff");
    set(headers, header::X_FRAME_OPTIONS, "DENY");
    set(headers, header::REFERRER_POLICY, "no-referrer");
    set(
        headers,
        header::STRICT_TRANSPORT_SECURITY,
        "max-age=31536000",
    );
    if !headers.contains_key(header::CACHE_CONTROL) {
        set(headers, header::CACHE_CONTROL, "no-store");
    }
    response
}

/// One log line per console request: method, path, status and time. Never the query string,
/// a cookie or a form body (where the password, session id and CSRF token travel).
async fn log_request(request: axum::extract::Request, next: axum::middleware::Next) -> Response {
    let method = request.method().clone();
    let path = request.uri().path().to_owned();
    let started = std::time::Instant::now();
    let response = next.run(request).await;
    tracing::info!(
        %method,
        path = %path.escape_debug(),
        status = response.status().as_u16(),
        elapsed_ms = started.elapsed().as_millis() as u64,
        "console request"
    );
    response
}

async fn not_found() -> Response {
    html::Page::new(
        "Not found",
        None,
        html::notice("error", "There is no such page. Go to the home page: /"),
    )
    .with_status(StatusCode::NOT_FOUND)
    .into_response()
}

/// Every route of the console.
pub fn router(console: Arc<Console>) -> Router {
    use axum::routing::{get, post};
    Router::new()
        .route("/", get(payer::home))
        .route("/login", get(payer::login_form).post(payer::login))
        .route("/logout", post(payer::logout))
        .route("/pay", post(payer::pay))
        .route("/history", get(payer::history))
        .route("/payments/{payment_id}", get(payer::payment))
        .route("/payments/{payment_id}/refund", post(payer::refund))
        .route("/payments/{payment_id}/capture", post(payer::capture))
        .route("/payments/{payment_id}/void", post(payer::void))
        .route("/events", get(events::payment_events))
        .route("/keys", get(keys::keys))
        .route("/keys/create", post(keys::create_key))
        .route("/keys/{key_id}/revoke", post(keys::revoke_key))
        .route("/ops/network", get(operator::network))
        .route("/ops/payments", get(operator::payments))
        .route("/ops/settlement", get(operator::settlement))
        .route("/ops/settlement/close", post(operator::close_window))
        .route("/ops/settlement/cap", post(operator::set_cap))
        .route("/ops/windows/{window_id}", get(operator::window_report))
        .route(
            "/ops/windows/{window_id}/settle",
            post(operator::mark_settled),
        )
        .route("/ops/users", get(operator::users))
        .route("/ops/users/register", post(operator::register_user))
        .route("/ops/users/open-account", post(operator::open_account))
        .route(
            "/static/console.css",
            get(|| async { asset("text/css; charset=utf-8", CSS) }),
        )
        .route(
            "/static/console.js",
            get(|| async { asset("text/javascript; charset=utf-8", JS) }),
        )
        .fallback(not_found)
        .layer(axum::extract::DefaultBodyLimit::max(MAX_BODY_BYTES))
        .layer(axum::middleware::map_response(security_headers))
        .layer(axum::middleware::from_fn(log_request))
        .with_state(console)
}
