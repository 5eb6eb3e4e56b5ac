//! gRPC conventions a foreign client hits (issue 24, item 8), with real sockets:
//!
//! - gzip-compressed requests are answered by every service of both servers (tonic's client
//!   with `send_compressed`), and every answer advertises `grpc-accept-encoding`;
//! - a gzip bomb (a few KiB that decompress past the 64 KiB message limit) is
//!   `RESOURCE_EXHAUSTED` `too_large`; a corrupt compressed message, or a compressed flag
//!   without an encoding, is `INVALID_ARGUMENT` (never `INTERNAL`);
//! - an encoding the server does not accept (`deflate`, `zstd`) is tonic's `UNIMPLEMENTED`
//!   naming it, with `grpc-accept-encoding`; a method that does not exist is still
//!   `UNIMPLEMENTED` "no method …";
//! - 1 MiB of metadata (a password) is a gRPC `RESOURCE_EXHAUSTED` `too_large`, not a GOAWAY,
//!   and the connection goes on; far beyond the HTTP/2 header-list limit the HTTP/2 layer
//!   refuses on its own (documented in docs/OPERATIONS.md);
//! - the same through a Python grpcio client (`python/grpcio_client.py`).
//!
//! Hand-framed bodies and oversized metadata go through a raw HTTP/2 client
//! (`support::raw_h2`), since gRPC libraries will not send them.

use std::process::Command;
use std::time::Duration;

use bytes::Bytes;
use http::HeaderValue;
use strife_common::limits::{ANSWERED_METADATA_BYTES, MAX_HEADER_LIST_BYTES};
use strife_common::metadata::{PASSWORD_KEY, USER_KEY};
use strife_common::net::connection::PeerRole;
use strife_common::net::tls::{identity_dns_name, ExpectedPeer};
use strife_proto::v1 as pb;
use tokio_stream::StreamExt;
use tonic::codec::CompressionEncoding;
use tonic::Code;
use tonic_health::pb::health_client::HealthClient;
use tonic_health::pb::HealthCheckRequest;
use tonic_prost::prost::Message;
use tonic_types::StatusExt;

use crate::support::network::{password_of, ManualNetwork};
use crate::support::raw_h2::{grpc_frame, gzip, RawAnswer, RawH2};

const GET_BALANCES: &str = "/strife.v1.Gateway/GetBalances";
const PAY: &str = "/strife.v1.Gateway/Pay";

/// A raw connection to the gateway with `user`'s certificate.
async fn raw_gateway(network: &ManualNetwork, user: &str) -> RawH2 {
    let layout = network.network.layout();
    RawH2::connect(
        &layout.ca().cert,
        &layout.user_identity(user),
        &network.gateway_address,
        &identity_dns_name(PeerRole::Gateway, "gateway"),
    )
    .await
}

/// `user`'s credentials as metadata, plus `grpc-encoding: encoding` if given.
fn metadata(
    user: &str,
    password: &str,
    encoding: Option<&str>,
) -> Vec<(&'static str, HeaderValue)> {
    let mut metadata = vec![
        (USER_KEY, HeaderValue::from_str(user).unwrap()),
        (PASSWORD_KEY, HeaderValue::from_str(password).unwrap()),
    ];
    if let Some(encoding) = encoding {
        metadata.push(("grpc-encoding", HeaderValue::from_str(encoding).unwrap()));
    }
    metadata
}

