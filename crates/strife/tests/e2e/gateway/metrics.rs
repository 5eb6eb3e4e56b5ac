//! Prometheus metrics on `--metrics-listen`: a real gateway and banks serve `GET /metrics` in
//! the text format (checked with a third-party parser), the payment counters move by exactly
//! the payments made, the histograms get their samples, no label carries a user name or a
//! payment id, and a process not asked for metrics opens no port for them.

use std::collections::HashSet;
use std::net::SocketAddr;
use std::process::Command;
use std::time::Duration;

use prometheus_parse::{LineInfo, Scrape, Value};
use strife_proto::v1 as pb;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tonic::Code;

use crate::support::dev::DevNetwork;
use crate::support::network::{ManualNetwork, NetworkOptions};
use crate::support::{spawn_with_ready_line, strife_bin, wait_until, BankStart, Network};

/// One HTTP/1.1 request; the status code and the body.
async fn http(address: SocketAddr, method: &str, path: &str) -> (u16, String) {
    let exchange = async {
        let mut stream = tokio::net::TcpStream::connect(address).await.unwrap();
        let request =
            format!("{method} {path} HTTP/1.1\r\nHost: strife\r\nConnection: close\r\n\r\n");
        stream.write_all(request.as_bytes()).await.unwrap();
        let mut response = String::new();
        stream.read_to_string(&mut response).await.unwrap();
        response
    };
    let response = tokio::time::timeout(Duration::from_secs(10), exchange)
        .await
        .expect("metrics endpoint answers within 10 s");
    let (head, body) = response.split_once("\r\n\r\n").expect("an HTTP response");
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|code| code.parse().ok())
        .expect("a status code");
    (status, body.to_owned())
}

/// `GET /metrics`, checked line by line and parsed by `prometheus-parse`.
async fn scrape(address: SocketAddr) -> Scrape {
    let (status, body) = http(address, "GET", "/metrics").await;
    assert_eq!(status, 200, "{body}");
    for line in body.lines() {
        assert!(
            !matches!(LineInfo::parse(line), LineInfo::Ignored),
            "a line the text format does not allow: {line:?}"
        );
    }
    Scrape::parse(body.lines().map(|line| Ok(line.to_owned()))).unwrap()
}

fn matches(sample: &prometheus_parse::Sample, name: &str, labels: &[(&str, &str)]) -> bool {
    sample.metric == name
        && labels
            .iter()
            .all(|(key, value)| sample.labels.get(key) == Some(*value))
}

/// A counter's or gauge's value; 0 for a series not (yet) there.
fn value(scrape: &Scrape, name: &str, labels: &[(&str, &str)]) -> f64 {
    scrape
        .samples
        .iter()
        .filter(|sample| matches(sample, name, labels))
        .map(|sample| match sample.value {
            Value::Counter(value) | Value::Gauge(value) | Value::Untyped(value) => value,
            ref other => panic!("{name} is not a single value: {other:?}"),
        })
        .sum()
}

/// A histogram's observation count (its `+Inf` bucket), summed over the matching series.
fn observations(scrape: &Scrape, name: &str, labels: &[(&str, &str)]) -> f64 {
    let buckets: f64 = scrape
        .samples
        .iter()
        .filter(|sample| matches(sample, name, labels))
        .map(|sample| match &sample.value {
            Value::Histogram(buckets) => buckets
                .iter()
                .find(|bucket| bucket.less_than.is_infinite())
                .map_or(0.0, |bucket| bucket.count),
            other => panic!("{name} is not a histogram: {other:?}"),
        })
        .sum();
    assert_eq!(
        buckets,
        value(scrape, &format!("{name}_count"), labels),
        "{name}: +Inf bucket and _count agree"
    );
    buckets
}

fn label_values(scrape: &Scrape) -> HashSet<String> {
    scrape
        .samples
        .iter()
        .flat_map(|sample| sample.labels.values().cloned().collect::<Vec<_>>())
        .collect()
}

