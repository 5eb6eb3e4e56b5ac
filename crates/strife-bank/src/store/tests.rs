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
    open_observed(dir, identity, Arc::new(Transitions::default()))
}

fn open_observed(
    dir: &tempfile::TempDir,
    identity: &StoreIdentity,
    observer: Arc<dyn LegObserver>,
) -> anyhow::Result<Store> {
    Store::open(&dir.path().join("bank.db"), "bank0", identity, observer)
}

/// Records the transitions the store reports, in order.
#[derive(Default)]
struct Transitions(Mutex<Vec<LegState>>);

impl LegObserver for Transitions {
    fn leg_entered(&self, state: LegState) {
        self.0
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .push(state);
    }
}

impl Transitions {
    fn count(&self, state: LegState) -> usize {
        let seen = self
            .0
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        seen.iter().filter(|seen| **seen == state).count()
    }
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
        // A -wal or -shm file may go between the check and the copy (the closed store's
        // last checkpoint removes them): then there is nothing to copy.
        match std::fs::copy(&from, here.path().join(format!("bank.db{suffix}"))) {
            Ok(_) => {}
            Err(error) if error.kind() == std::io::ErrorKind::NotFound => {}
            Err(error) => panic!("copying {}: {error}", from.display()),
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
    assert!(matches!(conflict, Failure::InvalidField { ref field, .. } if field == "request_id"));
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
    store.commit("p1", Role::Debit, 0, "gw").await.unwrap();
    store.commit("p1", Role::Credit, 0, "gw").await.unwrap();
    store.commit("p1", Role::Credit, 0, "gw").await.unwrap();
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
        strife_common::reason::INSUFFICIENT_FUNDS
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

/// The bank database as the release before schema versions wrote it: the same tables,
/// `PRAGMA user_version` 0, no `meta`. Frozen here on purpose (not `SCHEMA`), so the test
/// keeps meaning "a file from then" when the schema moves on.
const VERSION_ZERO: &str = "
CREATE TABLE accounts (
    id                    INTEGER PRIMARY KEY,
    account_number        TEXT NOT NULL UNIQUE,
    owner                 TEXT NOT NULL,
    holder_name           TEXT NOT NULL,
    currency              TEXT NOT NULL,
    balance_minor         INTEGER NOT NULL CHECK (balance_minor >= 0),
    held_minor            INTEGER NOT NULL CHECK (held_minor >= 0),
    incoming_minor        INTEGER NOT NULL CHECK (incoming_minor >= 0),
    opening_deposit_minor INTEGER NOT NULL CHECK (opening_deposit_minor >= 0),
    open_request_id       TEXT NOT NULL UNIQUE,
    created_unix_ms       INTEGER NOT NULL,
    CHECK (balance_minor - held_minor >= 0)
);
CREATE TABLE legs (
    payment_id                TEXT NOT NULL,
    role                      INTEGER NOT NULL CHECK (role IN (1, 2)),
    state                     INTEGER NOT NULL CHECK (state IN (1, 2, 3)),
    account_number            TEXT,
    amount_minor              INTEGER CHECK (amount_minor > 0),
    currency                  TEXT,
    decision_deadline_unix_ms INTEGER,
    reason_code               TEXT,
    reason                    TEXT,
    created_unix_ms           INTEGER NOT NULL,
    updated_unix_ms           INTEGER NOT NULL,
    PRIMARY KEY (payment_id, role)
) WITHOUT ROWID;
CREATE INDEX legs_prepared_by_deadline ON legs (decision_deadline_unix_ms) WHERE state = 1;
CREATE TABLE journal (
    seq                 INTEGER PRIMARY KEY AUTOINCREMENT,
    account_number      TEXT NOT NULL REFERENCES accounts (account_number),
    kind                TEXT NOT NULL CHECK (kind IN ('deposit', 'debit', 'credit')),
    delta_minor         INTEGER NOT NULL,
    balance_after_minor INTEGER NOT NULL CHECK (balance_after_minor >= 0),
    payment_id          TEXT,
    actor               TEXT NOT NULL,
    at_unix_ms          INTEGER NOT NULL
);
CREATE INDEX journal_by_account ON journal (account_number, seq);

INSERT INTO accounts VALUES
    (1, 'bank0-00000001', 'alice', 'Alice A.', 'USD', 1000, 300, 0, 1000, 'admin/k1', 11),
    (2, 'bank0-00000002', 'bob', '', 'USD', 50, 0, 300, 50, 'admin/k2', 12),
    (3, 'bank0-00000003', 'carol', 'Carol', 'JPY', 0, 0, 0, 0, 'admin/k3', 13);
INSERT INTO legs VALUES
    ('p1', 1, 1, 'bank0-00000001', 300, 'USD', 4102444800000, NULL, NULL, 20, 20),
    ('p1', 2, 1, 'bank0-00000002', 300, 'USD', 4102444800000, NULL, NULL, 20, 20),
    ('p0', 1, 3, NULL, NULL, NULL, NULL, 'aborted_before_prepare', 'aborted early', 19, 19),
    ('p9', 1, 2, 'bank0-00000001', 1, 'USD', 5, NULL, NULL, 18, 18);
INSERT INTO journal (account_number, kind, delta_minor, balance_after_minor, payment_id, actor,
                     at_unix_ms) VALUES
    ('bank0-00000001', 'deposit', 1001, 1001, NULL, 'admin', 11),
    ('bank0-00000002', 'deposit', 50, 50, NULL, 'admin', 12),
    ('bank0-00000001', 'debit', -1, 1000, 'p9', 'gateway', 18);
";

/// Every row of `table`, every column as text (NULL as `None`), in primary-key order.
fn dump(connection: &Connection, table: &str, order: &str) -> Vec<Vec<Option<String>>> {
    let mut statement = connection
        .prepare(&format!("SELECT * FROM {table} ORDER BY {order}"))
        .unwrap();
    let columns = statement.column_count();
    statement
        .query_map([], |row| {
            (0..columns)
                .map(|index| {
                    Ok(match row.get_ref(index)? {
                        rusqlite::types::ValueRef::Null => None,
                        rusqlite::types::ValueRef::Integer(value) => Some(value.to_string()),
                        rusqlite::types::ValueRef::Text(text) => {
                            Some(String::from_utf8_lossy(text).into_owned())
                        }
                        other => Some(format!("{other:?}")),
                    })
                })
                .collect()
        })
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap()
}

const TABLES: [(&str, &str); 3] = [
    ("accounts", "id"),
    ("legs", "payment_id, role"),
    ("journal", "seq"),
];

#[tokio::test]
async fn a_version_zero_database_migrates_and_keeps_every_row() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("bank.db");
    let before: Vec<_> = {
        let connection = Connection::open(&path).unwrap();
        connection.execute_batch(VERSION_ZERO).unwrap();
        TABLES
            .iter()
            .map(|(table, order)| dump(&connection, table, order))
            .collect()
    };
    {
        let store = open(&dir);
        // The migrated bank works on: the PREPARED payment commits, the journal re-derives.
        store.commit("p1", Role::Debit, 0, "gw").await.unwrap();
        store.commit("p1", Role::Credit, 0, "gw").await.unwrap();
        assert_eq!(
            store.account("bank0-00000001").unwrap().funds.balance_minor,
            700
        );
        assert_eq!(
            store.account("bank0-00000002").unwrap().funds.balance_minor,
            350
        );
        assert_eq!(journal_sum(&store, "bank0-00000001"), 700);
        let next = store
            .open_account(&new_account("admin/k4", 0), "test")
            .await
            .unwrap();
        assert_eq!(
            next.account_number, "bank0-00000004",
            "numbers never reused"
        );
    }
    let connection = Connection::open(&path).unwrap();
    let version: i64 = connection
        .query_row("PRAGMA user_version", [], |row| row.get(0))
        .unwrap();
    assert_eq!(version, SCHEMA_VERSION);
    let owner: String = connection
        .query_row("SELECT value FROM meta WHERE key = 'identity'", [], |row| {
            row.get(0)
        })
        .unwrap();
    assert_eq!(owner, "bank:bank0");
    // Every row from before is still there, unchanged except for what the commits did.
    let after: Vec<_> = TABLES
        .iter()
        .map(|(table, order)| dump(&connection, table, order))
        .collect();
    let accounts_after = &after[0];
    assert_eq!(accounts_after.len(), 4);
    for (old, new) in before[0].iter().zip(accounts_after) {
        // id, number, owner, holder, currency, …, opening deposit, request id, created.
        for column in [0, 1, 2, 3, 4, 8, 9, 10] {
            assert_eq!(old[column], new[column], "accounts column {column}");
        }
    }
    let legs_after = &after[1];
    for old in &before[1] {
        let new = legs_after
            .iter()
            .find(|new| new[0] == old[0] && new[1] == old[1])
            .expect("leg kept");
        // Everything but the state (p1 committed since) and its update time.
        for column in [0, 1, 3, 4, 5, 6, 7, 8, 9] {
            assert_eq!(old[column], new[column], "legs column {column}");
        }
    }
    assert_eq!(legs_after.len(), before[1].len());
    assert_eq!(&after[2][..before[2].len()], &before[2][..], "journal kept");
}

#[test]
fn a_database_from_a_newer_strife_is_refused_naming_the_file_and_versions() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("bank.db");
    drop(open(&dir));
    let newer = Connection::open(&path).unwrap();
    newer
        .pragma_update(None, "user_version", SCHEMA_VERSION + 1)
        .unwrap();
    drop(newer);
    let refused = try_open(&dir, &identity(&dir, "bank0", "ca", false))
        .err()
        .unwrap();
    let message = format!("{refused:#}");
    assert!(
        message.contains(&path.display().to_string())
            && message.contains(&format!("schema version {}", SCHEMA_VERSION + 1))
            && message.contains(&format!("({SCHEMA_VERSION})")),
        "{message}"
    );
}

