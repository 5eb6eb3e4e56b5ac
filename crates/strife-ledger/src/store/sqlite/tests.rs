use super::*;
use crate::records::Party;

fn identity(dir: &tempfile::TempDir) -> StoreIdentity {
    StoreIdentity::gateway(
        &strife_common::layout::Layout::new(dir.path()),
        "ca".into(),
        SCHEMA_VERSION,
        false,
    )
}

fn path(dir: &tempfile::TempDir) -> std::path::PathBuf {
    dir.path().join("gateway.db")
}

/// A new store in `dir`, with the user alice.
async fn store_with_alice(dir: &tempfile::TempDir) -> SqliteGatewayStore {
    let store = SqliteGatewayStore::open(&path(dir), &identity(dir)).unwrap();
    store.insert_user("alice", "client", "hash").await.unwrap();
    store
}

/// Turns the (closed) database in `dir` into what an older version wrote (`downgrade` ends by
/// setting its `user_version`), then opens it, which migrates it: at the current version,
/// alice kept.
async fn migrated(dir: &tempfile::TempDir, downgrade: &str) -> SqliteGatewayStore {
    let old = Connection::open(path(dir)).unwrap();
    old.execute_batch(downgrade).unwrap();
    drop(old);
    let store = SqliteGatewayStore::open(&path(dir), &identity(dir)).unwrap();
    let version: i64 = store
        .lock()
        .query_row("PRAGMA user_version", [], |row| row.get(0))
        .unwrap();
    assert_eq!(version, SCHEMA_VERSION);
    assert!(store.user("alice").await.unwrap().is_some(), "users kept");
    store
}

fn attempt(payment_id: &str, key: &str, coordinator: &str) -> PaymentRecord {
    let party = |username: &str, bank_id: &str| Party {
        username: username.into(),
        bank_id: bank_id.into(),
        account_number: format!("{username}-1"),
    };
    PaymentRecord {
        seq: 0,
        payment_id: payment_id.into(),
        idempotency_key: key.into(),
        from: party("alice", "bank0"),
        to: party("bob", "bank1"),
        amount_minor: 1_250,
        currency: "USD".into(),
        memo: String::new(),
        metadata: Default::default(),
        status: PaymentStatus::Pending,
        reason_code: None,
        reason: None,
        debit_acked: false,
        credit_acked: false,
        decision_deadline_unix_ms: 10_000,
        created_unix_ms: 1_000,
        decided_unix_ms: None,
        coordinator: coordinator.into(),
        decision_seq: None,
        refund_of: None,
        refunded_minor: 0,
        refund_pending_minor: 0,
        window_id: None,
        expires_unix_ms: None,
        authorized_unix_ms: None,
        authorized_minor: None,
    }
}

