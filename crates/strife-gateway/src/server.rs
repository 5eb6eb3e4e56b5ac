//! Wires the gateway process: TLS, database (with the admin user from `strife setup`),
//! recovery of unfinished payments, the bank registry's etcd watch, its own etcd
//! registration, the phase-2 retrier, and the gRPC server with the logging and auth layers.

use std::io::Write;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use strife_common::admin::{read_admin_password, ADMIN_USER};
use strife_common::etcd::access::EtcdAccess;
use strife_common::etcd::registration::{keep_registered, refuse_if_taken, Registration};
use strife_common::layout::Layout;
use strife_common::limits::{
    DEREGISTER_TIMEOUT, FINISH_IN_FLIGHT_LIMIT, MAX_MESSAGE_BYTES, PAY_STORAGE_ALLOWANCE,
};
use strife_common::net::grpc_limits::GrpcLimitsLayer;
use strife_common::net::listener::ListenerLimits;
use strife_common::net::metrics_endpoint::MetricsEndpoint;
use strife_common::net::serve::{store_and_registration, GrpcServer};
use strife_common::net::stream_limits::StreamLimitsLayer;
use strife_common::net::tls::TlsMaterial;
use strife_common::storage::state_dir::DirLock;
use strife_proto::v1::coordinator_server::CoordinatorServer;
use strife_proto::v1::gateway_server::GatewayServer;
use strife_proto::FILE_DESCRIPTOR_SET;
use tokio::sync::watch;
use tonic::codec::CompressionEncoding;

use crate::auth::{hash_password, Authenticator};
use crate::coordinator::{Coordinator, CrashPoint};
use crate::grpc::auth_layer::AuthLayer;
use crate::grpc::decision::DecisionApi;
use crate::grpc::gateway::GatewayGrpc;
use crate::grpc::request_log::RequestLogLayer;
use crate::metrics::GatewayMetrics;
use crate::registry::BankRegistry;
use crate::roles::Role;
use crate::service::api_keys::API_KEY_SECRET;
use crate::service::cursor::{CursorSeal, CURSOR_SECRET};
use crate::service::key_hash::ApiKeyHasher;
use crate::service::Service;
use crate::takeover::Liveness;
use crate::transport::{Announcement, ServiceHandles, SideTransport, SideTransportPlan};
use strife_ledger::lockout::LockoutPolicy;
use strife_ledger::store::{GatewayStore, StoreLocation};

/// Everything `strife gateway` is told on its command line.
#[derive(Debug, Clone)]
pub struct GatewayConfig {
    pub dir: PathBuf,
    pub listen: SocketAddr,
    pub etcd_endpoints: Vec<String>,
    pub prepare_timeout: Duration,
    pub lease_ttl_secs: i64,
    pub lockout: LockoutPolicy,
    /// Connection bounds (cap, silent connections, idle timeout).
    pub listener_limits: ListenerLimits,
    pub json: bool,
    /// Allow starting with a new, empty database although one existed before (SQLite), or
    /// creating the schema in an empty PostgreSQL database.
    pub initialize: bool,
    /// This replica's name in etcd (`--replica-id`); `None` derives one ([`replica_id`]).
    pub replica_id: Option<String>,
    /// Where to serve Prometheus metrics (plain HTTP, `GET /metrics`); `None`: not at all.
    pub metrics_listen: Option<SocketAddr>,
    /// Where users, links and the payment log live (`--store`).
    pub store: StoreLocation,
}

/// The replica's id: the one given, or `<host>-<listen port>` (stable across restarts on a
/// fixed port), or `<host>-<random>` when the port is chosen by the system.
pub fn replica_id(given: Option<&str>, listen: SocketAddr) -> anyhow::Result<String> {
    let id = match given {
        Some(id) => id.to_owned(),
        None => {
            let host: String = std::fs::read_to_string("/proc/sys/kernel/hostname")
                .unwrap_or_default()
                .trim()
                .chars()
                .map(|c| {
                    if c.is_ascii_alphanumeric() {
                        c.to_ascii_lowercase()
                    } else {
                        '-'
                    }
                })
                .take(32)
                .collect();
            let host = host.trim_matches('-');
            let host = if host.is_empty() { "gateway" } else { host };
            match listen.port() {
                0 => format!("{host}-{:06x}", rand::random::<u32>() & 0xff_ffff),
                port => format!("{host}-{port}"),
            }
        }
    };
    strife_common::layout::validate_name("replica", &id).map_err(anyhow::Error::msg)?;
    Ok(id)
}

