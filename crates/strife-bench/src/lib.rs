//! `strife bench`: load against a running network (`strife dev`). It creates fresh payers
//! with funded accounts spread over the banks, drives payments with idempotency keys from
//! `concurrency` tasks (optionally at a fixed offered rate), and reports payments/s, latency
//! percentiles (HDR histogram) and failures by reason. It ends with `strife audit`, so a run
//! that is fast but wrong cannot pass. `--raw-rpc` measures bare mutual-TLS unary calls to a
//! bank instead, the ceiling a payment (≥ 5 RPCs) is compared with.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use hdrhistogram::Histogram;
use serde::Serialize;
use strife_common::etcd::access::EtcdAccess;
use strife_common::failure::reason_of;
use strife_common::layout::Layout;
use strife_common::metadata::Credentials;
use strife_common::net::tls::{ExpectedPeer, TlsMaterial};
use strife_proto::v1::{self as pb, bank_client::BankClient, gateway_client::GatewayClient};
use tonic::service::interceptor::InterceptedService;
use tonic::transport::Channel;

pub mod http;

use strife_common::limits::BENCH_CALL_TIMEOUT as CALL_TIMEOUT;
/// Each payer starts with this much (minor units), far more than a run can spend.
const PAYER_DEPOSIT_MINOR: i64 = 10_000_000_000;

/// What to run.
#[derive(Debug, Clone)]
pub struct BenchConfig {
    pub dir: std::path::PathBuf,
    pub gateway: String,
    pub etcd: String,
    /// The gateway's store, for the audit at the end.
    pub store: strife_audit::StoreLocation,
    pub payers: usize,
    pub concurrency: usize,
    pub duration: Duration,
    /// Offered load in payments/s; `None` sends as fast as the concurrency allows.
    pub rate: Option<u32>,
    /// Number of HTTP/2 connections the tasks share.
    pub connections: usize,
    pub raw_rpc: bool,
    /// Pay through the HTTP API at this base URL (`https://…/v1/`) with an API key per payer,
    /// one HTTP/1.1 keep-alive connection per task, instead of gRPC.
    pub http: Option<String>,
    /// With `http`: HTTP/2, the tasks sharing `connections` connections.
    pub http2: bool,
    pub progress: bool,
}

/// Latency percentiles in microseconds.
#[derive(Debug, Clone, Serialize, Default)]
pub struct Latency {
    pub p50_us: u64,
    pub p90_us: u64,
    pub p99_us: u64,
    pub p999_us: u64,
    pub max_us: u64,
    pub mean_us: u64,
    /// Payments that took longer than a second (the soak's target: none).
    pub over_1s: u64,
}

/// What a run measured.
#[derive(Debug, Clone, Serialize, Default)]
pub struct BenchReport {
    pub mode: String,
    pub concurrency: usize,
    pub payers: usize,
    pub offered_rate_per_s: Option<u32>,
    pub elapsed_s: f64,
    pub succeeded: u64,
    pub failed_by_reason: BTreeMap<String, u64>,
    pub per_second: f64,
    pub latency: Latency,
    pub audit_clean: Option<bool>,
    pub audit_violations: Vec<String>,
}

impl BenchReport {
    pub fn human(&self) -> String {
        let mut lines = vec![
            format!(
                "{}: {} ok in {:.1}s = {:.0}/s (concurrency {}, payers {}{})",
                self.mode,
                self.succeeded,
                self.elapsed_s,
                self.per_second,
                self.concurrency,
                self.payers,
                self.offered_rate_per_s
                    .map(|rate| format!(", offered {rate}/s"))
                    .unwrap_or_default()
            ),
            format!(
                "latency: p50 {:.2} ms  p90 {:.2} ms  p99 {:.2} ms  p99.9 {:.2} ms  max {:.2} ms  mean {:.2} ms  over 1 s: {}",
                ms(self.latency.p50_us),
                ms(self.latency.p90_us),
                ms(self.latency.p99_us),
                ms(self.latency.p999_us),
                ms(self.latency.max_us),
                ms(self.latency.mean_us),
                self.latency.over_1s
            ),
        ];
        if !self.failed_by_reason.is_empty() {
            lines.push(format!("failures: {:?}", self.failed_by_reason));
        }
        match self.audit_clean {
            Some(true) => lines.push("audit: clean".into()),
            Some(false) => {
                let shown: Vec<&String> = self.audit_violations.iter().take(5).collect();
                lines.push(format!(
                    "audit: {} VIOLATIONS, first: {shown:?}",
                    self.audit_violations.len()
                ));
            }
            None => {}
        }
        lines.join("\n")
    }
}

