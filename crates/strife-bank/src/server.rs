//! Wires a bank process together: TLS material and database from the data dir, the gRPC
//! server (mutual TLS, gateway-only interceptor, bounded message sizes and deadlines), the
//! etcd registration and the in-doubt resolver, and a clean shutdown on SIGTERM/SIGINT.

use std::io::Write;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use strife_common::etcd::access::EtcdAccess;
use strife_common::etcd::registration::{keep_registered, Registration};
use strife_common::layout::{validate_name, Layout};
use strife_common::limits::{DEREGISTER_TIMEOUT, MAX_ENCODED_MESSAGE_BYTES, MAX_MESSAGE_BYTES};
use strife_common::net::grpc_limits::GrpcLimitsLayer;
use strife_common::net::listener::ListenerLimits;
use strife_common::net::metrics_endpoint::MetricsEndpoint;
use strife_common::net::serve::{store_and_registration, GrpcServer};
use strife_common::net::stream_limits::StreamLimitsLayer;
use strife_common::net::tls::TlsMaterial;
use strife_common::storage::state_dir::DirLock;
use strife_common::storage::store_identity::StoreIdentity;
use strife_proto::v1::bank_server::BankServer;
use strife_proto::FILE_DESCRIPTOR_SET;
use tokio::sync::watch;
use tonic::codec::CompressionEncoding;
use tonic::service::interceptor::InterceptedService;

use crate::gateway_only::admit_gateway;
use crate::metrics::BankMetrics;
use crate::resolver::{resolve_in_doubt, CoordinatorLocation, DecisionClient};
use crate::service::BankService;
use crate::store::{LegObserver, Store};

/// Everything `strife bank` is told on its command line.
#[derive(Debug, Clone)]
pub struct BankConfig {
    pub dir: PathBuf,
    pub bank_id: String,
    pub listen: SocketAddr,
    /// Address to announce in etcd instead of the bound one (e.g. a proxy in front).
    pub advertise: Option<String>,
    pub etcd_endpoints: Vec<String>,
    pub lease_ttl_secs: i64,
    /// Fixed coordinator (gateway replica) addresses for decision queries; empty looks the
    /// replicas up in etcd.
    pub coordinator: Vec<String>,
    pub resolve_interval: Duration,
    /// Connection bounds (cap, silent connections, idle timeout).
    pub listener_limits: ListenerLimits,
    /// Print the ready line as JSON instead of text.
    pub json: bool,
    /// Allow starting with a new, empty database although one existed before.
    pub initialize: bool,
    /// Where to serve Prometheus metrics (plain HTTP, `GET /metrics`); `None`: not at all.
    pub metrics_listen: Option<SocketAddr>,
}

