//! A payment's lifecycle at the gateway as plain decisions, without I/O (as the bank's
//! `participant.rs`): what an idempotency key's stored payment means for a new request
//! ([`begin`]), what two votes decide ([`decide`]), when a PENDING payment is overdue
//! ([`overdue`]), and what the client is answered for a stored payment ([`outcome`]).
//! [`crate::store`] executes these decisions inside its transactions; [`crate::coordinator`]
//! gathers the votes; [`crate::api`] turns the outcome into a response.
//!
//! Invariant: **only this module decides the idempotency policy**.
//!
//! ```text
//!   key unused ─────────────────────────────────────▶ Record (new PENDING attempt)
//!   key used, other parameters ─────────────────────▶ INVALID_ARGUMENT
//!   key used, same parameters:  PENDING ────────────▶ InFlight  (ABORTED "in progress")
//!                               COMMITTED ──────────▶ Replay
//!                               ABORTED, business ──▶ Replay    (the same refusal)
//!                               ABORTED, transient ─▶ RecordAgain (no money moved)
//! ```

use std::time::Duration;

use strife_common::reason::{self, TRANSIENT_ABORTS};
use strife_common::Failure;

use crate::records::{metadata_to_json, PaymentRecord, PaymentStatus};

/// What identifies "the same request" for idempotency: everything the payer chose. A refund
/// also names its original (and its amount is the one asked for: 0 = "the rest", so a retry
/// of "refund the rest" matches however much that turned out to be).
pub fn fingerprint(record: &PaymentRecord) -> String {
    let plain = format!(
        "to={}|amount={}|currency={}|from_bank={}|to_bank={}|memo={}",
        record.to.username,
        record.amount_minor,
        record.currency,
        record.from.bank_id,
        record.to.bank_id,
        record.memo
    );
    // Payments that are not refunds, and have no metadata, keep exactly the fingerprint older
    // versions stored.
    let plain = match &record.refund_of {
        None => plain,
        Some(original) => format!("{plain}|refund_of={original}"),
    };
    // An authorization and a payment under one key are different requests. The expiry is
    // not part of it: a retry computes its own from its own clock.
    let plain = if record.is_authorization() {
        format!("{plain}|authorization")
    } else {
        plain
    };
    if record.metadata.is_empty() {
        plain
    } else {
        format!("{plain}|metadata={}", metadata_to_json(&record.metadata))
    }
}

/// True for an abort reason outside the request (a bank or the gateway was down or slow).
pub fn is_transient(reason_code: Option<&str>) -> bool {
    reason_code.is_some_and(|code| TRANSIENT_ABORTS.contains(&code))
}

/// A payment that was stored and then refused for a reason of the request itself (not a bank
/// or gateway outage, which a retry of the same key runs again).
pub fn is_business_refusal(record: &PaymentRecord) -> bool {
    record.status == PaymentStatus::Aborted && !is_transient(record.reason_code.as_deref())
}

/// What an idempotency key already holds, as the store read it.
#[derive(Debug, Clone, Copy)]
pub struct Stored<'a> {
    /// The fingerprint of the request that first used the key.
    pub fingerprint: &'a str,
    /// The key's latest attempt.
    pub payment: &'a PaymentRecord,
}

/// What the store is to do with a new request under an idempotency key.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Begin {
    /// The key is unused: record it and the attempt (PENDING), then run the attempt.
    Record,
    /// The key's last attempt aborted for a transient reason: point the key at a new attempt.
    RecordAgain,
    /// The key has a final result: answer it again, unchanged.
    Replay,
    /// The key's payment is still running: answer "in progress", record nothing.
    InFlight,
}

