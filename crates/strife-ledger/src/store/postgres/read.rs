//! Reading the gateway's PostgreSQL log: the row decoders and the payment and login lookups
//! that reads and writes share. Settlement's rows are read in [`super::settle`], the audit's
//! snapshot in [`super::snapshot`].

use deadpool_postgres::GenericClient;
use strife_common::Failure;
use tokio_postgres::types::ToSql;
use tokio_postgres::Row;

use super::server::{chain, Failed};
use crate::lockout::SharedLogin;
use crate::records::{metadata_from_json, LinkedAccount, Party, PaymentRecord, PaymentStatus};

/// The columns of a [`PaymentRecord`], in [`payment_from_row`]'s order.
macro_rules! payment_columns {
    () => {
        "seq, payment_id, idempotency_key, from_user, from_bank, from_account, to_user, to_bank,
         to_account, amount_minor, currency, memo, status, reason_code, reason, debit_acked,
         credit_acked, decision_deadline_unix_ms, created_unix_ms, decided_unix_ms,
         coordinator, decision_seq, refund_of, refunded_minor, refund_pending_minor, window_id,
         metadata, expires_unix_ms, authorized_unix_ms, authorized_minor"
    };
}
pub(super) use payment_columns;

pub(super) const ACCOUNT_COLUMNS: &str = "username, bank_id, account_number, currency, holder_name";

const SELECT_PAYMENT: &str = concat!(
    "SELECT ",
    payment_columns!(),
    " FROM payments WHERE payment_id = $1"
);

/// Every row one cached statement returns, each decoded: the shape of every listing.
pub(super) async fn query_rows<C: GenericClient, T, Rows: FromIterator<T>>(
    client: &C,
    failed: Failed<'_>,
    sql: &str,
    params: &[&(dyn ToSql + Sync)],
    decode: impl FnMut(&Row) -> Result<T, Failure>,
) -> Result<Rows, Failure> {
    let statement = client.prepare_cached(sql).await.map_err(failed)?;
    client
        .query(&statement, params)
        .await
        .map_err(failed)?
        .iter()
        .map(decode)
        .collect()
}

pub(super) fn column<'a, T: tokio_postgres::types::FromSql<'a>>(
    row: &'a Row,
    index: usize,
) -> Result<T, Failure> {
    row.try_get(index)
        .map_err(|error| Failure::internal("decoding a PostgreSQL row", chain(&error)))
}

pub(super) fn account_from_row(row: &Row) -> Result<LinkedAccount, Failure> {
    Ok(LinkedAccount {
        username: column(row, 0)?,
        bank_id: column(row, 1)?,
        account_number: column(row, 2)?,
        currency: column(row, 3)?,
        holder_name: column(row, 4)?,
    })
}

pub(super) fn payment_from_row(row: &Row) -> Result<PaymentRecord, Failure> {
    let status_code: i32 = column(row, 12)?;
    let authorized_unix_ms: Option<i64> = column(row, 28)?;
    let status = PaymentStatus::stored(i64::from(status_code), authorized_unix_ms.is_some())
        .ok_or_else(|| Failure::internal("decoding payment", format!("status {status_code}")))?;
    Ok(PaymentRecord {
        seq: column(row, 0)?,
        payment_id: column(row, 1)?,
        idempotency_key: column(row, 2)?,
        from: Party {
            username: column(row, 3)?,
            bank_id: column(row, 4)?,
            account_number: column(row, 5)?,
        },
        to: Party {
            username: column(row, 6)?,
            bank_id: column(row, 7)?,
            account_number: column(row, 8)?,
        },
        amount_minor: column(row, 9)?,
        currency: column(row, 10)?,
        memo: column(row, 11)?,
        status,
        reason_code: column(row, 13)?,
        reason: column(row, 14)?,
        debit_acked: column(row, 15)?,
        credit_acked: column(row, 16)?,
        decision_deadline_unix_ms: column(row, 17)?,
        created_unix_ms: column(row, 18)?,
        decided_unix_ms: column(row, 19)?,
        coordinator: column(row, 20)?,
        decision_seq: column(row, 21)?,
        refund_of: column(row, 22)?,
        refunded_minor: column(row, 23)?,
        refund_pending_minor: column(row, 24)?,
        window_id: column(row, 25)?,
        metadata: metadata_from_json(&column::<String>(row, 26)?)?,
        expires_unix_ms: column(row, 27)?,
        authorized_unix_ms,
        authorized_minor: column(row, 29)?,
    })
}

pub(super) async fn load_payment<C: GenericClient>(
    client: &C,
    failed: Failed<'_>,
    payment_id: &str,
) -> Result<Option<PaymentRecord>, Failure> {
    let statement = client
        .prepare_cached(SELECT_PAYMENT)
        .await
        .map_err(failed)?;
    client
        .query_opt(&statement, &[&payment_id])
        .await
        .map_err(failed)?
        .as_ref()
        .map(payment_from_row)
        .transpose()
}

/// `username`'s login record, its row locked until the transaction ends when `for_update`.
pub(super) async fn read_login<C: GenericClient>(
    client: &C,
    failed: Failed<'_>,
    username: &str,
    for_update: bool,
) -> Result<Option<SharedLogin>, Failure> {
    let sql = if for_update {
        "SELECT failures, window_start_unix_ms, locked_until_unix_ms, lockouts FROM logins
         WHERE username = $1 FOR UPDATE"
    } else {
        "SELECT failures, window_start_unix_ms, locked_until_unix_ms, lockouts FROM logins
         WHERE username = $1"
    };
    let statement = client.prepare_cached(sql).await.map_err(failed)?;
    let Some(row) = client
        .query_opt(&statement, &[&username])
        .await
        .map_err(failed)?
    else {
        return Ok(None);
    };
    let failures: i32 = column(&row, 0)?;
    let lockouts: i32 = column(&row, 3)?;
    Ok(Some(SharedLogin {
        failures: u32::try_from(failures).unwrap_or(0),
        window_start_unix_ms: column(&row, 1)?,
        locked_until_unix_ms: column(&row, 2)?,
        lockouts: u32::try_from(lockouts).unwrap_or(0),
    }))
}