/// The gRPC status of `answer`, asserting it is one (with Strife's ErrorInfo, if `reason`).
fn status_of(answer: &RawAnswer, code: Code, reason: &str) -> tonic::Status {
    let status = answer
        .status()
        .unwrap_or_else(|| panic!("no gRPC status in {answer:?}"));
    assert_eq!(status.code(), code, "{status:?}");
    let info = status.get_details_error_info();
    assert_eq!(
        info.map(|info| (info.domain, info.reason)),
        Some(("strife".to_owned(), reason.to_owned())),
        "{status:?}"
    );
    status
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn compression_gzip_is_answered_and_bombs_corruption_and_other_encodings_are_refused() {
    let network = ManualNetwork::start(&["bank0", "bank1"], &["alice", "bob"]).await;
    network.fund("alice", "bank0", "10.00").await;
    network.fund("bob", "bank1", "0").await;
    let layout = network.network.layout();
    let password = password_of("alice");

    // tonic's own client, compressing: every service of both servers answers.
    let balances = network
        .gateway_client("alice")
        .send_compressed(CompressionEncoding::Gzip)
        .get_balances(pb::GetBalancesRequest::default())
        .await
        .unwrap()
        .into_inner();
    assert_eq!(balances.accounts.len(), 1, "{balances:?}");
    let to_gateway = |identity| {
        network
            .network
            .tls(&identity)
            .endpoint(
                &network.gateway_address,
                &ExpectedPeer::Gateway,
                Duration::from_secs(10),
            )
            .unwrap()
            .connect_lazy()
    };
    let bank0_at_gateway = to_gateway(layout.bank_identity("bank0"));
    let decision = strife_proto::v1::coordinator_client::CoordinatorClient::new(bank0_at_gateway)
        .send_compressed(CompressionEncoding::Gzip)
        .get_decision(pb::GetDecisionRequest {
            payment_id: "no-such-payment".into(),
            bank_id: "bank0".into(),
        })
        .await;
    // Decoded and answered by the handler (whatever it decides), not refused for the encoding.
    if let Err(status) = &decision {
        assert_ne!(status.code(), Code::Unimplemented, "{status:?}");
        assert_ne!(status.code(), Code::Internal, "{status:?}");
    }
    let accounts = network
        .bank(0)
        .send_compressed(CompressionEncoding::Gzip)
        .list_accounts(pb::ListAccountsRequest {})
        .await;
    assert!(accounts.is_ok(), "{accounts:?}");
    let alice_at_gateway = to_gateway(layout.user_identity("alice"));
    let alice_at_bank = network
        .network
        .tls(&layout.user_identity("alice"))
        .endpoint(
            &network.banks[0].address.to_string(),
            &ExpectedPeer::Bank("bank0".into()),
            Duration::from_secs(10),
        )
        .unwrap()
        .connect_lazy();
    for channel in [alice_at_gateway.clone(), alice_at_bank] {
        let health = HealthClient::new(channel.clone())
            .send_compressed(CompressionEncoding::Gzip)
            .check(HealthCheckRequest::default())
            .await;
        assert!(health.is_ok(), "{health:?}");
        for v1 in [true, false] {
            let listed = list_services_compressed(channel.clone(), v1).await;
            assert!(listed.is_ok(), "reflection v1={v1}: {listed:?}");
        }
    }

    // By hand: a gzip-compressed empty GetBalancesRequest; the answer says what is accepted.
    let mut raw = raw_gateway(&network, "alice").await;
    let answer = raw
        .call(
            GET_BALANCES,
            &metadata("alice", &password, Some("gzip")),
            grpc_frame(1, &gzip(&[])),
        )
        .await
        .unwrap();
    assert_eq!(
        answer.status().map(|status| status.code()),
        Some(Code::Ok),
        "{answer:?}"
    );
    assert_eq!(answer.headers["grpc-accept-encoding"], "gzip,identity");

    // A gzip bomb: a Pay whose memo is 10 MiB of zeros, ≈ 10 KiB compressed.
    let bomb = pb::PayRequest {
        idempotency_key: "bomb-1".into(),
        to_username: "bob".into(),
        amount: Some(pb::Money {
            amount_minor: 1,
            currency: "USD".into(),
        }),
        memo: "\0".repeat(10 << 20),
        ..pb::PayRequest::default()
    }
    .encode_to_vec();
    let compressed = gzip(&bomb);
    assert!(compressed.len() < 64 * 1024, "{} bytes", compressed.len());
    let answer = raw
        .call(
            PAY,
            &metadata("alice", &password, Some("gzip")),
            grpc_frame(1, &compressed),
        )
        .await
        .unwrap();
    let status = status_of(&answer, Code::ResourceExhausted, "too_large");
    assert!(status.message().contains("decompressed"), "{status:?}");

    // A corrupt compressed message, and a compressed flag without an encoding: the client's
    // mistake, INVALID_ARGUMENT.
    let mut corrupt = gzip(&pb::GetBalancesRequest::default().encode_to_vec());
    let middle = corrupt.len() / 2;
    corrupt[middle..].iter_mut().for_each(|byte| *byte ^= 0x5a);
    for (what, encoding, body) in [
        ("corrupt gzip", Some("gzip"), grpc_frame(1, &corrupt)),
        (
            "not gzip at all",
            Some("gzip"),
            grpc_frame(1, b"plain bytes"),
        ),
        (
            "compressed flag, no encoding",
            None,
            grpc_frame(1, &gzip(&[])),
        ),
        ("compressed flag 7", Some("gzip"), grpc_frame(7, &gzip(&[]))),
        (
            "truncated frame",
            None,
            Bytes::from_static(&[0, 0, 0, 0, 9, 1]),
        ),
        ("no protobuf", None, grpc_frame(0, &[0xff, 0xff, 0xff])),
    ] {
        let answer = raw
            .call(GET_BALANCES, &metadata("alice", &password, encoding), body)
            .await
            .unwrap();
        let status = answer.status().unwrap();
        assert_eq!(status.code(), Code::InvalidArgument, "{what}: {status:?}");
        assert_eq!(
            status.get_details_error_info().map(|info| info.reason),
            Some("invalid_argument".to_owned()),
            "{what}"
        );
    }

    // Encodings the servers do not accept: tonic's UNIMPLEMENTED naming it, and what is
    // accepted instead — not "no method".
    for encoding in ["deflate", "zstd"] {
        let answer = raw
            .call(
                GET_BALANCES,
                &metadata("alice", &password, Some(encoding)),
                grpc_frame(1, b"whatever"),
            )
            .await
            .unwrap();
        let status = status_of(&answer, Code::Unimplemented, "unimplemented");
        assert!(
            status.message().contains(&format!("`{encoding}`")),
            "{status:?}"
        );
        assert!(!status.message().contains("no method"), "{status:?}");
        assert_eq!(answer.headers["grpc-accept-encoding"], "gzip,identity");
    }
    // At a bank too (health needs no password).
    let mut raw_bank = RawH2::connect(
        &layout.ca().cert,
        &layout.user_identity("alice"),
        &network.banks[0].address.to_string(),
        &identity_dns_name(PeerRole::Bank, "bank0"),
    )
    .await;
    let answer = raw_bank
        .call(
            "/grpc.health.v1.Health/Check",
            &[("grpc-encoding", HeaderValue::from_static("deflate"))],
            grpc_frame(0, &[]),
        )
        .await
        .unwrap();
    let status = status_of(&answer, Code::Unimplemented, "unimplemented");
    assert!(status.message().contains("`deflate`"), "{status:?}");
    // A method that does not exist is still "no method", with or without an encoding.
    for encoding in [None, Some("gzip"), Some("deflate")] {
        let answer = raw
            .call(
                "/strife.v1.Gateway/NoSuchMethod",
                &metadata("alice", &password, encoding),
                grpc_frame(0, &[]),
            )
            .await
            .unwrap();
        let status = status_of(&answer, Code::Unimplemented, "unimplemented");
        assert_eq!(
            status.message(),
            "no method /strife.v1.Gateway/NoSuchMethod"
        );
    }
    // (At a bank, a user's certificate reaches tonic's router only for a service the bank
    // does not have: its own service admits only the gateway.)
    let answer = raw_bank
        .call("/no.such.Service/Call", &[], grpc_frame(0, &[]))
        .await
        .unwrap();
    let status = status_of(&answer, Code::Unimplemented, "unimplemented");
    assert_eq!(status.message(), "no method /no.such.Service/Call");

    // Nothing was paid by any of it.
    assert_eq!(network.available_minor("alice"), 1000);
}

/// Reflection's `ListServices`, sent gzip-compressed (v1 or v1alpha).
async fn list_services_compressed(
    channel: tonic::transport::Channel,
    v1: bool,
) -> Result<(), tonic::Status> {
    use tonic_reflection::pb::{v1 as one, v1alpha as alpha};
    if v1 {
        let request = one::ServerReflectionRequest {
            host: String::new(),
            message_request: Some(
                one::server_reflection_request::MessageRequest::ListServices(String::new()),
            ),
        };
        let mut responses = one::server_reflection_client::ServerReflectionClient::new(channel)
            .send_compressed(CompressionEncoding::Gzip)
            .server_reflection_info(tokio_stream::iter([request]))
            .await?
            .into_inner();
        responses.next().await.transpose()?;
    } else {
        let request = alpha::ServerReflectionRequest {
            host: String::new(),
            message_request: Some(
                alpha::server_reflection_request::MessageRequest::ListServices(String::new()),
            ),
        };
        let mut responses = alpha::server_reflection_client::ServerReflectionClient::new(channel)
            .send_compressed(CompressionEncoding::Gzip)
            .server_reflection_info(tokio_stream::iter([request]))
            .await?
            .into_inner();
        responses.next().await.transpose()?;
    }
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metadata_of_one_mebibyte_is_resource_exhausted_and_the_connection_goes_on() {
    let network = ManualNetwork::start(&["bank0"], &["alice"]).await;
    network.fund("alice", "bank0", "10.00").await;
    let layout = network.network.layout();
    let huge = "p".repeat(ANSWERED_METADATA_BYTES);
    let empty = || grpc_frame(0, &pb::GetBalancesRequest::default().encode_to_vec());

    let mut raw = raw_gateway(&network, "alice").await;
    let answer = raw
        .call(GET_BALANCES, &metadata("alice", &huge, None), empty())
        .await
        .expect("a gRPC answer, not an HTTP/2 error");
    let status = status_of(&answer, Code::ResourceExhausted, "too_large");
    assert!(status.message().contains("metadata"), "{status:?}");
    // The same connection still works: no GOAWAY.
    let answer = raw
        .call(
            GET_BALANCES,
            &metadata("alice", &password_of("alice"), None),
            empty(),
        )
        .await
        .expect("the connection outlived the refusal");
    assert_eq!(
        answer.status().map(|status| status.code()),
        Some(Code::Ok),
        "{answer:?}"
    );
    assert!(!raw.has_ended());

    // At a bank as well (any project certificate may call health).
    let mut raw_bank = RawH2::connect(
        &layout.ca().cert,
        &layout.user_identity("alice"),
        &network.banks[0].address.to_string(),
        &identity_dns_name(PeerRole::Bank, "bank0"),
    )
    .await;
    let padding = [("x-padding", HeaderValue::from_str(&huge).unwrap())];
    let answer = raw_bank
        .call("/grpc.health.v1.Health/Check", &padding, grpc_frame(0, &[]))
        .await
        .expect("a gRPC answer, not an HTTP/2 error");
    status_of(&answer, Code::ResourceExhausted, "too_large");
    let answer = raw_bank
        .call("/grpc.health.v1.Health/Check", &[], grpc_frame(0, &[]))
        .await
        .unwrap();
    assert_eq!(answer.status().map(|status| status.code()), Some(Code::Ok));

    // Past the HTTP/2 header-list limit HTTP/2 itself refuses, as docs/OPERATIONS.md says:
    // just over it, HTTP 431 without a gRPC status (gRPC clients read UNAVAILABLE/UNKNOWN);
    // far over it, GOAWAY `too_many_continuations`, which ends the connection.
    let mut over = raw_gateway(&network, "alice").await;
    let just_over = "p".repeat(MAX_HEADER_LIST_BYTES as usize + 64 * 1024);
    let answer = over
        .call(GET_BALANCES, &metadata("alice", &just_over, None), empty())
        .await
        .unwrap();
    assert_eq!(
        answer.http_status,
        http::StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE
    );
    assert!(answer.status().is_none(), "{answer:?}");
    let far = "p".repeat(2 * MAX_HEADER_LIST_BYTES as usize);
    let error = over
        .call(GET_BALANCES, &metadata("alice", &far, None), empty())
        .await
        .unwrap_err();
    // The server sends its GOAWAY and closes; a client still writing the rest of the header
    // block may hit the closed socket before it reads the GOAWAY (a broken pipe). Either way
    // the connection is over, and never with a gRPC answer.
    let went_away = error.is_go_away() && error.reason() == Some(h2::Reason::ENHANCE_YOUR_CALM);
    assert!(went_away || error.is_io(), "{error:?}");
}

/// The interpreter of the venv `scripts/test` makes with grpcio in it.
fn test_python() -> String {
    std::env::var("STRIFE_TEST_PYTHON").unwrap_or_else(|_| {
        panic!(
            "STRIFE_TEST_PYTHON is not set: run scripts/test (it makes target/py-venv with \
             grpcio), or set it to a python3 that can `import grpc`"
        )
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn compression_and_metadata_from_a_python_grpcio_client() {
    let python = test_python();
    let network = ManualNetwork::start(&["bank0", "bank1"], &["alice", "bob"]).await;
    network.fund("alice", "bank0", "10.00").await;
    network.fund("bob", "bank1", "0").await;
    let layout = network.network.layout();
    let alice = layout.user_identity("alice");
    let script = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/e2e/python/grpcio_client.py"
    );
    let output = tokio::task::spawn_blocking({
        let address = network.gateway_address.clone();
        let ca = layout.ca().cert;
        move || {
            Command::new(python)
                .arg(script)
                .arg("--address")
                .arg(address)
                .arg("--ca")
                .arg(ca)
                .arg("--cert")
                .arg(&alice.cert)
                .arg("--key")
                .arg(&alice.key)
                .arg("--server-name")
                .arg(identity_dns_name(PeerRole::Gateway, "gateway"))
                .arg("--user")
                .arg("alice")
                .env("STRIFE_PASSWORD", password_of("alice"))
                .output()
                .unwrap()
        }
    })
    .await
    .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "{stdout}\n{stderr}");
    eprintln!("grpcio client:\n{stdout}");
    let results: std::collections::HashMap<String, serde_json::Value> = stdout
        .lines()
        .filter_map(|line| serde_json::from_str::<serde_json::Value>(line).ok())
        .filter_map(|result| Some((result["case"].as_str()?.to_owned(), result)))
        .collect();
    let case = |name: &str| {
        results
            .get(name)
            .unwrap_or_else(|| panic!("no result for {name}: {stdout}\n{stderr}"))
            .clone()
    };
    // gzip: answered.
    assert_eq!(case("gzip")["code"], "OK", "{stdout}");
    // A gzip bomb: too large once decompressed, never INTERNAL or UNAVAILABLE.
    let bomb = case("gzip_bomb");
    assert_eq!(bomb["code"], "RESOURCE_EXHAUSTED", "{stdout}");
    assert_eq!(bomb["reason"], "too_large", "{stdout}");
    // 1 MiB of metadata: grpcio may refuse it itself (the server advertises its header-list
    // limit) or send it and get the server's answer; either way RESOURCE_EXHAUSTED, which
    // tells it not to retry — never UNAVAILABLE.
    let huge = case("metadata_1mib");
    assert_eq!(huge["code"], "RESOURCE_EXHAUSTED", "{stdout}");
    // And the channel is still good afterwards.
    assert_eq!(case("after_metadata")["code"], "OK", "{stdout}");
    assert_eq!(network.available_minor("alice"), 1000);
}