#[tokio::test]
async fn a_version_1_database_migrates_and_keeps_its_payments_for_takeover() {
    let dir = tempfile::tempdir().unwrap();
    {
        let store = store_with_alice(&dir).await;
        store
            .begin_payment(&attempt("p-1", "k-1", "ignored"))
            .await
            .unwrap();
        store
            .decide("p-1", PaymentStatus::Committed, None, None)
            .await
            .unwrap();
    }
    // Turn the file into exactly what version 1 wrote: no settlement, no coordinator or
    // decision position, the old index.
    let store = migrated(
        &dir,
        "DROP TABLE settlement_totals;
         DROP INDEX settlement_windows_one_open;
         DROP TABLE settlement_windows;
         DROP TABLE bank_positions;
         DROP INDEX payments_refunds;
         ALTER TABLE payments DROP COLUMN refund_of;
         ALTER TABLE payments DROP COLUMN refunded_minor;
         ALTER TABLE payments DROP COLUMN refund_pending_minor;
         ALTER TABLE payments DROP COLUMN window_id;
         DROP INDEX payments_unfinished_by_coordinator;
         DROP INDEX payments_by_decision;
         ALTER TABLE payments DROP COLUMN decision_seq;
         ALTER TABLE payments DROP COLUMN coordinator;
         CREATE INDEX payments_unfinished ON payments (seq)
             WHERE status = 1 OR debit_acked = 0 OR credit_acked = 0;
         PRAGMA user_version = 1;",
    )
    .await;
    let payment = store.payment("p-1").await.unwrap().unwrap();
    assert_eq!(payment.status, PaymentStatus::Committed, "payments kept");
    assert_eq!(
        payment.coordinator, "",
        "older payments have no coordinator yet"
    );
    // Unacknowledged, so unfinished: it belongs to no live replica and is claimed once.
    assert_eq!(
        store.coordinators_with_unfinished().await.unwrap(),
        vec![String::new()]
    );
    assert_eq!(store.claim("", "gw-a").await.unwrap(), 1);
    assert_eq!(store.claim("", "gw-b").await.unwrap(), 0, "one claimant");
    let mine = store.unfinished("gw-a", i64::MAX, 10).await.unwrap();
    assert_eq!(mine.len(), 1);
    assert!(store
        .unfinished("gw-b", i64::MAX, 10)
        .await
        .unwrap()
        .is_empty());
}

#[tokio::test]
async fn a_finished_payment_is_never_claimed() {
    let dir = tempfile::tempdir().unwrap();
    let store = store_with_alice(&dir).await;
    store
        .begin_payment(&attempt("p-1", "k-1", "gw-dead"))
        .await
        .unwrap();
    store
        .begin_payment(&attempt("p-2", "k-2", "gw-dead"))
        .await
        .unwrap();
    store
        .decide("p-1", PaymentStatus::Aborted, None, None)
        .await
        .unwrap();
    store.acknowledge("p-1", true, true).await.unwrap();
    assert_eq!(store.claim("gw-dead", "gw-live").await.unwrap(), 1);
    assert_eq!(
        store.payment("p-1").await.unwrap().unwrap().coordinator,
        "gw-dead"
    );
    assert_eq!(
        store.payment("p-2").await.unwrap().unwrap().coordinator,
        "gw-live"
    );
}

// The settlement and refund behaviours run against both stores, in the two-store suite
// (crates/strife/tests/e2e/store/gateway_store.rs); here only what is SQLite's own: its migrations.

/// An attempt from `from_user` at `from_bank` to `to_user` at `to_bank`.
fn payment_between(
    payment_id: &str,
    (from_user, from_bank): (&str, &str),
    (to_user, to_bank): (&str, &str),
    amount_minor: i64,
) -> PaymentRecord {
    let mut record = attempt(payment_id, &format!("key-{payment_id}"), "gw");
    record.from = Party {
        username: from_user.into(),
        bank_id: from_bank.into(),
        account_number: format!("{from_bank}-{from_user}"),
    };
    record.to = Party {
        username: to_user.into(),
        bank_id: to_bank.into(),
        account_number: format!("{to_bank}-{to_user}"),
    };
    record.amount_minor = amount_minor;
    record
}

/// (position, reserved, cap) of `bank` in USD; zeros when it has no row.
async fn standing(store: &SqliteGatewayStore, bank: &str) -> (i64, i64, Option<i64>) {
    store
        .positions()
        .await
        .unwrap()
        .into_iter()
        .find(|position| position.bank_id == bank && position.currency == "USD")
        .map_or((0, 0, None), |position| {
            (
                position.position_minor,
                position.reserved_minor,
                position.cap_minor,
            )
        })
}

async fn begun(store: &SqliteGatewayStore, record: &PaymentRecord) -> PaymentRecord {
    match store.begin_payment(record).await.unwrap() {
        Begun::Started(record) => record,
        other => panic!("expected a new attempt, got {other:?}"),
    }
}

