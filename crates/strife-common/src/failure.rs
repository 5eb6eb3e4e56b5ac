//! The one place where a refusal becomes a gRPC status (SPEC §7). Handlers return
//! [`Failure`]; only `From<Failure> for Status` decides codes, so the mapping cannot drift.

use tonic::{Code, Status};

/// Metadata key carrying the machine-readable reason of a `FAILED_PRECONDITION` (and of
/// aborted payments), e.g. `insufficient_funds`.
pub const REASON_METADATA_KEY: &str = "x-strife-reason";

/// Reasons a payment is aborted for that lie outside the request (a bank or the gateway was
/// down or slow). Such a payment moved no money and has a durable ABORT decision, so a retry
/// with the same idempotency key runs a new attempt; every other abort reason is final.
pub const TRANSIENT_ABORT_REASONS: &[&str] = &[
    "bank_timeout",
    "bank_unavailable",
    "gateway_restarted",
    "decision_timeout",
];

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

    /// The gRPC code this failure maps to.
    pub fn code(&self) -> Code {
        match self {
            Failure::InvalidArgument(_) => Code::InvalidArgument,
            Failure::Unauthenticated => Code::Unauthenticated,
            Failure::PermissionDenied(_) => Code::PermissionDenied,
            Failure::NotFound(_) => Code::NotFound,
            Failure::AlreadyExists(_) => Code::AlreadyExists,
            Failure::FailedPrecondition { .. } => Code::FailedPrecondition,
            Failure::Aborted(_) => Code::Aborted,
            Failure::Unavailable(_) => Code::Unavailable,
            Failure::ResourceExhausted(_) => Code::ResourceExhausted,
            Failure::Internal(_) => Code::Internal,
        }
    }
}

impl From<Failure> for Status {
    fn from(failure: Failure) -> Self {
        match &failure {
            Failure::Internal(detail) => {
                // The detail may name files or SQL; it goes to the log, not to the caller.
                tracing::error!(%detail, "internal error");
                Status::internal("internal error; see the server log")
            }
            Failure::FailedPrecondition {
                reason_code,
                message,
            } => {
                let mut status = Status::failed_precondition(message.clone());
                if let Ok(value) = reason_code.parse() {
                    status.metadata_mut().insert(REASON_METADATA_KEY, value);
                }
                status
            }
            other => Status::new(other.code(), other.to_string()),
        }
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
