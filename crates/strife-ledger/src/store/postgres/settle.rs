//! Settlement in the PostgreSQL store: the reads and the locked read-modify-writes that
//! [`crate::settlement`] decides (this module does no arithmetic of its own).
//!
//! # Locks, and the order they are taken in
//!
//! Several gateway replicas write at once, so every settlement write locks what it reads in
//! the transaction that writes it back (module docs of [`crate::store`]). To keep concurrent
//! transactions from waiting on each other in a cycle, every transaction takes its locks in
//! this order, and several rows of one kind sorted (`ORDER BY` is applied before the locking
//! clause, so rows are locked in that order):
//!
//! 1. the open window row, `FOR SHARE` by a decision, `FOR UPDATE` by a close (a settle locks
//!    a closed window instead, which no decision touches);
//! 2. payment rows: the idempotency key's row and the PENDING payments a decision changes,
//!    then the originals of refunds (always COMMITTED, so never among the PENDING ones);
//! 3. position rows, by (bank, currency);
//! 4. bilateral total rows, by (payer, payee, currency).
//!
//! A row that may not exist yet (a position, a total) is first created at zero with `INSERT
//! … ON CONFLICT DO NOTHING` (which waits for a concurrent creator of the same row) and then
//! locked with `SELECT … FOR UPDATE`. A deadlock PostgreSQL detects anyway (say, with a
//! `claim` moving many payments at once) is retried by the callers'
//! transactions ([`super::server::Call::transaction`]).

use std::collections::{BTreeMap, BTreeSet, HashMap};

use deadpool_postgres::GenericClient;
use strife_common::Failure;
use tokio_postgres::Row;

use super::read::{column, payment_columns, payment_from_row, query_rows};
use super::server::Failed;
use crate::records::{
    BilateralTotal, PaymentRecord, PaymentStatus, PositionRecord, WindowRecord, WindowReport,
};
use crate::settlement::{self, PositionChange};

/// (bank, currency).
type PositionKey = (String, String);
/// (payer bank, payee bank, currency).
type TotalKey = (String, String, String);

const POSITION_COLUMNS: &str = "bank_id, currency, position_minor, reserved_minor, cap_minor";
const WINDOW_COLUMNS: &str = "window_id, opened_unix_ms, closed_unix_ms, settled_unix_ms";
const TOTAL_COLUMNS: &str = "payer_bank, payee_bank, currency, amount_minor, payments";

/// How often a transaction reads the open window again when a close committed under it.
const OPEN_WINDOW_READS: usize = 5;

fn position_from_row(row: &Row) -> Result<PositionRecord, Failure> {
    Ok(PositionRecord {
        bank_id: column(row, 0)?,
        currency: column(row, 1)?,
        position_minor: column(row, 2)?,
        reserved_minor: column(row, 3)?,
        cap_minor: column(row, 4)?,
    })
}

fn window_from_row(row: &Row) -> Result<WindowRecord, Failure> {
    Ok(WindowRecord {
        window_id: column(row, 0)?,
        opened_unix_ms: column(row, 1)?,
        closed_unix_ms: column(row, 2)?,
        settled_unix_ms: column(row, 3)?,
    })
}

fn total_from_row(row: &Row) -> Result<BilateralTotal, Failure> {
    Ok(BilateralTotal {
        payer_bank: column(row, 0)?,
        payee_bank: column(row, 1)?,
        currency: column(row, 2)?,
        amount_minor: column(row, 3)?,
        payments: column(row, 4)?,
    })
}

/// How a transaction holds the open window's row.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Hold {
    /// A decision: many at once, none while a close holds the row.
    Share,
    /// A close: alone, after every decision that holds the row has committed.
    Exclusive,
}

/// The open window, its row locked as `hold` says until the transaction ends.
pub(super) async fn lock_open_window<C: GenericClient>(
    client: &C,
    failed: Failed<'_>,
    hold: Hold,
) -> Result<WindowRecord, Failure> {
    let lock = match hold {
        Hold::Share => "FOR SHARE",
        Hold::Exclusive => "FOR UPDATE",
    };
    let statement = client
        .prepare_cached(&format!(
            "SELECT {WINDOW_COLUMNS} FROM settlement_windows WHERE closed_unix_ms IS NULL {lock}"
        ))
        .await
        .map_err(failed)?;
    // READ COMMITTED: when a close commits while this statement waits for the row, the row
    // no longer matches (it is closed) and the window the close opened is newer than this
    // statement's snapshot, so nothing comes back. The next statement sees the new window.
    for _ in 0..OPEN_WINDOW_READS {
        if let Some(row) = client.query_opt(&statement, &[]).await.map_err(failed)? {
            return window_from_row(&row);
        }
    }
    Err(Failure::internal(
        "settlement",
        "no settlement window is open",
    ))
}

