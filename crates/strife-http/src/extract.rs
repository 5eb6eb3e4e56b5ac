//! What every handler takes from a request before calling the service: the caller its API key
//! stands for ([`Authenticated`]), a JSON body read under the API's limits with unknown
//! fields refused by name ([`JsonBody`]), and the `Idempotency-Key` header
//! ([`IdempotencyKey`]). Each refusal is an [`ApiError`], never a framework's text.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use axum::body::Bytes;
use axum::extract::{FromRef, FromRequest, FromRequestParts, Request};
use axum::http::header;
use axum::http::request::Parts;
use serde::de::DeserializeOwned;
use strife_common::limits::{validate_id, HTTP_API_MAX_IN_FLIGHT_PER_KEY};
use strife_common::Failure;
use strife_gateway::request::{Call, RequestLogSlot};
use strife_gateway::service::Service;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use crate::error::{ApiError, IDEMPOTENCY_KEY_HEADER};

/// The largest request body the API reads.
pub use strife_common::limits::HTTP_API_MAX_BODY_BYTES as MAX_BODY_BYTES;
/// The deepest nesting a JSON body may have (every request type is at most 3 deep; this
/// refuses a deeply nested body before the parser walks it).
const MAX_JSON_DEPTH: usize = 8;

/// What the API's handlers work with.
#[derive(Clone)]
pub struct Api {
    pub service: Arc<Service>,
    /// Requests in flight per API key.
    pub in_flight: Arc<KeysInFlight>,
}

impl Api {
    pub fn new(service: Arc<Service>) -> Self {
        Api {
            service,
            in_flight: Arc::default(),
        }
    }
}

/// How many requests each API key has in flight on this replica: at most
/// [`HTTP_API_MAX_IN_FLIGHT_PER_KEY`], so one integration cannot take every connection's
/// worth of the gateway's attention (each HTTP/1.1 connection carries one request at a time;
/// this bounds a key that opens many).
#[derive(Default)]
pub struct KeysInFlight {
    keys: Mutex<HashMap<String, Arc<Semaphore>>>,
}

impl KeysInFlight {
    /// A place for one more request of `key_id`, or `RESOURCE_EXHAUSTED` when it has none.
    fn take(&self, key_id: &str) -> Result<OwnedSemaphorePermit, Failure> {
        let semaphore = {
            let mut keys = self
                .keys
                .lock()
                .unwrap_or_else(|poisoned| poisoned.into_inner());
            if keys.len() >= MAX_TRACKED_KEYS {
                // Keys with nothing in flight carry no state: forget them.
                keys.retain(|_, semaphore| {
                    semaphore.available_permits() < HTTP_API_MAX_IN_FLIGHT_PER_KEY
                });
            }
            Arc::clone(
                keys.entry(key_id.to_owned())
                    .or_insert_with(|| Arc::new(Semaphore::new(HTTP_API_MAX_IN_FLIGHT_PER_KEY))),
            )
        };
        semaphore.try_acquire_owned().map_err(|_| {
            Failure::ResourceExhausted(format!(
                "API key {key_id} already has {HTTP_API_MAX_IN_FLIGHT_PER_KEY} requests in flight; retry when one is answered"
            ))
        })
    }
}

/// Keys whose requests in flight are counted at once; past it, idle ones are forgotten.
const MAX_TRACKED_KEYS: usize = 10_000;

/// The call a request makes, in the name of the user whose API key it carries, and its place
/// among its key's requests in flight (given back when the handler drops it).
pub struct Authenticated {
    pub call: Call,
    pub in_flight: Option<OwnedSemaphorePermit>,
}

impl<S> FromRequestParts<S> for Authenticated
where
    Api: FromRef<S>,
    S: Send + Sync,
{
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        let api = Api::from_ref(state);
        let presented = parts
            .headers
            .get(header::AUTHORIZATION)
            .and_then(|value| value.to_str().ok())
            .and_then(|value| value.strip_prefix("Bearer "))
            .map(str::trim)
            .ok_or(Failure::Unauthenticated)?;
        let caller = api.service.caller_of_api_key(presented).await?;
        let in_flight = match &caller.key {
            Some(grant) => Some(api.in_flight.take(&grant.key_id)?),
            None => None,
        };
        let log = parts
            .extensions
            .get::<RequestLogSlot>()
            .cloned()
            .unwrap_or_default();
        log.set_caller(Some(&caller));
        Ok(Authenticated {
            call: Call { caller, log },
            in_flight,
        })
    }
}

/// A JSON body of type `T`.
pub struct JsonBody<T>(pub T);

/// An optional JSON body: none at all is `T::default()` (a capture of the whole amount needs
/// no body); a body is read as [`JsonBody`] reads it.
pub struct OptionalJsonBody<T>(pub T);

impl<S, T> FromRequest<S> for OptionalJsonBody<T>
where
    S: Send + Sync,
    T: DeserializeOwned + Default,
{
    type Rejection = ApiError;

    async fn from_request(request: Request, state: &S) -> Result<Self, Self::Rejection> {
        let has_type = request.headers().contains_key(header::CONTENT_TYPE);
        let (parts, body) = request.into_parts();
        let bytes = Bytes::from_request(Request::from_parts(parts.clone(), body), state)
            .await
            .map_err(|_| ApiError::too_large(MAX_BODY_BYTES))?;
        if bytes.is_empty() && !has_type {
            return Ok(OptionalJsonBody(T::default()));
        }
        let request = Request::from_parts(parts, axum::body::Body::from(bytes));
        JsonBody::from_request(request, state)
            .await
            .map(|JsonBody(value)| OptionalJsonBody(value))
    }
}

