//! The embedded gateway store: one SQLite database (WAL, `synchronous=FULL`).
//!
//! Every write goes through one writer thread ([`GroupCommit`]): concurrent writes share a
//! transaction and its fsync, and each caller hears back only after that commit. Reads use a
//! separate connection and see only committed state. No table is ever rewritten whole, and
//! every query a payment makes is an indexed point lookup, so the cost of a payment does not
//! grow with the history.
//!
//! # Files
//!
//! Laid out as [`super::postgres`] is, wherever a concept exists in both, and so that no two
//! files import each other, not even through others: each file below imports only files
//! listed after it (and of the store outside this directory, only its interface).
//!
//! - `mod.rs`: opening, and the [`GatewayStore`] methods, each one read or one write that
//!   calls into the files below; and the two writes with rules of their own: an attempt under
//!   its idempotency key (`record_attempt`) and a decision (`write_decision`); its tests in
//!   `tests.rs` and `migration_tests.rs`;
//! - `snapshot.rs`: the audit's snapshot, one read transaction over `read.rs`'s and
//!   `settle.rs`'s reads;
//! - `settle.rs`: settlement's reads and read-modify-writes, inside the write they belong to;
//! - `schema.rs`: the tables, the migrations from older versions, [`SCHEMA_VERSION`];
//! - `read.rs`: row decoding, payment lookups and listings;
//! - `connection.rs`: what every file above builds on: the read connection and how SQLite's
//!   errors are answered;
//! - `shared.rs`: acknowledgements of concurrent payments, written together;
//! - `directory.rs`: users and links kept in memory (PostgreSQL shares their reads instead).

mod api_keys;
mod connection;
mod directory;
mod read;
mod schema;
mod settle;
mod shared;
mod snapshot;

use std::path::Path;
use std::sync::{Arc, Mutex, MutexGuard};

use anyhow::Context;
use async_trait::async_trait;
use rusqlite::{params, Connection, OpenFlags, OptionalExtension};
use strife_common::storage::group_commit::{Durability, GroupCommit};
use strife_common::storage::sqlite::CachedStatements;
use strife_common::storage::store_identity::StoreIdentity;
use strife_common::time::now_unix_ms;
use strife_common::Failure;

pub use schema::SCHEMA_VERSION;

use super::interface::{GatewayLog, GatewayStore, LoginChange};
use crate::lockout::SharedLogin;
use crate::records::{
    metadata_to_json, ApiKeyRecord, Begun, LinkedAccount, LogSnapshot, PaymentFilter,
    PaymentRecord, PaymentStatus, PositionRecord, UserRecord, WindowRecord, WindowReport,
};
use crate::{payment, settlement};
use connection::{storage, Reader};
use read::{
    account_from_row, load_payment, payment_columns, payment_from_row, read_login, read_payments,
    ACCOUNTS_OF_USER, SELECT_PAYMENTS, UNFINISHED,
};
use shared::{AckQueue, AckWriteQueued};

/// The gateway's SQLite database.
pub struct SqliteGatewayStore {
    writer: GroupCommit,
    reader: Reader,
    acknowledgements: Arc<AckQueue>,
    directory: directory::Directory,
    _checkpointer: strife_common::storage::sqlite::Checkpointer,
}

impl SqliteGatewayStore {
    /// Opens (creating if needed and allowed) the database at `path`, checking that it is
    /// `identity`'s.
    pub fn open(path: &Path, identity: &StoreIdentity) -> anyhow::Result<Self> {
        let (writer, reader, checkpointer) = strife_common::storage::sqlite::open_store_migrating(
            path,
            "gateway database",
            schema::SCHEMA,
            schema::MIGRATIONS,
            identity,
        )?;
        Ok(SqliteGatewayStore {
            writer,
            reader: Reader(Arc::new(Mutex::new(reader))),
            acknowledgements: Arc::default(),
            directory: directory::Directory::default(),
            _checkpointer: checkpointer,
        })
    }

    fn lock(&self) -> MutexGuard<'_, Connection> {
        self.reader.lock()
    }
}

