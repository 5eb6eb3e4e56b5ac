//! The bank's durable state in one SQLite database (WAL mode, `synchronous=FULL`): accounts,
//! the 2PC legs, and the journal of every balance change. Every write goes through one writer
//! thread ([`GroupCommit`]): concurrent writes share a transaction and its fsync, and each
//! caller hears back only after that commit, so a state change is durable before its reply.
//!
//! The single writer is what makes holds concurrency-safe: a prepare reads `available` and
//! places its hold with no other write in between (writes in one batch see each other in
//! order). The storage also refuses, by `CHECK` constraint, any row where `balance − held`
//! would go negative, so a bug in code cannot persist a negative available balance. Reads use
//! a separate connection and see only committed state.

use std::path::Path;
use std::sync::{Arc, LazyLock, Mutex, MutexGuard};

use rusqlite::{params, Connection, OptionalExtension};
use strife_common::storage::group_commit::GroupCommit;
use strife_common::storage::sqlite::CachedStatements;
use strife_common::storage::store_identity::{Migration, StoreIdentity};
use strife_common::time::now_unix_ms;
use strife_common::Failure;

use crate::participant::{
    self, AccountFunds, AccountView, Effect, Leg, LegState, PrepareIntent, Reason, Role, Transition,
};

/// The `legs` table, word for word in the schema and in the 1 → 2 migration that rebuilds it.
/// Its CHECKs spell sets out as `=` … `OR`, not `IN (…)`: SQLite evaluates an `IN` list of
/// three or more values through a scratch b-tree it creates and destroys on every insert and
/// update of the column (≈ 4 µs each, three per leg at a bank).
macro_rules! legs_table {
    () => {
        "CREATE TABLE IF NOT EXISTS legs (
    payment_id                TEXT NOT NULL,
    role                      INTEGER NOT NULL CHECK (role = 1 OR role = 2),
    state                     INTEGER NOT NULL CHECK (state = 1 OR state = 2 OR state = 3),
    account_number            TEXT,
    amount_minor              INTEGER CHECK (amount_minor > 0),
    currency                  TEXT,
    decision_deadline_unix_ms INTEGER,
    reason_code               TEXT,
    reason                    TEXT,
    created_unix_ms           INTEGER NOT NULL,
    updated_unix_ms           INTEGER NOT NULL,
    PRIMARY KEY (payment_id, role)
) WITHOUT ROWID;
"
    };
}

/// The `journal` table, like [`legs_table`]. `seq` is a plain `INTEGER PRIMARY KEY`, not
/// `AUTOINCREMENT`: journal rows are never deleted, so the next id is always the largest + 1
/// either way, without a `sqlite_sequence` read and write per insert.
macro_rules! journal_table {
    () => {
        "CREATE TABLE IF NOT EXISTS journal (
    seq                 INTEGER PRIMARY KEY,
    account_number      TEXT NOT NULL REFERENCES accounts (account_number),
    kind                TEXT NOT NULL
                        CHECK (kind = 'deposit' OR kind = 'debit' OR kind = 'credit'),
    delta_minor         INTEGER NOT NULL,
    balance_after_minor INTEGER NOT NULL CHECK (balance_after_minor >= 0),
    payment_id          TEXT,
    actor               TEXT NOT NULL,
    at_unix_ms          INTEGER NOT NULL
);
"
    };
}

const SCHEMA: &str = concat!(
    "
CREATE TABLE IF NOT EXISTS accounts (
    id                    INTEGER PRIMARY KEY,
    account_number        TEXT NOT NULL UNIQUE,
    owner                 TEXT NOT NULL,
    holder_name           TEXT NOT NULL,
    currency              TEXT NOT NULL,
    balance_minor         INTEGER NOT NULL CHECK (balance_minor >= 0),
    held_minor            INTEGER NOT NULL CHECK (held_minor >= 0),
    incoming_minor        INTEGER NOT NULL CHECK (incoming_minor >= 0),
    opening_deposit_minor INTEGER NOT NULL CHECK (opening_deposit_minor >= 0),
    open_request_id       TEXT NOT NULL UNIQUE,
    created_unix_ms       INTEGER NOT NULL,
    CHECK (balance_minor - held_minor >= 0)
);
",
    legs_table!(),
    "CREATE INDEX IF NOT EXISTS legs_prepared_by_deadline
    ON legs (decision_deadline_unix_ms) WHERE state = 1;
",
    journal_table!(),
    "CREATE INDEX IF NOT EXISTS journal_by_account ON journal (account_number, seq);
"
);