/// TCP ports `pid` is listening on (its socket inodes matched against /proc/net/tcp{,6}).
fn listening_ports(pid: u32) -> Vec<u16> {
    let inodes: HashSet<String> = std::fs::read_dir(format!("/proc/{pid}/fd"))
        .unwrap()
        .filter_map(|entry| std::fs::read_link(entry.ok()?.path()).ok())
        .filter_map(|target| {
            let target = target.to_string_lossy().into_owned();
            Some(
                target
                    .strip_prefix("socket:[")?
                    .strip_suffix(']')?
                    .to_owned(),
            )
        })
        .collect();
    let mut ports = Vec::new();
    for table in ["/proc/net/tcp", "/proc/net/tcp6"] {
        let Ok(text) = std::fs::read_to_string(table) else {
            continue;
        };
        for line in text.lines().skip(1) {
            let fields: Vec<&str> = line.split_whitespace().collect();
            // sl, local_address, rem_address, st (0A = LISTEN), …, inode (10th).
            if fields.len() > 9 && fields[3] == "0A" && inodes.contains(fields[9]) {
                let port = fields[1].rsplit(':').next().unwrap();
                ports.push(u16::from_str_radix(port, 16).unwrap());
            }
        }
    }
    ports.sort_unstable();
    ports
}