#[test]
fn currencies_are_bounded() {
    assert_eq!(currency_label("USD"), "USD");
    assert_eq!(currency_label("XXX"), "other");
}

#[tokio::test]
async fn outstanding_holds_and_reported_transitions_follow_the_legs() {
    let dir = tempfile::tempdir().unwrap();
    let transitions = Arc::new(Transitions::default());
    let store = open_observed(
        &dir,
        &identity(&dir, "bank0", "ca", false),
        Arc::clone(&transitions) as Arc<dyn LegObserver>,
    )
    .unwrap();
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
    assert_eq!(transitions.count(LegState::Prepared), 3);
    assert_eq!(transitions.count(LegState::Aborted), 1);

    store.commit("p1", Role::Debit, 0, "gw").await.unwrap();
    store.commit("p1", Role::Credit, 0, "gw").await.unwrap();
    store.abort("p2", Role::Debit, "gw").await.unwrap();
    // Repeated steps change nothing and are not reported again.
    store.commit("p1", Role::Debit, 0, "gw").await.unwrap();
    store.abort("p2", Role::Debit, "gw").await.unwrap();
    assert_eq!(store.outstanding().unwrap(), OutstandingSummary::default());
    assert_eq!(transitions.count(LegState::Prepared), 3);
    assert_eq!(transitions.count(LegState::Committed), 2);
    assert_eq!(transitions.count(LegState::Aborted), 2);
}