/// Steps from older schema versions (see [`SCHEMA_VERSION`]); the schema's indexes are
/// re-created after them.
const MIGRATIONS: &[Migration] = &[Migration {
    // 1 → 2: `legs` and `journal` rebuilt with the same rows and ids, their CHECKs without
    // `IN` lists and the journal without `AUTOINCREMENT` (see the table macros). The same
    // values pass and fail the new CHECKs as the old.
    to_version: 2,
    sql: concat!(
        "ALTER TABLE legs RENAME TO legs_v1;
",
        legs_table!(),
        "INSERT INTO legs (payment_id, role, state, account_number, amount_minor, currency,
     decision_deadline_unix_ms, reason_code, reason, created_unix_ms, updated_unix_ms)
 SELECT payment_id, role, state, account_number, amount_minor, currency,
     decision_deadline_unix_ms, reason_code, reason, created_unix_ms, updated_unix_ms
 FROM legs_v1;
DROP TABLE legs_v1;
ALTER TABLE journal RENAME TO journal_v1;
",
        journal_table!(),
        "INSERT INTO journal (seq, account_number, kind, delta_minor, balance_after_minor,
     payment_id, actor, at_unix_ms)
 SELECT seq, account_number, kind, delta_minor, balance_after_minor, payment_id, actor,
     at_unix_ms
 FROM journal_v1;
DROP TABLE journal_v1;
"
    ),
}];

/// The schema version this binary writes (`PRAGMA user_version`); a database with a higher
/// one was written by a newer Strife and is refused.
pub const SCHEMA_VERSION: i64 = 2;

/// An account as stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AccountRecord {
    pub account_number: String,
    pub owner: String,
    pub holder_name: String,
    pub currency: String,
    pub funds: AccountFunds,
}

/// What opening an account asks for.
#[derive(Debug, Clone)]
pub struct NewAccount {
    pub request_id: String,
    pub owner: String,
    pub holder_name: String,
    pub currency: String,
    pub opening_deposit_minor: i64,
}

/// A leg with the payment it belongs to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredLeg {
    pub payment_id: String,
    pub leg: Leg,
}

/// One journal row: a change to one account's balance.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JournalRow {
    pub seq: i64,
    pub account_number: String,
    pub kind: String,
    pub delta_minor: i64,
    pub balance_after_minor: i64,
    pub payment_id: Option<String>,
    pub actor: String,
    pub at_unix_ms: i64,
}

/// Who hears about the store's durable leg transitions. The store reports through this trait
/// and knows nothing of who listens (the bank's metrics, `metrics::BankMetrics`, implement
/// it), so the store does not depend on the metrics module, which reads the store.
pub trait LegObserver: Send + Sync {
    /// A leg was durably moved into `state` (a repeated, idempotent step is not reported).
    fn leg_entered(&self, state: LegState);
}

/// PREPARED legs now, as [`Store::outstanding`] reads them.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct OutstandingSummary {
    /// PREPARED debit legs (each one a hold).
    pub holds: i64,
    /// The held amounts by currency code (the fixed list of `strife_common::money`; anything
    /// else is `other`, see [`currency_label`]).
    pub held_minor: Vec<(&'static str, i64)>,
    /// PREPARED legs of both roles.
    pub prepared_legs: i64,
}

/// A stored currency code as one of the known codes, or `other`: what the summary is keyed
/// by, so that whoever shows it (a metric label) gets a bounded set of values whatever a
/// row holds.
pub fn currency_label(code: &str) -> &'static str {
    strife_common::money::CURRENCIES
        .iter()
        .find(|currency| currency.code == code)
        .map_or("other", |currency| currency.code)
}

/// The bank's database.
pub struct Store {
    writer: GroupCommit,
    reader: Mutex<Connection>,
    _checkpointer: strife_common::storage::sqlite::Checkpointer,
    bank_id: String,
    observer: Arc<dyn LegObserver>,
}

