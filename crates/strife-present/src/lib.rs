//! How Strife shows things to people: money, payment statuses, times, a payment's refund
//! link and the sentence for a refusal. One wording for every front end — the CLI
//! (`strife-client`'s `render.rs`) and the web console (`strife-gateway`'s `web/html.rs`) —
//! so a payment reads the same wherever it is looked at. Escaping, layout and HTTP statuses
//! stay with each front end.
//!
//! Its own crate, not a module of `strife-common`: it reads the wire types (`pb::Money`,
//! `pb::Payment`, the `PaymentStatus` numbers), and `strife-common` stays free of
//! `strife-proto` (it is what every process shares, `strife-pki` included, and builds without
//! waiting for the generated code); nor are processes that show nothing to people (banks,
//! the audit) made to carry it.
//!
//! Refusals are worded from transport-neutral inputs ([`refusal`]: the failure's class as a
//! gRPC code, the `ErrorInfo` reason, the message), so a front end that holds a
//! `strife_common::Failure` ([`refusal_for`]) or a `tonic::Status` ([`refusal_of`]) words it
//! the same way.

use strife_common::failure::{error_reason, reason_of};
use strife_common::money::{self, Amount};
use strife_common::reason;
use strife_common::Failure;
use strife_proto::v1 as pb;
use tonic::{Code, Status};

/// `12.50 USD`; an unknown currency as its raw minor units and code (`1250 minor XYZ`); no
/// amount as `-`.
pub fn money(value: Option<&pb::Money>) -> String {
    let Some(value) = value else {
        return "-".into();
    };
    match money::currency(&value.currency) {
        Ok(currency) => Amount {
            amount_minor: value.amount_minor,
            currency,
        }
        .to_string(),
        Err(_) => format!("{} minor {}", value.amount_minor, value.currency),
    }
}

/// `COMMITTED`, `ABORTED`, `PENDING`, `AUTHORIZED`; anything else (a newer server's status)
/// `UNKNOWN`.
pub fn status_name(status: i32) -> &'static str {
    match pb::PaymentStatus::try_from(status) {
        Ok(pb::PaymentStatus::Committed) => "COMMITTED",
        Ok(pb::PaymentStatus::Aborted) => "ABORTED",
        Ok(pb::PaymentStatus::Pending) => "PENDING",
        Ok(pb::PaymentStatus::Authorized) => "AUTHORIZED",
        _ => "UNKNOWN",
    }
}

/// What a payment event says happened, in lower case: `committed` or `aborted`, and for an
/// authorization `captured`, `voided` or `expired` (`aborted` when it was refused outright);
/// `authorized` and `pending` for a payment not decided yet. Event types and ids are built
/// from it.
pub fn event_outcome(payment: &pb::Payment) -> &'static str {
    let authorization = payment.expires_unix_ms > 0;
    match pb::PaymentStatus::try_from(payment.status) {
        Ok(pb::PaymentStatus::Committed) if authorization => "captured",
        Ok(pb::PaymentStatus::Committed) => "committed",
        Ok(pb::PaymentStatus::Aborted) if authorization => match payment.reason_code.as_str() {
            strife_common::reason::AUTHORIZATION_VOIDED => "voided",
            strife_common::reason::AUTHORIZATION_EXPIRED => "expired",
            _ => "aborted",
        },
        Ok(pb::PaymentStatus::Aborted) => "aborted",
        Ok(pb::PaymentStatus::Authorized) => "authorized",
        _ => "pending",
    }
}

/// UTC `YYYY-MM-DD HH:MM:SS` for a Unix-millisecond time. Zero or less is `-`: the messages
/// use 0 for "not yet" (a window not closed, a payment not decided), which must not read as
/// a date in 1970.
/// [`timestamp`], or `none` for a time that is not set (0: a key that never expires, was
/// never used, …).
pub fn timestamp_or(unix_ms: i64, none: &str) -> String {
    if unix_ms > 0 {
        timestamp(unix_ms)
    } else {
        none.to_owned()
    }
}

