//! Who may do what at the gateway: every kind of bad credential is refused with the right
//! status and changes nothing; failed logins lock a name for a while; no password reaches
//! the log.

use std::time::Duration;

use crate::support::network::{password_of, Credentials, ManualNetwork, NetworkOptions};
use crate::support::wait_until;
use strife_common::layout::KeyPairPaths;
use strife_common::net::connection::PeerRole;
use strife_common::net::tls::{ExpectedPeer, TlsMaterial};
use strife_pki::{CertificateAuthority, Validity};
use strife_proto::v1::{
    self as pb, coordinator_client::CoordinatorClient, gateway_client::GatewayClient,
};
use tonic::transport::{Certificate, ClientTlsConfig, Endpoint};
use tonic::Code;

async fn alice_and_bob(options: NetworkOptions) -> ManualNetwork {
    let users = ["alice", "bob", "carol"];
    let network = ManualNetwork::start_with(&["bank0", "bank1"], &users, options).await;
    network.fund("alice", "bank0", "100.00").await;
    network.fund("bob", "bank1", "10.00").await;
    network.fund("carol", "bank0", "0").await;
    network
}

fn pay(key: &str) -> pb::PayRequest {
    pb::PayRequest {
        idempotency_key: key.into(),
        to_username: "bob".into(),
        amount: Some(pb::Money {
            amount_minor: 100,
            currency: "USD".into(),
        }),
        ..pb::PayRequest::default()
    }
}

/// Balances of alice and bob as the admin sees them, and the length of alice's history.
async fn state(network: &ManualNetwork) -> (i64, i64, usize) {
    let admin = network.gateway_client("admin");
    let balance = |user: &'static str| {
        let mut admin = admin.clone();
        async move {
            let request = pb::GetBalancesRequest {
                username: user.into(),
            };
            let accounts = admin
                .get_balances(request)
                .await
                .unwrap()
                .into_inner()
                .accounts;
            accounts[0].balance.as_ref().unwrap().amount_minor
        }
    };
    let history = network
        .gateway_client("alice")
        .list_history(pb::ListHistoryRequest::default())
        .await
        .unwrap()
        .into_inner()
        .payments
        .len();
    (balance("alice").await, balance("bob").await, history)
}

#[tokio::test]
async fn bad_credentials_are_refused_and_change_nothing() {
    let network = alice_and_bob(NetworkOptions::default()).await;
    let before = state(&network).await;

    // No client certificate at all.
    let ca = std::fs::read(network.network.layout().ca().cert).unwrap();
    let channel = Endpoint::from_shared(format!("https://{}", network.gateway_address))
        .unwrap()
        .tls_config(ClientTlsConfig::new().ca_certificate(Certificate::from_pem(ca)))
        .unwrap()
        .timeout(Duration::from_secs(5))
        .connect_lazy();
    let mut anonymous = GatewayClient::with_interceptor(
        channel,
        Credentials::new("alice", &password_of("alice")).unwrap(),
    );
    assert!(anonymous.pay(pay("anon")).await.is_err());

    // A certificate for "alice" from a CA that is not ours.
    let foreign = CertificateAuthority::generate()
        .unwrap()
        .issue(PeerRole::User, "alice", Validity::default_leaf())
        .unwrap();
    let paths = KeyPairPaths {
        cert: network.network.path().join("foreign.crt"),
        key: network.network.path().join("foreign.key"),
    };
    std::fs::write(&paths.cert, foreign.certificate_pem).unwrap();
    std::fs::write(&paths.key, foreign.key_pem).unwrap();
    // Keys must be private to be loaded at all (as setup writes them).
    std::fs::set_permissions(
        &paths.key,
        std::os::unix::fs::PermissionsExt::from_mode(0o600),
    )
    .unwrap();
    let tls = TlsMaterial::load(&network.network.layout().ca().cert, &paths).unwrap();
    let channel = tls
        .endpoint(
            &network.gateway_address,
            &ExpectedPeer::Gateway,
            Duration::from_secs(5),
        )
        .unwrap()
        .connect_lazy();
    let mut impostor = GatewayClient::with_interceptor(
        channel,
        Credentials::new("alice", &password_of("alice")).unwrap(),
    );
    assert!(impostor.pay(pay("foreign")).await.is_err());

    let unauthenticated = [
        network.gateway_client_as("alice", "bob", &password_of("bob")), // cert CN ≠ user
        network.gateway_client_as("alice", "alice", "wrong password"),  // wrong password
        network.gateway_client_as("alice", "nobody", "whatever-pass"),  // unknown user
        network.gateway_client_as("alice", "alice", ""),                // no password
    ];
    for mut client in unauthenticated {
        let status = client.pay(pay("x")).await.unwrap_err();
        assert_eq!(status.code(), Code::Unauthenticated, "{status:?}");
        assert_eq!(
            status.message(),
            "authentication failed",
            "no hint for attackers"
        );
    }
    assert_eq!(state(&network).await, before);
}

