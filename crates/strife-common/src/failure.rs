//! The one place where a refusal becomes a gRPC status (docs/SPEC.md §7). Handlers return
//! [`Failure`]; only this module decides codes, reasons and details (`From<Failure> for
//! Status`, and `payment_refusal` for a stored payment's refusal), so the mapping cannot
//! drift. `Failure` itself, its reasons and messages are transport-free; the statuses and
//! `Failure::code` exist with feature `grpc`.
//!
//! Every status carries, in `grpc-status-details-bin`, a `google.rpc.ErrorInfo` (domain
//! [`ERROR_DOMAIN`], a machine-readable reason from [`crate::reason`], metadata such as the field or
//! the bank id), and a failure of one request field ([`Failure::InvalidField`]) also a
//! `google.rpc.BadRequest` with one `FieldViolation { field, description }`.

#[cfg(feature = "grpc")]
use std::collections::HashMap;

#[cfg(feature = "grpc")]
use tonic::metadata::MetadataMap;
#[cfg(feature = "grpc")]
use tonic::{Code, Status};
#[cfg(feature = "grpc")]
use tonic_types::{ErrorDetails, StatusExt};

use crate::reason;

/// Metadata key carrying the machine-readable reason of a `FAILED_PRECONDITION` (and of
/// aborted payments), e.g. `insufficient_funds`.
pub const REASON_METADATA_KEY: &str = "x-strife-reason";

/// The `domain` of every `google.rpc.ErrorInfo` Strife attaches.
pub const ERROR_DOMAIN: &str = "strife";

/// `ErrorInfo.metadata` key: the request field a [`Failure::InvalidField`] is about.
pub const FIELD_INFO_KEY: &str = "field";
/// `ErrorInfo.metadata` key: the bank id of a [`Failure::UnknownBank`].
pub const BANK_ID_INFO_KEY: &str = "bank_id";
/// `ErrorInfo.metadata` key: the payment a refused `Pay` was recorded under (also sent as the
/// `x-strife-payment-id` trailer).
pub const PAYMENT_ID_INFO_KEY: &str = "payment_id";
/// Every way a Strife request can be refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Failure {
    /// A bad request that is not about one field. A bad field is [`Failure::InvalidField`].
    #[error("{0}")]
    InvalidArgument(String),
    /// One request field is bad (empty, too long, bad characters, bad amount, unknown
    /// currency, an idempotency key reused with other parameters). `field` is its proto path
    /// (`amount.amount_minor`, `to_username`, `idempotency_key`); `message` names it. Built
    /// with [`Failure::invalid_field`]; sent as `INVALID_ARGUMENT` with a `BadRequest`.
    #[error("{message}")]
    InvalidField { field: String, message: String },
    /// No or invalid credentials. Deliberately carries no detail that helps an attacker.
    #[error("authentication failed")]
    Unauthenticated,
    /// Authenticated but not allowed.
    #[error("{0}")]
    PermissionDenied(String),
    /// Unknown user, account, payment or leg.
    #[error("{0}")]
    NotFound(String),
    /// A bank id that is not part of the network: no bank by that id has registered (a bank
    /// that registered and is down now is [`Failure::Unavailable`], which is worth a retry;
    /// this is not).
    #[error("bank {0} is not part of this network: no bank by that id has ever registered")]
    UnknownBank(String),
    /// User or account already exists.
    #[error("{0}")]
    AlreadyExists(String),
    /// Insufficient funds, currency mismatch, a transition the state machine refuses.
    #[error("{message}")]
    FailedPrecondition {
        reason_code: String,
        message: String,
    },
    /// The same idempotency key is still in flight.
    #[error("{0}")]
    Aborted(String),
    /// A bank of the network cannot be reached now, or storage failed: nothing was done,
    /// retry.
    #[error("{0}")]
    Unavailable(String),
    /// No such method or service.
    #[error("{0}")]
    Unimplemented(String),
    /// A per-user or per-process limit was reached (login attempts, password checks queued,
    /// refused payments per minute). Nothing was done; the same request may succeed later.
    #[error("{0}")]
    ResourceExhausted(String),
    /// A rate limit (requests per second of one user or API key): nothing was done; the same
    /// request is admitted after `retry_after`. Sent as `RESOURCE_EXHAUSTED` with a
    /// `google.rpc.RetryInfo`, and over HTTP as 429 with `Retry-After`.
    #[error("{message}")]
    RateLimited {
        message: String,
        retry_after: std::time::Duration,
    },
    /// The request message or its metadata is larger than the server accepts. Unlike
    /// [`Failure::ResourceExhausted`], retrying the same request cannot help.
    #[error("{0}")]
    TooLarge(String),
    /// A bug or a storage failure. The detail is logged, not sent.
    #[error("internal error: {0}")]
    Internal(String),
}

