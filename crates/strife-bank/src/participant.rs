//! The two-phase-commit participant as a plain state machine: given what is stored for one
//! leg (and, for prepare, the account), decide the next state and the effect on the account.
//! No I/O here; [`crate::store`] applies the outcome inside one SQLite transaction.
//!
//! ```text
//!            prepare (YES)             commit
//!   (none) ───────────────▶ PREPARED ─────────▶ COMMITTED
//!     │  \                     │
//!     │   \ prepare (NO)       │ abort
//!     │    ▶ ABORTED ◀─────────┘
//!     └──abort (tombstone)──▶ ABORTED
//! ```
//!
//! Every step is idempotent: repeating it returns the stored outcome and changes nothing.
//! Refused transitions (commit of an aborted leg, abort of a committed one) are errors, never
//! silent: they mean the coordinator and this bank disagree, which must be seen.

use strife_common::reason;
use strife_common::Failure;

/// Which side of a payment a leg is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    Debit,
    Credit,
}

impl Role {
    /// Stored as an integer in `legs.role`.
    pub fn code(self) -> i64 {
        match self {
            Role::Debit => 1,
            Role::Credit => 2,
        }
    }

    pub fn from_code(code: i64) -> Option<Self> {
        match code {
            1 => Some(Role::Debit),
            2 => Some(Role::Credit),
            _ => None,
        }
    }
}

/// A leg's state. The numeric codes are stored and match `strife.v1.LegState`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LegState {
    Prepared,
    Committed,
    Aborted,
}

impl LegState {
    pub fn code(self) -> i64 {
        match self {
            LegState::Prepared => 1,
            LegState::Committed => 2,
            LegState::Aborted => 3,
        }
    }

    pub fn from_code(code: i64) -> Option<Self> {
        match code {
            1 => Some(LegState::Prepared),
            2 => Some(LegState::Committed),
            3 => Some(LegState::Aborted),
            _ => None,
        }
    }
}

/// Why a leg was aborted, as stored with it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reason {
    /// Machine-readable, e.g. `insufficient_funds`.
    pub code: String,
    pub message: String,
}

impl Reason {
    fn new(code: &str, message: impl Into<String>) -> Self {
        Reason {
            code: code.to_owned(),
            message: message.into(),
        }
    }
}

/// What a prepare asks for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PrepareIntent {
    pub account_number: String,
    pub amount_minor: i64,
    pub currency: String,
    pub decision_deadline_unix_ms: i64,
    /// Whose account the coordinator believes this is; empty: not checked. Not stored with
    /// the leg (only the first prepare of a leg checks it).
    pub owner: String,
}

/// One stored leg. A tombstone (abort before prepare) has no intent.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Leg {
    pub role: Role,
    pub intent: Option<PrepareIntent>,
    pub state: LegState,
    pub reason: Option<Reason>,
}

/// The parts of an account the participant reasons about.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AccountFunds {
    pub balance_minor: i64,
    /// Reserved by PREPARED debits: not spendable.
    pub held_minor: i64,
    /// Announced by PREPARED credits: not spendable until committed.
    pub incoming_minor: i64,
}

impl AccountFunds {
    /// What can still be spent: `balance − held`.
    pub fn available_minor(&self) -> Option<i64> {
        self.balance_minor.checked_sub(self.held_minor)
    }
}

/// The account a prepare names, as the store found it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AccountView {
    pub owner: String,
    pub currency: String,
    pub funds: AccountFunds,
}

/// How a step changes the account's numbers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Effect {
    None,
    PlaceHold(i64),
    ReleaseHold(i64),
    AnnounceIncoming(i64),
    WithdrawIncoming(i64),
    /// Commit of a debit: balance and hold both drop.
    SettleDebit(i64),
    /// Commit of a credit: balance rises, the announcement goes.
    SettleCredit(i64),
    /// Commit of a debit for less than its hold (an authorization captured in part): the
    /// balance drops by `settled`, the whole `held` hold goes.
    SettleDebitPart {
        settled: i64,
        held: i64,
    },
    /// Commit of a credit for less than it announced: the balance rises by `settled`, the
    /// whole `announced` announcement goes.
    SettleCreditPart {
        settled: i64,
        announced: i64,
    },
}

impl Effect {
    /// The change to the balance itself, which is what the journal records.
    pub fn balance_delta_minor(self) -> i64 {
        match self {
            Effect::SettleDebit(amount)
            | Effect::SettleDebitPart {
                settled: amount, ..
            } => -amount,
            Effect::SettleCredit(amount)
            | Effect::SettleCreditPart {
                settled: amount, ..
            } => amount,
            _ => 0,
        }
    }