/// A read-only view of a gateway database that may be in use by a running gateway: what
/// `strife audit` opens. It never creates, migrates or writes the file.
pub struct SqliteGatewayLog {
    reader: Reader,
}

impl SqliteGatewayLog {
    /// `None` when there is no database at `path` (a gateway that never ran logged nothing).
    pub fn open_read_only(path: &Path) -> anyhow::Result<Option<Self>> {
        if !path.exists() {
            return Ok(None);
        }
        let connection = Connection::open_with_flags(path, OpenFlags::SQLITE_OPEN_READ_ONLY)
            .with_context(|| format!("opening {}", path.display()))?;
        let version: i64 = connection
            .query_row("PRAGMA user_version", [], |row| row.get(0))
            .with_context(|| format!("reading the schema version of {}", path.display()))?;
        anyhow::ensure!(
            version <= SCHEMA_VERSION,
            "{} has schema version {version}, newer than this binary's {}; use a newer strife",
            path.display(),
            SCHEMA_VERSION
        );
        Ok(Some(SqliteGatewayLog {
            reader: Reader(Arc::new(Mutex::new(connection))),
        }))
    }
}

#[async_trait]
impl GatewayLog for SqliteGatewayLog {
    async fn snapshot(&self) -> Result<LogSnapshot, Failure> {
        self.reader.scan(snapshot::read_snapshot).await
    }
}

#[async_trait]
impl GatewayLog for SqliteGatewayStore {
    async fn snapshot(&self) -> Result<LogSnapshot, Failure> {
        self.reader.scan(snapshot::read_snapshot).await
    }
}

#[async_trait]
impl GatewayStore for SqliteGatewayStore {
    async fn probe(&self) -> Result<(), Failure> {
        strife_common::storage::sqlite::probe_write(&self.writer, "gateway.db").await
    }

    async fn insert_user(
        &self,
        username: &str,
        role: &str,
        password_hash: &str,
    ) -> Result<(), Failure> {
        let (username, role, password_hash) = (
            username.to_owned(),
            role.to_owned(),
            password_hash.to_owned(),
        );
        self.writer
            .run(move |transaction| {
                let inserted = transaction
                    .execute_cached(
                        "INSERT INTO users (username, role, password_hash, created_unix_ms)
                     VALUES (?1, ?2, ?3, ?4) ON CONFLICT (username) DO NOTHING",
                        params![username, role, password_hash, now_unix_ms()],
                    )
                    .map_err(storage)?;
                if inserted == 0 {
                    return Err(Failure::AlreadyExists(format!(
                        "user {username} already exists"
                    )));
                }
                Ok(())
            })
            .await?;
        self.directory.changed();
        Ok(())
    }

    async fn user(&self, username: &str) -> Result<Option<UserRecord>, Failure> {
        if let Some(user) = self.directory.user(username) {
            return Ok(Some(user));
        }
        let generation = self.directory.generation();
        let user = self
            .lock()
            .query_row_cached(
                "SELECT username, role, password_hash FROM users WHERE username = ?1",
                [username],
                |row| {
                    Ok(UserRecord {
                        username: row.get(0)?,
                        role: row.get(1)?,
                        password_hash: row.get(2)?,
                    })
                },
            )
            .optional()
            .map_err(storage)?;
        if let Some(user) = &user {
            self.directory.keep_user(generation, user);
        }
        Ok(user)
    }

    async fn secret(&self, name: &str) -> Result<[u8; 32], Failure> {
        let name = name.to_owned();
        self.writer
            .run(move |transaction| {
                let fresh: [u8; 32] = rand::random();
                transaction
                    .execute_cached(
                        "INSERT INTO secrets (name, value) VALUES (?1, ?2)
                         ON CONFLICT (name) DO NOTHING",
                        params![name, fresh.as_slice()],
                    )
                    .map_err(storage)?;
                let stored: Vec<u8> = transaction
                    .query_row_cached(
                        "SELECT value FROM secrets WHERE name = ?1",
                        [&name],
                        |row| row.get(0),
                    )
                    .map_err(storage)?;
                <[u8; 32]>::try_from(stored.as_slice()).map_err(|_| {
                    Failure::internal("secret", format!("secret {name} is not 32 bytes"))
                })
            })
            .await
    }