/// The position rows of `keys`, created at zero where missing, locked until the transaction
/// ends.
pub(super) async fn lock_positions<C: GenericClient>(
    client: &C,
    failed: Failed<'_>,
    keys: &BTreeSet<PositionKey>,
) -> Result<BTreeMap<PositionKey, PositionRecord>, Failure> {
    if keys.is_empty() {
        return Ok(BTreeMap::new());
    }
    let banks: Vec<&str> = keys.iter().map(|(bank, _)| bank.as_str()).collect();
    let currencies: Vec<&str> = keys.iter().map(|(_, currency)| currency.as_str()).collect();
    let create = client
        .prepare_cached(
            "INSERT INTO bank_positions (bank_id, currency)
             SELECT bank_id, currency FROM unnest($1::text[], $2::text[]) AS k (bank_id, currency)
             ORDER BY bank_id, currency
             ON CONFLICT (bank_id, currency) DO NOTHING",
        )
        .await
        .map_err(failed)?;
    client
        .execute(&create, &[&banks, &currencies])
        .await
        .map_err(failed)?;
    let lock = client
        .prepare_cached(
            "SELECT b.bank_id, b.currency, b.position_minor, b.reserved_minor, b.cap_minor
             FROM bank_positions AS b
             JOIN unnest($1::text[], $2::text[]) AS k (bank_id, currency)
                 ON b.bank_id = k.bank_id AND b.currency = k.currency
             ORDER BY b.bank_id, b.currency
             FOR UPDATE OF b",
        )
        .await
        .map_err(failed)?;
    let locked = client
        .query(&lock, &[&banks, &currencies])
        .await
        .map_err(failed)?
        .iter()
        .map(|row| {
            let position = position_from_row(row)?;
            Ok((
                (position.bank_id.clone(), position.currency.clone()),
                position,
            ))
        })
        .collect::<Result<BTreeMap<_, _>, Failure>>()?;
    if locked.len() != keys.len() {
        return Err(Failure::internal(
            "settlement",
            "a position row vanished between its creation and its lock",
        ));
    }
    Ok(locked)
}

/// Writes positions and reservations back (the rows are locked by this transaction).
pub(super) async fn write_positions<C: GenericClient>(
    client: &C,
    failed: Failed<'_>,
    positions: &BTreeMap<PositionKey, PositionRecord>,
) -> Result<(), Failure> {
    if positions.is_empty() {
        return Ok(());
    }
    let banks: Vec<&str> = positions.values().map(|p| p.bank_id.as_str()).collect();
    let currencies: Vec<&str> = positions.values().map(|p| p.currency.as_str()).collect();
    let amounts: Vec<i64> = positions.values().map(|p| p.position_minor).collect();
    let reserved: Vec<i64> = positions.values().map(|p| p.reserved_minor).collect();
    let statement = client
        .prepare_cached(
            "UPDATE bank_positions AS b
             SET position_minor = u.position_minor, reserved_minor = u.reserved_minor
             FROM unnest($1::text[], $2::text[], $3::bigint[], $4::bigint[])
                 AS u (bank_id, currency, position_minor, reserved_minor)
             WHERE b.bank_id = u.bank_id AND b.currency = u.currency",
        )
        .await
        .map_err(failed)?;
    client
        .execute(&statement, &[&banks, &currencies, &amounts, &reserved])
        .await
        .map_err(failed)?;
    Ok(())
}

/// Applies [`settlement`]'s position changes, each to the row as the previous one left it:
/// locks the rows, changes them in memory, writes them back.
async fn apply_position_changes<C: GenericClient>(
    client: &C,
    failed: Failed<'_>,
    changes: &[PositionChange],
) -> Result<(), Failure> {
    let keys: BTreeSet<PositionKey> = changes
        .iter()
        .map(|change| (change.bank_id.clone(), change.currency.clone()))
        .collect();
    let mut positions = lock_positions(client, failed, &keys).await?;
    for change in changes {
        let key = (change.bank_id.clone(), change.currency.clone());
        let position = positions
            .get_mut(&key)
            .ok_or_else(|| Failure::internal("settlement", "a changed position is not locked"))?;
        *position = change.apply(position)?;
    }
    write_positions(client, failed, &positions).await
}

