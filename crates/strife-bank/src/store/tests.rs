use std::sync::Arc;

use super::*;

fn identity(dir: &tempfile::TempDir, bank_id: &str, ca: &str, initialize: bool) -> StoreIdentity {
    StoreIdentity::bank(
        &strife_common::layout::Layout::new(dir.path()),
        bank_id,
        ca.into(),
        SCHEMA_VERSION,
        initialize,
    )
}

fn open(dir: &tempfile::TempDir) -> Store {
    try_open(dir, &identity(dir, "bank0", "ca", false)).unwrap()
}

fn try_open(dir: &tempfile::TempDir, identity: &StoreIdentity) -> anyhow::Result<Store> {
    Store::open(&dir.path().join("bank.db"), "bank0", identity)
}

#[test]
fn a_database_opens_only_as_the_bank_and_network_it_was_created_for() {
    let dir = tempfile::tempdir().unwrap();
    drop(open(&dir));
    drop(open(&dir));
    let db = dir.path().join("bank.db").display().to_string();
    let other_bank = try_open(&dir, &identity(&dir, "bank1", "ca", false))
        .err()
        .unwrap();
    let message = format!("{other_bank:#}");
    assert!(
        message.contains("belongs to bank:bank0") && message.contains(&db),
        "{message}"
    );
    let other_ca = try_open(&dir, &identity(&dir, "bank0", "other", false))
        .err()
        .unwrap();
    assert!(
        format!("{other_ca:#}").contains("another CA"),
        "{other_ca:#}"
    );
    let marker = dir.path().join("state").join("bank-bank0.created");
    assert!(marker.exists());
    let newer = Connection::open(dir.path().join("bank.db")).unwrap();
    newer
        .pragma_update(None, "user_version", SCHEMA_VERSION + 1)
        .unwrap();
    drop(newer);
    let refused = try_open(&dir, &identity(&dir, "bank0", "ca", false))
        .err()
        .unwrap();
    assert!(
        format!("{refused:#}").contains("newer than this strife"),
        "{refused:#}"
    );
}

#[test]
fn another_copy_of_the_same_bank_is_refused_by_its_creation_id() {
    let here = tempfile::tempdir().unwrap();
    let elsewhere = tempfile::tempdir().unwrap();
    drop(open(&here));
    drop(open(&elsewhere));
    // Same bank id, same CA, but another creation: e.g. a second installation's file.
    for suffix in ["", "-wal", "-shm"] {
        let _ = std::fs::remove_file(here.path().join(format!("bank.db{suffix}")));
        let from = elsewhere.path().join(format!("bank.db{suffix}"));
        if from.exists() {
            std::fs::copy(&from, here.path().join(format!("bank.db{suffix}"))).unwrap();
        }
    }
    let refused = try_open(&here, &identity(&here, "bank0", "ca", false))
        .err()
        .unwrap();
    let message = format!("{refused:#}");
    assert!(
        message.contains("foreign database") && message.contains("bank.db"),
        "{message}"
    );
}

#[test]
fn a_missing_database_of_a_bank_that_ran_before_needs_initialize() {
    let dir = tempfile::tempdir().unwrap();
    let first_marker = {
        drop(open(&dir));
        std::fs::read_to_string(dir.path().join("state").join("bank-bank0.created")).unwrap()
    };
    for suffix in ["", "-wal", "-shm"] {
        let _ = std::fs::remove_file(dir.path().join(format!("bank.db{suffix}")));
    }
    let refused = try_open(&dir, &identity(&dir, "bank0", "ca", false))
        .err()
        .unwrap();
    let message = format!("{refused:#}");
    assert!(
        message.contains("is missing or empty but bank0 has run before")
            && message.contains("--initialize"),
        "{message}"
    );
    assert!(
        !dir.path().join("bank.db").exists(),
        "a refused start creates nothing"
    );
    drop(try_open(&dir, &identity(&dir, "bank0", "ca", true)).unwrap());
    let second_marker =
        std::fs::read_to_string(dir.path().join("state").join("bank-bank0.created")).unwrap();
    assert_ne!(
        first_marker, second_marker,
        "--initialize rewrote the marker"
    );
    drop(open(&dir));
}

