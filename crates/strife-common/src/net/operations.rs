//! The operating surface standard gRPC tooling expects on every Strife server: health
//! (`grpc.health.v1`, with `Watch`) and server reflection (`grpc.reflection.v1` and
//! `v1alpha`), so grpcurl, grpcui and Kubernetes' gRPC probes work against a gateway or a bank.
//!
//! Both need a certificate from the project's CA (TLS asks for it) but no password and no
//! particular role: they reveal nothing a `proto/` file does not. Health follows readiness:
//! NOT_SERVING until the server says it is ready, and NOT_SERVING again as soon as shutdown
//! begins ([`Readiness`]).

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use crate::limits::DRAIN_LIMIT;
use tokio::sync::watch;
use tonic::codec::CompressionEncoding;
use tonic_health::server::HealthReporter;
use tonic_health::ServingStatus;

/// Paths open to any certificate from our CA, without a password.
pub fn is_operations_path(path: &str) -> bool {
    path.starts_with("/grpc.health.v1.Health/")
        || path.starts_with("/grpc.reflection.v1.ServerReflection/")
        || path.starts_with("/grpc.reflection.v1alpha.ServerReflection/")
}

/// The health reporter of one server, for the overall status (`""`) and its main service.
#[derive(Clone)]
pub struct Readiness {
    reporter: HealthReporter,
    service_name: &'static str,
    /// Set once shutdown begins; from then on nothing turns the status back to SERVING. The
    /// lock orders that check against concurrent updates.
    shutting_down: Arc<tokio::sync::Mutex<bool>>,
}

impl Readiness {
    /// Sets both statuses.
    async fn set(&self, status: ServingStatus) {
        self.reporter.set_service_status("", status).await;
        self.reporter
            .set_service_status(self.service_name, status)
            .await;
    }

    /// Ready to serve (after start-up work such as recovery), unless shutting down.
    pub async fn serving(&self) {
        let shutting_down = self.shutting_down.lock().await;
        if !*shutting_down {
            self.set(ServingStatus::Serving).await;
        }
    }

    /// Unable to serve for now: probes and `Watch` see it at once.
    pub async fn not_serving(&self) {
        let _order = self.shutting_down.lock().await;
        self.set(ServingStatus::NotServing).await;
    }

    /// Shutting down: NOT_SERVING for good.
    pub async fn shutting_down(&self) {
        let mut shutting_down = self.shutting_down.lock().await;
        *shutting_down = true;
        self.set(ServingStatus::NotServing).await;
    }
}

/// How often readiness is re-checked.
pub const READINESS_INTERVAL: Duration = Duration::from_secs(1);

/// Longest one readiness check may take: a durable write slower than a payment may spend on
/// storage means the store is sick (a stalled disk or database), not merely busy.
pub const READINESS_CHECK_LIMIT: Duration = crate::limits::PAY_STORAGE_ALLOWANCE;

/// Runs one readiness check, bounded by `limit`: a check that hangs (a stalled disk never
/// answers) counts as not ready instead of freezing the status at its last value.
async fn check_within<Fut>(check: Fut, limit: Duration) -> Result<(), String>
where
    Fut: Future<Output = Result<(), String>>,
{
    match tokio::time::timeout(limit, check).await {
        Ok(outcome) => outcome,
        Err(_) => Err(format!(
            "the readiness check did not finish within {} ms",
            limit.as_millis()
        )),
    }
}

/// Keeps `readiness` following `check` (`Err(why)` = not ready; a check running longer than
/// [`READINESS_CHECK_LIMIT`] counts as `Err`) every [`READINESS_INTERVAL`] until `draining`
/// begins; logs each change with its reason.
pub async fn follow_readiness<F, Fut>(
    readiness: Readiness,
    mut check: F,
    mut draining: watch::Receiver<bool>,
) where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<(), String>>,
{
    let mut ready = true; // The caller has just declared it SERVING.
    loop {
        tokio::select! {
            _ = tokio::time::sleep(READINESS_INTERVAL) => {}
            _ = draining.wait_for(|began| *began) => return,
        }
        match check_within(check(), READINESS_CHECK_LIMIT).await {
            Ok(()) if !ready => {
                tracing::info!("ready again; SERVING");
                readiness.serving().await;
                ready = true;
            }
            Err(why) if ready => {
                tracing::warn!(%why, "not ready; NOT_SERVING");
                readiness.not_serving().await;
                ready = false;
            }
            _ => {}
        }
    }
}

