//! The SQLite gateway schema: its tables ([`SCHEMA`], created where missing on every open),
//! the steps from older versions ([`MIGRATIONS`]), and the version this binary writes
//! ([`SCHEMA_VERSION`], kept in `PRAGMA user_version`). Opening, the identity check and
//! running the steps in one transaction are `strife_common::storage::store_identity`'s and
//! `strife_common::storage::sqlite`'s; PostgreSQL counts its versions separately
//! ([`crate::store::postgres::SCHEMA_VERSION`]): the two schemas grew apart.

use strife_common::storage::store_identity::Migration;

use super::read::payment_columns_v4;

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

/// API keys (`crate::records::ApiKeyRecord`): only a keyed hash of each secret; scopes as
/// one space-separated text.
macro_rules! api_keys_table {
    () => {
        "CREATE TABLE IF NOT EXISTS api_keys (
    key_id              TEXT PRIMARY KEY,
    owner               TEXT NOT NULL,
    secret_hash         BLOB NOT NULL CHECK (length(secret_hash) = 32),
    scopes              TEXT NOT NULL,
    description         TEXT NOT NULL,
    created_unix_ms     INTEGER NOT NULL,
    expires_unix_ms     INTEGER,
    revoked_unix_ms     INTEGER,
    last_used_unix_ms   INTEGER
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS api_keys_by_owner ON api_keys (owner, created_unix_ms);
"
    };
}

/// The `metadata` column (`crate::records::metadata_to_json`), word for word in the schema
/// and in the 6 → 7 migration that adds it.
macro_rules! metadata_column {
    () => {
        "metadata TEXT NOT NULL DEFAULT '{}'"
    };
}

/// The authorization columns (`crate::records::PaymentRecord::expires_unix_ms`,
/// `authorized_unix_ms`, `authorized_minor`), word for word in the schema and in the 7 → 8 migration.
macro_rules! authorization_columns {
    () => {
        "expires_unix_ms INTEGER,\n    authorized_unix_ms INTEGER,\n    authorized_minor INTEGER"
    };
}

/// The `payments` table as of version 4, word for word in the schema (which adds the later
/// columns given as arguments) and in the 3 → 4 migration that rebuilds it. Its status CHECK spells the set out as `=` … `OR`: SQLite evaluates an
/// `IN (…)` list of three or more values through a scratch b-tree it creates and destroys on
/// every insert and decision (≈ 4 µs each). `seq` is a plain `INTEGER PRIMARY KEY`, not
/// `AUTOINCREMENT`: payments are never deleted, so the next id is the largest + 1 either way,
/// without a `sqlite_sequence` read and write per payment.
macro_rules! payments_table {
    ($($later_columns:expr),*) => {
        concat!("CREATE TABLE IF NOT EXISTS payments (
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
    window_id                 INTEGER",
    $($later_columns,)*
    "
);
")
    };
}

pub(super) const SCHEMA: &str = concat!(
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
    payments_table!(
        ",\n    ",
        metadata_column!(),
        ",\n    ",
        authorization_columns!()
    ),
    "CREATE UNIQUE INDEX IF NOT EXISTS payments_by_decision ON payments (decision_seq)
    WHERE decision_seq IS NOT NULL;
CREATE INDEX IF NOT EXISTS payments_from ON payments (from_user, seq);
CREATE INDEX IF NOT EXISTS payments_to ON payments (to_user, seq);
CREATE INDEX IF NOT EXISTS payments_refunds ON payments (refund_of, seq)
    WHERE refund_of IS NOT NULL;
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
    settlement_tables!(),
    api_keys_table!()
);

/// The SQLite schema version this binary writes (`PRAGMA user_version`); a database with a
/// higher one was written by a newer Strife and is refused.
pub const SCHEMA_VERSION: i64 = 8;

/// Steps from older schema versions (see [`SCHEMA_VERSION`]).
pub(super) const MIGRATIONS: &[Migration] = &[
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
            payment_columns_v4!(),
            ") SELECT ",
            payment_columns_v4!(),
            " FROM payments_v3;
             DROP TABLE payments_v3;"
        ),
    },
    Migration {
        // 4 → 5: shared secrets (the cursor key); created on first use.
        to_version: 5,
        sql: secrets_table!(),
    },
    Migration {
        // 5 → 6: API keys.
        to_version: 6,
        sql: api_keys_table!(),
    },
    Migration {
        // 6 → 7: payment metadata; every earlier payment has none.
        to_version: 7,
        sql: concat!("ALTER TABLE payments ADD COLUMN ", metadata_column!(), ";"),
    },
    Migration {
        // 7 → 8: authorizations (docs/SPEC.md §4); every earlier payment is a plain payment.
        // An AUTHORIZED row keeps status 1 (undecided), so no CHECK or index changes.
        to_version: 8,
        sql: "ALTER TABLE payments ADD COLUMN expires_unix_ms INTEGER;
              ALTER TABLE payments ADD COLUMN authorized_unix_ms INTEGER;
              ALTER TABLE payments ADD COLUMN authorized_minor INTEGER;",
    },
];