/// The payments `ids`, locked until the transaction ends.
async fn lock_payments<C: GenericClient>(
    client: &C,
    failed: Failed<'_>,
    ids: &BTreeSet<&str>,
) -> Result<HashMap<String, PaymentRecord>, Failure> {
    if ids.is_empty() {
        return Ok(HashMap::new());
    }
    let ids: Vec<&str> = ids.iter().copied().collect();
    query_rows(
        client,
        failed,
        concat!(
            "SELECT ",
            payment_columns!(),
            " FROM payments WHERE payment_id = ANY($1::text[]) ORDER BY payment_id FOR UPDATE"
        ),
        &[&ids],
        |row| {
            let payment = payment_from_row(row)?;
            Ok((payment.payment_id.clone(), payment))
        },
    )
    .await
}

/// Writes originals' refund amounts back (the rows are locked by this transaction).
async fn write_refund_amounts<C: GenericClient>(
    client: &C,
    failed: Failed<'_>,
    originals: &[&PaymentRecord],
) -> Result<(), Failure> {
    if originals.is_empty() {
        return Ok(());
    }
    let ids: Vec<&str> = originals.iter().map(|p| p.payment_id.as_str()).collect();
    let refunded: Vec<i64> = originals.iter().map(|p| p.refunded_minor).collect();
    let pending: Vec<i64> = originals.iter().map(|p| p.refund_pending_minor).collect();
    let statement = client
        .prepare_cached(
            "UPDATE payments AS p
             SET refunded_minor = u.refunded_minor, refund_pending_minor = u.pending_minor
             FROM unnest($1::text[], $2::bigint[], $3::bigint[])
                 AS u (payment_id, refunded_minor, pending_minor)
             WHERE p.payment_id = u.payment_id",
        )
        .await
        .map_err(failed)?;
    client
        .execute(&statement, &[&ids, &refunded, &pending])
        .await
        .map_err(failed)?;
    Ok(())
}

/// What a new attempt claims in the transaction that records it
/// ([`crate::store::GatewayStore::begin_payment`]): a refund its amount from its original, a
/// cross-bank payment its reservation on the payer bank's position. Returns the attempt as it
/// will be recorded (a refund's amount resolved). An `Err` must roll the transaction back.
pub(super) async fn claim_for_attempt<C: GenericClient>(
    client: &C,
    failed: Failed<'_>,
    mut attempt: PaymentRecord,
) -> Result<PaymentRecord, Failure> {
    if let Some(original_id) = attempt.refund_of.clone() {
        let mut originals =
            lock_payments(client, failed, &BTreeSet::from([original_id.as_str()])).await?;
        let mut original = originals
            .remove(&original_id)
            .ok_or_else(|| Failure::NotFound(format!("payment {original_id} not found")))?;
        let claim = settlement::reserve_refund(&original, &attempt)?;
        original.refund_pending_minor = claim.pending_minor;
        write_refund_amounts(client, failed, &[&original]).await?;
        attempt.amount_minor = claim.amount_minor;
    }
    if settlement::is_cross_bank(&attempt) {
        let key = (attempt.from.bank_id.clone(), attempt.currency.clone());
        let mut positions = lock_positions(client, failed, &BTreeSet::from([key.clone()])).await?;
        let position = positions
            .get_mut(&key)
            .ok_or_else(|| Failure::internal("settlement", "the payer's position is not locked"))?;
        *position = settlement::reserve(position, attempt.amount_minor)?;
        write_positions(client, failed, &positions).await?;
    }
    Ok(attempt)
}

/// What the decisions in `decided` move, in their own transaction
/// ([`crate::store::GatewayStore::decide`]): refunds' originals, positions and reservations,
/// the open window's bilateral totals. `decided` are exactly the payments this transaction
/// changed from PENDING, in decision order; `window_id` is the open window, held `FOR SHARE`.
pub(super) async fn apply_decisions<C: GenericClient>(
    client: &C,
    failed: Failed<'_>,
    window_id: i64,
    decided: &[PaymentRecord],
) -> Result<(), Failure> {
    let original_ids: BTreeSet<&str> = decided
        .iter()
        .filter_map(|payment| payment.refund_of.as_deref())
        .collect();
    let mut originals = lock_payments(client, failed, &original_ids).await?;
    let changes: Vec<PositionChange> = decided
        .iter()
        .flat_map(|payment| settlement::on_decision(payment, payment.status))
        .collect();
    apply_position_changes(client, failed, &changes).await?;
    let committed: Vec<&PaymentRecord> = decided
        .iter()
        .filter(|payment| {
            payment.status == PaymentStatus::Committed && settlement::is_cross_bank(payment)
        })
        .collect();
    add_to_window(client, failed, window_id, &committed).await?;
    for refund in decided {
        let Some(original_id) = &refund.refund_of else {
            continue;
        };
        let original = originals.get_mut(original_id).ok_or_else(|| {
            Failure::internal("refund", format!("original {original_id} vanished"))
        })?;
        let (refunded, pending) =
            settlement::refund_decided(original, refund.amount_minor, refund.status)?;
        original.refunded_minor = refunded;
        original.refund_pending_minor = pending;
    }
    let originals: Vec<&PaymentRecord> = originals.values().collect();
    write_refund_amounts(client, failed, &originals).await
}