    async fn insert_api_key(&self, key: &ApiKeyRecord) -> Result<(), Failure> {
        let key = key.clone();
        self.writer
            .run(move |transaction| api_keys::insert(transaction, &key))
            .await
    }

    async fn api_key(&self, key_id: &str) -> Result<Option<ApiKeyRecord>, Failure> {
        api_keys::read(&self.lock(), key_id)
    }

    async fn api_keys(&self, owner: Option<&str>) -> Result<Vec<ApiKeyRecord>, Failure> {
        api_keys::list(&self.lock(), owner)
    }

    async fn revoke_api_key(
        &self,
        key_id: &str,
        now_unix_ms: i64,
    ) -> Result<Option<ApiKeyRecord>, Failure> {
        let key_id = key_id.to_owned();
        self.writer
            .run(move |transaction| api_keys::revoke(transaction, &key_id, now_unix_ms))
            .await
    }

    async fn touch_api_key(&self, key_id: &str, now_unix_ms: i64) -> Result<(), Failure> {
        let key_id = key_id.to_owned();
        self.writer
            .run_with(Durability::Relaxed, move |transaction| {
                api_keys::touch(transaction, &key_id, now_unix_ms)
            })
            .await
    }

    async fn login(&self, username: &str) -> Result<Option<SharedLogin>, Failure> {
        read_login(&self.lock(), username)
    }

