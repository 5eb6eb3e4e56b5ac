//! API keys in PostgreSQL: creation and revocation on the durable pool, reads and "last
//! used" on the relaxed one.

use deadpool_postgres::GenericClient;
use strife_common::Failure;
use tokio_postgres::Row;

use super::read::{column, query_rows};
use super::server::Failed;
use crate::records::ApiKeyRecord;

const COLUMNS: &str = "key_id, owner, secret_hash, scopes, description, created_unix_ms, \
                       expires_unix_ms, revoked_unix_ms, last_used_unix_ms";

fn from_row(row: &Row) -> Result<ApiKeyRecord, Failure> {
    let scopes: String = column(row, 3)?;
    Ok(ApiKeyRecord {
        key_id: column(row, 0)?,
        owner: column(row, 1)?,
        secret_hash: column(row, 2)?,
        scopes: scopes.split_whitespace().map(str::to_owned).collect(),
        description: column(row, 4)?,
        created_unix_ms: column(row, 5)?,
        expires_unix_ms: column(row, 6)?,
        revoked_unix_ms: column(row, 7)?,
        last_used_unix_ms: column(row, 8)?,
    })
}

pub(super) async fn insert<C: GenericClient>(
    client: &C,
    failed: Failed<'_>,
    key: &ApiKeyRecord,
) -> Result<(), Failure> {
    let statement = client
        .prepare_cached(&format!(
            "INSERT INTO api_keys ({COLUMNS}) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)
             ON CONFLICT (key_id) DO NOTHING"
        ))
        .await
        .map_err(failed)?;
    let inserted = client
        .execute(
            &statement,
            &[
                &key.key_id,
                &key.owner,
                &key.secret_hash,
                &key.scopes.join(" "),
                &key.description,
                &key.created_unix_ms,
                &key.expires_unix_ms,
                &key.revoked_unix_ms,
                &key.last_used_unix_ms,
            ],
        )
        .await
        .map_err(failed)?;
    if inserted == 0 {
        return Err(Failure::AlreadyExists(format!(
            "API key {} already exists",
            key.key_id
        )));
    }
    Ok(())
}

pub(super) async fn read<C: GenericClient>(
    client: &C,
    failed: Failed<'_>,
    key_id: &str,
) -> Result<Option<ApiKeyRecord>, Failure> {
    let rows: Vec<ApiKeyRecord> = query_rows(
        client,
        failed,
        &format!("SELECT {COLUMNS} FROM api_keys WHERE key_id = $1"),
        &[&key_id],
        from_row,
    )
    .await?;
    Ok(rows.into_iter().next())
}

pub(super) async fn list<C: GenericClient>(
    client: &C,
    failed: Failed<'_>,
    owner: Option<&str>,
) -> Result<Vec<ApiKeyRecord>, Failure> {
    query_rows(
        client,
        failed,
        &format!(
            "SELECT {COLUMNS} FROM api_keys WHERE $1::text IS NULL OR owner = $1
             ORDER BY created_unix_ms, key_id"
        ),
        &[&owner],
        from_row,
    )
    .await
}

pub(super) async fn revoke<C: GenericClient>(
    client: &C,
    failed: Failed<'_>,
    key_id: &str,
    now_unix_ms: i64,
) -> Result<Option<ApiKeyRecord>, Failure> {
    let statement = client
        .prepare_cached(
            "UPDATE api_keys SET revoked_unix_ms = $2
             WHERE key_id = $1 AND revoked_unix_ms IS NULL",
        )
        .await
        .map_err(failed)?;
    client
        .execute(&statement, &[&key_id, &now_unix_ms])
        .await
        .map_err(failed)?;
    read(client, failed, key_id).await
}

pub(super) async fn touch<C: GenericClient>(
    client: &C,
    failed: Failed<'_>,
    key_id: &str,
    now_unix_ms: i64,
) -> Result<(), Failure> {
    let statement = client
        .prepare_cached(
            "UPDATE api_keys SET last_used_unix_ms = $2
             WHERE key_id = $1 AND (last_used_unix_ms IS NULL OR last_used_unix_ms < $2)",
        )
        .await
        .map_err(failed)?;
    client
        .execute(&statement, &[&key_id, &now_unix_ms])
        .await
        .map_err(failed)?;
    Ok(())
}