impl Failure {
    /// A bad request field: `field` is the proto path, `message` says what is wrong. A message
    /// that does not start with the field's name is prefixed with it (`"amount.currency:
    /// unknown currency …"`), so every such message says first which field it is about.
    pub fn invalid_field(field: impl Into<String>, message: impl Into<String>) -> Self {
        let field = field.into();
        let message = message.into();
        let names_it = message.strip_prefix(field.as_str()).is_some_and(|rest| {
            !rest.starts_with(|next: char| {
                next.is_ascii_alphanumeric() || next == '_' || next == '.'
            })
        });
        let message = if names_it {
            message
        } else {
            format!("{field}: {message}")
        };
        Failure::InvalidField { field, message }
    }

    /// A `FAILED_PRECONDITION` with its machine-readable reason.
    pub fn precondition(reason_code: &str, message: impl Into<String>) -> Self {
        Failure::FailedPrecondition {
            reason_code: reason_code.to_owned(),
            message: message.into(),
        }
    }

    /// A storage or other internal failure; `context` says what was being done.
    pub fn internal(context: &str, error: impl std::fmt::Display) -> Self {
        Failure::Internal(format!("{context}: {error}"))
    }

    /// What the caller is told (the status message): the failure's own words, except an
    /// internal error's, whose detail may name files or SQL and goes only to the server log.
    pub fn public_message(&self) -> String {
        match self {
            Failure::Internal(_) => "internal error; see the server log".to_owned(),
            other => other.to_string(),
        }
    }

    /// The machine-readable reason sent as `ErrorInfo.reason`: a precondition's own reason
    /// code (`insufficient_funds`, …), otherwise the failure's class.
    pub fn reason(&self) -> &str {
        match self {
            Failure::InvalidArgument(_) | Failure::InvalidField { .. } => reason::INVALID_ARGUMENT,
            Failure::Unauthenticated => reason::UNAUTHENTICATED,
            Failure::PermissionDenied(_) => reason::PERMISSION_DENIED,
            Failure::NotFound(_) => reason::NOT_FOUND,
            Failure::UnknownBank(_) => reason::UNKNOWN_BANK,
            Failure::AlreadyExists(_) => reason::ALREADY_EXISTS,
            Failure::FailedPrecondition { reason_code, .. } => reason_code,
            Failure::Aborted(_) => reason::IN_PROGRESS,
            Failure::Unavailable(_) => reason::UNAVAILABLE,
            Failure::Unimplemented(_) => reason::UNIMPLEMENTED,
            Failure::ResourceExhausted(_) | Failure::RateLimited { .. } => {
                reason::RESOURCE_EXHAUSTED
            }
            Failure::TooLarge(_) => reason::TOO_LARGE,
            Failure::Internal(_) => reason::INTERNAL,
        }
    }

    /// The HTTP status a web transport (the console, the HTTP API) answers this failure with,
    /// the gRPC code's counterpart (docs/SPEC.md §10): a bad field 400, no credentials 401, not
    /// allowed 403, not found (or not yours) 404, the key still in flight or something that
    /// exists already 409, a refusal of the request's own (a precondition) 422, a limit that
    /// passes 429, too large 413, a transient outage 503, no such thing 501, a bug 500.
    pub fn http_status(&self) -> u16 {
        match self {
            Failure::InvalidArgument(_) | Failure::InvalidField { .. } => 400,
            Failure::Unauthenticated => 401,
            Failure::PermissionDenied(_) => 403,
            Failure::NotFound(_) | Failure::UnknownBank(_) => 404,
            Failure::AlreadyExists(_) | Failure::Aborted(_) => 409,
            Failure::TooLarge(_) => 413,
            Failure::FailedPrecondition { .. } => 422,
            Failure::ResourceExhausted(_) | Failure::RateLimited { .. } => 429,
            Failure::Internal(_) => 500,
            Failure::Unimplemented(_) => 501,
            Failure::Unavailable(_) => 503,
        }
    }

