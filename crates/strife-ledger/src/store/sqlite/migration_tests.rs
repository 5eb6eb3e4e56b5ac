//! Schema versions of the gateway database ([`SCHEMA_VERSION`], `PRAGMA user_version`):
//! a file written by the release before versions existed opens, migrates and keeps every row;
//! a file from a newer Strife is refused. Kept apart from the store's own tests and touching only
//! `SqliteGatewayStore::open`, so it holds whatever shape the store's code takes.

use rusqlite::Connection;
use strife_common::storage::store_identity::StoreIdentity;

use super::{SqliteGatewayStore, SCHEMA_VERSION};

/// The gateway database as the release before schema versions wrote it: the same tables,
/// `PRAGMA user_version` 0, no `meta`. Frozen here on purpose (not the store's schema), so the
/// test keeps meaning "a file from then" when the schema moves on.
const VERSION_ZERO: &str = "
CREATE TABLE users (
    username        TEXT PRIMARY KEY,
    role            TEXT NOT NULL CHECK (role IN ('admin', 'client')),
    password_hash   TEXT NOT NULL,
    created_unix_ms INTEGER NOT NULL
);
CREATE TABLE accounts (
    bank_id         TEXT NOT NULL,
    account_number  TEXT NOT NULL,
    username        TEXT NOT NULL REFERENCES users (username),
    currency        TEXT NOT NULL,
    holder_name     TEXT NOT NULL,
    linked_unix_ms  INTEGER NOT NULL,
    PRIMARY KEY (bank_id, account_number)
);
CREATE INDEX accounts_by_user ON accounts (username);
CREATE TABLE payments (
    seq                       INTEGER PRIMARY KEY AUTOINCREMENT,
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
    status                    INTEGER NOT NULL CHECK (status IN (1, 2, 3)),
    reason_code               TEXT,
    reason                    TEXT,
    debit_acked               INTEGER NOT NULL DEFAULT 0,
    credit_acked              INTEGER NOT NULL DEFAULT 0,
    decision_deadline_unix_ms INTEGER NOT NULL,
    created_unix_ms           INTEGER NOT NULL,
    decided_unix_ms           INTEGER
);
CREATE INDEX payments_from ON payments (from_user, seq);
CREATE INDEX payments_to ON payments (to_user, seq);
CREATE INDEX payments_unfinished ON payments (seq)
    WHERE status = 1 OR debit_acked = 0 OR credit_acked = 0;
CREATE TABLE idempotency (
    username        TEXT NOT NULL,
    key             TEXT NOT NULL,
    fingerprint     TEXT NOT NULL,
    payment_id      TEXT NOT NULL,
    created_unix_ms INTEGER NOT NULL,
    PRIMARY KEY (username, key)
) WITHOUT ROWID;

INSERT INTO users VALUES
    ('admin', 'admin', '$argon2id$v=19$m=19456,t=2,p=1$c2FsdA$aGFzaA', 1),
    ('alice', 'client', '$argon2id$v=19$m=19456,t=2,p=1$c2FsdDI$aGFzaDI', 2),
    ('bob', 'client', '$argon2id$v=19$m=19456,t=2,p=1$c2FsdDM$aGFzaDM', 3);
INSERT INTO accounts VALUES
    ('bank0', 'bank0-00000001', 'alice', 'USD', 'Alice A.', 4),
    ('bank1', 'bank1-00000001', 'bob', 'USD', '', 5);