/// The 1 → 2 rebuild keeps the constraints: the same bad states and kinds are refused by a
/// migrated file, and journal ids keep growing from the largest one (never reused).
#[test]
fn migrated_tables_refuse_what_the_old_ones_refused_and_keep_their_ids_growing() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("bank.db");
    Connection::open(&path)
        .unwrap()
        .execute_batch(VERSION_ZERO)
        .unwrap();
    drop(open(&dir));
    let connection = Connection::open(&path).unwrap();
    // As the store's own connections run (foreign keys are per connection).
    connection
        .pragma_update(None, "foreign_keys", "ON")
        .unwrap();
    let schema: String = connection
        .query_row(
            "SELECT group_concat(sql, ';') FROM sqlite_master WHERE name IN ('legs', 'journal')",
            [],
            |row| row.get(0),
        )
        .unwrap();
    assert!(!schema.contains(" IN ("), "{schema}");
    assert!(!schema.contains("AUTOINCREMENT"), "{schema}");
    let bad_state = connection.execute(
        "INSERT INTO legs (payment_id, role, state, created_unix_ms, updated_unix_ms)
         VALUES ('x', 1, 4, 1, 1)",
        [],
    );
    assert!(bad_state.is_err(), "state 4 was accepted");
    let bad_role = connection.execute(
        "INSERT INTO legs (payment_id, role, state, created_unix_ms, updated_unix_ms)
         VALUES ('x', 3, 1, 1, 1)",
        [],
    );
    assert!(bad_role.is_err(), "role 3 was accepted");
    let bad_kind = connection.execute(
        "INSERT INTO journal (account_number, kind, delta_minor, balance_after_minor, actor,
             at_unix_ms) VALUES ('bank0-00000001', 'refund', 1, 1, 'x', 1)",
        [],
    );
    assert!(bad_kind.is_err(), "kind 'refund' was accepted");
    let orphan = connection.execute(
        "INSERT INTO journal (account_number, kind, delta_minor, balance_after_minor, actor,
             at_unix_ms) VALUES ('bank0-99999999', 'debit', 1, 1, 'x', 1)",
        [],
    );
    assert!(orphan.is_err(), "a journal row for no account was accepted");
    connection
        .execute(
            "INSERT INTO journal (account_number, kind, delta_minor, balance_after_minor, actor,
                 at_unix_ms) VALUES ('bank0-00000001', 'credit', 1, 1, 'x', 1)",
            [],
        )
        .unwrap();
    assert_eq!(
        connection.last_insert_rowid(),
        4,
        "after the three old rows"
    );
}
