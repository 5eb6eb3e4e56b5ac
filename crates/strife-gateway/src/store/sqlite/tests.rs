use super::*;

fn identity(dir: &tempfile::TempDir) -> StoreIdentity {
    StoreIdentity::gateway(
        &strife_common::layout::Layout::new(dir.path()),
        "ca".into(),
        super::super::SCHEMA_VERSION,
        false,
    )
}

fn path(dir: &tempfile::TempDir) -> std::path::PathBuf {
    dir.path().join("gateway.db")
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
    }
}

#[tokio::test]
async fn a_version_1_database_migrates_and_keeps_its_payments_for_takeover() {
    let dir = tempfile::tempdir().unwrap();
    {
        let store = SqliteGatewayStore::open(&path(&dir), &identity(&dir)).unwrap();
        store.insert_user("alice", "client", "hash").await.unwrap();
        store
            .begin_payment(&attempt("p-1", "k-1", "ignored"))
            .await
            .unwrap();
        store
            .decide("p-1", PaymentStatus::Committed, None, None)
            .await
            .unwrap();
    }
    // Turn the file into exactly what version 1 wrote: no coordinator or decision position,
    // the old index.
    let old = Connection::open(path(&dir)).unwrap();
    old.execute_batch(
        "DROP INDEX payments_unfinished_by_coordinator;
         DROP INDEX payments_by_decision;
         ALTER TABLE payments DROP COLUMN decision_seq;
         ALTER TABLE payments DROP COLUMN coordinator;
         CREATE INDEX payments_unfinished ON payments (seq)
             WHERE status = 1 OR debit_acked = 0 OR credit_acked = 0;
         PRAGMA user_version = 1;",
    )
    .unwrap();
    drop(old);

    let store = SqliteGatewayStore::open(&path(&dir), &identity(&dir)).unwrap();
    let version: i64 = store
        .lock()
        .query_row("PRAGMA user_version", [], |row| row.get(0))
        .unwrap();
    assert_eq!(version, super::super::SCHEMA_VERSION);
    assert!(store.user("alice").await.unwrap().is_some(), "users kept");
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
    let mine = store.unfinished("gw-a", 10).await.unwrap();
    assert_eq!(mine.len(), 1);
    assert!(store.unfinished("gw-b", 10).await.unwrap().is_empty());
}

#[tokio::test]
async fn a_finished_payment_is_never_claimed() {
    let dir = tempfile::tempdir().unwrap();
    let store = SqliteGatewayStore::open(&path(&dir), &identity(&dir)).unwrap();
    store.insert_user("alice", "client", "hash").await.unwrap();
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
