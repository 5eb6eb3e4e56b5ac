//! The audit's snapshot of the PostgreSQL log: every payment and link (decoded by
//! [`super::read`]) and every position and window (read by [`super::settle`]), in one
//! transaction.

use deadpool_postgres::Pool;
use strife_common::Failure;

use super::read::{account_from_row, payment_columns, payment_from_row, ACCOUNT_COLUMNS};
use super::server::{Server, SCAN_TIMEOUT};
use super::settle;
use crate::records::LogSnapshot;

/// Every payment, link, position and window in one REPEATABLE READ transaction: one state of
/// the log.
pub(super) async fn read_snapshot(server: &Server, pool: &Pool) -> Result<LogSnapshot, Failure> {
    const DOING: &str = "reading a snapshot of the log";
    server
        .on(pool, DOING)
        .within(SCAN_TIMEOUT)
        .snapshot(async |transaction, failed| {
            let payments = transaction
                .query(
                    concat!("SELECT ", payment_columns!(), " FROM payments ORDER BY seq"),
                    &[],
                )
                .await
                .map_err(failed)?
                .iter()
                .map(payment_from_row)
                .collect::<Result<Vec<_>, _>>()?;
            let links = transaction
                .query(
                    &format!(
                        "SELECT {ACCOUNT_COLUMNS} FROM accounts
                         ORDER BY linked_unix_ms, bank_id, account_number"
                    ),
                    &[],
                )
                .await
                .map_err(failed)?
                .iter()
                .map(account_from_row)
                .collect::<Result<Vec<_>, _>>()?;
            let positions = settle::read_positions(transaction, failed).await?;
            let windows = settle::read_all_reports(transaction, failed).await?;
            Ok(LogSnapshot {
                payments,
                links,
                positions,
                windows,
            })
        })
        .await
}
