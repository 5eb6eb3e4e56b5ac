//! The gateway under connection abuse that needs no certificate: a flood of TCP connections
//! that never send a byte, and connections left idle. A paying client must still get in, and
//! what the flood holds must stay bounded and go away by itself.

use std::time::Duration;

use crate::support::network::{ManualNetwork, NetworkOptions};
use crate::support::wait_until;
use strife_proto::v1 as pb;

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

fn gateway_pid(network: &ManualNetwork) -> i32 {
    network.gateway.as_ref().unwrap().child.id() as i32
}

fn open_descriptors(pid: i32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/fd"))
        .map(|entries| entries.count())
        .unwrap_or(0)
}

/// Established TCP connections whose local port is `port` (the server's side), from
/// /proc/net/tcp.
fn established_to(port: u16) -> usize {
    let table = std::fs::read_to_string("/proc/net/tcp").unwrap_or_default();
    let local_port = format!(":{port:04X}");
    table
        .lines()
        .skip(1)
        .filter(|line| {
            let fields: Vec<&str> = line.split_whitespace().collect();
            fields.len() > 3 && fields[1].ends_with(&local_port) && fields[3] == "01"
        })
        .count()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flood_of_silent_connections_does_not_keep_a_paying_client_out() {
    let network = ManualNetwork::start(&["bank0", "bank1"], &["alice", "bob"]).await;
    network.fund("alice", "bank0", "100.00").await;
    network.fund("bob", "bank1", "0").await;
    // The gateway gets a small descriptor budget, so a flood a few times larger would
    // exhaust it if silent connections were kept.
    let pid = gateway_pid(&network);
    let limit = libc::rlimit {
        rlim_cur: 1_024,
        rlim_max: 1_024,
    };
    // SAFETY: prlimit on our own child with a valid rlimit; no memory is shared.
    let set = unsafe { libc::prlimit(pid, libc::RLIMIT_NOFILE, &limit, std::ptr::null_mut()) };
    assert_eq!(set, 0, "prlimit failed");

    let mut flood = Vec::new();
    for _ in 0..3_000 {
        match tokio::net::TcpStream::connect(&network.gateway_address).await {
            Ok(stream) => flood.push(stream),
            Err(error) => panic!("the flood itself failed to connect: {error}"),
        }
    }
    // While the flood holds its sockets open, a real client connects and pays.
    let mut alice = network.gateway_client("alice");
    let paid = wait_until(Duration::from_secs(20), || {
        let mut alice = alice.clone();
        async move { alice.pay(pay("through-the-flood")).await.is_ok() }
    })
    .await;
    assert!(paid, "the client could not pay during the flood");
    let payment = alice
        .pay(pay("through-the-flood"))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(payment.status, pb::PaymentStatus::Committed as i32);
    // The gateway holds far fewer descriptors than the flood has connections.
    let held = open_descriptors(pid);
    assert!(held < 900, "the gateway holds {held} descriptors");
    drop(flood);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_idle_connection_is_closed_after_the_idle_timeout() {
    let options = NetworkOptions {
        gateway_args: vec!["--idle-timeout".into(), "1s".into()],
        ..NetworkOptions::default()
    };
    let network = ManualNetwork::start_with(&["bank0"], &["alice"], options).await;
    network.fund("alice", "bank0", "1.00").await;
    let port: u16 = network
        .gateway_address
        .rsplit(':')
        .next()
        .and_then(|port| port.parse().ok())
        .unwrap();
    let mut alice = network.gateway_client("alice");
    alice
        .get_balances(pb::GetBalancesRequest::default())
        .await
        .unwrap();
    assert!(established_to(port) >= 1, "no connection to observe");
    // The channel is still alive on our side; the gateway closes the quiet connection.
    let closed = wait_until(Duration::from_secs(10), || async {
        established_to(port) == 0
    })
    .await;
    assert!(closed, "{} connections still open", established_to(port));
    // The client's channel reconnects by itself for the next call.
    let again = wait_until(Duration::from_secs(10), || {
        let mut alice = alice.clone();
        async move {
            alice
                .get_balances(pb::GetBalancesRequest::default())
                .await
                .is_ok()
        }
    })
    .await;
    assert!(again);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_certificate_holds_at_most_its_share_of_connections() {
    let options = NetworkOptions {
        gateway_args: vec!["--max-connections-per-certificate".into(), "4".into()],
        ..NetworkOptions::default()
    };
    let network = ManualNetwork::start_with(&["bank0"], &["alice", "bob"], options).await;
    network.fund("alice", "bank0", "1.00").await;
    network.fund("bob", "bank0", "1.00").await;
    // Each client below is its own channel, so its own TCP connection.
    let mut held = Vec::new();
    for _ in 0..4 {
        let mut alice = network.gateway_client("alice");
        alice
            .get_balances(pb::GetBalancesRequest::default())
            .await
            .unwrap();
        held.push(alice);
    }
    let mut fifth = network.gateway_client("alice");
    let refused = fifth
        .get_balances(pb::GetBalancesRequest::default())
        .await
        .unwrap_err();
    assert_eq!(
        refused.code(),
        tonic::Code::ResourceExhausted,
        "{refused:?}"
    );
    // Another certificate is not affected, and the held connections keep working.
    network
        .gateway_client("bob")
        .get_balances(pb::GetBalancesRequest::default())
        .await
        .unwrap();
    held[0]
        .get_balances(pb::GetBalancesRequest::default())
        .await
        .unwrap();
    // Closing one frees its slot for a new connection.
    held.pop();
    let freed = wait_until(Duration::from_secs(10), || async {
        network
            .gateway_client("alice")
            .get_balances(pb::GetBalancesRequest::default())
            .await
            .is_ok()
    })
    .await;
    assert!(freed, "a closed connection never gave its slot back");
}

/// One certificate opening connections (TLS and HTTP/2 handshakes done) and never making a
/// request is not counted against its share until its first request; such connections are
/// closed at the first-request deadline, so they cannot keep every slot from other users.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn handshakes_that_never_make_a_request_do_not_keep_other_users_out() {
    const SLOTS: usize = 16;
    let options = NetworkOptions {
        gateway_args: vec![
            "--max-connections".into(),
            SLOTS.to_string(),
            "--first-request-timeout".into(),
            "2s".into(),
        ],
        ..NetworkOptions::default()
    };
    let network = ManualNetwork::start_with(&["bank0"], &["alice", "bob"], options).await;
    network.fund("bob", "bank0", "1.00").await;
    let layout = network.network.layout();
    let tls = network.network.tls(&layout.user_identity("alice"));
    // Every slot taken by alice's certificate, eagerly connected, no request sent.
    let mut idle = Vec::new();
    for _ in 0..SLOTS {
        let endpoint = tls
            .endpoint(
                &network.gateway_address,
                &strife_common::net::tls::ExpectedPeer::Gateway,
                Duration::from_secs(5),
            )
            .unwrap();
        if let Ok(channel) = endpoint.connect().await {
            idle.push(channel);
        }
    }
    assert!(
        idle.len() >= SLOTS - 1,
        "only {} idle handshakes got in",
        idle.len()
    );
    // bob gets in once the idle handshakes are closed: within the deadline plus slack (with
    // no deadline they would hold every slot for the idle timeout, 120 s, or for ever with
    // HTTP/2 keep-alive pings).
    let started = std::time::Instant::now();
    let served = wait_until(Duration::from_secs(20), || async {
        network
            .gateway_client_at(
                &network.gateway_address,
                "bob",
                "bob",
                &network.password("bob"),
                Duration::from_secs(2),
            )
            .get_balances(pb::GetBalancesRequest::default())
            .await
            .is_ok()
    })
    .await;
    assert!(served, "bob was kept out by idle handshakes");
    eprintln!("bob served {:?} after the slots filled", started.elapsed());
    drop(idle);
}