/// The idempotency policy (docs/SPEC.md): `attempt` is the new request, `stored` what its key
/// already holds.
pub fn begin(attempt: &PaymentRecord, stored: Option<Stored<'_>>) -> Result<Begin, Failure> {
    let Some(stored) = stored else {
        return Ok(Begin::Record);
    };
    if stored.fingerprint != fingerprint(attempt) {
        return Err(Failure::invalid_field(
            "idempotency_key",
            format!(
                "idempotency_key {:?} was already used for a different payment ({})",
                attempt.idempotency_key, stored.fingerprint
            ),
        ));
    }
    Ok(match stored.payment.status {
        PaymentStatus::Pending => Begin::InFlight,
        PaymentStatus::Committed | PaymentStatus::Authorized => Begin::Replay,
        PaymentStatus::Aborted if is_transient(stored.payment.reason_code.as_deref()) => {
            Begin::RecordAgain
        }
        PaymentStatus::Aborted => Begin::Replay,
    })
}

/// One bank's answer to a prepare.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Vote {
    Yes,
    No { reason_code: String, reason: String },
    TimedOut,
    Unreachable(String),
}

/// The decision two votes make, with the reason for an abort. A bank's own NO explains the
/// outcome best, so it wins over a timeout or an unreachable bank.
pub fn decide(
    debit_bank: &str,
    debit: &Vote,
    credit_bank: &str,
    credit: &Vote,
    prepare_timeout: Duration,
) -> (PaymentStatus, Option<(String, String)>) {
    let votes = [(debit_bank, debit), (credit_bank, credit)];
    if votes.iter().all(|(_, vote)| **vote == Vote::Yes) {
        return (PaymentStatus::Committed, None);
    }
    for (_, vote) in &votes {
        if let Vote::No {
            reason_code,
            reason,
        } = vote
        {
            return (
                PaymentStatus::Aborted,
                Some((reason_code.clone(), reason.clone())),
            );
        }
    }
    for (bank, vote) in &votes {
        if **vote == Vote::TimedOut {
            let reason = format!(
                "bank {bank} did not answer prepare within {}",
                humanize(prepare_timeout)
            );
            return (
                PaymentStatus::Aborted,
                Some((reason::BANK_TIMEOUT.into(), reason)),
            );
        }
    }
    for (bank, vote) in &votes {
        if let Vote::Unreachable(detail) = vote {
            let reason = format!("bank {bank} is unavailable: {detail}");
            return (
                PaymentStatus::Aborted,
                Some((reason::BANK_UNAVAILABLE.into(), reason)),
            );
        }
    }
    (PaymentStatus::Aborted, None)
}

fn humanize(duration: Duration) -> String {
    if duration.subsec_millis() == 0 {
        format!("{}s", duration.as_secs())
    } else {
        format!("{}ms", duration.as_millis())
    }
}

/// The abort an undecided payment gets once its time is up (the retrier and the banks'
/// decision query both apply it): a PENDING one after its decision deadline, an AUTHORIZED
/// one at its expiry. `None` while it may still be decided normally.
pub fn overdue(record: &PaymentRecord, now_unix_ms: i64) -> Option<(String, String)> {
    match record.status {
        PaymentStatus::Pending if now_unix_ms > record.decision_deadline_unix_ms => Some((
            reason::DECISION_TIMEOUT.to_owned(),
            "no decision before the deadline; aborted".to_owned(),
        )),
        PaymentStatus::Authorized if !may_capture_at(record, now_unix_ms) => Some((
            reason::AUTHORIZATION_EXPIRED.to_owned(),
            "the authorization expired before it was captured; its hold is released".to_owned(),
        )),
        _ => None,
    }
}

/// Whether an AUTHORIZED payment may still be captured at `now_unix_ms`: strictly before
/// its expiry. Stores apply the same rule inside the write that captures.
pub fn may_capture_at(record: &PaymentRecord, now_unix_ms: i64) -> bool {
    record.status == PaymentStatus::Authorized
        && record
            .expires_unix_ms
            .is_some_and(|expires| now_unix_ms < expires)
}

/// The abort a voided authorization gets.
pub fn voided() -> (String, String) {
    (
        reason::AUTHORIZATION_VOIDED.to_owned(),
        "the authorization was voided; its hold is released".to_owned(),
    )
}