    /// Applies the effect with checked arithmetic. An error here means the stored numbers
    /// contradict the participant's own invariants, so it is reported, never wrapped.
    pub fn apply(self, funds: AccountFunds) -> Result<AccountFunds, Failure> {
        let broken = || Failure::internal("account arithmetic", format!("{self:?} on {funds:?}"));
        let mut next = funds;
        match self {
            Effect::None => {}
            Effect::PlaceHold(amount) => {
                next.held_minor = funds.held_minor.checked_add(amount).ok_or_else(broken)?;
            }
            Effect::ReleaseHold(amount) => {
                next.held_minor = funds.held_minor.checked_sub(amount).ok_or_else(broken)?;
            }
            Effect::AnnounceIncoming(amount) => {
                next.incoming_minor = funds
                    .incoming_minor
                    .checked_add(amount)
                    .ok_or_else(broken)?;
            }
            Effect::WithdrawIncoming(amount) => {
                next.incoming_minor = funds
                    .incoming_minor
                    .checked_sub(amount)
                    .ok_or_else(broken)?;
            }
            Effect::SettleDebit(amount) => {
                next.balance_minor = funds.balance_minor.checked_sub(amount).ok_or_else(broken)?;
                next.held_minor = funds.held_minor.checked_sub(amount).ok_or_else(broken)?;
            }
            Effect::SettleCredit(amount) => {
                next.balance_minor = funds.balance_minor.checked_add(amount).ok_or_else(broken)?;
                next.incoming_minor = funds
                    .incoming_minor
                    .checked_sub(amount)
                    .ok_or_else(broken)?;
            }
            Effect::SettleDebitPart { settled, held } => {
                next.balance_minor = funds
                    .balance_minor
                    .checked_sub(settled)
                    .ok_or_else(broken)?;
                next.held_minor = funds.held_minor.checked_sub(held).ok_or_else(broken)?;
            }
            Effect::SettleCreditPart { settled, announced } => {
                next.balance_minor = funds
                    .balance_minor
                    .checked_add(settled)
                    .ok_or_else(broken)?;
                next.incoming_minor = funds
                    .incoming_minor
                    .checked_sub(announced)
                    .ok_or_else(broken)?;
            }
        }
        let available = next.available_minor().ok_or_else(broken)?;
        if next.held_minor < 0 || next.incoming_minor < 0 || available < 0 {
            return Err(broken());
        }
        Ok(next)
    }
}

/// The outcome of one step: the leg as it now stands, whether it must be written, and the
/// effect on the account (applied in the same transaction as the write).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Transition {
    pub leg: Leg,
    pub changed: bool,
    pub effect: Effect,
}

impl Transition {
    fn unchanged(leg: &Leg) -> Self {
        Transition {
            leg: leg.clone(),
            changed: false,
            effect: Effect::None,
        }
    }
}

/// Phase 1. `account` is `None` when the named account does not exist.
pub fn prepare(
    existing: Option<&Leg>,
    role: Role,
    intent: &PrepareIntent,
    account: Option<&AccountView>,
) -> Result<Transition, Failure> {
    if let Some(leg) = existing {
        return repeat_prepare(leg, intent);
    }
    let aborted = |reason: Reason| Transition {
        leg: Leg {
            role,
            intent: Some(intent.clone()),
            state: LegState::Aborted,
            reason: Some(reason),
        },
        changed: true,
        effect: Effect::None,
    };
    let Some(account) = account else {
        return Ok(aborted(Reason::new(
            reason::ACCOUNT_NOT_FOUND,
            format!("account {} does not exist", intent.account_number),
        )));
    };
    if !intent.owner.is_empty() && account.owner != intent.owner {
        // The number names another owner's account: the bank reissued it (e.g. it lost its
        // database and started afresh). Moving money would pay or charge the wrong person.
        return Ok(aborted(Reason::new(
            reason::ACCOUNT_OWNER_MISMATCH,
            format!(
                "account {} does not belong to {} at this bank",
                intent.account_number, intent.owner
            ),
        )));
    }
    if account.currency != intent.currency {
        return Ok(aborted(Reason::new(
            reason::CURRENCY_MISMATCH,
            format!(
                "account {} holds {}, not {}",
                intent.account_number, account.currency, intent.currency
            ),
        )));
    }
    let effect = match role {
        Role::Debit => {
            let available = account.funds.available_minor().unwrap_or(0);
            if available < intent.amount_minor {
                return Ok(aborted(Reason::new(
                    reason::INSUFFICIENT_FUNDS,
                    format!("insufficient funds in account {}", intent.account_number),
                )));
            }
            Effect::PlaceHold(intent.amount_minor)
        }
        Role::Credit => {
            // The commit must never fail, so the credit must fit on top of every credit
            // already announced.
            let fits = account
                .funds
                .balance_minor
                .checked_add(account.funds.incoming_minor)
                .and_then(|total| total.checked_add(intent.amount_minor))
                .is_some();
            if !fits {
                return Ok(aborted(Reason::new(
                    reason::BALANCE_OVERFLOW,
                    format!("account {} cannot hold that much", intent.account_number),
                )));
            }
            Effect::AnnounceIncoming(intent.amount_minor)
        }
    };
    Ok(Transition {
        leg: Leg {
            role,
            intent: Some(intent.clone()),
            state: LegState::Prepared,
            reason: None,
        },
        changed: true,
        effect,
    })
}