INSERT INTO payments (payment_id, idempotency_key, from_user, from_bank, from_account, to_user,
                      to_bank, to_account, amount_minor, currency, memo, status, reason_code,
                      reason, debit_acked, credit_acked, decision_deadline_unix_ms,
                      created_unix_ms, decided_unix_ms) VALUES
    ('p-1', 'k-1', 'alice', 'bank0', 'bank0-00000001', 'bob', 'bank1', 'bank1-00000001',
     1250, 'USD', 'lunch', 2, NULL, NULL, 1, 1, 100, 10, 11),
    ('p-2', 'k-2', 'alice', 'bank0', 'bank0-00000001', 'bob', 'bank1', 'bank1-00000001',
     99999, 'USD', '', 3, 'insufficient_funds', 'not enough', 1, 1, 200, 20, 21),
    ('p-3', 'k-3', 'alice', 'bank0', 'bank0-00000001', 'bob', 'bank1', 'bank1-00000001',
     5, 'USD', 'unacked', 2, NULL, NULL, 0, 1, 300, 30, 31);
INSERT INTO idempotency VALUES
    ('alice', 'k-1', 'to=bob|amount=1250', 'p-1', 10),
    ('alice', 'k-2', 'to=bob|amount=99999', 'p-2', 20),
    ('alice', 'k-3', 'to=bob|amount=5', 'p-3', 30);
";

const TABLES: [(&str, &str); 4] = [
    ("users", "username"),
    ("accounts", "bank_id, account_number"),
    ("payments", "seq"),
    ("idempotency", "username, key"),
];

fn identity(dir: &tempfile::TempDir) -> StoreIdentity {
    StoreIdentity::gateway(
        &strife_common::layout::Layout::new(dir.path()),
        "ca".into(),
        SCHEMA_VERSION,
        false,
    )
}

/// Every row of every table, every column as text (NULL as `None`), in key order.
fn dump_all(connection: &Connection) -> Vec<Vec<Vec<Option<String>>>> {
    TABLES
        .iter()
        .map(|(table, order)| {
            let mut statement = connection
                .prepare(&format!("SELECT * FROM {table} ORDER BY {order}"))
                .unwrap();
            let columns = statement.column_count();
            statement
                .query_map([], |row| {
                    (0..columns)
                        .map(|index| {
                            Ok(match row.get_ref(index)? {
                                rusqlite::types::ValueRef::Null => None,
                                rusqlite::types::ValueRef::Integer(value) => {
                                    Some(value.to_string())
                                }
                                rusqlite::types::ValueRef::Text(text) => {
                                    Some(String::from_utf8_lossy(text).into_owned())
                                }
                                other => Some(format!("{other:?}")),
                            })
                        })
                        .collect()
                })
                .unwrap()
                .collect::<Result<_, _>>()
                .unwrap()
        })
        .collect()
}

fn user_version(connection: &Connection) -> i64 {
    connection
        .query_row("PRAGMA user_version", [], |row| row.get(0))
        .unwrap()
}

#[test]
fn a_version_zero_database_migrates_and_keeps_every_row() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("gateway.db");
    let before = {
        let connection = Connection::open(&path).unwrap();
        connection.execute_batch(VERSION_ZERO).unwrap();
        assert_eq!(user_version(&connection), 0);
        dump_all(&connection)
    };
    assert_eq!(
        before.iter().map(Vec::len).collect::<Vec<_>>(),
        [3, 2, 3, 3]
    );
    drop(SqliteGatewayStore::open(&path, &identity(&dir)).unwrap());

    let connection = Connection::open(&path).unwrap();
    assert_eq!(user_version(&connection), SCHEMA_VERSION);
    let owner: String = connection
        .query_row("SELECT value FROM meta WHERE key = 'identity'", [], |row| {
            row.get(0)
        })
        .unwrap();
    assert_eq!(owner, "gateway");
    let after = dump_all(&connection);
    // Later versions add columns at the end (`coordinator`, `decision_seq`): the old columns
    // must hold exactly what they held.
    let kept: Vec<Vec<Vec<Option<String>>>> = after
        .iter()
        .zip(&before)
        .map(|(table, old)| {
            let width = old.first().map_or(0, Vec::len);
            table
                .iter()
                .map(|row| row[..width.min(row.len())].to_vec())
                .collect()
        })
        .collect();
    assert_eq!(kept, before, "every row, every column kept");
    let payments = &after[2];
    // Columns 20 and 21 are version 2's `coordinator` and `decision_seq`.
    for row in payments {
        assert_eq!(row[20], Some(String::new()), "no coordinator yet: {row:?}");
        assert_eq!(
            row[21], row[0],
            "decided: decision order = log order: {row:?}"
        );
    }
    drop(connection);
    assert!(dir.path().join("state").join("gateway.created").exists());

    // Opening the migrated file again is an ordinary open.
    drop(SqliteGatewayStore::open(&path, &identity(&dir)).unwrap());
    let connection = Connection::open(&path).unwrap();
    assert_eq!(
        dump_all(&connection),
        after,
        "a second open changes nothing"
    );
}

