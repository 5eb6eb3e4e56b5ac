//! Every connection is pinned to the role and name its caller meant to reach. These are the
//! attacks an outside campaign ran with nothing but a project certificate and loopback access
//! to etcd; each stand-in server below speaks the real wire protocol over mutual TLS with a
//! certificate from our own CA, and each must get nothing: no request, no money moved.
//!
//! - a fake bank announced in etcd (under a shadow key, or over the real bank's key),
//! - a fake coordinator answering a bank's decision query,
//! - a fake gateway collecting a client's password.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use crate::support::network::ManualNetwork;
use crate::support::{strife_bin, wait_until, BankStart, Network};
use strife_common::etcd::discovery::ServiceEntry;
use strife_common::etcd::keys::{bank_key, BANKS_PREFIX};
use strife_common::layout::KeyPairPaths;
use strife_common::metadata::PASSWORD_KEY;
use strife_common::net::tls::TlsMaterial;
use strife_proto::v1::{self as pb, coordinator_server};
use tokio_stream::wrappers::TcpListenerStream;
use tokio_stream::StreamExt;
use tonic::transport::Server;
use tonic::{Code, Request, Response, Status};

/// A stand-in server: counts TCP connections it accepted and gRPC requests that reached it,
/// and keeps any password a caller sent.
#[derive(Clone, Default)]
struct Impostor {
    connections: Arc<AtomicUsize>,
    requests: Arc<AtomicUsize>,
    passwords: Arc<Mutex<Vec<String>>>,
}

impl Impostor {
    /// Serves a coordinator that answers COMMIT to everything, with `identity`'s certificate.
    /// Every request on any path passes the recording layer first, so a bank prepare or a
    /// gateway call is counted (and its password kept) whatever service it names.
    async fn serve(&self, tls: &TlsMaterial) -> String {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let address = listener.local_addr().unwrap().to_string();
        let connections = Arc::clone(&self.connections);
        let incoming = TcpListenerStream::new(listener).map(move |stream| {
            connections.fetch_add(1, Ordering::SeqCst);
            stream
        });
        let requests = Arc::clone(&self.requests);
        let passwords = Arc::clone(&self.passwords);
        let record = move |request: Request<()>| {
            requests.fetch_add(1, Ordering::SeqCst);
            if let Some(password) = request.metadata().get(PASSWORD_KEY) {
                let text = password.to_str().unwrap_or_default().to_owned();
                passwords.lock().unwrap().push(text);
            }
            Ok(request)
        };
        let server = Server::builder()
            .tls_config(tls.server_config())
            .unwrap()
            .layer(tonic::service::InterceptorLayer::new(record))
            .add_service(coordinator_server::CoordinatorServer::new(AlwaysCommit))
            .serve_with_incoming(incoming);
        tokio::spawn(server);
        address
    }

    fn connections(&self) -> usize {
        self.connections.load(Ordering::SeqCst)
    }

    fn requests(&self) -> usize {
        self.requests.load(Ordering::SeqCst)
    }
}

struct AlwaysCommit;

#[tonic::async_trait]
impl coordinator_server::Coordinator for AlwaysCommit {
    async fn get_decision(
        &self,
        request: Request<pb::GetDecisionRequest>,
    ) -> Result<Response<pb::GetDecisionResponse>, Status> {
        Ok(Response::new(pb::GetDecisionResponse {
            settle_minor: 0,
            payment_id: request.into_inner().payment_id,
            decision: pb::Decision::Commit as i32,
        }))
    }
}

fn material(network: &Network, identity: &KeyPairPaths) -> TlsMaterial {
    network.tls(identity)
}

/// Writes as etcd's root: the attacker here got past etcd's own lock-down, and routing must
/// still hold.
async fn etcd_put(network: &ManualNetwork, key: &str, entry: &ServiceEntry) {
    let mut client = network.etcd.root_client().await;
    client
        .put(key, serde_json::to_vec(entry).unwrap(), None)
        .await
        .unwrap();
}