/// Adds committed cross-bank payments to window `window_id`'s bilateral totals.
async fn add_to_window<C: GenericClient>(
    client: &C,
    failed: Failed<'_>,
    window_id: i64,
    committed: &[&PaymentRecord],
) -> Result<(), Failure> {
    if committed.is_empty() {
        return Ok(());
    }
    let keys: BTreeSet<TotalKey> = committed
        .iter()
        .map(|payment| {
            (
                payment.from.bank_id.clone(),
                payment.to.bank_id.clone(),
                payment.currency.clone(),
            )
        })
        .collect();
    let mut totals = lock_totals(client, failed, window_id, &keys).await?;
    for payment in committed {
        let key = (
            payment.from.bank_id.clone(),
            payment.to.bank_id.clone(),
            payment.currency.clone(),
        );
        let total = totals.get(&key).cloned().flatten();
        totals.insert(
            key,
            Some(settlement::add_to_total(total.as_ref(), payment)?),
        );
    }
    let totals: Vec<BilateralTotal> = totals.into_values().flatten().collect();
    write_totals(client, failed, window_id, &totals).await
}

/// Window `window_id`'s total rows for `keys`, locked until the transaction ends; `None` for
/// a row that had no payment yet (created empty here, so it can be locked).
async fn lock_totals<C: GenericClient>(
    client: &C,
    failed: Failed<'_>,
    window_id: i64,
    keys: &BTreeSet<TotalKey>,
) -> Result<BTreeMap<TotalKey, Option<BilateralTotal>>, Failure> {
    let payers: Vec<&str> = keys.iter().map(|key| key.0.as_str()).collect();
    let payees: Vec<&str> = keys.iter().map(|key| key.1.as_str()).collect();
    let currencies: Vec<&str> = keys.iter().map(|key| key.2.as_str()).collect();
    let create = client
        .prepare_cached(
            "INSERT INTO settlement_totals (window_id, payer_bank, payee_bank, currency,
                 amount_minor, payments)
             SELECT $1, payer_bank, payee_bank, currency, 0, 0
             FROM unnest($2::text[], $3::text[], $4::text[]) AS k (payer_bank, payee_bank, currency)
             ORDER BY payer_bank, payee_bank, currency
             ON CONFLICT (window_id, payer_bank, payee_bank, currency) DO NOTHING",
        )
        .await
        .map_err(failed)?;
    client
        .execute(&create, &[&window_id, &payers, &payees, &currencies])
        .await
        .map_err(failed)?;
    let lock = client
        .prepare_cached(
            "SELECT t.payer_bank, t.payee_bank, t.currency, t.amount_minor, t.payments
             FROM settlement_totals AS t
             JOIN unnest($2::text[], $3::text[], $4::text[]) AS k (payer_bank, payee_bank, currency)
                 ON t.payer_bank = k.payer_bank AND t.payee_bank = k.payee_bank
                     AND t.currency = k.currency
             WHERE t.window_id = $1
             ORDER BY t.payer_bank, t.payee_bank, t.currency
             FOR UPDATE OF t",
        )
        .await
        .map_err(failed)?;
    let mut locked = BTreeMap::new();
    for row in client
        .query(&lock, &[&window_id, &payers, &payees, &currencies])
        .await
        .map_err(failed)?
    {
        let total = total_from_row(&row)?;
        let key = (
            total.payer_bank.clone(),
            total.payee_bank.clone(),
            total.currency.clone(),
        );
        // A row created empty above stands for "no payment yet", as a missing row would.
        locked.insert(key, (total.payments > 0).then_some(total));
    }
    if locked.len() != keys.len() {
        return Err(Failure::internal(
            "settlement",
            "a bilateral total vanished between its creation and its lock",
        ));
    }
    Ok(locked)
}

