//! gRPC with API keys (`--grpc-api-key-listen`, on in `strife dev`): a tonic client that has
//! no certificate of the network's, only its CA to check the server with, calls
//! `strife.v1.Gateway` with `authorization: Bearer sk_…`. The key's scopes and its owner's
//! money bound it exactly as over HTTP; no key, a wrong one or a revoked one is
//! `UNAUTHENTICATED`; the coordinator and health services are not served there.

use std::time::Duration;

use strife_proto::v1::{self as pb, coordinator_client::CoordinatorClient, gateway_client};
use tonic::transport::{Certificate, Channel, ClientTlsConfig, Endpoint};
use tonic::{Code, Request};

use super::api::Api;

async fn channel(api: &Api) -> Channel {
    let address = api.network.ready["grpc_api_key"][0]
        .as_str()
        .expect("strife dev prints the gRPC-with-API-keys addresses")
        .to_owned();
    let ca = std::fs::read(api.network.dir().join("pki/ca.crt")).unwrap();
    Endpoint::from_shared(format!("https://{address}"))
        .unwrap()
        .tls_config(
            ClientTlsConfig::new()
                .ca_certificate(Certificate::from_pem(ca))
                .domain_name("localhost"),
        )
        .unwrap()
        .timeout(Duration::from_secs(20))
        .connect()
        .await
        .unwrap()
}

/// `body` with `key` as its bearer credential (none when `None`).
fn keyed<T>(key: Option<&str>, body: T) -> Request<T> {
    let mut request = Request::new(body);
    if let Some(key) = key {
        request
            .metadata_mut()
            .insert("authorization", format!("Bearer {key}").parse().unwrap());
    }
    request
}

fn pay(key: &str, amount_minor: i64) -> pb::PayRequest {
    pb::PayRequest {
        idempotency_key: key.into(),
        to_username: "bob".into(),
        amount: Some(pb::Money {
            amount_minor,
            currency: "USD".into(),
        }),
        metadata: [("via".to_owned(), "grpc-api-key".to_owned())].into(),
        ..pb::PayRequest::default()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_api_key_calls_the_gateway_over_grpc_within_its_scopes() {
    let api = Api::start(&[]);
    let alice = api.key("alice");
    let mut gateway = gateway_client::GatewayClient::new(channel(&api).await);

    let before = api.network.available_minor("alice");
    let paid = gateway
        .pay(keyed(Some(&alice), pay("grpc-key-1", 125)))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(paid.status, pb::PaymentStatus::Committed as i32);
    assert_eq!(paid.from_username, "alice");
    assert_eq!(api.network.available_minor("alice"), before - 125);
    // The same key space as every transport: the HTTP API replays it.
    let over_http = api.call("GET", "payments/by-key/grpc-key-1", Some(&alice), None);
    assert_eq!(over_http.body["payment_id"], paid.payment_id.as_str());
    assert_eq!(over_http.body["metadata"]["via"], "grpc-api-key");
    let balances = gateway
        .get_balances(keyed(Some(&alice), pb::GetBalancesRequest::default()))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(balances.accounts.len(), 1);

    // Who the caller is comes from the key alone.
    for (what, key) in [
        ("no key", None),
        (
            "a made-up key",
            Some("sk_nope_0123456789abcdef0123456789abcdef"),
        ),
        ("not a key", Some("hello")),
    ] {
        let status = gateway
            .get_balances(keyed(key, pb::GetBalancesRequest::default()))
            .await
            .unwrap_err();
        assert_eq!(status.code(), Code::Unauthenticated, "{what}: {status:?}");
    }

    // A key grants only its scopes, and never its owner's admin rights it does not have.
    let (read_only, read_only_id) = api.new_key("alice", "payments:read");
    let status = gateway
        .pay(keyed(Some(&read_only), pay("grpc-key-2", 1)))
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::PermissionDenied, "{status:?}");
    assert!(status.message().contains("payments:write"), "{status:?}");
    let status = gateway
        .register_user(keyed(
            Some(&alice),
            pb::RegisterUserRequest {
                username: "mallory".into(),
                password: "a long passphrase 1".into(),
            },
        ))
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::PermissionDenied, "{status:?}");

    // Revoked: refused on the next call.
    let (code, revoked) = api
        .network
        .client("alice", &["api-key", "revoke", &read_only_id]);
    assert_eq!(code, 0, "{revoked}");
    let status = gateway
        .get_balances(keyed(Some(&read_only), pb::GetBalancesRequest::default()))
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::Unauthenticated, "{status:?}");

    // Only the Gateway service is here: banks' decision queries and health are not.
    let mut coordinator = CoordinatorClient::new(channel(&api).await);
    let status = coordinator
        .get_decision(keyed(Some(&alice), pb::GetDecisionRequest::default()))
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::Unimplemented, "{status:?}");

    // Payment events stream to a key with `events:read`.
    let mut events = gateway
        .watch_payments(keyed(Some(&alice), pb::WatchPaymentsRequest::default()))
        .await
        .unwrap()
        .into_inner();
    let second = gateway
        .pay(keyed(Some(&alice), pay("grpc-key-3", 7)))
        .await
        .unwrap()
        .into_inner();
    let event = tokio::time::timeout(Duration::from_secs(20), events.message())
        .await
        .expect("an event within 20 s")
        .unwrap()
        .expect("the stream stays open");
    assert_eq!(event.payment.unwrap().payment_id, second.payment_id);

    // The request log names the key by its id, never whole.
    let log = std::fs::read_to_string(api.network.dir().join("logs/gateway.log")).unwrap();
    let key_id = alice.split('_').nth(1).unwrap();
    assert!(
        log.lines()
            .any(|line| line.contains("method=\"/strife.v1.Gateway/Pay\"")
                && line.contains(&format!("key_id=\"{key_id}\""))),
        "{log}"
    );
    assert!(!log.contains(&alice), "the whole key is in the log");
}

