//! Every route of the HTTP API, the limits every request is read under, and its one log line.
//! Whatever answers without a handler's say (an unknown route, a wrong method, a query or
//! path that cannot be read) is rewritten into the API's JSON error, so a client never sees a
//! framework's text.

use std::time::Instant;

use axum::body::Body;
use axum::extract::Request;
use axum::http::{header, HeaderValue, StatusCode};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{delete, get, post, put};
use axum::Router;
use strife_common::limits::HTTP_API_REQUEST_TIMEOUT;
use strife_gateway::request::RequestLogSlot;

use crate::error::ApiError;
use crate::extract::{Api, MAX_BODY_BYTES};
use crate::{admin, openapi, payments, stream};

/// The most of a framework refusal's text that is kept as the JSON error's message.
const MAX_REWRITTEN_MESSAGE: usize = 512;

pub fn router(api: Api) -> Router {
    Router::new()
        .route("/v1/openapi.json", get(openapi_document))
        .route(
            "/v1/payments",
            post(payments::pay).get(payments::list_payments),
        )
        .route("/v1/payments/{payment_id}", get(payments::get_payment))
        .route(
            "/v1/payments/by-key/{idempotency_key}",
            get(payments::get_payment_by_key),
        )
        .route(
            "/v1/payments/{payment_id}/refunds",
            post(payments::refund).get(payments::list_refunds),
        )
        .route("/v1/payments/{payment_id}/capture", post(payments::capture))
        .route("/v1/payments/{payment_id}/void", post(payments::void))
        .route("/v1/authorizations", post(payments::authorize))
        .route("/v1/balances", get(payments::balances))
        .route("/v1/accounts/link", post(payments::link_account))
        .route("/v1/accounts", post(admin::open_account))
        .route("/v1/events", get(payments::events))
        .route("/v1/events/stream", get(stream::event_stream))
        .route(
            "/v1/api-keys",
            post(admin::create_api_key).get(admin::list_api_keys),
        )
        .route("/v1/api-keys/{key_id}", delete(admin::revoke_api_key))
        .route("/v1/users", post(admin::register_user))
        .route("/v1/settlement/positions", get(admin::positions))
        .route(
            "/v1/settlement/caps/{bank_id}/{currency}",
            put(admin::set_cap),
        )
        .route("/v1/settlement/windows", get(admin::list_windows))
        .route(
            "/v1/settlement/windows/{window_id}",
            get(admin::window_report),
        )
        .route(
            "/v1/settlement/windows/{window_id}/close",
            post(admin::close_window),
        )
        .route(
            "/v1/settlement/windows/{window_id}/settle",
            post(admin::settle_window),
        )
        .fallback(|| async { ApiError::no_route() })
        .method_not_allowed_fallback(|| async { ApiError::method_not_allowed() })
        .layer(axum::extract::DefaultBodyLimit::max(MAX_BODY_BYTES))
        .layer(middleware::from_fn(errors_as_json))
        .layer(middleware::from_fn(read_whole_body))
        .layer(middleware::from_fn(log_request))
        .with_state(api)
}

async fn openapi_document() -> Response {
    (
        [(header::CONTENT_TYPE, "application/json")],
        openapi::document(),
    )
        .into_response()
}

/// Reads the whole body (at most [`MAX_BODY_BYTES`]) before anything answers. A request
/// refused early (no key, a bad header) would otherwise leave its body unread, and hyper then
/// closes the connection after the answer without saying so: a client that sent the body as
/// a separate write (urllib3 does) and reuses the connection loses its next request. A body
/// over the limit is refused with `Connection: close`, since the rest of it is not read.
///
/// The read is bounded by the whole request's deadline: over HTTP/1.1 the connection's own
/// deadline ends a slow body first; over HTTP/2 (many requests on one connection) this is
/// what does.
async fn read_whole_body(request: Request, next: Next) -> Response {
    let (parts, body) = request.into_parts();
    let read = tokio::time::timeout(
        HTTP_API_REQUEST_TIMEOUT,
        axum::body::to_bytes(body, MAX_BODY_BYTES),
    );
    match read.await {
        Ok(Ok(bytes)) => {
            next.run(Request::from_parts(parts, Body::from(bytes)))
                .await
        }
        Err(_) => ApiError::too_slow(HTTP_API_REQUEST_TIMEOUT).into_response(),
        Ok(Err(_)) => {
            let mut response = ApiError::too_large(MAX_BODY_BYTES).into_response();
            response
                .headers_mut()
                .insert(header::CONNECTION, HeaderValue::from_static("close"));
            response
        }
    }
}

/// A refusal that is not JSON yet (axum's own, for a query or path it could not read)
/// becomes the API's JSON error with the same status and its text as the message.
async fn errors_as_json(request: Request, next: Next) -> Response {
    let response = next.run(request).await;
    let is_json = response
        .headers()
        .get(header::CONTENT_TYPE)
        .is_some_and(|value| value.as_bytes().starts_with(b"application/json"));
    if response.status().as_u16() < 400 || is_json {
        return response;
    }
    let status = response.status();
    let text = axum::body::to_bytes(response.into_body(), MAX_REWRITTEN_MESSAGE * 4)
        .await
        .map(|bytes| {
            String::from_utf8_lossy(&bytes)
                .chars()
                .take(MAX_REWRITTEN_MESSAGE)
                .collect::<String>()
        })
        .unwrap_or_default();
    let error = match status {
        StatusCode::PAYLOAD_TOO_LARGE => ApiError::too_large(MAX_BODY_BYTES),
        StatusCode::NOT_FOUND => ApiError::no_route(),
        StatusCode::METHOD_NOT_ALLOWED => ApiError::method_not_allowed(),
        _ if status.is_server_error() => {
            ApiError::from(strife_common::Failure::internal("HTTP API", text))
        }
        _ => ApiError::unreadable(if text.is_empty() {
            "the request cannot be read".to_owned()
        } else {
            text
        }),
    };
    error.into_response()
}

/// One structured line per request: method, path, the key's id (never the key), user,
/// payment id, status, whether it was a replay, latency.
async fn log_request(mut request: Request, next: Next) -> Response {
    let started = Instant::now();
    let log = RequestLogSlot::default();
    request.extensions_mut().insert(log.clone());
    let method = request.method().clone();
    let path = request.uri().path().to_owned();
    let mut response = next.run(request).await;
    let fields = log.snapshot();
    tracing::info!(
        target: "strife::http",
        %method,
        path,
        key_id = fields.key_id.as_deref().unwrap_or("-"),
        user = fields.username.as_deref().unwrap_or("-"),
        payment_id = fields.payment_id.as_deref().unwrap_or("-"),
        amount = fields.amount.as_deref().unwrap_or("-"),
        replayed = fields.replayed,
        status = response.status().as_u16(),
        latency_us = started.elapsed().as_micros() as u64,
        "request"
    );
    // Answers are about one caller's money: no cache may keep them.
    response
        .headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    response
}

/// The body type of every answer (for tests that drive the router directly).
pub type Answer = Response<Body>;
