//! Interbank settlement and refunds as plain decisions, without I/O (like `payment.rs`): when
//! a reservation fits under a net debit cap ([`reserve`]), how a decision moves reservations
//! and positions ([`on_decision`], [`PositionChange::apply`]), how a window's bilateral totals
//! grow ([`add_to_total`]) and net into per-bank amounts that sum to zero ([`nets`]), which
//! windows may be closed or settled ([`close`], [`settle`]) and what settling does to
//! positions ([`settle_changes`]), and the refund rules ([`may_refund`], [`reserve_refund`],
//! [`refund_decided`]). [`crate::store`] executes these decisions inside its transactions —
//! exactly as it applies [`crate::payment::begin`] — so every backend keeps the same rules.
//!
//! Invariant: **only this module does settlement arithmetic**, always checked (i128 for sums
//! that may pass i64, `checked_*` otherwise): an overflow is a refusal or an error, never a
//! wrap or a saturation.
//!
//! ```text
//!   begin (cross-bank):  cap check ─fits─▶ reserved += amount      (in the PENDING write)
//!                                  └─no──▶ net_debit_cap_exceeded   (nothing recorded)
//!   decide ABORTED:      payer reserved −= amount
//!   decide COMMITTED:    payer reserved −= amount, payer position += amount,
//!                        payee position −= amount, open window's total[payer→payee] += amount
//!   settle window W:     every bank's position −= its net in W
//! ```
//!
//! Sign convention: a position or net amount is positive when the bank owes the switch (its
//! customers paid out more than they received), negative when it is owed.

use std::collections::BTreeMap;

use strife_common::money::{self, Amount};
use strife_common::reason;
use strife_common::Failure;

use crate::records::{BilateralTotal, PaymentRecord, PaymentStatus, PositionRecord, WindowRecord};

/// Whether a payment moves positions: only payments between two different banks do.
pub fn is_cross_bank(record: &PaymentRecord) -> bool {
    record.from.bank_id != record.to.bank_id
}

/// `12.50 USD`, or the exact minor units for a value past i64 or an unknown currency.
fn show(amount_minor: i128, currency: &str) -> String {
    match (money::currency(currency), i64::try_from(amount_minor)) {
        (Ok(currency), Ok(amount_minor)) => Amount {
            amount_minor,
            currency,
        }
        .to_string(),
        _ => format!("{amount_minor} minor {currency}"),
    }
}

fn overflow(what: &str) -> Failure {
    Failure::precondition(
        reason::POSITION_OVERFLOW,
        format!("{what} would pass the largest amount Strife can hold"),
    )
}

/// The refusal a cap that is not a valid amount gets (`None` = no cap is always valid).
pub fn check_cap(cap_minor: Option<i64>) -> Result<(), Failure> {
    match cap_minor {
        Some(cap) if cap < 0 => Err(Failure::invalid_field(
            "cap_minor",
            "cap_minor must not be negative (omit it for no cap)",
        )),
        _ => Ok(()),
    }
}

/// The position row a bank has before anything touched it.
pub fn empty_position(bank_id: &str, currency: &str) -> PositionRecord {
    PositionRecord {
        bank_id: bank_id.to_owned(),
        currency: currency.to_owned(),
        position_minor: 0,
        reserved_minor: 0,
        cap_minor: None,
    }
}