#[tokio::test]
async fn a_version_2_database_migrates_keeping_every_row_with_settlement_derived_from_the_log() {
    let dir = tempfile::tempdir().unwrap();
    let (positions_before, decided_before) = {
        let store = store_with_alice(&dir).await;
        store
            .link_account(&LinkedAccount {
                username: "alice".into(),
                bank_id: "bank0".into(),
                account_number: "bank0-alice".into(),
                currency: "USD".into(),
                holder_name: "Alice".into(),
            })
            .await
            .unwrap();
        for (id, from, to, amount, status) in [
            (
                "p-1",
                ("alice", "bank0"),
                ("bob", "bank1"),
                1_000,
                Some(PaymentStatus::Committed),
            ),
            (
                "p-2",
                ("bob", "bank1"),
                ("alice", "bank0"),
                250,
                Some(PaymentStatus::Committed),
            ),
            (
                "p-3",
                ("alice", "bank0"),
                ("bob", "bank1"),
                70,
                Some(PaymentStatus::Aborted),
            ),
            (
                "p-4",
                ("alice", "bank0"),
                ("carol", "bank0"),
                90,
                Some(PaymentStatus::Committed),
            ),
            ("p-5", ("alice", "bank0"), ("bob", "bank1"), 30, None),
        ] {
            begun(&store, &payment_between(id, from, to, amount)).await;
            if let Some(status) = status {
                store.decide(id, status, None, None).await.unwrap();
            }
        }
        let decided = store.decision_head().await.unwrap();
        (store.positions().await.unwrap(), decided)
    };
    // Turn the file into exactly what version 2 wrote: no settlement tables or columns.
    let store = migrated(
        &dir,
        "DROP TABLE settlement_totals;
         DROP INDEX settlement_windows_one_open;
         DROP TABLE settlement_windows;
         DROP TABLE bank_positions;
         DROP INDEX payments_refunds;
         ALTER TABLE payments DROP COLUMN refund_of;
         ALTER TABLE payments DROP COLUMN refunded_minor;
         ALTER TABLE payments DROP COLUMN refund_pending_minor;
         ALTER TABLE payments DROP COLUMN window_id;
         PRAGMA user_version = 2;",
    )
    .await;
    assert_eq!(
        store.accounts_of("alice").await.unwrap().len(),
        1,
        "links kept"
    );
    assert_eq!(store.decision_head().await.unwrap(), decided_before);
    for id in ["p-1", "p-2", "p-3", "p-4"] {
        let payment = store.payment(id).await.unwrap().unwrap();
        assert_eq!(payment.window_id, Some(1), "{id} belongs to window 1");
        assert_eq!(payment.refund_of, None);
        assert_eq!(
            (payment.refunded_minor, payment.refund_pending_minor),
            (0, 0)
        );
    }
    let pending = store.payment("p-5").await.unwrap().unwrap();
    assert_eq!(
        (pending.status, pending.window_id),
        (PaymentStatus::Pending, None)
    );
    assert_eq!(
        store.positions().await.unwrap(),
        positions_before,
        "positions and the pending reservation re-derived"
    );
    assert_eq!(standing(&store, "bank0").await, (750, 30, None));
    let windows = store.windows(i64::MAX, 10).await.unwrap();
    assert_eq!(windows.len(), 1);
    assert_eq!(windows[0].closed_unix_ms, None, "window 1 is open");
    let report = store.window_report(1).await.unwrap().unwrap();
    assert_eq!(
        report
            .totals
            .iter()
            .map(|total| (
                total.payer_bank.as_str(),
                total.amount_minor,
                total.payments
            ))
            .collect::<Vec<_>>(),
        vec![("bank0", 1_000, 1), ("bank1", 250, 1)]
    );
    // The pending payment's reservation is released by its abort (recovery), not twice.
    store
        .decide(
            "p-5",
            PaymentStatus::Aborted,
            Some("gateway_restarted"),
            None,
        )
        .await
        .unwrap();
    assert_eq!(standing(&store, "bank0").await, (750, 0, None));
}
