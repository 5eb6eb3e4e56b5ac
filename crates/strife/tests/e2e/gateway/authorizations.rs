//! Authorizations (docs/SPEC.md §4) on real processes: funds held at the payer's bank and
//! announced at the payee's until a capture moves them, a void releases them, or the expiry
//! does; who may do which; and an expiry that falls while the gateway is dead is carried out
//! by the gateway that comes back, never before its time and never after a capture.

use std::time::Duration;

use crate::support::network::{GatewayClient, ManualNetwork};
use crate::support::wait_until;
use strife_common::failure::reason_of;
use strife_common::time::now_unix_ms;
use strife_proto::v1 as pb;
use tonic::{Code, Status};

fn authorize_request(
    key: &str,
    amount_minor: i64,
    expires_in_seconds: u32,
) -> pb::AuthorizeRequest {
    pb::AuthorizeRequest {
        idempotency_key: key.into(),
        to_username: "bob".into(),
        amount: Some(pb::Money {
            amount_minor,
            currency: "USD".into(),
        }),
        expires_in_seconds,
        metadata: [("order".to_owned(), key.to_owned())].into(),
        ..pb::AuthorizeRequest::default()
    }
}

async fn authorize(
    client: &mut GatewayClient,
    key: &str,
    amount_minor: i64,
    expires_in: u32,
) -> pb::Payment {
    client
        .authorize(authorize_request(key, amount_minor, expires_in))
        .await
        .unwrap_or_else(|status| panic!("authorize {key}: {status:?}"))
        .into_inner()
}

async fn capture(client: &mut GatewayClient, payment_id: &str) -> Result<pb::Payment, Status> {
    client
        .capture(pb::CaptureRequest {
            amount: None,
            payment_id: payment_id.into(),
        })
        .await
        .map(tonic::Response::into_inner)
}

async fn void(client: &mut GatewayClient, payment_id: &str) -> Result<pb::Payment, Status> {
    client
        .void(pb::VoidRequest {
            payment_id: payment_id.into(),
        })
        .await
        .map(tonic::Response::into_inner)
}

async fn payment(client: &mut GatewayClient, payment_id: &str) -> pb::Payment {
    client
        .get_payment(pb::GetPaymentRequest {
            payment_id: payment_id.into(),
        })
        .await
        .unwrap()
        .into_inner()
}

/// (balance, held) of the caller's first account, in minor units.
async fn funds(client: &mut GatewayClient) -> (i64, i64) {
    let balances = client
        .get_balances(pb::GetBalancesRequest::default())
        .await
        .unwrap()
        .into_inner();
    let minor = |money: &Option<pb::Money>| money.as_ref().map_or(0, |money| money.amount_minor);
    let account = &balances.accounts[0];
    (minor(&account.balance), minor(&account.held))
}

/// A refusal's gRPC code and Strife reason.
fn refusal<T: std::fmt::Debug>(result: Result<T, Status>) -> (Code, String) {
    let status = result.expect_err("expected a refusal");
    (status.code(), reason_of(&status).unwrap_or_default())
}

