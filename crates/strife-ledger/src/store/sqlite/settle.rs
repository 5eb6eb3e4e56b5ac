//! Settlement in the SQLite store: the reads and the read-modify-writes that
//! [`crate::settlement`] decides (this module does no arithmetic of its own), executed in the
//! transaction of the write they belong to. The database's single writer runs one write at a
//! time, so a row read here cannot change before it is written back: no row locks and no lock
//! order, unlike PostgreSQL's `settle.rs`.

use std::sync::LazyLock;

use rusqlite::{params, Connection, OptionalExtension, Row};
use strife_common::storage::sqlite::CachedStatements;
use strife_common::Failure;

use super::connection::storage;
use super::read::load_payment;
use crate::records::{
    BilateralTotal, PaymentRecord, PaymentStatus, PositionRecord, WindowRecord, WindowReport,
};
use crate::settlement;

const SELECT_POSITIONS: &str =
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

/// Every position row, by bank and currency.
pub(super) fn read_positions(connection: &Connection) -> Result<Vec<PositionRecord>, Failure> {
    let mut statement = connection
        .prepare_cached(&format!("{SELECT_POSITIONS} ORDER BY bank_id, currency"))
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

/// Writes a position row back, creating it if new.
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

const SELECT_WINDOWS: &str =
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
pub(super) fn read_windows(
    connection: &Connection,
    before: i64,
    limit: u32,
) -> Result<Vec<WindowRecord>, Failure> {
    let mut statement = connection
        .prepare_cached(&format!(
            "{SELECT_WINDOWS} WHERE window_id < ?1 ORDER BY window_id DESC LIMIT ?2"
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
            &format!("{SELECT_WINDOWS} WHERE window_id = ?1"),
            [window_id],
            window_from_row,
        )
        .optional()
        .map_err(storage)
}

/// The open window (the partial unique index allows at most one; the schema creates one and
/// every close opens the next).
pub(super) fn open_window(connection: &Connection) -> Result<WindowRecord, Failure> {
    connection
        .query_row_cached(&OPEN_WINDOW, [], window_from_row)
        .optional()
        .map_err(storage)?
        .ok_or_else(|| Failure::internal("settlement", "no settlement window is open"))
}

const SELECT_TOTALS: &str =
    "SELECT payer_bank, payee_bank, currency, amount_minor, payments FROM settlement_totals";

// Statements every payment runs, formatted once (not per call: each call would allocate).
static POSITION_BY_KEY: LazyLock<String> =
    LazyLock::new(|| format!("{SELECT_POSITIONS} WHERE bank_id = ?1 AND currency = ?2"));
static OPEN_WINDOW: LazyLock<String> =
    LazyLock::new(|| format!("{SELECT_WINDOWS} WHERE closed_unix_ms IS NULL"));
static TOTAL_BY_KEY: LazyLock<String> = LazyLock::new(|| {
    format!(
        "{SELECT_TOTALS} WHERE window_id = ?1 AND payer_bank = ?2 AND payee_bank = ?3
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

/// Window `window_id`'s totals, by payer, payee and currency.
fn read_totals(connection: &Connection, window_id: i64) -> Result<Vec<BilateralTotal>, Failure> {
    let mut statement = connection
        .prepare_cached(&format!(
            "{SELECT_TOTALS} WHERE window_id = ?1 ORDER BY payer_bank, payee_bank, currency"
        ))
        .map_err(storage)?;
    let rows = statement
        .query_map([window_id], total_from_row)
        .map_err(storage)?;
    rows.collect::<Result<_, _>>().map_err(storage)
}

/// Window `window_id` with its totals.
pub(super) fn read_report(
    connection: &Connection,
    window_id: i64,
) -> Result<Option<WindowReport>, Failure> {
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

/// What a new attempt claims in the write that records it ([`crate::store::GatewayStore::begin_payment`]):
/// a refund its amount from its original, a cross-bank payment its reservation. Returns the
/// attempt as it will be recorded (a refund's amount resolved). An `Err` rolls the whole
/// write back.
pub(super) fn claim_for_attempt(
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

/// What a decision moves, in its own write ([`crate::store::GatewayStore::decide`]): positions and the
/// reservation, the window's bilateral total, a refund's original.
pub(super) fn apply_decision(
    transaction: &Connection,
    window_id: i64,
    record: &PaymentRecord,
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

/// Every window with its totals, oldest first (the audit's snapshot).
pub(super) fn read_all_reports(connection: &Connection) -> Result<Vec<WindowReport>, Failure> {
    read_windows(connection, i64::MAX, u32::MAX)?
        .into_iter()
        .rev()
        .map(|window| {
            let totals = read_totals(connection, window.window_id)?;
            Ok(WindowReport { window, totals })
        })
        .collect()
}

/// Sets or removes a cap on the position row as it stands (a zero row if it has none),
/// changing nothing else.
pub(super) fn set_cap(
    connection: &Connection,
    bank_id: &str,
    currency: &str,
    cap_minor: Option<i64>,
) -> Result<PositionRecord, Failure> {
    let position = PositionRecord {
        cap_minor,
        ..load_position(connection, bank_id, currency)?
    };
    write_position(connection, &position)?;
    Ok(position)
}

/// Closes the open window and opens the next, as [`settlement::close`] decides.
pub(super) fn close_window(
    connection: &Connection,
    expected: Option<i64>,
    now_unix_ms: i64,
) -> Result<WindowReport, Failure> {
    let open = open_window(connection)?;
    let target = match expected {
        None => open.clone(),
        Some(window_id) => load_window(connection, window_id)?
            .ok_or_else(|| Failure::NotFound(format!("settlement window {window_id} not found")))?,
    };
    let next = settlement::close(&open, &target)?;
    connection
        .execute_cached(
            "UPDATE settlement_windows SET closed_unix_ms = ?2 WHERE window_id = ?1",
            params![open.window_id, now_unix_ms],
        )
        .map_err(storage)?;
    connection
        .execute_cached(
            "INSERT INTO settlement_windows (window_id, opened_unix_ms) VALUES (?1, ?2)",
            params![next, now_unix_ms],
        )
        .map_err(storage)?;
    read_report(connection, open.window_id)?
        .ok_or_else(|| Failure::internal("settlement", "the closed window vanished"))
}

/// Marks a closed window settled and reduces every bank's position by its net amount in it
/// ([`settlement::settle`], [`settlement::nets`], [`settlement::settle_changes`]).
pub(super) fn settle_window(
    connection: &Connection,
    window_id: i64,
    now_unix_ms: i64,
) -> Result<WindowReport, Failure> {
    let report = read_report(connection, window_id)?
        .ok_or_else(|| Failure::NotFound(format!("settlement window {window_id} not found")))?;
    settlement::settle(&report.window)?;
    let nets = settlement::nets(&report.totals)?;
    apply_position_changes(connection, &settlement::settle_changes(&nets)?)?;
    connection
        .execute_cached(
            "UPDATE settlement_windows SET settled_unix_ms = ?2 WHERE window_id = ?1",
            params![window_id, now_unix_ms],
        )
        .map_err(storage)?;
    read_report(connection, window_id)?
        .ok_or_else(|| Failure::internal("settlement", "the settled window vanished"))
}