/// Storage trouble (disk full, I/O error) is a transient `UNAVAILABLE`; anything else
/// `INTERNAL`.
fn storage(error: rusqlite::Error) -> Failure {
    strife_common::storage::storage_failure("bank.db", error)
}

impl Store {
    /// Whether the database takes a durable write now (readiness).
    pub async fn probe(&self) -> Result<(), Failure> {
        strife_common::storage::sqlite::probe_write(&self.writer, "bank.db").await
    }

    /// Opens (creating if needed and allowed) the database at `path`, checking that it is
    /// `identity`'s; durable leg transitions are reported to `observer`.
    pub fn open(
        path: &Path,
        bank_id: &str,
        identity: &StoreIdentity,
        observer: Arc<dyn LegObserver>,
    ) -> anyhow::Result<Self> {
        let (writer, reader, checkpointer) = strife_common::storage::sqlite::open_store_migrating(
            path,
            "bank database",
            SCHEMA,
            MIGRATIONS,
            identity,
        )?;
        Ok(Store {
            writer,
            reader: Mutex::new(reader),
            _checkpointer: checkpointer,
            bank_id: bank_id.to_owned(),
            observer,
        })
    }

    pub fn bank_id(&self) -> &str {
        &self.bank_id
    }

    fn read(&self) -> MutexGuard<'_, Connection> {
        // Reads change nothing, so a poisoned lock is still safe to use.
        self.reader
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Opens an account, journaling the opening deposit. Idempotent on `request_id`.
    pub async fn open_account(
        &self,
        new: &NewAccount,
        actor: &str,
    ) -> Result<AccountRecord, Failure> {
        let new = new.clone();
        let actor = actor.to_owned();
        let bank_id = self.bank_id.clone();
        self.writer
            .run(move |transaction| {
                if let Some((account, deposit)) = account_by_request(transaction, &new.request_id)?
                {
                    let same = account.owner == new.owner
                        && account.currency == new.currency
                        && deposit == new.opening_deposit_minor;
                    return if same {
                        Ok(account)
                    } else {
                        Err(Failure::invalid_field(
                            "request_id",
                            "request_id already used to open a different account",
                        ))
                    };
                }
                let next_id: i64 = transaction
                    .query_row_cached("SELECT COALESCE(MAX(id), 0) + 1 FROM accounts", [], |row| {
                        row.get(0)
                    })
                    .map_err(storage)?;
                let account_number = format!("{bank_id}-{next_id:08}");
                let now = now_unix_ms();
                transaction
                    .execute_cached(
                        "INSERT INTO accounts (id, account_number, owner, holder_name, currency,
                         balance_minor, held_minor, incoming_minor, opening_deposit_minor,
                         open_request_id, created_unix_ms)
                     VALUES (?1, ?2, ?3, ?4, ?5, ?6, 0, 0, ?6, ?7, ?8)",
                        params![
                            next_id,
                            account_number,
                            new.owner,
                            new.holder_name,
                            new.currency,
                            new.opening_deposit_minor,
                            new.request_id,
                            now
                        ],
                    )
                    .map_err(storage)?;
                if new.opening_deposit_minor > 0 {
                    insert_journal(
                        transaction,
                        &account_number,
                        "deposit",
                        new.opening_deposit_minor,
                        new.opening_deposit_minor,
                        None,
                        &actor,
                    )?;
                }
                load_account(transaction, &account_number)?
                    .ok_or_else(|| Failure::internal("open account", "inserted row vanished"))
            })
            .await
    }

    /// Changes the holder name of an account.
    pub async fn update_holder(
        &self,
        account_number: &str,
        holder_name: &str,
    ) -> Result<AccountRecord, Failure> {
        let account_number = account_number.to_owned();
        let holder_name = holder_name.to_owned();
        self.writer
            .run(move |transaction| {
                let updated = transaction
                    .execute_cached(
                        "UPDATE accounts SET holder_name = ?2 WHERE account_number = ?1",
                        params![account_number, holder_name],
                    )
                    .map_err(storage)?;
                if updated == 0 {
                    return Err(not_found(&account_number));
                }
                load_account(transaction, &account_number)?
                    .ok_or_else(|| not_found(&account_number))
            })
            .await
    }

    /// One account, or `NOT_FOUND`.
    pub fn account(&self, account_number: &str) -> Result<AccountRecord, Failure> {
        load_account(&self.read(), account_number)?.ok_or_else(|| not_found(account_number))
    }

    /// Every account, in opening order.
    pub fn accounts(&self) -> Result<Vec<AccountRecord>, Failure> {
        accounts_on(&self.read())
    }

    /// Every account, the PREPARED legs (at most `legs_limit`) and the journal head, all from
    /// one read transaction, so they describe one state of the bank even while payments run
    /// (the auditor's `--live` mode relies on it). WAL readers see the snapshot taken at
    /// their first read and never block the writer.
    pub fn snapshot(&self, legs_limit: u32) -> Result<BankSnapshot, Failure> {
        let connection = self.read();
        // Dropped at the end (a rollback): nothing was written, only the snapshot is released.
        let transaction = connection.unchecked_transaction().map_err(storage)?;
        let accounts = accounts_on(&transaction)?;
        let prepared_legs = prepared_legs_on(&transaction, None, legs_limit)?;
        let journal_head_seq: i64 = transaction
            .query_row_cached("SELECT COALESCE(MAX(seq), 0) FROM journal", [], |row| {
                row.get(0)
            })
            .map_err(storage)?;
        Ok(BankSnapshot {
            accounts,
            prepared_legs,
            journal_head_seq,
        })
    }

    /// Phase 1 for one leg.
    pub async fn prepare(
        &self,
        payment_id: &str,
        role: Role,
        intent: &PrepareIntent,
        actor: &str,
    ) -> Result<Leg, Failure> {
        let intent = intent.clone();
        self.step(payment_id, role, actor, move |transaction, existing| {
            let account = load_account(transaction, &intent.account_number)?;
            let view = account.as_ref().map(|record| AccountView {
                owner: record.owner.clone(),
                currency: record.currency.clone(),
                funds: record.funds,
            });
            let transition = participant::prepare(existing, role, &intent, view.as_ref())?;
            Ok((transition, account))
        })
        .await
    }

    /// Phase 2, commit, for one leg; `settle_minor` as [`participant::commit`]'s.
    pub async fn commit(
        &self,
        payment_id: &str,
        role: Role,
        settle_minor: i64,
        actor: &str,
    ) -> Result<Leg, Failure> {
        self.step(payment_id, role, actor, move |_, existing| {
            Ok((participant::commit(existing, settle_minor)?, None))
        })
        .await
    }

    /// Phase 2, abort, for one leg.
    pub async fn abort(&self, payment_id: &str, role: Role, actor: &str) -> Result<Leg, Failure> {
        self.step(payment_id, role, actor, move |_, existing| {
            Ok((participant::abort(existing, role)?, None))
        })
        .await
    }

    /// Runs one participant step: load the leg, decide, and (if anything changed) write the
    /// leg, the account and the journal in one transaction. `decide` may hand back the
    /// account it read in this transaction, so the effect does not read it again.
    async fn step(
        &self,
        payment_id: &str,
        role: Role,
        actor: &str,
        decide: impl FnOnce(
                &Connection,
                Option<&Leg>,
            ) -> Result<(Transition, Option<AccountRecord>), Failure>
            + Send
            + 'static,
    ) -> Result<Leg, Failure> {
        let payment_id = payment_id.to_owned();
        let actor = actor.to_owned();
        let (leg, changed) = self
            .writer
            .run(move |transaction| {
                let existing = load_leg(transaction, &payment_id, role)?;
                let (transition, account) = decide(transaction, existing.as_ref())?;
                if !transition.changed {
                    return Ok((transition.leg, false));
                }
                if transition.effect != Effect::None {
                    apply_effect(transaction, &payment_id, &transition, account, &actor)?;
                }
                if existing.is_some() {
                    update_leg(transaction, &payment_id, &transition.leg)?;
                } else {
                    insert_leg(transaction, &payment_id, &transition.leg)?;
                }
                Ok((transition.leg, true))
            })
            .await?;
        // Reported once durable: a repeated (idempotent) step changed nothing.
        if changed {
            self.observer.leg_entered(leg.state);
        }
        Ok(leg)
    }

    /// The PREPARED legs' totals (holds, held money by currency, legs of both roles), read
    /// through the partial index of PREPARED legs, so its cost follows the legs in doubt, not
    /// the bank's history.
    pub fn outstanding(&self) -> Result<OutstandingSummary, Failure> {
        let connection = self.read();
        let mut statement = connection
            .prepare_cached(
                "SELECT role, currency, COUNT(*), COALESCE(SUM(amount_minor), 0)
                 FROM legs WHERE state = 1 GROUP BY role, currency",
            )
            .map_err(storage)?;
        let rows = statement
            .query_map([], |row| {
                Ok((
                    row.get::<_, i64>(0)?,
                    row.get::<_, Option<String>>(1)?,
                    row.get::<_, i64>(2)?,
                    row.get::<_, i64>(3)?,
                ))
            })
            .map_err(storage)?;
        let mut summary = OutstandingSummary::default();
        for row in rows {
            let (role, currency, legs, amount_minor) = row.map_err(storage)?;
            summary.prepared_legs = summary.prepared_legs.saturating_add(legs);
            if role != Role::Debit.code() {
                continue;
            }
            summary.holds = summary.holds.saturating_add(legs);
            let currency = currency_label(currency.as_deref().unwrap_or_default());
            match summary
                .held_minor
                .iter_mut()
                .find(|(known, _)| *known == currency)
            {
                Some((_, held)) => *held = held.saturating_add(amount_minor),
                None => summary.held_minor.push((currency, amount_minor)),
            }
        }
        Ok(summary)
    }

    /// One leg, if this bank has heard of it.
    pub fn leg(&self, payment_id: &str, role: Role) -> Result<Option<Leg>, Failure> {
        let connection = self.read();
        load_leg(&connection, payment_id, role)
    }

    /// Legs still PREPARED, oldest deadline first; with `overdue_at`, only those whose
    /// decision deadline has passed.
    pub fn prepared_legs(
        &self,
        overdue_at: Option<i64>,
        limit: u32,
    ) -> Result<Vec<StoredLeg>, Failure> {
        prepared_legs_on(&self.read(), overdue_at, limit)
    }

    /// Journal rows of one account with `seq > after_seq`, oldest first.
    pub fn journal(
        &self,
        account_number: &str,
        after_seq: i64,
        limit: u32,
    ) -> Result<Vec<JournalRow>, Failure> {
        let connection = self.read();
        if load_account(&connection, account_number)?.is_none() {
            return Err(not_found(account_number));
        }
        let mut statement = connection
            .prepare_cached(
                "SELECT seq, account_number, kind, delta_minor, balance_after_minor, payment_id,
                        actor, at_unix_ms
                 FROM journal WHERE account_number = ?1 AND seq > ?2 ORDER BY seq LIMIT ?3",
            )
            .map_err(storage)?;
        let rows = statement
            .query_map(params![account_number, after_seq, limit], |row| {
                Ok(JournalRow {
                    seq: row.get(0)?,
                    account_number: row.get(1)?,
                    kind: row.get(2)?,
                    delta_minor: row.get(3)?,
                    balance_after_minor: row.get(4)?,
                    payment_id: row.get(5)?,
                    actor: row.get(6)?,
                    at_unix_ms: row.get(7)?,
                })
            })
            .map_err(storage)?;
        rows.collect::<Result<_, _>>().map_err(storage)
    }
}