fn new_account(request_id: &str, deposit: i64) -> NewAccount {
    NewAccount {
        request_id: request_id.into(),
        owner: "alice".into(),
        holder_name: "Alice".into(),
        currency: "USD".into(),
        opening_deposit_minor: deposit,
    }
}

fn intent(account_number: &str, amount_minor: i64) -> PrepareIntent {
    PrepareIntent {
        account_number: account_number.into(),
        amount_minor,
        currency: "USD".into(),
        decision_deadline_unix_ms: now_unix_ms() + 60_000,
        owner: String::new(),
    }
}

fn journal_sum(store: &Store, account_number: &str) -> i64 {
    store
        .journal(account_number, 0, 10_000)
        .unwrap()
        .iter()
        .map(|row| row.delta_minor)
        .sum()
}

#[tokio::test]
async fn open_account_is_idempotent_and_journals_the_deposit() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(&dir);
    let first = store
        .open_account(&new_account("r1", 50_000), "test")
        .await
        .unwrap();
    assert_eq!(first.account_number, "bank0-00000001");
    assert_eq!(first.funds.balance_minor, 50_000);
    let again = store
        .open_account(&new_account("r1", 50_000), "test")
        .await
        .unwrap();
    assert_eq!(again, first);
    assert_eq!(store.accounts().unwrap().len(), 1);
    assert_eq!(journal_sum(&store, &first.account_number), 50_000);
    let conflict = store
        .open_account(&new_account("r1", 1), "test")
        .await
        .unwrap_err();
    assert!(matches!(conflict, Failure::InvalidArgument(_)));
    let second = store
        .open_account(&new_account("r2", 0), "test")
        .await
        .unwrap();
    assert_eq!(second.account_number, "bank0-00000002");
    assert!(store
        .journal(&second.account_number, 0, 10)
        .unwrap()
        .is_empty());
}

#[tokio::test]
async fn prepare_commit_moves_money_and_the_journal_rederives_balances() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(&dir);
    let payer = store
        .open_account(&new_account("r1", 10_000), "test")
        .await
        .unwrap();
    let payee = store
        .open_account(&new_account("r2", 0), "test")
        .await
        .unwrap();
    store
        .prepare(
            "p1",
            Role::Debit,
            &intent(&payer.account_number, 2_500),
            "gw",
        )
        .await
        .unwrap();
    store
        .prepare(
            "p1",
            Role::Credit,
            &intent(&payee.account_number, 2_500),
            "gw",
        )
        .await
        .unwrap();
    let held = store.account(&payer.account_number).unwrap();
    assert_eq!(
        (held.funds.balance_minor, held.funds.held_minor),
        (10_000, 2_500)
    );
    store.commit("p1", Role::Debit, "gw").await.unwrap();
    store.commit("p1", Role::Credit, "gw").await.unwrap();
    store.commit("p1", Role::Credit, "gw").await.unwrap();
    let payer_after = store.account(&payer.account_number).unwrap();
    let payee_after = store.account(&payee.account_number).unwrap();
    assert_eq!(
        payer_after.funds,
        AccountFunds {
            balance_minor: 7_500,
            held_minor: 0,
            incoming_minor: 0
        }
    );
    assert_eq!(
        payee_after.funds,
        AccountFunds {
            balance_minor: 2_500,
            held_minor: 0,
            incoming_minor: 0
        }
    );
    assert_eq!(journal_sum(&store, &payer.account_number), 7_500);
    assert_eq!(journal_sum(&store, &payee.account_number), 2_500);
    let payee_journal = store.journal(&payee.account_number, 0, 10).unwrap();
    assert_eq!(payee_journal.len(), 1, "a repeated commit journals nothing");
    assert_eq!(payee_journal[0].payment_id.as_deref(), Some("p1"));
    assert_eq!(payee_journal[0].actor, "gw");
}

