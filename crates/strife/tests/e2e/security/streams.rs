//! Open streams are capped (`strife_common::net::stream_limits`): one certificate holds at most
//! `MAX_STREAMS_PER_PEER` streaming calls on a server (health `Watch`, reflection,
//! `WatchPayments` together, over all its connections), the server at most `MAX_STREAMS`;
//! past a cap a call is `RESOURCE_EXHAUSTED` while other certificates and payments go on, a
//! closed stream frees its slot, and the gateway's memory while the server is full stays
//! under the documented bound (docs/OPERATIONS.md, "Memory bounds").
//!
//! This is the outside campaign's attack (thousands of health `Watch`es from one user
//! certificate without a password) against a real gateway.

use std::time::{Duration, Instant};

use strife_common::limits::{
    MAX_STREAMS, MAX_STREAMS_PER_PEER, MAX_WATCHES_PER_USER, STREAM_MEMORY_BOUND_BYTES,
};
use strife_common::net::tls::ExpectedPeer;
use strife_proto::v1 as pb;
use tonic::transport::Channel;
use tonic::Code;
use tonic_health::pb::health_client::HealthClient;
use tonic_health::pb::{HealthCheckRequest, HealthCheckResponse};
use tonic_types::StatusExt;

use crate::support::network::{ManualNetwork, NetworkOptions};
use crate::support::wait_until;

/// A new connection to the gateway presenting `user`'s certificate (no password: health
/// needs none).
fn connection(network: &ManualNetwork, user: &str) -> Channel {
    let layout = network.network.layout();
    network
        .network
        .tls(&layout.user_identity(user))
        .endpoint(
            &network.gateway_address,
            &ExpectedPeer::Gateway,
            Duration::from_secs(10),
        )
        .unwrap()
        .connect_lazy()
}

/// Opens one health `Watch` on `channel`; the stream stays open while it is held.
async fn watch(channel: &Channel) -> Result<tonic::Streaming<HealthCheckResponse>, tonic::Status> {
    HealthClient::new(channel.clone())
        .watch(HealthCheckRequest {
            service: String::new(),
        })
        .await
        .map(tonic::Response::into_inner)
}

/// Asserts `status` is the stream cap's refusal, mentioning `says`.
fn assert_capped(status: &tonic::Status, says: &str) {
    assert_eq!(status.code(), Code::ResourceExhausted, "{status:?}");
    assert_eq!(
        status.get_details_error_info().map(|info| info.reason),
        Some("resource_exhausted".to_owned()),
        "{status:?}"
    );
    assert!(status.message().contains(says), "{status:?}");
}

