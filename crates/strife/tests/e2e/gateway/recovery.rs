//! The coordinator survives its own crash: the real gateway process aborts itself at a chosen
//! point (`STRIFE_CRASH_AT`), is restarted on the same data dir, and recovery finishes the job
//! — both legs committed exactly once after a durable COMMIT, both aborted when no decision was
//! written. The client's outbox then retries with the same key without paying twice.

use std::time::Duration;

use crate::support::network::{
    journal_entries_for, leg_states, pay_request, prepared_payment_ids, ManualNetwork,
    NetworkOptions,
};
use crate::support::proxy::{Mode, Proxy};
use crate::support::wait_until;
use strife_common::net::tls::ExpectedPeer;
use strife_proto::v1::{self as pb, coordinator_client::CoordinatorClient};

#[tokio::test]
async fn gateway_killed_after_a_durable_commit_finishes_both_legs_exactly_once() {
    let mut network = ManualNetwork::alice_and_bob().await;
    network.stop_gateway();
    network.start_gateway(&[("STRIFE_CRASH_AT", "after_decision")]);

    let (code, queued) = network.client("alice", &["pay", "--to", "bob", "--amount", "12.50"]);
    assert_eq!(
        code, 75,
        "the gateway died mid-payment, so the client queued it: {queued}"
    );
    let prepared = prepared_payment_ids(&network).await;
    assert_eq!(prepared.len(), 1, "both legs PREPARED, phase 2 never sent");
    let payment_id = prepared[0].clone();

    network.gateway = None;
    network.start_gateway(&[]);
    let committed = pb::LegState::Committed as i32;
    let finished = wait_until(Duration::from_secs(15), || async {
        leg_states(&network, &payment_id).await == vec![committed, committed]
    })
    .await;
    assert!(
        finished,
        "recovery did not commit both legs; log:\n{}",
        network.gateway_log()
    );
    assert_eq!(
        journal_entries_for(&network, &payment_id).await,
        2,
        "one debit, one credit"
    );

    // The client retries with the same key and learns the payment went through; no second movement.
    let (code, synced) = network.client("alice", &["sync"]);
    assert_eq!(code, 0, "{synced}");
    assert_eq!(synced["results"][0]["payment_id"], payment_id.as_str());
    assert_eq!(network.available_minor("alice"), 8_750);
    assert_eq!(network.available_minor("bob"), 1_250);
}