impl<S, T> FromRequest<S> for JsonBody<T>
where
    S: Send + Sync,
    T: DeserializeOwned,
{
    type Rejection = ApiError;

    async fn from_request(request: Request, state: &S) -> Result<Self, Self::Rejection> {
        let is_json = request
            .headers()
            .get(header::CONTENT_TYPE)
            .and_then(|value| value.to_str().ok())
            .and_then(|value| value.split(';').next())
            .is_some_and(|media| media.trim().eq_ignore_ascii_case("application/json"));
        if !is_json {
            return Err(ApiError::not_json());
        }
        let bytes = Bytes::from_request(request, state)
            .await
            .map_err(|_| ApiError::too_large(MAX_BODY_BYTES))?;
        parse_json(&bytes).map(JsonBody)
    }
}

/// `bytes` as a `T`: refused (400, with serde's words, which name an unknown or missing
/// field) when it is not that JSON, nested deeper than [`MAX_JSON_DEPTH`], or not UTF-8.
pub fn parse_json<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, ApiError> {
    if nesting_depth(bytes) > MAX_JSON_DEPTH {
        return Err(ApiError::unreadable(format!(
            "the JSON body is nested deeper than {MAX_JSON_DEPTH} levels"
        )));
    }
    serde_json::from_slice(bytes)
        .map_err(|error| ApiError::unreadable(format!("the JSON body cannot be read: {error}")))
}

/// The deepest nesting of `[`/`{` in `bytes`, strings skipped.
fn nesting_depth(bytes: &[u8]) -> usize {
    let (mut depth, mut deepest, mut in_string, mut escaped) = (0usize, 0usize, false, false);
    for &byte in bytes {
        if in_string {
            match (escaped, byte) {
                (true, _) => escaped = false,
                (false, b'\\') => escaped = true,
                (false, b'"') => in_string = false,
                _ => {}
            }
            continue;
        }
        match byte {
            b'"' => in_string = true,
            b'[' | b'{' => {
                depth += 1;
                deepest = deepest.max(depth);
            }
            b']' | b'}' => depth = depth.saturating_sub(1),
            _ => {}
        }
    }
    deepest
}

/// The `Idempotency-Key` header, checked as gRPC checks `idempotency_key`.
pub struct IdempotencyKey(pub String);

impl<S: Send + Sync> FromRequestParts<S> for IdempotencyKey {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, _state: &S) -> Result<Self, Self::Rejection> {
        let key = optional_key(parts)?.ok_or_else(|| {
            header_error(format!(
                "{IDEMPOTENCY_KEY_HEADER} is missing: choose a key per payment (a UUID, an order number) and send the same one on every retry"
            ))
        })?;
        Ok(IdempotencyKey(key))
    }
}

/// An `Idempotency-Key` header that may be absent (opening an account).
pub struct OptionalIdempotencyKey(pub String);

impl<S: Send + Sync> FromRequestParts<S> for OptionalIdempotencyKey {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, _state: &S) -> Result<Self, Self::Rejection> {
        Ok(OptionalIdempotencyKey(
            optional_key(parts)?.unwrap_or_default(),
        ))
    }
}

fn optional_key(parts: &Parts) -> Result<Option<String>, ApiError> {
    let Some(value) = parts.headers.get(IDEMPOTENCY_KEY_HEADER) else {
        return Ok(None);
    };
    let key = value.to_str().map_err(|_| {
        header_error(format!(
            "{IDEMPOTENCY_KEY_HEADER} must be printable ASCII without spaces"
        ))
    })?;
    validate_id(IDEMPOTENCY_KEY_HEADER, key).map_err(ApiError::from)?;
    Ok(Some(key.to_owned()))
}

fn header_error(message: String) -> ApiError {
    ApiError::from(strife_common::Failure::invalid_field(
        IDEMPOTENCY_KEY_HEADER,
        message,
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_key_has_a_bounded_number_of_requests_in_flight() {
        let keys = KeysInFlight::default();
        let held: Vec<_> = (0..HTTP_API_MAX_IN_FLIGHT_PER_KEY)
            .map(|_| keys.take("k1").ok())
            .collect();
        assert!(held.iter().all(Option::is_some));
        assert!(matches!(
            keys.take("k1"),
            Err(Failure::ResourceExhausted(_))
        ));
        // Another key has its own places; one given back is free again.
        assert!(keys.take("k2").is_ok());
        drop(held);
        assert!(keys.take("k1").is_ok());
    }

    #[test]
    fn depth_counts_brackets_outside_strings() {
        assert_eq!(nesting_depth(br#"{"a": 1}"#), 1);
        assert_eq!(nesting_depth(br#"{"a": {"b": [1, {"c": 2}]}}"#), 4);
        assert_eq!(nesting_depth(br#"{"a": "[[[[[[[[[[["}"#), 1);
        assert_eq!(nesting_depth(br#"{"a": "\"[[[[[[[[["}"#), 1);
        assert_eq!(nesting_depth(&[b'['; 100]), 100);
    }

    #[test]
    fn unknown_fields_are_refused_by_name() {
        let refused = parse_json::<crate::model::PayBody>(
            br#"{"to_username": "bob", "amount": {"amount_minor": 1, "currency": "USD"}, "tip": 5}"#,
        );
        let message = format!("{:?}", refused.err());
        assert!(message.contains("unknown field `tip`"), "{message}");
    }

    #[test]
    fn deep_bodies_are_refused_before_parsing() {
        let mut deep = vec![b'['; 50];
        deep.extend(vec![b']'; 50]);
        assert!(parse_json::<serde_json::Value>(&deep).is_err());
    }
}