pub fn timestamp(unix_ms: i64) -> String {
    if unix_ms <= 0 {
        return "-".into();
    }
    let format = time::macros::format_description!("[year]-[month]-[day] [hour]:[minute]:[second]");
    time::OffsetDateTime::from_unix_timestamp(unix_ms / 1000)
        .ok()
        .and_then(|at| at.format(&format).ok())
        .unwrap_or_else(|| "-".into())
}

/// A payment's refund link in a few words, for a row of a list: what it refunds
/// (`refund of 0193a2b4…`), or how much of it was refunded (`refunded in full`,
/// `2.50 USD refunded`); empty when neither.
pub fn refund_note(payment: &pb::Payment) -> String {
    if !payment.refund_of.is_empty() {
        let short: String = payment.refund_of.chars().take(8).collect();
        return format!("refund of {short}…");
    }
    match &payment.refunded {
        Some(refunded)
            if refunded.amount_minor
                == payment
                    .amount
                    .as_ref()
                    .map_or(-1, |amount| amount.amount_minor) =>
        {
            "refunded in full".into()
        }
        Some(refunded) => format!("{} refunded", money(Some(refunded))),
        None => String::new(),
    }
}

/// The sentence for a refusal, in the user's terms: from the failure's class (`code`, the
/// gRPC code `strife_common::failure` gives it), its `ErrorInfo` reason when one is known,
/// and its message (servers never put internals in it: an internal error's message is
/// already "internal error; see the server log").
pub fn refusal(code: Code, reason: Option<&str>, message: &str) -> String {
    match code {
        Code::Unauthenticated => {
            "authentication failed: check your user name, password and certificate".into()
        }
        Code::PermissionDenied => format!("not allowed: {message}"),
        Code::NotFound if reason == Some(reason::UNKNOWN_BANK) => {
            format!("unknown bank: {message}")
        }
        Code::NotFound => format!("not found: {message}"),
        Code::AlreadyExists => format!("already exists: {message}"),
        Code::InvalidArgument => format!("invalid request: {message}"),
        Code::FailedPrecondition => match reason {
            Some(reason::INSUFFICIENT_FUNDS) => format!("payment declined: {message}"),
            Some(reason::NET_DEBIT_CAP_EXCEEDED) => format!(
                "payment declined: the paying bank's net debit cap would be exceeded ({message})"
            ),
            _ => format!("refused: {message}"),
        },
        Code::Unavailable | Code::DeadlineExceeded | Code::Unknown | Code::Cancelled => {
            format!("the gateway or a bank is unreachable ({message})")
        }
        Code::Aborted => format!("try again: {message}"),
        Code::ResourceExhausted if reason == Some(reason::TOO_LARGE) => {
            format!("request too large: {message}")
        }
        Code::ResourceExhausted => format!("too many requests, try again later: {message}"),
        _ => format!("failed: {message}"),
    }
}

/// [`refusal`] for a status: its code, its `ErrorInfo` reason (or, from a server that sent
/// none, the `x-strife-reason` trailer) and its message.
pub fn refusal_of(status: &Status) -> String {
    let reason = error_reason(status).or_else(|| reason_of(status));
    refusal(status.code(), reason.as_deref(), status.message())
}

/// [`refusal`] for a failure not yet turned into a status (a front end that calls the
/// service directly): its code, its reason and the message a caller may see (never an
/// internal error's detail).
pub fn refusal_for(failure: &Failure) -> String {
    refusal(
        failure.code(),
        Some(failure.reason()),
        &failure.public_message(),
    )
}

#[cfg(test)]
mod tests {

    use super::*;

    #[test]
    fn an_event_names_how_an_authorization_ended() {
        let event = |status: pb::PaymentStatus, expires_unix_ms: i64, reason_code: &str| {
            event_outcome(&pb::Payment {
                status: status as i32,
                expires_unix_ms,
                reason_code: reason_code.into(),
                ..pb::Payment::default()
            })
        };
        use pb::PaymentStatus::{Aborted, Authorized, Committed};
        assert_eq!(event(Committed, 0, ""), "committed");
        assert_eq!(event(Aborted, 0, "insufficient_funds"), "aborted");
        assert_eq!(event(Committed, 9, ""), "captured");
        assert_eq!(event(Aborted, 9, "authorization_voided"), "voided");
        assert_eq!(event(Aborted, 9, "authorization_expired"), "expired");
        assert_eq!(event(Aborted, 9, "insufficient_funds"), "aborted");
        assert_eq!(event(Authorized, 9, ""), "authorized");
        assert_eq!(status_name(Authorized as i32), "AUTHORIZED");
    }