#[tokio::test]
async fn gateway_killed_before_deciding_aborts_both_legs_and_the_retry_pays_once() {
    let mut network = ManualNetwork::alice_and_bob().await;
    network.stop_gateway();
    network.start_gateway(&[("STRIFE_CRASH_AT", "after_prepare")]);

    let (code, _) = network.client("alice", &["pay", "--to", "bob", "--amount", "12.50"]);
    assert_eq!(code, 75);
    let prepared = prepared_payment_ids(&network).await;
    assert_eq!(prepared.len(), 1);
    let first_attempt = prepared[0].clone();
    let mut bank0 = network
        .network
        .gateway_bank_client(&network.banks[0].id, &network.banks[0].address.to_string());
    let listed = bank0
        .list_accounts(pb::ListAccountsRequest {})
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        listed.accounts[0].held_minor, 1_250,
        "the hold is visible while undecided"
    );

    network.gateway = None;
    network.start_gateway(&[]);
    let aborted = pb::LegState::Aborted as i32;
    let released = wait_until(Duration::from_secs(15), || async {
        leg_states(&network, &first_attempt).await == vec![aborted, aborted]
    })
    .await;
    assert!(
        released,
        "recovery did not abort both legs; log:\n{}",
        network.gateway_log()
    );
    assert!(
        network
            .gateway
            .as_mut()
            .unwrap()
            .child
            .try_wait()
            .unwrap()
            .is_none(),
        "gateway died: {}",
        network.gateway_log()
    );
    assert_eq!(network.available_minor("alice"), 10_000, "hold released");
    assert_eq!(journal_entries_for(&network, &first_attempt).await, 0);

    // A bank asking the restarted coordinator hears "abort".
    let bank_tls = network
        .network
        .tls(&network.network.layout().bank_identity("bank0"));
    let channel = bank_tls
        .endpoint(
            &network.gateway_address,
            &ExpectedPeer::Gateway,
            Duration::from_secs(5),
        )
        .unwrap()
        .connect_lazy();
    let decision = CoordinatorClient::new(channel)
        .get_decision(pb::GetDecisionRequest {
            payment_id: first_attempt.clone(),
            bank_id: "bank0".into(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(decision.decision, pb::Decision::Abort as i32);

    // The outbox retries the same key: a new attempt runs and pays exactly once.
    let (code, synced) = network.client("alice", &["sync"]);
    assert_eq!(code, 0, "{synced}");
    assert_ne!(synced["results"][0]["payment_id"], first_attempt.as_str());
    assert_eq!(network.available_minor("alice"), 8_750);
    assert_eq!(network.available_minor("bob"), 1_250);
}

/// Read-your-writes on a replay: the first attempt of a payment was decided COMMITTED but its
/// replica died before phase 2, and the payer's bank stayed out of the survivor's reach, so
/// its hold is still there when the client retries the key. The replay's COMMITTED answer
/// must come after the debit is applied, as the first answer's would have: the balance read
/// right after it shows the money gone and no hold (before the fix it showed the old balance
/// with the hold, the answer having been given straight from the stored record).
// Multi-threaded: the proxy's tasks must run while the test waits on processes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replayed_commit_answers_after_the_payers_debit_is_applied() {
    let proxy = Proxy::start().await;
    let options = NetworkOptions {
        bank_args: vec![(
            "bank0".into(),
            vec!["--advertise".into(), proxy.address().to_string()],
        )],
        ..NetworkOptions::default()
    };
    let mut network =
        ManualNetwork::start_with(&["bank0", "bank1"], &["alice", "bob"], options).await;
    proxy.set_target(network.banks[0].address);
    network.fund("alice", "bank0", "100.00").await;
    network.fund("bob", "bank1", "0").await;
    network.stop_gateway();
    network.start_gateway(&[("STRIFE_CRASH_AT", "after_decision")]);

    let mut request = pay_request("replayed-commit");
    request.amount = Some(pb::Money {
        amount_minor: 1_250,
        currency: "USD".into(),
    });
    let lost = network.gateway_client("alice").pay(request.clone()).await;
    assert!(
        lost.is_err(),
        "the gateway died after its decision: {lost:?}"
    );
    let prepared = prepared_payment_ids(&network).await;
    assert_eq!(prepared.len(), 1, "both legs PREPARED, phase 2 never sent");
    let payment_id = prepared[0].clone();

    // The survivor finishes bob's credit leg but cannot reach alice's bank.
    proxy.set_mode(Mode::Drop);
    network.gateway = None;
    network.start_gateway(&[]);
    let prepared_state = pb::LegState::Prepared as i32;
    let committed = pb::LegState::Committed as i32;
    let credit_done = wait_until(Duration::from_secs(15), || async {
        leg_states(&network, &payment_id).await == vec![prepared_state, committed]
    })
    .await;
    assert!(
        credit_done,
        "the retrier did not commit bob's leg alone; log:\n{}",
        network.gateway_log()
    );

    proxy.set_mode(Mode::Forward);
    let mut alice = network.gateway_client("alice");
    let replayed = alice.pay(request).await.unwrap().into_inner();
    assert_eq!(replayed.payment_id, payment_id);
    assert_eq!(replayed.status, pb::PaymentStatus::Committed as i32);
    let balances = alice
        .get_balances(pb::GetBalancesRequest::default())
        .await
        .unwrap()
        .into_inner();
    let minor = |money: &Option<pb::Money>| money.as_ref().map(|money| money.amount_minor);
    let account = &balances.accounts[0];
    assert_eq!(
        (minor(&account.balance), minor(&account.held)),
        (Some(8_750), Some(0)),
        "read right after the replayed COMMITTED answer: {balances:?}"
    );
    assert_eq!(journal_entries_for(&network, &payment_id).await, 2);
}
