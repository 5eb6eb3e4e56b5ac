//! API keys in SQLite: written through the writer (creation and revocation durable, a use
//! relaxed), read on the read connection.

use rusqlite::{params, Connection, OptionalExtension, Row};
use strife_common::storage::sqlite::CachedStatements;
use strife_common::Failure;

use super::connection::storage;
use crate::records::ApiKeyRecord;

const COLUMNS: &str = "key_id, owner, secret_hash, scopes, description, created_unix_ms, \
                       expires_unix_ms, revoked_unix_ms, last_used_unix_ms";

fn from_row(row: &Row<'_>) -> rusqlite::Result<ApiKeyRecord> {
    let scopes: String = row.get(3)?;
    Ok(ApiKeyRecord {
        key_id: row.get(0)?,
        owner: row.get(1)?,
        secret_hash: row.get(2)?,
        scopes: scopes.split_whitespace().map(str::to_owned).collect(),
        description: row.get(4)?,
        created_unix_ms: row.get(5)?,
        expires_unix_ms: row.get(6)?,
        revoked_unix_ms: row.get(7)?,
        last_used_unix_ms: row.get(8)?,
    })
}

pub(super) fn insert(transaction: &Connection, key: &ApiKeyRecord) -> Result<(), Failure> {
    let inserted = transaction
        .execute_cached(
            &format!(
                "INSERT INTO api_keys ({COLUMNS}) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)
                 ON CONFLICT (key_id) DO NOTHING"
            ),
            params![
                key.key_id,
                key.owner,
                key.secret_hash,
                key.scopes.join(" "),
                key.description,
                key.created_unix_ms,
                key.expires_unix_ms,
                key.revoked_unix_ms,
                key.last_used_unix_ms,
            ],
        )
        .map_err(storage)?;
    if inserted == 0 {
        return Err(Failure::AlreadyExists(format!(
            "API key {} already exists",
            key.key_id
        )));
    }
    Ok(())
}

pub(super) fn read(connection: &Connection, key_id: &str) -> Result<Option<ApiKeyRecord>, Failure> {
    connection
        .query_row_cached(
            &format!("SELECT {COLUMNS} FROM api_keys WHERE key_id = ?1"),
            [key_id],
            from_row,
        )
        .optional()
        .map_err(storage)
}

pub(super) fn list(
    connection: &Connection,
    owner: Option<&str>,
) -> Result<Vec<ApiKeyRecord>, Failure> {
    let mut statement = connection
        .prepare_cached(&format!(
            "SELECT {COLUMNS} FROM api_keys WHERE ?1 IS NULL OR owner = ?1
             ORDER BY created_unix_ms, key_id"
        ))
        .map_err(storage)?;
    let rows = statement.query_map([owner], from_row).map_err(storage)?;
    rows.collect::<Result<Vec<_>, _>>().map_err(storage)
}

pub(super) fn revoke(
    transaction: &Connection,
    key_id: &str,
    now_unix_ms: i64,
) -> Result<Option<ApiKeyRecord>, Failure> {
    transaction
        .execute_cached(
            "UPDATE api_keys SET revoked_unix_ms = ?2
             WHERE key_id = ?1 AND revoked_unix_ms IS NULL",
            params![key_id, now_unix_ms],
        )
        .map_err(storage)?;
    read(transaction, key_id)
}

pub(super) fn touch(
    transaction: &Connection,
    key_id: &str,
    now_unix_ms: i64,
) -> Result<(), Failure> {
    transaction
        .execute_cached(
            "UPDATE api_keys SET last_used_unix_ms = ?2
             WHERE key_id = ?1 AND (last_used_unix_ms IS NULL OR last_used_unix_ms < ?2)",
            params![key_id, now_unix_ms],
        )
        .map_err(storage)?;
    Ok(())
}
