//! What every handler takes from a request before calling the service: the caller its API key
//! stands for ([`Authenticated`]), a JSON body read under the API's limits with unknown
//! fields refused by name ([`JsonBody`]), and the `Idempotency-Key` header
//! ([`IdempotencyKey`]). Each refusal is an [`ApiError`], never a framework's text.

use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::{FromRef, FromRequest, FromRequestParts, Request};
use axum::http::header;
use axum::http::request::Parts;
use serde::de::DeserializeOwned;
use strife_common::limits::validate_id;
use strife_gateway::request::{Call, RequestLogSlot};
use strife_gateway::service::Service;

use crate::error::{ApiError, IDEMPOTENCY_KEY_HEADER};

/// The largest request body the API reads.
pub const MAX_BODY_BYTES: usize = 16 * 1024;
/// The deepest nesting a JSON body may have (every request type is at most 3 deep; this
/// refuses a deeply nested body before the parser walks it).
const MAX_JSON_DEPTH: usize = 8;

/// What the API's handlers work with.
#[derive(Clone)]
pub struct Api {
    pub service: Arc<Service>,
}

/// The call a request makes, in the name of the user whose API key it carries.
pub struct Authenticated(pub Call);

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
            .ok_or(strife_common::Failure::Unauthenticated)?;
        let caller = api.service.caller_of_api_key(presented).await?;
        let log = parts
            .extensions
            .get::<RequestLogSlot>()
            .cloned()
            .unwrap_or_default();
        log.set_caller(Some(&caller));
        Ok(Authenticated(Call { caller, log }))
    }
}

/// A JSON body of type `T`.
pub struct JsonBody<T>(pub T);

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