fn not_found(account_number: &str) -> Failure {
    Failure::NotFound(format!("account {account_number} does not exist"))
}

/// One consistent read of a bank: see [`Store::snapshot`].
pub struct BankSnapshot {
    pub accounts: Vec<AccountRecord>,
    pub prepared_legs: Vec<StoredLeg>,
    pub journal_head_seq: i64,
}

fn accounts_on(connection: &Connection) -> Result<Vec<AccountRecord>, Failure> {
    let mut statement = connection
        .prepare_cached(&format!("{ACCOUNT_COLUMNS} ORDER BY id"))
        .map_err(storage)?;
    let rows = statement.query_map([], account_from_row).map_err(storage)?;
    rows.collect::<Result<_, _>>().map_err(storage)
}

fn prepared_legs_on(
    connection: &Connection,
    overdue_at: Option<i64>,
    limit: u32,
) -> Result<Vec<StoredLeg>, Failure> {
    let mut statement = connection
        .prepare_cached(&format!(
            "{LEG_COLUMNS} WHERE state = 1 AND decision_deadline_unix_ms <= ?1
             ORDER BY decision_deadline_unix_ms LIMIT ?2"
        ))
        .map_err(storage)?;
    let cutoff = overdue_at.unwrap_or(i64::MAX);
    let rows = statement
        .query_map(params![cutoff, limit], stored_leg_from_row)
        .map_err(storage)?;
    rows.collect::<Result<Vec<_>, _>>()
        .map_err(storage)?
        .into_iter()
        .collect()
}

