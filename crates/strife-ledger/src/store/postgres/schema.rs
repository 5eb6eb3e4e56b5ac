//! The PostgreSQL schema, its versions, and whose database it is.
//!
//! One row in `strife_schema` says which schema version the tables have and whose they are:
//! the identity (`gateway`), the SHA-256 fingerprint of the network's CA, a random creation id
//! and the creation time — the same facts `strife_common::storage::store_identity` keeps in SQLite's
//! `meta` table. Opening the store ([`prepare`]) runs in ONE transaction that first takes a
//! transaction-scoped advisory lock ([`SCHEMA_LOCK`]), so replicas starting together queue up:
//! the first creates or migrates, the others then find the result and only verify it.
//!
//! What a shared server has instead of SQLite's creation marker in `state/`: a gateway's data
//! dir cannot vouch for a database other replicas share, so the database itself must say
//! whose it is, and an empty one is never adopted silently.
//!
//! - no `strife_schema` and no tables: refused unless `--initialize` (a new network's first
//!   start). A gateway that ran before and is now pointed at an empty database (a typo in the
//!   database name, a restore that did not happen) therefore stops instead of starting over
//!   with no payments, users or links;
//! - tables but no `strife_schema`: someone else's database, refused;
//! - another identity or another CA: another network's (or another process's) database,
//!   refused;
//! - a newer version: written by a newer Strife, refused;
//! - an older version: migrated, every step in the same transaction as the version update.

use tokio_postgres::GenericClient;

use strife_common::storage::store_identity::StoreIdentity;

/// One schema step: the SQL that takes the tables from `version - 1` to `version`.
#[derive(Debug, Clone, Copy)]
pub struct Migration {
    pub version: i64,
    pub sql: &'static str,
}

/// Key of the advisory lock held while the schema is checked, created or migrated (an
/// arbitrary constant, "strife" in ASCII, that no other application is likely to use).
pub const SCHEMA_LOCK: i64 = 0x7374_7269_6665;