    /// The gRPC code this failure maps to.
    #[cfg(feature = "grpc")]
    pub fn code(&self) -> Code {
        match self {
            Failure::InvalidArgument(_) | Failure::InvalidField { .. } => Code::InvalidArgument,
            Failure::Unauthenticated => Code::Unauthenticated,
            Failure::PermissionDenied(_) => Code::PermissionDenied,
            Failure::NotFound(_) | Failure::UnknownBank(_) => Code::NotFound,
            Failure::AlreadyExists(_) => Code::AlreadyExists,
            Failure::FailedPrecondition { .. } => Code::FailedPrecondition,
            Failure::Aborted(_) => Code::Aborted,
            Failure::Unavailable(_) => Code::Unavailable,
            Failure::Unimplemented(_) => Code::Unimplemented,
            Failure::ResourceExhausted(_) | Failure::RateLimited { .. } | Failure::TooLarge(_) => {
                Code::ResourceExhausted
            }
            Failure::Internal(_) => Code::Internal,
        }
    }
}

#[cfg(feature = "grpc")]
impl From<Failure> for Status {
    /// The status, with a `google.rpc.ErrorInfo` (reason, domain `strife`) in
    /// `grpc-status-details-bin` for every failure, a `google.rpc.BadRequest` for a bad field,
    /// and the reason also in the `x-strife-reason` trailer for preconditions (what the CLI
    /// and older clients read).
    fn from(failure: Failure) -> Self {
        let trailer_reason = match &failure {
            Failure::FailedPrecondition { reason_code, .. } => Some(reason_code.clone()),
            _ => None,
        };
        build_status(failure, trailer_reason, None)
    }
}

/// A refusal of a `Pay` or `Refund`: the failure, and — when the request got as far as a
/// recorded payment (refused by a bank, or still in flight under its key) — that payment's id
/// and its own reason code, which travel with the refusal on every transport.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PaymentRefusal {
    pub failure: Failure,
    pub payment_id: Option<String>,
    pub reason_code: Option<String>,
}

impl From<Failure> for PaymentRefusal {
    /// A refusal before anything was recorded.
    fn from(failure: Failure) -> Self {
        PaymentRefusal {
            failure,
            payment_id: None,
            reason_code: None,
        }
    }
}

#[cfg(feature = "grpc")]
impl From<PaymentRefusal> for Status {
    fn from(refusal: PaymentRefusal) -> Self {
        match refusal.payment_id {
            Some(payment_id) => {
                payment_refusal(refusal.failure, &payment_id, refusal.reason_code.as_deref())
            }
            None => refusal.failure.into(),
        }
    }
}

/// The status `Pay` answers for a payment that was recorded and then refused (or is still in
/// flight): as `From<Failure>`, but the `ErrorInfo.reason` and the `x-strife-reason` trailer
/// are the payment's own reason code (`insufficient_funds`, `bank_timeout`, …) when it has
/// one, and the payment id travels as `ErrorInfo.metadata["payment_id"]` and the
/// `x-strife-payment-id` trailer.
#[cfg(feature = "grpc")]
pub fn payment_refusal(failure: Failure, payment_id: &str, reason_code: Option<&str>) -> Status {
    let reason_code = reason_code
        .filter(|code| !code.is_empty())
        .map(str::to_owned)
        .or_else(|| match &failure {
            Failure::FailedPrecondition { reason_code, .. } => Some(reason_code.clone()),
            _ => None,
        });
    build_status(failure, reason_code, Some(payment_id))
}

