//! The embedded gateway store: one SQLite database (WAL, `synchronous=FULL`).
//!
//! Every write goes through one writer thread ([`GroupCommit`]): concurrent writes share a
//! transaction and its fsync, and each caller hears back only after that commit. Reads use a
//! separate connection and see only committed state. No table is ever rewritten whole, and
//! every query a payment makes is an indexed point lookup, so the cost of a payment does not
//! grow with the history.

use std::path::Path;
use std::sync::{Arc, LazyLock, Mutex, MutexGuard};

use anyhow::Context;
use async_trait::async_trait;
use rusqlite::{params, Connection, OpenFlags, OptionalExtension, Row};
use strife_common::group_commit::{Durability, GroupCommit};
use strife_common::sqlite::CachedStatements;
use strife_common::store_identity::{Migration, StoreIdentity};
use strife_common::time::now_unix_ms;
use strife_common::Failure;

use super::{GatewayLog, GatewayStore, LoginChange};
use crate::lockout::SharedLogin;
use crate::records::{
    Begun, BilateralTotal, LinkedAccount, LogSnapshot, Party, PaymentRecord, PaymentStatus,
    PositionRecord, UserRecord, WindowRecord, WindowReport,
};
use crate::{payment, settlement};

/// The settlement tables, shared word for word by the current schema and the 2 → 3 migration
/// (a macro, so both are one `concat!`ed literal). Positions: one row per (bank, currency),
/// created by the first reservation, commit or cap. Windows: exactly one open at any commit
/// point (the partial unique index; window 1 is created with the database). Totals: per
/// window, what one payer bank's customers paid one payee bank's in committed cross-bank
/// payments — written with each COMMIT decision, so a closed window's never change.
macro_rules! settlement_tables {
    () => {
        "
CREATE TABLE IF NOT EXISTS bank_positions (
    bank_id         TEXT NOT NULL,
    currency        TEXT NOT NULL,
    position_minor  INTEGER NOT NULL DEFAULT 0,
    reserved_minor  INTEGER NOT NULL DEFAULT 0 CHECK (reserved_minor >= 0),
    cap_minor       INTEGER CHECK (cap_minor IS NULL OR cap_minor >= 0),
    PRIMARY KEY (bank_id, currency)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS settlement_windows (
    window_id       INTEGER PRIMARY KEY,
    opened_unix_ms  INTEGER NOT NULL,
    closed_unix_ms  INTEGER,
    settled_unix_ms INTEGER,
    CHECK (settled_unix_ms IS NULL OR closed_unix_ms IS NOT NULL)
);
CREATE UNIQUE INDEX IF NOT EXISTS settlement_windows_one_open
    ON settlement_windows ((closed_unix_ms IS NULL)) WHERE closed_unix_ms IS NULL;
CREATE TABLE IF NOT EXISTS settlement_totals (
    window_id       INTEGER NOT NULL REFERENCES settlement_windows (window_id),
    payer_bank      TEXT NOT NULL,
    payee_bank      TEXT NOT NULL,
    currency        TEXT NOT NULL,
    amount_minor    INTEGER NOT NULL,
    payments        INTEGER NOT NULL,
    PRIMARY KEY (window_id, payer_bank, payee_bank, currency)
) WITHOUT ROWID;
INSERT INTO settlement_windows (window_id, opened_unix_ms)
    SELECT 1, CAST(strftime('%s', 'now') AS INTEGER) * 1000
    WHERE NOT EXISTS (SELECT 1 FROM settlement_windows);
"
    };
}

/// Secrets every user of the database shares (`GatewayStore::secret`), e.g. the key that
/// seals cursors. Never deleted or changed once written.
macro_rules! secrets_table {
    () => {
        "CREATE TABLE IF NOT EXISTS secrets (
    name    TEXT PRIMARY KEY,
    value   BLOB NOT NULL CHECK (length(value) = 32)
) WITHOUT ROWID;
"
    };
}

/// The columns [`payment_from_row`] decodes, in its order (a macro so that `SELECT` and
/// `RETURNING` clauses can be built from it at compile time).
macro_rules! payment_fields {
    () => {
        "seq, payment_id, idempotency_key, from_user, from_bank,
    from_account, to_user, to_bank, to_account, amount_minor, currency, memo, status, reason_code,
    reason, debit_acked, credit_acked, decision_deadline_unix_ms, created_unix_ms, decided_unix_ms,
    coordinator, decision_seq, refund_of, refunded_minor, refund_pending_minor, window_id"
    };
}