/// Runs the gateway until SIGTERM or SIGINT, serving the bound `side` transports (the web
/// console) over the same service as gRPC.
pub async fn run(
    config: GatewayConfig,
    side: Vec<Box<dyn SideTransportPlan>>,
) -> anyhow::Result<()> {
    let layout = Layout::new(&config.dir);
    let replica = replica_id(config.replica_id.as_deref(), config.listen)?;
    // Before anything else: a second gateway on this state dir must not run recovery (which
    // would abort the first one's live payments) or take over its etcd key. Only for a store
    // that is a file in the state dir: a database server is shared by design (replicas), and
    // what keeps its decisions consistent is the database (single-assignment decisions),
    // not a lock on one machine's disk.
    let _lock = if config.store.is_shared() {
        None
    } else {
        Some(DirLock::acquire(&layout.gateway_lock(), "the gateway")?)
    };
    let identity_paths = layout.gateway_identity();
    let tls = TlsMaterial::load(&layout.ca().cert, &identity_paths)?;
    strife_common::net::revocation::install(&layout.ca_crl())?;
    let etcd = EtcdAccess::new(
        config.etcd_endpoints.clone(),
        &layout,
        strife_common::etcd::access::GATEWAY_USER,
    )?;
    // Parses certificate and key now: a bad one must stop the gateway before recovery, its
    // ready line or its etcd registration.
    let server = tls.server_builder(&identity_paths)?;
    // The port is taken before recovery (connections wait in the backlog until we serve), so
    // the address we register is known and no other live replica can be using our name.
    let listener = tokio::net::TcpListener::bind(config.listen)
        .await
        .with_context(|| format!("cannot listen on {}", config.listen))?;
    let address = listener.local_addr()?;
    let registration = Registration::gateway(
        etcd.clone(),
        &replica,
        &address.to_string(),
        config.lease_ttl_secs,
    );
    refuse_if_taken(&registration, "gateway replica").await?;
    let identity =
        strife_ledger::store::identity(&layout, tls.ca_fingerprint()?, config.initialize);
    let store = strife_ledger::store::open(&config.store, &identity).await?;
    ensure_admin(store.as_ref(), &layout).await?;

    let registry = Arc::new(BankRegistry::new(tls.clone()));
    let metrics = Arc::new(GatewayMetrics::new());
    let coordinator = Arc::new(
        Coordinator::new(
            Arc::clone(&store),
            Arc::clone(&registry),
            config.prepare_timeout,
            CrashPoint::from_env(),
            replica.clone(),
            if config.store.is_shared() {
                // Replicas share the store: alive means registered in etcd.
                Liveness::Etcd(etcd.clone())
            } else {
                // SQLite lives under this data dir's LOCK: no other replica can share it.
                Liveness::Exclusive
            },
        )
        .with_metrics(Arc::clone(&metrics)),
    );
    let aborted = coordinator.recover().await?;
    if aborted > 0 {
        tracing::warn!(
            aborted,
            "recovery aborted payments left undecided by the last run"
        );
    }

    let metrics_endpoint = match config.metrics_listen {
        Some(metrics_address) => Some(MetricsEndpoint::bind(metrics_address).await?),
        None => None,
    };
    let metrics_address = metrics_endpoint.as_ref().map(MetricsEndpoint::address);
    // Bound (and their certificates loaded) before the ready line, so a bad one stops startup.
    let mut bound: Vec<Box<dyn SideTransport>> = Vec::with_capacity(side.len());
    for plan in side {
        bound.push(plan.bind(&layout).await?);
    }
    let side_announcements: Vec<Announcement> = bound
        .iter()
        .map(|transport| transport.announcement())
        .collect();

    let (shutdown_sender, shutdown) = watch::channel(false);
    if let Some(endpoint) = metrics_endpoint {
        let mut metrics_registry = prometheus_client::registry::Registry::default();
        metrics.register(&mut metrics_registry);
        strife_common::metrics::group_commit().register(&mut metrics_registry);
        endpoint.serve(metrics_registry, config.listener_limits, shutdown.clone());
    }
    let follower = Arc::clone(&registry);
    let watch_etcd = etcd.clone();
    let watch_shutdown = shutdown.clone();
    tokio::spawn(async move { follower.follow(watch_etcd, watch_shutdown).await });
    let retrier = Arc::clone(&coordinator);
    let retry_shutdown = shutdown.clone();
    tokio::spawn(async move { retrier.retry_unfinished(retry_shutdown).await });
    let (registered_sender, registered) = watch::channel(false);
    let registration_task = tokio::spawn(keep_registered(
        registration,
        shutdown.clone(),
        registered_sender,
    ));

    let authenticator = Arc::new(
        Authenticator::new(Arc::clone(&store), config.lockout)?.with_metrics(Arc::clone(&metrics)),
    );
    let cursor_secret = store.secret(CURSOR_SECRET).await?;
    let api_key_secret = store.secret(API_KEY_SECRET).await?;
    let drain_coordinator = Arc::clone(&coordinator);
    let probed = Arc::clone(&store);
    // SERVING only while the store takes writes and our etcd key is alive.
    let probe = move || {
        let store = Arc::clone(&probed);
        let registered = *registered.borrow();
        store_and_registration(async move { store.probe().await }, registered)
    };
    let build = |draining: watch::Receiver<bool>| -> anyhow::Result<_> {
        let service = Arc::new(
            Service::new(
                Arc::clone(&store),
                Arc::clone(&registry),
                Arc::clone(&coordinator),
                Arc::new(CursorSeal::new(&cursor_secret)),
                Arc::new(ApiKeyHasher::new(&api_key_secret)),
            )
            // Open payment watches (gRPC and the console's live pages) end when the drain
            // begins instead of holding it.
            .ending_watches_on(draining),
        );
        for transport in bound {
            // The console (and any other side transport) calls the very service gRPC reaches.
            transport.serve(
                ServiceHandles {
                    service: Arc::clone(&service),
                    authenticator: Arc::clone(&authenticator),
                    listener_limits: config.listener_limits,
                },
                shutdown.clone(),
            );
        }
        // Every service accepts gzip (what foreign clients send when told to compress); the
        // decompressed message is bounded by the same limit (`grpc_limits.rs`).
        let gateway = GatewayServer::new(GatewayGrpc::new(service))
            .max_decoding_message_size(MAX_MESSAGE_BYTES)
            .accept_compressed(CompressionEncoding::Gzip);
        let decisions = CoordinatorServer::new(DecisionApi::new(Arc::clone(&coordinator)))
            .max_decoding_message_size(MAX_MESSAGE_BYTES)
            .accept_compressed(CompressionEncoding::Gzip);
        // Open streams are capped before authentication, so a stream over its certificate's
        // share costs no password check (`stream_limits.rs`).
        let layers = tower::ServiceBuilder::new()
            .layer(RequestLogLayer)
            .layer(GrpcLimitsLayer)
            .layer(StreamLimitsLayer::new())
            .layer(AuthLayer::new(Arc::clone(&authenticator)));
        Ok(server
            .layer(layers)
            .add_service(gateway)
            .add_service(decisions))
    };
    // Recovery is done and the registry is following etcd: ready once served.
    GrpcServer {
        service_name: "strife.v1.Gateway",
        listener,
        limits: config.listener_limits,
        file_descriptor_set: FILE_DESCRIPTOR_SET,
    }
    .serve(probe, build, || {
        announce(
            config.json,
            address,
            &replica,
            metrics_address,
            &side_announcements,
        )
    })
    .await?;

    // No request is taken any more; payments already running get their decision written
    // (and a first phase-2 round) before the process goes, so a rolling restart leaves
    // nothing in doubt that this replica could have finished.
    let unfinished = drain_coordinator
        .finish_in_flight(FINISH_IN_FLIGHT_LIMIT)
        .await;
    if unfinished > 0 {
        tracing::warn!(
            unfinished,
            "payments still running at exit; recovery or takeover finishes them"
        );
    } else {
        // A request the drain limit cut between its PENDING record and phase 1 left a payment
        // no task runs: decide it now rather than at the next start.
        let orphans =
            tokio::time::timeout(PAY_STORAGE_ALLOWANCE, drain_coordinator.abort_orphaned());
        match orphans.await {
            Ok(Ok(0)) => {}
            Ok(Ok(aborted)) => tracing::warn!(
                aborted,
                "aborted payments whose request ended with the drain before phase 1"
            ),
            Ok(Err(failure)) => tracing::warn!(
                %failure,
                "cannot abort undecided payments at exit; recovery or takeover aborts them"
            ),
            Err(_) => tracing::warn!(
                "aborting undecided payments at exit timed out; recovery or takeover aborts them"
            ),
        }
    }
    tracing::info!("shutting down");
    let _ = shutdown_sender.send(true);
    let _ = tokio::time::timeout(DEREGISTER_TIMEOUT, registration_task).await;
    Ok(())
}