/// The one constructor of Strife's statuses. `reason_code` (if any) replaces the failure's
/// class as `ErrorInfo.reason` and is sent as the `x-strife-reason` trailer.
#[cfg(feature = "grpc")]
fn build_status(failure: Failure, reason_code: Option<String>, payment_id: Option<&str>) -> Status {
    if let Failure::Internal(detail) = &failure {
        // The detail may name files or SQL; it goes to the log, not to the caller.
        tracing::error!(%detail, "internal error");
    }
    let message = failure.public_message();
    let mut info_metadata = HashMap::new();
    let mut trailers = MetadataMap::new();
    if let Some(code) = &reason_code {
        if let Ok(value) = code.parse() {
            trailers.insert(REASON_METADATA_KEY, value);
        }
    }
    if let Some(payment_id) = payment_id {
        info_metadata.insert(PAYMENT_ID_INFO_KEY.to_owned(), payment_id.to_owned());
        if let Ok(value) = payment_id.parse() {
            trailers.insert(crate::metadata::PAYMENT_ID_KEY, value);
        }
    }
    match &failure {
        Failure::InvalidField { field, .. } => {
            info_metadata.insert(FIELD_INFO_KEY.to_owned(), field.clone());
        }
        Failure::UnknownBank(bank_id) => {
            info_metadata.insert(BANK_ID_INFO_KEY.to_owned(), bank_id.clone());
        }
        _ => {}
    }
    let reason = reason_code.unwrap_or_else(|| failure.reason().to_owned());
    let mut details = ErrorDetails::with_error_info(reason, ERROR_DOMAIN, info_metadata);
    if let Failure::InvalidField { field, message } = &failure {
        details.add_bad_request_violation(field.clone(), message.clone());
    }
    if let Failure::RateLimited { retry_after, .. } = &failure {
        details.set_retry_info(Some(*retry_after));
    }
    Status::with_error_details_and_metadata(failure.code(), message, details, trailers)
}

/// The `ErrorInfo.reason` of a status from a Strife server (`unknown_bank`, `too_large`,
/// `insufficient_funds`, …), if it carries one in domain `strife`.
#[cfg(feature = "grpc")]
pub fn error_reason(status: &Status) -> Option<String> {
    status
        .get_details_error_info()
        .filter(|info| info.domain == ERROR_DOMAIN)
        .map(|info| info.reason)
}