fn ms(micros: u64) -> f64 {
    micros as f64 / 1000.0
}

type Gateway = GatewayClient<InterceptedService<Channel, Credentials>>;

fn gateway_as(channel: Channel, user: &str, password: &str) -> anyhow::Result<Gateway> {
    Ok(GatewayClient::with_interceptor(
        channel,
        Credentials::new(user, password)?,
    ))
}

/// Runs a benchmark.
pub async fn run(config: &BenchConfig) -> anyhow::Result<BenchReport> {
    anyhow::ensure!(
        config.concurrency >= 1 && config.connections >= 1,
        "concurrency and connections must be at least 1"
    );
    if config.raw_rpc {
        return raw_rpc(config).await;
    }
    anyhow::ensure!(config.payers >= 2, "--payers must be at least 2");
    let layout = Layout::new(&config.dir);
    let manifest = strife_common::setup_manifest::SetupManifest::load(&layout)?;
    anyhow::ensure!(
        !manifest.banks.is_empty(),
        "no banks in {}; run `strife dev` first",
        config.dir.display()
    );
    let run_tag: u32 = rand::random_range(0x1000..0xffff);
    let payers: Vec<String> = (0..config.payers)
        .map(|index| format!("bench{run_tag:x}-{index}"))
        .collect();
    strife_pki::setup(&strife_pki::SetupOptions {
        dir: config.dir.clone(),
        banks: manifest.banks.clone(),
        users: payers.clone(),
        force: false,
        hosts: Default::default(),
    })?;

    let admin_tls = TlsMaterial::load(
        &layout.ca().cert,
        &layout.user_identity(strife_pki::ADMIN_USER),
    )?;
    // Several replicas (`a,b,c`): the payers are spread over them, the admin uses the first.
    let replicas = strife_common::net::failover::parse_addresses(&config.gateway);
    anyhow::ensure!(!replicas.is_empty(), "no gateway address given");
    let admin_channel = admin_tls
        .endpoint(&replicas[0], &ExpectedPeer::Gateway, CALL_TIMEOUT)?
        .connect_lazy();
    let mut admin = gateway_as(
        admin_channel,
        strife_pki::ADMIN_USER,
        &strife_pki::read_admin_password(&layout)?,
    )?;
    let password = format!("bench-{run_tag:x}-password");
    for (index, payer) in payers.iter().enumerate() {
        admin
            .register_user(pb::RegisterUserRequest {
                username: payer.clone(),
                password: password.clone(),
            })
            .await
            .with_context(|| format!("registering {payer}"))?;
        admin
            .open_account(pb::GatewayOpenAccountRequest {
                username: payer.clone(),
                bank_id: manifest.banks[index % manifest.banks.len()].clone(),
                currency: "USD".into(),
                opening_deposit: Some(pb::Money {
                    amount_minor: PAYER_DEPOSIT_MINOR,
                    currency: "USD".into(),
                }),
                holder_name: String::new(),
                idempotency_key: String::new(),
            })
            .await
            .with_context(|| format!("opening {payer}'s account"))?;
    }

    // One connection per payer identity would be unrealistic and slow to set up; payers share
    // `connections` channels per identity lazily created below.
    let mut clients = Vec::new();
    for (index, payer) in payers.iter().enumerate() {
        let tls = TlsMaterial::load(&layout.ca().cert, &layout.user_identity(payer))?;
        let channel = tls
            .endpoint(
                &replicas[index % replicas.len()],
                &ExpectedPeer::Gateway,
                CALL_TIMEOUT,
            )?
            .connect_lazy();
        clients.push(gateway_as(channel, payer, &password)?);
    }
    // Warm up: one authenticated call per payer (TLS handshake + one argon2id verify each).
    for client in &mut clients {
        client
            .get_balances(pb::GetBalancesRequest::default())
            .await?;
    }
    // Over HTTP: an API key per payer (made by the admin), good for the run's hour.
    let http = match &config.http {
        Some(url) => {
            let version = if config.http2 {
                http::Version::Http2
            } else {
                http::Version::Http1
            };
            let base = http::ApiBase::new(url, &layout.ca().cert, version)?;
            let mut keys = Vec::new();
            for payer in &payers {
                let created = admin
                    .create_api_key(pb::CreateApiKeyRequest {
                        owner: payer.clone(),
                        scopes: vec!["payments:write".into()],
                        description: "strife bench".into(),
                        expires_in_seconds: 3_600,
                    })
                    .await
                    .with_context(|| format!("creating {payer}'s API key"))?;
                keys.push(created.into_inner().secret);
            }
            // HTTP/2: the tasks share a few connections, a stream per request.
            let mut shared = Vec::new();
            if config.http2 {
                for _ in 0..config.connections.max(1) {
                    if let http::Sender::Http2(sender) = base.connect().await? {
                        shared.push(sender);
                    }
                }
            }
            Some((base, keys, shared))
        }
        None => None,
    };

    let schedule = Arc::new(AtomicU64::new(0));
    let started = Instant::now();
    let deadline = started + config.duration;
    let progress = progress_bar(config);
    let mut tasks = Vec::new();
    for task in 0..config.concurrency {
        let mut client = match &http {
            Some((base, keys, shared)) => Payer::Http(http::HttpPayer::new(
                base.clone(),
                keys[task % payers.len()].clone(),
                (!shared.is_empty()).then(|| shared[task % shared.len()].clone()),
            )),
            None => Payer::Grpc(clients[task % payers.len()].clone()),
        };
        let payee = payers[(task + 1) % payers.len()].clone();
        let schedule = Arc::clone(&schedule);
        let rate = config.rate;
        let progress = progress.clone();
        let mut histogram = Histogram::<u64>::new(3)?;
        tasks.push(tokio::spawn(async move {
            let mut failures: BTreeMap<String, u64> = BTreeMap::new();
            let mut sequence: u64 = 0;
            loop {
                if let Some(rate) = rate {
                    let slot = schedule.fetch_add(1, Ordering::Relaxed);
                    let at = started
                        + Duration::from_nanos(
                            slot.saturating_mul(1_000_000_000 / u64::from(rate.max(1))),
                        );
                    if at >= deadline {
                        break;
                    }
                    tokio::time::sleep_until(at.into()).await;
                } else if Instant::now() >= deadline {
                    break;
                }
                sequence += 1;
                // Strife's one key (time-ordered); the fixed prefix keeps that order.
                let idempotency_key = format!("bench-{}", strife_common::keys::new_key());
                let amount_minor = 1 + (sequence % 100) as i64;
                let sent = Instant::now();
                let outcome = client.pay(&payee, amount_minor, idempotency_key).await;
                let micros = sent.elapsed().as_micros() as u64;
                match outcome {
                    Ok(()) => {
                        let _ = histogram.record(micros.max(1));
                    }
                    Err(reason) => {
                        *failures.entry(reason).or_insert(0) += 1;
                    }
                }
                progress.inc(1);
            }
            (histogram, failures)
        }));
    }
    let mode = if config.http.is_some() && config.http2 {
        "payments-http2"
    } else if config.http.is_some() {
        "payments-http"
    } else {
        "payments"
    };
    let mut report = collect(tasks, started, mode).await?;
    progress.finish_and_clear();
    report.concurrency = config.concurrency;
    report.payers = config.payers;
    report.offered_rate_per_s = config.rate;

    let audit = strife_audit::audit(&strife_audit::AuditConfig {
        dir: config.dir.clone(),
        store: config.store.clone(),
        etcd_endpoints: vec![config.etcd.clone()],
        // The bench audits after its load has drained: a quiet network.
        live: false,
    })
    .await;
    match audit {
        Ok(audit) => {
            report.audit_clean = Some(audit.is_clean());
            report.audit_violations = audit
                .violations
                .iter()
                .map(|violation| format!("{}: {}", violation.kind, violation.detail))
                .collect();
        }
        Err(error) => {
            report.audit_clean = Some(false);
            report.audit_violations = vec![format!("audit failed: {error:#}")];
        }
    }
    Ok(report)
}

