//! The offline outbox end to end: a real gateway stopped and started, the `strife client`
//! binary queueing while it is down and `sync` paying exactly once when it is back — even when
//! the client is SIGKILLed in the middle of a sync.

mod support;

use std::process::{Command, Stdio};
use std::time::Duration;

use support::network::{password_of, ManualNetwork};
use support::{strife_bin, wait_until};

async fn alice_and_bob() -> ManualNetwork {
    let network = ManualNetwork::start(&["bank0", "bank1"], &["alice", "bob"]).await;
    network.fund("alice", "bank0", "100.00").await;
    network.fund("bob", "bank1", "0").await;
    network
}

#[tokio::test]
async fn a_payment_made_while_the_gateway_is_down_is_queued_and_sync_pays_it_once() {
    let mut network = alice_and_bob().await;
    network.stop_gateway();

    let (code, queued) = network.client("alice", &["pay", "--to", "bob", "--amount", "12.50"]);
    assert_eq!(code, 75, "queued is its own exit status: {queued}");
    assert_eq!(queued["queued"], true);
    let key = queued["idempotency_key"].as_str().unwrap().to_owned();
    let (_, outbox) = network.client("alice", &["outbox"]);
    assert_eq!(outbox["entries"][0]["state"], "queued");
    assert_eq!(outbox["entries"][0]["idempotency_key"], key.as_str());

    network.start_gateway(&[]);
    let (code, synced) = network.client("alice", &["sync"]);
    assert_eq!(code, 0, "{synced}");
    assert_eq!(synced["results"][0]["state"], "succeeded");
    let (code, again) = network.client("alice", &["sync"]);
    assert_eq!(
        (code, again["results"].as_array().unwrap().len()),
        (0, 0),
        "nothing left to send"
    );

    assert_eq!(network.available_minor("alice"), 8_750);
    assert_eq!(network.available_minor("bob"), 1_250);
    let (_, history) = network.client("alice", &["history"]);
    assert_eq!(
        history["payments"].as_array().unwrap().len(),
        1,
        "paid exactly once"
    );
    assert_eq!(history["payments"][0]["idempotency_key"], key.as_str());
}

#[tokio::test]
async fn a_client_killed_mid_sync_loses_and_duplicates_nothing() {
    let mut network = alice_and_bob().await;
    network.stop_gateway();
    const QUEUED: usize = 20;
    for _ in 0..QUEUED {
        let (code, _) = network.client("alice", &["pay", "--to", "bob", "--amount", "1.00"]);
        assert_eq!(code, 75);
    }
    network.start_gateway(&[]);

    // Kill the syncing client once the gateway has seen some of the payments, not all.
    let mut sync = Command::new(strife_bin())
        .args([
            "client",
            "--json",
            "--gateway",
            &network.gateway_address,
            "--user",
            "alice",
            "--dir",
        ])
        .arg(network.network.path())
        .arg("sync")
        .env("STRIFE_PASSWORD", password_of("alice"))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let some_sent = wait_until(Duration::from_secs(20), || async {
        network.gateway_log().matches("Gateway/Pay").count() >= 3
    })
    .await;
    let _ = sync.kill();
    let _ = sync.wait();
    assert!(some_sent, "sync never reached the gateway");

    // A payment the killed sync left in flight answers "in progress, retry" (ABORTED) until
    // the gateway finishes it, so the rerun may need a second pass — as `sync --watch` would.
    let finished = wait_until(Duration::from_secs(20), || async {
        network.client("alice", &["sync"]).0 == 0
    })
    .await;
    assert!(finished, "the outbox never drained");
    let (_, outbox) = network.client("alice", &["outbox"]);
    let entries = outbox["entries"].as_array().unwrap();
    assert_eq!(entries.len(), QUEUED);
    assert!(
        entries.iter().all(|entry| entry["state"] == "succeeded"),
        "{outbox}"
    );

    assert_eq!(
        network.available_minor("alice"),
        10_000 - 100 * QUEUED as i64
    );
    assert_eq!(network.available_minor("bob"), 100 * QUEUED as i64);
    let (_, history) = network.client("alice", &["history", "--limit", "100"]);
    assert_eq!(
        history["payments"].as_array().unwrap().len(),
        QUEUED,
        "no payment twice"
    );
}

#[tokio::test]
async fn a_queued_payment_the_gateway_refuses_is_reported_failed_and_never_retried() {
    let mut network = alice_and_bob().await;
    network.stop_gateway();
    let (code, _) = network.client("alice", &["pay", "--to", "bob", "--amount", "500.00"]);
    assert_eq!(code, 75);
    network.start_gateway(&[]);

    let (code, synced) = network.client("alice", &["sync"]);
    assert_eq!(code, 1, "a refusal is a failure: {synced}");
    assert_eq!(synced["results"][0]["state"], "declined");
    assert!(synced["results"][0]["last_error"]
        .as_str()
        .unwrap()
        .contains("insufficient funds"));
    let pays_before = network.gateway_log().matches("Gateway/Pay").count();
    let (code, again) = network.client("alice", &["sync"]);
    assert_eq!((code, again["results"].as_array().unwrap().len()), (0, 0));
    assert_eq!(
        network.gateway_log().matches("Gateway/Pay").count(),
        pays_before,
        "never retried"
    );
    assert_eq!(network.available_minor("alice"), 10_000);
    assert_eq!(network.available_minor("bob"), 0);
}

#[tokio::test]
async fn sync_watch_sends_queued_payments_as_soon_as_the_gateway_is_back() {
    let mut network = alice_and_bob().await;
    network.stop_gateway();
    let (code, _) = network.client("alice", &["pay", "--to", "bob", "--amount", "2.00"]);
    assert_eq!(code, 75);

    let mut watcher = Command::new(strife_bin())
        .args([
            "client",
            "--json",
            "--gateway",
            &network.gateway_address,
            "--user",
            "alice",
            "--dir",
        ])
        .arg(network.network.path())
        .args(["sync", "--watch", "--until-empty"])
        .env("STRIFE_PASSWORD", password_of("alice"))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    network.start_gateway(&[]);
    let done = wait_until(Duration::from_secs(30), || {
        let exited = matches!(watcher.try_wait(), Ok(Some(status)) if status.success());
        async move { exited }
    })
    .await;
    if !done {
        let _ = watcher.kill();
    }
    assert!(
        done,
        "the watcher did not flush the outbox once the gateway was back"
    );
    assert_eq!(network.available_minor("bob"), 200);
}