const ACCOUNT_COLUMNS: &str = "SELECT account_number, owner, holder_name, currency, balance_minor,
    held_minor, incoming_minor FROM accounts";

fn account_from_row(row: &rusqlite::Row<'_>) -> rusqlite::Result<AccountRecord> {
    Ok(AccountRecord {
        account_number: row.get(0)?,
        owner: row.get(1)?,
        holder_name: row.get(2)?,
        currency: row.get(3)?,
        funds: AccountFunds {
            balance_minor: row.get(4)?,
            held_minor: row.get(5)?,
            incoming_minor: row.get(6)?,
        },
    })
}

fn load_account(
    connection: &Connection,
    account_number: &str,
) -> Result<Option<AccountRecord>, Failure> {
    connection
        .query_row_cached(&ACCOUNT_BY_NUMBER, [account_number], account_from_row)
        .optional()
        .map_err(storage)
}

fn account_by_request(
    connection: &Connection,
    request_id: &str,
) -> Result<Option<(AccountRecord, i64)>, Failure> {
    connection
        .query_row_cached(
            "SELECT account_number, owner, holder_name, currency, balance_minor, held_minor,
                    incoming_minor, opening_deposit_minor
             FROM accounts WHERE open_request_id = ?1",
            [request_id],
            |row| Ok((account_from_row(row)?, row.get(7)?)),
        )
        .optional()
        .map_err(storage)
}