fn repeat_prepare(leg: &Leg, intent: &PrepareIntent) -> Result<Transition, Failure> {
    match &leg.intent {
        // A tombstone: the coordinator already gave up on this payment; the late prepare
        // votes NO whatever it asks.
        None => Ok(Transition::unchanged(leg)),
        Some(stored) if same_request(stored, intent) => Ok(Transition::unchanged(leg)),
        Some(_) => Err(Failure::invalid_field(
            "payment_id",
            "payment_id already used for a different prepare on this leg",
        )),
    }
}

/// Two prepares are the same request when account, amount and currency agree; the deadline
/// may legitimately differ between a prepare and its retry.
fn same_request(stored: &PrepareIntent, incoming: &PrepareIntent) -> bool {
    stored.account_number == incoming.account_number
        && stored.amount_minor == incoming.amount_minor
        && stored.currency == incoming.currency
}

/// Phase 2, commit. `settle_minor` (0: the prepared amount) is how much moves: less for an
/// authorization captured in part, when the rest of the hold or announcement is released.
pub fn commit(existing: Option<&Leg>, settle_minor: i64) -> Result<Transition, Failure> {
    let Some(leg) = existing else {
        return Err(Failure::NotFound(
            "no prepared leg for this payment; commit refused".into(),
        ));
    };
    match (leg.state, &leg.intent) {
        (LegState::Committed, _) => Ok(Transition::unchanged(leg)),
        (LegState::Aborted, _) => Err(Failure::precondition(
            "leg_aborted",
            "commit refused: this leg is ABORTED (the coordinator and bank disagree)",
        )),
        (LegState::Prepared, Some(intent)) => {
            let prepared = intent.amount_minor;
            let effect = match (leg.role, settle_minor) {
                (Role::Debit, 0) => Effect::SettleDebit(prepared),
                (Role::Credit, 0) => Effect::SettleCredit(prepared),
                (_, settled) if settled < 0 || settled > prepared => {
                    return Err(Failure::invalid_field(
                        "settle_minor",
                        format!(
                            "settle_minor {settled} is outside 0..={prepared}, the prepared amount"
                        ),
                    ))
                }
                (Role::Debit, settled) => Effect::SettleDebitPart {
                    settled,
                    held: prepared,
                },
                (Role::Credit, settled) => Effect::SettleCreditPart {
                    settled,
                    announced: prepared,
                },
            };
            Ok(Transition {
                leg: Leg {
                    state: LegState::Committed,
                    ..leg.clone()
                },
                changed: true,
                effect,
            })
        }
        (LegState::Prepared, None) => Err(Failure::internal(
            "commit",
            "a PREPARED leg without its prepare request",
        )),
    }
}

/// Phase 2, abort. Aborting a leg never prepared leaves a tombstone.
pub fn abort(existing: Option<&Leg>, role: Role) -> Result<Transition, Failure> {
    let Some(leg) = existing else {
        return Ok(Transition {
            leg: Leg {
                role,
                intent: None,
                state: LegState::Aborted,
                reason: Some(Reason::new(
                    reason::ABORTED_BEFORE_PREPARE,
                    "aborted by the coordinator before this bank saw the prepare",
                )),
            },
            changed: true,
            effect: Effect::None,
        });
    };
    match (leg.state, &leg.intent) {
        (LegState::Aborted, _) => Ok(Transition::unchanged(leg)),
        (LegState::Committed, _) => Err(Failure::precondition(
            "leg_committed",
            "abort refused: this leg is already COMMITTED (the coordinator and bank disagree)",
        )),
        (LegState::Prepared, Some(intent)) => {
            let effect = match leg.role {
                Role::Debit => Effect::ReleaseHold(intent.amount_minor),
                Role::Credit => Effect::WithdrawIncoming(intent.amount_minor),
            };
            Ok(Transition {
                leg: Leg {
                    state: LegState::Aborted,
                    reason: Some(Reason::new(
                        reason::ABORTED_BY_COORDINATOR,
                        "aborted by the coordinator",
                    )),
                    ..leg.clone()
                },
                changed: true,
                effect,
            })
        }
        (LegState::Prepared, None) => Err(Failure::internal(
            "abort",
            "a PREPARED leg without its prepare request",
        )),
    }
}

#[cfg(test)]
mod tests;