#[tokio::test]
async fn abort_releases_the_hold_and_journals_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(&dir);
    let payer = store
        .open_account(&new_account("r1", 1_000), "test")
        .await
        .unwrap();
    store
        .prepare(
            "p1",
            Role::Debit,
            &intent(&payer.account_number, 1_000),
            "gw",
        )
        .await
        .unwrap();
    assert_eq!(
        store
            .account(&payer.account_number)
            .unwrap()
            .funds
            .available_minor(),
        Some(0)
    );
    let aborted = store.abort("p1", Role::Debit, "gw").await.unwrap();
    assert_eq!(aborted.state, LegState::Aborted);
    assert_eq!(
        store
            .account(&payer.account_number)
            .unwrap()
            .funds
            .held_minor,
        0
    );
    assert_eq!(
        store.journal(&payer.account_number, 0, 10).unwrap().len(),
        1,
        "only the deposit"
    );
}

#[tokio::test]
async fn tombstone_and_no_votes_survive_reopen() {
    let dir = tempfile::tempdir().unwrap();
    {
        let store = open(&dir);
        let payer = store
            .open_account(&new_account("r1", 100), "test")
            .await
            .unwrap();
        store.abort("early", Role::Debit, "gw").await.unwrap();
        let no = store
            .prepare(
                "poor",
                Role::Debit,
                &intent(&payer.account_number, 101),
                "gw",
            )
            .await
            .unwrap();
        assert_eq!(no.state, LegState::Aborted);
    }
    let store = open(&dir);
    let late = store
        .prepare("early", Role::Debit, &intent("bank0-00000001", 1), "gw")
        .await
        .unwrap();
    assert_eq!(late.state, LegState::Aborted);
    let no = store.leg("poor", Role::Debit).unwrap().unwrap();
    assert_eq!(
        no.reason.unwrap().code,
        participant::reason::INSUFFICIENT_FUNDS
    );
    assert_eq!(store.account("bank0-00000001").unwrap().funds.held_minor, 0);
}

#[tokio::test]
async fn hundred_concurrent_prepares_hold_exactly_what_is_available() {
    let dir = tempfile::tempdir().unwrap();
    let store = Arc::new(open(&dir));
    let payer = store
        .open_account(&new_account("r1", 50_000), "test")
        .await
        .unwrap();
    let tasks: Vec<_> = (0..100)
        .map(|index| {
            let store = Arc::clone(&store);
            let account_number = payer.account_number.clone();
            tokio::spawn(async move {
                store
                    .prepare(
                        &format!("p{index}"),
                        Role::Debit,
                        &intent(&account_number, 1_000),
                        "gw",
                    )
                    .await
                    .unwrap()
                    .state
            })
        })
        .collect();
    let mut yes = 0;
    for task in tasks {
        if task.await.unwrap() == LegState::Prepared {
            yes += 1;
        }
    }
    assert_eq!(yes, 50);
    let funds = store.account(&payer.account_number).unwrap().funds;
    assert_eq!(funds.held_minor, 50_000);
    assert_eq!(funds.available_minor(), Some(0));
    assert_eq!(store.prepared_legs(None, 1_000).unwrap().len(), 50);
}

#[tokio::test]
async fn storage_refuses_a_negative_available_balance_even_from_raw_sql() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(&dir);
    store
        .open_account(&new_account("r1", 100), "test")
        .await
        .unwrap();
    let connection = Connection::open(dir.path().join("bank.db")).unwrap();
    let result = connection.execute(
        "UPDATE accounts SET held_minor = 101 WHERE account_number = 'bank0-00000001'",
        [],
    );
    assert!(
        result.is_err(),
        "CHECK (balance_minor - held_minor >= 0) must hold"
    );
}