    async fn update_login(
        &self,
        username: &str,
        change: LoginChange,
    ) -> Result<Option<SharedLogin>, Failure> {
        let username = username.to_owned();
        self.writer
            .run_with(Durability::Relaxed, move |transaction| {
                let next = change(read_login(transaction, &username)?);
                match next {
                    Some(login) => transaction.execute_cached(
                        "INSERT INTO logins (username, failures, window_start_unix_ms,
                             locked_until_unix_ms, lockouts) VALUES (?1, ?2, ?3, ?4, ?5)
                         ON CONFLICT (username) DO UPDATE SET failures = excluded.failures,
                             window_start_unix_ms = excluded.window_start_unix_ms,
                             locked_until_unix_ms = excluded.locked_until_unix_ms,
                             lockouts = excluded.lockouts",
                        params![
                            username,
                            login.failures,
                            login.window_start_unix_ms,
                            login.locked_until_unix_ms,
                            login.lockouts
                        ],
                    ),
                    None => transaction
                        .execute_cached("DELETE FROM logins WHERE username = ?1", [&username]),
                }
                .map_err(storage)?;
                Ok(next)
            })
            .await
    }

    async fn link_account(&self, account: &LinkedAccount) -> Result<(), Failure> {
        let account = account.clone();
        self.writer.run(move |transaction| {
            let owner: Option<String> = transaction
                .query_row_cached(
                    "SELECT username FROM accounts WHERE bank_id = ?1 AND account_number = ?2",
                    params![account.bank_id, account.account_number],
                    |row| row.get(0),
                )
                .optional()
                .map_err(storage)?;
            if owner.as_deref().is_some_and(|owner| owner != account.username) {
                return Err(Failure::AlreadyExists("account is linked to another user".into()));
            }
            transaction
                .execute_cached(
                    "INSERT INTO accounts (bank_id, account_number, username, currency, holder_name,
                         linked_unix_ms)
                     VALUES (?1, ?2, ?3, ?4, ?5, ?6)
                     ON CONFLICT (bank_id, account_number) DO UPDATE SET holder_name = excluded.holder_name",
                    params![
                        account.bank_id,
                        account.account_number,
                        account.username,
                        account.currency,
                        account.holder_name,
                        now_unix_ms()
                    ],
                )
                .map_err(storage)?;
            Ok(())
        })
        .await?;
        self.directory.changed();
        Ok(())
    }

    async fn accounts_of(&self, username: &str) -> Result<Vec<LinkedAccount>, Failure> {
        if let Some(accounts) = self.directory.accounts(username) {
            return Ok(accounts);
        }
        let generation = self.directory.generation();
        let accounts: Vec<LinkedAccount> = {
            let connection = self.lock();
            let mut statement = connection
                .prepare_cached(&ACCOUNTS_OF_USER)
                .map_err(storage)?;
            let rows = statement
                .query_map([username], account_from_row)
                .map_err(storage)?;
            rows.collect::<Result<_, _>>().map_err(storage)?
        };
        self.directory
            .keep_accounts(generation, username, &accounts);
        Ok(accounts)
    }

    /// Records a payment attempt under `(from user, key)`, or reports what the key already has.
    /// Written without waiting for its fsync: until a decision is written (always fsynced,
    /// which makes this record durable too), losing it is harmless — the banks' legs of an
    /// unknown payment are aborted by presumption, and a retry of the key starts afresh.
    /// `attempt` is the new attempt to record if one is needed; whether it is, is
    /// [`payment::begin`]'s decision, made inside this transaction on what the key holds.
    async fn begin_payment(&self, attempt: &PaymentRecord) -> Result<Begun, Failure> {
        let fingerprint = payment::fingerprint(attempt);
        let attempt = attempt.clone();
        self.writer
            .run_with(Durability::Relaxed, move |transaction| {
                record_attempt(transaction, attempt, &fingerprint)
            })
            .await
    }

    /// Writes the decision, once: a payment already decided keeps its first decision, which is
    /// returned instead. This single assignment is what makes racing deciders (the payment's
    /// own task, the decision query, recovery) safe.
    async fn decide(
        &self,
        payment_id: &str,
        status: PaymentStatus,
        reason_code: Option<&str>,
        reason: Option<&str>,
    ) -> Result<PaymentRecord, Failure> {
        let payment_id = payment_id.to_owned();
        let reason_code = reason_code.map(str::to_owned);
        let reason = reason.map(str::to_owned);
        self.writer
            .run(move |transaction| {
                write_decision(
                    transaction,
                    &payment_id,
                    status,
                    reason_code.as_deref(),
                    reason.as_deref(),
                    None,
                )
            })
            .await
    }

    /// A capture: the decision COMMITTED moving `amount_minor` of the authorized amount.
    async fn capture(&self, payment_id: &str, amount_minor: i64) -> Result<PaymentRecord, Failure> {
        let payment_id = payment_id.to_owned();
        self.writer
            .run(move |transaction| {
                write_decision(
                    transaction,
                    &payment_id,
                    PaymentStatus::Committed,
                    None,
                    None,
                    Some(amount_minor),
                )
            })
            .await
    }

    /// Marks an authorization AUTHORIZED (its legs are held), durably; the payment as stored
    /// afterwards (a decided one is returned unchanged).
    async fn authorize(&self, payment_id: &str) -> Result<PaymentRecord, Failure> {
        let payment_id = payment_id.to_owned();
        self.writer
            .run(move |transaction| {
                transaction
                    .execute_cached(
                        "UPDATE payments SET authorized_unix_ms = ?2
                         WHERE payment_id = ?1 AND status = 1 AND expires_unix_ms IS NOT NULL
                             AND authorized_unix_ms IS NULL",
                        params![payment_id, now_unix_ms()],
                    )
                    .map_err(storage)?;
                load_payment(transaction, &payment_id)?.ok_or_else(|| {
                    Failure::NotFound(format!("payment {payment_id} does not exist"))
                })
            })
            .await
    }

    /// Records which legs' banks acknowledged phase 2 (a flag already set stays set). Not
    /// fsynced on its own: a lost acknowledgement only makes the retrier re-send a decision.
    /// Acknowledgements arriving together are written by one write ([`AckQueue`]); a call
    /// that joins a write already queued returns at once, before that write commits.
    async fn acknowledge(
        &self,
        payment_id: &str,
        debit: bool,
        credit: bool,
    ) -> Result<(), Failure> {
        let queue = &self.acknowledgements;
        if !queue.push(payment_id.to_owned(), debit, credit) {
            return Ok(());
        }
        let mut queued = AckWriteQueued::new(queue);
        self.writer
            .run_with(Durability::Relaxed, move |transaction| {
                for (payment_id, debit, credit) in queued.take() {
                    transaction
                        .execute_cached(
                            "UPDATE payments SET debit_acked = MAX(debit_acked, ?2),
                                 credit_acked = MAX(credit_acked, ?3)
                             WHERE payment_id = ?1 AND status != 1",
                            params![payment_id, debit, credit],
                        )
                        .map_err(storage)?;
                }
                Ok(())
            })
            .await
    }

    async fn payment(&self, payment_id: &str) -> Result<Option<PaymentRecord>, Failure> {
        load_payment(&self.lock(), payment_id)
    }

    async fn payment_by_key(
        &self,
        username: &str,
        key: &str,
    ) -> Result<Option<PaymentRecord>, Failure> {
        let connection = self.lock();
        let payment_id: Option<String> = connection
            .query_row_cached(
                "SELECT payment_id FROM idempotency WHERE username = ?1 AND key = ?2",
                params![username, key],
                |row| row.get(0),
            )
            .optional()
            .map_err(storage)?;
        match payment_id {
            Some(payment_id) => load_payment(&connection, &payment_id),
            None => Ok(None),
        }
    }

    async fn unfinished(
        &self,
        coordinator: &str,
        due_at_unix_ms: i64,
        limit: u32,
    ) -> Result<Vec<PaymentRecord>, Failure> {
        let coordinator = coordinator.to_owned();
        self.reader
            .scan(move |connection| {
                read_payments(
                    connection,
                    // Open authorizations not yet due are filtered on the index's scan.
                    &format!(
                        "{SELECT_PAYMENTS} WHERE coordinator = ?1 AND {UNFINISHED}
                             AND NOT (status = 1 AND authorized_unix_ms IS NOT NULL
                                      AND expires_unix_ms > ?3)
                         ORDER BY coordinator, seq LIMIT ?2"
                    ),
                    params![coordinator, limit, due_at_unix_ms],
                )
            })
            .await
    }

    async fn decided_after(
        &self,
        after_decision_seq: i64,
        limit: u32,
    ) -> Result<Vec<PaymentRecord>, Failure> {
        self.reader
            .scan(move |connection| {
                read_payments(
                    connection,
                    &format!(
                        "{SELECT_PAYMENTS} WHERE decision_seq IS NOT NULL AND decision_seq > ?1
                         ORDER BY decision_seq LIMIT ?2"
                    ),
                    params![after_decision_seq, limit],
                )
            })
            .await
    }

    async fn decision_head(&self) -> Result<i64, Failure> {
        self.lock()
            .query_row_cached(
                "SELECT COALESCE(MAX(decision_seq), 0) FROM payments WHERE decision_seq IS NOT NULL",
                [],
                |row| row.get(0),
            )
            .map_err(storage)
    }

    async fn coordinators_with_unfinished(&self) -> Result<Vec<String>, Failure> {
        self.reader
            .scan(|connection| {
                let mut statement = connection
                    .prepare_cached(&format!(
                        "SELECT DISTINCT coordinator FROM payments WHERE {UNFINISHED}"
                    ))
                    .map_err(storage)?;
                let rows = statement.query_map([], |row| row.get(0)).map_err(storage)?;
                rows.collect::<Result<Vec<String>, _>>().map_err(storage)
            })
            .await
    }

    async fn claim(&self, from: &str, to: &str) -> Result<u64, Failure> {
        let (from, to) = (from.to_owned(), to.to_owned());
        self.writer
            .run(move |transaction| {
                let moved = transaction
                    .execute_cached(
                        &format!(
                            "UPDATE payments SET coordinator = ?2
                             WHERE coordinator = ?1 AND {UNFINISHED}"
                        ),
                        params![from, to],
                    )
                    .map_err(storage)?;
                Ok(moved as u64)
            })
            .await
    }

    async fn history(
        &self,
        username: &str,
        before_seq: i64,
        limit: u32,
    ) -> Result<Vec<PaymentRecord>, Failure> {
        let username = username.to_owned();
        self.reader
            .scan(move |connection| {
                read_payments(
                    connection,
                    &format!(
                        "{SELECT_PAYMENTS} WHERE seq IN (
                             SELECT seq FROM payments WHERE from_user = ?1 AND seq < ?2
                             UNION
                             SELECT seq FROM payments WHERE to_user = ?1 AND seq < ?2
                         ) ORDER BY seq DESC LIMIT ?3"
                    ),
                    params![username, before_seq, limit],
                )
            })
            .await
    }

    async fn list_payments(
        &self,
        filter: &PaymentFilter,
        before_seq: i64,
        limit: u32,
    ) -> Result<Vec<PaymentRecord>, Failure> {
        let filter = filter.clone();
        let status = filter.status.map(PaymentStatus::code);
        let stored_status = filter.status.map(PaymentStatus::stored_code);
        // A JSON path naming the key as one member (keys are letters, digits and `_ - . :`).
        let (metadata_path, metadata_value) = filter
            .metadata
            .map(|(key, value)| (format!("$.\"{key}\""), value))
            .unzip();
        self.reader
            .scan(move |connection| {
                read_payments(
                    connection,
                    &format!(
                        "{SELECT_PAYMENTS} WHERE seq < ?1
                           AND (?2 IS NULL
                                OR (?3 != 1 AND from_user = ?2 AND (?4 IS NULL OR to_user = ?4))
                                OR (?3 != 2 AND to_user = ?2 AND (?4 IS NULL OR from_user = ?4)))
                           AND (?2 IS NOT NULL OR ?4 IS NULL OR from_user = ?4 OR to_user = ?4)
                           AND (?5 IS NULL OR (status = ?6
                                AND (?5 != 4 OR authorized_unix_ms IS NOT NULL)
                                AND (?5 != 1 OR authorized_unix_ms IS NULL)))
                           AND (?7 IS NULL OR created_unix_ms >= ?7)
                           AND (?8 IS NULL OR created_unix_ms < ?8)
                           AND (?9 IS NULL OR amount_minor >= ?9)
                           AND (?10 IS NULL OR amount_minor <= ?10)
                           AND (?11 IS NULL OR currency = ?11)
                           AND (?12 IS NULL OR json_extract(metadata, ?12) = ?13)
                         ORDER BY seq DESC LIMIT ?14"
                    ),
                    params![
                        before_seq,
                        filter.username,
                        filter.direction.code(),
                        filter.counterparty,
                        status,
                        stored_status,
                        filter.created_from_unix_ms,
                        filter.created_before_unix_ms,
                        filter.min_amount_minor,
                        filter.max_amount_minor,
                        filter.currency,
                        metadata_path,
                        metadata_value,
                        limit
                    ],
                )
            })
            .await
    }

    async fn refunds_of(
        &self,
        payment_id: &str,
        before_seq: i64,
        limit: u32,
    ) -> Result<Vec<PaymentRecord>, Failure> {
        let payment_id = payment_id.to_owned();
        self.reader
            .scan(move |connection| {
                read_payments(
                    connection,
                    &format!(
                        "{SELECT_PAYMENTS} WHERE refund_of = ?1 AND seq < ?2
                         ORDER BY refund_of, seq DESC LIMIT ?3"
                    ),
                    params![payment_id, before_seq, limit],
                )
            })
            .await
    }

    async fn has_accounts_at(&self, bank_id: &str) -> Result<bool, Failure> {
        self.lock()
            .query_row_cached(
                "SELECT EXISTS (SELECT 1 FROM accounts WHERE bank_id = ?1)",
                [bank_id],
                |row| row.get(0),
            )
            .map_err(storage)
    }

    async fn set_net_debit_cap(
        &self,
        bank_id: &str,
        currency: &str,
        cap_minor: Option<i64>,
    ) -> Result<PositionRecord, Failure> {
        settlement::check_cap(cap_minor)?;
        let (bank_id, currency) = (bank_id.to_owned(), currency.to_owned());
        self.writer
            .run(move |transaction| settle::set_cap(transaction, &bank_id, &currency, cap_minor))
            .await
    }

    async fn positions(&self) -> Result<Vec<PositionRecord>, Failure> {
        self.reader.scan(settle::read_positions).await
    }

    async fn windows(
        &self,
        before_window_id: i64,
        limit: u32,
    ) -> Result<Vec<WindowRecord>, Failure> {
        self.reader
            .scan(move |connection| settle::read_windows(connection, before_window_id, limit))
            .await
    }

    async fn window_report(&self, window_id: i64) -> Result<Option<WindowReport>, Failure> {
        self.reader
            .scan(move |connection| {
                // One read transaction: the window and its totals from the same state.
                let transaction = connection.unchecked_transaction().map_err(storage)?;
                settle::read_report(&transaction, window_id)
            })
            .await
    }

    async fn close_window(&self, expected: Option<i64>) -> Result<WindowReport, Failure> {
        self.writer
            .run(move |transaction| settle::close_window(transaction, expected, now_unix_ms()))
            .await
    }

    async fn settle_window(&self, window_id: i64) -> Result<WindowReport, Failure> {
        self.writer
            .run(move |transaction| settle::settle_window(transaction, window_id, now_unix_ms()))
            .await
    }
}