/// Takes a reservation of `amount_minor` on the payer bank's `position`: refused with
/// `net_debit_cap_exceeded` if position + reserved + amount would pass the cap, with
/// `position_overflow` if it would pass i64 (so a later COMMIT of every reservation cannot
/// overflow the position). Returns the row with the reservation added.
pub fn reserve(position: &PositionRecord, amount_minor: i64) -> Result<PositionRecord, Failure> {
    if amount_minor <= 0 {
        return Err(Failure::internal(
            "reservation",
            format!("amount {amount_minor} is not positive"),
        ));
    }
    let net_debit = i128::from(position.position_minor) + i128::from(position.reserved_minor);
    let after = net_debit + i128::from(amount_minor);
    if let Some(cap) = position.cap_minor {
        if after > i128::from(cap) {
            let currency = &position.currency;
            return Err(Failure::precondition(
                reason::NET_DEBIT_CAP_EXCEEDED,
                format!(
                    "bank {} would pass its net debit cap of {}: it owes {} with {} in flight, \
                     and this payment adds {}",
                    position.bank_id,
                    show(cap.into(), currency),
                    show(position.position_minor.into(), currency),
                    show(position.reserved_minor.into(), currency),
                    show(amount_minor.into(), currency),
                ),
            ));
        }
    }
    if after > i128::from(i64::MAX) {
        return Err(overflow(&format!("bank {}'s net debit", position.bank_id)));
    }
    let reserved_minor = position
        .reserved_minor
        .checked_add(amount_minor)
        .ok_or_else(|| overflow(&format!("bank {}'s reservations", position.bank_id)))?;
    Ok(PositionRecord {
        reserved_minor,
        ..position.clone()
    })
}

/// One change to a bank's position row.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PositionChange {
    pub bank_id: String,
    pub currency: String,
    pub position_delta: i64,
    pub reserved_delta: i64,
}

impl PositionChange {
    /// The row after this change, checked: no overflow, and a reservation never released
    /// below zero (that would mean one was released twice: the store is inconsistent).
    pub fn apply(&self, position: &PositionRecord) -> Result<PositionRecord, Failure> {
        let position_minor = position
            .position_minor
            .checked_add(self.position_delta)
            .ok_or_else(|| overflow(&format!("bank {}'s position", self.bank_id)))?;
        let reserved_minor = position
            .reserved_minor
            .checked_add(self.reserved_delta)
            .filter(|reserved| *reserved >= 0)
            .ok_or_else(|| {
                Failure::internal(
                    "settlement",
                    format!(
                        "bank {} {}: reservation {} cannot change by {}",
                        self.bank_id, self.currency, position.reserved_minor, self.reserved_delta
                    ),
                )
            })?;
        Ok(PositionRecord {
            position_minor,
            reserved_minor,
            ..position.clone()
        })
    }
}

/// What writing `status` for the PENDING payment `record` does to positions: nothing for a
/// payment within one bank; otherwise the payer bank's reservation is released (for a captured
/// authorization, all it reserved: `authorized_minor`), and on COMMIT the payer bank's
/// position grows by the amount and the payee bank's shrinks by it.
pub fn on_decision(record: &PaymentRecord, status: PaymentStatus) -> Vec<PositionChange> {
    if !is_cross_bank(record) || status == PaymentStatus::Pending {
        return Vec::new();
    }
    let committed = status == PaymentStatus::Committed;
    // amount_minor > 0 (a CHECK in every backend), so its negation cannot overflow.
    let amount = record.amount_minor;
    // A captured authorization moves what was captured but reserved what was authorized.
    let reserved = record.authorized_minor.unwrap_or(amount);
    let mut changes = vec![PositionChange {
        bank_id: record.from.bank_id.clone(),
        currency: record.currency.clone(),
        position_delta: if committed { amount } else { 0 },
        reserved_delta: -reserved,
    }];
    if committed {
        changes.push(PositionChange {
            bank_id: record.to.bank_id.clone(),
            currency: record.currency.clone(),
            position_delta: -amount,
            reserved_delta: 0,
        });
    }
    changes
}

/// The open window's bilateral total after a cross-bank COMMIT of `record` (`total`: the row
/// so far, if any).
pub fn add_to_total(
    total: Option<&BilateralTotal>,
    record: &PaymentRecord,
) -> Result<BilateralTotal, Failure> {
    let (amount_minor, payments) =
        total.map_or((0, 0), |total| (total.amount_minor, total.payments));
    Ok(BilateralTotal {
        payer_bank: record.from.bank_id.clone(),
        payee_bank: record.to.bank_id.clone(),
        currency: record.currency.clone(),
        amount_minor: amount_minor
            .checked_add(record.amount_minor)
            .ok_or_else(|| overflow("a window's bilateral total"))?,
        payments: payments + 1,
    })
}

/// A window's state.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WindowState {
    Open,
    Closed,
    Settled,
}