const AUTHORIZED: i32 = pb::PaymentStatus::Authorized as i32;
const COMMITTED: i32 = pb::PaymentStatus::Committed as i32;
const ABORTED: i32 = pb::PaymentStatus::Aborted as i32;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_capture_moves_the_held_funds_and_a_void_releases_them() {
    let network = ManualNetwork::alice_and_bob().await;
    let mut alice = network.gateway_client("alice");
    let mut bob = network.gateway_client("bob");

    let held = authorize(&mut alice, "hotel-1", 2_500, 3_600).await;
    assert_eq!(held.status, AUTHORIZED, "{held:?}");
    assert!(held.expires_unix_ms > now_unix_ms() + 3_500_000, "{held:?}");
    assert!(held.authorized_unix_ms > 0);
    assert_eq!(
        held.metadata.get("order").map(String::as_str),
        Some("hotel-1")
    );
    // Held, not moved: the balance stays, the available balance falls.
    assert_eq!(funds(&mut alice).await, (10_000, 2_500));
    assert_eq!(funds(&mut bob).await, (0, 0));
    assert_eq!(network.prepared_legs().await.len(), 2);
    // The same key answers the same authorization; a payment cannot reuse it.
    let again = authorize(&mut alice, "hotel-1", 2_500, 60).await;
    assert_eq!(again.payment_id, held.payment_id);
    assert_eq!(again.expires_unix_ms, held.expires_unix_ms);
    let mut as_payment = crate::support::network::pay_request("hotel-1");
    as_payment.amount = Some(pb::Money {
        amount_minor: 2_500,
        currency: "USD".into(),
    });
    assert_eq!(
        refusal(alice.pay(as_payment).await).0,
        Code::InvalidArgument
    );
    let (audited, audit) = network.audit();
    assert!(audited, "an open authorization is consistent:\n{audit}");

    // The payer may not capture; the payee does, once.
    assert_eq!(
        refusal(capture(&mut alice, &held.payment_id).await).0,
        Code::PermissionDenied
    );
    let captured = capture(&mut bob, &held.payment_id).await.unwrap();
    assert_eq!(captured.status, COMMITTED, "{captured:?}");
    assert!(captured.decided_unix_ms < captured.expires_unix_ms);
    assert_eq!(funds(&mut alice).await, (7_500, 0));
    assert_eq!(funds(&mut bob).await, (2_500, 0));
    let retried = capture(&mut bob, &held.payment_id).await.unwrap();
    assert_eq!(
        retried.decided_unix_ms, captured.decided_unix_ms,
        "answered again"
    );
    assert_eq!(
        refusal(void(&mut alice, &held.payment_id).await),
        (Code::FailedPrecondition, "payment_not_authorized".into())
    );

    // A second one, voided by its payer: the hold comes back and nothing moves.
    let second = authorize(&mut alice, "hotel-2", 1_000, 3_600).await;
    assert_eq!(funds(&mut alice).await, (7_500, 1_000));
    let voided = void(&mut alice, &second.payment_id).await.unwrap();
    assert_eq!(voided.status, ABORTED);
    assert_eq!(voided.reason_code, "authorization_voided");
    assert_eq!(funds(&mut alice).await, (7_500, 0));
    assert_eq!(
        void(&mut bob, &second.payment_id).await.unwrap().status,
        ABORTED
    );
    assert_eq!(
        refusal(capture(&mut bob, &second.payment_id).await),
        (Code::FailedPrecondition, "payment_not_authorized".into())
    );
    let ok = wait_until(Duration::from_secs(10), || async {
        network.prepared_legs().await.is_empty()
    })
    .await;
    assert!(ok, "legs still held: {:?}", network.prepared_legs().await);

    // Captured money is refunded like a payment's.
    let refund = bob
        .refund(pb::RefundRequest {
            payment_id: held.payment_id.clone(),
            idempotency_key: "hotel-1-refund".into(),
            amount: Some(pb::Money {
                amount_minor: 500,
                currency: "USD".into(),
            }),
            ..pb::RefundRequest::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(refund.status, COMMITTED);
    assert_eq!(funds(&mut alice).await, (8_000, 0));
    let (audited, audit) = network.audit();
    assert!(audited, "{audit}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_capture_of_part_moves_that_much_and_releases_the_rest() {
    let network = ManualNetwork::alice_and_bob().await;
    let mut alice = network.gateway_client("alice");
    let mut bob = network.gateway_client("bob");
    let held = authorize(&mut alice, "hotel", 10_000, 3_600).await;
    assert_eq!(funds(&mut alice).await, (10_000, 10_000));
    let usd = |amount_minor| {
        Some(pb::Money {
            amount_minor,
            currency: "USD".into(),
        })
    };
    let part = |amount| pb::CaptureRequest {
        payment_id: held.payment_id.clone(),
        amount,
    };
    let (code, _) = refusal(bob.capture(part(usd(10_001))).await);
    assert_eq!(code, Code::InvalidArgument, "more than authorized");
    let eur = Some(pb::Money {
        amount_minor: 100,
        currency: "EUR".into(),
    });
    assert_eq!(
        refusal(bob.capture(part(eur)).await).0,
        Code::InvalidArgument
    );
    assert_eq!(funds(&mut alice).await, (10_000, 10_000), "nothing moved");

    let captured = bob.capture(part(usd(3_000))).await.unwrap().into_inner();
    assert_eq!(captured.status, COMMITTED);
    assert_eq!(captured.amount.as_ref().unwrap().amount_minor, 3_000);
    assert_eq!(captured.authorized.as_ref().unwrap().amount_minor, 10_000);
    assert_eq!(funds(&mut alice).await, (7_000, 0), "the rest released");
    assert_eq!(funds(&mut bob).await, (3_000, 0));
    // A retry answers the capture as it was.
    let again = bob.capture(part(usd(3_000))).await.unwrap().into_inner();
    assert_eq!(again.amount, captured.amount);
    // What can be refunded is what was captured.
    let too_much = bob
        .refund(pb::RefundRequest {
            payment_id: held.payment_id.clone(),
            idempotency_key: "refund-too-much".into(),
            amount: usd(3_001),
            ..pb::RefundRequest::default()
        })
        .await;
    assert_eq!(
        refusal(too_much),
        (Code::FailedPrecondition, "refund_exceeds_payment".into())
    );
    let (audited, audit) = network.audit();
    assert!(audited, "{audit}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn authorization_requests_are_checked_and_strangers_see_nothing() {
    let network = ManualNetwork::start(&["bank0", "bank1"], &["alice", "bob", "carol"]).await;
    network.fund("alice", "bank0", "100.00").await;
    network.fund("bob", "bank1", "0").await;
    network.fund("carol", "bank1", "0").await;
    let mut alice = network.gateway_client("alice");
    let mut carol = network.gateway_client("carol");

    for expires_in in [0, 604_801] {
        let (code, _) = refusal(
            alice
                .authorize(authorize_request("bad", 100, expires_in))
                .await,
        );
        assert_eq!(code, Code::InvalidArgument, "expires_in {expires_in}");
    }
    let broke = alice
        .authorize(authorize_request("too-much", 20_000, 60))
        .await;
    assert_eq!(
        refusal(broke),
        (Code::FailedPrecondition, "insufficient_funds".into())
    );
    let held = authorize(&mut alice, "mine", 100, 60).await;
    // Carol has no part in it: it answers as if it did not exist.
    assert_eq!(
        refusal(capture(&mut carol, &held.payment_id).await).0,
        Code::NotFound
    );
    assert_eq!(
        refusal(void(&mut carol, &held.payment_id).await).0,
        Code::NotFound
    );
    assert_eq!(
        refusal(capture(&mut carol, "no-such").await).0,
        Code::NotFound
    );
    assert_eq!(
        refusal(capture(&mut carol, "").await).0,
        Code::InvalidArgument
    );
    // A plain payment is not an authorization.
    let mut pay = crate::support::network::pay_request("plain");
    pay.amount = Some(pb::Money {
        amount_minor: 100,
        currency: "USD".into(),
    });
    let plain = alice.pay(pay).await.unwrap().into_inner();
    let mut bob = network.gateway_client("bob");
    assert_eq!(
        refusal(capture(&mut bob, &plain.payment_id).await),
        (Code::FailedPrecondition, "payment_not_authorized".into())
    );
    // The admin may capture anyone's.
    let mut admin = network.gateway_client("admin");
    assert_eq!(
        capture(&mut admin, &held.payment_id).await.unwrap().status,
        COMMITTED
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_authorization_expires_at_its_time_and_is_never_captured_after() {
    let network = ManualNetwork::alice_and_bob().await;
    let mut alice = network.gateway_client("alice");
    let mut bob = network.gateway_client("bob");

    let held = authorize(&mut alice, "short", 1_500, 2).await;
    // Never released before its time.
    let before = payment(&mut alice, &held.payment_id).await;
    if now_unix_ms() < held.expires_unix_ms {
        assert_eq!(before.status, AUTHORIZED);
    }
    let expired = wait_until(Duration::from_secs(15), || async {
        payment(&mut network.gateway_client("alice"), &held.payment_id)
            .await
            .status
            == ABORTED
    })
    .await;
    assert!(expired, "not released; log:\n{}", network.gateway_log());
    let after = payment(&mut alice, &held.payment_id).await;
    assert_eq!(after.reason_code, "authorization_expired");
    assert!(
        after.decided_unix_ms >= held.expires_unix_ms,
        "released early: {after:?}"
    );
    assert_eq!(
        refusal(capture(&mut bob, &held.payment_id).await),
        (Code::FailedPrecondition, "authorization_expired".into())
    );
    let released = wait_until(Duration::from_secs(10), || async {
        network.prepared_legs().await.is_empty()
    })
    .await;
    assert!(released, "{:?}", network.prepared_legs().await);
    assert_eq!(funds(&mut alice).await, (10_000, 0));
    let (audited, audit) = network.audit();
    assert!(audited, "{audit}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn authorizations_survive_a_gateway_kill_and_expire_when_it_is_back() {
    let mut network = ManualNetwork::alice_and_bob().await;
    let mut alice = network.gateway_client("alice");
    let short = authorize(&mut alice, "short", 1_000, 2).await;
    let long = authorize(&mut alice, "long", 2_000, 3_600).await;

    // SIGKILL, and stay down past the short one's expiry.
    network.gateway = None;
    let past = wait_until(Duration::from_secs(10), || async {
        now_unix_ms() > short.expires_unix_ms + 500
    })
    .await;
    assert!(past);
    network.start_gateway(&[]);
    let mut alice = network.gateway_client("alice");
    let expired = wait_until(Duration::from_secs(15), || async {
        payment(&mut network.gateway_client("alice"), &short.payment_id)
            .await
            .status
            == ABORTED
    })
    .await;
    assert!(
        expired,
        "not released after restart; log:\n{}",
        network.gateway_log()
    );
    assert_eq!(
        payment(&mut alice, &short.payment_id).await.reason_code,
        "authorization_expired"
    );
    // The other one kept its hold through the restart and is captured now.
    assert_eq!(
        payment(&mut alice, &long.payment_id).await.status,
        AUTHORIZED
    );
    let mut bob = network.gateway_client("bob");
    assert_eq!(
        capture(&mut bob, &long.payment_id).await.unwrap().status,
        COMMITTED
    );
    let settled = wait_until(Duration::from_secs(10), || async {
        network.prepared_legs().await.is_empty()
    })
    .await;
    assert!(settled, "{:?}", network.prepared_legs().await);
    assert_eq!(funds(&mut alice).await, (8_000, 0));
    let (audited, audit) = network.audit();
    assert!(audited, "{audit}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_capture_whose_gateway_dies_after_the_decision_is_finished_in_part_by_the_next() {
    let mut network = ManualNetwork::alice_and_bob().await;
    let held = authorize(&mut network.gateway_client("alice"), "crash", 10_000, 3_600).await;
    network.stop_gateway();
    network.start_gateway(&[("STRIFE_CRASH_AT", "after_decision")]);
    let lost = network
        .gateway_client("bob")
        .capture(pb::CaptureRequest {
            payment_id: held.payment_id.clone(),
            amount: Some(pb::Money {
                amount_minor: 2_500,
                currency: "USD".into(),
            }),
        })
        .await;
    assert!(
        lost.is_err(),
        "the gateway died after the capture's decision: {lost:?}"
    );
    // Nothing reached the banks yet: both legs still hold the authorized amount.
    assert_eq!(network.prepared_legs().await.len(), 2);

    network.gateway = None;
    network.start_gateway(&[]);
    let finished = wait_until(Duration::from_secs(15), || async {
        network.prepared_legs().await.is_empty()
    })
    .await;
    assert!(finished, "not finished; log:\n{}", network.gateway_log());
    let mut alice = network.gateway_client("alice");
    assert_eq!(
        funds(&mut alice).await,
        (7_500, 0),
        "2,500 moved, the rest released"
    );
    assert_eq!(funds(&mut network.gateway_client("bob")).await, (2_500, 0));
    let stored = payment(&mut alice, &held.payment_id).await;
    assert_eq!(stored.status, COMMITTED);
    assert_eq!(stored.amount.unwrap().amount_minor, 2_500);
    let (audited, audit) = network.audit();
    assert!(audited, "{audit}");
}

/// On PostgreSQL replicas: the replica that made two authorizations is SIGKILLed; the
/// survivor expires one at its time (bounded late: the takeover bound plus a retry round,
/// docs/SPEC.md §4), while the other keeps its hold and is captured through the survivor.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn on_replicas_a_killed_coordinators_authorizations_expire_or_are_captured_by_a_survivor() {
    use crate::support::replicas::{lease_ttl, ReplicaNetwork, TAKEOVER_SCAN};
    let mut network = ReplicaNetwork::start(2, &["bank0", "bank1"], &["alice", "bob"]).await;
    network.fund("alice", "bank0", "100.00").await;
    network.fund("bob", "bank1", "0").await;
    let timeout = Duration::from_secs(10);
    let mut alice_at_r0 = network.client_at(0, "alice", timeout);
    let short = authorize(&mut alice_at_r0, "short", 1_000, 3).await;
    let long = authorize(&mut alice_at_r0, "long", 2_000, 3_600).await;
    network.kill(0);

    let mut alice = network.client_at(1, "alice", timeout);
    let bound = lease_ttl() + TAKEOVER_SCAN + Duration::from_secs(2);
    let expired = wait_until(Duration::from_secs(20), || async {
        payment(
            &mut network.client_at(1, "alice", timeout),
            &short.payment_id,
        )
        .await
        .status
            == ABORTED
    })
    .await;
    assert!(expired, "not expired by the survivor:\n{}", network.logs());
    let after = payment(&mut alice, &short.payment_id).await;
    assert_eq!(after.reason_code, "authorization_expired");
    assert!(
        after.decided_unix_ms >= short.expires_unix_ms,
        "early: {after:?}"
    );
    let late_ms = after.decided_unix_ms - short.expires_unix_ms;
    assert!(
        late_ms <= i64::try_from(bound.as_millis()).unwrap(),
        "released {late_ms} ms after its expiry, past the bound {bound:?}"
    );

    let mut bob = network.client_at(1, "bob", timeout);
    assert_eq!(
        capture(&mut bob, &long.payment_id).await.unwrap().status,
        COMMITTED
    );
    let settled = wait_until(Duration::from_secs(15), || async {
        network.prepared_legs().await.is_empty()
    })
    .await;
    assert!(settled, "{:?}", network.prepared_legs().await);
    assert_eq!(funds(&mut alice).await, (8_000, 0));
    network.assert_audit_clean(Duration::from_secs(20)).await;
}