fn pay(key: &str, amount_minor: i64) -> pb::PayRequest {
    pb::PayRequest {
        idempotency_key: key.into(),
        to_username: "bob".into(),
        amount: Some(pb::Money {
            amount_minor,
            currency: "USD".into(),
        }),
        ..pb::PayRequest::default()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_fake_bank_announced_in_etcd_never_receives_a_prepare_and_no_money_moves() {
    let mut network = ManualNetwork::start(&["bank0", "bank1"], &["alice", "bob"]).await;
    network.fund("alice", "bank0", "100.00").await;
    network.fund("bob", "bank1", "0").await;
    let layout = network.network.layout();
    // Alice, with only her own certificate, serves a "bank" that votes YES to everything.
    let impostor = Impostor::default();
    let fake_address = impostor
        .serve(&material(&network.network, &layout.user_identity("alice")))
        .await;
    let claim = ServiceEntry {
        id: "bank0".into(),
        address: fake_address.clone(),
    };

    // 1. A shadow key claiming bank0 is ignored: the million goes to the real bank0, which
    //    refuses it for lack of funds.
    let shadow_key = format!("{BANKS_PREFIX}zz-shadow");
    etcd_put(&network, &shadow_key, &claim).await;
    assert!(
        wait_until(Duration::from_secs(10), || async {
            network.gateway_log().contains("zz-shadow")
        })
        .await,
        "the gateway never saw the shadow entry:\n{}",
        network.gateway_log()
    );
    let refused = network
        .gateway_client("alice")
        .pay(pay("mint-1", 100_000_000))
        .await
        .unwrap_err();
    assert_eq!(refused.code(), Code::FailedPrecondition, "{refused:?}");
    assert_eq!(impostor.requests(), 0);

    // 2. Over the real key, the gateway does dial the fake — and TLS refuses its certificate
    //    before any request leaves. (The real bank0 is stopped first: a live bank puts its own
    //    entry back within a keep-alive tick, which would win the race with the fake.)
    let bank0_total = bank_total_minor(&network, 0).await;
    assert_eq!(bank0_total, 10_000);
    network.banks[0].process.kill();
    etcd_put(&network, &bank_key("bank0"), &claim).await;
    assert!(
        wait_until(Duration::from_secs(10), || async {
            network.gateway_log().contains(&fake_address)
        })
        .await,
        "the gateway never saw the rewritten entry"
    );
    let refused = network
        .gateway_client("alice")
        .pay(pay("mint-2", 100_000_000))
        .await
        .unwrap_err();
    assert_ne!(refused.code(), Code::Ok);
    assert!(
        impostor.connections() > 0,
        "the gateway never dialled the fake"
    );
    assert_eq!(impostor.requests(), 0, "a request reached the fake bank");
    // Read straight from the real bank: nothing was credited to bob.
    assert_eq!(bank_total_minor(&network, 1).await, 0);
}

/// Sum of balances and of holds at bank number `index`, asked of the bank itself.
async fn bank_total_minor(network: &ManualNetwork, index: usize) -> i64 {
    let listed = network
        .bank(index)
        .list_accounts(pb::ListAccountsRequest {})
        .await
        .unwrap()
        .into_inner();
    assert!(listed.prepared_legs.is_empty(), "a hold was left behind");
    listed
        .accounts
        .iter()
        .map(|account| account.balance_minor)
        .sum()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bank_never_applies_a_decision_from_a_coordinator_that_is_not_the_gateway() {
    for impostor_name in ["alice", "bank1"] {
        let network = Network::setup(&["bank0", "bank1"], &["alice"]);
        let layout = network.layout();
        let impostor_identity = if impostor_name == "alice" {
            layout.user_identity("alice")
        } else {
            layout.bank_identity("bank1")
        };
        let impostor = Impostor::default();
        let coordinator = impostor
            .serve(&material(&network, &impostor_identity))
            .await;
        let bank = BankStart::new(&network, "bank0")
            .arg("--coordinator")
            .arg(&coordinator)
            .arg("--resolve-interval-ms")
            .arg("50")
            .start();
        let mut client = network.gateway_bank_client("bank0", &bank.address.to_string());
        let account = client
            .open_account(pb::OpenAccountRequest {
                request_id: "open".into(),
                owner: "alice".into(),
                currency: "USD".into(),
                opening_deposit_minor: 1_000,
                ..pb::OpenAccountRequest::default()
            })
            .await
            .unwrap()
            .into_inner()
            .account_number;
        let vote = client
            .prepare(pb::PrepareRequest {
                payment_id: "in-doubt".into(),
                role: pb::LegRole::Credit as i32,
                account_number: account.clone(),
                amount: Some(pb::Money {
                    amount_minor: 50_000,
                    currency: "USD".into(),
                }),
                decision_deadline_unix_ms: strife_common::time::now_unix_ms() + 100,
                owner: "alice".into(),
            })
            .await
            .unwrap()
            .into_inner();
        assert!(vote.vote_yes);
        // The bank does ask (the leg is overdue), but TLS refuses the impostor.
        assert!(
            wait_until(Duration::from_secs(10), || async {
                impostor.connections() >= 1
            })
            .await,
            "the bank never asked about its overdue leg"
        );
        assert_eq!(
            impostor.requests(),
            0,
            "a decision query reached the impostor"
        );
        let leg = client
            .get_leg(pb::LegRequest {
                settle_minor: 0,
                payment_id: "in-doubt".into(),
                role: pb::LegRole::Credit as i32,
            })
            .await
            .unwrap()
            .into_inner();
        assert_eq!(leg.state, pb::LegState::Prepared as i32);
        let balance = client
            .get_balance(pb::GetBalanceRequest {
                account_number: account,
            })
            .await
            .unwrap()
            .into_inner();
        assert_eq!(balance.balance_minor, 1_000, "no money may arrive");
        drop(bank);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_client_refuses_a_fake_gateway_before_sending_its_password() {
    let network = Network::setup(&["bank0"], &["alice", "bob"]);
    let layout = network.layout();
    for impostor_identity in [layout.user_identity("bob"), layout.bank_identity("bank0")] {
        let impostor = Impostor::default();
        let address = impostor
            .serve(&material(&network, &impostor_identity))
            .await;
        let output = tokio::process::Command::new(strife_bin())
            .args(["client", "--json", "--gateway", &address, "--user", "alice"])
            .arg("--dir")
            .arg(network.path())
            .arg("balance")
            .env("STRIFE_PASSWORD", "alice's real password")
            .output()
            .await
            .unwrap();
        assert!(!output.status.success(), "the CLI trusted a fake gateway");
        assert!(impostor.connections() > 0, "the CLI never dialled");
        assert_eq!(impostor.requests(), 0);
        assert!(impostor.passwords.lock().unwrap().is_empty());
    }
}