/// The health service (NOT_SERVING until [`Readiness::serving`]) and its reporter, for the
/// server whose main gRPC service is `service_name` (e.g. `strife.v1.Gateway`). Like every
/// service of a Strife server it accepts gzip-compressed requests (`grpc_limits.rs`).
pub async fn health(
    service_name: &'static str,
) -> (
    Readiness,
    tonic_health::pb::health_server::HealthServer<impl tonic_health::pb::health_server::Health>,
) {
    let (reporter, service) = tonic_health::server::health_reporter();
    let readiness = Readiness {
        reporter,
        service_name,
        shutting_down: Arc::new(tokio::sync::Mutex::new(false)),
    };
    readiness.not_serving().await;
    (
        readiness,
        service.accept_compressed(CompressionEncoding::Gzip),
    )
}

/// Reflection services (v1 and v1alpha) over `file_descriptor_set` (`strife_proto`'s).
pub fn reflection(
    file_descriptor_set: &'static [u8],
) -> anyhow::Result<(
    tonic_reflection::server::v1::ServerReflectionServer<
        impl tonic_reflection::server::v1::ServerReflection,
    >,
    tonic_reflection::server::v1alpha::ServerReflectionServer<
        impl tonic_reflection::server::v1alpha::ServerReflection,
    >,
)> {
    let v1 = tonic_reflection::server::Builder::configure()
        .register_encoded_file_descriptor_set(file_descriptor_set)
        .build_v1()?
        .accept_compressed(CompressionEncoding::Gzip);
    let v1alpha = tonic_reflection::server::Builder::configure()
        .register_encoded_file_descriptor_set(file_descriptor_set)
        .build_v1alpha()?
        .accept_compressed(CompressionEncoding::Gzip);
    Ok((v1, v1alpha))
}

/// A shutdown signal for `serve_with_incoming_shutdown`: on SIGTERM/SIGINT, health goes
/// NOT_SERVING at once; the receiver tells [`drain_bounded`] that draining has begun.
pub fn shutdown_on_signal(
    readiness: &Readiness,
) -> (
    impl Future<Output = ()> + Send + 'static,
    watch::Receiver<bool>,
) {
    let (began, draining) = watch::channel(false);
    let readiness = readiness.clone();
    let signal = async move {
        crate::runtime::wait_for_signal().await;
        readiness.shutting_down().await;
        let _ = began.send(true);
    };
    (signal, draining)
}

/// Runs a server future; once draining has begun, gives it at most [`DRAIN_LIMIT`] to finish
/// its open streams, then drops it (closing what is left), so shutdown is bounded.
pub async fn drain_bounded<E>(
    serving: impl Future<Output = Result<(), E>>,
    mut draining: watch::Receiver<bool>,
) -> Result<(), E> {
    tokio::pin!(serving);
    tokio::select! {
        result = &mut serving => return result,
        _ = draining.wait_for(|began| *began) => {}
    }
    match tokio::time::timeout(DRAIN_LIMIT, serving).await {
        Ok(result) => result,
        Err(_) => {
            tracing::warn!(
                limit_ms = DRAIN_LIMIT.as_millis() as u64,
                "drain limit reached; closing the remaining connections"
            );
            Ok(())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_check_that_hangs_counts_as_not_ready() {
        let limit = Duration::from_millis(50);
        assert_eq!(check_within(async { Ok(()) }, limit).await, Ok(()));
        assert_eq!(
            check_within(async { Err("disk full".to_owned()) }, limit).await,
            Err("disk full".to_owned())
        );
        let hung = check_within(std::future::pending(), limit).await;
        assert!(
            hung.as_ref()
                .is_err_and(|why| why.contains("did not finish within 50 ms")),
            "{hung:?}"
        );
    }
}