#[tokio::test]
async fn overdue_prepared_legs_are_listed_by_deadline() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(&dir);
    let payer = store
        .open_account(&new_account("r1", 100), "test")
        .await
        .unwrap();
    let mut past = intent(&payer.account_number, 10);
    past.decision_deadline_unix_ms = 1;
    store
        .prepare("old", Role::Debit, &past, "gw")
        .await
        .unwrap();
    store
        .prepare("new", Role::Debit, &intent(&payer.account_number, 10), "gw")
        .await
        .unwrap();
    let overdue = store.prepared_legs(Some(now_unix_ms()), 10).unwrap();
    assert_eq!(overdue.len(), 1);
    assert_eq!(overdue[0].payment_id, "old");
}

/// The bank's metrics as text (counters and the scrape-time gauges read from `store`).
fn metrics_text(store: &Arc<Store>) -> String {
    let mut registry = prometheus_client::registry::Registry::default();
    store.metrics().register(&mut registry, Arc::clone(store));
    strife_common::metrics::render(&registry).unwrap()
}

#[tokio::test]
async fn outstanding_holds_and_leg_states_follow_the_legs() {
    let dir = tempfile::tempdir().unwrap();
    let store = Arc::new(open(&dir));
    let payer = store
        .open_account(&new_account("r1", 1_000), "test")
        .await
        .unwrap();
    let payee = store
        .open_account(&new_account("r2", 0), "test")
        .await
        .unwrap();
    for (payment, amount) in [("p1", 300), ("p2", 200)] {
        store
            .prepare(
                payment,
                Role::Debit,
                &intent(&payer.account_number, amount),
                "gw",
            )
            .await
            .unwrap();
    }
    store
        .prepare(
            "p1",
            Role::Credit,
            &intent(&payee.account_number, 300),
            "gw",
        )
        .await
        .unwrap();
    // A NO vote (more than is available) stores an ABORTED leg and holds nothing.
    store
        .prepare(
            "p3",
            Role::Debit,
            &intent(&payer.account_number, 10_000),
            "gw",
        )
        .await
        .unwrap();
    assert_eq!(
        store.outstanding().unwrap(),
        OutstandingSummary {
            holds: 2,
            held_minor: vec![("USD", 500)],
            prepared_legs: 3,
        }
    );
    let text = metrics_text(&store);
    for line in [
        "strife_bank_holds_outstanding 2\n",
        "strife_bank_holds_outstanding_minor{currency=\"USD\"} 500\n",
        "strife_bank_legs_prepared 3\n",
        "strife_bank_legs_total{state=\"prepared\"} 3\n",
        "strife_bank_legs_total{state=\"aborted\"} 1\n",
    ] {
        assert!(text.contains(line), "{line:?} missing in\n{text}");
    }

    store.commit("p1", Role::Debit, "gw").await.unwrap();
    store.commit("p1", Role::Credit, "gw").await.unwrap();
    store.abort("p2", Role::Debit, "gw").await.unwrap();
    // Repeated steps change nothing and are not counted again.
    store.commit("p1", Role::Debit, "gw").await.unwrap();
    store.abort("p2", Role::Debit, "gw").await.unwrap();
    assert_eq!(store.outstanding().unwrap(), OutstandingSummary::default());
    let text = metrics_text(&store);
    for line in [
        "strife_bank_holds_outstanding 0\n",
        "strife_bank_legs_prepared 0\n",
        "strife_bank_legs_total{state=\"prepared\"} 3\n",
        "strife_bank_legs_total{state=\"committed\"} 2\n",
        "strife_bank_legs_total{state=\"aborted\"} 2\n",
    ] {
        assert!(text.contains(line), "{line:?} missing in\n{text}");
    }
    assert!(!text.contains("alice") && !text.contains("p1"), "{text}");
}