pub fn window_state(window: &WindowRecord) -> WindowState {
    match (window.closed_unix_ms, window.settled_unix_ms) {
        (None, _) => WindowState::Open,
        (Some(_), None) => WindowState::Closed,
        (Some(_), Some(_)) => WindowState::Settled,
    }
}

/// Whether `target` may be closed now (`open`: the window that is open). Only the open window
/// can be; a retried close of a window that was closed meanwhile is refused, so a retry never
/// closes a second window. Returns the id of the window that opens next.
pub fn close(open: &WindowRecord, target: &WindowRecord) -> Result<i64, Failure> {
    if window_state(open) != WindowState::Open {
        return Err(Failure::internal(
            "settlement",
            format!(
                "window {} is recorded as the open one but is closed",
                open.window_id
            ),
        ));
    }
    if target.window_id != open.window_id {
        return Err(Failure::precondition(
            reason::WINDOW_NOT_OPEN,
            format!(
                "window {} is not open (it was closed; window {} is open now)",
                target.window_id, open.window_id
            ),
        ));
    }
    open.window_id
        .checked_add(1)
        .ok_or_else(|| Failure::internal("settlement", "window ids exhausted"))
}

/// Whether `window` may be marked settled: only once it is closed, and only once.
pub fn settle(window: &WindowRecord) -> Result<(), Failure> {
    match window_state(window) {
        WindowState::Closed => Ok(()),
        WindowState::Open => Err(Failure::precondition(
            reason::WINDOW_OPEN,
            format!(
                "window {} is still open; close it first (its totals may still change)",
                window.window_id
            ),
        )),
        WindowState::Settled => Err(Failure::precondition(
            reason::WINDOW_ALREADY_SETTLED,
            format!("window {} is already settled", window.window_id),
        )),
    }
}

/// One bank's net amount in a window: positive, it pays; negative, it receives.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Net {
    pub bank_id: String,
    pub currency: String,
    pub net_minor: i64,
}

/// Nets a window's bilateral totals into one amount per bank and currency (sorted by
/// currency, then bank). Each total counts once for its payer (+) and once for its payee
/// (−), so per currency the nets sum to exactly zero. Summed in i128; a net past i64 is
/// `position_overflow`.
pub fn nets(totals: &[BilateralTotal]) -> Result<Vec<Net>, Failure> {
    let mut sums: BTreeMap<(&str, &str), i128> = BTreeMap::new();
    for total in totals {
        *sums
            .entry((total.currency.as_str(), total.payer_bank.as_str()))
            .or_insert(0) += i128::from(total.amount_minor);
        *sums
            .entry((total.currency.as_str(), total.payee_bank.as_str()))
            .or_insert(0) -= i128::from(total.amount_minor);
    }
    sums.into_iter()
        .map(|((currency, bank_id), net)| {
            Ok(Net {
                bank_id: bank_id.to_owned(),
                currency: currency.to_owned(),
                net_minor: i64::try_from(net)
                    .map_err(|_| overflow(&format!("bank {bank_id}'s net amount")))?,
            })
        })
        .collect()
}

/// What settling a window does to positions: each bank's position shrinks by its net amount
/// (a payer's debt is paid, a payee's claim is met).
pub fn settle_changes(nets: &[Net]) -> Result<Vec<PositionChange>, Failure> {
    nets.iter()
        .map(|net| {
            Ok(PositionChange {
                bank_id: net.bank_id.clone(),
                currency: net.currency.clone(),
                position_delta: net
                    .net_minor
                    .checked_neg()
                    .ok_or_else(|| overflow(&format!("bank {}'s position", net.bank_id)))?,
                reserved_delta: 0,
            })
        })
        .collect()
}

/// cap − position − reserved (negative when a cap was lowered below the bank's standing),
/// `None` without a cap. For display: clamped into i64.
pub fn headroom(position: &PositionRecord) -> Option<i64> {
    let cap = position.cap_minor?;
    let left =
        i128::from(cap) - i128::from(position.position_minor) - i128::from(position.reserved_minor);
    Some(i64::try_from(left).unwrap_or(if left < 0 { i64::MIN } else { i64::MAX }))
}

