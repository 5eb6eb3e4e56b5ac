//! Every transition of the participant, and every step repeated.

use super::*;
use tonic::Code;

fn intent(amount_minor: i64) -> PrepareIntent {
    PrepareIntent {
        account_number: "bank0-00000001".into(),
        amount_minor,
        currency: "USD".into(),
        decision_deadline_unix_ms: 1_000,
        owner: String::new(),
    }
}

fn account(balance_minor: i64, held_minor: i64) -> AccountView {
    AccountView {
        owner: "alice".into(),
        currency: "USD".into(),
        funds: AccountFunds {
            balance_minor,
            held_minor,
            incoming_minor: 0,
        },
    }
}

fn code_of(failure: Failure) -> Code {
    tonic::Status::from(failure).code()
}

#[test]
fn prepare_for_another_owner_votes_no_and_moves_nothing() {
    for role in [Role::Debit, Role::Credit] {
        let asked = PrepareIntent {
            owner: "mallory".into(),
            ..intent(1000)
        };
        let step = prepare(None, role, &asked, Some(&account(5000, 0))).unwrap();
        assert_eq!(step.leg.state, LegState::Aborted);
        assert_eq!(step.effect, Effect::None);
        assert_eq!(
            step.leg.reason.map(|reason| reason.code).as_deref(),
            Some(reason::ACCOUNT_OWNER_MISMATCH)
        );
        let right_owner = PrepareIntent {
            owner: "alice".into(),
            ..intent(1000)
        };
        let step = prepare(None, role, &right_owner, Some(&account(5000, 0))).unwrap();
        assert_eq!(step.leg.state, LegState::Prepared);
    }
}

#[test]
fn debit_prepare_with_funds_votes_yes_and_holds() {
    let step = prepare(None, Role::Debit, &intent(1000), Some(&account(5000, 0))).unwrap();
    assert_eq!(step.leg.state, LegState::Prepared);
    assert!(step.changed);
    assert_eq!(step.effect, Effect::PlaceHold(1000));
    let funds = step.effect.apply(account(5000, 0).funds).unwrap();
    assert_eq!(funds.held_minor, 1000);
    assert_eq!(funds.balance_minor, 5000);
}

#[test]
fn debit_prepare_exactly_available_is_allowed_one_more_is_not() {
    let yes = prepare(None, Role::Debit, &intent(4000), Some(&account(5000, 1000))).unwrap();
    assert_eq!(yes.leg.state, LegState::Prepared);
    let no = prepare(None, Role::Debit, &intent(4001), Some(&account(5000, 1000))).unwrap();
    assert_eq!(no.leg.state, LegState::Aborted);
    assert_eq!(no.leg.reason.unwrap().code, reason::INSUFFICIENT_FUNDS);
    assert_eq!(no.effect, Effect::None);
    assert!(no.changed, "a NO vote is persisted with its reason");
}

#[test]
fn prepare_on_unknown_account_or_wrong_currency_votes_no() {
    let missing = prepare(None, Role::Credit, &intent(1), None).unwrap();
    assert_eq!(missing.leg.state, LegState::Aborted);
    assert_eq!(missing.leg.reason.unwrap().code, reason::ACCOUNT_NOT_FOUND);

    let mut euro = account(5000, 0);
    euro.currency = "EUR".into();
    let mismatch = prepare(None, Role::Debit, &intent(1), Some(&euro)).unwrap();
    assert_eq!(mismatch.leg.state, LegState::Aborted);
    assert_eq!(mismatch.leg.reason.unwrap().code, reason::CURRENCY_MISMATCH);
}

#[test]
fn credit_prepare_announces_but_does_not_make_money_spendable() {
    let step = prepare(None, Role::Credit, &intent(700), Some(&account(0, 0))).unwrap();
    assert_eq!(step.leg.state, LegState::Prepared);
    let funds = step.effect.apply(account(0, 0).funds).unwrap();
    assert_eq!(funds.balance_minor, 0);
    assert_eq!(funds.available_minor(), Some(0));
    assert_eq!(funds.incoming_minor, 700);
}

