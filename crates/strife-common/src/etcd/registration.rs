//! Keeps a process's etcd key (a bank's `bank_id → address`, or a gateway replica's) for as
//! long as the process runs: a lease with
//! a TTL, kept alive at a third of the TTL, so a bank that dies silently vanishes within the
//! TTL. Any failure (etcd down or restarted, lease lost) starts a fresh session that
//! re-grants and re-puts, with bounded backoff. On shutdown the lease is revoked, which
//! removes the key at once — but only while it is still ours.
//!
//! Every keep-alive tick also reads the key back: if another process overwrote it (a
//! misconfigured second bank with our id) or deleted it (that process revoking its own lease
//! on exit), we warn and put ours back, so a running process is never left unregistered.

use std::time::Duration;

use crate::etcd::access::EtcdAccess;
use crate::etcd::discovery::ServiceEntry;
use crate::etcd::keys::{bank_key, gateway_key};
use anyhow::Context;
use etcd_client::{Client, PutOptions};
use tokio::sync::watch;
use tokio::time::timeout;

use crate::limits::ETCD_CALL_TIMEOUT;

/// Longest wait for one etcd call; keeps a hung etcd from hanging the bank.
const BACKOFF_START: Duration = Duration::from_millis(100);
const BACKOFF_MAX: Duration = Duration::from_secs(2);

/// What to register where.
#[derive(Debug, Clone)]
pub struct Registration {
    pub etcd: EtcdAccess,
    pub entry: ServiceEntry,
    pub key: String,
    pub lease_ttl_secs: i64,
}

impl Registration {
    /// The registration of a bank.
    pub fn bank(etcd: EtcdAccess, bank_id: &str, address: &str, lease_ttl_secs: i64) -> Self {
        Registration {
            etcd,
            key: bank_key(bank_id),
            entry: ServiceEntry {
                id: bank_id.to_owned(),
                address: address.to_owned(),
            },
            lease_ttl_secs,
        }
    }

    /// The registration of one gateway replica.
    pub fn gateway(etcd: EtcdAccess, replica_id: &str, address: &str, lease_ttl_secs: i64) -> Self {
        Registration {
            etcd,
            key: gateway_key(replica_id),
            entry: ServiceEntry {
                id: replica_id.to_owned(),
                address: address.to_owned(),
            },
            lease_ttl_secs,
        }
    }
}

/// How often [`refuse_if_taken`] looks again at a key held by someone else.
const TAKEN_POLL: Duration = Duration::from_millis(250);

/// Refuses to start a second live process under a key that is already registered at another
/// address (two gateway replicas given the same `--replica-id`): both would recover and
/// finish "their" payments and fight over the key. A key left by a crashed predecessor is no
/// obstacle: at our own address it cannot be alive (we hold that port now), and elsewhere its
/// lease lapses within the TTL, so we wait that long before refusing. When etcd cannot be
/// asked, the process starts (it keeps trying to register) with a warning.
pub async fn refuse_if_taken(registration: &Registration, what: &str) -> anyhow::Result<()> {
    let ttl = Duration::from_secs(registration.lease_ttl_secs.max(1).unsigned_abs());
    let deadline = tokio::time::Instant::now() + ttl + Duration::from_secs(1);
    let mut client = match registration.etcd.connect().await {
        Ok(client) => client,
        Err(error) => {
            tracing::warn!(key = %registration.key, error = format!("{error:#}"), "cannot check etcd for another live {what} under this name; starting anyway");
            return Ok(());
        }
    };
    loop {
        let current = match timeout(
            ETCD_CALL_TIMEOUT,
            client.get(registration.key.clone(), None),
        )
        .await
        {
            Ok(Ok(current)) => current,
            Ok(Err(error)) => {
                tracing::warn!(key = %registration.key, %error, "cannot check etcd for another live {what} under this name; starting anyway");
                return Ok(());
            }
            Err(_) => {
                tracing::warn!(key = %registration.key, "etcd did not answer in time; starting without checking for another live {what} under this name");
                return Ok(());
            }
        };
        let holder = current
            .kvs()
            .first()
            .and_then(|kv| serde_json::from_slice::<ServiceEntry>(kv.value()).ok());
        match holder {
            None => return Ok(()),
            Some(entry) if entry.address == registration.entry.address => return Ok(()),
            Some(entry) => {
                if tokio::time::Instant::now() >= deadline {
                    anyhow::bail!(
                        "another {what} named {:?} is alive at {} (etcd key {} kept under a \
                         live lease for over {} s); give this one a different name (for a \
                         gateway: --replica-id) or stop the other first",
                        registration.entry.id,
                        entry.address,
                        registration.key,
                        ttl.as_secs() + 1,
                    );
                }
                tokio::time::sleep(TAKEN_POLL).await;
            }
        }
    }
}

