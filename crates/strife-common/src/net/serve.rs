//! How a Strife gRPC server runs, the bank and the gateway alike: its health and reflection
//! services beside its own, readiness that follows a probe of the server's store and etcd
//! key, its ready line, then serving on the bounded listener until SIGTERM/SIGINT, with the
//! drain bounded by [`DRAIN_LIMIT`]. Each server only says what is its own: its services
//! and layers (given the `draining` signal, which open streams end on), its probe and its
//! ready line.

use std::future::Future;

use anyhow::Context;
use bytes::Bytes;
use tokio::net::TcpListener;
use tokio::sync::watch;
use tonic::body::Body;
use tonic::service::Routes;
use tonic::transport::server::Router;
use tower::{Layer, Service};

#[cfg(doc)]
use crate::limits::DRAIN_LIMIT;
use crate::net::listener::{bounded_incoming, ListenerLimits};
use crate::net::operations;

/// What a server is while it starts: its name in health checks, where it listens, and the
/// descriptor set reflection answers from.
pub struct GrpcServer {
    /// The service health checks name (`strife.v1.Bank`).
    pub service_name: &'static str,
    pub listener: TcpListener,
    pub limits: ListenerLimits,
    pub file_descriptor_set: &'static [u8],
}

/// The probe readiness follows: `Ok` while the server's store takes writes and its etcd key
/// is registered (`registered`, kept by `registration::keep_registered`).
pub async fn store_and_registration<F>(store_probe: F, registered: bool) -> Result<(), String>
where
    F: Future<Output = Result<(), crate::Failure>>,
{
    store_probe.await.map_err(|failure| failure.to_string())?;
    if registered {
        Ok(())
    } else {
        Err("not registered in etcd".to_owned())
    }
}

impl GrpcServer {
    /// Builds the server's router with `build` (given the drain signal), adds health and
    /// reflection, turns SERVING, keeps readiness following `probe`, prints the ready line
    /// (`announce`) and serves until SIGTERM/SIGINT; the drain is bounded by [`DRAIN_LIMIT`].
    pub async fn serve<L, ResBody, P, PF, B>(
        self,
        probe: P,
        build: B,
        announce: impl FnOnce() -> anyhow::Result<()>,
    ) -> anyhow::Result<()>
    where
        P: FnMut() -> PF + Send + 'static,
        PF: Future<Output = Result<(), String>> + Send + 'static,
        B: FnOnce(watch::Receiver<bool>) -> anyhow::Result<Router<L>>,
        L: Layer<Routes>,
        L::Service: Service<http::Request<Body>, Response = http::Response<ResBody>>
            + Clone
            + Send
            + 'static,
        <L::Service as Service<http::Request<Body>>>::Future: Send,
        <L::Service as Service<http::Request<Body>>>::Error: Into<tonic::codegen::StdError> + Send,
        ResBody: tonic::codegen::Body<Data = Bytes> + Send + 'static,
        ResBody::Error: Into<tonic::codegen::StdError>,
    {
        let (readiness, health) = operations::health(self.service_name).await;
        let (reflection_v1, reflection_v1alpha) = operations::reflection(self.file_descriptor_set)?;
        let (shutdown_signal, draining) = operations::shutdown_on_signal(&readiness);
        let router = build(draining.clone())?
            .add_service(health)
            .add_service(reflection_v1)
            .add_service(reflection_v1alpha);
        readiness.serving().await;
        tokio::spawn(operations::follow_readiness(
            readiness.clone(),
            probe,
            draining.clone(),
        ));
        announce()?;
        let serving = router.serve_with_incoming_shutdown(
            bounded_incoming(self.listener, self.limits),
            shutdown_signal,
        );
        operations::drain_bounded(serving, draining)
            .await
            .with_context(|| format!("{} server failed", self.service_name))
    }
}
