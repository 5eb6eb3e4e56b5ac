//! Reading the SQLite gateway database: the row decoders and the payment lookups and
//! listings every caller shares. Settlement's rows are read in [`super::settle`], the audit's
//! snapshot in [`super::snapshot`].

use std::sync::LazyLock;

use rusqlite::{Connection, OptionalExtension, Row};
use strife_common::storage::sqlite::CachedStatements;
use strife_common::Failure;

use super::connection::storage;
use crate::lockout::SharedLogin;
use crate::records::{metadata_from_json, LinkedAccount, Party, PaymentRecord, PaymentStatus};

/// The payment columns of schema version 4, which the 3 → 4 migration copies row by row.
macro_rules! payment_columns_v4 {
    () => {
        "seq, payment_id, idempotency_key, from_user, from_bank,
    from_account, to_user, to_bank, to_account, amount_minor, currency, memo, status, reason_code,
    reason, debit_acked, credit_acked, decision_deadline_unix_ms, created_unix_ms, decided_unix_ms,
    coordinator, decision_seq, refund_of, refunded_minor, refund_pending_minor, window_id"
    };
}
pub(super) use payment_columns_v4;

/// The columns [`payment_from_row`] decodes, in its order (a macro so that `SELECT` and
/// `RETURNING` clauses can be built from it at compile time).
macro_rules! payment_columns {
    () => {
        concat!(
            $crate::store::sqlite::read::payment_columns_v4!(),
            ", metadata, expires_unix_ms, authorized_unix_ms, authorized_minor"
        )
    };
}
pub(super) use payment_columns;

/// Every payment listing starts so.
pub(super) const SELECT_PAYMENTS: &str = concat!("SELECT ", payment_columns!(), " FROM payments");

/// One payment, by id.
const SELECT_PAYMENT: &str = concat!(
    "SELECT ",
    payment_columns!(),
    " FROM payments WHERE payment_id = ?1"
);

/// A payment still needing its coordinator: undecided, or a leg has not acknowledged. Matches
/// the partial index `payments_unfinished_by_coordinator` word for word, so SQLite uses it.
pub(super) const UNFINISHED: &str = "(status = 1 OR debit_acked = 0 OR credit_acked = 0)";

pub(super) const SELECT_ACCOUNTS: &str =
    "SELECT username, bank_id, account_number, currency, holder_name FROM accounts";

/// A user's links, oldest first: every payment reads its parties' (formatted once, not per
/// call).
pub(super) static ACCOUNTS_OF_USER: LazyLock<String> = LazyLock::new(|| {
    format!(
        "{SELECT_ACCOUNTS} WHERE username = ?1 ORDER BY linked_unix_ms, bank_id, account_number"
    )
});

pub(super) fn payment_from_row(row: &Row<'_>) -> rusqlite::Result<Result<PaymentRecord, Failure>> {
    let status_code: i64 = row.get(12)?;
    let authorized_unix_ms: Option<i64> = row.get(28)?;
    let Some(status) = PaymentStatus::stored(status_code, authorized_unix_ms.is_some()) else {
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
        metadata: match metadata_from_json(&row.get::<_, String>(26)?) {
            Ok(metadata) => metadata,
            Err(failure) => return Ok(Err(failure)),
        },
        expires_unix_ms: row.get(27)?,
        authorized_unix_ms,
        authorized_minor: row.get(29)?,
    }))
}

pub(super) fn account_from_row(row: &Row<'_>) -> rusqlite::Result<LinkedAccount> {
    Ok(LinkedAccount {
        username: row.get(0)?,
        bank_id: row.get(1)?,
        account_number: row.get(2)?,
        currency: row.get(3)?,
        holder_name: row.get(4)?,
    })
}

pub(super) fn load_payment(
    connection: &Connection,
    payment_id: &str,
) -> Result<Option<PaymentRecord>, Failure> {
    connection
        .query_row_cached(SELECT_PAYMENT, [payment_id], payment_from_row)
        .optional()
        .map_err(storage)?
        .transpose()
}

/// Payments by one cached statement that selects [`SELECT_PAYMENTS`]' columns: the shape of
/// every payment listing.
pub(super) fn read_payments(
    connection: &Connection,
    sql: &str,
    params: impl rusqlite::Params,
) -> Result<Vec<PaymentRecord>, Failure> {
    let mut statement = connection.prepare_cached(sql).map_err(storage)?;
    let rows = statement
        .query_map(params, payment_from_row)
        .map_err(storage)?;
    rows.collect::<Result<Vec<_>, _>>()
        .map_err(storage)?
        .into_iter()
        .collect()
}

pub(super) fn read_login(
    connection: &Connection,
    username: &str,
) -> Result<Option<SharedLogin>, Failure> {
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
