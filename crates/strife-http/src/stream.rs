//! `GET /v1/events/stream`: the caller's payment events as server-sent events, for a consumer
//! that would rather hold one response than poll. The same watch as gRPC's `WatchPayments`
//! and `GET /v1/events` (per-user scoping, decision order, the same cursors, the per-user cap
//! on open watches, ending when the gateway drains): each event's `id` is its cursor, so a
//! client that reconnects with `Last-Event-ID` (or `?after=`) resumes without gaps or repeats.
//!
//! The one HTTP API response without an end: exempt from the response deadline
//! ([`ConnectionHandle::stream_response`]), kept alive by a comment every 15 s (inside the
//! connection's idle deadline), and counted among its key's requests in flight while open.

use std::convert::Infallible;

use axum::extract::{Query, State};
use axum::http::HeaderMap;
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use axum::Extension;
use futures::StreamExt;
use serde::Deserialize;
use strife_common::limits::CONSOLE_EVENTS_KEEP_ALIVE;
use strife_common::net::listener::ConnectionHandle;
use strife_proto::v1 as pb;
use utoipa::IntoParams;

use crate::error::ApiError;
use crate::extract::{Api, Authenticated};
use crate::model::Payment;

/// Where the stream starts.
#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct StreamQuery {
    /// A cursor to start after (a `Last-Event-ID` header wins); absent: from now.
    pub after: Option<String>,
}

/// Your payments (admin: every payment) as server-sent events, one `payment` event per
/// decided payment, `id` = its cursor, `data` = the payment as `GET /v1/payments/{id}` gives
/// it. Runs until you hang up or the gateway drains; reconnect with `Last-Event-ID`.
#[utoipa::path(
    get,
    path = "/v1/events/stream",
    tag = "events",
    params(
        StreamQuery,
        ("Last-Event-ID" = Option<String>, Header, description = "The last event's id (its cursor): resume after it."),
    ),
    responses((status = 200, description = "An endless `text/event-stream` of `payment` events.", content_type = "text/event-stream", body = String)),
    security(("api_key" = ["events:read"]))
)]
pub async fn event_stream(
    State(api): State<Api>,
    Authenticated { call, in_flight }: Authenticated,
    connection: Option<Extension<ConnectionHandle>>,
    headers: HeaderMap,
    Query(query): Query<StreamQuery>,
) -> Result<Response, ApiError> {
    let since = headers
        .get("last-event-id")
        .and_then(|value| value.to_str().ok())
        .map(str::to_owned)
        .or(query.after)
        .unwrap_or_default();
    let watch = api
        .service
        .watch_payments(&call, pb::WatchPaymentsRequest { since })
        .await?;
    let events = watch
        .take_while(|item| futures::future::ready(item.is_ok()))
        .filter_map(move |item| {
            // The key's place in flight lives as long as the stream.
            let _held = &in_flight;
            let event = item.ok().and_then(|event| {
                let payment = Payment::from(event.payment?);
                let data = serde_json::to_string(&payment).ok()?;
                Some(
                    Event::default()
                        .event("payment")
                        .id(event.cursor)
                        .data(data),
                )
            });
            futures::future::ready(event.map(Ok::<_, Infallible>))
        });
    if let Some(Extension(connection)) = connection {
        connection.stream_response();
    }
    Ok(Sse::new(events)
        .keep_alive(KeepAlive::new().interval(CONSOLE_EVENTS_KEEP_ALIVE))
        .into_response())
}