/// Registers and keeps registering until `shutdown` turns true; then revokes the lease.
/// `registered` says, at every moment, whether our key is in etcd under a live lease (for
/// readiness).
pub async fn keep_registered(
    registration: Registration,
    mut shutdown: watch::Receiver<bool>,
    registered: watch::Sender<bool>,
) {
    let mut backoff = BACKOFF_START;
    loop {
        if *shutdown.borrow() {
            return;
        }
        let outcome = session(&registration, &mut shutdown, &registered).await;
        registered.send_replace(false);
        match outcome {
            Ok(()) => return,
            Err(error) => {
                tracing::warn!(key = %registration.key, error = format!("{error:#}"), "etcd registration lost; retrying");
            }
        }
        tokio::select! {
            _ = tokio::time::sleep(backoff) => {}
            _ = shutdown.changed() => return,
        }
        backoff = (backoff * 2).min(BACKOFF_MAX);
    }
}

/// One lease's life: grant, put, keep alive until an error or shutdown.
async fn session(
    registration: &Registration,
    shutdown: &mut watch::Receiver<bool>,
    registered: &watch::Sender<bool>,
) -> anyhow::Result<()> {
    let mut client = registration.etcd.connect().await?;
    let lease_id = timeout(
        ETCD_CALL_TIMEOUT,
        client.lease_grant(registration.lease_ttl_secs, None),
    )
    .await
    .context("lease grant timed out")??
    .id();
    let value = serde_json::to_vec(&registration.entry)?;
    timeout(
        ETCD_CALL_TIMEOUT,
        client.put(
            registration.key.clone(),
            value.clone(),
            Some(PutOptions::new().with_lease(lease_id)),
        ),
    )
    .await
    .context("put timed out")??;
    tracing::info!(key = %registration.key, address = %registration.entry.address, lease_id, "registered in etcd");
    registered.send_replace(true);

    let (mut keeper, mut responses) = timeout(ETCD_CALL_TIMEOUT, client.lease_keep_alive(lease_id))
        .await
        .context("keep-alive start timed out")??;
    let ttl = Duration::from_secs(registration.lease_ttl_secs.max(1).unsigned_abs());
    let mut ticker = tokio::time::interval(ttl / 3);
    loop {
        tokio::select! {
            _ = shutdown.changed() => {
                let revoked = timeout(ETCD_CALL_TIMEOUT, client.lease_revoke(lease_id)).await;
                match revoked {
                    Ok(Ok(_)) => tracing::info!(key = %registration.key, "deregistered from etcd"),
                    _ => tracing::warn!(key = %registration.key, "could not revoke lease; the key expires with it"),
                }
                return Ok(());
            }
            _ = ticker.tick() => {
                keeper.keep_alive().await.context("sending keep-alive")?;
                let response = timeout(ttl, responses.message())
                    .await
                    .context("keep-alive answer timed out")??
                    .context("keep-alive stream closed")?;
                anyhow::ensure!(response.ttl() > 0, "lease {lease_id} expired");
                reclaim_if_taken(&mut client, registration, &value, lease_id).await?;
            }
        }
    }
}

/// Puts our value back under our lease if the key is missing or holds someone else's.
async fn reclaim_if_taken(
    client: &mut Client,
    registration: &Registration,
    value: &[u8],
    lease_id: i64,
) -> anyhow::Result<()> {
    let current = timeout(
        ETCD_CALL_TIMEOUT,
        client.get(registration.key.clone(), None),
    )
    .await
    .context("get timed out")??;
    let found = current.kvs().first();
    let ours = found.is_some_and(|kv| kv.value() == value && kv.lease() == lease_id);
    if ours {
        return Ok(());
    }
    let conflict = match found {
        None => "the key was deleted".to_owned(),
        Some(kv) => format!(
            "the key holds {} under lease {}",
            String::from_utf8_lossy(kv.value()),
            kv.lease()
        ),
    };
    tracing::warn!(key = %registration.key, %conflict, lease_id, "our etcd registration was taken over or removed by another process; putting it back");
    timeout(
        ETCD_CALL_TIMEOUT,
        client.put(
            registration.key.clone(),
            value.to_vec(),
            Some(PutOptions::new().with_lease(lease_id)),
        ),
    )
    .await
    .context("put timed out")??;
    Ok(())
}
