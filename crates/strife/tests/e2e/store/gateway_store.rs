//! One suite, two stores: the gateway store's behaviour, written once against
//! `&dyn GatewayStore`, run against SQLite and against a real PostgreSQL. Each behaviour gets
//! a fresh store (a new SQLite file, or a new database on the one PostgreSQL server of the
//! test). Then what only a shared database server has: schema identity and migrations, two
//! store instances (future replicas) on one database, outages, TLS and credentials.

use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Arc;

use strife_common::layout::Layout;
use strife_common::storage::store_identity::StoreIdentity;
use strife_common::Failure;
use strife_ledger::records::{
    ApiKeyRecord, Begun, BilateralTotal, LinkedAccount, Party, PaymentRecord, PaymentStatus,
};
use strife_ledger::store::{
    self, GatewayLog, GatewayStore, PostgresGatewayLog, PostgresGatewayStore, PostgresLocation,
    SqliteGatewayStore, StoreLocation,
};

use crate::support::postgres::{Postgres, ServerTls};

const CA: &str = "ca-fingerprint-of-this-network";

type Opened = Pin<Box<dyn Future<Output = Arc<dyn GatewayStore>>>>;

/// Opens a fresh, empty store for each behaviour.
trait Fresh {
    fn fresh(&self) -> Opened;
}

struct FreshSqlite {
    root: tempfile::TempDir,
    count: AtomicU32,
}

impl Fresh for FreshSqlite {
    fn fresh(&self) -> Opened {
        let dir = self.root.path().join(format!(
            "store-{}",
            self.count.fetch_add(1, Ordering::Relaxed)
        ));
        Box::pin(async move {
            let layout = Layout::new(&dir);
            let identity = identity(&layout, CA, false);
            let store = SqliteGatewayStore::open(&layout.gateway_db(), &identity).unwrap();
            Arc::new(store) as Arc<dyn GatewayStore>
        })
    }
}

struct FreshPostgres {
    server: Arc<Postgres>,
    layout: tempfile::TempDir,
    count: AtomicU32,
}

impl Fresh for FreshPostgres {
    fn fresh(&self) -> Opened {
        let name = format!("suite{}", self.count.fetch_add(1, Ordering::Relaxed));
        let server = Arc::clone(&self.server);
        let layout = Layout::new(self.layout.path());
        Box::pin(async move {
            let database = server.create_database(&name).await;
            let location = PostgresLocation::parse(&database.url()).unwrap();
            let store = PostgresGatewayStore::open(&location, &identity(&layout, CA, true))
                .await
                .unwrap();
            Arc::new(store) as Arc<dyn GatewayStore>
        })
    }
}

fn identity(layout: &Layout, ca: &str, initialize: bool) -> StoreIdentity {
    store::identity(layout, ca.to_owned(), initialize)
}

fn party(user: &str, bank: &str) -> Party {
    Party {
        username: user.into(),
        bank_id: bank.into(),
        account_number: format!("{bank}-{user}"),
    }
}