/// How one task pays: gRPC with its payer's certificate and password, or HTTP with its key.
enum Payer {
    Grpc(Gateway),
    Http(http::HttpPayer),
}

impl Payer {
    /// Pays `payee`; `Err` names why not (a reason code, or the status).
    async fn pay(
        &mut self,
        payee: &str,
        amount_minor: i64,
        idempotency_key: String,
    ) -> Result<(), String> {
        match self {
            Payer::Grpc(client) => {
                let request = pb::PayRequest {
                    idempotency_key,
                    to_username: payee.to_owned(),
                    amount: Some(pb::Money {
                        amount_minor,
                        currency: "USD".into(),
                    }),
                    ..pb::PayRequest::default()
                };
                client.pay(request).await.map(drop).map_err(|status| {
                    reason_of(&status).unwrap_or_else(|| format!("{:?}", status.code()))
                })
            }
            Payer::Http(payer) => payer.pay(payee, amount_minor, &idempotency_key).await,
        }
    }
}

fn progress_bar(config: &BenchConfig) -> indicatif::ProgressBar {
    if !config.progress {
        return indicatif::ProgressBar::hidden();
    }
    let bar = indicatif::ProgressBar::new_spinner();
    bar.set_style(
        indicatif::ProgressStyle::with_template(
            "{spinner} {elapsed_precise} {pos} sent ({per_sec})",
        )
        .unwrap_or_else(|_| indicatif::ProgressStyle::default_spinner()),
    );
    bar.enable_steady_tick(Duration::from_millis(200));
    bar
}

