//! Every refusal as one JSON object (`{"error": {type, code, message, param, payment_id}}`)
//! with the HTTP status `Failure::http_status` gives it — the one mapping the console uses
//! too, derived from the same `Failure` gRPC maps (docs/SPEC.md §10). Never a framework's
//! default text: unknown routes, wrong methods, bad JSON and oversized bodies answer here.

use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use strife_common::failure::PaymentRefusal;
use strife_common::{reason, Failure};

use crate::model::{ErrorBody, ErrorDetail};

/// The header an idempotency key travels in.
pub const IDEMPOTENCY_KEY_HEADER: &str = "Idempotency-Key";

/// A refusal, ready to answer.
#[derive(Debug)]
pub struct ApiError {
    status: StatusCode,
    /// Boxed: a refusal travels in every handler's `Result`, which stays small.
    detail: Box<ErrorDetail>,
    /// A rate limit's own wait, sent as `Retry-After` (whole seconds, rounded up).
    retry_after: Option<std::time::Duration>,
}

impl ApiError {
    fn new(status: StatusCode, code: &str, message: String, param: Option<String>) -> Self {
        ApiError {
            status,
            detail: Box::new(ErrorDetail {
                kind: kind_of(status).to_owned(),
                code: code.to_owned(),
                message,
                param,
                payment_id: None,
            }),
            retry_after: None,
        }
    }

    /// A request that cannot be read (bad JSON, an unknown field, a bad query).
    pub fn unreadable(message: impl Into<String>) -> Self {
        ApiError::new(
            StatusCode::BAD_REQUEST,
            reason::INVALID_ARGUMENT,
            message.into(),
            None,
        )
    }

    pub fn too_large(limit: usize) -> Self {
        ApiError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            reason::TOO_LARGE,
            format!("the request body is larger than {limit} bytes"),
            None,
        )
    }

    /// A request whose body did not arrive within `limit` of its start.
    pub fn too_slow(limit: std::time::Duration) -> Self {
        ApiError::new(
            StatusCode::REQUEST_TIMEOUT,
            reason::INVALID_ARGUMENT,
            format!(
                "the request body did not arrive within {} s",
                limit.as_secs()
            ),
            None,
        )
    }

    pub fn not_json() -> Self {
        ApiError::new(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            reason::INVALID_ARGUMENT,
            "send the body as application/json".into(),
            None,
        )
    }

    pub fn no_route() -> Self {
        ApiError::new(
            StatusCode::NOT_FOUND,
            reason::NOT_FOUND,
            "no such resource; see /v1/openapi.json".into(),
            None,
        )
    }

    pub fn method_not_allowed() -> Self {
        ApiError::new(
            StatusCode::METHOD_NOT_ALLOWED,
            reason::UNIMPLEMENTED,
            "this resource does not take that method; see /v1/openapi.json".into(),
            None,
        )
    }

    /// A refusal of a request that carried an `Idempotency-Key`: the service names that
    /// key `idempotency_key`, HTTP callers know it by its header; a key reused with other
    /// parameters is 422 (the header itself was valid, or the service would not have got
    /// that far: [`crate::routes`] validates it first).
    pub fn keyed(refusal: PaymentRefusal) -> Self {
        let mut error = ApiError::from(refusal);
        if error.detail.param.as_deref() == Some("idempotency_key") {
            error.detail.param = Some(IDEMPOTENCY_KEY_HEADER.to_owned());
            if error.status == StatusCode::BAD_REQUEST {
                error.status = StatusCode::UNPROCESSABLE_ENTITY;
                error.detail.kind = kind_of(error.status).to_owned();
                error.detail.code = reason::IDEMPOTENCY_KEY_REUSED.to_owned();
            }
        }
        error
    }
}

/// The error class of a status, as integrators branch on it.
fn kind_of(status: StatusCode) -> &'static str {
    match status.as_u16() {
        401 => "authentication_error",
        403 => "permission_error",
        404 => "not_found_error",
        409 => "conflict_error",
        422 => "payment_error",
        429 => "rate_limit_error",
        503 => "unavailable_error",
        500..=599 => "api_error",
        _ => "invalid_request_error",
    }
}

impl From<Failure> for ApiError {
    fn from(failure: Failure) -> Self {
        if let Failure::Internal(detail) = &failure {
            tracing::error!(%detail, "HTTP API request failed inside");
        }
        let status = StatusCode::from_u16(failure.http_status())
            .unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        let param = match &failure {
            Failure::InvalidField { field, .. } => Some(field.clone()),
            _ => None,
        };
        let retry_after = match &failure {
            Failure::RateLimited { retry_after, .. } => Some(*retry_after),
            _ => None,
        };
        let mut error = ApiError::new(status, failure.reason(), failure.public_message(), param);
        error.retry_after = retry_after;
        error
    }
}

