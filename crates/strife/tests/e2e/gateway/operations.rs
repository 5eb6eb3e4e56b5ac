//! Standard gRPC tooling works against a gateway and a bank: health (`grpc.health.v1`, with
//! `Watch`) and server reflection, with any certificate from the project's CA and no password.
//! Health follows readiness (etcd gone, a read-only database), and a SIGTERM under load drains
//! the gateway: every answered payment decided, exit 0 within the documented bound.

use std::path::PathBuf;
use std::process::Command;
use std::time::Duration;

use crate::support::load::Load;
use crate::support::network::ManualNetwork;
use crate::support::wait_until;
use strife_common::limits::GATEWAY_SHUTDOWN_LIMIT;
use strife_common::net::tls::{ExpectedPeer, TlsMaterial};
use strife_proto::v1 as pb;
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

/// The next status a health `Watch` reports within `limit` (`None`: none came, or it ended).
async fn next_status(
    watch: &mut tonic::Streaming<tonic_health::pb::HealthCheckResponse>,
    limit: Duration,
) -> Option<i32> {
    match tokio::time::timeout(limit, watch.next()).await {
        Ok(Some(Ok(response))) => Some(response.status),
        _ => None,
    }
}

/// Files and directories made immutable (`chattr +i`) for one test: not even root writes them
/// then, also through descriptors opened before. That is what makes a running process's
/// database read-only under it: file modes do not stop root (the tests run as root), and
/// remounting a filesystem read-only is refused (`EBUSY`) while a file on it is open for
/// writing, as a running SQLite database always is. The flag is removed when dropped, also
/// when the test fails, so the temporary directory can be deleted.
struct Immutable {
    paths: Vec<PathBuf>,
}

impl Immutable {
    fn set(paths: &[PathBuf]) -> Immutable {
        for path in paths {
            let status = Command::new("chattr").arg("+i").arg(path).status().unwrap();
            assert!(status.success(), "chattr +i {}", path.display());
        }
        Immutable {
            paths: paths.to_vec(),
        }
    }
}

impl Drop for Immutable {
    fn drop(&mut self) {
        for path in &self.paths {
            let _ = Command::new("chattr").arg("-i").arg(path).status();
        }
    }
}