#[test]
fn credit_that_could_overflow_the_balance_votes_no() {
    let step = prepare(None, Role::Credit, &intent(1), Some(&account(i64::MAX, 0))).unwrap();
    assert_eq!(step.leg.state, LegState::Aborted);
    assert_eq!(step.leg.reason.unwrap().code, reason::BALANCE_OVERFLOW);
}

#[test]
fn repeated_prepare_returns_the_same_vote_and_changes_nothing() {
    let first = prepare(None, Role::Debit, &intent(1000), Some(&account(5000, 0))).unwrap();
    let mut retry_intent = intent(1000);
    retry_intent.decision_deadline_unix_ms = 9_999;
    let again = prepare(
        Some(&first.leg),
        Role::Debit,
        &retry_intent,
        Some(&account(5000, 1000)),
    )
    .unwrap();
    assert_eq!(again.leg, first.leg);
    assert!(!again.changed);
    assert_eq!(again.effect, Effect::None);

    let no = prepare(None, Role::Debit, &intent(9000), Some(&account(5000, 0))).unwrap();
    let no_again = prepare(
        Some(&no.leg),
        Role::Debit,
        &intent(9000),
        Some(&account(50_000, 0)),
    )
    .unwrap();
    assert_eq!(
        no_again.leg.state,
        LegState::Aborted,
        "a NO stays NO even if funds arrived"
    );
    assert!(!no_again.changed);
}

#[test]
fn prepare_reusing_a_payment_id_with_other_parameters_is_invalid() {
    let first = prepare(None, Role::Debit, &intent(1000), Some(&account(5000, 0))).unwrap();
    let error = prepare(
        Some(&first.leg),
        Role::Debit,
        &intent(2000),
        Some(&account(5000, 1000)),
    )
    .unwrap_err();
    assert_eq!(code_of(error), Code::InvalidArgument);
}

#[test]
fn late_prepare_after_abort_votes_no() {
    let tombstone = abort(None, Role::Debit).unwrap();
    assert_eq!(tombstone.leg.state, LegState::Aborted);
    assert!(tombstone.changed);
    assert_eq!(
        tombstone.leg.reason.as_ref().unwrap().code,
        reason::ABORTED_BEFORE_PREPARE
    );
    let late = prepare(
        Some(&tombstone.leg),
        Role::Debit,
        &intent(1000),
        Some(&account(5000, 0)),
    )
    .unwrap();
    assert_eq!(late.leg.state, LegState::Aborted);
    assert!(!late.changed);
    assert_eq!(late.effect, Effect::None);
}

#[test]
fn a_partial_commit_moves_part_and_releases_the_whole_hold() {
    let debit = prepare(None, Role::Debit, &intent(1000), Some(&account(5000, 0))).unwrap();
    let part = commit(Some(&debit.leg), 300).unwrap();
    assert_eq!(
        part.effect,
        Effect::SettleDebitPart {
            settled: 300,
            held: 1000
        }
    );
    let funds = part
        .effect
        .apply(AccountFunds {
            balance_minor: 5000,
            held_minor: 1000,
            incoming_minor: 0,
        })
        .unwrap();
    assert_eq!((funds.balance_minor, funds.held_minor), (4700, 0));
    assert_eq!(part.effect.balance_delta_minor(), -300);
    let credit = prepare(None, Role::Credit, &intent(1000), Some(&account(0, 0))).unwrap();
    let credited = commit(Some(&credit.leg), 300).unwrap();
    let funds = credited
        .effect
        .apply(AccountFunds {
            balance_minor: 0,
            held_minor: 0,
            incoming_minor: 1000,
        })
        .unwrap();
    assert_eq!((funds.balance_minor, funds.incoming_minor), (300, 0));
    // More than was prepared, or negative, is refused; a repeat changes nothing.
    assert_eq!(
        code_of(commit(Some(&debit.leg), 1001).unwrap_err()),
        Code::InvalidArgument
    );
    assert_eq!(
        code_of(commit(Some(&debit.leg), -1).unwrap_err()),
        Code::InvalidArgument
    );
    assert!(!commit(Some(&part.leg), 300).unwrap().changed);
}