    fn usd(amount_minor: i64) -> Option<pb::Money> {
        Some(pb::Money {
            amount_minor,
            currency: "USD".into(),
        })
    }

    #[test]
    fn money_statuses_and_times_read_the_same_everywhere() {
        assert_eq!(money(usd(1_250).as_ref()), "12.50 USD");
        assert_eq!(money(None), "-");
        let odd = pb::Money {
            amount_minor: 7,
            currency: "XYZ".into(),
        };
        assert_eq!(money(Some(&odd)), "7 minor XYZ");
        assert_eq!(
            status_name(pb::PaymentStatus::Committed as i32),
            "COMMITTED"
        );
        assert_eq!(status_name(pb::PaymentStatus::Aborted as i32), "ABORTED");
        assert_eq!(status_name(pb::PaymentStatus::Pending as i32), "PENDING");
        assert_eq!(status_name(99), "UNKNOWN");
        assert_eq!(timestamp(1_700_000_000_999), "2023-11-14 22:13:20");
        assert_eq!(timestamp(0), "-");
        assert_eq!(timestamp(-1), "-");
        assert_eq!(timestamp(i64::MAX), "-");
    }

    #[test]
    fn a_refund_note_names_the_original_or_what_was_refunded() {
        let refund = pb::Payment {
            refund_of: "0193a2b4-7c1d-7000-8000-000000000000".into(),
            ..Default::default()
        };
        assert_eq!(refund_note(&refund), "refund of 0193a2b4…");
        let mut paid = pb::Payment {
            amount: usd(1_000),
            ..Default::default()
        };
        assert_eq!(refund_note(&paid), "");
        paid.refunded = usd(250);
        assert_eq!(refund_note(&paid), "2.50 USD refunded");
        paid.refunded = usd(1_000);
        assert_eq!(refund_note(&paid), "refunded in full");
    }

    #[test]
    fn refusals_are_worded_by_class_and_reason() {
        let declined = Status::from(Failure::precondition("insufficient_funds", "not enough"));
        assert_eq!(refusal_of(&declined), "payment declined: not enough");
        let other = Status::from(Failure::precondition("window_open", "still open"));
        assert_eq!(refusal_of(&other), "refused: still open");
        let too_large = Status::from(Failure::TooLarge("memo".into()));
        assert!(refusal_of(&too_large).starts_with("request too large: "));
        let busy = Status::from(Failure::ResourceExhausted("slow down".into()));
        assert!(refusal_of(&busy).starts_with("too many requests, try again later: "));
        assert_eq!(
            refusal(Code::Unauthenticated, None, "bad password"),
            "authentication failed: check your user name, password and certificate"
        );
        assert_eq!(
            refusal(Code::DeadlineExceeded, None, "deadline"),
            "the gateway or a bank is unreachable (deadline)"
        );
        // The same words whether the input came as a status or as its parts.
        assert_eq!(
            refusal(
                Code::FailedPrecondition,
                Some("insufficient_funds"),
                "not enough"
            ),
            refusal_of(&declined)
        );
        // A failure reads as the status it becomes, and never shows an internal detail.
        for failure in [
            Failure::precondition("insufficient_funds", "not enough"),
            Failure::TooLarge("memo".into()),
            Failure::NotFound("payment p".into()),
            Failure::internal("open db", "/secret/path"),
        ] {
            assert_eq!(
                refusal_for(&failure),
                refusal_of(&Status::from(failure.clone()))
            );
        }
        let internal = refusal_for(&Failure::internal("open db", "/secret/path"));
        assert!(!internal.contains("secret"), "{internal}");
        // A status from before `ErrorInfo`: the trailer still names the reason.
        let mut trailer_only = Status::failed_precondition("short");
        trailer_only.metadata_mut().insert(
            strife_common::failure::REASON_METADATA_KEY,
            tonic::metadata::MetadataValue::from_static("insufficient_funds"),
        );
        assert_eq!(refusal_of(&trailer_only), "payment declined: short");
    }
}