/// The same port from a client in another language: Python grpcio, written from `proto/`
/// (requests serialized by hand), with only the CA and alice's key.
#[test]
fn a_python_grpcio_client_pays_with_an_api_key() {
    let python = std::env::var("STRIFE_TEST_PYTHON").unwrap_or_else(|_| {
        panic!(
            "STRIFE_TEST_PYTHON is not set: run scripts/test (it makes target/py-venv with grpcio)"
        )
    });
    let api = Api::start(&[]);
    let address = api.network.ready["grpc_api_key"][0]
        .as_str()
        .unwrap()
        .to_owned();
    let before = api.network.available_minor("alice");
    let script = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/e2e/python/grpcio_client.py"
    );
    let output = std::process::Command::new(python)
        .arg(script)
        .args([
            "--api-key",
            "--address",
            &address,
            "--server-name",
            "localhost",
            "--ca",
        ])
        .arg(api.network.dir().join("pki/ca.crt"))
        .env("STRIFE_API_KEY", api.key("alice"))
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let cases: std::collections::BTreeMap<String, serde_json::Value> = stdout
        .lines()
        .map(|line| serde_json::from_str::<serde_json::Value>(line).unwrap())
        .map(|case| (case["case"].as_str().unwrap().to_owned(), case))
        .collect();
    assert_eq!(cases["key_balances"]["code"], "OK", "{stdout}");
    assert_eq!(
        cases["key_pay"]["metadata"],
        serde_json::json!({"order": "py-7", "via": "grpcio"}),
        "{stdout}"
    );
    assert_eq!(cases["no_key"]["code"], "UNAUTHENTICATED", "{stdout}");
    assert_eq!(cases["no_key"]["reason"], "unauthenticated", "{stdout}");
    assert_eq!(cases["coordinator"]["code"], "UNIMPLEMENTED", "{stdout}");
    assert_eq!(api.network.available_minor("alice"), before - 3);
}
