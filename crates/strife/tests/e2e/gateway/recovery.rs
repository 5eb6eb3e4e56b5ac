//! The coordinator survives its own crash: the real gateway process aborts itself at a chosen
//! point (`STRIFE_CRASH_AT`), is restarted on the same data dir, and recovery finishes the job
//! — both legs committed exactly once after a durable COMMIT, both aborted when no decision was
//! written. The client's outbox then retries with the same key without paying twice.

use std::time::Duration;

use crate::support::network::{
    journal_entries_for, leg_states, prepared_payment_ids, ManualNetwork,
};
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