/// [`GatewayStore::begin_payment`] in the writer's transaction: what the key holds, then
/// [`payment::begin`]'s decision on it, then the writes it asks for (the key, what the attempt
/// claims in settlement, the attempt).
fn record_attempt(
    transaction: &Connection,
    attempt: PaymentRecord,
    fingerprint: &str,
) -> Result<Begun, Failure> {
    let existing: Option<(String, String)> = transaction
        .query_row_cached(
            "SELECT fingerprint, payment_id FROM idempotency WHERE username = ?1 AND key = ?2",
            params![attempt.from.username, attempt.idempotency_key],
            |row| Ok((row.get(0)?, row.get(1)?)),
        )
        .optional()
        .map_err(storage)?;
    let previous = match &existing {
        Some((_, payment_id)) => Some(
            load_payment(transaction, payment_id)?
                .ok_or_else(|| Failure::internal("idempotency", "record points at no payment"))?,
        ),
        None => None,
    };
    let stored =
        existing
            .as_ref()
            .zip(previous.as_ref())
            .map(|((stored_fingerprint, _), payment)| payment::Stored {
                fingerprint: stored_fingerprint,
                payment,
            });
    match (payment::begin(&attempt, stored)?, previous) {
        (payment::Begin::InFlight, Some(previous)) => return Ok(Begun::InFlight(previous)),
        (payment::Begin::Replay, Some(previous)) => return Ok(Begun::Finished(previous)),
        (payment::Begin::RecordAgain, Some(_)) => {
            transaction
                .execute_cached(
                    "UPDATE idempotency SET payment_id = ?3 WHERE username = ?1 AND key = ?2",
                    params![
                        attempt.from.username,
                        attempt.idempotency_key,
                        attempt.payment_id
                    ],
                )
                .map_err(storage)?;
        }
        (payment::Begin::Record, None) => {
            transaction
            .execute_cached(
                "INSERT INTO idempotency (username, key, fingerprint, payment_id, created_unix_ms)
                         VALUES (?1, ?2, ?3, ?4, ?5)",
                params![
                    attempt.from.username,
                    attempt.idempotency_key,
                    fingerprint,
                    attempt.payment_id,
                    now_unix_ms()
                ],
            )
            .map_err(storage)?;
        }
        (decision, previous) => {
            return Err(Failure::internal(
                "idempotency",
                format!("{decision:?} with a stored payment: {}", previous.is_some()),
            ))
        }
    }
    let attempt = settle::claim_for_attempt(transaction, attempt)?;
    insert_payment(transaction, &attempt)?;
    // The row just inserted, without reading it back: `seq` is the rowid SQLite chose.
    let seq = transaction.last_insert_rowid();
    Ok(Begun::Started(attempt.recorded_at(seq)))
}