async fn write_totals<C: GenericClient>(
    client: &C,
    failed: Failed<'_>,
    window_id: i64,
    totals: &[BilateralTotal],
) -> Result<(), Failure> {
    let payers: Vec<&str> = totals.iter().map(|t| t.payer_bank.as_str()).collect();
    let payees: Vec<&str> = totals.iter().map(|t| t.payee_bank.as_str()).collect();
    let currencies: Vec<&str> = totals.iter().map(|t| t.currency.as_str()).collect();
    let amounts: Vec<i64> = totals.iter().map(|t| t.amount_minor).collect();
    let counts: Vec<i64> = totals.iter().map(|t| t.payments).collect();
    let statement = client
        .prepare_cached(
            "UPDATE settlement_totals AS t SET amount_minor = u.amount_minor, payments = u.payments
             FROM unnest($2::text[], $3::text[], $4::text[], $5::bigint[], $6::bigint[])
                 AS u (payer_bank, payee_bank, currency, amount_minor, payments)
             WHERE t.window_id = $1 AND t.payer_bank = u.payer_bank
                 AND t.payee_bank = u.payee_bank AND t.currency = u.currency",
        )
        .await
        .map_err(failed)?;
    client
        .execute(
            &statement,
            &[&window_id, &payers, &payees, &currencies, &amounts, &counts],
        )
        .await
        .map_err(failed)?;
    Ok(())
}

/// Sets or removes a cap: one statement that creates the row if missing and changes nothing
/// else, so it needs no read (and no arithmetic).
pub(super) async fn set_cap<C: GenericClient>(
    client: &C,
    failed: Failed<'_>,
    bank_id: &str,
    currency: &str,
    cap_minor: Option<i64>,
) -> Result<PositionRecord, Failure> {
    let statement = client
        .prepare_cached(&format!(
            "INSERT INTO bank_positions (bank_id, currency, cap_minor) VALUES ($1, $2, $3)
             ON CONFLICT (bank_id, currency) DO UPDATE SET cap_minor = excluded.cap_minor
             RETURNING {POSITION_COLUMNS}"
        ))
        .await
        .map_err(failed)?;
    let row = client
        .query_one(&statement, &[&bank_id, &currency, &cap_minor])
        .await
        .map_err(failed)?;
    position_from_row(&row)
}

/// Every position row, by bank and currency (byte order, as SQLite sorts).
pub(super) async fn read_positions<C: GenericClient>(
    client: &C,
    failed: Failed<'_>,
) -> Result<Vec<PositionRecord>, Failure> {
    query_rows(
        client,
        failed,
        &format!(
            "SELECT {POSITION_COLUMNS} FROM bank_positions
             ORDER BY bank_id COLLATE \"C\", currency COLLATE \"C\""
        ),
        &[],
        position_from_row,
    )
    .await
}

/// Windows with `window_id < before`, newest first.
pub(super) async fn read_windows<C: GenericClient>(
    client: &C,
    failed: Failed<'_>,
    before: i64,
    limit: i64,
) -> Result<Vec<WindowRecord>, Failure> {
    query_rows(
        client,
        failed,
        &format!(
            "SELECT {WINDOW_COLUMNS} FROM settlement_windows WHERE window_id < $1
             ORDER BY window_id DESC LIMIT $2"
        ),
        &[&before, &limit],
        window_from_row,
    )
    .await
}

/// Window `window_id`, locked `FOR UPDATE` when `lock` (a settle), with its totals.
pub(super) async fn read_report<C: GenericClient>(
    client: &C,
    failed: Failed<'_>,
    window_id: i64,
    lock: bool,
) -> Result<Option<WindowReport>, Failure> {
    let statement = client
        .prepare_cached(&format!(
            "SELECT {WINDOW_COLUMNS} FROM settlement_windows WHERE window_id = $1{}",
            if lock { " FOR UPDATE" } else { "" }
        ))
        .await
        .map_err(failed)?;
    let Some(row) = client
        .query_opt(&statement, &[&window_id])
        .await
        .map_err(failed)?
    else {
        return Ok(None);
    };
    let window = window_from_row(&row)?;
    let totals = query_rows(
        client,
        failed,
        &format!(
            "SELECT {TOTAL_COLUMNS} FROM settlement_totals WHERE window_id = $1
             ORDER BY payer_bank COLLATE \"C\", payee_bank COLLATE \"C\", currency COLLATE \"C\""
        ),
        &[&window_id],
        total_from_row,
    )
    .await?;
    Ok(Some(WindowReport { window, totals }))
}