/// The schema's history; the last entry is [`SCHEMA_VERSION`].
pub const MIGRATIONS: &[Migration] = &[Migration {
    version: 1,
    sql: "
CREATE TABLE users (
    username        TEXT PRIMARY KEY,
    role            TEXT NOT NULL CHECK (role IN ('admin', 'client')),
    password_hash   TEXT NOT NULL,
    created_unix_ms BIGINT NOT NULL
);
CREATE TABLE accounts (
    bank_id         TEXT NOT NULL,
    account_number  TEXT NOT NULL,
    username        TEXT NOT NULL REFERENCES users (username),
    currency        TEXT NOT NULL,
    holder_name     TEXT NOT NULL,
    linked_unix_ms  BIGINT NOT NULL,
    PRIMARY KEY (bank_id, account_number)
);
CREATE INDEX accounts_by_user ON accounts (username);
CREATE TABLE payments (
    seq                       BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    payment_id                TEXT NOT NULL UNIQUE,
    idempotency_key           TEXT NOT NULL,
    from_user                 TEXT NOT NULL,
    from_bank                 TEXT NOT NULL,
    from_account              TEXT NOT NULL,
    to_user                   TEXT NOT NULL,
    to_bank                   TEXT NOT NULL,
    to_account                TEXT NOT NULL,
    amount_minor              BIGINT NOT NULL CHECK (amount_minor > 0),
    currency                  TEXT NOT NULL,
    memo                      TEXT NOT NULL,
    status                    INTEGER NOT NULL CHECK (status IN (1, 2, 3)),
    reason_code               TEXT,
    reason                    TEXT,
    debit_acked               BOOLEAN NOT NULL DEFAULT FALSE,
    credit_acked              BOOLEAN NOT NULL DEFAULT FALSE,
    decision_deadline_unix_ms BIGINT NOT NULL,
    created_unix_ms           BIGINT NOT NULL,
    decided_unix_ms           BIGINT
);
CREATE INDEX payments_from ON payments (from_user, seq);
CREATE INDEX payments_to ON payments (to_user, seq);
CREATE INDEX payments_unfinished ON payments (seq)
    WHERE status = 1 OR NOT debit_acked OR NOT credit_acked;
CREATE TABLE idempotency (
    username        TEXT NOT NULL,
    key             TEXT NOT NULL,
    fingerprint     TEXT NOT NULL,
    payment_id      TEXT NOT NULL,
    created_unix_ms BIGINT NOT NULL,
    PRIMARY KEY (username, key)
);
",
}, Migration {
    // Replicas: each payment names the replica coordinating it (takeover); each decision
    // gets a position in the decision order (payment events); failed logins are shared;
    // readiness probes write a row.
    version: 2,
    sql: "
ALTER TABLE payments ADD COLUMN coordinator TEXT NOT NULL DEFAULT '';
ALTER TABLE payments ADD COLUMN decision_seq BIGINT;
CREATE SEQUENCE payments_decision_seq;
UPDATE payments SET decision_seq = seq WHERE status <> 1;
SELECT setval('payments_decision_seq', COALESCE(MAX(decision_seq), 1), MAX(decision_seq) IS NOT NULL)
    FROM payments;
CREATE UNIQUE INDEX payments_by_decision ON payments (decision_seq)
    WHERE decision_seq IS NOT NULL;
DROP INDEX payments_unfinished;
CREATE INDEX payments_unfinished_by_coordinator ON payments (coordinator, seq)
    WHERE status = 1 OR NOT debit_acked OR NOT credit_acked;
CREATE TABLE logins (
    username                TEXT PRIMARY KEY,
    failures                INTEGER NOT NULL,
    window_start_unix_ms    BIGINT NOT NULL,
    locked_until_unix_ms    BIGINT NOT NULL,
    lockouts                INTEGER NOT NULL
);
CREATE TABLE probes (
    singleton       BOOLEAN PRIMARY KEY DEFAULT TRUE CHECK (singleton),
    probed_unix_ms  BIGINT NOT NULL
);
",
}, Migration {
    // The payment columns of settlement and refunds (the SQLite store's version 3); the
    // tables that use them came with version 4.
    version: 3,
    sql: "
ALTER TABLE payments ADD COLUMN refund_of TEXT;
ALTER TABLE payments ADD COLUMN refunded_minor BIGINT NOT NULL DEFAULT 0;
ALTER TABLE payments ADD COLUMN refund_pending_minor BIGINT NOT NULL DEFAULT 0;
ALTER TABLE payments ADD COLUMN window_id BIGINT;
",
}, Migration {
    // Settlement: the SQLite store's version-3 tables. Positions: one row per (bank,
    // currency), created by the first reservation, commit or cap. Windows: exactly one open at
    // any commit point (the partial unique index; window 1 is created here). Totals: per
    // window, what one payer bank's customers paid one payee bank's in committed cross-bank
    // payments, written with each COMMIT decision, so a closed window's never change.
    //
    // A version-3 database kept no settlement (and refused refunds): every payment decided so
    // far belongs to window 1, and positions, reservations and window 1's totals are derived
    // from the log exactly as the audit derives them, so the invariants hold from the first
    // start. SUM over BIGINT is NUMERIC, and the cast back raises an error on overflow
    // instead of wrapping. Runs on an empty log too (a new database), deriving nothing.
    version: 4,
    sql: "
CREATE TABLE bank_positions (
    bank_id         TEXT NOT NULL,
    currency        TEXT NOT NULL,
    position_minor  BIGINT NOT NULL DEFAULT 0,
    reserved_minor  BIGINT NOT NULL DEFAULT 0 CHECK (reserved_minor >= 0),
    cap_minor       BIGINT CHECK (cap_minor IS NULL OR cap_minor >= 0),
    PRIMARY KEY (bank_id, currency)
);
CREATE TABLE settlement_windows (
    window_id       BIGINT PRIMARY KEY,
    opened_unix_ms  BIGINT NOT NULL,
    closed_unix_ms  BIGINT,
    settled_unix_ms BIGINT,
    CHECK (settled_unix_ms IS NULL OR closed_unix_ms IS NOT NULL)
);
CREATE UNIQUE INDEX settlement_windows_one_open
    ON settlement_windows ((closed_unix_ms IS NULL)) WHERE closed_unix_ms IS NULL;
CREATE TABLE settlement_totals (
    window_id       BIGINT NOT NULL REFERENCES settlement_windows (window_id),
    payer_bank      TEXT NOT NULL,
    payee_bank      TEXT NOT NULL,
    currency        TEXT NOT NULL,
    amount_minor    BIGINT NOT NULL,
    payments        BIGINT NOT NULL,
    PRIMARY KEY (window_id, payer_bank, payee_bank, currency)
);
INSERT INTO settlement_windows (window_id, opened_unix_ms)
    VALUES (1, (extract(epoch FROM clock_timestamp()) * 1000)::bigint);
UPDATE payments SET window_id = 1 WHERE status <> 1;
INSERT INTO settlement_totals (window_id, payer_bank, payee_bank, currency, amount_minor, payments)
    SELECT 1, from_bank, to_bank, currency, SUM(amount_minor)::bigint, COUNT(*)
    FROM payments WHERE status = 2 AND from_bank <> to_bank
    GROUP BY from_bank, to_bank, currency;
INSERT INTO bank_positions (bank_id, currency, position_minor, reserved_minor)
    SELECT bank_id, currency, SUM(position_minor)::bigint, SUM(reserved_minor)::bigint FROM (
        SELECT from_bank AS bank_id, currency, amount_minor AS position_minor,
               0 AS reserved_minor
            FROM payments WHERE status = 2 AND from_bank <> to_bank
        UNION ALL
        SELECT to_bank, currency, -amount_minor, 0
            FROM payments WHERE status = 2 AND from_bank <> to_bank
        UNION ALL
        SELECT from_bank, currency, 0, amount_minor
            FROM payments WHERE status = 1 AND from_bank <> to_bank
    ) AS moves GROUP BY bank_id, currency;
",
}, Migration {
    // Secrets every replica shares (the key that seals cursors), created on first use; the
    // SQLite store's version 5.
    version: 5,
    sql: "
CREATE TABLE secrets (
    name    TEXT PRIMARY KEY,
    value   BYTEA NOT NULL CHECK (octet_length(value) = 32)
);
",
}, Migration {
    // API keys (`crate::records::ApiKeyRecord`): only a keyed hash of each secret; the SQLite
    // store's version 6.
    version: 6,
    sql: "
CREATE TABLE api_keys (
    key_id              TEXT PRIMARY KEY,
    owner               TEXT NOT NULL,
    secret_hash         BYTEA NOT NULL CHECK (octet_length(secret_hash) = 32),
    scopes              TEXT NOT NULL,
    description         TEXT NOT NULL,
    created_unix_ms     BIGINT NOT NULL,
    expires_unix_ms     BIGINT,
    revoked_unix_ms     BIGINT,
    last_used_unix_ms   BIGINT
);
CREATE INDEX api_keys_by_owner ON api_keys (owner, created_unix_ms);
",
}, Migration {
    // Payment metadata (`crate::records::metadata_to_json`); every earlier payment has none.
    // The SQLite store's version 7.
    version: 7,
    sql: "ALTER TABLE payments ADD COLUMN metadata TEXT NOT NULL DEFAULT '{}';",
}, Migration {
    // Authorizations (docs/SPEC.md §4): an AUTHORIZED row keeps status 1 (undecided), so no
    // CHECK or index changes; and the index that lists a payment's refunds. The SQLite
    // store's version 8.
    version: 8,
    sql: "ALTER TABLE payments ADD COLUMN expires_unix_ms BIGINT,
              ADD COLUMN authorized_unix_ms BIGINT,
              ADD COLUMN authorized_minor BIGINT;
          CREATE INDEX payments_refunds ON payments (refund_of, seq)
              WHERE refund_of IS NOT NULL;",
}];

