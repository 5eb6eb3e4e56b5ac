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
use strife_common::etcd::EtcdAccess;
use strife_common::grpc_limits::GrpcLimitsLayer;
use strife_common::layout::Layout;
use strife_common::limits::{DEREGISTER_TIMEOUT, MAX_MESSAGE_BYTES};
use strife_common::listener::{bounded_incoming, ListenerLimits};
use strife_common::operations;
use strife_common::registration::{keep_registered, Registration};
use strife_common::state_dir::DirLock;
use strife_common::store_identity::StoreIdentity;
use strife_common::tls::TlsMaterial;
use strife_proto::v1::coordinator_server::CoordinatorServer;
use strife_proto::v1::gateway_server::GatewayServer;
use strife_proto::FILE_DESCRIPTOR_SET;
use tokio::sync::watch;

use crate::api::GatewayApi;
use crate::auth::{hash_password, AuthLayer, Authenticator, LockoutPolicy};
use crate::coordinator::{Coordinator, CrashPoint};
use crate::decision::DecisionApi;
use crate::registry::BankRegistry;
use crate::request_log::RequestLogLayer;
use crate::roles::Role;
use crate::store::{GatewayStore, StoreLocation};

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
    /// Where users, links and the payment log live (`--store`).
    pub store: StoreLocation,
}

/// Runs the gateway until SIGTERM or SIGINT.
pub async fn run(config: GatewayConfig) -> anyhow::Result<()> {
    let layout = Layout::new(&config.dir);
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
    strife_common::revocation::install(&layout.ca_crl())?;
    let etcd = EtcdAccess::new(
        config.etcd_endpoints.clone(),
        &layout,
        strife_common::etcd::GATEWAY_USER,
    )?;
    // Parses certificate and key now: a bad one must stop the gateway before recovery, its
    // ready line or its etcd registration.
    let server = tls.server_builder(&identity_paths)?;
    let identity = StoreIdentity::gateway(
        &layout,
        tls.ca_fingerprint()?,
        crate::store::SCHEMA_VERSION,
        config.initialize,
    );
    let store = crate::store::open(&config.store, &identity).await?;
    ensure_admin(store.as_ref(), &layout).await?;

    let registry = Arc::new(BankRegistry::new(tls.clone()));
    let coordinator = Arc::new(Coordinator::new(
        Arc::clone(&store),
        Arc::clone(&registry),
        config.prepare_timeout,
        CrashPoint::from_env(),
    ));
    let aborted = coordinator.recover().await?;
    if aborted > 0 {
        tracing::warn!(
            aborted,
            "recovery aborted payments left undecided by the last run"
        );
    }

    let listener = tokio::net::TcpListener::bind(config.listen)
        .await
        .with_context(|| format!("cannot listen on {}", config.listen))?;
    let address = listener.local_addr()?;

    let (shutdown_sender, shutdown) = watch::channel(false);
    let follower = Arc::clone(&registry);
    let watch_etcd = etcd.clone();
    let watch_shutdown = shutdown.clone();
    tokio::spawn(async move { follower.follow(watch_etcd, watch_shutdown).await });
    let retrier = Arc::clone(&coordinator);
    let retry_shutdown = shutdown.clone();
    tokio::spawn(async move { retrier.retry_unfinished(retry_shutdown).await });
    let registration = Registration::gateway(etcd, &address.to_string(), config.lease_ttl_secs);
    let registration_task = tokio::spawn(keep_registered(registration, shutdown.clone()));

    let authenticator = Arc::new(Authenticator::new(Arc::clone(&store), config.lockout)?);
    let gateway = GatewayServer::new(GatewayApi::new(
        Arc::clone(&store),
        registry,
        Arc::clone(&coordinator),
    ))
    .max_decoding_message_size(MAX_MESSAGE_BYTES);
    let decisions = CoordinatorServer::new(DecisionApi::new(coordinator))
        .max_decoding_message_size(MAX_MESSAGE_BYTES);
    let layers = tower::ServiceBuilder::new()
        .layer(RequestLogLayer)
        .layer(GrpcLimitsLayer)
        .layer(AuthLayer::new(authenticator));

    let (readiness, health) = operations::health("strife.v1.Gateway").await;
    let (reflection_v1, reflection_v1alpha) = operations::reflection(FILE_DESCRIPTOR_SET)?;
    // Recovery is done and the registry is following etcd: ready.
    readiness.serving().await;
    let (shutdown_signal, draining) = operations::shutdown_on_signal(&readiness);
    announce(config.json, address)?;
    let serving = server
        .layer(layers)
        .add_service(gateway)
        .add_service(decisions)
        .add_service(health)
        .add_service(reflection_v1)
        .add_service(reflection_v1alpha)
        .serve_with_incoming_shutdown(
            bounded_incoming(listener, config.listener_limits),
            shutdown_signal,
        );
    operations::drain_bounded(serving, draining)
        .await
        .context("gateway server failed")?;

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
    store
        .insert_user(ADMIN_USER, Role::Admin.as_str(), &hash)
        .await?;
    tracing::info!("admin user created from the setup password");
    Ok(())
}

fn announce(json: bool, address: SocketAddr) -> anyhow::Result<()> {
    let line = if json {
        serde_json::json!({"event": "listening", "address": address.to_string()}).to_string()
    } else {
        format!("gateway listening on {address}")
    };
    let mut stdout = std::io::stdout().lock();
    writeln!(stdout, "{line}")?;
    stdout.flush()?;
    Ok(())
}