impl From<PaymentRefusal> for ApiError {
    fn from(refusal: PaymentRefusal) -> Self {
        let mut error = ApiError::from(refusal.failure);
        if let Some(payment_id) = refusal.payment_id {
            // A recorded payment's own reason (`insufficient_funds`, `bank_timeout`) is the
            // more precise code.
            if let Some(code) = refusal.reason_code.filter(|code| !code.is_empty()) {
                error.detail.code = code;
            }
            error.detail.payment_id = Some(payment_id);
        }
        error
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let retry_after = matches!(
            self.status,
            StatusCode::TOO_MANY_REQUESTS | StatusCode::SERVICE_UNAVAILABLE
        ) || self.detail.code == reason::IN_PROGRESS;
        // Whole seconds, rounded up: a client that waits that long is admitted.
        let seconds = self
            .retry_after
            .map_or(1, |wait| {
                wait.as_secs() + u64::from(wait.subsec_nanos() > 0)
            })
            .max(1);
        let mut response = json_response(
            self.status,
            &ErrorBody {
                error: *self.detail,
            },
        );
        if self.status == StatusCode::UNAUTHORIZED {
            response.headers_mut().insert(
                header::WWW_AUTHENTICATE,
                HeaderValue::from_static("Bearer realm=\"strife\""),
            );
        }
        if retry_after {
            // Whatever passes (a limit, an outage, a payment still deciding) is worth a retry
            // with the same key after a second.
            response
                .headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from(seconds));
        }
        response
    }
}

/// `value` as a JSON response with `status`.
pub fn json_response<T: serde::Serialize>(status: StatusCode, value: &T) -> Response {
    match serde_json::to_vec(value) {
        Ok(body) => (status, [(header::CONTENT_TYPE, "application/json")], body).into_response(),
        Err(error) => {
            tracing::error!(%error, "could not encode an HTTP API answer");
            (
                StatusCode::INTERNAL_SERVER_ERROR,
                [(header::CONTENT_TYPE, "application/json")],
                r#"{"error":{"type":"api_error","code":"internal","message":"internal error; see the server log"}}"#,
            )
                .into_response()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn body_of(error: ApiError) -> (StatusCode, serde_json::Value) {
        let status = error.status;
        let body = serde_json::to_value(ErrorBody {
            error: *error.detail,
        })
        .unwrap_or_default();
        (status, body)
    }

    #[test]
    fn a_bad_field_is_400_naming_it() {
        let (status, body) = body_of(ApiError::from(Failure::invalid_field(
            "amount.amount_minor",
            "must be positive",
        )));
        assert_eq!(status, StatusCode::BAD_REQUEST);
        assert_eq!(body["error"]["param"], "amount.amount_minor");
        assert_eq!(body["error"]["code"], "invalid_argument");
        assert_eq!(body["error"]["type"], "invalid_request_error");
    }

    #[test]
    fn a_reused_key_is_422_and_named_by_its_header() {
        let refusal = PaymentRefusal::from(Failure::invalid_field(
            "idempotency_key",
            "idempotency_key \"k\" was already used for a different payment",
        ));
        let (status, body) = body_of(ApiError::keyed(refusal));
        assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);
        assert_eq!(body["error"]["param"], "Idempotency-Key");
        assert_eq!(body["error"]["code"], "idempotency_key_reused");
    }

    #[test]
    fn a_refused_payment_carries_its_id_and_own_reason() {
        let refusal = PaymentRefusal {
            failure: Failure::precondition("insufficient_funds", "not enough"),
            payment_id: Some("p-1".into()),
            reason_code: Some("insufficient_funds".into()),
        };
        let (status, body) = body_of(ApiError::from(refusal));
        assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);
        assert_eq!(body["error"]["payment_id"], "p-1");
        assert_eq!(body["error"]["code"], "insufficient_funds");
    }

    #[test]
    fn internal_detail_stays_in_the_log() {
        let (status, body) = body_of(ApiError::from(Failure::internal("sql", "table x")));
        assert_eq!(status, StatusCode::INTERNAL_SERVER_ERROR);
        assert!(!body["error"]["message"]
            .as_str()
            .unwrap_or_default()
            .contains("table x"));
    }

    #[test]
    fn outages_and_limits_say_when_to_retry() {
        for failure in [
            Failure::Unavailable("bank0 down".into()),
            Failure::ResourceExhausted("slow down".into()),
            Failure::Aborted("in flight".into()),
        ] {
            let response = ApiError::from(failure).into_response();
            assert_eq!(response.headers()[header::RETRY_AFTER], "1");
        }
        let limited = ApiError::from(Failure::RateLimited {
            message: "slow down".into(),
            retry_after: std::time::Duration::from_millis(1_500),
        })
        .into_response();
        assert_eq!(limited.status(), StatusCode::TOO_MANY_REQUESTS);
        assert_eq!(limited.headers()[header::RETRY_AFTER], "2");
        let response = ApiError::from(Failure::Unauthenticated).into_response();
        assert!(response.headers().contains_key(header::WWW_AUTHENTICATE));
    }
}
