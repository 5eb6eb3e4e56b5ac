//! The offline outbox end to end: a real gateway stopped and started, the `strife client`
//! binary queueing while it is down and `sync` paying exactly once when it is back — even when
//! the client is SIGKILLed in the middle of a sync.

use std::process::{Command, Stdio};
use std::time::Duration;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use crate::support::network::{password_of, ManualNetwork};
use crate::support::{strife_bin, wait_until, BankStart};
use strife_proto::v1::{self as pb, gateway_server};
use tonic::{Request, Response, Status};

#[tokio::test]
async fn a_payment_made_while_the_gateway_is_down_is_queued_and_sync_pays_it_once() {
    let mut network = ManualNetwork::alice_and_bob().await;
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
    let mut network = ManualNetwork::alice_and_bob().await;
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
    let mut network = ManualNetwork::alice_and_bob().await;
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
    // The log is written shortly after each request: wait for the first sync's line, then
    // for a later request's line, so everything before it is in the file.
    assert!(
        wait_until(Duration::from_secs(10), || async {
            network.gateway_log().contains("Gateway/Pay")
        })
        .await
    );
    let logged_before = network.gateway_log().len();
    let (code, again) = network.client("alice", &["sync"]);
    assert_eq!((code, again["results"].as_array().unwrap().len()), (0, 0));
    let (code, _) = network.client("alice", &["balance"]);
    assert_eq!(code, 0);
    assert!(
        wait_until(Duration::from_secs(10), || async {
            network.gateway_log()[logged_before..].contains("Gateway/GetBalances")
        })
        .await,
        "the marker request never reached the log"
    );
    assert!(
        !network.gateway_log()[logged_before..].contains("Gateway/Pay"),
        "never retried"
    );
    assert_eq!(network.available_minor("alice"), 10_000);
    assert_eq!(network.available_minor("bob"), 0);
}