/// The `payments` table, word for word in the schema and in the 3 → 4 migration that
/// rebuilds it. Its status CHECK spells the set out as `=` … `OR`: SQLite evaluates an
/// `IN (…)` list of three or more values through a scratch b-tree it creates and destroys on
/// every insert and decision (≈ 4 µs each). `seq` is a plain `INTEGER PRIMARY KEY`, not
/// `AUTOINCREMENT`: payments are never deleted, so the next id is the largest + 1 either way,
/// without a `sqlite_sequence` read and write per payment.
macro_rules! payments_table {
    () => {
        "CREATE TABLE IF NOT EXISTS payments (
    seq                       INTEGER PRIMARY KEY,
    payment_id                TEXT NOT NULL UNIQUE,
    idempotency_key           TEXT NOT NULL,
    from_user                 TEXT NOT NULL,
    from_bank                 TEXT NOT NULL,
    from_account              TEXT NOT NULL,
    to_user                   TEXT NOT NULL,
    to_bank                   TEXT NOT NULL,
    to_account                TEXT NOT NULL,
    amount_minor              INTEGER NOT NULL CHECK (amount_minor > 0),
    currency                  TEXT NOT NULL,
    memo                      TEXT NOT NULL,
    status                    INTEGER NOT NULL CHECK (status = 1 OR status = 2 OR status = 3),
    reason_code               TEXT,
    reason                    TEXT,
    debit_acked               INTEGER NOT NULL DEFAULT 0,
    credit_acked              INTEGER NOT NULL DEFAULT 0,
    decision_deadline_unix_ms INTEGER NOT NULL,
    created_unix_ms           INTEGER NOT NULL,
    decided_unix_ms           INTEGER,
    coordinator               TEXT NOT NULL DEFAULT '',
    decision_seq              INTEGER,
    refund_of                 TEXT,
    refunded_minor            INTEGER NOT NULL DEFAULT 0,
    refund_pending_minor      INTEGER NOT NULL DEFAULT 0,
    window_id                 INTEGER
);
"
    };
}