/// The abort every PENDING payment gets when the gateway starts (presumed abort).
pub fn restarted() -> (String, String) {
    (
        reason::GATEWAY_RESTARTED.to_owned(),
        "the gateway restarted before deciding; aborted".to_owned(),
    )
}

/// The reason of a PENDING payment aborted by its gateway's shutdown before its phase 1 began
/// (its request was cut by the drain limit right after the PENDING record). Transient like a
/// restart: no money moved, and a retry with the same key runs a new attempt.
pub fn shut_down() -> (String, String) {
    (
        reason::GATEWAY_RESTARTED.to_owned(),
        "the gateway shut down before deciding; aborted".to_owned(),
    )
}

/// What `Pay` answers for a payment in a given state: `Ok` for a committed payment, else the
/// refusal. A function of the stored record alone, so a retry with the same idempotency key
/// gets the identical answer.
pub fn outcome(record: &PaymentRecord) -> Result<(), Failure> {
    let reason_code = record.reason_code.as_deref().unwrap_or_default();
    let reason = record
        .reason
        .clone()
        .unwrap_or_else(|| "payment aborted".into());
    Err(match record.status {
        PaymentStatus::Committed | PaymentStatus::Authorized => return Ok(()),
        PaymentStatus::Pending => Failure::Aborted(format!(
            "payment {} is still in progress; retry with the same idempotency key",
            record.payment_id
        )),
        PaymentStatus::Aborted if reason_code == reason::ACCOUNT_NOT_FOUND => {
            Failure::NotFound(reason)
        }
        PaymentStatus::Aborted if is_transient(Some(reason_code)) => Failure::Unavailable(reason),
        PaymentStatus::Aborted => Failure::precondition(reason_code, reason),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::records::Party;

    const TIMEOUT: Duration = Duration::from_millis(500);

    fn party(username: &str, bank_id: &str) -> Party {
        Party {
            username: username.into(),
            bank_id: bank_id.into(),
            account_number: format!("{username}-1"),
        }
    }

    fn attempt() -> PaymentRecord {
        PaymentRecord {
            seq: 0,
            payment_id: "p-new".into(),
            idempotency_key: "key-1".into(),
            from: party("alice", "bank0"),
            to: party("bob", "bank1"),
            amount_minor: 1_250,
            currency: "USD".into(),
            memo: "lunch".into(),
            metadata: Default::default(),
            status: PaymentStatus::Pending,
            reason_code: None,
            reason: None,
            debit_acked: false,
            credit_acked: false,
            decision_deadline_unix_ms: 10_000,
            created_unix_ms: 1_000,
            decided_unix_ms: None,
            coordinator: "gw-1".into(),
            decision_seq: None,
            refund_of: None,
            refunded_minor: 0,
            refund_pending_minor: 0,
            window_id: None,
            expires_unix_ms: None,
            authorized_unix_ms: None,
            authorized_minor: None,
        }
    }

    fn stored(status: PaymentStatus, reason_code: Option<&str>) -> PaymentRecord {
        PaymentRecord {
            payment_id: "p-old".into(),
            status,
            reason_code: reason_code.map(str::to_owned),
            reason: reason_code.map(|code| format!("{code} reason")),
            ..attempt()
        }
    }

    fn begin_with(previous: &PaymentRecord) -> Result<Begin, Failure> {
        let request = attempt();
        let fingerprint = fingerprint(previous);
        begin(
            &request,
            Some(Stored {
                fingerprint: &fingerprint,
                payment: previous,
            }),
        )
    }

    fn no(code: &str) -> Vote {
        Vote::No {
            reason_code: code.into(),
            reason: format!("{code} reason"),
        }
    }

    #[test]
    fn an_unused_key_records_a_new_attempt() {
        assert_eq!(begin(&attempt(), None), Ok(Begin::Record));
    }

    #[test]
    fn the_same_key_and_request_replays_a_final_result() {
        let committed = stored(PaymentStatus::Committed, None);
        assert_eq!(begin_with(&committed), Ok(Begin::Replay));
        let refused = stored(PaymentStatus::Aborted, Some("insufficient_funds"));
        assert_eq!(begin_with(&refused), Ok(Begin::Replay));
        let reasonless = stored(PaymentStatus::Aborted, None);
        assert_eq!(begin_with(&reasonless), Ok(Begin::Replay));
    }

    #[test]
    fn the_same_key_with_other_parameters_is_a_conflict() {
        let previous = stored(PaymentStatus::Committed, None);
        for change in [
            (|record: &mut PaymentRecord| record.amount_minor += 1) as fn(&mut PaymentRecord),
            |record| record.to.username = "carol".into(),
            |record| record.currency = "EUR".into(),
            |record| record.from.bank_id = "bank9".into(),
            |record| record.to.bank_id = "bank9".into(),
            |record| record.memo = "dinner".into(),
            |record| record.refund_of = Some("p-0".into()),
            |record| {
                record.metadata.insert("order".into(), "1".into());
            },
        ] {
            let mut other = previous.clone();
            change(&mut other);
            let stored_fingerprint = fingerprint(&other);
            let answer = begin(
                &attempt(),
                Some(Stored {
                    fingerprint: &stored_fingerprint,
                    payment: &previous,
                }),
            );
            assert!(
                matches!(&answer, Err(Failure::InvalidField { field, message }) if field == "idempotency_key" && message.contains("key-1")),
                "{answer:?}"
            );
        }
    }

    #[test]
    fn a_plain_payments_fingerprint_is_unchanged_and_a_refund_names_its_original() {
        let plain = attempt();
        assert_eq!(
            fingerprint(&plain),
            "to=bob|amount=1250|currency=USD|from_bank=bank0|to_bank=bank1|memo=lunch"
        );
        let refund = PaymentRecord {
            refund_of: Some("p-0".into()),
            ..attempt()
        };
        assert!(fingerprint(&refund).ends_with("|refund_of=p-0"));
        let mut tagged = refund.clone();
        tagged.metadata.insert("order".into(), "A-1".into());
        tagged.metadata.insert("customer".into(), "7".into());
        assert!(fingerprint(&tagged)
            .ends_with(r#"|refund_of=p-0|metadata={"customer":"7","order":"A-1"}"#));
    }

    #[test]
    fn a_pending_key_is_in_flight() {
        let pending = stored(PaymentStatus::Pending, None);
        assert_eq!(begin_with(&pending), Ok(Begin::InFlight));
    }

    #[test]
    fn a_transient_abort_runs_a_new_attempt() {
        for code in TRANSIENT_ABORTS {
            let aborted = stored(PaymentStatus::Aborted, Some(code));
            assert_eq!(begin_with(&aborted), Ok(Begin::RecordAgain), "{code}");
        }
    }

    #[test]
    fn the_coordinators_own_reasons_are_the_transient_ones() {
        for code in [
            reason::BANK_TIMEOUT,
            reason::BANK_UNAVAILABLE,
            reason::DECISION_TIMEOUT,
            reason::GATEWAY_RESTARTED,
        ] {
            assert!(is_transient(Some(code)), "{code}");
        }
        assert!(!is_transient(Some("insufficient_funds")));
        assert!(!is_transient(None));
    }

    #[test]
    fn outcomes_map_each_state() {
        assert_eq!(outcome(&stored(PaymentStatus::Committed, None)), Ok(()));
        assert!(matches!(
            outcome(&stored(PaymentStatus::Pending, None)),
            Err(Failure::Aborted(message)) if message.contains("p-old")
        ));
        assert!(matches!(
            outcome(&stored(PaymentStatus::Aborted, Some("account_not_found"))),
            Err(Failure::NotFound(_))
        ));
        assert!(matches!(
            outcome(&stored(PaymentStatus::Aborted, Some(reason::BANK_TIMEOUT))),
            Err(Failure::Unavailable(_))
        ));
        assert_eq!(
            outcome(&stored(PaymentStatus::Aborted, Some("insufficient_funds"))),
            Err(Failure::precondition(
                "insufficient_funds",
                "insufficient_funds reason"
            ))
        );
        assert!(is_business_refusal(&stored(
            PaymentStatus::Aborted,
            Some("insufficient_funds")
        )));
        assert!(!is_business_refusal(&stored(
            PaymentStatus::Aborted,
            Some(reason::BANK_UNAVAILABLE)
        )));
        assert!(!is_business_refusal(&stored(
            PaymentStatus::Committed,
            None
        )));
    }

    #[test]
    fn a_pending_payment_is_overdue_only_past_its_deadline() {
        let pending = stored(PaymentStatus::Pending, None);
        assert_eq!(overdue(&pending, 10_000), None);
        let (code, _) = overdue(&pending, 10_001).expect("overdue");
        assert_eq!(code, reason::DECISION_TIMEOUT);
        assert_eq!(
            overdue(&stored(PaymentStatus::Committed, None), 99_999),
            None
        );
    }

    #[test]
    fn an_authorization_is_due_exactly_at_its_expiry_and_capturable_only_before() {
        let open = PaymentRecord {
            status: PaymentStatus::Authorized,
            expires_unix_ms: Some(50_000),
            ..attempt()
        };
        // Its decision deadline (10_000) no longer applies once it is AUTHORIZED.
        assert_eq!(overdue(&open, 49_999), None);
        assert!(may_capture_at(&open, 49_999));
        assert!(!may_capture_at(&open, 50_000));
        let (code, _) = overdue(&open, 50_000).unwrap();
        assert_eq!(code, reason::AUTHORIZATION_EXPIRED);
        // Still being authorized, it is a PENDING payment with the usual deadline.
        let authorizing = PaymentRecord {
            status: PaymentStatus::Pending,
            ..open.clone()
        };
        assert!(!may_capture_at(&authorizing, 20_000));
        assert_eq!(
            overdue(&authorizing, 10_001).unwrap().0,
            reason::DECISION_TIMEOUT
        );
        // An AUTHORIZED key replays; its answer is Ok; it differs from a payment's request.
        let stored = Stored {
            fingerprint: &fingerprint(&open),
            payment: &open,
        };
        assert_eq!(begin(&open, Some(stored)).unwrap(), Begin::Replay);
        assert!(outcome(&open).is_ok());
        assert_ne!(fingerprint(&open), fingerprint(&attempt()));
        assert!(begin(&attempt(), Some(stored)).is_err());
    }

    #[test]
    fn all_yes_commits() {
        assert_eq!(
            decide("a", &Vote::Yes, "b", &Vote::Yes, TIMEOUT),
            (PaymentStatus::Committed, None)
        );
    }

    #[test]
    fn any_no_aborts_with_the_banks_reason() {
        let (status, reason) = decide(
            "a",
            &no("insufficient_funds"),
            "b",
            &Vote::TimedOut,
            TIMEOUT,
        );
        assert_eq!(status, PaymentStatus::Aborted);
        assert_eq!(reason.unwrap().0, "insufficient_funds");
        let (_, reason) = decide("a", &Vote::Yes, "b", &no("account_not_found"), TIMEOUT);
        assert_eq!(reason.unwrap().0, "account_not_found");
    }

    #[test]
    fn a_timeout_aborts_naming_the_bank() {
        let (status, reason) = decide("bank0", &Vote::Yes, "bank1", &Vote::TimedOut, TIMEOUT);
        assert_eq!(status, PaymentStatus::Aborted);
        let (code, text) = reason.unwrap();
        assert_eq!(code, reason::BANK_TIMEOUT);
        assert_eq!(text, "bank bank1 did not answer prepare within 500ms");
    }

    #[test]
    fn an_unreachable_bank_aborts() {
        let (status, reason) = decide(
            "bank0",
            &Vote::Unreachable("refused".into()),
            "bank1",
            &Vote::Yes,
            TIMEOUT,
        );
        assert_eq!(status, PaymentStatus::Aborted);
        assert_eq!(reason.unwrap().0, reason::BANK_UNAVAILABLE);
    }
}