/// Reads the machine-readable reason a server attached to a status, if any.
#[cfg(feature = "grpc")]
pub fn reason_of(status: &Status) -> Option<String> {
    status
        .metadata()
        .get(REASON_METADATA_KEY)
        .and_then(|value| value.to_str().ok())
        .map(str::to_owned)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    #[cfg(feature = "grpc")]
    fn every_failure_carries_an_error_info_with_its_reason() {
        let status = Status::from(Failure::precondition("insufficient_funds", "not enough"));
        let info = status.get_details_error_info().unwrap();
        assert_eq!(info.reason, "insufficient_funds");
        assert_eq!(info.domain, ERROR_DOMAIN);
        let status = Status::from(Failure::NotFound("payment p not found".into()));
        assert_eq!(status.code(), Code::NotFound);
        assert_eq!(status.get_details_error_info().unwrap().reason, "not_found");
        let status = Status::from(Failure::internal("open db", "/secret/path"));
        assert_eq!(status.get_details_error_info().unwrap().reason, "internal");
        assert!(!status.message().contains("secret"));
    }

    #[test]
    #[cfg(feature = "grpc")]
    fn a_bad_field_carries_a_bad_request_naming_it() {
        let status = Status::from(Failure::invalid_field(
            "amount.amount_minor",
            "amount.amount_minor must be greater than zero",
        ));
        assert_eq!(status.code(), Code::InvalidArgument);
        assert_eq!(
            status.message(),
            "amount.amount_minor must be greater than zero"
        );
        let details = status.get_error_details();
        let info = details.error_info().unwrap();
        assert_eq!(info.reason, "invalid_argument");
        assert_eq!(info.metadata["field"], "amount.amount_minor");
        let violations = &details.bad_request().unwrap().field_violations;
        assert_eq!(violations.len(), 1);
        assert_eq!(violations[0].field, "amount.amount_minor");
        assert_eq!(
            violations[0].description,
            "amount.amount_minor must be greater than zero"
        );
    }

    #[test]
    fn a_field_message_always_names_its_field() {
        let failure = Failure::invalid_field("currency", "unknown currency \"XYZ\"");
        assert_eq!(failure.to_string(), "currency: unknown currency \"XYZ\"");
        let failure = Failure::invalid_field("payment_id", "payment_id is empty");
        assert_eq!(failure.to_string(), "payment_id is empty");
        let failure = Failure::invalid_field("amount", "amount.amount_minor is 0");
        assert_eq!(failure.to_string(), "amount: amount.amount_minor is 0");
    }

    #[test]
    #[cfg(feature = "grpc")]
    fn an_unknown_bank_is_not_found_with_its_own_reason() {
        let status = Status::from(Failure::UnknownBank("bank9".into()));
        assert_eq!(status.code(), Code::NotFound);
        let info = status.get_details_error_info().unwrap();
        assert_eq!(info.reason, "unknown_bank");
        assert_eq!(info.metadata["bank_id"], "bank9");
        assert!(status.message().contains("bank9"), "{}", status.message());
    }

    #[test]
    #[cfg(feature = "grpc")]
    fn a_refused_payment_carries_its_reason_code_and_id() {
        let status = payment_refusal(
            Failure::Unavailable("bank bank1 did not answer".into()),
            "p-1",
            Some("bank_timeout"),
        );
        assert_eq!(status.code(), Code::Unavailable);
        assert_eq!(reason_of(&status).as_deref(), Some("bank_timeout"));
        let info = status.get_details_error_info().unwrap();
        assert_eq!(info.reason, "bank_timeout");
        assert_eq!(info.metadata["payment_id"], "p-1");
        assert_eq!(
            status
                .metadata()
                .get(crate::metadata::PAYMENT_ID_KEY)
                .unwrap(),
            "p-1"
        );
        let in_flight = payment_refusal(Failure::Aborted("in progress".into()), "p-2", None);
        assert_eq!(
            in_flight.get_details_error_info().unwrap().reason,
            "in_progress"
        );
        assert_eq!(reason_of(&in_flight), None);
    }

    #[test]
    #[cfg(feature = "grpc")]
    fn a_client_reads_the_reason_back() {
        let status = Status::from(Failure::UnknownBank("bank9".into()));
        assert_eq!(error_reason(&status).as_deref(), Some(reason::UNKNOWN_BANK));
        assert_eq!(error_reason(&Status::not_found("bare")), None);
    }

    #[test]
    #[cfg(feature = "grpc")]
    fn precondition_carries_reason_code() {
        let status = Status::from(Failure::precondition("insufficient_funds", "not enough"));
        assert_eq!(status.code(), Code::FailedPrecondition);
        assert_eq!(reason_of(&status).as_deref(), Some("insufficient_funds"));
    }

    #[test]
    #[cfg(feature = "grpc")]
    fn internal_detail_is_not_sent() {
        let status = Status::from(Failure::internal("open db", "/secret/path"));
        assert_eq!(status.code(), Code::Internal);
        assert!(!status.message().contains("/secret/path"));
    }

    #[test]
    #[cfg(feature = "grpc")]
    fn resource_exhausted_keeps_its_message() {
        let status = Status::from(Failure::ResourceExhausted("slow down".into()));
        assert_eq!(status.code(), Code::ResourceExhausted);
        assert_eq!(status.message(), "slow down");
    }

    #[test]
    #[cfg(feature = "grpc")]
    fn a_rate_limit_says_how_long_to_wait() {
        let status = Status::from(Failure::RateLimited {
            message: "rate limit".into(),
            retry_after: std::time::Duration::from_millis(250),
        });
        assert_eq!(status.code(), Code::ResourceExhausted);
        let details = status.get_error_details();
        let retry = details.retry_info().and_then(|info| info.retry_delay);
        assert_eq!(retry, Some(std::time::Duration::from_millis(250)));
        assert_eq!(
            details.error_info().map(|info| info.reason.as_str()),
            Some(reason::RESOURCE_EXHAUSTED)
        );
    }

    #[test]
    #[cfg(feature = "grpc")]
    fn unauthenticated_says_nothing_specific() {
        let status = Status::from(Failure::Unauthenticated);
        assert_eq!(status.code(), Code::Unauthenticated);
        assert_eq!(status.message(), "authentication failed");
    }
}