const SCHEMA: &str = concat!(
    "
CREATE TABLE IF NOT EXISTS users (
    username        TEXT PRIMARY KEY,
    role            TEXT NOT NULL CHECK (role IN ('admin', 'client')),
    password_hash   TEXT NOT NULL,
    created_unix_ms INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS accounts (
    bank_id         TEXT NOT NULL,
    account_number  TEXT NOT NULL,
    username        TEXT NOT NULL REFERENCES users (username),
    currency        TEXT NOT NULL,
    holder_name     TEXT NOT NULL,
    linked_unix_ms  INTEGER NOT NULL,
    PRIMARY KEY (bank_id, account_number)
);
CREATE INDEX IF NOT EXISTS accounts_by_user ON accounts (username);
",
    payments_table!(),
    "CREATE UNIQUE INDEX IF NOT EXISTS payments_by_decision ON payments (decision_seq)
    WHERE decision_seq IS NOT NULL;
CREATE INDEX IF NOT EXISTS payments_from ON payments (from_user, seq);
CREATE INDEX IF NOT EXISTS payments_to ON payments (to_user, seq);
CREATE INDEX IF NOT EXISTS payments_unfinished_by_coordinator ON payments (coordinator, seq)
    WHERE (status = 1 OR debit_acked = 0 OR credit_acked = 0);
CREATE TABLE IF NOT EXISTS logins (
    username                TEXT PRIMARY KEY,
    failures                INTEGER NOT NULL,
    window_start_unix_ms    INTEGER NOT NULL,
    locked_until_unix_ms    INTEGER NOT NULL,
    lockouts                INTEGER NOT NULL
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS idempotency (
    username        TEXT NOT NULL,
    key             TEXT NOT NULL,
    fingerprint     TEXT NOT NULL,
    payment_id      TEXT NOT NULL,
    created_unix_ms INTEGER NOT NULL,
    PRIMARY KEY (username, key)
) WITHOUT ROWID;
",
    secrets_table!(),
    settlement_tables!()
);

/// The SQLite schema version this binary writes (`PRAGMA user_version`); a database with a
/// higher one was written by a newer Strife and is refused.
pub const SCHEMA_VERSION: i64 = 5;

/// Steps from older schema versions (see [`SCHEMA_VERSION`]).
const MIGRATIONS: &[Migration] = &[
    Migration {
        // 1 → 2: each payment names the replica that coordinates it (takeover).
        to_version: 2,
        // Each decision gets the next position in the decision order (payment events); payments
        // decided before keep their log order there.
        sql: "ALTER TABLE payments ADD COLUMN coordinator TEXT NOT NULL DEFAULT '';
          DROP INDEX IF EXISTS payments_unfinished;
          ALTER TABLE payments ADD COLUMN decision_seq INTEGER;
          UPDATE payments SET decision_seq = seq WHERE status != 1;",
    },
    Migration {
        // 2 → 3: settlement and refunds. Every payment decided so far belongs to window 1
        // (open), and positions, reservations and window 1's totals are derived from the log
        // exactly as the audit derives them, so the invariants hold from the first start.
        // SUM raises an error on overflow instead of wrapping.
        to_version: 3,
        sql: concat!(
            "ALTER TABLE payments ADD COLUMN refund_of TEXT;
             ALTER TABLE payments ADD COLUMN refunded_minor INTEGER NOT NULL DEFAULT 0;
             ALTER TABLE payments ADD COLUMN refund_pending_minor INTEGER NOT NULL DEFAULT 0;
             ALTER TABLE payments ADD COLUMN window_id INTEGER;",
            settlement_tables!(),
            "UPDATE payments SET window_id = 1 WHERE status != 1;
             INSERT INTO settlement_totals
                 (window_id, payer_bank, payee_bank, currency, amount_minor, payments)
                 SELECT 1, from_bank, to_bank, currency, SUM(amount_minor), COUNT(*)
                 FROM payments WHERE status = 2 AND from_bank != to_bank
                 GROUP BY from_bank, to_bank, currency;
             INSERT INTO bank_positions (bank_id, currency, position_minor, reserved_minor)
                 SELECT bank_id, currency, SUM(position_minor), SUM(reserved_minor) FROM (
                     SELECT from_bank AS bank_id, currency, amount_minor AS position_minor,
                            0 AS reserved_minor
                         FROM payments WHERE status = 2 AND from_bank != to_bank
                     UNION ALL
                     SELECT to_bank, currency, -amount_minor, 0
                         FROM payments WHERE status = 2 AND from_bank != to_bank
                     UNION ALL
                     SELECT from_bank, currency, 0, amount_minor
                         FROM payments WHERE status = 1 AND from_bank != to_bank
                 ) GROUP BY bank_id, currency;"
        ),
    },
    Migration {
        // 3 → 4: `payments` rebuilt with the same rows and ids, its status CHECK without an
        // `IN` list and without `AUTOINCREMENT` (see `payments_table`); the same statuses pass
        // and fail. Its indexes are dropped with the old table and made again by the schema.
        to_version: 4,
        sql: concat!(
            "ALTER TABLE payments RENAME TO payments_v3;\n",
            payments_table!(),
            "INSERT INTO payments (",
            payment_fields!(),
            ") SELECT ",
            payment_fields!(),
            " FROM payments_v3;
             DROP TABLE payments_v3;"
        ),
    },
    Migration {
        // 4 → 5: shared secrets (the cursor key); created on first use.
        to_version: 5,
        sql: secrets_table!(),
    },
];

/// The gateway's SQLite database.
pub struct SqliteGatewayStore {
    writer: GroupCommit,
    reader: Reader,
    acknowledgements: Arc<AckQueue>,
    directory: directory::Directory,
    _checkpointer: strife_common::sqlite::Checkpointer,
}

/// Phase-2 acknowledgements waiting for the writer. Concurrent payments' acknowledgements are
/// written by one write (one job, one savepoint) instead of one each: a write is queued only
/// when none is queued yet, and it takes everything waiting when it runs.
#[derive(Default)]
struct AckQueue {
    waiting: Mutex<Vec<(String, bool, bool)>>,
    write_queued: std::sync::atomic::AtomicBool,
}

impl AckQueue {
    /// Adds one; true if the caller must queue the write that takes it.
    fn push(&self, payment_id: String, debit: bool, credit: bool) -> bool {
        self.lock().push((payment_id, debit, credit));
        !self
            .write_queued
            .swap(true, std::sync::atomic::Ordering::AcqRel)
    }

    /// Everything waiting, for the write now running. The flag is cleared first, so an
    /// acknowledgement added after this never waits for a write that will not come.
    fn take(&self) -> Vec<(String, bool, bool)> {
        self.write_queued
            .store(false, std::sync::atomic::Ordering::Release);
        std::mem::take(&mut *self.lock())
    }

    fn lock(&self) -> MutexGuard<'_, Vec<(String, bool, bool)>> {
        // A push or take cannot leave the list half changed.
        self.waiting
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

/// Owned by the queued acknowledgement write: if the write is dropped without running (its
/// batch failed before it), the next acknowledgement queues a new one.
struct AckWriteQueued {
    queue: Arc<AckQueue>,
    taken: bool,
}

impl AckWriteQueued {
    fn take(&mut self) -> Vec<(String, bool, bool)> {
        self.taken = true;
        self.queue.take()
    }
}

impl Drop for AckWriteQueued {
    fn drop(&mut self) {
        if !self.taken {
            self.queue
                .write_queued
                .store(false, std::sync::atomic::Ordering::Release);
        }
    }
}

/// The read connection. Point lookups run on the caller's thread (they take microseconds, less
/// than a hand-off to the blocking pool); scans go to the blocking pool.
#[derive(Clone)]
struct Reader(Arc<Mutex<Connection>>);

impl Reader {
    fn lock(&self) -> MutexGuard<'_, Connection> {
        // Reads change nothing, so a poisoned lock is still safe to use.
        self.0
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    async fn scan<T: Send + 'static>(
        &self,
        work: impl FnOnce(&Connection) -> Result<T, Failure> + Send + 'static,
    ) -> Result<T, Failure> {
        let reader = self.clone();
        tokio::task::spawn_blocking(move || work(&reader.lock()))
            .await
            .map_err(|error| Failure::internal("blocking worker", error))?
    }
}

/// Storage trouble (disk full, I/O error) is a transient `UNAVAILABLE`; anything else
/// `INTERNAL`.
fn storage(error: rusqlite::Error) -> Failure {
    strife_common::sqlite::storage_failure("gateway.db", error)
}

impl SqliteGatewayStore {
    /// Opens (creating if needed and allowed) the database at `path`, checking that it is
    /// `identity`'s.
    pub fn open(path: &Path, identity: &StoreIdentity) -> anyhow::Result<Self> {
        let (writer, reader, checkpointer) = strife_common::sqlite::open_store_migrating(
            path,
            "gateway database",
            SCHEMA,
            MIGRATIONS,
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
        self.reader.scan(read_snapshot).await
    }
}

#[async_trait]
impl GatewayLog for SqliteGatewayStore {
    async fn snapshot(&self) -> Result<LogSnapshot, Failure> {
        self.reader.scan(read_snapshot).await
    }
}

/// Every payment and link in one read transaction, so they describe one state of the log.
fn read_snapshot(connection: &Connection) -> Result<LogSnapshot, Failure> {
    let transaction = connection.unchecked_transaction().map_err(storage)?;
    let payments = {
        let mut statement = transaction
            .prepare(&format!("{PAYMENT_COLUMNS} ORDER BY seq"))
            .map_err(storage)?;
        let rows = statement.query_map([], payment_from_row).map_err(storage)?;
        rows.collect::<Result<Vec<_>, _>>()
            .map_err(storage)?
            .into_iter()
            .collect::<Result<Vec<_>, _>>()?
    };
    let links = {
        let mut statement = transaction
            .prepare(&format!(
                "{ACCOUNT_COLUMNS} ORDER BY linked_unix_ms, bank_id, account_number"
            ))
            .map_err(storage)?;
        let rows = statement.query_map([], account_from_row).map_err(storage)?;
        rows.collect::<Result<Vec<_>, _>>().map_err(storage)?
    };
    let positions = read_positions(&transaction)?;
    let windows = read_windows(&transaction, i64::MAX, u32::MAX)?
        .into_iter()
        .rev()
        .map(|window| {
            let totals = read_totals(&transaction, window.window_id)?;
            Ok(WindowReport { window, totals })
        })
        .collect::<Result<Vec<_>, Failure>>()?;
    Ok(LogSnapshot {
        payments,
        links,
        positions,
        windows,
    })
}

const POSITION_COLUMNS: &str =
    "SELECT bank_id, currency, position_minor, reserved_minor, cap_minor FROM bank_positions";

fn position_from_row(row: &Row<'_>) -> rusqlite::Result<PositionRecord> {
    Ok(PositionRecord {
        bank_id: row.get(0)?,
        currency: row.get(1)?,
        position_minor: row.get(2)?,
        reserved_minor: row.get(3)?,
        cap_minor: row.get(4)?,
    })
}

fn read_positions(connection: &Connection) -> Result<Vec<PositionRecord>, Failure> {
    let mut statement = connection
        .prepare_cached(&format!("{POSITION_COLUMNS} ORDER BY bank_id, currency"))
        .map_err(storage)?;
    let rows = statement
        .query_map([], position_from_row)
        .map_err(storage)?;
    rows.collect::<Result<_, _>>().map_err(storage)
}

/// A bank's position row, or a zero row (not yet written) if it has none.
fn load_position(
    connection: &Connection,
    bank_id: &str,
    currency: &str,
) -> Result<PositionRecord, Failure> {
    Ok(connection
        .query_row_cached(
            &POSITION_BY_KEY,
            params![bank_id, currency],
            position_from_row,
        )
        .optional()
        .map_err(storage)?
        .unwrap_or_else(|| settlement::empty_position(bank_id, currency)))
}

fn write_position(connection: &Connection, position: &PositionRecord) -> Result<(), Failure> {
    connection
        .execute_cached(
            "INSERT INTO bank_positions (bank_id, currency, position_minor, reserved_minor, cap_minor)
             VALUES (?1, ?2, ?3, ?4, ?5)
             ON CONFLICT (bank_id, currency) DO UPDATE SET position_minor = excluded.position_minor,
                 reserved_minor = excluded.reserved_minor, cap_minor = excluded.cap_minor",
            params![
                position.bank_id,
                position.currency,
                position.position_minor,
                position.reserved_minor,
                position.cap_minor
            ],
        )
        .map_err(storage)?;
    Ok(())
}

/// Applies [`settlement`]'s position changes, each on the row as it stands.
fn apply_position_changes(
    connection: &Connection,
    changes: &[settlement::PositionChange],
) -> Result<(), Failure> {
    for change in changes {
        let position = load_position(connection, &change.bank_id, &change.currency)?;
        write_position(connection, &change.apply(&position)?)?;
    }
    Ok(())
}

const WINDOW_COLUMNS: &str =
    "SELECT window_id, opened_unix_ms, closed_unix_ms, settled_unix_ms FROM settlement_windows";

fn window_from_row(row: &Row<'_>) -> rusqlite::Result<WindowRecord> {
    Ok(WindowRecord {
        window_id: row.get(0)?,
        opened_unix_ms: row.get(1)?,
        closed_unix_ms: row.get(2)?,
        settled_unix_ms: row.get(3)?,
    })
}

/// Windows with `window_id < before`, newest first.
fn read_windows(
    connection: &Connection,
    before: i64,
    limit: u32,
) -> Result<Vec<WindowRecord>, Failure> {
    let mut statement = connection
        .prepare_cached(&format!(
            "{WINDOW_COLUMNS} WHERE window_id < ?1 ORDER BY window_id DESC LIMIT ?2"
        ))
        .map_err(storage)?;
    let rows = statement
        .query_map(params![before, limit], window_from_row)
        .map_err(storage)?;
    rows.collect::<Result<_, _>>().map_err(storage)
}

fn load_window(connection: &Connection, window_id: i64) -> Result<Option<WindowRecord>, Failure> {
    connection
        .query_row_cached(
            &format!("{WINDOW_COLUMNS} WHERE window_id = ?1"),
            [window_id],
            window_from_row,
        )
        .optional()
        .map_err(storage)
}

/// The open window (the partial unique index allows at most one; the schema creates one and
/// every close opens the next).
fn open_window(connection: &Connection) -> Result<WindowRecord, Failure> {
    connection
        .query_row_cached(&OPEN_WINDOW, [], window_from_row)
        .optional()
        .map_err(storage)?
        .ok_or_else(|| Failure::internal("settlement", "no settlement window is open"))
}

const TOTAL_COLUMNS: &str =
    "SELECT payer_bank, payee_bank, currency, amount_minor, payments FROM settlement_totals";

// Statements every payment runs, formatted once (not per call: each call would allocate).
static ACCOUNTS_OF_USER: LazyLock<String> = LazyLock::new(|| {
    format!(
        "{ACCOUNT_COLUMNS} WHERE username = ?1 ORDER BY linked_unix_ms, bank_id, account_number"
    )
});
static POSITION_BY_KEY: LazyLock<String> =
    LazyLock::new(|| format!("{POSITION_COLUMNS} WHERE bank_id = ?1 AND currency = ?2"));
static OPEN_WINDOW: LazyLock<String> =
    LazyLock::new(|| format!("{WINDOW_COLUMNS} WHERE closed_unix_ms IS NULL"));
static TOTAL_BY_KEY: LazyLock<String> = LazyLock::new(|| {
    format!(
        "{TOTAL_COLUMNS} WHERE window_id = ?1 AND payer_bank = ?2 AND payee_bank = ?3
         AND currency = ?4"
    )
});

fn total_from_row(row: &Row<'_>) -> rusqlite::Result<BilateralTotal> {
    Ok(BilateralTotal {
        payer_bank: row.get(0)?,
        payee_bank: row.get(1)?,
        currency: row.get(2)?,
        amount_minor: row.get(3)?,
        payments: row.get(4)?,
    })
}

fn read_totals(connection: &Connection, window_id: i64) -> Result<Vec<BilateralTotal>, Failure> {
    let mut statement = connection
        .prepare_cached(&format!(
            "{TOTAL_COLUMNS} WHERE window_id = ?1 ORDER BY payer_bank, payee_bank, currency"
        ))
        .map_err(storage)?;
    let rows = statement
        .query_map([window_id], total_from_row)
        .map_err(storage)?;
    rows.collect::<Result<_, _>>().map_err(storage)
}

fn read_report(connection: &Connection, window_id: i64) -> Result<Option<WindowReport>, Failure> {
    let Some(window) = load_window(connection, window_id)? else {
        return Ok(None);
    };
    let totals = read_totals(connection, window_id)?;
    Ok(Some(WindowReport { window, totals }))
}

/// Adds a committed cross-bank payment to window `window_id`'s bilateral totals.
fn add_to_window(
    connection: &Connection,
    window_id: i64,
    payment: &PaymentRecord,
) -> Result<(), Failure> {
    let total = connection
        .query_row_cached(
            &TOTAL_BY_KEY,
            params![
                window_id,
                payment.from.bank_id,
                payment.to.bank_id,
                payment.currency
            ],
            total_from_row,
        )
        .optional()
        .map_err(storage)?;
    let total = settlement::add_to_total(total.as_ref(), payment)?;
    connection
        .execute_cached(
            "INSERT INTO settlement_totals (window_id, payer_bank, payee_bank, currency,
                 amount_minor, payments)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6)
             ON CONFLICT (window_id, payer_bank, payee_bank, currency)
             DO UPDATE SET amount_minor = excluded.amount_minor, payments = excluded.payments",
            params![
                window_id,
                total.payer_bank,
                total.payee_bank,
                total.currency,
                total.amount_minor,
                total.payments
            ],
        )
        .map_err(storage)?;
    Ok(())
}

const ACCOUNT_COLUMNS: &str =
    "SELECT username, bank_id, account_number, currency, holder_name FROM accounts";

fn account_from_row(row: &Row<'_>) -> rusqlite::Result<LinkedAccount> {
    Ok(LinkedAccount {
        username: row.get(0)?,
        bank_id: row.get(1)?,
        account_number: row.get(2)?,
        currency: row.get(3)?,
        holder_name: row.get(4)?,
    })
}

#[async_trait]
impl GatewayStore for SqliteGatewayStore {
    async fn probe(&self) -> Result<(), Failure> {
        strife_common::sqlite::probe_write(&self.writer, "gateway.db").await
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
        self.writer.run_with(Durability::Relaxed, move |transaction| {
            let existing: Option<(String, String)> = transaction
                .query_row_cached(
                    "SELECT fingerprint, payment_id FROM idempotency WHERE username = ?1 AND key = ?2",
                    params![attempt.from.username, attempt.idempotency_key],
                    |row| Ok((row.get(0)?, row.get(1)?)),
                )
                .optional()
                .map_err(storage)?;
            let previous = match &existing {
                Some((_, payment_id)) => Some(load_payment(transaction, payment_id)?.ok_or_else(
                    || Failure::internal("idempotency", "record points at no payment"),
                )?),
                None => None,
            };
            let stored = existing.as_ref().zip(previous.as_ref()).map(|((stored_fingerprint, _), payment)| {
                payment::Stored { fingerprint: stored_fingerprint, payment }
            });
            match (payment::begin(&attempt, stored)?, previous) {
                (payment::Begin::InFlight, Some(previous)) => return Ok(Begun::InFlight(previous)),
                (payment::Begin::Replay, Some(previous)) => return Ok(Begun::Finished(previous)),
                (payment::Begin::RecordAgain, Some(_)) => {
                    transaction
                        .execute_cached(
                            "UPDATE idempotency SET payment_id = ?3 WHERE username = ?1 AND key = ?2",
                            params![attempt.from.username, attempt.idempotency_key, attempt.payment_id],
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
            let attempt = claim_for_attempt(transaction, attempt)?;
            insert_payment(transaction, &attempt)?;
            // The row just inserted, without reading it back: `seq` is the rowid SQLite chose.
            let seq = transaction.last_insert_rowid();
            Ok(Begun::Started(attempt.recorded_at(seq)))
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
        self.writer.run(move |transaction| {
            let window = open_window(transaction)?;
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
                         window_id = ?6
                     WHERE payment_id = ?1 AND status = 1 RETURNING ",
                        payment_fields!()
                    ),
                    params![payment_id, status.code(), reason_code, reason, now_unix_ms(), window.window_id],
                    payment_from_row,
                )
                .optional()
                .map_err(storage)?
                .transpose()?;
            match decided_now {
                Some(record) => {
                    // This write decided it: settlement moves with the decision (and only here).
                    apply_decision(transaction, &record, window.window_id)?;
                    Ok(record)
                }
                // Decided before (single assignment) or unknown: the stored row is the answer.
                None => load_payment(transaction, &payment_id)?.ok_or_else(|| {
                    Failure::NotFound(format!("payment {payment_id} does not exist"))
                }),
            }
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
        let mut queued = AckWriteQueued {
            queue: Arc::clone(queue),
            taken: false,
        };
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
        limit: u32,
    ) -> Result<Vec<PaymentRecord>, Failure> {
        let coordinator = coordinator.to_owned();
        self.reader
            .scan(move |connection| {
                let mut statement = connection
                    .prepare_cached(&format!(
                        "{PAYMENT_COLUMNS} WHERE coordinator = ?1 AND {UNFINISHED}
                         ORDER BY coordinator, seq LIMIT ?2"
                    ))
                    .map_err(storage)?;
                let rows = statement
                    .query_map(params![coordinator, limit], payment_from_row)
                    .map_err(storage)?;
                rows.collect::<Result<Vec<_>, _>>()
                    .map_err(storage)?
                    .into_iter()
                    .collect()
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
                let mut statement = connection
                    .prepare_cached(&format!(
                        "{PAYMENT_COLUMNS} WHERE decision_seq IS NOT NULL AND decision_seq > ?1
                         ORDER BY decision_seq LIMIT ?2"
                    ))
                    .map_err(storage)?;
                let rows = statement
                    .query_map(params![after_decision_seq, limit], payment_from_row)
                    .map_err(storage)?;
                rows.collect::<Result<Vec<_>, _>>()
                    .map_err(storage)?
                    .into_iter()
                    .collect()
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
                let mut statement = connection
                    .prepare_cached(&format!(
                        "{PAYMENT_COLUMNS} WHERE seq IN (
                             SELECT seq FROM payments WHERE from_user = ?1 AND seq < ?2
                             UNION
                             SELECT seq FROM payments WHERE to_user = ?1 AND seq < ?2
                         ) ORDER BY seq DESC LIMIT ?3"
                    ))
                    .map_err(storage)?;
                let rows = statement
                    .query_map(params![username, before_seq, limit], payment_from_row)
                    .map_err(storage)?;
                rows.collect::<Result<Vec<_>, _>>()
                    .map_err(storage)?
                    .into_iter()
                    .collect()
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
            .run(move |transaction| {
                let position = PositionRecord {
                    cap_minor,
                    ..load_position(transaction, &bank_id, &currency)?
                };
                write_position(transaction, &position)?;
                Ok(position)
            })
            .await
    }

    async fn positions(&self) -> Result<Vec<PositionRecord>, Failure> {
        self.reader.scan(read_positions).await
    }

    async fn windows(
        &self,
        before_window_id: i64,
        limit: u32,
    ) -> Result<Vec<WindowRecord>, Failure> {
        self.reader
            .scan(move |connection| read_windows(connection, before_window_id, limit))
            .await
    }

    async fn window_report(&self, window_id: i64) -> Result<Option<WindowReport>, Failure> {
        self.reader
            .scan(move |connection| {
                // One read transaction: the window and its totals from the same state.
                let transaction = connection.unchecked_transaction().map_err(storage)?;
                read_report(&transaction, window_id)
            })
            .await
    }

    async fn close_window(&self, expected: Option<i64>) -> Result<WindowReport, Failure> {
        self.writer
            .run(move |transaction| {
                let open = open_window(transaction)?;
                let target = match expected {
                    None => open.clone(),
                    Some(window_id) => load_window(transaction, window_id)?.ok_or_else(|| {
                        Failure::NotFound(format!("settlement window {window_id} not found"))
                    })?,
                };
                let next = settlement::close(&open, &target)?;
                let now = now_unix_ms();
                transaction
                    .execute_cached(
                        "UPDATE settlement_windows SET closed_unix_ms = ?2 WHERE window_id = ?1",
                        params![open.window_id, now],
                    )
                    .map_err(storage)?;
                transaction
                    .execute_cached(
                        "INSERT INTO settlement_windows (window_id, opened_unix_ms) VALUES (?1, ?2)",
                        params![next, now],
                    )
                    .map_err(storage)?;
                read_report(transaction, open.window_id)?.ok_or_else(|| {
                    Failure::internal("settlement", "the closed window vanished")
                })
            })
            .await
    }

    async fn settle_window(&self, window_id: i64) -> Result<WindowReport, Failure> {
        self.writer
            .run(move |transaction| {
                let report = read_report(transaction, window_id)?.ok_or_else(|| {
                    Failure::NotFound(format!("settlement window {window_id} not found"))
                })?;
                settlement::settle(&report.window)?;
                let nets = settlement::nets(&report.totals)?;
                apply_position_changes(transaction, &settlement::settle_changes(&nets)?)?;
                transaction
                    .execute_cached(
                        "UPDATE settlement_windows SET settled_unix_ms = ?2 WHERE window_id = ?1",
                        params![window_id, now_unix_ms()],
                    )
                    .map_err(storage)?;
                read_report(transaction, window_id)?
                    .ok_or_else(|| Failure::internal("settlement", "the settled window vanished"))
            })
            .await
    }
}

const PAYMENT_COLUMNS: &str = concat!("SELECT ", payment_fields!(), " FROM payments");

/// A payment still needing its coordinator: undecided, or a leg has not acknowledged. Matches
/// the partial index `payments_unfinished_by_coordinator` word for word, so SQLite uses it.
const UNFINISHED: &str = "(status = 1 OR debit_acked = 0 OR credit_acked = 0)";

fn payment_from_row(row: &Row<'_>) -> rusqlite::Result<Result<PaymentRecord, Failure>> {
    let status_code: i64 = row.get(12)?;
    let Some(status) = PaymentStatus::from_code(status_code) else {
        return Ok(Err(Failure::internal(
            "decoding payment",
            format!("status {status_code}"),
        )));
    };
    Ok(Ok(PaymentRecord {
        seq: row.get(0)?,
        payment_id: row.get(1)?,
        idempotency_key: row.get(2)?,
        from: Party {
            username: row.get(3)?,
            bank_id: row.get(4)?,
            account_number: row.get(5)?,
        },
        to: Party {
            username: row.get(6)?,
            bank_id: row.get(7)?,
            account_number: row.get(8)?,
        },
        amount_minor: row.get(9)?,
        currency: row.get(10)?,
        memo: row.get(11)?,
        status,
        reason_code: row.get(13)?,
        reason: row.get(14)?,
        debit_acked: row.get(15)?,
        credit_acked: row.get(16)?,
        decision_deadline_unix_ms: row.get(17)?,
        created_unix_ms: row.get(18)?,
        decided_unix_ms: row.get(19)?,
        coordinator: row.get(20)?,
        decision_seq: row.get(21)?,
        refund_of: row.get(22)?,
        refunded_minor: row.get(23)?,
        refund_pending_minor: row.get(24)?,
        window_id: row.get(25)?,
    }))
}

fn read_login(connection: &Connection, username: &str) -> Result<Option<SharedLogin>, Failure> {
    connection
        .query_row_cached(
            "SELECT failures, window_start_unix_ms, locked_until_unix_ms, lockouts FROM logins
             WHERE username = ?1",
            [username],
            |row| {
                Ok(SharedLogin {
                    failures: row.get(0)?,
                    window_start_unix_ms: row.get(1)?,
                    locked_until_unix_ms: row.get(2)?,
                    lockouts: row.get(3)?,
                })
            },
        )
        .optional()
        .map_err(storage)
}

fn load_payment(
    connection: &Connection,
    payment_id: &str,
) -> Result<Option<PaymentRecord>, Failure> {
    connection
        .query_row_cached(
            concat!(
                "SELECT ",
                payment_fields!(),
                " FROM payments WHERE payment_id = ?1"
            ),
            [payment_id],
            payment_from_row,
        )
        .optional()
        .map_err(storage)?
        .transpose()
}

/// What a new attempt claims in the write that records it ([`GatewayStore::begin_payment`]):
/// a refund its amount from its original, a cross-bank payment its reservation. Returns the
/// attempt as it will be recorded (a refund's amount resolved). An `Err` rolls the whole
/// write back.
fn claim_for_attempt(
    transaction: &Connection,
    mut attempt: PaymentRecord,
) -> Result<PaymentRecord, Failure> {
    if let Some(original_id) = &attempt.refund_of {
        let original = load_payment(transaction, original_id)?
            .ok_or_else(|| Failure::NotFound(format!("payment {original_id} not found")))?;
        let claim = settlement::reserve_refund(&original, &attempt)?;
        transaction
            .execute_cached(
                "UPDATE payments SET refund_pending_minor = ?2 WHERE payment_id = ?1",
                params![original_id, claim.pending_minor],
            )
            .map_err(storage)?;
        attempt.amount_minor = claim.amount_minor;
    }
    if settlement::is_cross_bank(&attempt) {
        let position = load_position(transaction, &attempt.from.bank_id, &attempt.currency)?;
        write_position(
            transaction,
            &settlement::reserve(&position, attempt.amount_minor)?,
        )?;
    }
    Ok(attempt)
}

/// What a decision moves, in its own write ([`GatewayStore::decide`]): positions and the
/// reservation, the window's bilateral total, a refund's original.
fn apply_decision(
    transaction: &Connection,
    record: &PaymentRecord,
    window_id: i64,
) -> Result<(), Failure> {
    apply_position_changes(transaction, &settlement::on_decision(record, record.status))?;
    if record.status == PaymentStatus::Committed && settlement::is_cross_bank(record) {
        add_to_window(transaction, window_id, record)?;
    }
    if let Some(original_id) = &record.refund_of {
        let original = load_payment(transaction, original_id)?.ok_or_else(|| {
            Failure::internal("refund", format!("original {original_id} vanished"))
        })?;
        let (refunded, pending) =
            settlement::refund_decided(&original, record.amount_minor, record.status)?;
        transaction
            .execute_cached(
                "UPDATE payments SET refunded_minor = ?2, refund_pending_minor = ?3
                 WHERE payment_id = ?1",
                params![original_id, refunded, pending],
            )
            .map_err(storage)?;
    }
    Ok(())
}

fn insert_payment(transaction: &Connection, payment: &PaymentRecord) -> Result<(), Failure> {
    transaction
        .execute_cached(
            "INSERT INTO payments (payment_id, idempotency_key, from_user, from_bank, from_account,
                 to_user, to_bank, to_account, amount_minor, currency, memo, status,
                 decision_deadline_unix_ms, created_unix_ms, coordinator, refund_of)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, 1, ?12, ?13, ?14, ?15)",
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
                payment.refund_of
            ],
        )
        .map_err(storage)?;
    Ok(())
}

mod directory;
#[cfg(test)]
mod migration_tests;
#[cfg(test)]
mod tests;