/// Who may refund `original`: its payee, or the admin. (Someone not involved at all is told
/// the payment does not exist before this is asked, as for `GetPayment`.)
pub fn may_refund(caller: &str, is_admin: bool, original: &PaymentRecord) -> Result<(), Failure> {
    if is_admin || original.to.username == caller {
        return Ok(());
    }
    Err(Failure::PermissionDenied(format!(
        "only the payee of payment {} ({}) or the admin may refund it",
        original.payment_id, original.to.username
    )))
}

/// What a refund attempt claims from its original, decided in the write that records it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RefundClaim {
    /// The refund's amount (the attempt's, or "the rest" for an attempt with amount 0).
    pub amount_minor: i64,
    /// The original's `refund_pending_minor` with this refund added.
    pub pending_minor: i64,
}

/// Claims `refund`'s amount against what is left to refund of `original` (its amount minus
/// its committed and pending refunds): only a COMMITTED payment that is not itself a refund,
/// never more than is left. `refund.amount_minor == 0` asks for everything that is left.
pub fn reserve_refund(
    original: &PaymentRecord,
    refund: &PaymentRecord,
) -> Result<RefundClaim, Failure> {
    if original.refund_of.is_some() {
        return Err(Failure::precondition(
            reason::PAYMENT_IS_A_REFUND,
            format!(
                "payment {} is a refund and cannot be refunded",
                original.payment_id
            ),
        ));
    }
    if original.status != PaymentStatus::Committed {
        let state = match original.status {
            PaymentStatus::Pending => "still in progress",
            _ => "aborted (no money moved)",
        };
        return Err(Failure::precondition(
            reason::PAYMENT_NOT_COMMITTED,
            format!(
                "payment {} is {state}; only a committed payment can be refunded",
                original.payment_id
            ),
        ));
    }
    let mirrors = refund.from == original.to
        && refund.to == original.from
        && refund.currency == original.currency
        && refund.refund_of.as_deref() == Some(original.payment_id.as_str());
    if !mirrors || refund.amount_minor < 0 {
        return Err(Failure::internal(
            "refund",
            format!(
                "refund {} does not mirror payment {}",
                refund.payment_id, original.payment_id
            ),
        ));
    }
    let left = i128::from(original.amount_minor)
        - i128::from(original.refunded_minor)
        - i128::from(original.refund_pending_minor);
    let left = i64::try_from(left)
        .ok()
        .filter(|left| *left >= 0)
        .ok_or_else(|| {
            Failure::internal(
                "refund",
                format!(
                    "payment {} is refunded beyond its amount",
                    original.payment_id
                ),
            )
        })?;
    let currency = &original.currency;
    let amount_minor = match refund.amount_minor {
        0 if left == 0 => {
            return Err(Failure::precondition(
                reason::REFUND_EXCEEDS_PAYMENT,
                format!(
                    "payment {} has nothing left to refund ({} refunded, {} being refunded)",
                    original.payment_id,
                    show(original.refunded_minor.into(), currency),
                    show(original.refund_pending_minor.into(), currency)
                ),
            ))
        }
        0 => left,
        asked if asked > left => {
            return Err(Failure::precondition(
                reason::REFUND_EXCEEDS_PAYMENT,
                format!(
                    "a refund of {} is more than the {} left of payment {} ({} of {} refunded, {} \
                     being refunded)",
                    show(asked.into(), currency),
                    show(left.into(), currency),
                    original.payment_id,
                    show(original.refunded_minor.into(), currency),
                    show(original.amount_minor.into(), currency),
                    show(original.refund_pending_minor.into(), currency)
                ),
            ))
        }
        asked => asked,
    };
    Ok(RefundClaim {
        amount_minor,
        // ≤ the original's amount, so it fits.
        pending_minor: original.refund_pending_minor + amount_minor,
    })
}

