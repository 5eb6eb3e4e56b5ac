//! The one place where a refusal becomes a gRPC status (docs/SPEC.md §7). Handlers return
//! [`Failure`]; only `From<Failure> for Status` decides codes, so the mapping cannot drift.

use std::collections::HashMap;

use tonic::metadata::MetadataMap;
use tonic::{Code, Status};
use tonic_types::{ErrorDetails, StatusExt};

/// Metadata key carrying the machine-readable reason of a `FAILED_PRECONDITION` (and of
/// aborted payments), e.g. `insufficient_funds`.
pub const REASON_METADATA_KEY: &str = "x-strife-reason";

/// The `domain` of every `google.rpc.ErrorInfo` Strife attaches.
pub const ERROR_DOMAIN: &str = "strife";
/// Reasons a payment is aborted for that lie outside the request (a bank or the gateway was
/// down or slow). Such a payment moved no money and has a durable ABORT decision, so a retry
/// with the same idempotency key runs a new attempt; every other abort reason is final.
pub const TRANSIENT_ABORT_REASONS: &[&str] = &[
    "bank_timeout",
    "bank_unavailable",
    "gateway_restarted",
    "decision_timeout",
];

/// Reason codes of settlement and refund refusals (`FAILED_PRECONDITION`), defined once here;
/// `strife-gateway`'s `settlement` module decides when each applies (docs/SPEC.md §9).
pub mod settlement {
    /// The payment's reservation would take the payer bank's net debit past its cap. Nothing
    /// was recorded and no bank was asked, so the same idempotency key pays once the cap
    /// allows it (raised, or positions freed by settling a window).
    pub const NET_DEBIT_CAP_EXCEEDED: &str = "net_debit_cap_exceeded";
    /// A position or reservation would leave the 64-bit range (never wraps or saturates).
    pub const POSITION_OVERFLOW: &str = "position_overflow";
    /// Closing a window that is not the open one (already closed, e.g. a retried close).
    pub const WINDOW_NOT_OPEN: &str = "window_not_open";
    /// Settling the window that is still open.
    pub const WINDOW_OPEN: &str = "window_open";
    /// Settling a window that was settled before.
    pub const WINDOW_ALREADY_SETTLED: &str = "window_already_settled";
    /// Refunding a payment that is not COMMITTED (aborted, or still in flight).
    pub const PAYMENT_NOT_COMMITTED: &str = "payment_not_committed";
    /// Refunding a refund.
    pub const PAYMENT_IS_A_REFUND: &str = "payment_is_a_refund";
    /// A refund larger than what is left of the original (refunded and in-flight refunds
    /// counted).
    pub const REFUND_EXCEEDS_PAYMENT: &str = "refund_exceeds_payment";
}

/// `ErrorInfo.reason` of [`Failure::UnknownBank`].
pub const UNKNOWN_BANK_REASON: &str = "unknown_bank";

/// Every way a Strife request can be refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Failure {
    /// Bad amount, bad field, unknown currency, idempotency key reused with other parameters.
    #[error("{0}")]
    InvalidArgument(String),
    /// No or invalid credentials. Deliberately carries no detail that helps an attacker.
    #[error("authentication failed")]
    Unauthenticated,
    /// Authenticated but not allowed.
    #[error("{0}")]
    PermissionDenied(String),
    /// Unknown user, account, payment or leg.
    #[error("{0}")]
    NotFound(String),
    /// A bank id that is not part of the network (not registered, and unknown to the
    /// gateway's records). `NOT_FOUND` with reason [`UNKNOWN_BANK_REASON`].
    #[error("bank {0} is not part of this network")]
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
    /// A bank is not registered or not reachable.
    #[error("{0}")]
    Unavailable(String),
    /// No such method or service.
    #[error("{0}")]
    Unimplemented(String),
    /// A per-user or per-process limit was reached (login attempts, password checks queued,
    /// refused payments per minute). Nothing was done; the same request may succeed later.
    #[error("{0}")]
    ResourceExhausted(String),
    /// A bug or a storage failure. The detail is logged, not sent.
    #[error("internal error: {0}")]
    Internal(String),
}

impl Failure {
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