/// The schema version this binary writes to PostgreSQL (the last of [`MIGRATIONS`]). The
/// SQLite store counts its own versions ([`crate::store::sqlite::SCHEMA_VERSION`]): the two
/// schemas grew separately, so the same features sit at different version numbers.
pub const SCHEMA_VERSION: i64 = MIGRATIONS[MIGRATIONS.len() - 1].version;

const SCHEMA_TABLE: &str = "
CREATE TABLE strife_schema (
    singleton       BOOLEAN PRIMARY KEY DEFAULT TRUE CHECK (singleton),
    version         BIGINT NOT NULL,
    identity        TEXT NOT NULL,
    ca_fingerprint  TEXT NOT NULL,
    creation_id     TEXT NOT NULL,
    created         TEXT NOT NULL,
    created_unix_ms BIGINT NOT NULL
);";

/// What the `strife_schema` row says.
#[derive(Debug, Clone)]
pub struct SchemaRow {
    pub version: i64,
    pub identity: String,
    pub ca_fingerprint: String,
    pub creation_id: String,
    pub created: String,
}

/// Reads the `strife_schema` row; `None` when the table does not exist.
pub async fn read<C: GenericClient>(
    client: &C,
) -> Result<Option<SchemaRow>, tokio_postgres::Error> {
    let exists: bool = client
        .query_one("SELECT to_regclass('strife_schema') IS NOT NULL", &[])
        .await?
        .get(0);
    if !exists {
        return Ok(None);
    }
    let row = client
        .query_opt(
            "SELECT version, identity, ca_fingerprint, creation_id, created FROM strife_schema",
            &[],
        )
        .await?;
    Ok(row.map(|row| SchemaRow {
        version: row.get(0),
        identity: row.get(1),
        ca_fingerprint: row.get(2),
        creation_id: row.get(3),
        created: row.get(4),
    }))
}

/// Tables in the session's current schema (where ours are created).
async fn table_count<C: GenericClient>(client: &C) -> Result<i64, tokio_postgres::Error> {
    Ok(client
        .query_one(
            "SELECT count(*) FROM pg_catalog.pg_tables WHERE schemaname = current_schema()",
            &[],
        )
        .await?
        .get(0))
}

