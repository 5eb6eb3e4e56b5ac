//! Every machine-readable reason code Strife sends — as `google.rpc.ErrorInfo.reason`, in the
//! `x-strife-reason` trailer, as a payment's `reason_code` — spelled once, here. Clients act
//! on these strings (docs/SPEC.md §7), so each one is part of the wire contract: add, never
//! rename. The lists below are built from the constants, so a list cannot name a code that
//! does not exist.

// ── The class of a refusal (what `Failure::reason` says when nothing more specific applies) ──

pub const INVALID_ARGUMENT: &str = "invalid_argument";
pub const UNAUTHENTICATED: &str = "unauthenticated";
pub const PERMISSION_DENIED: &str = "permission_denied";
pub const NOT_FOUND: &str = "not_found";
/// A bank id that is not part of the network (never registered).
pub const UNKNOWN_BANK: &str = "unknown_bank";
pub const ALREADY_EXISTS: &str = "already_exists";
/// The same idempotency key is still in flight.
pub const IN_PROGRESS: &str = "in_progress";
pub const UNAVAILABLE: &str = "unavailable";
pub const UNIMPLEMENTED: &str = "unimplemented";
/// A limit that passes with time (a locked login, a rate limit, a full queue).
pub const RESOURCE_EXHAUSTED: &str = "resource_exhausted";
/// A request message or its metadata is over the size limit; the same request will always be
/// refused.
pub const TOO_LARGE: &str = "too_large";
pub const INTERNAL: &str = "internal";
/// An idempotency key reused with other parameters, as the HTTP API names it (422); gRPC
/// answers it `INVALID_ARGUMENT` with reason `invalid_argument` and field `idempotency_key`.
pub const IDEMPOTENCY_KEY_REUSED: &str = "idempotency_key_reused";

// ── Why a bank voted NO on a leg (stored with the ABORTED leg and the payment) ─────────────

pub const ACCOUNT_NOT_FOUND: &str = "account_not_found";
pub const CURRENCY_MISMATCH: &str = "currency_mismatch";
pub const INSUFFICIENT_FUNDS: &str = "insufficient_funds";
pub const BALANCE_OVERFLOW: &str = "balance_overflow";
/// The account number belongs to someone other than the owner the gateway linked.
pub const ACCOUNT_OWNER_MISMATCH: &str = "account_owner_mismatch";
/// A leg the coordinator aborted after the bank prepared it.
pub const ABORTED_BY_COORDINATOR: &str = "aborted_by_coordinator";
/// A leg aborted before its prepare arrived (a late prepare then votes NO).
pub const ABORTED_BEFORE_PREPARE: &str = "aborted_before_prepare";
/// A bank refused a call without a reason of its own (what the gateway records then).
pub const BANK_REFUSED: &str = "bank_refused";

// ── Why the coordinator aborted a payment for a reason outside the request ────────────────

pub const BANK_TIMEOUT: &str = "bank_timeout";
pub const BANK_UNAVAILABLE: &str = "bank_unavailable";
pub const GATEWAY_RESTARTED: &str = "gateway_restarted";
pub const DECISION_TIMEOUT: &str = "decision_timeout";

// ── Settlement and refund refusals (`FAILED_PRECONDITION`; docs/SPEC.md §9) ───────────────

/// The payment's reservation would take the payer bank's net debit past its cap. Nothing was
/// recorded and no bank was asked, so the same idempotency key pays once the cap allows it
/// (raised, or positions freed by settling a window).
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

// ── Authorizations (docs/SPEC.md §4) ───────────────────────────────────────────────────────

/// An authorization reached its expiry before it was captured: its hold was released (the
/// payment's abort reason), or a capture came too late (`FAILED_PRECONDITION`).
pub const AUTHORIZATION_EXPIRED: &str = "authorization_expired";
/// An authorization was voided (the payment's abort reason).
pub const AUTHORIZATION_VOIDED: &str = "authorization_voided";
/// Capturing or voiding a payment that is not an open authorization (a plain payment, one
/// still being authorized, or one already captured or released).
pub const NOT_AUTHORIZED: &str = "payment_not_authorized";

// ── The lists ─────────────────────────────────────────────────────────────────────────────

/// Reasons a payment is aborted for that lie outside the request (a bank or the gateway was
/// down or slow). Such a payment moved no money and has a durable ABORT decision, so a retry
/// with the same idempotency key runs a new attempt; every other abort reason is final.
pub const TRANSIENT_ABORTS: &[&str] = &[
    BANK_TIMEOUT,
    BANK_UNAVAILABLE,
    GATEWAY_RESTARTED,
    DECISION_TIMEOUT,
];

/// Every reason a payment can be aborted for: the banks' refusals and the coordinator's own.
/// What the metrics label a decision with (anything else is `other`, so the label set stays
/// bounded whatever a bank sends).
pub const ABORTS: &[&str] = &[
    INSUFFICIENT_FUNDS,
    ACCOUNT_NOT_FOUND,
    CURRENCY_MISMATCH,
    BALANCE_OVERFLOW,
    ACCOUNT_OWNER_MISMATCH,
    ABORTED_BY_COORDINATOR,
    ABORTED_BEFORE_PREPARE,
    BANK_TIMEOUT,
    BANK_UNAVAILABLE,
    GATEWAY_RESTARTED,
    DECISION_TIMEOUT,
    AUTHORIZATION_EXPIRED,
    AUTHORIZATION_VOIDED,
];

/// The settlement, refund and authorization refusals.
pub const SETTLEMENT: &[&str] = &[
    NET_DEBIT_CAP_EXCEEDED,
    POSITION_OVERFLOW,
    WINDOW_NOT_OPEN,
    WINDOW_OPEN,
    WINDOW_ALREADY_SETTLED,
    PAYMENT_NOT_COMMITTED,
    PAYMENT_IS_A_REFUND,
    REFUND_EXCEEDS_PAYMENT,
    NOT_AUTHORIZED,
];

/// Whether a payment aborted for `code` may be retried under the same key.
pub fn is_transient_abort(code: Option<&str>) -> bool {
    code.is_some_and(|code| TRANSIENT_ABORTS.contains(&code))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_are_lower_snake_case_and_lists_hold_no_duplicates() {
        let every: Vec<&str> = [
            &[
                INVALID_ARGUMENT,
                UNAUTHENTICATED,
                PERMISSION_DENIED,
                NOT_FOUND,
                UNKNOWN_BANK,
                ALREADY_EXISTS,
                IN_PROGRESS,
                UNAVAILABLE,
                UNIMPLEMENTED,
                RESOURCE_EXHAUSTED,
                TOO_LARGE,
                INTERNAL,
                IDEMPOTENCY_KEY_REUSED,
                BANK_REFUSED,
            ][..],
            ABORTS,
            SETTLEMENT,
        ]
        .concat();
        let mut unique = every.clone();
        unique.sort_unstable();
        unique.dedup();
        assert_eq!(unique.len(), every.len(), "a code listed twice");
        for code in every {
            assert!(
                code.bytes().all(|b| b.is_ascii_lowercase() || b == b'_'),
                "{code}"
            );
        }
        assert!(TRANSIENT_ABORTS.iter().all(|code| ABORTS.contains(code)));
        assert!(is_transient_abort(Some(BANK_TIMEOUT)));
        assert!(!is_transient_abort(Some(INSUFFICIENT_FUNDS)));
        assert!(!is_transient_abort(None));
    }
}