const LEG_COLUMNS: &str = "SELECT payment_id, role, state, account_number, amount_minor, currency,
    decision_deadline_unix_ms, reason_code, reason FROM legs";

// Statements every leg runs, formatted once (not per call: each call would allocate).
static LEG_BY_KEY: LazyLock<String> =
    LazyLock::new(|| format!("{LEG_COLUMNS} WHERE payment_id = ?1 AND role = ?2"));
static ACCOUNT_BY_NUMBER: LazyLock<String> =
    LazyLock::new(|| format!("{ACCOUNT_COLUMNS} WHERE account_number = ?1"));

/// Raw columns of a leg row; decoded outside rusqlite so bad codes become our errors.
type LegColumns = (
    String,
    i64,
    i64,
    Option<String>,
    Option<i64>,
    Option<String>,
    Option<i64>,
    Option<String>,
    Option<String>,
);

fn stored_leg_from_row(row: &rusqlite::Row<'_>) -> rusqlite::Result<Result<StoredLeg, Failure>> {
    let columns: LegColumns = (
        row.get(0)?,
        row.get(1)?,
        row.get(2)?,
        row.get(3)?,
        row.get(4)?,
        row.get(5)?,
        row.get(6)?,
        row.get(7)?,
        row.get(8)?,
    );
    Ok(decode_leg(columns))
}

fn decode_leg(columns: LegColumns) -> Result<StoredLeg, Failure> {
    let (
        payment_id,
        role,
        state,
        account_number,
        amount_minor,
        currency,
        deadline,
        reason_code,
        reason,
    ) = columns;
    let corrupt = || Failure::internal("decoding leg", format!("payment {payment_id}"));
    let role = Role::from_code(role).ok_or_else(corrupt)?;
    let state = LegState::from_code(state).ok_or_else(corrupt)?;
    let intent = match (account_number, amount_minor, currency) {
        (Some(account_number), Some(amount_minor), Some(currency)) => Some(PrepareIntent {
            account_number,
            amount_minor,
            currency,
            decision_deadline_unix_ms: deadline.unwrap_or(0),
            owner: String::new(),
        }),
        (None, None, None) => None,
        _ => return Err(corrupt()),
    };
    let reason = reason_code.map(|code| Reason {
        code,
        message: reason.unwrap_or_default(),
    });
    Ok(StoredLeg {
        payment_id,
        leg: Leg {
            role,
            intent,
            state,
            reason,
        },
    })
}