fn metrics_address(ready: &serde_json::Value) -> SocketAddr {
    ready["metrics_address"]
        .as_str()
        .unwrap_or_else(|| panic!("no metrics_address in the ready line {ready}"))
        .parse()
        .unwrap()
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
async fn metrics_count_payments_exactly_and_are_served_only_when_asked() {
    let metrics_flag = || vec!["--metrics-listen".to_owned(), "127.0.0.1:0".to_owned()];
    let mut gateway_args = metrics_flag();
    gateway_args.extend(["--lockout-threshold".to_owned(), "2".to_owned()]);
    let options = NetworkOptions {
        bank_args: vec![("bank0".to_owned(), metrics_flag())],
        gateway_args,
        ..NetworkOptions::default()
    };
    let network =
        ManualNetwork::start_with(&["bank0", "bank1"], &["alice", "bob", "carol"], options).await;
    let gateway = metrics_address(&network.gateway_ready);
    let bank0 = metrics_address(&network.banks[0].ready);

    // Only what was asked for listens: bank1 got no flag and has its gRPC port alone.
    let gateway_pid = network.gateway.as_ref().unwrap().child.id();
    let gateway_grpc: SocketAddr = network.gateway_address.parse().unwrap();
    assert_eq!(
        listening_ports(gateway_pid),
        sorted([gateway_grpc.port(), gateway.port()])
    );
    assert_eq!(
        listening_ports(network.banks[0].process.child.id()),
        sorted([network.banks[0].address.port(), bank0.port()])
    );
    assert!(network.banks[1].ready.get("metrics_address").is_none());
    assert_eq!(
        listening_ports(network.banks[1].process.child.id()),
        vec![network.banks[1].address.port()]
    );
    for address in [gateway, bank0] {
        assert_eq!(http(address, "GET", "/").await.0, 404);
        assert_eq!(http(address, "GET", "/metrics/more").await.0, 404);
        assert_eq!(http(address, "POST", "/metrics").await.0, 405);
    }

    network.fund("alice", "bank0", "100.00").await;
    network.fund("bob", "bank1", "10.00").await;
    let gateway_before = scrape(gateway).await;
    let bank_before = scrape(bank0).await;

    // One committed payment, one refused for insufficient funds.
    let mut alice = network.gateway_client("alice");
    let committed = alice
        .pay(pay("metrics-ok", 1_000))
        .await
        .unwrap()
        .into_inner();
    let refused = alice
        .pay(pay("metrics-broke", 1_000_000))
        .await
        .unwrap_err();
    assert_eq!(refused.code(), Code::FailedPrecondition, "{refused:?}");
    // Two failed password checks for carol (threshold 2): two failures, one lockout.
    let mut carol = network.gateway_client_as("carol", "carol", "Not:her:password-at-all");
    for _ in 0..2 {
        let status = carol
            .get_balances(pb::GetBalancesRequest::default())
            .await
            .unwrap_err();
        assert_eq!(status.code(), Code::Unauthenticated, "{status:?}");
    }

    // Everything of the two payments is recorded before their answers.
    let after = scrape(gateway).await;
    let moved = |name: &str, labels: &[(&str, &str)]| {
        value(&after, name, labels) - value(&gateway_before, name, labels)
    };
    let observed = |name: &str, labels: &[(&str, &str)]| {
        observations(&after, name, labels) - observations(&gateway_before, name, labels)
    };
    let payments = "strife_payments_total";
    assert_eq!(
        moved(payments, &[("outcome", "committed"), ("reason", "none")]),
        1.0
    );
    assert_eq!(
        moved(
            payments,
            &[("outcome", "refused"), ("reason", "insufficient_funds")]
        ),
        1.0
    );
    assert_eq!(moved(payments, &[]), 2.0, "no other outcome moved");
    assert_eq!(observed("strife_payment_duration_seconds", &[]), 2.0);
    for phase in ["begin", "prepare", "decision_write", "phase_two"] {
        assert_eq!(
            observed("strife_payment_phase_duration_seconds", &[("phase", phase)]),
            2.0,
            "phase {phase}"
        );
    }
    for bank in ["bank0", "bank1"] {
        assert_eq!(
            observed("strife_bank_prepare_duration_seconds", &[("bank", bank)]),
            2.0,
            "{bank}: one vote per payment"
        );
    }
    let prepare_errors = "strife_bank_prepare_errors_total";
    assert_eq!(
        moved(prepare_errors, &[("bank", "bank0"), ("kind", "no")]),
        1.0
    );
    assert_eq!(moved(prepare_errors, &[]), 1.0, "only alice's bank said no");
    assert_eq!(value(&after, "strife_payments_in_flight", &[]), 0.0);
    assert_eq!(moved("strife_login_failures_total", &[]), 2.0);
    assert_eq!(moved("strife_lockouts_total", &[]), 1.0);
    assert!(observed("strife_group_commit_batch_size", &[("store", "gateway")]) >= 2.0);
    assert!(
        observations(
            &after,
            "strife_group_commit_duration_seconds",
            &[("store", "gateway")]
        ) > 0.0
    );
    // Phase 2 finishes within a round or two of the retrier: nothing stays in doubt.
    let settled = wait_until(Duration::from_secs(10), || async {
        value(&scrape(gateway).await, "strife_payments_in_doubt", &[]) == 0.0
    })
    .await;
    assert!(settled, "payments stayed in doubt");

    // bank0 holds alice's legs: the committed debit (prepared, committed) and the NO vote
    // (aborted). The commit may land after the answer (phase 2 is bounded), so wait for it.
    let bank_moved = |scrape: &Scrape, state: &str| {
        value(scrape, "strife_bank_legs_total", &[("state", state)])
            - value(&bank_before, "strife_bank_legs_total", &[("state", state)])
    };
    let committed_at_bank = wait_until(Duration::from_secs(10), || {
        let bank_moved = &bank_moved;
        async move { bank_moved(&scrape(bank0).await, "committed") == 1.0 }
    })
    .await;
    assert!(committed_at_bank, "bank0 never committed alice's debit");
    let bank_after = scrape(bank0).await;
    assert_eq!(bank_moved(&bank_after, "prepared"), 1.0);
    assert_eq!(bank_moved(&bank_after, "committed"), 1.0);
    assert_eq!(bank_moved(&bank_after, "aborted"), 1.0);
    assert_eq!(
        value(&bank_after, "strife_bank_holds_outstanding", &[]),
        0.0
    );
    assert_eq!(value(&bank_after, "strife_bank_legs_prepared", &[]), 0.0);
    assert_eq!(
        value(
            &bank_after,
            "strife_bank_holds_outstanding_minor",
            &[("currency", "USD")]
        ),
        0.0
    );
    assert_eq!(
        value(&bank_after, "strife_bank_resolver_queries_total", &[])
            - value(&bank_before, "strife_bank_resolver_queries_total", &[]),
        0.0,
        "nothing was in doubt at the bank"
    );
    assert!(
        observations(
            &bank_after,
            "strife_group_commit_batch_size",
            &[("store", "bank")]
        ) > observations(
            &bank_before,
            "strife_group_commit_batch_size",
            &[("store", "bank")]
        )
    );

    // An open payment watch is counted while it is open; no replica was taken over.
    assert!(after
        .samples
        .iter()
        .any(|sample| sample.metric == "strife_takeover_claimed_total"));
    assert_eq!(value(&after, "strife_takeover_claimed_total", &[]), 0.0);
    assert_eq!(value(&after, "strife_watches_open", &[]), 0.0);
    let watch = network
        .gateway_client("bob")
        .watch_payments(pb::WatchPaymentsRequest { since: "0".into() })
        .await
        .unwrap()
        .into_inner();
    let watches_are = |open: f64| async move {
        wait_until(Duration::from_secs(10), || async {
            value(&scrape(gateway).await, "strife_watches_open", &[]) == open
        })
        .await
    };
    assert!(watches_are(1.0).await, "the open watch is counted");
    drop(watch);
    assert!(watches_are(0.0).await, "and no longer once it is closed");

    // Bounded labels: no user, account or payment shows up in any label.
    let mut private: Vec<String> = ["alice", "bob", "carol", "admin"]
        .iter()
        .map(|name| (*name).to_owned())
        .collect();
    private.push(committed.payment_id.clone());
    private.push(committed.from_account.clone());
    private.push(committed.to_account.clone());
    for labels in [label_values(&after), label_values(&bank_after)] {
        for secret in &private {
            assert!(
                !labels.iter().any(|label| label.contains(secret.as_str())),
                "{secret} in a label: {labels:?}"
            );
        }
    }
}

fn sorted<const N: usize>(mut ports: [u16; N]) -> Vec<u16> {
    ports.sort_unstable();
    ports.to_vec()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_listen_comes_from_a_config_file_or_the_environment() {
    let network = Network::setup(&["bank0", "bank1"], &[]);
    let config = network.path().join("bank-metrics.toml");
    std::fs::write(&config, "metrics-listen = \"127.0.0.1:0\"\n").unwrap();
    let from_file = BankStart::new(&network, "bank0")
        .arg("--config")
        .arg(config.to_str().unwrap())
        .start();

    let mut command = Command::new(strife_bin());
    command
        .args([
            "bank",
            "--json",
            "--id",
            "bank1",
            "--etcd",
            "http://127.0.0.1:1",
        ])
        .arg("--dir")
        .arg(network.path())
        .env("STRIFE_BANK_METRICS_LISTEN", "127.0.0.1:0");
    let log = network.path().join("bank1-metrics-env.log");
    let (_from_env, line) = spawn_with_ready_line(command, &log);
    let from_env: serde_json::Value = serde_json::from_str(&line).unwrap();

    for ready in [&from_file.ready, &from_env] {
        let scraped = scrape(metrics_address(ready)).await;
        assert_eq!(
            value(&scraped, "strife_bank_legs_total", &[]),
            0.0,
            "a fresh bank: {ready}"
        );
        assert!(scraped
            .samples
            .iter()
            .any(|sample| sample.metric == "strife_bank_holds_outstanding"));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dev_with_metrics_prints_a_metrics_url_for_the_gateway_and_each_bank() {
    let dev = DevNetwork::start_with(&["--metrics"]);
    let urls = &dev.ready["metrics"];
    for (process, metric) in [
        ("gateway", "strife_payments_total"),
        ("bank0", "strife_bank_legs_total"),
        ("bank1", "strife_bank_legs_total"),
    ] {
        let url = urls[process]
            .as_str()
            .unwrap_or_else(|| panic!("no metrics URL for {process}: {}", dev.ready));
        let address: SocketAddr = url
            .strip_prefix("http://")
            .and_then(|rest| rest.strip_suffix("/metrics"))
            .unwrap_or_else(|| panic!("{url}"))
            .parse()
            .unwrap();
        assert!(address.ip().is_loopback(), "{url}");
        let scraped = scrape(address).await;
        assert!(
            scraped.samples.iter().any(|sample| sample.metric == metric),
            "{process}: no {metric} at {url}"
        );
    }
}