/// The original's (refunded, pending) amounts once a refund of `amount_minor` is decided:
/// the pending claim is given back, and on COMMIT the amount counts as refunded.
pub fn refund_decided(
    original: &PaymentRecord,
    amount_minor: i64,
    status: PaymentStatus,
) -> Result<(i64, i64), Failure> {
    let inconsistent = || {
        Failure::internal(
            "refund",
            format!(
                "payment {}: a refund of {amount_minor} does not fit its refund amounts",
                original.payment_id
            ),
        )
    };
    let pending = original
        .refund_pending_minor
        .checked_sub(amount_minor)
        .filter(|pending| *pending >= 0)
        .ok_or_else(inconsistent)?;
    let refunded = if status == PaymentStatus::Committed {
        original
            .refunded_minor
            .checked_add(amount_minor)
            .filter(|refunded| *refunded <= original.amount_minor)
            .ok_or_else(inconsistent)?
    } else {
        original.refunded_minor
    };
    Ok((refunded, pending))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::records::Party;

    fn party(username: &str, bank_id: &str) -> Party {
        Party {
            username: username.into(),
            bank_id: bank_id.into(),
            account_number: format!("{bank_id}-{username}"),
        }
    }

    fn payment(from_bank: &str, to_bank: &str, amount_minor: i64) -> PaymentRecord {
        PaymentRecord {
            seq: 1,
            payment_id: "p-1".into(),
            idempotency_key: "k-1".into(),
            from: party("alice", from_bank),
            to: party("bob", to_bank),
            amount_minor,
            currency: "USD".into(),
            memo: String::new(),
            metadata: Default::default(),
            status: PaymentStatus::Pending,
            reason_code: None,
            reason: None,
            debit_acked: false,
            credit_acked: false,
            decision_deadline_unix_ms: 0,
            created_unix_ms: 0,
            decided_unix_ms: None,
            coordinator: "gw".into(),
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

    fn position(position_minor: i64, reserved_minor: i64, cap: Option<i64>) -> PositionRecord {
        PositionRecord {
            position_minor,
            reserved_minor,
            cap_minor: cap,
            ..empty_position("bank0", "USD")
        }
    }

    fn reason_of(result: Result<impl std::fmt::Debug, Failure>) -> String {
        match result {
            Err(failure) => failure.reason().to_owned(),
            Ok(value) => panic!("expected a refusal, got {value:?}"),
        }
    }

    #[test]
    fn only_payments_between_two_banks_touch_positions() {
        assert!(is_cross_bank(&payment("bank0", "bank1", 1)));
        assert!(!is_cross_bank(&payment("bank0", "bank0", 1)));
        let within = payment("bank0", "bank0", 100);
        assert!(on_decision(&within, PaymentStatus::Committed).is_empty());
        assert!(on_decision(&within, PaymentStatus::Aborted).is_empty());
    }

    #[test]
    fn a_reservation_fits_up_to_the_cap_and_not_one_unit_more() {
        let at = position(600, 300, Some(1_000));
        assert_eq!(reserve(&at, 100).unwrap().reserved_minor, 400);
        assert_eq!(reason_of(reserve(&at, 101)), reason::NET_DEBIT_CAP_EXCEEDED);
        // A bank that is owed has that much more room.
        let owed = position(-500, 0, Some(0));
        assert_eq!(reserve(&owed, 500).unwrap().reserved_minor, 500);
        assert_eq!(
            reason_of(reserve(&owed, 501)),
            reason::NET_DEBIT_CAP_EXCEEDED
        );
        // No cap: anything that fits in i64.
        assert_eq!(
            reserve(&position(0, 0, None), i64::MAX)
                .unwrap()
                .reserved_minor,
            i64::MAX
        );
    }

    #[test]
    fn the_refusal_names_the_bank_and_the_amounts() {
        let Err(Failure::FailedPrecondition { message, .. }) =
            reserve(&position(2_000, 500, Some(2_500)), 1)
        else {
            panic!("refused");
        };
        assert!(message.contains("bank0"), "{message}");
        assert!(message.contains("25.00 USD"), "{message}");
        assert!(message.contains("20.00 USD"), "{message}");
        assert!(message.contains("5.00 USD"), "{message}");
    }

    #[test]
    fn reservations_never_overflow_even_under_an_enormous_cap() {
        let nearly_full = position(i64::MAX - 10, 10, Some(i64::MAX));
        assert_eq!(
            reason_of(reserve(&nearly_full, 1)),
            reason::NET_DEBIT_CAP_EXCEEDED
        );
        let uncapped = position(i64::MAX - 10, 10, None);
        assert_eq!(reason_of(reserve(&uncapped, 1)), reason::POSITION_OVERFLOW);
        // A bank owed nearly everything has room for reservations that pass i64 in sum with
        // nothing else — but the reservation itself must still fit.
        let owed = position(i64::MIN, i64::MAX - 1, None);
        assert_eq!(reserve(&owed, 1).unwrap().reserved_minor, i64::MAX);
        let full = position(i64::MIN, i64::MAX, None);
        assert_eq!(reason_of(reserve(&full, 1)), reason::POSITION_OVERFLOW);
        assert!(matches!(
            reserve(&position(0, 0, None), 0),
            Err(Failure::Internal(_))
        ));
    }

    #[test]
    fn a_commit_moves_both_positions_and_releases_the_reservation() {
        let record = payment("bank0", "bank1", 250);
        let changes = on_decision(&record, PaymentStatus::Committed);
        assert_eq!(
            changes,
            vec![
                PositionChange {
                    bank_id: "bank0".into(),
                    currency: "USD".into(),
                    position_delta: 250,
                    reserved_delta: -250,
                },
                PositionChange {
                    bank_id: "bank1".into(),
                    currency: "USD".into(),
                    position_delta: -250,
                    reserved_delta: 0,
                },
            ]
        );
        let payer = changes[0].apply(&position(0, 250, Some(1_000))).unwrap();
        assert_eq!((payer.position_minor, payer.reserved_minor), (250, 0));
        assert_eq!(payer.cap_minor, Some(1_000), "the cap stays");
        let payee = changes[1].apply(&empty_position("bank1", "USD")).unwrap();
        assert_eq!((payee.position_minor, payee.reserved_minor), (-250, 0));
    }

    #[test]
    fn an_abort_only_releases_the_reservation() {
        let record = payment("bank0", "bank1", 250);
        let changes = on_decision(&record, PaymentStatus::Aborted);
        assert_eq!(changes.len(), 1);
        let payer = changes[0].apply(&position(40, 250, None)).unwrap();
        assert_eq!((payer.position_minor, payer.reserved_minor), (40, 0));
    }

    #[test]
    fn releasing_a_reservation_twice_or_overflowing_a_position_is_an_error() {
        let record = payment("bank0", "bank1", 250);
        let release = &on_decision(&record, PaymentStatus::Aborted)[0];
        assert!(matches!(
            release.apply(&position(0, 100, None)),
            Err(Failure::Internal(_))
        ));
        let commit = &on_decision(&record, PaymentStatus::Committed)[1];
        assert_eq!(
            reason_of(commit.apply(&PositionRecord {
                position_minor: i64::MIN + 1,
                ..empty_position("bank1", "USD")
            })),
            reason::POSITION_OVERFLOW
        );
    }

    fn total(payer: &str, payee: &str, currency: &str, amount_minor: i64) -> BilateralTotal {
        BilateralTotal {
            payer_bank: payer.into(),
            payee_bank: payee.into(),
            currency: currency.into(),
            amount_minor,
            payments: 1,
        }
    }

    #[test]
    fn bilateral_totals_grow_with_each_commit() {
        let record = payment("bank0", "bank1", 250);
        let first = add_to_total(None, &record).unwrap();
        assert_eq!(first, total("bank0", "bank1", "USD", 250));
        let second = add_to_total(Some(&first), &record).unwrap();
        assert_eq!((second.amount_minor, second.payments), (500, 2));
        let full = BilateralTotal {
            amount_minor: i64::MAX,
            ..first
        };
        assert_eq!(
            reason_of(add_to_total(Some(&full), &record)),
            reason::POSITION_OVERFLOW
        );
    }

    #[test]
    fn nets_sum_to_zero_per_currency() {
        let totals = vec![
            total("bank0", "bank1", "USD", 5_000),
            total("bank1", "bank0", "USD", 2_000),
            total("bank1", "bank2", "USD", 1_000),
            total("bank2", "bank0", "EUR", 700),
        ];
        let nets = nets(&totals).unwrap();
        let find = |bank: &str, currency: &str| {
            nets.iter()
                .find(|net| net.bank_id == bank && net.currency == currency)
                .map(|net| net.net_minor)
        };
        assert_eq!(find("bank0", "USD"), Some(3_000), "pays 50 − 20");
        assert_eq!(find("bank1", "USD"), Some(-2_000), "receives 50 − 20 − 10");
        assert_eq!(find("bank2", "USD"), Some(-1_000));
        assert_eq!(find("bank2", "EUR"), Some(700));
        assert_eq!(find("bank0", "EUR"), Some(-700));
        for currency in ["USD", "EUR"] {
            let sum: i128 = nets
                .iter()
                .filter(|net| net.currency == currency)
                .map(|net| i128::from(net.net_minor))
                .sum();
            assert_eq!(sum, 0, "{currency}");
        }
        // Sorted by currency, then bank.
        let order: Vec<(&str, &str)> = nets
            .iter()
            .map(|net| (net.currency.as_str(), net.bank_id.as_str()))
            .collect();
        assert_eq!(
            order,
            vec![
                ("EUR", "bank0"),
                ("EUR", "bank2"),
                ("USD", "bank0"),
                ("USD", "bank1"),
                ("USD", "bank2")
            ]
        );
    }

    #[test]
    fn nets_past_i64_are_an_overflow_not_a_wrap() {
        let totals = vec![
            total("bank0", "bank1", "USD", i64::MAX),
            total("bank0", "bank2", "USD", 1),
        ];
        assert_eq!(reason_of(nets(&totals)), reason::POSITION_OVERFLOW);
        // Large flows that cancel are fine.
        let cancelling = vec![
            total("bank0", "bank1", "USD", i64::MAX),
            total("bank1", "bank0", "USD", i64::MAX),
        ];
        assert!(nets(&cancelling)
            .unwrap()
            .iter()
            .all(|net| net.net_minor == 0));
    }

    #[test]
    fn settling_reduces_each_position_by_its_net() {
        let nets = nets(&[total("bank0", "bank1", "USD", 900)]).unwrap();
        let changes = settle_changes(&nets).unwrap();
        let payer = changes[0].apply(&position(1_200, 50, Some(2_000))).unwrap();
        assert_eq!((payer.position_minor, payer.reserved_minor), (300, 50));
        let payee = changes[1]
            .apply(&PositionRecord {
                position_minor: -900,
                ..empty_position("bank1", "USD")
            })
            .unwrap();
        assert_eq!(payee.position_minor, 0);
        let minimum = Net {
            bank_id: "bank0".into(),
            currency: "USD".into(),
            net_minor: i64::MIN,
        };
        assert_eq!(
            reason_of(settle_changes(&[minimum])),
            reason::POSITION_OVERFLOW
        );
    }

    fn window(id: i64, closed: Option<i64>, settled: Option<i64>) -> WindowRecord {
        WindowRecord {
            window_id: id,
            opened_unix_ms: 1,
            closed_unix_ms: closed,
            settled_unix_ms: settled,
        }
    }

    #[test]
    fn only_the_open_window_closes_and_only_a_closed_one_settles_once() {
        let open = window(3, None, None);
        let closed = window(2, Some(5), None);
        let settled = window(1, Some(4), Some(6));
        assert_eq!(close(&open, &open), Ok(4));
        assert_eq!(reason_of(close(&open, &closed)), reason::WINDOW_NOT_OPEN);
        assert!(matches!(close(&closed, &closed), Err(Failure::Internal(_))));
        assert_eq!(settle(&closed), Ok(()));
        assert_eq!(reason_of(settle(&open)), reason::WINDOW_OPEN);
        assert_eq!(reason_of(settle(&settled)), reason::WINDOW_ALREADY_SETTLED);
        assert_eq!(window_state(&open), WindowState::Open);
        assert_eq!(window_state(&closed), WindowState::Closed);
        assert_eq!(window_state(&settled), WindowState::Settled);
    }

    #[test]
    fn headroom_is_what_the_cap_leaves() {
        assert_eq!(headroom(&position(300, 200, Some(1_000))), Some(500));
        assert_eq!(headroom(&position(300, 200, Some(100))), Some(-400));
        assert_eq!(headroom(&position(300, 200, None)), None);
        assert_eq!(
            headroom(&position(i64::MIN, 0, Some(i64::MAX))),
            Some(i64::MAX)
        );
        assert!(matches!(
            check_cap(Some(-1)),
            Err(Failure::InvalidField { .. })
        ));
        assert_eq!(check_cap(Some(0)), Ok(()));
        assert_eq!(check_cap(None), Ok(()));
    }

    fn committed(amount_minor: i64, refunded: i64, pending: i64) -> PaymentRecord {
        PaymentRecord {
            status: PaymentStatus::Committed,
            refunded_minor: refunded,
            refund_pending_minor: pending,
            ..payment("bank0", "bank1", amount_minor)
        }
    }

    fn refund_of(original: &PaymentRecord, amount_minor: i64) -> PaymentRecord {
        PaymentRecord {
            payment_id: "r-1".into(),
            from: original.to.clone(),
            to: original.from.clone(),
            amount_minor,
            refund_of: Some(original.payment_id.clone()),
            ..payment("x", "y", 1)
        }
    }

    #[test]
    fn only_the_payee_or_the_admin_may_refund() {
        let original = committed(1_000, 0, 0);
        assert_eq!(may_refund("bob", false, &original), Ok(()));
        assert_eq!(may_refund("admin", true, &original), Ok(()));
        assert!(matches!(
            may_refund("alice", false, &original),
            Err(Failure::PermissionDenied(_))
        ));
    }

    #[test]
    fn refunds_claim_at_most_what_is_left() {
        let original = committed(1_000, 300, 200);
        let claim = reserve_refund(&original, &refund_of(&original, 500)).unwrap();
        assert_eq!(
            claim,
            RefundClaim {
                amount_minor: 500,
                pending_minor: 700
            }
        );
        assert_eq!(
            reason_of(reserve_refund(&original, &refund_of(&original, 501))),
            reason::REFUND_EXCEEDS_PAYMENT
        );
        // Amount 0: the rest.
        assert_eq!(
            reserve_refund(&original, &refund_of(&original, 0))
                .unwrap()
                .amount_minor,
            500
        );
        let done = committed(1_000, 800, 200);
        assert_eq!(
            reason_of(reserve_refund(&done, &refund_of(&done, 0))),
            reason::REFUND_EXCEEDS_PAYMENT
        );
    }

    #[test]
    fn only_committed_payments_that_are_not_refunds_can_be_refunded() {
        for status in [PaymentStatus::Aborted, PaymentStatus::Pending] {
            let original = PaymentRecord {
                status,
                ..committed(1_000, 0, 0)
            };
            assert_eq!(
                reason_of(reserve_refund(&original, &refund_of(&original, 1))),
                reason::PAYMENT_NOT_COMMITTED
            );
        }
        let refund = PaymentRecord {
            refund_of: Some("p-0".into()),
            ..committed(1_000, 0, 0)
        };
        assert_eq!(
            reason_of(reserve_refund(&refund, &refund_of(&refund, 1))),
            reason::PAYMENT_IS_A_REFUND
        );
    }

    #[test]
    fn a_refund_must_mirror_its_original() {
        let original = committed(1_000, 0, 0);
        let mut wrong = refund_of(&original, 100);
        wrong.to.account_number = "elsewhere".into();
        assert!(matches!(
            reserve_refund(&original, &wrong),
            Err(Failure::Internal(_))
        ));
    }

    #[test]
    fn a_decided_refund_gives_back_its_claim_and_counts_only_if_committed() {
        let original = committed(1_000, 300, 500);
        assert_eq!(
            refund_decided(&original, 200, PaymentStatus::Committed),
            Ok((500, 300))
        );
        assert_eq!(
            refund_decided(&original, 200, PaymentStatus::Aborted),
            Ok((300, 300))
        );
        assert!(refund_decided(&original, 600, PaymentStatus::Aborted).is_err());
        let over = committed(1_000, 900, 500);
        assert!(refund_decided(&over, 200, PaymentStatus::Committed).is_err());
    }
}