fn load_leg(connection: &Connection, payment_id: &str, role: Role) -> Result<Option<Leg>, Failure> {
    let row = connection
        .query_row_cached(
            &LEG_BY_KEY,
            params![payment_id, role.code()],
            stored_leg_from_row,
        )
        .optional()
        .map_err(storage)?;
    row.transpose().map(|found| found.map(|stored| stored.leg))
}

fn insert_leg(transaction: &Connection, payment_id: &str, leg: &Leg) -> Result<(), Failure> {
    let now = now_unix_ms();
    let intent = leg.intent.as_ref();
    transaction
        .execute_cached(
            "INSERT INTO legs (payment_id, role, state, account_number, amount_minor, currency,
                 decision_deadline_unix_ms, reason_code, reason, created_unix_ms, updated_unix_ms)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?10)",
            params![
                payment_id,
                leg.role.code(),
                leg.state.code(),
                intent.map(|intent| &intent.account_number),
                intent.map(|intent| intent.amount_minor),
                intent.map(|intent| &intent.currency),
                intent.map(|intent| intent.decision_deadline_unix_ms),
                leg.reason.as_ref().map(|reason| &reason.code),
                leg.reason.as_ref().map(|reason| &reason.message),
                now
            ],
        )
        .map_err(storage)?;
    Ok(())
}

/// A stored leg's next state (its intent never changes once recorded).
fn update_leg(transaction: &Connection, payment_id: &str, leg: &Leg) -> Result<(), Failure> {
    let updated = transaction
        .execute_cached(
            "UPDATE legs SET state = ?3, reason_code = ?4, reason = ?5, updated_unix_ms = ?6
             WHERE payment_id = ?1 AND role = ?2",
            params![
                payment_id,
                leg.role.code(),
                leg.state.code(),
                leg.reason.as_ref().map(|reason| &reason.code),
                leg.reason.as_ref().map(|reason| &reason.message),
                now_unix_ms()
            ],
        )
        .map_err(storage)?;
    if updated != 1 {
        return Err(Failure::internal(
            "saving leg",
            format!("payment {payment_id}: the leg read in this transaction is gone"),
        ));
    }
    Ok(())
}

/// Moves the leg's money on its account. `read` is the account as this transaction already
/// read it, if it did (a prepare); otherwise it is read here.
fn apply_effect(
    transaction: &Connection,
    payment_id: &str,
    transition: &Transition,
    read: Option<AccountRecord>,
    actor: &str,
) -> Result<(), Failure> {
    let intent =
        transition.leg.intent.as_ref().ok_or_else(|| {
            Failure::internal("apply effect", "effect on a leg without an account")
        })?;
    let account = match read {
        Some(account) if account.account_number == intent.account_number => Some(account),
        _ => load_account(transaction, &intent.account_number)?,
    }
    .ok_or_else(|| Failure::internal("apply effect", "account of a prepared leg vanished"))?;
    let next = transition.effect.apply(account.funds)?;
    transaction
        .execute_cached(
            "UPDATE accounts SET balance_minor = ?2, held_minor = ?3, incoming_minor = ?4
             WHERE account_number = ?1",
            params![
                intent.account_number,
                next.balance_minor,
                next.held_minor,
                next.incoming_minor
            ],
        )
        .map_err(storage)?;
    let delta_minor = transition.effect.balance_delta_minor();
    if delta_minor != 0 {
        let kind = if delta_minor < 0 { "debit" } else { "credit" };
        insert_journal(
            transaction,
            &intent.account_number,
            kind,
            delta_minor,
            next.balance_minor,
            Some(payment_id),
            actor,
        )?;
    }
    Ok(())
}

fn insert_journal(
    transaction: &Connection,
    account_number: &str,
    kind: &str,
    delta_minor: i64,
    balance_after_minor: i64,
    payment_id: Option<&str>,
    actor: &str,
) -> Result<(), Failure> {
    transaction
        .execute_cached(
            "INSERT INTO journal (account_number, kind, delta_minor, balance_after_minor,
                 payment_id, actor, at_unix_ms)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
            params![
                account_number,
                kind,
                delta_minor,
                balance_after_minor,
                payment_id,
                actor,
                now_unix_ms()
            ],
        )
        .map_err(storage)?;
    Ok(())
}

#[cfg(test)]
mod tests;