/// Whether `chattr +i` stops writes through an already open descriptor on `dir`'s filesystem
/// (ext4, xfs and btrfs do; tmpfs keeps accepting them; `chattr` may be missing).
fn immutable_stops_open_writers(dir: &std::path::Path) -> bool {
    use std::io::Write;
    let probe = dir.join("immutable-probe");
    let mut file = std::fs::File::create(&probe).unwrap();
    file.write_all(b"before").unwrap();
    let set = Command::new("chattr").arg("+i").arg(&probe).status();
    let stopped = match set {
        Ok(status) if status.success() => {
            let refused = file
                .write_all(b"after")
                .and_then(|()| file.sync_all())
                .is_err();
            let _ = Command::new("chattr").arg("-i").arg(&probe).status();
            refused
        }
        _ => false,
    };
    drop(file);
    let _ = std::fs::remove_file(&probe);
    stopped
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bank_whose_database_turns_read_only_goes_not_serving_and_back_when_writable() {
    let network = ManualNetwork::start(&["bank0"], &["alice"]).await;
    let layout = network.network.layout();
    let bank_dir = layout.bank_dir("bank0");
    if !immutable_stops_open_writers(&bank_dir) {
        eprintln!(
            "\n!!! SKIPPED: `chattr +i` does not stop writes on {}'s filesystem (or chattr is \
             missing), so the bank's database cannot be made read-only under it; this test \
             needs root on ext4, xfs or btrfs !!!\n",
            bank_dir.display()
        );
        return;
    }
    let alice = network.network.tls(&layout.user_identity("alice"));
    let bank = channel(
        &alice,
        &network.banks[0].address.to_string(),
        ExpectedPeer::Bank("bank0".into()),
    );
    let serving = Some(ServingStatus::Serving as i32);
    let not_serving = Some(ServingStatus::NotServing as i32);
    assert!(
        wait_until(Duration::from_secs(10), || async {
            status_of(&bank, "strife.v1.Bank").await == serving
        })
        .await,
        "the bank is ready after start"
    );
    let mut watch = HealthClient::new(bank.clone())
        .watch(check("strife.v1.Bank"))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        next_status(&mut watch, Duration::from_secs(5)).await,
        serving
    );

    // The database directory and its files turn read-only under the running bank (the -shm
    // index stays writable: it is memory-mapped, and a fault on it would kill the process
    // instead of failing a write, which is not what a read-only remount does either).
    let db = layout.bank_db("bank0");
    let wal = PathBuf::from(format!("{}-wal", db.display()));
    let read_only = Immutable::set(&[db, wal, bank_dir]);
    // The probe writes a row to `meta` every second: the next one fails.
    assert_eq!(
        next_status(&mut watch, Duration::from_secs(10)).await,
        not_serving,
        "Watch must report the read-only database; bank log:\n{}",
        network.banks[0].process.log_text()
    );
    assert_eq!(status_of(&bank, "").await, not_serving);
    // Logged with its reason, naming the file (log lines are written by a background thread).
    let logged = wait_until(Duration::from_secs(5), || {
        let log = network.banks[0].process.log_text();
        async move {
            log.lines()
                .any(|line| line.contains("not ready; NOT_SERVING") && line.contains("bank.db"))
        }
    })
    .await;
    assert!(
        logged,
        "the reason is logged, naming the file:\n{}",
        network.banks[0].process.log_text()
    );

    // Writable again: SERVING by itself, without a restart.
    drop(read_only);
    assert_eq!(
        next_status(&mut watch, Duration::from_secs(10)).await,
        serving,
        "Watch must report the recovery; bank log:\n{}",
        network.banks[0].process.log_text()
    );
    assert_eq!(status_of(&bank, "strife.v1.Bank").await, serving);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_under_load_decides_every_answered_payment_and_exits_zero_within_the_bound() {
    let mut network = crate::support::network::ManualNetwork::alice_and_bob().await;
    let alice = network.gateway_client("alice");
    let load = Load::start(&alice, "bob", 8, "drain", None);
    assert!(
        wait_until(Duration::from_secs(30), || {
            let answered = load.answered();
            async move { answered >= 40 }
        })
        .await,
        "the load never got going; log:\n{}",
        network.gateway_log()
    );

    // SIGTERM mid-load: drain, finish what runs, deregister, exit 0 — within the bound
    // docs/OPERATIONS.md gives ("Shutdown").
    let bound = GATEWAY_SHUTDOWN_LIMIT;
    let mut gateway = network.gateway.take().unwrap();
    let exited = gateway.terminate_with_status(bound + Duration::from_secs(5));
    let answers = load.stop().await;
    let log = gateway.log_text();
    let (status, took) = exited.unwrap_or_else(|| panic!("no exit; log:\n{log}"));
    eprintln!(
        "gateway exited {status} {took:?} after SIGTERM; {} keys, {} answered",
        answers.len(),
        answers.iter().filter(|answer| answer.answered()).count()
    );
    assert!(status.success(), "exit status {status}; log:\n{log}");
    assert!(took < bound, "took {took:?}, bound {bound:?}; log:\n{log}");
    for unexpected in ["payments still running at exit", "drain limit reached"] {
        assert!(!log.contains(unexpected), "{unexpected}; log:\n{log}");
    }
    let answered_ok = answers
        .iter()
        .filter(|answer| answer.outcome.is_ok())
        .count();
    assert!(answered_ok >= 40, "{answers:?}");

    // After a restart: every payment a client was answered for is decided, as answered.
    network.start_gateway(&[]);
    assert!(
        !network
            .gateway_log()
            .contains("recovery aborted payments left undecided"),
        "the drain left a payment undecided; log:\n{}",
        network.gateway_log()
    );
    let mut alice = network.gateway_client("alice");
    for answer in &answers {
        let stored = alice
            .get_payment_by_key(pb::GetPaymentByKeyRequest {
                idempotency_key: answer.key.clone(),
            })
            .await
            .map(tonic::Response::into_inner);
        match (&answer.outcome, stored) {
            (Ok(paid), Ok(stored)) => {
                assert_eq!(stored.payment_id, paid.payment_id, "{}", answer.key);
                assert_eq!(stored.status, paid.status, "{}: as answered", answer.key);
                assert_ne!(stored.status, pb::PaymentStatus::Pending as i32);
            }
            (Ok(paid), Err(status)) => {
                panic!(
                    "{} was answered {paid:?} but is not in the log: {status:?}",
                    answer.key
                )
            }
            (Err(_), Ok(stored)) => assert_ne!(
                stored.status,
                pb::PaymentStatus::Pending as i32,
                "{}: {stored:?}",
                answer.key
            ),
            (Err(answered), Err(status)) => assert!(
                !answer.answered() && status.code() == tonic::Code::NotFound,
                "{}: answered {answered:?}, then {status:?}",
                answer.key
            ),
        }
    }

    // Once the retrier has re-sent the decisions whose acknowledgements the exit cut short,
    // no leg is PREPARED anywhere and the books balance.
    let settled = wait_until(Duration::from_secs(30), || async {
        network.prepared_legs().await.is_empty() && network.audit().0
    })
    .await;
    assert!(
        settled,
        "prepared: {:?}; audit: {}",
        network.prepared_legs().await,
        network.audit().1
    );
}