/// Runs a bank until SIGTERM or SIGINT.
pub async fn run(config: BankConfig) -> anyhow::Result<()> {
    validate_name("bank", &config.bank_id).map_err(anyhow::Error::msg)?;
    let layout = Layout::new(&config.dir);
    // Before anything else: a second bank on this state dir must not touch the database,
    // resolve legs or register in etcd while the first one runs.
    let _lock = DirLock::acquire(
        &layout.bank_lock(&config.bank_id),
        &format!("bank {}", config.bank_id),
    )?;
    let identity_paths = layout.bank_identity(&config.bank_id);
    let tls = TlsMaterial::load(&layout.ca().cert, &identity_paths)?;
    strife_common::net::revocation::install(&layout.ca_crl())?;
    let etcd = EtcdAccess::new(
        config.etcd_endpoints.clone(),
        &layout,
        &strife_common::etcd::access::bank_user(&config.bank_id),
    )?;
    // Parses certificate and key now: a bad one must stop the bank before it prints its
    // ready line or registers in etcd, where it would attract traffic it cannot serve.
    // Outermost first: gRPC's status table, then the caps on open streams (health `Watch`
    // and reflection are open to any certificate of the project).
    let mut server = tls
        .server_builder(&identity_paths)?
        .layer(GrpcLimitsLayer)
        .layer(StreamLimitsLayer::new());
    let identity = StoreIdentity::bank(
        &layout,
        &config.bank_id,
        tls.ca_fingerprint()?,
        crate::store::SCHEMA_VERSION,
        config.initialize,
    );
    // The store reports its leg transitions to the metrics; the resolver counts its queries.
    let metrics = Arc::new(BankMetrics::new());
    let store = Arc::new(Store::open(
        &layout.bank_db(&config.bank_id),
        &config.bank_id,
        &identity,
        Arc::clone(&metrics) as Arc<dyn LegObserver>,
    )?);

    let listener = tokio::net::TcpListener::bind(config.listen)
        .await
        .with_context(|| format!("cannot listen on {}", config.listen))?;
    let address = listener.local_addr()?;
    let metrics_endpoint = match config.metrics_listen {
        Some(metrics_address) => Some(MetricsEndpoint::bind(metrics_address).await?),
        None => None,
    };
    announce(
        &config,
        address,
        metrics_endpoint.as_ref().map(MetricsEndpoint::address),
    )?;

    let (shutdown_sender, shutdown) = watch::channel(false);
    if let Some(endpoint) = metrics_endpoint {
        let mut metrics_registry = prometheus_client::registry::Registry::default();
        metrics.register(&mut metrics_registry, Arc::clone(&store));
        strife_common::metrics::group_commit().register(&mut metrics_registry);
        endpoint.serve(metrics_registry, config.listener_limits, shutdown.clone());
    }
    let registration = Registration::bank(
        etcd.clone(),
        &config.bank_id,
        &config
            .advertise
            .clone()
            .unwrap_or_else(|| address.to_string()),
        config.lease_ttl_secs,
    );
    let (registered_sender, registered) = watch::channel(false);
    let registration_task = tokio::spawn(keep_registered(
        registration,
        shutdown.clone(),
        registered_sender,
    ));
    let location = if config.coordinator.is_empty() {
        CoordinatorLocation::Etcd(etcd)
    } else {
        CoordinatorLocation::Fixed(config.coordinator.clone())
    };
    let decisions = DecisionClient::new(&config.bank_id, location, tls.clone());
    tokio::spawn(resolve_in_doubt(
        Arc::clone(&store),
        decisions,
        metrics,
        config.resolve_interval,
        shutdown.clone(),
    ));

    let probed = Arc::clone(&store);
    // SERVING only while the database takes writes and our etcd key is alive.
    let probe = move || {
        let store = Arc::clone(&probed);
        let registered = *registered.borrow();
        store_and_registration(async move { store.probe().await }, registered)
    };
    let build = |_draining| -> anyhow::Result<_> {
        let bank = BankServer::new(BankService::new(store))
            .max_decoding_message_size(MAX_MESSAGE_BYTES)
            .max_encoding_message_size(MAX_ENCODED_MESSAGE_BYTES)
            .accept_compressed(CompressionEncoding::Gzip);
        // Health and reflection sit beside the bank service, outside its gateway-only
        // interceptor: any certificate from our CA may probe them (see `operations.rs`).
        Ok(server.add_service(InterceptedService::new(bank, admit_gateway)))
    };
    GrpcServer {
        service_name: "strife.v1.Bank",
        listener,
        limits: config.listener_limits,
        file_descriptor_set: FILE_DESCRIPTOR_SET,
    }
    // The ready line went out before registration; nothing more to say.
    .serve(probe, build, || Ok(()))
    .await?;

    tracing::info!(bank_id = %config.bank_id, "shutting down");
    let _ = shutdown_sender.send(true);
    let _ = tokio::time::timeout(DEREGISTER_TIMEOUT, registration_task).await;
    Ok(())
}

/// Prints the one ready line on stdout: what tests and `strife dev` wait for (with the metrics
/// address when metrics are served).
fn announce(
    config: &BankConfig,
    address: SocketAddr,
    metrics_address: Option<SocketAddr>,
) -> anyhow::Result<()> {
    let line = if config.json {
        let mut ready = serde_json::json!({"event": "listening", "bank_id": config.bank_id, "address": address.to_string()});
        if let Some(metrics) = metrics_address {
            ready["metrics_address"] = metrics.to_string().into();
        }
        ready.to_string()
    } else {
        match metrics_address {
            None => format!("bank {} listening on {address}", config.bank_id),
            Some(metrics) => format!(
                "bank {} listening on {address}; metrics at http://{metrics}/metrics",
                config.bank_id
            ),
        }
    };
    let mut stdout = std::io::stdout().lock();
    writeln!(stdout, "{line}")?;
    stdout.flush()?;
    Ok(())
}