/// What [`prepare`] did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Prepared {
    Created { creation_id: String },
    Migrated { from: i64, to: i64 },
    Current,
}

/// Creates, migrates or verifies the schema inside `transaction` (which the caller commits),
/// under the advisory lock. `location` names the database in messages (no password).
/// `migrations` is [`MIGRATIONS`] except in tests of the migration machinery.
pub async fn prepare(
    transaction: &tokio_postgres::Transaction<'_>,
    location: &str,
    identity: &StoreIdentity,
    migrations: &[Migration],
) -> anyhow::Result<Prepared> {
    use anyhow::Context;
    let target = migrations.last().map_or(0, |last| last.version);
    transaction
        .execute("SELECT pg_advisory_xact_lock($1)", &[&SCHEMA_LOCK])
        .await
        .context("taking the schema lock")?;
    let Some(row) = read(transaction).await.context("reading strife_schema")? else {
        let tables = table_count(transaction)
            .await
            .context("listing the database's tables")?;
        anyhow::ensure!(
            tables == 0,
            "the gateway's PostgreSQL store {location} holds {tables} table(s) but no \
             strife_schema: it is not a Strife gateway database; point --store at the right \
             database (or an empty one for a new network)"
        );
        anyhow::ensure!(
            identity.initialize,
            "the gateway's PostgreSQL store {location} is empty. If this is a new network's \
             database, start the gateway once with {} to create its schema. If this gateway \
             has run before, its database is elsewhere: check the URL (host, database name) \
             or restore the database from backup — starting over would forget every \
             payment, user and linked account",
            identity.initialize_hint
        );
        return create(transaction, identity, migrations, target).await;
    };
    anyhow::ensure!(
        row.version <= target,
        "the gateway's PostgreSQL store {location} has schema version {}, newer than this \
         strife knows ({target}); run the newer strife, or restore a backup made by this \
         version",
        row.version
    );
    verify_owner(&row, location, identity)?;
    if row.version == target {
        return Ok(Prepared::Current);
    }
    let from = row.version;
    for migration in migrations.iter().filter(|step| step.version > from) {
        transaction
            .batch_execute(migration.sql)
            .await
            .with_context(|| format!("migrating the schema to version {}", migration.version))?;
    }
    transaction
        .execute("UPDATE strife_schema SET version = $1", &[&target])
        .await
        .context("recording the schema version")?;
    Ok(Prepared::Migrated { from, to: target })
}

/// Refuses a schema row written for another identity or network.
pub fn verify_owner(
    row: &SchemaRow,
    location: &str,
    identity: &StoreIdentity,
) -> anyhow::Result<()> {
    anyhow::ensure!(
        row.identity == identity.identity,
        "the gateway's PostgreSQL store {location} belongs to {}, not {}: it is a foreign \
         database; check the URL",
        row.identity,
        identity.identity
    );
    anyhow::ensure!(
        row.ca_fingerprint == identity.ca_fingerprint,
        "the gateway's PostgreSQL store {location} belongs to another Strife network: it was \
         created under another CA (fingerprint {}, this network's is {}; creation {}, {}); \
         check the URL",
        row.ca_fingerprint,
        identity.ca_fingerprint,
        row.creation_id,
        row.created
    );
    Ok(())
}

async fn create(
    transaction: &tokio_postgres::Transaction<'_>,
    identity: &StoreIdentity,
    migrations: &[Migration],
    target: i64,
) -> anyhow::Result<Prepared> {
    use anyhow::Context;
    transaction
        .batch_execute(SCHEMA_TABLE)
        .await
        .context("creating strife_schema")?;
    for migration in migrations {
        transaction
            .batch_execute(migration.sql)
            .await
            .with_context(|| format!("creating the schema (version {})", migration.version))?;
    }
    let creation_id = uuid::Uuid::new_v4().to_string();
    let created = humantime_now();
    transaction
        .execute(
            "INSERT INTO strife_schema (version, identity, ca_fingerprint, creation_id, created,
                 created_unix_ms)
             VALUES ($1, $2, $3, $4, $5, $6)",
            &[
                &target,
                &identity.identity,
                &identity.ca_fingerprint,
                &creation_id,
                &created,
                &strife_common::time::now_unix_ms(),
            ],
        )
        .await
        .context("recording the database's identity")?;
    Ok(Prepared::Created { creation_id })
}

/// Now as RFC 3339 (UTC, seconds), as the SQLite meta table writes it.
fn humantime_now() -> String {
    humantime::format_rfc3339_seconds(std::time::SystemTime::now()).to_string()
}
