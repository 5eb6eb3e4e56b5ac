//! In-doubt resolution, bank side. A leg that stays PREPARED past its decision deadline is
//! never decided by the bank alone: the resolver asks the coordinator ("what was decided for
//! payment X?") and applies the answer. While the coordinator cannot be reached the hold
//! stays, visible in `ListAccounts`, and the question is asked again next round.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use strife_common::etcd::access::EtcdAccess;
use strife_common::etcd::discovery::live_gateways;
use strife_common::limits::{DECISION_QUERY_TIMEOUT, MAX_GATEWAY_REPLICAS};
use strife_common::net::tls::{ExpectedPeer, TlsMaterial};
use strife_common::time::now_unix_ms;
use strife_proto::v1::{self as pb, coordinator_client::CoordinatorClient};
use tokio::sync::{watch, Mutex};
use tonic::transport::Channel;

use crate::metrics::{BankMetrics, ResolverOutcome};
use crate::store::Store;

/// Most overdue legs handled per round, so one round stays short.
const LEGS_PER_ROUND: u32 = 100;
/// The journal `actor` of changes the resolver applies.
pub const RESOLVER_ACTOR: &str = "resolver/coordinator-decision";

/// Where the coordinator is: fixed addresses, or every gateway replica registered in etcd.
#[derive(Debug, Clone)]
pub enum CoordinatorLocation {
    Fixed(Vec<String>),
    Etcd(EtcdAccess),
}

/// Asks the coordinator over mutual TLS with the bank's own certificate. Any live gateway
/// replica can answer (they share one log), so a replica that does not answer is skipped.
pub struct DecisionClient {
    bank_id: String,
    location: CoordinatorLocation,
    tls: TlsMaterial,
    /// One channel per replica address, reused across rounds.
    channels: Mutex<HashMap<String, Channel>>,
}

impl DecisionClient {
    pub fn new(bank_id: &str, location: CoordinatorLocation, tls: TlsMaterial) -> Self {
        DecisionClient {
            bank_id: bank_id.to_owned(),
            location,
            tls,
            channels: Mutex::new(HashMap::new()),
        }
    }

    async fn addresses(&self) -> anyhow::Result<Vec<String>> {
        match &self.location {
            CoordinatorLocation::Fixed(addresses) => Ok(addresses.clone()),
            CoordinatorLocation::Etcd(etcd) => {
                let addresses: Vec<String> = live_gateways(etcd, MAX_GATEWAY_REPLICAS as i64)
                    .await?
                    .into_iter()
                    .map(|entry| entry.address)
                    .collect();
                anyhow::ensure!(
                    !addresses.is_empty(),
                    "no gateway replica registered in etcd"
                );
                Ok(addresses)
            }
        }
    }

    async fn channel(&self, address: &str) -> anyhow::Result<Channel> {
        let mut channels = self.channels.lock().await;
        if let Some(channel) = channels.get(address) {
            return Ok(channel.clone());
        }
        let channel = self
            .tls
            .endpoint(address, &ExpectedPeer::Gateway, DECISION_QUERY_TIMEOUT)?
            .connect_lazy();
        // Past the bound (replicas came and went), start afresh rather than grow.
        if channels.len() >= MAX_GATEWAY_REPLICAS {
            channels.clear();
        }
        channels.insert(address.to_owned(), channel.clone());
        Ok(channel)
    }

    /// The coordinator's decision for `payment_id` and, with COMMIT, how much moves (0: the
    /// prepared amount), from the first replica that answers.
    pub async fn decision(&self, payment_id: &str) -> anyhow::Result<(pb::Decision, i64)> {
        let mut addresses = self.addresses().await?;
        // Spread the questions over the replicas, so one slow replica is not everyone's first.
        let start = rand::random_range(0..addresses.len().max(1));
        addresses.rotate_left(start);
        let mut last_error = None;
        for address in addresses {
            let mut client = CoordinatorClient::new(self.channel(&address).await?);
            match client
                .get_decision(pb::GetDecisionRequest {
                    payment_id: payment_id.to_owned(),
                    bank_id: self.bank_id.clone(),
                })
                .await
            {
                Ok(response) => {
                    let response = response.into_inner();
                    let decision = pb::Decision::try_from(response.decision)
                        .unwrap_or(pb::Decision::Unspecified);
                    return Ok((decision, response.settle_minor));
                }
                Err(status) => {
                    tracing::debug!(%address, %status, "gateway replica did not answer a decision query");
                    last_error = Some(
                        anyhow::Error::new(status).context(format!("gateway replica {address}")),
                    );
                }
            }
        }
        Err(last_error.unwrap_or_else(|| anyhow::anyhow!("no gateway replica to ask")))
    }
}

/// Every `interval`, resolves PREPARED legs whose deadline has passed, until shutdown.
pub async fn resolve_in_doubt(
    store: Arc<Store>,
    decisions: DecisionClient,
    metrics: Arc<BankMetrics>,
    interval: Duration,
    mut shutdown: watch::Receiver<bool>,
) {
    loop {
        tokio::select! {
            _ = tokio::time::sleep(interval) => {}
            _ = shutdown.changed() => return,
        }
        if let Err(error) = resolve_round(&store, &decisions, &metrics).await {
            tracing::warn!(
                error = format!("{error:#}"),
                "in-doubt resolution round failed"
            );
        }
    }
}

async fn resolve_round(
    store: &Arc<Store>,
    decisions: &DecisionClient,
    metrics: &BankMetrics,
) -> anyhow::Result<()> {
    let reader = Arc::clone(store);
    let overdue = tokio::task::spawn_blocking(move || {
        reader.prepared_legs(Some(now_unix_ms()), LEGS_PER_ROUND)
    })
    .await??;
    for stored in overdue {
        let payment_id = stored.payment_id.clone();
        let role = stored.leg.role;
        let (decision, settle_minor) = match decisions.decision(&payment_id).await {
            Ok(answer) => answer,
            Err(error) => {
                metrics.resolver_query(ResolverOutcome::Unreachable);
                tracing::warn!(%payment_id, error = format!("{error:#}"), "coordinator unreachable; hold stays");
                continue;
            }
        };
        let applied = match decision {
            pb::Decision::Commit => {
                metrics.resolver_query(ResolverOutcome::Commit);
                store
                    .commit(&payment_id, role, settle_minor, RESOLVER_ACTOR)
                    .await
            }
            pb::Decision::Abort => {
                metrics.resolver_query(ResolverOutcome::Abort);
                store.abort(&payment_id, role, RESOLVER_ACTOR).await
            }
            pb::Decision::Pending | pb::Decision::Unspecified => {
                metrics.resolver_query(ResolverOutcome::Pending);
                tracing::info!(%payment_id, "coordinator has not decided yet; asking again later");
                continue;
            }
        };
        match applied {
            Ok(leg) => {
                tracing::info!(%payment_id, ?role, state = ?leg.state, "in-doubt leg resolved by the coordinator's decision")
            }
            Err(failure) => {
                tracing::error!(%payment_id, ?role, %failure, "could not apply the coordinator's decision")
            }
        }
    }
    Ok(())
}