#[test]
fn commit_settles_debit_and_credit_once() {
    let debit = prepare(None, Role::Debit, &intent(1000), Some(&account(5000, 0))).unwrap();
    let committed = commit(Some(&debit.leg), 0).unwrap();
    assert_eq!(committed.leg.state, LegState::Committed);
    assert_eq!(committed.effect, Effect::SettleDebit(1000));
    let funds = committed
        .effect
        .apply(AccountFunds {
            balance_minor: 5000,
            held_minor: 1000,
            incoming_minor: 0,
        })
        .unwrap();
    assert_eq!((funds.balance_minor, funds.held_minor), (4000, 0));
    assert_eq!(committed.effect.balance_delta_minor(), -1000);

    let again = commit(Some(&committed.leg), 0).unwrap();
    assert!(!again.changed);
    assert_eq!(again.effect, Effect::None);

    let credit = prepare(None, Role::Credit, &intent(1000), Some(&account(0, 0))).unwrap();
    let credited = commit(Some(&credit.leg), 0).unwrap();
    assert_eq!(credited.effect, Effect::SettleCredit(1000));
    assert_eq!(credited.effect.balance_delta_minor(), 1000);
}

#[test]
fn abort_releases_the_hold_once() {
    let debit = prepare(None, Role::Debit, &intent(1000), Some(&account(5000, 0))).unwrap();
    let aborted = abort(Some(&debit.leg), Role::Debit).unwrap();
    assert_eq!(aborted.leg.state, LegState::Aborted);
    assert_eq!(aborted.effect, Effect::ReleaseHold(1000));
    let again = abort(Some(&aborted.leg), Role::Debit).unwrap();
    assert!(!again.changed);
    assert_eq!(again.effect, Effect::None);

    let credit = prepare(None, Role::Credit, &intent(5), Some(&account(0, 0))).unwrap();
    assert_eq!(
        abort(Some(&credit.leg), Role::Credit).unwrap().effect,
        Effect::WithdrawIncoming(5)
    );
}

#[test]
fn commit_of_an_aborted_leg_is_refused_loudly() {
    let tombstone = abort(None, Role::Credit).unwrap();
    assert_eq!(
        code_of(commit(Some(&tombstone.leg), 0).unwrap_err()),
        Code::FailedPrecondition
    );
    let no = prepare(None, Role::Debit, &intent(9000), Some(&account(5000, 0))).unwrap();
    assert_eq!(
        code_of(commit(Some(&no.leg), 0).unwrap_err()),
        Code::FailedPrecondition
    );
}

#[test]
fn abort_of_a_committed_leg_is_refused() {
    let debit = prepare(None, Role::Debit, &intent(1000), Some(&account(5000, 0))).unwrap();
    let committed = commit(Some(&debit.leg), 0).unwrap();
    assert_eq!(
        code_of(abort(Some(&committed.leg), Role::Debit).unwrap_err()),
        Code::FailedPrecondition
    );
}

#[test]
fn commit_of_an_unknown_leg_is_not_found() {
    assert_eq!(code_of(commit(None, 0).unwrap_err()), Code::NotFound);
}

#[test]
fn effects_never_drive_available_negative() {
    let funds = AccountFunds {
        balance_minor: 100,
        held_minor: 100,
        incoming_minor: 0,
    };
    assert!(Effect::PlaceHold(1).apply(funds).is_err());
    assert!(Effect::ReleaseHold(101).apply(funds).is_err());
    assert!(
        Effect::SettleCredit(1).apply(funds).is_err(),
        "no announcement to settle"
    );
}