fn attempt(payment_id: &str, from: &str, to: &str, key: &str) -> PaymentRecord {
    PaymentRecord {
        seq: 0,
        payment_id: payment_id.into(),
        idempotency_key: key.into(),
        from: party(from, "bank0"),
        to: party(to, "bank1"),
        amount_minor: 1_250,
        currency: "USD".into(),
        memo: "lunch".into(),
        metadata: Default::default(),
        status: PaymentStatus::Pending,
        reason_code: None,
        reason: None,
        debit_acked: false,
        credit_acked: false,
        decision_deadline_unix_ms: 4_000_000_000_000,
        created_unix_ms: 1_700_000_000_000,
        decided_unix_ms: None,
        coordinator: REPLICA.into(),
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

/// Metadata for the `index`th payment of a test: none for every other one, and text that
/// needs escaping in JSON for the rest.
fn tags(index: i64) -> strife_ledger::records::Metadata {
    if index % 2 == 0 {
        return Default::default();
    }
    [
        ("order".to_owned(), format!("A-{index}")),
        ("note".to_owned(), "\"quoted\" \\ Zoë €".to_owned()),
    ]
    .into()
}

/// The replica every suite attempt is recorded by.
const REPLICA: &str = "gw-a";

fn link(user: &str, bank: &str, number: &str, holder: &str) -> LinkedAccount {
    LinkedAccount {
        username: user.into(),
        bank_id: bank.into(),
        account_number: number.into(),
        currency: "USD".into(),
        holder_name: holder.into(),
    }
}

async fn started(store: &dyn GatewayStore, attempt: &PaymentRecord) -> PaymentRecord {
    match store.begin_payment(attempt).await.unwrap() {
        Begun::Started(record) => record,
        other => panic!("expected a new attempt, got {other:?}"),
    }
}

async fn users_and_links(store: Arc<dyn GatewayStore>) {
    let store = store.as_ref();
    assert_eq!(store.user("alice").await.unwrap(), None);
    store
        .insert_user("alice", "client", "hash-a")
        .await
        .unwrap();
    store.insert_user("bob", "admin", "hash-b").await.unwrap();
    let alice = store.user("alice").await.unwrap().unwrap();
    assert_eq!(
        (
            alice.username.as_str(),
            alice.role.as_str(),
            alice.password_hash.as_str()
        ),
        ("alice", "client", "hash-a")
    );
    let again = store.insert_user("alice", "client", "other").await;
    assert!(matches!(again, Err(Failure::AlreadyExists(_))), "{again:?}");
    assert_eq!(
        store.user("alice").await.unwrap().unwrap().password_hash,
        "hash-a"
    );

    assert!(store.accounts_of("alice").await.unwrap().is_empty());
    store
        .link_account(&link("alice", "bank1", "A-2", "Alice"))
        .await
        .unwrap();
    store
        .link_account(&link("alice", "bank0", "A-1", "Alice"))
        .await
        .unwrap();
    // Relinking by the owner updates the holder name only.
    store
        .link_account(&link("alice", "bank1", "A-2", "Alice L."))
        .await
        .unwrap();
    let accounts = store.accounts_of("alice").await.unwrap();
    assert_eq!(accounts.len(), 2);
    assert!(accounts.contains(&link("alice", "bank1", "A-2", "Alice L.")));
    assert!(accounts.contains(&link("alice", "bank0", "A-1", "Alice")));
    // Another user can never take a linked account.
    let taken = store
        .link_account(&link("bob", "bank1", "A-2", "Bob"))
        .await;
    assert!(matches!(taken, Err(Failure::AlreadyExists(_))), "{taken:?}");
    assert!(store.accounts_of("bob").await.unwrap().is_empty());
    assert_eq!(
        store.accounts_of("alice").await.unwrap().len(),
        2,
        "the owner keeps it"
    );
}

async fn idempotency(store: Arc<dyn GatewayStore>) {
    let store = store.as_ref();
    let first = attempt("p1", "alice", "bob", "k1");
    let recorded = started(store, &first).await;
    assert!(recorded.seq > 0);
    assert_eq!(
        recorded,
        PaymentRecord {
            seq: recorded.seq,
            ..first.clone()
        }
    );
    assert_eq!(store.payment("p1").await.unwrap().as_ref(), Some(&recorded));
    assert_eq!(
        store.payment_by_key("alice", "k1").await.unwrap().as_ref(),
        Some(&recorded)
    );
    // Keys are per user.
    assert_eq!(store.payment_by_key("bob", "k1").await.unwrap(), None);
    assert_eq!(store.payment_by_key("alice", "k2").await.unwrap(), None);

    // Same key, same request, still running: in flight, nothing recorded.
    let retry = attempt("p1-retry", "alice", "bob", "k1");
    match store.begin_payment(&retry).await.unwrap() {
        Begun::InFlight(record) => assert_eq!(record.payment_id, "p1"),
        other => panic!("{other:?}"),
    }
    assert_eq!(store.payment("p1-retry").await.unwrap(), None);
    // Same key, other parameters: refused.
    let other = PaymentRecord {
        amount_minor: 999,
        ..attempt("p1-other", "alice", "bob", "k1")
    };
    let conflict = store.begin_payment(&other).await;
    assert!(
        matches!(&conflict, Err(Failure::InvalidField { field, message })
            if field == "idempotency_key" && message.contains("k1")),
        "{conflict:?}"
    );

    // Committed: replayed unchanged.
    let committed = store
        .decide("p1", PaymentStatus::Committed, None, None)
        .await
        .unwrap();
    match store.begin_payment(&retry).await.unwrap() {
        Begun::Finished(record) => assert_eq!(record, committed),
        other => panic!("{other:?}"),
    }

    // A business refusal is final too.
    started(store, &attempt("p2", "alice", "bob", "k2")).await;
    let refused = store
        .decide(
            "p2",
            PaymentStatus::Aborted,
            Some("insufficient_funds"),
            Some("not enough"),
        )
        .await
        .unwrap();
    match store
        .begin_payment(&attempt("p2-retry", "alice", "bob", "k2"))
        .await
        .unwrap()
    {
        Begun::Finished(record) => assert_eq!(record, refused),
        other => panic!("{other:?}"),
    }

    // Aborted for a transient reason: the retry runs a new attempt under the same key.
    started(store, &attempt("p3", "alice", "bob", "k3")).await;
    store
        .decide(
            "p3",
            PaymentStatus::Aborted,
            Some("bank_timeout"),
            Some("bank0 did not answer"),
        )
        .await
        .unwrap();
    let again = started(store, &attempt("p3-again", "alice", "bob", "k3")).await;
    assert_eq!(again.payment_id, "p3-again");
    assert_eq!(again.status, PaymentStatus::Pending);
    assert_eq!(
        store
            .payment_by_key("alice", "k3")
            .await
            .unwrap()
            .map(|record| record.payment_id),
        Some("p3-again".into())
    );
    assert_eq!(
        store
            .payment("p3")
            .await
            .unwrap()
            .map(|record| record.status),
        Some(PaymentStatus::Aborted),
        "the old attempt stays in the log"
    );
}

async fn one_key_raced(store: Arc<dyn GatewayStore>) {
    let tasks: Vec<_> = (0..24)
        .map(|index| {
            let store = Arc::clone(&store);
            tokio::spawn(async move {
                store
                    .begin_payment(&attempt(&format!("race-{index}"), "alice", "bob", "hot"))
                    .await
            })
        })
        .collect();
    let mut started = Vec::new();
    for task in tasks {
        match task.await.unwrap().unwrap() {
            Begun::Started(record) => started.push(record.payment_id),
            Begun::InFlight(_) => {}
            Begun::Finished(record) => panic!("nothing was decided: {record:?}"),
        }
    }
    assert_eq!(started.len(), 1, "one key, one attempt: {started:?}");
    let logged: Vec<_> = store
        .snapshot()
        .await
        .unwrap()
        .payments
        .into_iter()
        .filter(|payment| payment.idempotency_key == "hot")
        .collect();
    assert_eq!(logged.len(), 1);
    assert_eq!(logged[0].payment_id, started[0]);
}

async fn decisions(store: Arc<dyn GatewayStore>) {
    let missing = store
        .decide("nope", PaymentStatus::Committed, None, None)
        .await;
    assert!(matches!(missing, Err(Failure::NotFound(_))), "{missing:?}");

    started(store.as_ref(), &attempt("d1", "alice", "bob", "dk1")).await;
    let first = store
        .decide("d1", PaymentStatus::Committed, None, None)
        .await
        .unwrap();
    assert_eq!(first.status, PaymentStatus::Committed);
    assert!(first.decided_unix_ms.is_some());
    let second = store
        .decide(
            "d1",
            PaymentStatus::Aborted,
            Some("decision_timeout"),
            Some("late"),
        )
        .await
        .unwrap();
    assert_eq!(second, first, "a decision is written once");

    // Racing deciders with opposite decisions all get the first one. A decider the store
    // answers UNAVAILABLE (24 of them queue on one row; on a loaded machine one may pass the
    // store call's bound) retries, as every caller of the store does.
    started(store.as_ref(), &attempt("d2", "alice", "bob", "dk2")).await;
    let racers: Vec<_> = (0..24)
        .map(|index| {
            let store = Arc::clone(&store);
            tokio::spawn(async move {
                let (status, code) = if index % 2 == 0 {
                    (PaymentStatus::Committed, None)
                } else {
                    (PaymentStatus::Aborted, Some("decision_timeout"))
                };
                let mut tries = 0;
                loop {
                    tries += 1;
                    match store.decide("d2", status, code, code).await {
                        Err(Failure::Unavailable(_)) if tries < 20 => {
                            tokio::time::sleep(std::time::Duration::from_millis(50)).await
                        }
                        decided => return decided,
                    }
                }
            })
        })
        .collect();
    let mut seen = Vec::new();
    for racer in racers {
        seen.push(racer.await.unwrap().unwrap());
    }
    assert!(seen.windows(2).all(|pair| pair[0] == pair[1]), "{seen:?}");
    assert_eq!(store.payment("d2").await.unwrap().as_ref(), Some(&seen[0]));

    // Many payments decided at once each keep their own decision.
    for index in 0..40 {
        started(
            store.as_ref(),
            &attempt(&format!("m{index}"), "alice", "bob", &format!("mk{index}")),
        )
        .await;
    }
    let deciders: Vec<_> = (0..40)
        .map(|index| {
            let store = Arc::clone(&store);
            tokio::spawn(async move {
                let status = if index % 3 == 0 {
                    PaymentStatus::Aborted
                } else {
                    PaymentStatus::Committed
                };
                let decided = store
                    .decide(&format!("m{index}"), status, None, Some("why"))
                    .await
                    .unwrap();
                (index, status, decided)
            })
        })
        .collect();
    for decider in deciders {
        let (index, status, decided) = decider.await.unwrap();
        assert_eq!(decided.payment_id, format!("m{index}"));
        assert_eq!(decided.status, status);
        assert_eq!(decided.reason.as_deref(), Some("why"));
    }
}

async fn acknowledgements_and_unfinished(store: Arc<dyn GatewayStore>) {
    let store = store.as_ref();
    for (id, key) in [("u1", "uk1"), ("u2", "uk2"), ("u3", "uk3")] {
        started(store, &attempt(id, "alice", "bob", key)).await;
    }
    // Acknowledging a PENDING payment changes nothing.
    store.acknowledge("u1", true, true).await.unwrap();
    let unfinished = |list: Vec<PaymentRecord>| -> Vec<String> {
        list.into_iter().map(|record| record.payment_id).collect()
    };
    assert_eq!(
        unfinished(store.unfinished(REPLICA, i64::MAX, 10).await.unwrap()),
        ["u1", "u2", "u3"]
    );
    assert_eq!(
        unfinished(store.unfinished(REPLICA, i64::MAX, 2).await.unwrap()),
        ["u1", "u2"]
    );
    let u1 = store.payment("u1").await.unwrap().unwrap();
    assert!(!u1.debit_acked && !u1.credit_acked);

    store
        .decide("u1", PaymentStatus::Committed, None, None)
        .await
        .unwrap();
    store
        .decide("u2", PaymentStatus::Aborted, None, None)
        .await
        .unwrap();
    store.acknowledge("u1", true, false).await.unwrap();
    // A flag already set stays set.
    store.acknowledge("u1", false, true).await.unwrap();
    let u1 = store.payment("u1").await.unwrap().unwrap();
    assert!(u1.debit_acked && u1.credit_acked);
    store.acknowledge("u2", false, true).await.unwrap();
    let u2 = store.payment("u2").await.unwrap().unwrap();
    assert!(!u2.debit_acked && u2.credit_acked);
    assert_eq!(
        unfinished(store.unfinished(REPLICA, i64::MAX, 10).await.unwrap()),
        ["u2", "u3"]
    );
    store.acknowledge("unknown", true, true).await.unwrap();
}

async fn history_and_snapshot(store: Arc<dyn GatewayStore>) {
    let store = store.as_ref();
    store.insert_user("alice", "client", "h").await.unwrap();
    store.insert_user("bob", "client", "h").await.unwrap();
    store
        .link_account(&link("alice", "bank0", "bank0-alice", "A"))
        .await
        .unwrap();
    store
        .link_account(&link("bob", "bank1", "bank1-bob", "B"))
        .await
        .unwrap();
    // alice → bob, bob → alice, carol → dave (not theirs), alternating.
    let mut ids = Vec::new();
    for index in 0..7 {
        let (from, to) = match index % 3 {
            0 => ("alice", "bob"),
            1 => ("bob", "alice"),
            _ => ("carol", "dave"),
        };
        let id = format!("h{index}");
        let mut payment = attempt(&id, from, to, &format!("hk{index}"));
        payment.metadata = tags(index);
        started(store, &payment).await;
        ids.push(id);
    }
    // Metadata comes back from every read: by id, in history, in the snapshot, and from the
    // write of a decision (a RETURNING clause on PostgreSQL).
    let decided = store
        .decide("h3", PaymentStatus::Committed, None, None)
        .await
        .unwrap();
    assert_eq!(decided.metadata, tags(3));
    let by_id = store.payment("h1").await.unwrap().unwrap();
    assert_eq!(by_id.metadata, tags(1));
    let page = |records: Vec<PaymentRecord>| -> Vec<String> {
        records
            .into_iter()
            .map(|record| record.payment_id)
            .collect()
    };
    let all = store.history("alice", i64::MAX, 100).await.unwrap();
    assert_eq!(page(all.clone()), ["h6", "h4", "h3", "h1", "h0"]);
    for record in &all {
        let index: i64 = record.payment_id[1..].parse().unwrap();
        assert_eq!(record.metadata, tags(index), "{}", record.payment_id);
    }
    let first = store.history("alice", i64::MAX, 2).await.unwrap();
    assert_eq!(page(first.clone()), ["h6", "h4"]);
    let second = store.history("alice", first[1].seq, 2).await.unwrap();
    assert_eq!(page(second.clone()), ["h3", "h1"]);
    let third = store.history("alice", second[1].seq, 2).await.unwrap();
    assert_eq!(page(third), ["h0"]);
    assert_eq!(
        page(store.history("dave", i64::MAX, 10).await.unwrap()),
        ["h5", "h2"]
    );
    assert!(store
        .history("nobody", i64::MAX, 10)
        .await
        .unwrap()
        .is_empty());

    let snapshot = store.snapshot().await.unwrap();
    assert_eq!(page(snapshot.payments.clone()), ids);
    assert_eq!(snapshot.payments[3].metadata, tags(3));
    assert!(snapshot
        .payments
        .windows(2)
        .all(|pair| pair[0].seq < pair[1].seq));
    assert_eq!(snapshot.links.len(), 2);
    assert!(snapshot
        .links
        .contains(&link("bob", "bank1", "bank1-bob", "B")));
}

type Behaviour = fn(Arc<dyn GatewayStore>) -> Pin<Box<dyn Future<Output = ()>>>;

/// Every behaviour, each on a fresh store.
async fn ownership_and_decision_order(store: Arc<dyn GatewayStore>) {
    let store = store.as_ref();
    assert_eq!(
        store.decision_head().await.unwrap(),
        0,
        "nothing decided yet"
    );
    for (id, key, replica) in [
        ("o1", "ok1", "gw-a"),
        ("o2", "ok2", "gw-a"),
        ("o3", "ok3", "gw-b"),
    ] {
        let mut attempt = attempt(id, "alice", "bob", key);
        attempt.coordinator = replica.into();
        let recorded = started(store, &attempt).await;
        assert_eq!(recorded.coordinator, replica);
        assert_eq!(recorded.decision_seq, None);
    }
    let mut coordinators = store.coordinators_with_unfinished().await.unwrap();
    coordinators.sort();
    assert_eq!(coordinators, ["gw-a", "gw-b"]);
    // Decisions take consecutive positions in the order they are written.
    let o3 = store
        .decide("o3", PaymentStatus::Committed, None, None)
        .await
        .unwrap();
    let o1 = store
        .decide(
            "o1",
            PaymentStatus::Aborted,
            Some("bank_timeout"),
            Some("slow"),
        )
        .await
        .unwrap();
    let first = o3.decision_seq.unwrap();
    assert_eq!(o1.decision_seq, Some(first + 1));
    // A second decision keeps the first one and its position.
    let again = store
        .decide("o1", PaymentStatus::Committed, None, None)
        .await
        .unwrap();
    assert_eq!(
        (again.status, again.decision_seq),
        (PaymentStatus::Aborted, o1.decision_seq)
    );
    assert_eq!(store.decision_head().await.unwrap(), first + 1);
    let after = store.decided_after(0, 10).await.unwrap();
    let order: Vec<&str> = after.iter().map(|p| p.payment_id.as_str()).collect();
    assert_eq!(order, ["o3", "o1"]);
    assert_eq!(store.decided_after(first, 10).await.unwrap().len(), 1);

    // Takeover: gw-b is gone; one claimant gets its unfinished payments, a second none.
    assert_eq!(store.claim("gw-b", "gw-a").await.unwrap(), 1);
    assert_eq!(store.claim("gw-b", "gw-c").await.unwrap(), 0);
    let mine: Vec<String> = store
        .unfinished("gw-a", i64::MAX, 10)
        .await
        .unwrap()
        .into_iter()
        .map(|p| p.payment_id)
        .collect();
    assert_eq!(mine, ["o1", "o2", "o3"]);
    // Finished payments stay with whoever finished them.
    store.acknowledge("o3", true, true).await.unwrap();
    assert_eq!(store.claim("gw-a", "gw-d").await.unwrap(), 2);
    assert_eq!(
        store.payment("o3").await.unwrap().unwrap().coordinator,
        "gw-a"
    );
}

async fn logins_probe_and_banks(store: Arc<dyn GatewayStore>) {
    use strife_ledger::lockout::SharedLogin;
    let store = store.as_ref();
    store.probe().await.unwrap();
    assert_eq!(store.login("alice").await.unwrap(), None);
    fn failed(failures: u32) -> SharedLogin {
        SharedLogin {
            failures,
            window_start_unix_ms: 1_000,
            locked_until_unix_ms: 0,
            lockouts: 0,
        }
    }
    // Each update sees the previous one's result (two replicas counting one name).
    for expected in 1..=3 {
        let next = store
            .update_login(
                "alice",
                Box::new(move |current: Option<SharedLogin>| {
                    Some(failed(current.map_or(0, |login| login.failures) + 1))
                }),
            )
            .await
            .unwrap();
        assert_eq!(next, Some(failed(expected)));
    }
    assert_eq!(store.login("alice").await.unwrap(), Some(failed(3)));
    assert_eq!(
        store
            .update_login("alice", Box::new(|_| None))
            .await
            .unwrap(),
        None
    );
    assert_eq!(store.login("alice").await.unwrap(), None);

    store.insert_user("alice", "client", "hash").await.unwrap();
    assert!(!store.has_accounts_at("bank7").await.unwrap());
    store
        .link_account(&link("alice", "bank7", "bank7-1", "Alice"))
        .await
        .unwrap();
    assert!(store.has_accounts_at("bank7").await.unwrap());
}

// Settlement and refunds (docs/SPEC.md §9): what each write moves, and what concurrent
// writers cannot get past.

/// An attempt from `from_user` at `from_bank` to `to_user` at `to_bank`.
fn payment_between(
    payment_id: &str,
    (from_user, from_bank): (&str, &str),
    (to_user, to_bank): (&str, &str),
    amount_minor: i64,
) -> PaymentRecord {
    let mut record = attempt(payment_id, from_user, to_user, &format!("key-{payment_id}"));
    record.from = party(from_user, from_bank);
    record.to = party(to_user, to_bank);
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

/// (position, reserved, cap) of `bank` in USD; zeros when it has no row. Read again while
/// the store answers UNAVAILABLE, up to a deadline: on a loaded machine a fresh database's
/// first reads can pass the store's 1 s call bound, and a read is safe to repeat.
async fn standing(store: &dyn GatewayStore, bank: &str) -> (i64, i64, Option<i64>) {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    let positions = loop {
        match store.positions().await {
            Err(Failure::Unavailable(_)) if std::time::Instant::now() < deadline => continue,
            read => break read,
        }
    };
    positions
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

async fn a_new_database_has_exactly_one_open_window_1(store: Arc<dyn GatewayStore>) {
    let store = store.as_ref();
    let windows = store.windows(i64::MAX, 10).await.unwrap();
    assert_eq!(windows.len(), 1);
    assert_eq!(windows[0].window_id, 1);
    assert_eq!(windows[0].closed_unix_ms, None);
    let report = store.window_report(1).await.unwrap().unwrap();
    assert!(report.totals.is_empty());
    assert_eq!(store.window_report(2).await.unwrap(), None);
}

async fn positions_move_with_cross_bank_commits_only(store: Arc<dyn GatewayStore>) {
    let store = store.as_ref();
    let committed = started(store, &across("p-1", 1_000)).await;
    assert_eq!(committed.amount_minor, 1_000);
    assert_eq!(standing(store, "bank0").await, (0, 1_000, None), "reserved");
    assert_eq!(standing(store, "bank1").await, (0, 0, None));
    let decided = store
        .decide("p-1", PaymentStatus::Committed, None, None)
        .await
        .unwrap();
    assert_eq!(decided.window_id, Some(1));
    assert_eq!(standing(store, "bank0").await, (1_000, 0, None));
    assert_eq!(standing(store, "bank1").await, (-1_000, 0, None));

    // A later decider changes nothing (single assignment, and settlement moves only once).
    store
        .decide("p-1", PaymentStatus::Aborted, None, None)
        .await
        .unwrap();
    store
        .decide("p-1", PaymentStatus::Committed, None, None)
        .await
        .unwrap();
    assert_eq!(standing(store, "bank0").await, (1_000, 0, None));

    started(store, &across("p-2", 400)).await;
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
    assert_eq!(standing(store, "bank0").await, (1_000, 0, None), "released");

    let within = payment_between("p-3", ("alice", "bank0"), ("carol", "bank0"), 700);
    started(store, &within).await;
    assert_eq!(
        standing(store, "bank0").await,
        (1_000, 0, None),
        "no reservation"
    );
    store
        .decide("p-3", PaymentStatus::Committed, None, None)
        .await
        .unwrap();
    assert_eq!(standing(store, "bank0").await, (1_000, 0, None));

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

async fn a_refusal_under_the_cap_records_nothing_and_the_same_key_pays_once_it_fits(
    store: Arc<dyn GatewayStore>,
) {
    let store = store.as_ref();
    store
        .set_net_debit_cap("bank0", "USD", Some(1_500))
        .await
        .unwrap();
    started(store, &across("p-1", 1_000)).await;
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
    assert_eq!(standing(store, "bank0").await, (0, 1_000, Some(1_500)));
    // The first one aborts: its reservation is released and the retry (same key) fits.
    store
        .decide("p-1", PaymentStatus::Aborted, Some("bank_timeout"), None)
        .await
        .unwrap();
    started(store, &across("p-2", 600)).await;
    assert_eq!(standing(store, "bank0").await, (0, 600, Some(1_500)));
    // Removing the cap: unlimited again.
    store.set_net_debit_cap("bank0", "USD", None).await.unwrap();
    started(store, &across("p-3", 1_000_000)).await;
    assert_eq!(
        store
            .set_net_debit_cap("bank0", "USD", Some(-1))
            .await
            .unwrap_err()
            .code(),
        tonic::Code::InvalidArgument
    );
}

async fn concurrent_payments_cannot_all_slip_under_a_cap(store: Arc<dyn GatewayStore>) {
    store
        .set_net_debit_cap("bank0", "USD", Some(3_000))
        .await
        .unwrap();
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
    assert_eq!(
        standing(store.as_ref(), "bank0").await,
        (0, 3_000, Some(3_000))
    );
}

async fn closing_a_window_moves_later_decisions_to_the_next_and_never_changes_it(
    store: Arc<dyn GatewayStore>,
) {
    let store = store.as_ref();
    started(store, &across("p-1", 100)).await;
    started(store, &across("p-2", 200)).await;
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

async fn settling_a_closed_window_reduces_positions_by_its_nets_once(store: Arc<dyn GatewayStore>) {
    let store = store.as_ref();
    for (id, from, to, amount) in [
        ("p-1", ("alice", "bank0"), ("bob", "bank1"), 1_000),
        ("p-2", ("bob", "bank1"), ("alice", "bank0"), 300),
        ("p-3", ("bob", "bank1"), ("carol", "bank2"), 100),
    ] {
        started(store, &payment_between(id, from, to, amount)).await;
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
    started(store, &across("p-4", 50)).await;
    store
        .decide("p-4", PaymentStatus::Committed, None, None)
        .await
        .unwrap();
    assert_eq!(standing(store, "bank0").await, (750, 0, None));
    assert_eq!(standing(store, "bank1").await, (-650, 0, None));
    assert_eq!(standing(store, "bank2").await, (-100, 0, None));
    let settled = store.settle_window(1).await.unwrap();
    assert!(settled.window.settled_unix_ms.is_some());
    assert_eq!(standing(store, "bank0").await, (50, 0, None));
    assert_eq!(standing(store, "bank1").await, (-50, 0, None));
    assert_eq!(standing(store, "bank2").await, (0, 0, None));
    assert_eq!(
        store.settle_window(1).await.unwrap_err().reason(),
        "window_already_settled"
    );
    assert_eq!(
        store.settle_window(7).await.unwrap_err().code(),
        tonic::Code::NotFound
    );
    assert_eq!(
        standing(store, "bank0").await,
        (50, 0, None),
        "settled once"
    );
}

fn refund(payment_id: &str, original: &PaymentRecord, amount_minor: i64) -> PaymentRecord {
    let mut record = attempt(payment_id, "bob", "alice", &format!("key-{payment_id}"));
    record.from = original.to.clone();
    record.to = original.from.clone();
    record.amount_minor = amount_minor;
    record.refund_of = Some(original.payment_id.clone());
    record
}

async fn refunds_claim_against_the_original_and_give_back_what_aborts(
    store: Arc<dyn GatewayStore>,
) {
    let store = store.as_ref();
    let original = started(store, &across("p-1", 1_000)).await;
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

    let first = started(store, &refund("r-1", &original, 400)).await;
    assert_eq!(first.refund_of.as_deref(), Some("p-1"));
    let second = started(store, &refund("r-2", &original, 0)).await;
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
    assert_eq!(standing(store, "bank1").await, (-1_000, 1_000, None));

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
    assert_eq!(standing(store, "bank1").await, (-600, 0, None));
    assert_eq!(standing(store, "bank0").await, (600, 0, None));
    // What r-2 claimed is back: the rest can be refunded again.
    let rest = started(store, &refund("r-4", &original, 0)).await;
    assert_eq!(rest.amount_minor, 600);
    // Every attempt is listed, newest first, a page at a time.
    let ids = |page: &[PaymentRecord]| -> Vec<String> {
        page.iter()
            .map(|record| record.payment_id.clone())
            .collect()
    };
    let listed = store.refunds_of("p-1", i64::MAX, 10).await.unwrap();
    assert_eq!(ids(&listed), ["r-4", "r-2", "r-1"]);
    let first_page = store.refunds_of("p-1", i64::MAX, 2).await.unwrap();
    let next = store.refunds_of("p-1", first_page[1].seq, 2).await.unwrap();
    assert_eq!(ids(&next), ["r-1"]);
    assert!(store
        .refunds_of("r-1", i64::MAX, 10)
        .await
        .unwrap()
        .is_empty());
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

async fn concurrent_refunds_never_exceed_the_original(store: Arc<dyn GatewayStore>) {
    started(store.as_ref(), &across("p-1", 1_000)).await;
    let original = store
        .decide("p-1", PaymentStatus::Committed, None, None)
        .await
        .unwrap();
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

/// Decisions racing window closes: each payment lands in exactly one window, a closed
/// window's report never changes after its close returned, and every window's totals are
/// exactly its committed payments.
async fn closing_during_decisions_puts_each_payment_in_exactly_one_window(
    store: Arc<dyn GatewayStore>,
) {
    const PAYMENTS: i64 = 40;
    for index in 0..PAYMENTS {
        started(store.as_ref(), &across(&format!("c-{index}"), 10 + index)).await;
    }
    let deciders: Vec<_> = (0..PAYMENTS)
        .map(|index| {
            let store = Arc::clone(&store);
            tokio::spawn(async move {
                let status = if index % 4 == 3 {
                    PaymentStatus::Aborted
                } else {
                    PaymentStatus::Committed
                };
                store
                    .decide(&format!("c-{index}"), status, None, None)
                    .await
                    .unwrap()
            })
        })
        .collect();
    let closer = {
        let store = Arc::clone(&store);
        tokio::spawn(async move {
            let mut closed = Vec::new();
            for _ in 0..3 {
                closed.push(store.close_window(None).await.unwrap());
                tokio::task::yield_now().await;
            }
            closed
        })
    };
    let mut decided = Vec::new();
    for decider in deciders {
        decided.push(decider.await.unwrap());
    }
    let closed = closer.await.unwrap();
    for report in &closed {
        assert_eq!(
            store
                .window_report(report.window.window_id)
                .await
                .unwrap()
                .as_ref(),
            Some(report),
            "a closed window never changes"
        );
    }
    let snapshot = store.snapshot().await.unwrap();
    assert_eq!(snapshot.windows.len(), 4);
    for payment in &decided {
        let stored = snapshot
            .payments
            .iter()
            .find(|stored| stored.payment_id == payment.payment_id)
            .unwrap();
        assert_eq!(stored.window_id, payment.window_id);
        assert!(stored.window_id.is_some());
    }
    for report in &snapshot.windows {
        let committed: Vec<&PaymentRecord> = snapshot
            .payments
            .iter()
            .filter(|payment| {
                payment.status == PaymentStatus::Committed
                    && payment.window_id == Some(report.window.window_id)
            })
            .collect();
        let (amount, count) = report
            .totals
            .first()
            .map_or((0, 0), |total| (total.amount_minor, total.payments));
        assert_eq!(
            (amount, count),
            (
                committed.iter().map(|payment| payment.amount_minor).sum(),
                committed.len() as i64
            ),
            "window {}",
            report.window.window_id
        );
    }
    let committed: i64 = decided
        .iter()
        .filter(|payment| payment.status == PaymentStatus::Committed)
        .map(|payment| payment.amount_minor)
        .sum();
    assert_eq!(
        standing(store.as_ref(), "bank0").await,
        (committed, 0, None)
    );
}

/// A shared secret is created once and then the same for every caller (every replica), and
/// different names are different secrets.
async fn secrets_are_created_once_and_shared(store: Arc<dyn GatewayStore>) {
    let racers: Vec<_> = (0..8)
        .map(|_| {
            let store = Arc::clone(&store);
            tokio::spawn(async move { store.secret("cursor").await.unwrap() })
        })
        .collect();
    let mut seen = Vec::new();
    for racer in racers {
        seen.push(racer.await.unwrap());
    }
    assert!(seen.windows(2).all(|pair| pair[0] == pair[1]), "one secret");
    assert_ne!(seen[0], [0u8; 32]);
    assert_eq!(store.secret("cursor").await.unwrap(), seen[0]);
    assert_ne!(store.secret("another").await.unwrap(), seen[0]);
}

fn api_key(key_id: &str, owner: &str, created_unix_ms: i64) -> ApiKeyRecord {
    ApiKeyRecord {
        key_id: key_id.into(),
        owner: owner.into(),
        secret_hash: vec![7; 32],
        scopes: vec!["payments:read".into(), "payments:write".into()],
        description: format!("{owner}'s key"),
        created_unix_ms,
        expires_unix_ms: Some(created_unix_ms + 1_000),
        revoked_unix_ms: None,
        last_used_unix_ms: None,
    }
}

/// API keys: stored as given (an id taken twice is refused), listed per owner oldest first,
/// revoked once (a second revocation keeps the first time), "last used" only moves forward.
async fn api_keys(store: Arc<dyn GatewayStore>) {
    let first = api_key("00000000000000a1", "alice", 1_000);
    let second = api_key("00000000000000a2", "alice", 2_000);
    let bobs = api_key("00000000000000b1", "bob", 1_500);
    for key in [&second, &first, &bobs] {
        store.insert_api_key(key).await.unwrap();
    }
    assert!(matches!(
        store.insert_api_key(&first).await,
        Err(Failure::AlreadyExists(_))
    ));
    assert_eq!(
        store.api_key(&first.key_id).await.unwrap(),
        Some(first.clone())
    );
    assert_eq!(store.api_key("00000000000000ff").await.unwrap(), None);
    let alices = store.api_keys(Some("alice")).await.unwrap();
    assert_eq!(alices, [first.clone(), second.clone()]);
    assert_eq!(store.api_keys(None).await.unwrap().len(), 3);
    assert!(store.api_keys(Some("carol")).await.unwrap().is_empty());

    let revoked = store
        .revoke_api_key(&first.key_id, 5_000)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(revoked.revoked_unix_ms, Some(5_000));
    let again = store
        .revoke_api_key(&first.key_id, 9_000)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        again.revoked_unix_ms,
        Some(5_000),
        "the first revocation stands"
    );
    assert_eq!(
        store.revoke_api_key("00000000000000ff", 1).await.unwrap(),
        None
    );
    assert_eq!(
        store
            .api_key(&second.key_id)
            .await
            .unwrap()
            .unwrap()
            .revoked_unix_ms,
        None
    );

    store.touch_api_key(&second.key_id, 7_000).await.unwrap();
    store.touch_api_key(&second.key_id, 6_000).await.unwrap();
    assert_eq!(
        store
            .api_key(&second.key_id)
            .await
            .unwrap()
            .unwrap()
            .last_used_unix_ms,
        Some(7_000)
    );
}

/// An authorization (docs/SPEC.md §4): AUTHORIZED once its legs are held, still undecided
/// (reserved, listed for its coordinator only once due), captured only while AUTHORIZED and
/// strictly before its expiry, judged by the store at the decision's own time.
async fn authorizations(store: Arc<dyn GatewayStore>) {
    let now = strife_common::time::now_unix_ms();
    let hold = |id: &str, key: &str, expires_unix_ms: i64| PaymentRecord {
        expires_unix_ms: Some(expires_unix_ms),
        ..attempt(id, "alice", "bob", key)
    };
    let far = now + 3_600_000;

    // A capture before the legs are held does not commit.
    let early = started(store.as_ref(), &hold("h1", "hk1", far)).await;
    assert_eq!(early.status, PaymentStatus::Pending);
    assert_eq!(early.expires_unix_ms, Some(far));
    let refused = store
        .decide("h1", PaymentStatus::Committed, None, None)
        .await
        .unwrap();
    assert_eq!(refused.status, PaymentStatus::Pending, "{refused:?}");
    assert_eq!(refused.decision_seq, None);

    let authorized = store.authorize("h1").await.unwrap();
    assert_eq!(authorized.status, PaymentStatus::Authorized);
    let authorized_at = authorized.authorized_unix_ms.expect("authorized time");
    assert!(authorized_at >= now, "{authorized:?}");
    assert_eq!(
        store.authorize("h1").await.unwrap(),
        authorized,
        "idempotent"
    );
    assert_eq!(store.payment("h1").await.unwrap(), Some(authorized.clone()));
    // Open and not due: not the retrier's work, still reserved.
    let open = store.unfinished(REPLICA, now, 10).await.unwrap();
    assert!(
        open.iter().all(|record| record.payment_id != "h1"),
        "{open:?}"
    );
    let due = store.unfinished(REPLICA, far, 10).await.unwrap();
    assert!(
        due.iter().any(|record| record.payment_id == "h1"),
        "{due:?}"
    );
    let reserved = |positions: &[strife_ledger::records::PositionRecord]| {
        positions
            .iter()
            .find(|row| row.bank_id == "bank0")
            .map_or(0, |row| row.reserved_minor)
    };
    assert_eq!(reserved(&store.positions().await.unwrap()), 1_250);
    // A replay of the key answers the authorization.
    match store
        .begin_payment(&hold("h-retry", "hk1", far + 5))
        .await
        .unwrap()
    {
        Begun::Finished(record) => assert_eq!(record.payment_id, "h1"),
        other => panic!("expected the authorization, got {other:?}"),
    }

    let captured = store
        .decide("h1", PaymentStatus::Committed, None, None)
        .await
        .unwrap();
    assert_eq!(captured.status, PaymentStatus::Committed);
    assert!(captured.decided_unix_ms.unwrap() < far);
    assert_eq!(captured.authorized_unix_ms, Some(authorized_at));
    assert_eq!(reserved(&store.positions().await.unwrap()), 0);
    assert_eq!(
        store.authorize("h1").await.unwrap(),
        captured,
        "decided stays"
    );

    // Past its expiry a capture changes nothing; the expiry's abort is written.
    started(store.as_ref(), &hold("h2", "hk2", now - 1)).await;
    assert_eq!(
        store.authorize("h2").await.unwrap().status,
        PaymentStatus::Authorized
    );
    let late = store
        .decide("h2", PaymentStatus::Committed, None, None)
        .await
        .unwrap();
    assert_eq!(late.status, PaymentStatus::Authorized, "{late:?}");
    let expired = store
        .decide(
            "h2",
            PaymentStatus::Aborted,
            Some("authorization_expired"),
            Some("expired"),
        )
        .await
        .unwrap();
    assert_eq!(expired.status, PaymentStatus::Aborted);
    assert_eq!(
        expired.reason_code.as_deref(),
        Some("authorization_expired")
    );

    // A capture of part: that much moves, the whole reservation goes, the rest is released.
    let positions_of = |positions: &[strife_ledger::records::PositionRecord], bank: &str| {
        positions
            .iter()
            .find(|row| row.bank_id == bank)
            .map_or((0, 0), |row| (row.position_minor, row.reserved_minor))
    };
    let before = store.positions().await.unwrap();
    started(store.as_ref(), &hold("h4", "hk4", far)).await;
    store.authorize("h4").await.unwrap();
    let too_much = store.capture("h4", 1_251).await.unwrap();
    assert_eq!(too_much.status, PaymentStatus::Authorized, "{too_much:?}");
    let part = store.capture("h4", 300).await.unwrap();
    assert_eq!(part.status, PaymentStatus::Committed);
    assert_eq!(
        (part.amount_minor, part.authorized_minor),
        (300, Some(1_250))
    );
    let after = store.positions().await.unwrap();
    let (payer_before, payee_before) = (
        positions_of(&before, "bank0"),
        positions_of(&before, "bank1"),
    );
    assert_eq!(
        positions_of(&after, "bank0"),
        (payer_before.0 + 300, payer_before.1)
    );
    assert_eq!(
        positions_of(&after, "bank1"),
        (payee_before.0 - 300, payee_before.1)
    );
    assert_eq!(store.capture("h4", 10).await.unwrap(), part, "decided once");
    let report = store.window_report(1).await.unwrap().unwrap();
    let total: i64 = report.totals.iter().map(|total| total.amount_minor).sum();
    assert_eq!(total, 1_250 + 300, "h1 whole, h4 in part");

    // A plain payment is never made AUTHORIZED.
    started(store.as_ref(), &attempt("h3", "alice", "bob", "hk3")).await;
    assert_eq!(
        store.authorize("h3").await.unwrap().status,
        PaymentStatus::Pending
    );
    let snapshot = store.snapshot().await.unwrap();
    let logged = snapshot
        .payments
        .iter()
        .find(|record| record.payment_id == "h1")
        .unwrap();
    assert_eq!(logged, &captured);
    assert!(matches!(
        store.authorize("nope").await,
        Err(Failure::NotFound(_))
    ));
}

/// `list_payments`: every filter alone, together, across users for the admin, and pages.
async fn searches(store: Arc<dyn GatewayStore>) {
    use strife_ledger::records::{Direction, PaymentFilter};
    let store = store.as_ref();
    let make =
        |id: &str, from: &str, to: &str, amount_minor: i64, created_unix_ms: i64| PaymentRecord {
            amount_minor,
            created_unix_ms,
            ..attempt(id, from, to, &format!("k-{id}"))
        };
    started(store, &make("s0", "alice", "bob", 1_250, 1_000)).await;
    started(store, &make("s1", "bob", "alice", 500, 2_000)).await;
    let tagged = PaymentRecord {
        metadata: [("order".to_owned(), "A-7".to_owned())].into(),
        ..make("s2", "alice", "carol", 3_000, 3_000)
    };
    started(store, &tagged).await;
    let held = PaymentRecord {
        expires_unix_ms: Some(i64::MAX),
        ..make("s3", "carol", "dave", 700, 4_000)
    };
    started(store, &held).await;
    store.authorize("s3").await.unwrap();
    store
        .decide("s0", PaymentStatus::Committed, None, None)
        .await
        .unwrap();
    store
        .decide(
            "s1",
            PaymentStatus::Aborted,
            Some("insufficient_funds"),
            None,
        )
        .await
        .unwrap();
    let alice = || PaymentFilter {
        username: Some("alice".into()),
        ..PaymentFilter::default()
    };
    let found = |filter: PaymentFilter| async move {
        store
            .list_payments(&filter, i64::MAX, 10)
            .await
            .unwrap()
            .into_iter()
            .map(|record| record.payment_id)
            .collect::<Vec<_>>()
    };
    assert_eq!(found(alice()).await, ["s2", "s1", "s0"]);
    let sent = PaymentFilter {
        direction: Direction::Sent,
        ..alice()
    };
    assert_eq!(found(sent).await, ["s2", "s0"]);
    let received = PaymentFilter {
        direction: Direction::Received,
        ..alice()
    };
    assert_eq!(found(received).await, ["s1"]);
    for (status, expected) in [
        (PaymentStatus::Committed, "s0"),
        (PaymentStatus::Aborted, "s1"),
        (PaymentStatus::Pending, "s2"),
    ] {
        let filter = PaymentFilter {
            status: Some(status),
            ..alice()
        };
        assert_eq!(found(filter).await, [expected], "{status:?}");
    }
    let with_bob = PaymentFilter {
        counterparty: Some("bob".into()),
        ..alice()
    };
    assert_eq!(found(with_bob).await, ["s1", "s0"]);
    let recent = PaymentFilter {
        created_from_unix_ms: Some(2_000),
        created_before_unix_ms: Some(3_000),
        ..alice()
    };
    assert_eq!(found(recent).await, ["s1"]);
    let large = PaymentFilter {
        min_amount_minor: Some(1_000),
        ..alice()
    };
    assert_eq!(found(large).await, ["s2", "s0"]);
    let small = PaymentFilter {
        max_amount_minor: Some(1_000),
        currency: Some("USD".into()),
        ..alice()
    };
    assert_eq!(found(small).await, ["s1"]);
    let euros = PaymentFilter {
        currency: Some("EUR".into()),
        ..alice()
    };
    assert!(found(euros).await.is_empty());
    let order = |value: &str| PaymentFilter {
        metadata: Some(("order".into(), value.into())),
        ..alice()
    };
    assert_eq!(found(order("A-7")).await, ["s2"]);
    assert!(found(order("A-8")).await.is_empty());
    // Everyone's (the admin): an authorization shows as AUTHORIZED, a party as either side.
    let authorized = PaymentFilter {
        status: Some(PaymentStatus::Authorized),
        ..PaymentFilter::default()
    };
    assert_eq!(found(authorized).await, ["s3"]);
    let dave = PaymentFilter {
        counterparty: Some("dave".into()),
        ..PaymentFilter::default()
    };
    assert_eq!(found(dave).await, ["s3"]);
    let pending = PaymentFilter {
        status: Some(PaymentStatus::Pending),
        ..PaymentFilter::default()
    };
    assert_eq!(
        found(pending).await,
        ["s2"],
        "an AUTHORIZED one is not PENDING"
    );
    // Pages: newest first, the next starts below the last.
    let first = store.list_payments(&alice(), i64::MAX, 2).await.unwrap();
    assert_eq!(first.len(), 2);
    let rest = store
        .list_payments(&alice(), first[1].seq, 2)
        .await
        .unwrap();
    assert_eq!(rest.len(), 1);
    assert_eq!(rest[0].payment_id, "s0");
}

async fn run_suite(stores: &dyn Fresh, backend: &str) {
    let behaviours: [(&str, Behaviour); 21] = [
        ("searches", |store| Box::pin(searches(store))),
        ("authorizations", |store| Box::pin(authorizations(store))),
        ("API keys", |store| Box::pin(api_keys(store))),
        ("secrets are created once and shared", |store| {
            Box::pin(secrets_are_created_once_and_shared(store))
        }),
        ("users and links", |store| Box::pin(users_and_links(store))),
        ("idempotency", |store| Box::pin(idempotency(store))),
        ("one key raced", |store| Box::pin(one_key_raced(store))),
        ("decisions", |store| Box::pin(decisions(store))),
        ("acknowledgements and unfinished", |store| {
            Box::pin(acknowledgements_and_unfinished(store))
        }),
        ("history and snapshot", |store| {
            Box::pin(history_and_snapshot(store))
        }),
        ("ownership, takeover and decision order", |store| {
            Box::pin(ownership_and_decision_order(store))
        }),
        ("shared logins, probe and bank lookups", |store| {
            Box::pin(logins_probe_and_banks(store))
        }),
        ("a new store has exactly one open window 1", |store| {
            Box::pin(a_new_database_has_exactly_one_open_window_1(store))
        }),
        ("positions move with cross-bank commits only", |store| {
            Box::pin(positions_move_with_cross_bank_commits_only(store))
        }),
        ("a cap refusal records nothing", |store| {
            Box::pin(
                a_refusal_under_the_cap_records_nothing_and_the_same_key_pays_once_it_fits(store),
            )
        }),
        ("concurrent payments cannot all slip under a cap", |store| {
            Box::pin(concurrent_payments_cannot_all_slip_under_a_cap(store))
        }),
        ("closing a window", |store| {
            Box::pin(closing_a_window_moves_later_decisions_to_the_next_and_never_changes_it(store))
        }),
        ("settling a window", |store| {
            Box::pin(settling_a_closed_window_reduces_positions_by_its_nets_once(
                store,
            ))
        }),
        ("refunds", |store| {
            Box::pin(refunds_claim_against_the_original_and_give_back_what_aborts(store))
        }),
        ("concurrent refunds never exceed the original", |store| {
            Box::pin(concurrent_refunds_never_exceed_the_original(store))
        }),
        ("closing windows during decisions", |store| {
            Box::pin(closing_during_decisions_puts_each_payment_in_exactly_one_window(store))
        }),
    ];
    for (name, behaviour) in behaviours {
        eprintln!("{backend}: {name}");
        behaviour(stores.fresh().await).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn store_behaviour_on_sqlite() {
    let stores = FreshSqlite {
        root: tempfile::tempdir().unwrap(),
        count: AtomicU32::new(0),
    };
    run_suite(&stores, "sqlite").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn store_behaviour_on_postgres() {
    let stores = FreshPostgres {
        server: Arc::new(Postgres::start().await),
        layout: tempfile::tempdir().unwrap(),
        count: AtomicU32::new(0),
    };
    run_suite(&stores, "postgres").await;
}

fn open_error(result: anyhow::Result<PostgresGatewayStore>) -> String {
    match result {
        Ok(_) => panic!("the store opened"),
        Err(error) => format!("{error:#}"),
    }
}

/// What protects a shared database instead of SQLite's creation marker: an empty database
/// needs `--initialize`, a foreign or newer one is refused, an older one is migrated once
/// even when replicas start together.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn postgres_schema_identity_and_migrations() {
    let server = Postgres::start().await;
    let dir = tempfile::tempdir().unwrap();
    let layout = Layout::new(dir.path());
    let database = server.create_database("schema1").await;
    let location = PostgresLocation::parse(&database.url()).unwrap();

    let empty =
        open_error(PostgresGatewayStore::open(&location, &identity(&layout, CA, false)).await);
    assert!(
        empty.contains("is empty") && empty.contains("--initialize"),
        "{empty}"
    );
    assert!(!empty.contains(&database.password), "{empty}");
    drop(
        PostgresGatewayStore::open(&location, &identity(&layout, CA, true))
            .await
            .unwrap(),
    );
    // Ours now: opens without --initialize, and --initialize changes nothing.
    let store = PostgresGatewayStore::open(&location, &identity(&layout, CA, false))
        .await
        .unwrap();
    store.insert_user("alice", "client", "h").await.unwrap();
    drop(store);
    let store = PostgresGatewayStore::open(&location, &identity(&layout, CA, true))
        .await
        .unwrap();
    assert!(
        store.user("alice").await.unwrap().is_some(),
        "nothing was recreated"
    );
    drop(store);

    // Another network's gateway (another CA) is refused, and so is its audit.
    let foreign = open_error(
        PostgresGatewayStore::open(&location, &identity(&layout, "another-ca", true)).await,
    );
    assert!(foreign.contains("another Strife network"), "{foreign}");
    let audit = PostgresGatewayLog::open(&location, &identity(&layout, "another-ca", false)).await;
    assert!(audit.is_err());
    let log = PostgresGatewayLog::open(&location, &identity(&layout, CA, false))
        .await
        .unwrap();
    assert_eq!(log.snapshot().await.unwrap().payments.len(), 0);

    // A newer schema is refused by the gateway and the audit.
    let admin = server.admin("schema1").await;
    admin
        .execute("UPDATE strife_schema SET version = 99", &[])
        .await
        .unwrap();
    let newer =
        open_error(PostgresGatewayStore::open(&location, &identity(&layout, CA, false)).await);
    assert!(
        newer.contains("schema version 99") && newer.contains("newer"),
        "{newer}"
    );
    assert!(
        PostgresGatewayLog::open(&location, &identity(&layout, CA, false))
            .await
            .is_err()
    );
    admin
        .execute(
            "UPDATE strife_schema SET version = $1",
            &[&store::postgres::SCHEMA_VERSION],
        )
        .await
        .unwrap();

    // Tables without strife_schema: someone else's database.
    let other = server.create_database("notours").await;
    server
        .admin("notours")
        .await
        .batch_execute("CREATE TABLE invoices (id INT); ALTER TABLE invoices OWNER TO notours")
        .await
        .unwrap();
    let other_location = PostgresLocation::parse(&other.url()).unwrap();
    let refused =
        open_error(PostgresGatewayStore::open(&other_location, &identity(&layout, CA, true)).await);
    assert!(
        refused.contains("not a Strife gateway database"),
        "{refused}"
    );

    // An older schema migrates once, in one transaction, however many replicas start at
    // the same moment: a step that fails when run twice proves it ran once.
    let mut newer_history = store::postgres::MIGRATIONS.to_vec();
    newer_history.push(store::postgres::Migration {
        version: store::postgres::SCHEMA_VERSION + 1,
        sql: "ALTER TABLE users ADD COLUMN nickname TEXT",
    });
    let newer_identity = StoreIdentity {
        schema_version: store::postgres::SCHEMA_VERSION + 1,
        ..identity(&layout, CA, false)
    };
    let openers: Vec<_> = (0..4)
        .map(|_| {
            let location = location.clone();
            let newer_identity = newer_identity.clone();
            let newer_history = newer_history.clone();
            tokio::spawn(async move {
                PostgresGatewayStore::open_with_migrations(
                    &location,
                    &newer_identity,
                    &newer_history,
                )
                .await
                .map(drop)
            })
        })
        .collect();
    for opener in openers {
        opener.await.unwrap().unwrap();
    }
    let version: i64 = admin
        .query_one("SELECT version FROM strife_schema", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(version, store::postgres::SCHEMA_VERSION + 1);
    admin
        .execute(
            "UPDATE users SET nickname = 'al' WHERE username = 'alice'",
            &[],
        )
        .await
        .unwrap();
    // This binary (one version behind now) refuses the migrated database.
    let behind =
        open_error(PostgresGatewayStore::open(&location, &identity(&layout, CA, false)).await);
    assert!(behind.contains("newer than this strife knows"), "{behind}");
}

/// A version-3 database (a gateway that refused refunds and kept no settlement) migrates in
/// place to version 4: every payment kept, each decided one in window 1 (open), positions,
/// reservations and window 1's totals derived from the log — and the store goes on from there.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn postgres_version_3_migrates_to_4_deriving_settlement_from_the_log() {
    use strife_ledger::records::PositionRecord;
    let server = Postgres::start().await;
    let dir = tempfile::tempdir().unwrap();
    let layout = Layout::new(dir.path());
    let database = server.create_database("v3").await;
    let location = PostgresLocation::parse(&database.url()).unwrap();
    let version_3 = &store::postgres::MIGRATIONS[..3];
    assert_eq!(version_3.last().unwrap().version, 3);
    drop(
        PostgresGatewayStore::open_with_migrations(
            &location,
            &identity(&layout, CA, true),
            version_3,
        )
        .await
        .unwrap(),
    );
    // What a version-3 gateway wrote: committed both ways, one PENDING, one within a bank,
    // one aborted.
    let admin = server.admin("v3").await;
    admin
        .batch_execute(
            "INSERT INTO payments (payment_id, idempotency_key, from_user, from_bank,
                 from_account, to_user, to_bank, to_account, amount_minor, currency, memo,
                 status, decision_deadline_unix_ms, created_unix_ms, coordinator, decision_seq)
             VALUES
             ('m1', 'k1', 'alice', 'bank0', 'a', 'bob', 'bank1', 'b', 1000, 'USD', '', 2, 0, 0,
                 'gw', nextval('payments_decision_seq')),
             ('m2', 'k2', 'bob', 'bank1', 'b', 'alice', 'bank0', 'a', 300, 'USD', '', 2, 0, 0,
                 'gw', nextval('payments_decision_seq')),
             ('m3', 'k3', 'alice', 'bank0', 'a', 'bob', 'bank1', 'b', 50, 'USD', '', 1, 0, 0,
                 'gw', NULL),
             ('m4', 'k4', 'alice', 'bank0', 'a', 'carol', 'bank0', 'c', 70, 'USD', '', 2, 0, 0,
                 'gw', nextval('payments_decision_seq')),
             ('m5', 'k5', 'alice', 'bank0', 'a', 'bob', 'bank1', 'b', 20, 'USD', '', 3, 0, 0,
                 'gw', nextval('payments_decision_seq'))",
        )
        .await
        .unwrap();

    // The audit cannot migrate (read-only) and says what to do.
    let Err(older) = PostgresGatewayLog::open(&location, &identity(&layout, CA, false)).await
    else {
        panic!("the audit opened a version-3 log");
    };
    assert!(format!("{older:#}").contains("older than"), "{older:#}");

    let store = PostgresGatewayStore::open(&location, &identity(&layout, CA, false))
        .await
        .unwrap();
    let version: i64 = admin
        .query_one("SELECT version FROM strife_schema", &[])
        .await
        .unwrap()
        .get(0);
    // Through 4 (settlement) to the current version in one open.
    assert_eq!(version, store::postgres::SCHEMA_VERSION);
    assert!(version >= 4);
    let snapshot = store.snapshot().await.unwrap();
    let windows: Vec<(String, Option<i64>)> = snapshot
        .payments
        .iter()
        .map(|payment| (payment.payment_id.clone(), payment.window_id))
        .collect();
    assert_eq!(
        windows,
        [
            ("m1".to_owned(), Some(1)),
            ("m2".to_owned(), Some(1)),
            ("m3".to_owned(), None),
            ("m4".to_owned(), Some(1)),
            ("m5".to_owned(), Some(1)),
        ]
    );
    let position = |bank: &str, position_minor, reserved_minor| PositionRecord {
        bank_id: bank.into(),
        currency: "USD".into(),
        position_minor,
        reserved_minor,
        cap_minor: None,
    };
    assert_eq!(
        snapshot.positions,
        [position("bank0", 700, 50), position("bank1", -700, 0)]
    );
    assert_eq!(snapshot.windows.len(), 1);
    assert_eq!(snapshot.windows[0].window.closed_unix_ms, None);
    let total = |payer: &str, payee: &str, amount_minor, payments| BilateralTotal {
        payer_bank: payer.into(),
        payee_bank: payee.into(),
        currency: "USD".into(),
        amount_minor,
        payments,
    };
    assert_eq!(
        snapshot.windows[0].totals,
        [
            total("bank0", "bank1", 1_000, 1),
            total("bank1", "bank0", 300, 1)
        ]
    );

    // The PENDING one's reservation is released by its decision like any other.
    store
        .decide("m3", PaymentStatus::Committed, None, None)
        .await
        .unwrap();
    assert_eq!(
        store.positions().await.unwrap(),
        [position("bank0", 750, 0), position("bank1", -750, 0)]
    );
    assert_eq!(
        store.window_report(1).await.unwrap().unwrap().totals[0],
        total("bank0", "bank1", 1_050, 2)
    );
}

/// Two store instances on one database — what two gateway replicas will be — share one
/// idempotency space and one single-assignment decision per payment.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn postgres_stores_sharing_a_database_agree() {
    let server = Postgres::start().await;
    let dir = tempfile::tempdir().unwrap();
    let layout = Layout::new(dir.path());
    let database = server.create_database("shared").await;
    let location = PostgresLocation::parse(&database.url()).unwrap();
    let one: Arc<dyn GatewayStore> = Arc::new(
        PostgresGatewayStore::open(&location, &identity(&layout, CA, true))
            .await
            .unwrap(),
    );
    let two: Arc<dyn GatewayStore> = Arc::new(
        PostgresGatewayStore::open(&location, &identity(&layout, CA, false))
            .await
            .unwrap(),
    );
    for round in 0..5 {
        let key = format!("shared-key-{round}");
        let tasks: Vec<_> = (0..16)
            .map(|index| {
                let store = Arc::clone(if index % 2 == 0 { &one } else { &two });
                let key = key.clone();
                tokio::spawn(async move {
                    store
                        .begin_payment(&attempt(&format!("{key}-{index}"), "alice", "bob", &key))
                        .await
                        .unwrap()
                })
            })
            .collect();
        let mut winners = Vec::new();
        for task in tasks {
            if let Begun::Started(record) = task.await.unwrap() {
                winners.push(record.payment_id);
            }
        }
        assert_eq!(winners.len(), 1, "round {round}: {winners:?}");
        let deciders: Vec<_> = (0..16)
            .map(|index| {
                let store = Arc::clone(if index % 2 == 0 { &one } else { &two });
                let id = winners[0].clone();
                tokio::spawn(async move {
                    let status = if index % 2 == 0 {
                        PaymentStatus::Committed
                    } else {
                        PaymentStatus::Aborted
                    };
                    store.decide(&id, status, None, None).await.unwrap().status
                })
            })
            .collect();
        let mut statuses = Vec::new();
        for decider in deciders {
            statuses.push(decider.await.unwrap());
        }
        assert!(
            statuses.windows(2).all(|pair| pair[0] == pair[1]),
            "{statuses:?}"
        );
    }
}

/// The server going away is a transient UNAVAILABLE naming the store (never the password),
/// and the same store works again once the server is back.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn postgres_outage_is_unavailable_and_heals() {
    let mut server = Postgres::start().await;
    let dir = tempfile::tempdir().unwrap();
    let layout = Layout::new(dir.path());
    let database = server.create_database("outage").await;
    let location = PostgresLocation::parse(&database.url()).unwrap();
    let store = PostgresGatewayStore::open(&location, &identity(&layout, CA, true))
        .await
        .unwrap();
    started(&store, &attempt("o1", "alice", "bob", "ok1")).await;

    server.stop();
    for outcome in [
        store.payment("o1").await.map(drop),
        store
            .decide("o1", PaymentStatus::Committed, None, None)
            .await
            .map(drop),
        store
            .begin_payment(&attempt("o2", "alice", "bob", "ok2"))
            .await
            .map(drop),
        store.insert_user("carol", "client", "h").await,
    ] {
        match outcome {
            Err(Failure::Unavailable(message)) => {
                assert!(
                    message.contains("the gateway's PostgreSQL store"),
                    "{message}"
                );
                assert!(!message.contains(&database.password));
            }
            other => panic!("expected UNAVAILABLE, got {other:?}"),
        }
    }
    // Opening while the server is down fails with a clear, password-free message.
    let down =
        open_error(PostgresGatewayStore::open(&location, &identity(&layout, CA, false)).await);
    assert!(
        down.contains("cannot reach the gateway's PostgreSQL store"),
        "{down}"
    );
    assert!(!down.contains(&database.password), "{down}");

    server.restart().await;
    let healed = crate::support::wait_until(std::time::Duration::from_secs(15), || async {
        store.payment("o1").await.is_ok()
    })
    .await;
    assert!(healed, "the store did not reconnect");
    let decided = store
        .decide("o1", PaymentStatus::Committed, None, None)
        .await
        .unwrap();
    assert_eq!(decided.status, PaymentStatus::Committed);
}

/// `sslmode=verify-full`: the server's certificate must chain to the given CA and name the
/// host; a server that only takes TLS is reached; another CA or another name is refused.
/// A wrong password is refused without echoing it.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn postgres_tls_verify_full_and_credentials() {
    let tls = ServerTls::generate();
    let server = Postgres::start_tls(&tls).await;
    let dir = tempfile::tempdir().unwrap();
    let layout = Layout::new(dir.path());
    let ca_file = dir.path().join("pg-ca.pem");
    std::fs::write(&ca_file, &tls.ca_pem).unwrap();
    let database = server.create_database("tlsdb").await;

    for host in ["localhost", "127.0.0.1"] {
        let location = PostgresLocation::parse(&database.tls_url(host, &ca_file)).unwrap();
        let store = PostgresGatewayStore::open(&location, &identity(&layout, CA, true))
            .await
            .unwrap();
        store
            .insert_user(&format!("user-{host}"), "client", "h")
            .await
            .unwrap();
        let log = StoreLocation::Postgres(Box::new(location));
        let snapshot = store::open_log(&log, &identity(&layout, CA, false))
            .await
            .unwrap()
            .unwrap()
            .snapshot()
            .await
            .unwrap();
        assert!(snapshot.payments.is_empty());
    }

    // Without TLS the server (hostssl only) turns us away.
    let plain = PostgresLocation::parse(&database.url()).unwrap();
    let refused =
        open_error(PostgresGatewayStore::open(&plain, &identity(&layout, CA, false)).await);
    assert!(refused.contains("cannot reach"), "{refused}");

    // Another CA: the certificate does not verify.
    let other_ca = ServerTls::generate();
    let other_file = dir.path().join("other-ca.pem");
    std::fs::write(&other_file, &other_ca.ca_pem).unwrap();
    let location = PostgresLocation::parse(&database.tls_url("127.0.0.1", &other_file)).unwrap();
    let untrusted =
        open_error(PostgresGatewayStore::open(&location, &identity(&layout, CA, false)).await);
    assert!(untrusted.contains("cannot reach"), "{untrusted}");
    assert!(!untrusted.contains(&database.password), "{untrusted}");

    // A wrong password: refused, and neither password shows.
    let wrong = database
        .tls_url("localhost", &ca_file)
        .replace(&format!(":{}@", database.password), ":Wr0ngPassw0rd-xyz@");
    let location = PostgresLocation::parse(&wrong).unwrap();
    let denied =
        open_error(PostgresGatewayStore::open(&location, &identity(&layout, CA, false)).await);
    assert!(denied.contains("cannot reach"), "{denied}");
    assert!(!denied.contains("Wr0ngPassw0rd-xyz"), "{denied}");
}
