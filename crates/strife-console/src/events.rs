//! Server-sent events: the caller's payment events (`WatchPayments`, so the same per-user
//! scoping, bounds and drain behaviour), one `message` per decided payment. The event id is
//! the stream's cursor, so a browser that reconnects (`Last-Event-ID`) resumes without gaps.
//!
//! The only console response without an end: it is exempt from the response deadline
//! ([`ConnectionHandle::stream_response`]) and kept alive by a comment every
//! [`CONSOLE_EVENTS_KEEP_ALIVE`], well inside the connection's idle deadline.

use std::convert::Infallible;
use std::sync::Arc;

use axum::extract::State;
use axum::http::HeaderMap;
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use axum::Extension;
use futures::StreamExt;
use strife_common::limits::CONSOLE_EVENTS_KEEP_ALIVE;
use strife_common::net::listener::ConnectionHandle;
use strife_present::{money, status_name, timestamp};
use strife_proto::v1 as pb;

use crate::html;
use crate::state::{call, Console, LoggedIn};

/// What `console.js` needs to draw a payment row (it sets text, never markup).
fn event_json(payment: &pb::Payment) -> String {
    serde_json::json!({
        "id": payment.payment_id,
        "created": timestamp(payment.created_unix_ms),
        "from": payment.from_username,
        "to": payment.to_username,
        "amount": money(payment.amount.as_ref()),
        "status": status_name(payment.status),
        "reason": payment.reason,
    })
    .to_string()
}

pub async fn payment_events(
    State(console): State<Arc<Console>>,
    LoggedIn { session }: LoggedIn,
    connection: Option<Extension<ConnectionHandle>>,
    headers: HeaderMap,
) -> Response {
    // A cursor this server gave out resumes after it; anything else starts from now (a
    // cursor that is not the session user's is refused by the watch itself).
    let since = headers
        .get("last-event-id")
        .and_then(|value| value.to_str().ok())
        .filter(|cursor| {
            !cursor.is_empty()
                && cursor.len() <= 32
                && cursor.bytes().all(|b| b.is_ascii_hexdigit())
        })
        .unwrap_or_default()
        .to_owned();
    let watched = console
        .service
        .watch_payments(&call(&session), pb::WatchPaymentsRequest { since })
        .await;
    let stream = match watched {
        Ok(stream) => stream,
        Err(failure) => return html::refusal_page("Events", Some(&session), &failure),
    };
    let events = stream
        .take_while(|item| futures::future::ready(item.is_ok()))
        .filter_map(|item| async move {
            let event = item.ok()?;
            let payment = event.payment?;
            Some(Ok::<_, Infallible>(
                Event::default().id(event.cursor).data(event_json(&payment)),
            ))
        });
    if let Some(Extension(connection)) = connection {
        connection.stream_response();
    }
    Sse::new(events)
        .keep_alive(KeepAlive::new().interval(CONSOLE_EVENTS_KEEP_ALIVE))
        .into_response()
}
