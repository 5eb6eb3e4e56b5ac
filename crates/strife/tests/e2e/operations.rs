//! Standard gRPC tooling works against a gateway and a bank: health (`grpc.health.v1`, with
//! `Watch`) and server reflection, with any certificate from the project's CA and no password.

use std::time::Duration;

use crate::support::network::ManualNetwork;
use crate::support::wait_until;
use strife_common::tls::{ExpectedPeer, TlsMaterial};
use tokio_stream::StreamExt;
use tonic::transport::Channel;
use tonic_health::pb::health_check_response::ServingStatus;
use tonic_health::pb::health_client::HealthClient;
use tonic_health::pb::HealthCheckRequest;
use tonic_reflection::pb::v1::server_reflection_client::ServerReflectionClient;
use tonic_reflection::pb::v1::server_reflection_request::MessageRequest;
use tonic_reflection::pb::v1::server_reflection_response::MessageResponse;
use tonic_reflection::pb::v1::ServerReflectionRequest;

fn channel(tls: &TlsMaterial, address: &str, expected: ExpectedPeer) -> Channel {
    tls.endpoint(address, &expected, Duration::from_secs(5))
        .unwrap()
        .connect_lazy()
}

fn check(service: &str) -> HealthCheckRequest {
    HealthCheckRequest {
        service: service.into(),
    }
}

async fn reflected_services(channel: Channel) -> Vec<String> {
    let mut client = ServerReflectionClient::new(channel);
    let request = ServerReflectionRequest {
        host: String::new(),
        message_request: Some(MessageRequest::ListServices(String::new())),
    };
    let mut responses = client
        .server_reflection_info(tokio_stream::iter([request]))
        .await
        .unwrap()
        .into_inner();
    let response = responses.next().await.unwrap().unwrap();
    match response.message_response {
        Some(MessageResponse::ListServicesResponse(list)) => list
            .service
            .into_iter()
            .map(|service| service.name)
            .collect(),
        other => panic!("unexpected reflection answer {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn health_and_reflection_answer_any_project_certificate_without_a_password() {
    let mut network = ManualNetwork::start(&["bank0"], &["alice"]).await;
    let layout = network.network.layout();
    // A user certificate, no password metadata at all.
    let alice = network.network.tls(&layout.user_identity("alice"));
    let gateway = channel(&alice, &network.gateway_address, ExpectedPeer::Gateway);
    let bank_address = network.banks[0].address.to_string();
    let bank = channel(&alice, &bank_address, ExpectedPeer::Bank("bank0".into()));

    for (name, channel, service) in [
        ("gateway", gateway.clone(), "strife.v1.Gateway"),
        ("bank", bank.clone(), "strife.v1.Bank"),
    ] {
        let mut health = HealthClient::new(channel.clone());
        for probe in ["", service] {
            let status = health
                .check(check(probe))
                .await
                .unwrap()
                .into_inner()
                .status;
            assert_eq!(status, ServingStatus::Serving as i32, "{name} {probe:?}");
        }
        let unknown = health.check(check("no.such.Service")).await.unwrap_err();
        assert_eq!(unknown.code(), tonic::Code::NotFound);
        let services = reflected_services(channel).await;
        assert!(
            services.contains(&service.to_owned()),
            "{name}: {services:?}"
        );
    }
    // The bank's own API still admits only the gateway.
    let refused = strife_proto::v1::bank_client::BankClient::new(bank)
        .list_accounts(strife_proto::v1::ListAccountsRequest {})
        .await
        .unwrap_err();
    assert_eq!(refused.code(), tonic::Code::PermissionDenied);

    // Watch sees the gateway go NOT_SERVING when it starts shutting down.
    let mut watch = HealthClient::new(gateway)
        .watch(check("strife.v1.Gateway"))
        .await
        .unwrap()
        .into_inner();
    let first = watch.next().await.unwrap().unwrap();
    assert_eq!(first.status, ServingStatus::Serving as i32);
    let gateway_process = network.gateway.as_ref().unwrap();
    // SAFETY: kill(2) on our own child's pid.
    unsafe {
        libc::kill(gateway_process.child.id() as libc::pid_t, libc::SIGTERM);
    }
    let next = tokio::time::timeout(Duration::from_secs(10), watch.next())
        .await
        .expect("Watch must report the drain");
    let status = next.and_then(Result::ok).map(|response| response.status);
    assert_eq!(status, Some(ServingStatus::NotServing as i32));
    network.stop_gateway();
}

async fn status_of(channel: &Channel, service: &str) -> Option<i32> {
    HealthClient::new(channel.clone())
        .check(check(service))
        .await
        .ok()
        .map(|response| response.into_inner().status)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn health_follows_readiness_not_serving_while_etcd_is_gone_and_serving_again_after() {
    let mut network = ManualNetwork::start(&["bank0"], &["alice"]).await;
    let layout = network.network.layout();
    let alice = network.network.tls(&layout.user_identity("alice"));
    let servers = [
        (
            channel(&alice, &network.gateway_address, ExpectedPeer::Gateway),
            "strife.v1.Gateway",
        ),
        (
            channel(
                &alice,
                &network.banks[0].address.to_string(),
                ExpectedPeer::Bank("bank0".into()),
            ),
            "strife.v1.Bank",
        ),
    ];
    let all_are = |wanted: ServingStatus| {
        let servers = servers.clone();
        async move {
            for (channel, service) in &servers {
                if status_of(channel, service).await != Some(wanted as i32) {
                    return false;
                }
            }
            true
        }
    };
    assert!(
        wait_until(Duration::from_secs(10), || all_are(ServingStatus::Serving)).await,
        "both ready after start"
    );

    // Without etcd the leases lapse: neither may claim to be ready.
    network.etcd.kill();
    assert!(
        wait_until(Duration::from_secs(20), || all_are(
            ServingStatus::NotServing
        ))
        .await,
        "NOT_SERVING once the registration is lost"
    );
    network.etcd.restart_empty().await;
    assert!(
        wait_until(Duration::from_secs(20), || all_are(ServingStatus::Serving)).await,
        "SERVING again once registered again; gateway log:\n{}",
        network.gateway_log()
    );
}