/// The resident memory of process `pid`, in bytes (`VmRSS` in `/proc/<pid>/status`).
fn resident_bytes(pid: u32) -> usize {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let kib: usize = status
        .lines()
        .find_map(|line| line.strip_prefix("VmRSS:"))
        .and_then(|value| value.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap();
    kib * 1024
}

/// [`resident_bytes`] once it has settled: two readings 200 ms apart within 64 KiB of each
/// other (the allocator hands freed memory back to the kernel in its own time, e.g. the
/// 19 MiB of each argon2id check), waiting at most 20 s.
async fn settled_resident_bytes(pid: u32) -> usize {
    let deadline = Instant::now() + Duration::from_secs(20);
    let mut previous = resident_bytes(pid);
    loop {
        tokio::time::sleep(Duration::from_millis(200)).await;
        let now = resident_bytes(pid);
        if now.abs_diff(previous) <= 64 * 1024 {
            return now;
        }
        assert!(
            Instant::now() < deadline,
            "the gateway's memory did not settle"
        );
        previous = now;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn streams_are_capped_per_certificate_and_per_server_and_a_closed_one_frees_its_slot() {
    // Enough other certificates to fill the server: each may hold its share, no more.
    assert_eq!(MAX_STREAMS % MAX_STREAMS_PER_PEER, 0);
    let watchers: Vec<String> = (0..MAX_STREAMS / MAX_STREAMS_PER_PEER)
        .map(|index| format!("watcher{index:02}"))
        .collect();
    let mut users = vec!["alice", "bob"];
    users.extend(watchers.iter().map(String::as_str));
    // The gateway's allocator (mimalloc) keeps freed memory (each argon2id check frees
    // 19 MiB) and hands it back to the kernel only later: the streams would then be counted
    // in memory already resident, or the RSS would shrink under them. Purging at once makes
    // the RSS the live memory, so the growth measured is the streams' own.
    let options = NetworkOptions {
        gateway_env: vec![("MIMALLOC_PURGE_DELAY".into(), "0".into())],
        ..NetworkOptions::default()
    };
    let network = ManualNetwork::start_with(&["bank0", "bank1"], &users, options).await;
    network.fund("alice", "bank0", "100.00").await;
    network.fund("bob", "bank1", "0").await;

    // alice fills her share on one connection: every payment watch she may have, then
    // health watches (no password) for the rest.
    let alice = connection(&network, "alice");
    let mut held_watches = Vec::new();
    let mut held_payment_watches = Vec::new();
    let mut payments = network.gateway_client("alice");
    for _ in 0..MAX_WATCHES_PER_USER {
        let opened = payments
            .watch_payments(pb::WatchPaymentsRequest { since: "0".into() })
            .await
            .unwrap();
        held_payment_watches.push(opened.into_inner());
    }
    for _ in MAX_WATCHES_PER_USER..MAX_STREAMS_PER_PEER {
        held_watches.push(watch(&alice).await.unwrap());
    }
    // One more is refused, on that connection and on a new one with the same certificate.
    let refused = watch(&alice).await.unwrap_err();
    assert_capped(&refused, "this certificate");
    let refused = watch(&connection(&network, "alice")).await.unwrap_err();
    assert_capped(&refused, "this certificate");

    // Another certificate still opens a stream, and alice still pays (unary calls are not
    // streams), over the connection that holds her streams and through the CLI.
    let bob_watch = watch(&connection(&network, "bob")).await.unwrap();
    let (code, paid) = network.client(
        "alice",
        &[
            "pay",
            "--to",
            "bob",
            "--amount",
            "1.00",
            "--key",
            "streams-1",
        ],
    );
    assert_eq!(code, 0, "{paid}");
    let balances = strife_proto::v1::gateway_client::GatewayClient::with_interceptor(
        alice.clone(),
        strife_common::metadata::Credentials::new(
            "alice",
            &crate::support::network::password_of("alice"),
        )
        .unwrap(),
    )
    .get_balances(pb::GetBalancesRequest::default())
    .await;
    assert!(balances.is_ok(), "{balances:?}");

    // Closing streams frees their slots: alice opens again once the server saw them go.
    drop(held_watches);
    drop(held_payment_watches);
    drop(bob_watch);
    assert!(
        wait_until(Duration::from_secs(10), || async {
            watch(&alice).await.is_ok()
        })
        .await,
        "closed streams did not free alice's slots"
    );

    // The whole server: every watcher certificate takes its full share until the server
    // holds MAX_STREAMS. Connections first, so their cost is not counted per stream.
    let channels: Vec<Channel> = watchers
        .iter()
        .map(|watcher| connection(&network, watcher))
        .collect();
    for channel in &channels {
        HealthClient::new(channel.clone())
            .check(HealthCheckRequest::default())
            .await
            .unwrap();
    }
    let gateway_pid = network.gateway.as_ref().unwrap().child.id();
    let before = settled_resident_bytes(gateway_pid).await;
    let mut open = Vec::new();
    for channel in &channels {
        for _ in 0..MAX_STREAMS_PER_PEER {
            // A slot freed above may still be on its way back: wait for it, bounded.
            let deadline = Instant::now() + Duration::from_secs(10);
            let stream = loop {
                match watch(channel).await {
                    Ok(stream) => break stream,
                    Err(status) if Instant::now() < deadline => {
                        assert_capped(&status, "open streams");
                        tokio::time::sleep(Duration::from_millis(25)).await;
                    }
                    Err(status) => panic!("refused under both caps: {status:?}"),
                }
            };
            open.push(stream);
        }
    }
    assert_eq!(open.len(), MAX_STREAMS);
    let refused = watch(&alice).await.unwrap_err();
    assert_capped(&refused, &format!("at most {MAX_STREAMS} open streams"));
    let after = settled_resident_bytes(gateway_pid).await;
    let grown = after.saturating_sub(before);
    eprintln!(
        "gateway resident memory {before} → {after} bytes: grew {grown} bytes for \
         {MAX_STREAMS} open Watch streams ({} bytes per stream)",
        grown / MAX_STREAMS
    );
    assert!(
        grown <= MAX_STREAMS * STREAM_MEMORY_BOUND_BYTES,
        "{grown} bytes for {MAX_STREAMS} streams is over the documented bound"
    );
    // Every stream is alive: each still delivers its first status.
    for stream in open.iter_mut().take(4) {
        let first = tokio::time::timeout(Duration::from_secs(10), stream.message())
            .await
            .unwrap()
            .unwrap();
        assert!(first.is_some());
    }
}