/// Every window with its totals, oldest first (the audit's snapshot).
pub(super) async fn read_all_reports<C: GenericClient>(
    client: &C,
    failed: Failed<'_>,
) -> Result<Vec<WindowReport>, Failure> {
    let windows = client
        .query(
            format!("SELECT {WINDOW_COLUMNS} FROM settlement_windows ORDER BY window_id").as_str(),
            &[],
        )
        .await
        .map_err(failed)?;
    let mut reports = windows
        .iter()
        .map(|row| {
            let window = window_from_row(row)?;
            Ok((
                window.window_id,
                WindowReport {
                    window,
                    totals: Vec::new(),
                },
            ))
        })
        .collect::<Result<BTreeMap<i64, WindowReport>, Failure>>()?;
    let totals = client
        .query(
            format!(
                "SELECT window_id, {TOTAL_COLUMNS} FROM settlement_totals
                 ORDER BY window_id, payer_bank COLLATE \"C\", payee_bank COLLATE \"C\",
                     currency COLLATE \"C\""
            )
            .as_str(),
            &[],
        )
        .await
        .map_err(failed)?;
    for row in &totals {
        let window_id: i64 = column(row, 0)?;
        let total = BilateralTotal {
            payer_bank: column(row, 1)?,
            payee_bank: column(row, 2)?,
            currency: column(row, 3)?,
            amount_minor: column(row, 4)?,
            payments: column(row, 5)?,
        };
        reports
            .get_mut(&window_id)
            .ok_or_else(|| Failure::internal("settlement", "a total names no window"))?
            .totals
            .push(total);
    }
    Ok(reports.into_values().collect())
}

/// Closes the open window (held `FOR UPDATE`, so every decision stamped with it has
/// committed) and opens the next, as [`settlement::close`] decides.
pub(super) async fn close_window<C: GenericClient>(
    client: &C,
    failed: Failed<'_>,
    expected: Option<i64>,
    now_unix_ms: i64,
) -> Result<WindowReport, Failure> {
    let open = lock_open_window(client, failed, Hold::Exclusive).await?;
    let target = match expected {
        None => open.clone(),
        Some(window_id) => {
            read_report(client, failed, window_id, false)
                .await?
                .ok_or_else(|| {
                    Failure::NotFound(format!("settlement window {window_id} not found"))
                })?
                .window
        }
    };
    let next = settlement::close(&open, &target)?;
    let close = client
        .prepare_cached("UPDATE settlement_windows SET closed_unix_ms = $2 WHERE window_id = $1")
        .await
        .map_err(failed)?;
    client
        .execute(&close, &[&open.window_id, &now_unix_ms])
        .await
        .map_err(failed)?;
    let open_next = client
        .prepare_cached(
            "INSERT INTO settlement_windows (window_id, opened_unix_ms) VALUES ($1, $2)",
        )
        .await
        .map_err(failed)?;
    client
        .execute(&open_next, &[&next, &now_unix_ms])
        .await
        .map_err(failed)?;
    read_report(client, failed, open.window_id, false)
        .await?
        .ok_or_else(|| Failure::internal("settlement", "the closed window vanished"))
}

/// Marks a closed window settled and reduces every bank's position by its net amount in it
/// ([`settlement::settle`], [`settlement::nets`], [`settlement::settle_changes`]).
pub(super) async fn settle_window<C: GenericClient>(
    client: &C,
    failed: Failed<'_>,
    window_id: i64,
    now_unix_ms: i64,
) -> Result<WindowReport, Failure> {
    let report = read_report(client, failed, window_id, true)
        .await?
        .ok_or_else(|| Failure::NotFound(format!("settlement window {window_id} not found")))?;
    settlement::settle(&report.window)?;
    let nets = settlement::nets(&report.totals)?;
    apply_position_changes(client, failed, &settlement::settle_changes(&nets)?).await?;
    let settle = client
        .prepare_cached("UPDATE settlement_windows SET settled_unix_ms = $2 WHERE window_id = $1")
        .await
        .map_err(failed)?;
    client
        .execute(&settle, &[&window_id, &now_unix_ms])
        .await
        .map_err(failed)?;
    read_report(client, failed, window_id, false)
        .await?
        .ok_or_else(|| Failure::internal("settlement", "the settled window vanished"))
}
