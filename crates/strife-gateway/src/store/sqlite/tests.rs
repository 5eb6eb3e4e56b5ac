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
        refund_of: None,
        refunded_minor: 0,
        refund_pending_minor: 0,
        window_id: None,
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
    // Turn the file into exactly what version 1 wrote: no settlement, no coordinator or
    // decision position, the old index.
    let old = Connection::open(path(&dir)).unwrap();
    old.execute_batch(
        "DROP TABLE settlement_totals;
         DROP INDEX settlement_windows_one_open;
         DROP TABLE settlement_windows;
         DROP TABLE bank_positions;
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

fn across(payment_id: &str, amount_minor: i64) -> PaymentRecord {
    payment_between(
        payment_id,
        ("alice", "bank0"),
        ("bob", "bank1"),
        amount_minor,
    )
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

fn open() -> (tempfile::TempDir, SqliteGatewayStore) {
    let dir = tempfile::tempdir().unwrap();
    let store = SqliteGatewayStore::open(&path(&dir), &identity(&dir)).unwrap();
    (dir, store)
}

#[tokio::test]
async fn a_new_database_has_exactly_one_open_window_1() {
    let (_dir, store) = open();
    let windows = store.windows(i64::MAX, 10).await.unwrap();
    assert_eq!(windows.len(), 1);
    assert_eq!(windows[0].window_id, 1);
    assert_eq!(windows[0].closed_unix_ms, None);
    let report = store.window_report(1).await.unwrap().unwrap();
    assert!(report.totals.is_empty());
    assert_eq!(store.window_report(2).await.unwrap(), None);
}

#[tokio::test]
async fn positions_move_with_cross_bank_commits_only() {
    let (_dir, store) = open();
    let committed = begun(&store, &across("p-1", 1_000)).await;
    assert_eq!(committed.amount_minor, 1_000);
    assert_eq!(
        standing(&store, "bank0").await,
        (0, 1_000, None),
        "reserved"
    );
    assert_eq!(standing(&store, "bank1").await, (0, 0, None));
    let decided = store
        .decide("p-1", PaymentStatus::Committed, None, None)
        .await
        .unwrap();
    assert_eq!(decided.window_id, Some(1));
    assert_eq!(standing(&store, "bank0").await, (1_000, 0, None));
    assert_eq!(standing(&store, "bank1").await, (-1_000, 0, None));

    // A later decider changes nothing (single assignment, and settlement moves only once).
    store
        .decide("p-1", PaymentStatus::Aborted, None, None)
        .await
        .unwrap();
    store
        .decide("p-1", PaymentStatus::Committed, None, None)
        .await
        .unwrap();
    assert_eq!(standing(&store, "bank0").await, (1_000, 0, None));

    begun(&store, &across("p-2", 400)).await;
    let aborted = store
        .decide(
            "p-2",
            PaymentStatus::Aborted,
            Some("insufficient_funds"),
            None,
        )
        .await
        .unwrap();
    assert_eq!(
        aborted.window_id,
        Some(1),
        "every decision lands in a window"
    );
    assert_eq!(
        standing(&store, "bank0").await,
        (1_000, 0, None),
        "released"
    );

    let within = payment_between("p-3", ("alice", "bank0"), ("carol", "bank0"), 700);
    begun(&store, &within).await;
    assert_eq!(
        standing(&store, "bank0").await,
        (1_000, 0, None),
        "no reservation"
    );
    store
        .decide("p-3", PaymentStatus::Committed, None, None)
        .await
        .unwrap();
    assert_eq!(standing(&store, "bank0").await, (1_000, 0, None));

    let report = store.window_report(1).await.unwrap().unwrap();
    assert_eq!(
        report.totals,
        vec![BilateralTotal {
            payer_bank: "bank0".into(),
            payee_bank: "bank1".into(),
            currency: "USD".into(),
            amount_minor: 1_000,
            payments: 1,
        }]
    );
}

#[tokio::test]
async fn a_refusal_under_the_cap_records_nothing_and_the_same_key_pays_once_it_fits() {
    let (_dir, store) = open();
    store
        .set_net_debit_cap("bank0", "USD", Some(1_500))
        .await
        .unwrap();
    begun(&store, &across("p-1", 1_000)).await;
    let refused = store.begin_payment(&across("p-2", 600)).await;
    assert!(
        matches!(&refused, Err(Failure::FailedPrecondition { reason_code, .. })
            if reason_code == "net_debit_cap_exceeded"),
        "{refused:?}"
    );
    assert_eq!(
        store.payment("p-2").await.unwrap(),
        None,
        "nothing recorded"
    );
    assert_eq!(
        store.payment_by_key("alice", "key-p-2").await.unwrap(),
        None,
        "the key stays unused"
    );
    assert_eq!(standing(&store, "bank0").await, (0, 1_000, Some(1_500)));
    // The first one aborts: its reservation is released and the retry (same key) fits.
    store
        .decide("p-1", PaymentStatus::Aborted, Some("bank_timeout"), None)
        .await
        .unwrap();
    begun(&store, &across("p-2", 600)).await;
    assert_eq!(standing(&store, "bank0").await, (0, 600, Some(1_500)));
    // Removing the cap: unlimited again.
    store.set_net_debit_cap("bank0", "USD", None).await.unwrap();
    begun(&store, &across("p-3", 1_000_000)).await;
    assert_eq!(
        store
            .set_net_debit_cap("bank0", "USD", Some(-1))
            .await
            .unwrap_err()
            .code(),
        tonic::Code::InvalidArgument
    );
}

#[tokio::test]
async fn concurrent_payments_cannot_all_slip_under_a_cap() {
    let (_dir, store) = open();
    store
        .set_net_debit_cap("bank0", "USD", Some(3_000))
        .await
        .unwrap();
    let store = Arc::new(store);
    let attempts = (0..10).map(|index| {
        let store = Arc::clone(&store);
        async move {
            store
                .begin_payment(&across(&format!("p-{index}"), 1_000))
                .await
        }
    });
    let results = futures::future::join_all(attempts).await;
    let started = results.iter().filter(|result| result.is_ok()).count();
    assert_eq!(started, 3, "{results:?}");
    assert_eq!(standing(&store, "bank0").await, (0, 3_000, Some(3_000)));
}

#[tokio::test]
async fn closing_a_window_moves_later_decisions_to_the_next_and_never_changes_it() {
    let (_dir, store) = open();
    begun(&store, &across("p-1", 100)).await;
    begun(&store, &across("p-2", 200)).await;
    store
        .decide("p-1", PaymentStatus::Committed, None, None)
        .await
        .unwrap();
    let closed = store.close_window(Some(1)).await.unwrap();
    assert_eq!(closed.window.window_id, 1);
    assert!(closed.window.closed_unix_ms.is_some());
    assert_eq!(closed.totals[0].amount_minor, 100);
    // p-2 was in flight across the close: it lands in window 2.
    let late = store
        .decide("p-2", PaymentStatus::Committed, None, None)
        .await
        .unwrap();
    assert_eq!(late.window_id, Some(2));
    assert_eq!(store.window_report(1).await.unwrap().unwrap(), closed);
    assert_eq!(
        store.window_report(2).await.unwrap().unwrap().totals[0].amount_minor,
        200
    );
    // A retried close of window 1 closes nothing; an unknown window is not found.
    let again = store.close_window(Some(1)).await.unwrap_err();
    assert_eq!(again.reason(), "window_not_open");
    assert_eq!(
        store.close_window(Some(9)).await.unwrap_err().code(),
        tonic::Code::NotFound
    );
    let windows = store.windows(i64::MAX, 10).await.unwrap();
    assert_eq!(
        windows
            .iter()
            .map(|window| window.window_id)
            .collect::<Vec<_>>(),
        vec![2, 1]
    );
    assert_eq!(store.windows(2, 10).await.unwrap().len(), 1, "paged");
}

#[tokio::test]
async fn settling_a_closed_window_reduces_positions_by_its_nets_once() {
    let (_dir, store) = open();
    for (id, from, to, amount) in [
        ("p-1", ("alice", "bank0"), ("bob", "bank1"), 1_000),
        ("p-2", ("bob", "bank1"), ("alice", "bank0"), 300),
        ("p-3", ("bob", "bank1"), ("carol", "bank2"), 100),
    ] {
        begun(&store, &payment_between(id, from, to, amount)).await;
        store
            .decide(id, PaymentStatus::Committed, None, None)
            .await
            .unwrap();
    }
    assert_eq!(
        store.settle_window(1).await.unwrap_err().reason(),
        "window_open"
    );
    store.close_window(None).await.unwrap();
    // A payment in window 2 stays in the positions after window 1 is settled.
    begun(&store, &across("p-4", 50)).await;
    store
        .decide("p-4", PaymentStatus::Committed, None, None)
        .await
        .unwrap();
    assert_eq!(standing(&store, "bank0").await, (750, 0, None));
    assert_eq!(standing(&store, "bank1").await, (-650, 0, None));
    assert_eq!(standing(&store, "bank2").await, (-100, 0, None));
    let settled = store.settle_window(1).await.unwrap();
    assert!(settled.window.settled_unix_ms.is_some());
    assert_eq!(standing(&store, "bank0").await, (50, 0, None));
    assert_eq!(standing(&store, "bank1").await, (-50, 0, None));
    assert_eq!(standing(&store, "bank2").await, (0, 0, None));
    assert_eq!(
        store.settle_window(1).await.unwrap_err().reason(),
        "window_already_settled"
    );
    assert_eq!(
        store.settle_window(7).await.unwrap_err().code(),
        tonic::Code::NotFound
    );
    assert_eq!(
        standing(&store, "bank0").await,
        (50, 0, None),
        "settled once"
    );
}

fn refund(payment_id: &str, original: &PaymentRecord, amount_minor: i64) -> PaymentRecord {
    let mut record = attempt(payment_id, &format!("key-{payment_id}"), "gw");
    record.from = original.to.clone();
    record.to = original.from.clone();
    record.amount_minor = amount_minor;
    record.refund_of = Some(original.payment_id.clone());
    record
}

#[tokio::test]
async fn refunds_claim_against_the_original_and_give_back_what_aborts() {
    let (_dir, store) = open();
    let original = begun(&store, &across("p-1", 1_000)).await;
    let early = store.begin_payment(&refund("r-0", &original, 100)).await;
    assert_eq!(
        early.unwrap_err().reason(),
        "payment_not_committed",
        "a pending payment cannot be refunded"
    );
    let original = store
        .decide("p-1", PaymentStatus::Committed, None, None)
        .await
        .unwrap();

    let first = begun(&store, &refund("r-1", &original, 400)).await;
    assert_eq!(first.refund_of.as_deref(), Some("p-1"));
    let second = begun(&store, &refund("r-2", &original, 0)).await;
    assert_eq!(second.amount_minor, 600, "amount 0 = the rest");
    assert_eq!(
        store
            .begin_payment(&refund("r-3", &original, 1))
            .await
            .unwrap_err()
            .reason(),
        "refund_exceeds_payment"
    );
    // bob's refunds are cross-bank payments from bank1: reserved there.
    assert_eq!(standing(&store, "bank1").await, (-1_000, 1_000, None));

    store
        .decide(
            "r-2",
            PaymentStatus::Aborted,
            Some("insufficient_funds"),
            None,
        )
        .await
        .unwrap();
    store
        .decide("r-1", PaymentStatus::Committed, None, None)
        .await
        .unwrap();
    let original = store.payment("p-1").await.unwrap().unwrap();
    assert_eq!(
        (original.refunded_minor, original.refund_pending_minor),
        (400, 0)
    );
    assert_eq!(standing(&store, "bank1").await, (-600, 0, None));
    assert_eq!(standing(&store, "bank0").await, (600, 0, None));
    // What r-2 claimed is back: the rest can be refunded again.
    let rest = begun(&store, &refund("r-4", &original, 0)).await;
    assert_eq!(rest.amount_minor, 600);
    // A refund of a refund is refused.
    let refunded_refund = store.payment("r-1").await.unwrap().unwrap();
    assert_eq!(
        store
            .begin_payment(&refund("r-5", &refunded_refund, 1))
            .await
            .unwrap_err()
            .reason(),
        "payment_is_a_refund"
    );
}

#[tokio::test]
async fn concurrent_refunds_never_exceed_the_original() {
    let (_dir, store) = open();
    let original = begun(&store, &across("p-1", 1_000)).await;
    let original = {
        let _ = original;
        store
            .decide("p-1", PaymentStatus::Committed, None, None)
            .await
            .unwrap()
    };
    let store = Arc::new(store);
    let attempts = (0..7).map(|index| {
        let store = Arc::clone(&store);
        let request = refund(&format!("r-{index}"), &original, 300);
        async move { store.begin_payment(&request).await }
    });
    let results = futures::future::join_all(attempts).await;
    assert_eq!(results.iter().filter(|result| result.is_ok()).count(), 3);
    assert_eq!(
        store
            .payment("p-1")
            .await
            .unwrap()
            .unwrap()
            .refund_pending_minor,
        900
    );
}

#[tokio::test]
async fn a_version_2_database_migrates_keeping_every_row_with_settlement_derived_from_the_log() {
    let dir = tempfile::tempdir().unwrap();
    let (positions_before, decided_before) = {
        let store = SqliteGatewayStore::open(&path(&dir), &identity(&dir)).unwrap();
        store.insert_user("alice", "client", "hash").await.unwrap();
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
    let old = Connection::open(path(&dir)).unwrap();
    old.execute_batch(
        "DROP TABLE settlement_totals;
         DROP INDEX settlement_windows_one_open;
         DROP TABLE settlement_windows;
         DROP TABLE bank_positions;
         ALTER TABLE payments DROP COLUMN refund_of;
         ALTER TABLE payments DROP COLUMN refunded_minor;
         ALTER TABLE payments DROP COLUMN refund_pending_minor;
         ALTER TABLE payments DROP COLUMN window_id;
         PRAGMA user_version = 2;",
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
