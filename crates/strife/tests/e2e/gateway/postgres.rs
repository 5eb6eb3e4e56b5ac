//! The real gateway on a real PostgreSQL (`--store postgres://…`, here through
//! `STRIFE_GATEWAY_STORE`), with real banks and etcd: payments commit, a retry with the same
//! key replays, a SIGKILLed gateway finishes or aborts what it left in flight, `strife audit
//! --store` is clean; PostgreSQL going away is UNAVAILABLE and healed when it is back; an
//! empty, newer or foreign database is refused with a clear message; the URL's password never
//! reaches a log.

use std::process::Command;
use std::time::Duration;

use serde_json::Value;
use strife_proto::v1 as pb;
use tonic::Code;

use crate::support::network::{journal_entries_for, leg_states, prepared_payment_ids};
use crate::support::network::{ManualNetwork, NetworkOptions};
use crate::support::postgres::{Database, Postgres};
use crate::support::{run_expecting_exit, spawn_with_ready_line, strife_bin, wait_until, Network};

/// A network whose gateway keeps its log in `database`.
async fn network_on(database: &Database) -> ManualNetwork {
    let options = NetworkOptions {
        // --initialize: the database is empty the first time. On later starts it only checks
        // that the schema is this network's.
        gateway_args: vec!["--initialize".into()],
        gateway_env: vec![("STRIFE_GATEWAY_STORE".into(), database.url())],
        ..NetworkOptions::default()
    };
    let network = ManualNetwork::start_with(&["bank0", "bank1"], &["alice", "bob"], options).await;
    network.fund("alice", "bank0", "100.00").await;
    network.fund("bob", "bank1", "0").await;
    network
}

/// `strife audit --json --store <url>`: (exit code, report).
fn audit(network: &ManualNetwork, store: &str) -> (Option<i32>, Value) {
    let output = Command::new(strife_bin())
        .args([
            "audit",
            "--json",
            "--etcd",
            &network.etcd.endpoint,
            "--store",
            store,
        ])
        .arg("--dir")
        .arg(network.network.path())
        .output()
        .unwrap();
    let report = serde_json::from_slice(&output.stdout).unwrap_or_else(|_| {
        panic!(
            "audit printed no JSON report: {}",
            String::from_utf8_lossy(&output.stderr)
        )
    });
    (output.status.code(), report)
}

