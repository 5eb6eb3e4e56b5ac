//! The audit's snapshot of the SQLite log: every payment and link (decoded by
//! [`super::read`]) and every position and window (read by [`super::settle`]), in one read
//! transaction.

use rusqlite::Connection;
use strife_common::Failure;

use super::connection::storage;
use super::read::{account_from_row, payment_from_row, SELECT_ACCOUNTS, SELECT_PAYMENTS};
use super::settle;
use crate::records::LogSnapshot;

/// Every payment and link in one read transaction, so they describe one state of the log.
pub(super) fn read_snapshot(connection: &Connection) -> Result<LogSnapshot, Failure> {
    let transaction = connection.unchecked_transaction().map_err(storage)?;
    let payments = {
        let mut statement = transaction
            .prepare(&format!("{SELECT_PAYMENTS} ORDER BY seq"))
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
                "{SELECT_ACCOUNTS} ORDER BY linked_unix_ms, bank_id, account_number"
            ))
            .map_err(storage)?;
        let rows = statement.query_map([], account_from_row).map_err(storage)?;
        rows.collect::<Result<Vec<_>, _>>().map_err(storage)?
    };
    let positions = settle::read_positions(&transaction)?;
    let windows = settle::read_all_reports(&transaction)?;
    Ok(LogSnapshot {
        payments,
        links,
        positions,
        windows,
    })
}
