//! In-doubt resolution, bank side. A leg that stays PREPARED past its decision deadline is
//! never decided by the bank alone: the resolver asks the coordinator ("what was decided for
//! payment X?") and applies the answer. While the coordinator cannot be reached the hold
//! stays, visible in `ListAccounts`, and the question is asked again next round.

use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use strife_common::discovery::{ServiceEntry, GATEWAY_KEY};
use strife_common::etcd::EtcdAccess;
use strife_common::limits::DECISION_QUERY_TIMEOUT;
use strife_common::time::now_unix_ms;
use strife_common::tls::{ExpectedPeer, TlsMaterial};
use strife_proto::v1::{self as pb, coordinator_client::CoordinatorClient};
use tokio::sync::{watch, Mutex};
use tonic::transport::Channel;

use crate::store::Store;

/// Most overdue legs handled per round, so one round stays short.
const LEGS_PER_ROUND: u32 = 100;
/// The journal `actor` of changes the resolver applies.
pub const RESOLVER_ACTOR: &str = "resolver/coordinator-decision";

/// Where the coordinator is: a fixed address, or whatever the gateway put in etcd.
#[derive(Debug, Clone)]
pub enum CoordinatorLocation {
    Fixed(String),
    Etcd(EtcdAccess),
}

/// Asks the coordinator over mutual TLS with the bank's own certificate.
pub struct DecisionClient {
    bank_id: String,
    location: CoordinatorLocation,
    tls: TlsMaterial,
    /// The channel and the address it was made for; rebuilt when the address changes.
    channel: Mutex<Option<(String, Channel)>>,
}

impl DecisionClient {
    pub fn new(bank_id: &str, location: CoordinatorLocation, tls: TlsMaterial) -> Self {
        DecisionClient {
            bank_id: bank_id.to_owned(),
            location,
            tls,
            channel: Mutex::new(None),
        }
    }

    async fn address(&self) -> anyhow::Result<String> {
        match &self.location {
            CoordinatorLocation::Fixed(address) => Ok(address.clone()),
            CoordinatorLocation::Etcd(etcd) => {
                let mut client = etcd.connect().await?;
                let response =
                    tokio::time::timeout(DECISION_QUERY_TIMEOUT, client.get(GATEWAY_KEY, None))
                        .await
                        .context("etcd get timed out")??;
                let entry = response
                    .kvs()
                    .first()
                    .context("no gateway registered in etcd")?;
                let entry: ServiceEntry = serde_json::from_slice(entry.value())?;
                Ok(entry.address)
            }
        }
    }

    async fn channel(&self) -> anyhow::Result<Channel> {
        let address = self.address().await?;
        let mut cached = self.channel.lock().await;
        if let Some((cached_address, channel)) = cached.as_ref() {
            if *cached_address == address {
                return Ok(channel.clone());
            }
        }
        let channel = self
            .tls
            .endpoint(&address, &ExpectedPeer::Gateway, DECISION_QUERY_TIMEOUT)?
            .connect_lazy();
        *cached = Some((address, channel.clone()));
        Ok(channel)
    }

    /// The coordinator's decision for `payment_id`.
    pub async fn decision(&self, payment_id: &str) -> anyhow::Result<pb::Decision> {
        let mut client = CoordinatorClient::new(self.channel().await?);
        let response = client
            .get_decision(pb::GetDecisionRequest {
                payment_id: payment_id.to_owned(),
                bank_id: self.bank_id.clone(),
            })
            .await?
            .into_inner();
        Ok(pb::Decision::try_from(response.decision).unwrap_or(pb::Decision::Unspecified))
    }
}

/// Every `interval`, resolves PREPARED legs whose deadline has passed, until shutdown.
pub async fn resolve_in_doubt(
    store: Arc<Store>,
    decisions: DecisionClient,
    interval: Duration,
    mut shutdown: watch::Receiver<bool>,
) {
    loop {
        tokio::select! {
            _ = tokio::time::sleep(interval) => {}
            _ = shutdown.changed() => return,
        }
        if let Err(error) = resolve_round(&store, &decisions).await {
            tracing::warn!(
                error = format!("{error:#}"),
                "in-doubt resolution round failed"
            );
        }
    }
}

async fn resolve_round(store: &Arc<Store>, decisions: &DecisionClient) -> anyhow::Result<()> {
    let reader = Arc::clone(store);
    let overdue = tokio::task::spawn_blocking(move || {
        reader.prepared_legs(Some(now_unix_ms()), LEGS_PER_ROUND)
    })
    .await??;
    for stored in overdue {
        let payment_id = stored.payment_id.clone();
        let role = stored.leg.role;
        let decision = match decisions.decision(&payment_id).await {
            Ok(decision) => decision,
            Err(error) => {
                tracing::warn!(%payment_id, error = format!("{error:#}"), "coordinator unreachable; hold stays");
                continue;
            }
        };
        let applied = match decision {
            pb::Decision::Commit => store.commit(&payment_id, role, RESOLVER_ACTOR).await,
            pb::Decision::Abort => store.abort(&payment_id, role, RESOLVER_ACTOR).await,
            pb::Decision::Pending | pb::Decision::Unspecified => {
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