/// The admin exists from `strife setup` on: its password is the one setup stored.
async fn ensure_admin(store: &dyn GatewayStore, layout: &Layout) -> anyhow::Result<()> {
    if store.user(ADMIN_USER).await?.is_some() {
        return Ok(());
    }
    let password = read_admin_password(layout)?;
    let hash = hash_password(&password)?;
    match store
        .insert_user(ADMIN_USER, Role::Admin.as_str(), &hash)
        .await
    {
        Ok(()) => tracing::info!("admin user created from the setup password"),
        // Another replica sharing the database created it in the meantime: same password.
        Err(strife_common::Failure::AlreadyExists(_)) => {}
        Err(failure) => return Err(failure.into()),
    }
    Ok(())
}

/// Prints the one ready line on stdout (with the metrics and side transports' addresses).
fn announce(
    json: bool,
    address: SocketAddr,
    replica: &str,
    metrics_address: Option<SocketAddr>,
    side: &[Announcement],
) -> anyhow::Result<()> {
    let line = if json {
        let mut ready = serde_json::json!({"event": "listening", "address": address.to_string(), "replica_id": replica});
        if let Some(metrics) = metrics_address {
            ready["metrics_address"] = metrics.to_string().into();
        }
        for transport in side {
            ready[transport.json_key] = transport.address.to_string().into();
        }
        ready.to_string()
    } else {
        let mut line = format!("gateway listening on {address} (replica {replica})");
        if let Some(metrics) = metrics_address {
            line.push_str(&format!("; metrics at http://{metrics}/metrics"));
        }
        for transport in side {
            line.push_str(&format!("; {}", transport.text));
        }
        line
    };
    let mut stdout = std::io::stdout().lock();
    writeln!(stdout, "{line}")?;
    stdout.flush()?;
    Ok(())
}