#[tokio::test]
async fn clients_cannot_call_admin_methods_or_touch_others_money() {
    let network = alice_and_bob(NetworkOptions::default()).await;
    let mut bob = network.gateway_client("bob");
    let to_alice = pb::PayRequest {
        to_username: "alice".into(),
        ..pay("bob-1")
    };
    let bob_to_alice = bob.pay(to_alice).await.unwrap().into_inner();
    let to_carol = pb::PayRequest {
        to_username: "carol".into(),
        ..pay("bob-2")
    };
    let bob_to_carol = bob.pay(to_carol).await.unwrap().into_inner();
    let before = state(&network).await;
    let mut alice = network.gateway_client("alice");

    let register = pb::RegisterUserRequest {
        username: "mallory".into(),
        password: "mallory-pass".into(),
    };
    assert_eq!(
        alice.register_user(register).await.unwrap_err().code(),
        Code::PermissionDenied
    );
    let open = pb::GatewayOpenAccountRequest {
        username: "alice".into(),
        bank_id: "bank0".into(),
        currency: "USD".into(),
        opening_deposit: Some(pb::Money {
            amount_minor: 1_000_000,
            currency: "USD".into(),
        }),
        holder_name: String::new(),
        idempotency_key: String::new(),
    };
    assert_eq!(
        alice.open_account(open).await.unwrap_err().code(),
        Code::PermissionDenied
    );
    let balances = pb::GetBalancesRequest {
        username: "bob".into(),
    };
    assert_eq!(
        alice.get_balances(balances).await.unwrap_err().code(),
        Code::PermissionDenied
    );
    let received = pb::GetPaymentRequest {
        payment_id: bob_to_alice.payment_id.clone(),
    };
    assert!(
        alice.get_payment(received).await.is_ok(),
        "alice received that one, so she may see it"
    );
    // Someone else's payment and a payment that does not exist answer alike: existence
    // does not leak.
    let others = pb::GetPaymentRequest {
        payment_id: bob_to_carol.payment_id.clone(),
    };
    let others = alice.get_payment(others).await.unwrap_err();
    assert_eq!(
        (others.code(), others.message()),
        (
            Code::NotFound,
            format!("payment {} not found", bob_to_carol.payment_id).as_str()
        )
    );
    let unknown = pb::GetPaymentRequest {
        payment_id: "no-such-payment".into(),
    };
    let unknown = alice.get_payment(unknown).await.unwrap_err();
    assert_eq!(
        (unknown.code(), unknown.message()),
        (Code::NotFound, "payment no-such-payment not found")
    );
    // Idempotency keys are per user: bob's key looked up by alice is simply not hers.
    let bobs_key = alice
        .get_payment_by_key(pb::GetPaymentByKeyRequest {
            idempotency_key: "bob-1".into(),
        })
        .await
        .unwrap_err();
    assert_eq!(bobs_key.code(), Code::NotFound, "{bobs_key:?}");
    let own = bob
        .get_payment_by_key(pb::GetPaymentByKeyRequest {
            idempotency_key: "bob-1".into(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(own.payment_id, bob_to_alice.payment_id);
    let empty = alice
        .get_payment(pb::GetPaymentRequest::default())
        .await
        .unwrap_err();
    assert_eq!(
        (empty.code(), empty.message()),
        (Code::InvalidArgument, "payment_id is empty")
    );
    let history = alice
        .list_history(pb::ListHistoryRequest::default())
        .await
        .unwrap()
        .into_inner();
    assert!(history
        .payments
        .iter()
        .all(|payment| payment.payment_id != bob_to_carol.payment_id));
    let link = pb::LinkAccountRequest {
        bank_id: "bank1".into(),
        account_number: "bank1-00000001".into(),
        holder_name: "Alice".into(),
    };
    let bobs = alice.link_account(link).await.unwrap_err();
    assert_eq!(
        (bobs.code(), bobs.message()),
        (Code::NotFound, "account bank1-00000001 not found at bank1"),
        "bob's account"
    );
    let link = pb::LinkAccountRequest {
        bank_id: "bank1".into(),
        account_number: "bank1-99999999".into(),
        holder_name: "Alice".into(),
    };
    let nobodys = alice.link_account(link).await.unwrap_err();
    assert_eq!(
        (nobodys.code(), nobodys.message()),
        (Code::NotFound, "account bank1-99999999 not found at bank1"),
        "an account that does not exist answers alike"
    );

    // A user (even with the right password) cannot ask for coordinator decisions...
    let user_tls = network
        .network
        .tls(&network.network.layout().user_identity("alice"));
    let channel = user_tls
        .endpoint(
            &network.gateway_address,
            &ExpectedPeer::Gateway,
            Duration::from_secs(5),
        )
        .unwrap()
        .connect_lazy();
    let credentials = Credentials::new("alice", &password_of("alice")).unwrap();
    let status = CoordinatorClient::with_interceptor(channel, credentials)
        .get_decision(pb::GetDecisionRequest {
            payment_id: bob_to_alice.payment_id.clone(),
            bank_id: "bank0".into(),
        })
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::PermissionDenied, "{status:?}");
    // ...and a bank may ask only in its own name.
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
    let status = CoordinatorClient::new(channel)
        .get_decision(pb::GetDecisionRequest {
            payment_id: bob_to_alice.payment_id.clone(),
            bank_id: "bank1".into(),
        })
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::PermissionDenied, "{status:?}");
    assert_eq!(
        state(&network).await,
        before,
        "none of the refused calls changed anything"
    );
}

#[tokio::test]
async fn repeated_wrong_passwords_lock_the_name_until_the_lockout_expires() {
    let options = NetworkOptions {
        gateway_args: vec![
            "--lockout-threshold".into(),
            "3".into(),
            "--lockout-secs".into(),
            "2".into(),
        ],
        ..NetworkOptions::default()
    };
    let network = alice_and_bob(options).await;
    let mut right = network.gateway_client("alice");
    right
        .get_balances(pb::GetBalancesRequest::default())
        .await
        .unwrap();
    let mut wrong = network.gateway_client_as("alice", "alice", "not-the-password");
    for _ in 0..3 {
        assert_eq!(
            wrong
                .get_balances(pb::GetBalancesRequest::default())
                .await
                .unwrap_err()
                .code(),
            Code::Unauthenticated
        );
    }
    let locked = right
        .get_balances(pb::GetBalancesRequest::default())
        .await
        .unwrap_err();
    assert_eq!(
        locked.code(),
        Code::ResourceExhausted,
        "the right password fails while locked: {locked:?}"
    );
    assert!(locked.message().contains("locked"), "{locked:?}");
    let unlocked = wait_until(Duration::from_secs(6), || {
        let mut right = right.clone();
        async move {
            right
                .get_balances(pb::GetBalancesRequest::default())
                .await
                .is_ok()
        }
    })
    .await;
    assert!(unlocked, "the lock never expired");
    // Bob was never locked.
    network
        .gateway_client("bob")
        .get_balances(pb::GetBalancesRequest::default())
        .await
        .unwrap();
}

#[tokio::test]
async fn registration_enforces_the_password_policy() {
    let network = alice_and_bob(NetworkOptions::default()).await;
    let mut admin = network.gateway_client("admin");
    let register = |password: &str| pb::RegisterUserRequest {
        username: "dave".into(),
        password: password.into(),
    };
    for (password, says) in [
        ("short-pw", "12 to 256"),
        (&"x".repeat(257)[..], "12 to 256"),
        ("dave-is-my-password", "must not contain the user name"),
        ("my-DAVE-password", "must not contain the user name"),
        ("pässwörd-lang-genug", "printable ASCII"),
        ("tab\tin-the-middle", "printable ASCII"),
    ] {
        let status = admin.register_user(register(password)).await.unwrap_err();
        assert_eq!(
            status.code(),
            Code::InvalidArgument,
            "{password:?}: {status:?}"
        );
        assert!(status.message().contains(says), "{password:?}: {status:?}");
        assert!(
            !status.message().contains(password),
            "the message echoes no password"
        );
    }
    admin
        .register_user(register("a good long passphrase"))
        .await
        .expect("a password meeting the policy");
}

/// Peak resident memory of a process, from `/proc/<pid>/status`, in KiB.
fn peak_rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    status
        .lines()
        .find_map(|line| line.strip_prefix("VmHWM:"))
        .and_then(|rest| rest.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_burst_of_wrong_passwords_checks_at_most_threshold_and_stays_small() {
    const THRESHOLD: usize = 5;
    let network = alice_and_bob(NetworkOptions::default()).await;
    let gateway_pid = network.gateway.as_ref().unwrap().child.id();
    let baseline = peak_rss_kib(gateway_pid);

    // A stranger with bob's certificate claiming to be alice is refused before any password
    // is checked, so however often it tries, alice is not locked out.
    let stranger = network.gateway_client_as("bob", "alice", "guess-guess-guess");
    for _ in 0..(3 * THRESHOLD) {
        let status = stranger
            .clone()
            .get_balances(pb::GetBalancesRequest::default())
            .await
            .unwrap_err();
        assert_eq!(status.code(), Code::Unauthenticated, "{status:?}");
    }
    network
        .gateway_client("alice")
        .get_balances(pb::GetBalancesRequest::default())
        .await
        .expect("a stranger cannot lock alice out");

    // 64 different wrong passwords pipelined on one connection, all at once.
    let channel = network
        .network
        .tls(&network.network.layout().user_identity("alice"))
        .endpoint(
            &network.gateway_address,
            &ExpectedPeer::Gateway,
            Duration::from_secs(10),
        )
        .unwrap()
        .connect_lazy();
    let guesses = (0..64).map(|index| {
        let mut client = GatewayClient::with_interceptor(
            channel.clone(),
            Credentials::new("alice", &format!("wrong-guess-number-{index}")).unwrap(),
        );
        async move {
            client
                .get_balances(pb::GetBalancesRequest::default())
                .await
                .unwrap_err()
        }
    });
    let answers = futures::future::join_all(guesses).await;
    let checked = answers
        .iter()
        .filter(|status| status.code() == Code::Unauthenticated)
        .count();
    let refused = answers
        .iter()
        .filter(|status| status.code() == Code::ResourceExhausted)
        .count();
    assert!(
        checked <= THRESHOLD,
        "{checked} guesses were checked, threshold {THRESHOLD}"
    );
    assert_eq!(checked + refused, 64, "{answers:?}");
    let locked = network
        .gateway_client("alice")
        .get_balances(pb::GetBalancesRequest::default())
        .await
        .unwrap_err();
    assert_eq!(locked.code(), Code::ResourceExhausted, "{locked:?}");
    assert!(locked.message().contains("locked"), "{locked:?}");

    let peak = peak_rss_kib(gateway_pid);
    assert!(
        peak < 400 * 1024,
        "gateway peak RSS {peak} KiB (before the burst {baseline} KiB)"
    );

    // Everyone else is unaffected: bob logs in and pays.
    let paid = network
        .gateway_client("bob")
        .pay(pb::PayRequest {
            to_username: "carol".into(),
            ..pay("bob-after-burst")
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(paid.status, pb::PaymentStatus::Committed as i32);
}

#[tokio::test]
async fn no_password_or_key_ever_reaches_any_log() {
    let network = alice_and_bob(NetworkOptions::default()).await;
    let _ = network
        .gateway_client_as("alice", "alice", "a-wrong-secret-pw")
        .pay(pay("w"))
        .await;
    network
        .gateway_client("alice")
        .pay(pay("ok"))
        .await
        .unwrap();
    assert!(
        network.gateway_log().contains("Gateway/Pay"),
        "the log has the requests"
    );

    // Every log of the run: gateway, banks (all under the data dir) and etcd.
    let mut logs = String::new();
    for entry in std::fs::read_dir(network.network.path()).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_some_and(|extension| extension == "log") {
            logs.push_str(&std::fs::read_to_string(&path).unwrap_or_default());
        }
    }
    logs.push_str(&network.etcd.log_text());
    assert!(
        logs.contains("registered in etcd"),
        "bank logs were read too"
    );
    let layout = network.network.layout();
    let mut secrets = vec![
        strife_pki::read_admin_password(&layout).unwrap(),
        password_of("alice"),
        password_of("bob"),
        "a-wrong-secret-pw".into(),
    ];
    for key in [
        layout.ca().key,
        layout.gateway_identity().key,
        layout.bank_identity("bank0").key,
        layout.user_identity("alice").key,
    ] {
        let pem = std::fs::read_to_string(key).unwrap();
        // The base64 body of the key, line by line.
        secrets.extend(
            pem.lines()
                .filter(|line| !line.starts_with("-----") && line.len() > 16)
                .map(str::to_owned),
        );
    }
    for secret in secrets {
        assert!(!logs.contains(&secret), "a secret is in a log");
    }
}

#[tokio::test]
async fn a_lock_is_kept_in_the_store_so_a_restarted_gateway_still_honours_it() {
    let options = NetworkOptions {
        gateway_args: vec![
            "--lockout-threshold".into(),
            "3".into(),
            "--lockout-secs".into(),
            "60".into(),
        ],
        ..NetworkOptions::default()
    };
    let mut network = alice_and_bob(options).await;
    let mut wrong = network.gateway_client_as("alice", "alice", "not-the-password");
    for _ in 0..3 {
        let refused = wrong
            .get_balances(pb::GetBalancesRequest::default())
            .await
            .unwrap_err();
        assert_eq!(refused.code(), Code::Unauthenticated, "{refused:?}");
    }
    // A new gateway process (as another replica would be) knows nothing in memory.
    network.stop_gateway();
    network.start_gateway(&[]);
    let locked = network
        .gateway_client("alice")
        .get_balances(pb::GetBalancesRequest::default())
        .await
        .unwrap_err();
    assert_eq!(locked.code(), Code::ResourceExhausted, "{locked:?}");
    assert!(locked.message().contains("locked"), "{locked:?}");
    // Only alice is locked.
    network
        .gateway_client("bob")
        .get_balances(pb::GetBalancesRequest::default())
        .await
        .unwrap();
}