/// [`GatewayStore::decide`] in the writer's transaction: the decision if the payment is still
/// undecided, with what it moves in settlement; otherwise the payment as stored. An
/// authorization is COMMITTED (captured) only while AUTHORIZED and before its expiry, judged
/// at the decision's own time; otherwise it stays as it is and is returned so. A capture
/// (`captured_minor`) of at most the authorized amount makes that the payment's amount and
/// keeps the authorized one in `authorized_minor`.
fn write_decision(
    transaction: &Connection,
    payment_id: &str,
    status: PaymentStatus,
    reason_code: Option<&str>,
    reason: Option<&str>,
    captured_minor: Option<i64>,
) -> Result<PaymentRecord, Failure> {
    let window = settle::open_window(transaction)?;
    let decided_now = transaction
        .query_row_cached(
            // The writer thread runs one transaction at a time, so MAX + 1 is the next
            // position and positions become visible in order (watchers rely on it).
            // RETURNING hands back the decided row in the same statement: a row only
            // when this write decided it.
            concat!(
                "UPDATE payments SET status = ?2, reason_code = ?3, reason = ?4, decided_unix_ms = ?5,
                         decision_seq = (SELECT COALESCE(MAX(decision_seq), 0) + 1 FROM payments
                                         WHERE decision_seq IS NOT NULL),
                         window_id = ?6,
                         amount_minor = COALESCE(?7, amount_minor),
                         authorized_minor = CASE WHEN ?7 IS NULL THEN authorized_minor
                                                 ELSE amount_minor END
                     WHERE payment_id = ?1 AND status = 1
                         AND (?2 != 2 OR expires_unix_ms IS NULL
                              OR (authorized_unix_ms IS NOT NULL AND ?5 < expires_unix_ms))
                         AND (?7 IS NULL OR (expires_unix_ms IS NOT NULL AND ?7 <= amount_minor))
                     RETURNING ",
                payment_columns!()
            ),
            params![
                payment_id,
                status.stored_code(),
                reason_code,
                reason,
                now_unix_ms(),
                window.window_id,
                captured_minor
            ],
            payment_from_row,
        )
        .optional()
        .map_err(storage)?
        .transpose()?;
    match decided_now {
        Some(record) => {
            // This write decided it: settlement moves with the decision (and only here).
            settle::apply_decision(transaction, window.window_id, &record)?;
            Ok(record)
        }
        // Decided before (single assignment) or unknown: the stored row is the answer.
        None => load_payment(transaction, payment_id)?
            .ok_or_else(|| Failure::NotFound(format!("payment {payment_id} does not exist"))),
    }
}

fn insert_payment(transaction: &Connection, payment: &PaymentRecord) -> Result<(), Failure> {
    transaction
        .execute_cached(
            "INSERT INTO payments (payment_id, idempotency_key, from_user, from_bank, from_account,
                 to_user, to_bank, to_account, amount_minor, currency, memo, status,
                 decision_deadline_unix_ms, created_unix_ms, coordinator, refund_of, metadata,
                 expires_unix_ms)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, 1, ?12, ?13, ?14, ?15, ?16,
                 ?17)",
            params![
                payment.payment_id,
                payment.idempotency_key,
                payment.from.username,
                payment.from.bank_id,
                payment.from.account_number,
                payment.to.username,
                payment.to.bank_id,
                payment.to.account_number,
                payment.amount_minor,
                payment.currency,
                payment.memo,
                payment.decision_deadline_unix_ms,
                payment.created_unix_ms,
                payment.coordinator,
                payment.refund_of,
                metadata_to_json(&payment.metadata),
                payment.expires_unix_ms
            ],
        )
        .map_err(storage)?;
    Ok(())
}

#[cfg(test)]
mod migration_tests;
#[cfg(test)]
mod tests;
