//! The gateway facing broken banks: one that stalls in prepare (behind a proxy that holds its
//! bytes) and one that is down. The payment aborts, no hold or money is left behind anywhere,
//! and the stalled bank ends ABORTED once it is reachable again.

use std::time::Duration;

use crate::support::network::{ManualNetwork, NetworkOptions};
use crate::support::proxy::{Mode, Proxy};
use crate::support::wait_until;
use strife_common::failure::reason_of;
use strife_common::metadata::PAYMENT_ID_KEY;
use strife_proto::v1 as pb;
use tonic::Code;

fn pay(key: &str) -> pb::PayRequest {
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

async fn accounts_and_holds(network: &ManualNetwork, index: usize) -> (Vec<(i64, i64)>, usize) {
    let listed = network
        .bank(index)
        .list_accounts(pb::ListAccountsRequest {})
        .await
        .unwrap()
        .into_inner();
    let accounts = listed
        .accounts
        .iter()
        .map(|account| (account.balance_minor, account.held_minor))
        .collect();
    (accounts, listed.prepared_legs.len())
}

// Multi-threaded: the proxy's tasks must run while the test blocks on the client binary.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bank_stalled_in_prepare_times_out_and_every_leg_ends_aborted() {
    let proxy = Proxy::start().await;
    let options = NetworkOptions {
        bank_args: vec![(
            "bank1".into(),
            vec!["--advertise".into(), proxy.address().to_string()],
        )],
        ..NetworkOptions::default()
    };
    let network = ManualNetwork::start_with(&["bank0", "bank1"], &["alice", "bob"], options).await;
    proxy.set_target(network.banks[1].address);
    network.fund("alice", "bank0", "100.00").await;
    network.fund("bob", "bank1", "0").await;

    proxy.set_mode(Mode::Stall);
    let mut alice = network.gateway_client("alice");
    let status = alice.pay(pay("stalled")).await.unwrap_err();
    assert_eq!(status.code(), Code::Unavailable, "{status:?}");
    assert_eq!(reason_of(&status).as_deref(), Some("bank_timeout"));
    assert!(
        status.message().contains("bank1"),
        "the reason names the bank: {}",
        status.message()
    );
    let payment_id = status
        .metadata()
        .get(PAYMENT_ID_KEY)
        .unwrap()
        .to_str()
        .unwrap()
        .to_owned();
    assert_eq!(
        accounts_and_holds(&network, 0).await,
        (vec![(10_000, 0)], 0),
        "alice's hold was released"
    );

    proxy.set_mode(Mode::Forward);
    let aborted = pb::LegState::Aborted as i32;
    let settled = wait_until(Duration::from_secs(15), || {
        let mut bank1 = network.bank(1);
        let payment_id = payment_id.clone();
        async move {
            let request = pb::LegRequest {
                settle_minor: 0,
                payment_id,
                role: pb::LegRole::Credit as i32,
            };
            matches!(bank1.get_leg(request).await, Ok(leg) if leg.get_ref().state == aborted)
        }
    })
    .await;
    assert!(
        settled,
        "the stalled bank's leg never ended ABORTED; log:\n{}",
        network.gateway_log()
    );
    assert_eq!(accounts_and_holds(&network, 1).await, (vec![(0, 0)], 0));
    let history = alice
        .list_history(pb::ListHistoryRequest::default())
        .await
        .unwrap()
        .into_inner()
        .payments;
    assert_eq!(history[0].status, pb::PaymentStatus::Aborted as i32);
    assert_eq!(history[0].reason_code, "bank_timeout");

    // The same key may be retried once the bank answers again, and then pays once.
    let paid = alice.pay(pay("stalled")).await.unwrap().into_inner();
    assert_ne!(paid.payment_id, payment_id);
    assert_eq!(accounts_and_holds(&network, 1).await, (vec![(1_000, 0)], 0));
}

#[tokio::test]
async fn a_bank_that_is_down_makes_payments_unavailable_and_changes_nothing() {
    let mut network = ManualNetwork::start(&["bank0", "bank1"], &["alice", "bob"]).await;
    network.fund("alice", "bank0", "100.00").await;
    network.fund("bob", "bank1", "0").await;

    network.banks[1].process.kill();
    let key = strife_common::etcd::keys::bank_key("bank1");
    let gone = wait_until(Duration::from_secs(10), || async {
        network.etcd.get(&key).await.is_none()
    })
    .await;
    assert!(gone, "bank1's lease did not expire");
    let mut alice = network.gateway_client("alice");
    let unavailable = wait_until(Duration::from_secs(5), || {
        let mut alice = alice.clone();
        async move { matches!(alice.pay(pay("down")).await, Err(status) if status.code() == Code::Unavailable && status.message().contains("bank1")) }
    })
    .await;
    assert!(
        unavailable,
        "paying a down bank must be UNAVAILABLE naming it"
    );
    let status = alice.pay(pay("down")).await.unwrap_err();
    assert!(
        status.message().contains("not available"),
        "{}",
        status.message()
    );
    assert!(alice
        .list_history(pb::ListHistoryRequest::default())
        .await
        .unwrap()
        .into_inner()
        .payments
        .is_empty());
    assert_eq!(
        accounts_and_holds(&network, 0).await,
        (vec![(10_000, 0)], 0)
    );
    network.banks.truncate(1);
}