    /// The machine-readable reason sent as `ErrorInfo.reason`: a precondition's own reason
    /// code (`insufficient_funds`, …), otherwise the failure's class.
    pub fn reason(&self) -> &str {
        match self {
            Failure::InvalidArgument(_) => "invalid_argument",
            Failure::Unauthenticated => "unauthenticated",
            Failure::PermissionDenied(_) => "permission_denied",
            Failure::NotFound(_) => "not_found",
            Failure::UnknownBank(_) => UNKNOWN_BANK_REASON,
            Failure::AlreadyExists(_) => "already_exists",
            Failure::FailedPrecondition { reason_code, .. } => reason_code,
            Failure::Aborted(_) => "in_progress",
            Failure::Unavailable(_) => "unavailable",
            Failure::Unimplemented(_) => "unimplemented",
            Failure::ResourceExhausted(_) => "resource_exhausted",
            Failure::Internal(_) => "internal",
        }
    }

    /// The gRPC code this failure maps to.
    pub fn code(&self) -> Code {
        match self {
            Failure::InvalidArgument(_) => Code::InvalidArgument,
            Failure::Unauthenticated => Code::Unauthenticated,
            Failure::PermissionDenied(_) => Code::PermissionDenied,
            Failure::NotFound(_) | Failure::UnknownBank(_) => Code::NotFound,
            Failure::AlreadyExists(_) => Code::AlreadyExists,
            Failure::FailedPrecondition { .. } => Code::FailedPrecondition,
            Failure::Aborted(_) => Code::Aborted,
            Failure::Unavailable(_) => Code::Unavailable,
            Failure::Unimplemented(_) => Code::Unimplemented,
            Failure::ResourceExhausted(_) => Code::ResourceExhausted,
            Failure::Internal(_) => Code::Internal,
        }
    }
}

impl From<Failure> for Status {
    /// The status, with a `google.rpc.ErrorInfo` (reason, domain `strife`) in
    /// `grpc-status-details-bin` for every failure, and the reason also in the
    /// `x-strife-reason` trailer for preconditions (what the CLI and older clients read).
    fn from(failure: Failure) -> Self {
        let message = match &failure {
            Failure::Internal(detail) => {
                // The detail may name files or SQL; it goes to the log, not to the caller.
                tracing::error!(%detail, "internal error");
                "internal error; see the server log".to_owned()
            }
            other => other.to_string(),
        };
        let mut metadata = MetadataMap::new();
        if let Failure::FailedPrecondition { reason_code, .. } = &failure {
            if let Ok(value) = reason_code.parse() {
                metadata.insert(REASON_METADATA_KEY, value);
            }
        }
        let details = ErrorDetails::with_error_info(failure.reason(), ERROR_DOMAIN, HashMap::new());
        Status::with_error_details_and_metadata(failure.code(), message, details, metadata)
    }
}

/// Reads the machine-readable reason a server attached to a status, if any.
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
    fn an_unknown_bank_is_not_found_with_its_own_reason() {
        let status = Status::from(Failure::UnknownBank("bank9".into()));
        assert_eq!(status.code(), Code::NotFound);
        assert!(status.message().contains("bank9"));
        assert_eq!(
            status.get_details_error_info().unwrap().reason,
            UNKNOWN_BANK_REASON
        );
    }

    #[test]
    fn precondition_carries_reason_code() {
        let status = Status::from(Failure::precondition("insufficient_funds", "not enough"));
        assert_eq!(status.code(), Code::FailedPrecondition);
        assert_eq!(reason_of(&status).as_deref(), Some("insufficient_funds"));
    }

    #[test]
    fn internal_detail_is_not_sent() {
        let status = Status::from(Failure::internal("open db", "/secret/path"));
        assert_eq!(status.code(), Code::Internal);
        assert!(!status.message().contains("/secret/path"));
    }

    #[test]
    fn resource_exhausted_keeps_its_message() {
        let status = Status::from(Failure::ResourceExhausted("slow down".into()));
        assert_eq!(status.code(), Code::ResourceExhausted);
        assert_eq!(status.message(), "slow down");
    }

    #[test]
    fn unauthenticated_says_nothing_specific() {
        let status = Status::from(Failure::Unauthenticated);
        assert_eq!(status.code(), Code::Unauthenticated);
        assert_eq!(status.message(), "authentication failed");
    }
}