#[test]
fn a_database_from_a_newer_strife_is_refused_naming_the_file_and_versions() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("gateway.db");
    drop(SqliteGatewayStore::open(&path, &identity(&dir)).unwrap());
    {
        let connection = Connection::open(&path).unwrap();
        connection
            .pragma_update(None, "user_version", SCHEMA_VERSION + 1)
            .unwrap();
    }
    let refused = SqliteGatewayStore::open(&path, &identity(&dir))
        .err()
        .unwrap();
    let message = format!("{refused:#}");
    assert!(
        message.contains(&path.display().to_string())
            && message.contains(&format!("schema version {}", SCHEMA_VERSION + 1))
            && message.contains(&format!("({SCHEMA_VERSION})")),
        "{message}"
    );
    let connection = Connection::open(&path).unwrap();
    assert_eq!(user_version(&connection), SCHEMA_VERSION + 1, "left alone");
}

/// The 3 → 4 rebuild of `payments` keeps its constraints and indexes: a status outside
/// 1–3 and a second row for a payment id are still refused, and ids keep growing from the
/// largest one.
#[test]
fn the_rebuilt_payments_table_refuses_what_the_old_one_refused() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("gateway.db");
    Connection::open(&path)
        .unwrap()
        .execute_batch(VERSION_ZERO)
        .unwrap();
    drop(SqliteGatewayStore::open(&path, &identity(&dir)).unwrap());
    let connection = Connection::open(&path).unwrap();
    let table: String = connection
        .query_row(
            "SELECT sql FROM sqlite_master WHERE type = 'table' AND name = 'payments'",
            [],
            |row| row.get(0),
        )
        .unwrap();
    assert!(!table.contains(" IN ("), "{table}");
    assert!(!table.contains("AUTOINCREMENT"), "{table}");
    let indexes: i64 = connection
        .query_row(
            "SELECT COUNT(*) FROM sqlite_master WHERE type = 'index' AND tbl_name = 'payments'
             AND name IN ('payments_by_decision', 'payments_from', 'payments_to',
                          'payments_unfinished_by_coordinator')",
            [],
            |row| row.get(0),
        )
        .unwrap();
    assert_eq!(indexes, 4, "every index made again");
    let largest: i64 = connection
        .query_row("SELECT MAX(seq) FROM payments", [], |row| row.get(0))
        .unwrap();
    let insert = |payment_id: &str, status: i64| {
        connection.execute(
            "INSERT INTO payments (payment_id, idempotency_key, from_user, from_bank,
                 from_account, to_user, to_bank, to_account, amount_minor, currency, memo,
                 status, decision_deadline_unix_ms, created_unix_ms)
             VALUES (?1, 'k', 'alice', 'bank0', 'a', 'bob', 'bank1', 'b', 1, 'USD', '', ?2, 1, 1)",
            rusqlite::params![payment_id, status],
        )
    };
    assert!(insert("p-new", 4).is_err(), "status 4 was accepted");
    assert!(insert("p-new", 0).is_err(), "status 0 was accepted");
    assert!(
        insert("p-1", 1).is_err(),
        "a second row for p-1 was accepted"
    );
    insert("p-new", 1).unwrap();
    assert_eq!(connection.last_insert_rowid(), largest + 1);
}