fn assert_no_password(text: &str, database: &Database, what: &str) {
    assert!(
        !text.contains(&database.password),
        "{what} shows the database password:\n{text}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gateway_on_postgres_pays_replays_recovers_and_audits_clean() {
    let postgres = Postgres::start().await;
    let database = postgres.create_database("gateway").await;
    let mut network = network_on(&database).await;
    let mut logs = String::new();

    // A payment through the CLI; then the same key sent twice straight to the gateway
    // (the CLI would answer a finished key from its outbox): one movement, the same payment.
    let (code, paid) = network.client("alice", &["pay", "--to", "bob", "--amount", "2.50"]);
    assert_eq!(code, 0, "{paid}\n{}", network.gateway_log());
    assert_eq!(paid["payment"]["status"], "COMMITTED");
    let mut alice = network.gateway_client("alice");
    let first = alice.pay(pay_request("pg-1")).await.unwrap().into_inner();
    let again = alice.pay(pay_request("pg-1")).await.unwrap().into_inner();
    assert_eq!(again, first, "a replay answers the stored payment");
    assert_eq!(network.available_minor("alice"), 8_750);
    assert_eq!(network.available_minor("bob"), 1_250);
    let (code, history) = network.client("bob", &["history"]);
    assert_eq!(code, 0);
    assert_eq!(
        history["payments"][0]["payment_id"],
        first.payment_id.as_str()
    );

    // Killed right after a durable COMMIT: the restarted gateway finishes both legs.
    logs.push_str(&network.gateway_log());
    network.stop_gateway();
    network.start_gateway(&[("STRIFE_CRASH_AT", "after_decision")]);
    let (code, queued) = network.client("alice", &["pay", "--to", "bob", "--amount", "5.00"]);
    assert_eq!(code, 75, "the gateway died mid-payment: {queued}");
    let prepared = prepared_payment_ids(&network).await;
    assert_eq!(prepared.len(), 1, "both legs PREPARED, phase 2 never sent");
    let committed_id = prepared[0].clone();
    logs.push_str(&network.gateway_log());
    network.gateway = None;
    network.start_gateway(&[]);
    let committed = pb::LegState::Committed as i32;
    let finished = wait_until(Duration::from_secs(15), || async {
        leg_states(&network, &committed_id).await == vec![committed, committed]
    })
    .await;
    assert!(
        finished,
        "recovery did not commit both legs:\n{}",
        network.gateway_log()
    );
    assert_eq!(journal_entries_for(&network, &committed_id).await, 2);
    let (code, synced) = network.client("alice", &["sync"]);
    assert_eq!(code, 0, "{synced}");
    assert_eq!(synced["results"][0]["payment_id"], committed_id.as_str());

    // Killed after the votes but before deciding: the restart aborts it (presumed abort).
    logs.push_str(&network.gateway_log());
    network.stop_gateway();
    network.start_gateway(&[("STRIFE_CRASH_AT", "after_prepare")]);
    let (code, _) = network.client("alice", &["pay", "--to", "bob", "--amount", "1.00"]);
    assert_eq!(code, 75);
    let prepared = prepared_payment_ids(&network).await;
    assert_eq!(prepared.len(), 1);
    let aborted_id = prepared[0].clone();
    logs.push_str(&network.gateway_log());
    network.gateway = None;
    network.start_gateway(&[]);
    let aborted = pb::LegState::Aborted as i32;
    let released = wait_until(Duration::from_secs(15), || async {
        leg_states(&network, &aborted_id).await == vec![aborted, aborted]
    })
    .await;
    assert!(
        released,
        "recovery did not abort both legs:\n{}",
        network.gateway_log()
    );
    // The outbox's retry of that key runs a new attempt and pays once.
    let (code, synced) = network.client("alice", &["sync"]);
    assert_eq!(code, 0, "{synced}");
    assert_ne!(synced["results"][0]["payment_id"], aborted_id.as_str());
    assert_eq!(network.available_minor("alice"), 8_750 - 500 - 100);
    assert_eq!(network.available_minor("bob"), 1_250 + 500 + 100);

    // The audit reads the same log through the PostgreSQL store: clean.
    let quiet = wait_until(Duration::from_secs(15), || async {
        audit(&network, &database.url()).0 == Some(0)
    })
    .await;
    let (code, report) = audit(&network, &database.url());
    assert!(quiet && code == Some(0), "audit: {report}");
    assert!(
        report["payments_committed"].as_u64().unwrap() >= 3,
        "{report}"
    );

    logs.push_str(&network.gateway_log());
    assert_no_password(&logs, &database, "the gateway's log");
    assert!(
        logs.contains("postgresql://gateway@127.0.0.1"),
        "the settings line names the store (without its password):\n{logs}"
    );
}

fn pay_request(key: &str) -> pb::PayRequest {
    pb::PayRequest {
        idempotency_key: key.into(),
        to_username: "bob".into(),
        amount: Some(pb::Money {
            amount_minor: 1_000,
            currency: "USD".into(),
        }),
        ..pb::PayRequest::default()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_down_is_unavailable_and_the_gateway_heals() {
    let mut postgres = Postgres::start().await;
    let database = postgres.create_database("gateway").await;
    let network = network_on(&database).await;
    let mut alice = network.gateway_client("alice");
    alice.pay(pay_request("before")).await.unwrap();

    postgres.stop();
    for key in ["down-1", "down-2"] {
        let status = alice.pay(pay_request(key)).await.unwrap_err();
        assert_eq!(status.code(), Code::Unavailable, "{status:?}");
        assert!(
            status.message().contains("the gateway's PostgreSQL store"),
            "{}",
            status.message()
        );
    }
    let status = alice
        .list_history(pb::ListHistoryRequest::default())
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::Unavailable, "{status:?}");

    postgres.restart().await;
    // The same key that failed while the store was down pays once it is back.
    let healed = wait_until(Duration::from_secs(20), || {
        let mut alice = alice.clone();
        async move { alice.pay(pay_request("down-1")).await.is_ok() }
    })
    .await;
    assert!(
        healed,
        "the gateway did not recover:\n{}",
        network.gateway_log()
    );
    assert_eq!(network.available_minor("alice"), 8_000);
    let (code, report) = audit(&network, &database.url());
    assert_eq!(code, Some(0), "{report}");
    assert_no_password(&network.gateway_log(), &database, "the gateway's log");
    assert!(
        network
            .gateway_log()
            .contains("PostgreSQL store call failed"),
        "the outage is logged:\n{}",
        network.gateway_log()
    );
}

/// `strife gateway` on `network` with `store`, expected to refuse to start: its stderr.
fn refused_start(network: &Network, store: &str, extra: &[&str]) -> String {
    let mut command = Command::new(strife_bin());
    command
        .args([
            "gateway",
            "--listen",
            "127.0.0.1:0",
            "--etcd",
            "http://127.0.0.1:1",
        ])
        .arg("--dir")
        .arg(network.path())
        .args(extra)
        .env("STRIFE_GATEWAY_STORE", store);
    let (code, stderr) = run_expecting_exit(command, Duration::from_secs(30));
    assert!(
        matches!(code, Some(code) if code != 0),
        "the gateway started: {stderr}"
    );
    stderr
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn empty_newer_or_foreign_postgres_databases_are_refused() {
    let postgres = Postgres::start().await;
    let database = postgres.create_database("gateway").await;
    let network = Network::setup(&["bank0"], &[]);

    // Empty: a first start needs --initialize.
    let empty = refused_start(&network, &database.url(), &[]);
    assert!(
        empty.contains("is empty") && empty.contains("--initialize"),
        "{empty}"
    );
    assert_no_password(&empty, &database, "the refusal");

    let mut command = Command::new(strife_bin());
    command
        .args(["gateway", "--json", "--listen", "127.0.0.1:0"])
        .args(["--etcd", "http://127.0.0.1:1", "--initialize"])
        .args(["--store", &database.url()])
        .arg("--dir")
        .arg(network.path());
    let (mut gateway, _) = spawn_with_ready_line(command, &network.path().join("gateway.log"));
    assert!(gateway.terminate(crate::support::GATEWAY_EXIT_WAIT));
    assert_no_password(&gateway.log_text(), &database, "the gateway's log");

    // Newer: written by a newer strife.
    let admin = postgres.admin("gateway").await;
    admin
        .execute("UPDATE strife_schema SET version = 99", &[])
        .await
        .unwrap();
    let newer = refused_start(&network, &database.url(), &[]);
    assert!(
        newer.contains("schema version 99") && newer.contains("newer than this strife knows"),
        "{newer}"
    );
    admin
        .execute("UPDATE strife_schema SET version = 1", &[])
        .await
        .unwrap();

    // Another network (another CA) pointed at this database, even with --initialize.
    let other = Network::setup(&["bank0"], &[]);
    let foreign = refused_start(&other, &database.url(), &["--initialize"]);
    assert!(foreign.contains("another Strife network"), "{foreign}");
    assert_no_password(&foreign, &database, "the refusal");

    // A server that is not there: a clear refusal, no password.
    let closed = database.url().replace(
        &format!(":{}/", database.port),
        &format!(":{}/", crate::support::free_port()),
    );
    let unreachable = refused_start(&network, &closed, &[]);
    assert!(
        unreachable.contains("cannot reach the gateway's PostgreSQL store"),
        "{unreachable}"
    );
    assert_no_password(&unreachable, &database, "the refusal");
}
