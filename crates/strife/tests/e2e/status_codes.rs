//! gRPC's status table for requests that are too big, as a foreign client sees it: a status
//! it can act on (`RESOURCE_EXHAUSTED`), never a bare HTTP error, a reset or `OUT_OF_RANGE`.

use crate::support::network::ManualNetwork;
use strife_proto::v1 as pb;
use tonic::metadata::MetadataValue;
use tonic::{Code, Request};

fn padded<T>(message: T, bytes: usize) -> Request<T> {
    let mut request = Request::new(message);
    let padding = MetadataValue::try_from("p".repeat(bytes)).unwrap();
    request.metadata_mut().insert("x-padding", padding);
    request
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oversized_metadata_and_messages_are_resource_exhausted_at_gateway_and_bank() {
    let network = ManualNetwork::start(&["bank0"], &["alice"]).await;
    network.fund("alice", "bank0", "1.00").await;
    let mut alice = network.gateway_client("alice");
    let mut bank = network.bank(0);

    // 20 KiB of metadata: over Strife's limit, under HTTP/2's, so a status comes back.
    let status = alice
        .get_balances(padded(pb::GetBalancesRequest::default(), 20 * 1024))
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::ResourceExhausted, "{status:?}");
    let status = bank
        .list_accounts(padded(pb::ListAccountsRequest {}, 20 * 1024))
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::ResourceExhausted, "{status:?}");

    // A 1 MiB message.
    let huge = "x".repeat(1 << 20);
    let status = alice
        .get_payment(pb::GetPaymentRequest {
            payment_id: huge.clone(),
        })
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::ResourceExhausted, "{status:?}");
    let status = bank
        .get_balance(pb::GetBalanceRequest {
            account_number: huge,
        })
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::ResourceExhausted, "{status:?}");

    // Metadata within bounds still works.
    alice
        .get_balances(padded(pb::GetBalancesRequest::default(), 1024))
        .await
        .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unknown_methods_and_services_are_unimplemented() {
    use strife_common::tls::ExpectedPeer;
    use strife_proto::v1::{bank_client::BankClient, coordinator_client::CoordinatorClient};

    let network = ManualNetwork::start(&["bank0"], &["alice"]).await;
    network.fund("alice", "bank0", "1.00").await;
    let layout = network.network.layout();
    let tls = network.network.tls(&layout.user_identity("alice"));
    let channel = tls
        .endpoint(
            &network.gateway_address,
            &ExpectedPeer::Gateway,
            std::time::Duration::from_secs(5),
        )
        .unwrap()
        .connect_lazy();

    // A method the Gateway service does not have, with and without credentials.
    let mut raw = tonic::client::Grpc::new(channel.clone());
    raw.ready().await.unwrap();
    let path = http::uri::PathAndQuery::from_static("/strife.v1.Gateway/NoSuchMethod");
    let status = raw
        .unary::<_, pb::GetBalancesResponse, _>(
            Request::new(pb::GetBalancesRequest::default()),
            path,
            tonic_prost::ProstCodec::<pb::GetBalancesRequest, pb::GetBalancesResponse>::default(),
        )
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::Unimplemented, "{status:?}");

    // A service the gateway does not serve.
    let status = BankClient::new(channel)
        .list_accounts(pb::ListAccountsRequest {})
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::Unimplemented, "{status:?}");

    // And at a bank, as the gateway.
    let gateway_tls = network.network.tls(&layout.gateway_identity());
    let bank_channel = gateway_tls
        .endpoint(
            &network.banks[0].address.to_string(),
            &ExpectedPeer::Bank("bank0".into()),
            std::time::Duration::from_secs(5),
        )
        .unwrap()
        .connect_lazy();
    let status = CoordinatorClient::new(bank_channel)
        .get_decision(pb::GetDecisionRequest::default())
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::Unimplemented, "{status:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refusals_carry_an_error_info_a_foreign_client_can_read() {
    use tonic_types::StatusExt;

    let network = ManualNetwork::start(&["bank0", "bank1"], &["alice", "bob"]).await;
    network.fund("alice", "bank0", "1.00").await;
    network.fund("bob", "bank1", "0").await;
    let mut alice = network.gateway_client("alice");

    let status = alice
        .get_payment(pb::GetPaymentRequest {
            payment_id: "no-such-payment".into(),
        })
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::NotFound);
    let info = status.get_details_error_info().expect("ErrorInfo attached");
    assert_eq!(
        (info.reason.as_str(), info.domain.as_str()),
        ("not_found", "strife")
    );

    let status = alice
        .pay(pb::PayRequest {
            idempotency_key: "too-much".into(),
            to_username: "bob".into(),
            amount: Some(pb::Money {
                amount_minor: 1_000_000,
                currency: "USD".into(),
            }),
            ..pb::PayRequest::default()
        })
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::FailedPrecondition);
    let info = status.get_details_error_info().expect("ErrorInfo attached");
    assert_eq!(info.reason, "insufficient_funds");
    assert_eq!(
        strife_common::failure::reason_of(&status).as_deref(),
        Some("insufficient_funds")
    );
}