#[tokio::test]
async fn sync_watch_sends_queued_payments_as_soon_as_the_gateway_is_back() {
    let mut network = ManualNetwork::alice_and_bob().await;
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

/// Kills bank `index` and waits until its etcd registration is gone.
async fn kill_bank(network: &mut ManualNetwork, index: usize, bank_id: &str) {
    network.banks[index].process.kill();
    let key = strife_common::etcd::keys::bank_key(bank_id);
    let gone = wait_until(Duration::from_secs(10), || async {
        network.etcd.get(&key).await.is_none()
    })
    .await;
    assert!(gone, "{bank_id}'s lease did not expire");
}

#[tokio::test]
async fn an_unknown_outcome_is_resolved_by_key_never_given_up_and_never_sent_twice() {
    let mut network = ManualNetwork::alice_and_bob().await;
    // bob's bank is down: the gateway answers UNAVAILABLE, which does not say whether it
    // recorded the payment, so the client must treat the outcome as unknown.
    kill_bank(&mut network, 1, "bank1").await;
    let pay = |key: &str, amount: &str| {
        network.client(
            "alice",
            &["pay", "--to", "bob", "--amount", amount, "--key", key],
        )
    };
    let (code, first) = pay("lost-reply", "3.33");
    assert_eq!(code, 75, "{first}");
    assert_eq!(first["state"], "unknown", "{first}");
    let (code, second) = pay("never-recorded", "1.00");
    assert_eq!(
        (code, second["state"].as_str()),
        (75, Some("unknown")),
        "{second}"
    );

    // Many sync runs while the bank is still down: nothing is ever given up.
    for _ in 0..3 {
        let (code, synced) = network.client("alice", &["sync"]);
        assert_eq!(code, 75, "{synced}");
        assert_eq!(synced["still_unknown"], 2, "{synced}");
    }
    let (_, outbox) = network.client("alice", &["outbox"]);
    let entries = outbox["entries"].as_array().unwrap();
    assert!(
        entries.iter().all(|entry| entry["state"] == "unknown"),
        "{outbox}"
    );
    let (_, human) = {
        let output = Command::new(strife_bin())
            .args([
                "client",
                "--gateway",
                &network.gateway_address,
                "--user",
                "alice",
            ])
            .arg("--dir")
            .arg(network.network.path())
            .arg("outbox")
            .env("STRIFE_PASSWORD", password_of("alice"))
            .output()
            .unwrap();
        (
            output.status,
            String::from_utf8_lossy(&output.stdout).into_owned(),
        )
    };
    assert!(human.contains("UNKNOWN"), "unknowns stand out:\n{human}");
    assert!(!human.contains("gave up"), "{human}");

    // The bank comes back, and the first payment reaches the gateway another way (as if the
    // lost reply had in fact been a commit): the test's own client, same key, same payment.
    let restarted = BankStart::new(&network.network, "bank1")
        .etcd(&network.etcd.endpoint)
        .arg("--lease-ttl")
        .arg("2")
        .start();
    network.banks[1] = restarted;
    let request = pb::PayRequest {
        idempotency_key: "lost-reply".into(),
        to_username: "bob".into(),
        amount: Some(pb::Money {
            amount_minor: 333,
            currency: "USD".into(),
        }),
        ..pb::PayRequest::default()
    };
    let alice = network.gateway_client("alice");
    let direct = Arc::new(std::sync::Mutex::new(None));
    let committed = wait_until(Duration::from_secs(15), || {
        let mut alice = alice.clone();
        let request = request.clone();
        let direct = Arc::clone(&direct);
        async move {
            let Ok(payment) = alice.pay(request).await else {
                return false;
            };
            *direct.lock().unwrap() = Some(payment.into_inner().payment_id);
            true
        }
    })
    .await;
    assert!(committed, "the direct payment never committed");
    let direct_id = direct.lock().unwrap().clone().unwrap();

    // The gateway writes its log on a background thread, so a line can land just after the
    // reply: wait for the lines we count on before counting.
    let pay_lines =
        |log: &str| log.matches("Gateway/Pay\"").count() + log.matches("Gateway/Pay ").count();
    let logged = wait_until(Duration::from_secs(5), || async {
        network.gateway_log().contains(&direct_id)
    })
    .await;
    assert!(logged, "the direct payment's request line");
    let pays_before = pay_lines(&network.gateway_log());
    let (code, synced) = network.client("alice", &["sync"]);
    assert_eq!(code, 0, "{synced}");
    let results = synced["results"].as_array().unwrap();
    assert_eq!(results.len(), 2, "{synced}");
    assert!(
        results.iter().all(|entry| entry["state"] == "succeeded"),
        "{synced}"
    );
    let sent_id = results
        .iter()
        .find(|entry| entry["idempotency_key"] == "never-recorded")
        .and_then(|entry| entry["payment_id"].as_str())
        .unwrap()
        .to_owned();
    let logged = wait_until(Duration::from_secs(5), || async {
        network.gateway_log().contains(&sent_id)
    })
    .await;
    assert!(logged, "the sent payment's request line");
    let log = network.gateway_log();
    let pays_after = pay_lines(&log);
    assert_eq!(
        pays_after - pays_before,
        1,
        "only the never-recorded payment was sent; the committed one was looked up"
    );
    assert!(log.contains("GetPaymentByKey"), "looked up by key");

    // Exactly once each: 3.33 + 1.00 moved, one payment per key. (A commit a bank missed in
    // the first phase-2 round is re-sent by the gateway's retrier, so wait for it.)
    let settled = wait_until(Duration::from_secs(10), || async {
        network.available_minor("bob") == 433 && network.available_minor("alice") == 10_000 - 433
    })
    .await;
    assert!(
        settled,
        "bob {} alice {}",
        network.available_minor("bob"),
        network.available_minor("alice")
    );
    let (_, history) = network.client("alice", &["history"]);
    let payments = history["payments"].as_array().unwrap();
    let committed: Vec<_> = payments
        .iter()
        .filter(|payment| payment["status"] == "COMMITTED")
        .map(|payment| payment["idempotency_key"].as_str().unwrap())
        .collect();
    assert_eq!(committed.len(), 2, "{history}");
    assert!(committed.contains(&"lost-reply") && committed.contains(&"never-recorded"));
    let (code, again) = network.client("alice", &["sync"]);
    assert_eq!((code, again["results"].as_array().unwrap().len()), (0, 0));
}

/// A stand-in in front of the real gateway, with the gateway's own certificate: it forwards
/// `Pay` and `GetPaymentByKey` to the real gateway (as alice), but answers every `Pay` with
/// `INTERNAL` — a gateway that recorded and committed the payment and then failed (a full
/// disk on a later write answers exactly so).
#[derive(Clone)]
struct InternalAfterCommit {
    upstream: crate::support::network::GatewayClient,
    pays: Arc<AtomicUsize>,
}

#[tonic::async_trait]
impl gateway_server::Gateway for InternalAfterCommit {
    type WatchPaymentsStream = futures::stream::Empty<Result<pb::PaymentEvent, Status>>;

    async fn watch_payments(
        &self,
        _: Request<pb::WatchPaymentsRequest>,
    ) -> Result<Response<Self::WatchPaymentsStream>, Status> {
        Err(Status::unimplemented("stand-in"))
    }
    async fn register_user(
        &self,
        _: Request<pb::RegisterUserRequest>,
    ) -> Result<Response<pb::User>, Status> {
        Err(Status::unimplemented("stand-in"))
    }
    async fn open_account(
        &self,
        _: Request<pb::GatewayOpenAccountRequest>,
    ) -> Result<Response<pb::LinkedAccount>, Status> {
        Err(Status::unimplemented("stand-in"))
    }
    async fn link_account(
        &self,
        _: Request<pb::LinkAccountRequest>,
    ) -> Result<Response<pb::LinkedAccount>, Status> {
        Err(Status::unimplemented("stand-in"))
    }
    async fn get_balances(
        &self,
        _: Request<pb::GetBalancesRequest>,
    ) -> Result<Response<pb::GetBalancesResponse>, Status> {
        Err(Status::unimplemented("stand-in"))
    }
    async fn pay(&self, request: Request<pb::PayRequest>) -> Result<Response<pb::Payment>, Status> {
        self.pays.fetch_add(1, Ordering::SeqCst);
        self.upstream.clone().pay(request.into_inner()).await?;
        Err(Status::internal("internal error; see the server log"))
    }
    async fn list_history(
        &self,
        _: Request<pb::ListHistoryRequest>,
    ) -> Result<Response<pb::ListHistoryResponse>, Status> {
        Err(Status::unimplemented("stand-in"))
    }
    async fn get_payment(
        &self,
        _: Request<pb::GetPaymentRequest>,
    ) -> Result<Response<pb::Payment>, Status> {
        Err(Status::unimplemented("stand-in"))
    }
    async fn get_payment_by_key(
        &self,
        request: Request<pb::GetPaymentByKeyRequest>,
    ) -> Result<Response<pb::Payment>, Status> {
        self.upstream
            .clone()
            .get_payment_by_key(request.into_inner())
            .await
    }
    async fn refund(&self, _: Request<pb::RefundRequest>) -> Result<Response<pb::Payment>, Status> {
        Err(Status::unimplemented("stand-in"))
    }
    async fn list_payments(
        &self,
        _: Request<pb::ListPaymentsRequest>,
    ) -> Result<Response<pb::ListPaymentsResponse>, Status> {
        Err(Status::unimplemented("stand-in"))
    }
    async fn list_refunds(
        &self,
        _: Request<pb::ListRefundsRequest>,
    ) -> Result<Response<pb::ListRefundsResponse>, Status> {
        Err(Status::unimplemented("stand-in"))
    }
    async fn authorize(
        &self,
        _: Request<pb::AuthorizeRequest>,
    ) -> Result<Response<pb::Payment>, Status> {
        Err(Status::unimplemented("stand-in"))
    }
    async fn capture(
        &self,
        _: Request<pb::CaptureRequest>,
    ) -> Result<Response<pb::Payment>, Status> {
        Err(Status::unimplemented("stand-in"))
    }
    async fn void(&self, _: Request<pb::VoidRequest>) -> Result<Response<pb::Payment>, Status> {
        Err(Status::unimplemented("stand-in"))
    }
    async fn create_api_key(
        &self,
        _: Request<pb::CreateApiKeyRequest>,
    ) -> Result<Response<pb::CreatedApiKey>, Status> {
        Err(Status::unimplemented("stand-in"))
    }
    async fn list_api_keys(
        &self,
        _: Request<pb::ListApiKeysRequest>,
    ) -> Result<Response<pb::ListApiKeysResponse>, Status> {
        Err(Status::unimplemented("stand-in"))
    }
    async fn revoke_api_key(
        &self,
        _: Request<pb::RevokeApiKeyRequest>,
    ) -> Result<Response<pb::ApiKey>, Status> {
        Err(Status::unimplemented("stand-in"))
    }
    async fn set_net_debit_cap(
        &self,
        _: Request<pb::SetNetDebitCapRequest>,
    ) -> Result<Response<pb::BankPosition>, Status> {
        Err(Status::unimplemented("stand-in"))
    }
    async fn get_positions(
        &self,
        _: Request<pb::GetPositionsRequest>,
    ) -> Result<Response<pb::GetPositionsResponse>, Status> {
        Err(Status::unimplemented("stand-in"))
    }
    async fn list_settlement_windows(
        &self,
        _: Request<pb::ListSettlementWindowsRequest>,
    ) -> Result<Response<pb::ListSettlementWindowsResponse>, Status> {
        Err(Status::unimplemented("stand-in"))
    }
    async fn close_settlement_window(
        &self,
        _: Request<pb::CloseSettlementWindowRequest>,
    ) -> Result<Response<pb::SettlementReport>, Status> {
        Err(Status::unimplemented("stand-in"))
    }
    async fn get_settlement_report(
        &self,
        _: Request<pb::GetSettlementReportRequest>,
    ) -> Result<Response<pb::SettlementReport>, Status> {
        Err(Status::unimplemented("stand-in"))
    }
    async fn mark_settled(
        &self,
        _: Request<pb::MarkSettledRequest>,
    ) -> Result<Response<pb::SettlementReport>, Status> {
        Err(Status::unimplemented("stand-in"))
    }
}

// Multi-threaded: the CLI runs as a blocking child process while the stand-in, on this
// runtime, must keep serving it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn internal_is_not_final_a_committed_payment_answered_internal_resolves_to_succeeded() {
    let mut network = ManualNetwork::alice_and_bob().await;
    let pays = Arc::new(AtomicUsize::new(0));
    let stand_in = InternalAfterCommit {
        upstream: network.gateway_client("alice"),
        pays: Arc::clone(&pays),
    };
    let tls = network
        .network
        .tls(&network.network.layout().gateway_identity());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let stand_in_address = listener.local_addr().unwrap().to_string();
    let server = tonic::transport::Server::builder()
        .tls_config(tls.server_config())
        .unwrap()
        .add_service(gateway_server::GatewayServer::new(stand_in))
        .serve_with_incoming(tokio_stream::wrappers::TcpListenerStream::new(listener));
    tokio::spawn(server);

    let real_address = std::mem::replace(&mut network.gateway_address, stand_in_address);
    let (code, paid) = network.client(
        "alice",
        &[
            "pay",
            "--to",
            "bob",
            "--amount",
            "3.33",
            "--key",
            "disk-full",
        ],
    );
    assert_eq!(code, 75, "INTERNAL leaves the outcome open: {paid}");
    assert_eq!(paid["state"], "unknown", "not declined: {paid}");
    let (code, synced) = network.client("alice", &["sync"]);
    assert_eq!(code, 0, "{synced}");
    assert_eq!(synced["results"][0]["state"], "succeeded", "{synced}");
    assert_eq!(
        pays.load(Ordering::SeqCst),
        1,
        "resolved by key, never sent again"
    );
    network.gateway_address = real_address;

    let settled = wait_until(Duration::from_secs(10), || async {
        network.available_minor("bob") == 333
    })
    .await;
    assert!(
        settled,
        "paid exactly once: bob has {}",
        network.available_minor("bob")
    );
    let (_, outbox) = network.client("alice", &["outbox"]);
    assert_eq!(outbox["entries"][0]["state"], "succeeded", "{outbox}");
}