type TaskResult = (Histogram<u64>, BTreeMap<String, u64>);

async fn collect(
    tasks: Vec<tokio::task::JoinHandle<TaskResult>>,
    started: Instant,
    mode: &str,
) -> anyhow::Result<BenchReport> {
    let mut histogram = Histogram::<u64>::new(3)?;
    let mut failed_by_reason: BTreeMap<String, u64> = BTreeMap::new();
    for task in tasks {
        let (part, failures) = task.await?;
        histogram.add(&part)?;
        for (reason, count) in failures {
            *failed_by_reason.entry(reason).or_insert(0) += count;
        }
    }
    let elapsed = started.elapsed().as_secs_f64();
    let succeeded = histogram.len();
    Ok(BenchReport {
        mode: mode.into(),
        elapsed_s: elapsed,
        succeeded,
        failed_by_reason,
        per_second: succeeded as f64 / elapsed.max(1e-9),
        latency: Latency {
            p50_us: histogram.value_at_quantile(0.50),
            p90_us: histogram.value_at_quantile(0.90),
            p99_us: histogram.value_at_quantile(0.99),
            p999_us: histogram.value_at_quantile(0.999),
            max_us: histogram.max(),
            mean_us: histogram.mean() as u64,
            over_1s: histogram.count_between(1_000_001, u64::MAX),
        },
        ..BenchReport::default()
    })
}

/// Bare mutual-TLS unary calls (`Bank/GetLeg` of an unknown leg: one indexed read) from the
/// gateway's identity to the first bank in etcd.
async fn raw_rpc(config: &BenchConfig) -> anyhow::Result<BenchReport> {
    let layout = Layout::new(&config.dir);
    let tls = TlsMaterial::load(&layout.ca().cert, &layout.gateway_identity())?;
    // etcd as the gateway reads it (bench runs with the gateway's identities).
    let etcd = EtcdAccess::new(
        vec![config.etcd.clone()],
        &layout,
        strife_common::etcd::access::GATEWAY_USER,
    )?;
    let entry = strife_common::etcd::discovery::live_banks(&etcd)
        .await?
        .into_iter()
        .next()
        .context("no bank registered in etcd")?;
    let channels: Vec<Channel> = (0..config.connections)
        .map(|_| {
            tls.endpoint(
                &entry.address,
                &ExpectedPeer::Bank(entry.id.clone()),
                CALL_TIMEOUT,
            )
            .map(|endpoint| endpoint.connect_lazy())
        })
        .collect::<Result<_, _>>()?;
    let started = Instant::now();
    let deadline = started + config.duration;
    let progress = progress_bar(config);
    let mut tasks = Vec::new();
    for task in 0..config.concurrency {
        let mut client = BankClient::new(channels[task % channels.len()].clone());
        let progress = progress.clone();
        let mut histogram = Histogram::<u64>::new(3)?;
        tasks.push(tokio::spawn(async move {
            let mut failures = BTreeMap::new();
            while Instant::now() < deadline {
                let sent = Instant::now();
                let outcome = client
                    .get_leg(pb::LegRequest {
                        payment_id: "raw-rpc-probe".into(),
                        role: pb::LegRole::Debit as i32,
                        ..pb::LegRequest::default()
                    })
                    .await;
                match outcome {
                    Err(status) if status.code() == tonic::Code::NotFound => {
                        let _ = histogram.record((sent.elapsed().as_micros() as u64).max(1));
                    }
                    Ok(_) => {
                        let _ = histogram.record((sent.elapsed().as_micros() as u64).max(1));
                    }
                    Err(status) => {
                        *failures.entry(format!("{:?}", status.code())).or_insert(0) += 1
                    }
                }
                progress.inc(1);
            }
            (histogram, failures)
        }));
    }
    let mut report = collect(tasks, started, "raw mTLS unary RPC").await?;
    progress.finish_and_clear();
    report.concurrency = config.concurrency;
    Ok(report)
}
