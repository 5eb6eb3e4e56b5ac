//! How every Strife process reaches etcd, and the access rules etcd enforces.
//!
//! etcd holds the routing (`/strife/v1/banks/<id>`, `/strife/v1/gateways/<replica>`), so it is locked
//! down: it serves TLS only to clients with a certificate from the **etcd CA** — a CA of its
//! own, so no gateway, bank or user certificate of the payment network can ever log in to
//! etcd — and with auth enabled, each certificate's CN is an etcd user whose role allows
//! exactly what that process needs ([`lock_down`]):
//!
//! | etcd user            | may write                          | may read                      |
//! |----------------------|------------------------------------|-------------------------------|
//! | `strife-gateway`     | `/strife/v1/gateways/` prefix      | `/strife/v1/banks/` prefix    |
//! | `strife-bank-<id>`   | `/strife/v1/banks/<id>`            | `/strife/v1/gateways/` prefix |
//! | `root`               | everything (setup and operators)   | everything                    |
//!
//! Routing does not *depend* on etcd being honest (every connection is pinned to the peer's
//! certificate, see `net::tls::ExpectedPeer`); this only keeps strangers from rewriting it.
//!
//! Endpoints are `https://…` for a locked-down etcd. A plain `http://` endpoint still works,
//! with a warning, for an operator who runs etcd on a private network of their own.

use std::time::Duration;

use anyhow::Context;
use etcd_client::{
    Certificate, Client, ConnectOptions, Identity, Permission, TlsOptions, UserAddOptions,
};

use crate::etcd::keys::{bank_key, BANKS_PREFIX, GATEWAYS_PREFIX};
use crate::layout::Layout;

/// Longest wait to connect to etcd.
pub const ETCD_CONNECT_TIMEOUT: Duration = Duration::from_secs(3);
/// The etcd superuser (used by setup tooling and operators, never by a serving process).
pub const ROOT_USER: &str = "root";
/// The etcd user of the gateway.
pub const GATEWAY_USER: &str = "strife-gateway";

/// The etcd user of a bank.
pub fn bank_user(bank_id: &str) -> String {
    format!("strife-bank-{bank_id}")
}

/// Where one process finds etcd and how it proves who it is there.
#[derive(Clone)]
pub struct EtcdAccess {
    endpoints: Vec<String>,
    tls: Option<TlsOptions>,
}

impl std::fmt::Debug for EtcdAccess {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter
            .debug_struct("EtcdAccess")
            .field("endpoints", &self.endpoints)
            .field("tls", &self.tls.is_some())
            .finish()
    }
}

impl EtcdAccess {
    /// Access for etcd user `user` (see the module table), with its client certificate from
    /// `<dir>/pki/etcd/` when the endpoints are `https://`. Fails, naming the file, when a
    /// certificate is missing, and refuses a mix of `http` and `https` endpoints.
    pub fn new(endpoints: Vec<String>, layout: &Layout, user: &str) -> anyhow::Result<Self> {
        anyhow::ensure!(!endpoints.is_empty(), "no etcd endpoint given");
        let secure = endpoints
            .iter()
            .filter(|endpoint| endpoint.starts_with("https://"))
            .count();
        if secure == 0 {
            tracing::warn!(
                endpoints = ?endpoints,
                "etcd without TLS: anyone who reaches it can read and rewrite bank routing; \
                 use https:// endpoints (see docs/SECURITY.md)"
            );
            return Ok(EtcdAccess {
                endpoints,
                tls: None,
            });
        }
        anyhow::ensure!(
            secure == endpoints.len(),
            "etcd endpoints mix https:// and plain ones ({}); use https:// for all",
            endpoints.join(",")
        );
        let ca = layout.etcd_ca();
        let own = layout.etcd_client(user);
        let read = |path: &std::path::Path| {
            std::fs::read(path).with_context(|| {
                format!(
                    "cannot read {} (etcd client material for {user}); run `strife setup --dir {}`",
                    path.display(),
                    layout.root().display()
                )
            })
        };
        let tls = TlsOptions::new()
            .ca_certificate(Certificate::from_pem(read(&ca.cert)?))
            .identity(Identity::from_pem(read(&own.cert)?, read(&own.key)?));
        Ok(EtcdAccess {
            endpoints,
            tls: Some(tls),
        })
    }

    /// The endpoints, as given.
    pub fn endpoints(&self) -> &[String] {
        &self.endpoints
    }

    /// A connected client (bounded wait).
    pub async fn connect(&self) -> anyhow::Result<Client> {
        let mut options = ConnectOptions::new().with_connect_timeout(ETCD_CONNECT_TIMEOUT);
        if let Some(tls) = &self.tls {
            options = options.with_tls(tls.clone());
        }
        tokio::time::timeout(
            ETCD_CONNECT_TIMEOUT,
            Client::connect(&self.endpoints, Some(options)),
        )
        .await
        .context("connecting to etcd timed out")?
        .with_context(|| format!("connecting to etcd at {}", self.endpoints.join(",")))
    }
}

/// The flags that make etcd serve clients TLS only, to certificates from the etcd CA, with
/// the certificate's CN as the etcd user (`strife dev`, the tests, and docs/SECURITY.md's
/// production configuration all start etcd with exactly these).
pub fn server_tls_args(layout: &Layout) -> Vec<std::ffi::OsString> {
    let server = layout.etcd_server();
    vec![
        "--cert-file".into(),
        server.cert.into_os_string(),
        "--key-file".into(),
        server.key.into_os_string(),
        "--trusted-ca-file".into(),
        layout.etcd_ca().cert.into_os_string(),
        "--client-cert-auth".into(),
    ]
}

/// Creates the etcd users and roles of the module table for the gateway and `banks`, then
/// enables auth. Run as `root`; safe to run again (e.g. after adding a bank): what exists is
/// kept, what is missing is added.
pub async fn lock_down(root: &EtcdAccess, banks: &[String]) -> anyhow::Result<()> {
    let mut client = root.connect().await?;
    let mut grants: Vec<(String, Vec<Permission>)> = vec![(
        GATEWAY_USER.to_owned(),
        vec![
            // Every replica logs in as the gateway: each writes its own key under the prefix
            // and reads the others' (to tell which replicas are gone).
            Permission::read_write(GATEWAYS_PREFIX).with_prefix(),
            Permission::read(BANKS_PREFIX).with_prefix(),
        ],
    )];
    for bank in banks {
        grants.push((
            bank_user(bank),
            vec![
                Permission::read_write(bank_key(bank)),
                Permission::read(GATEWAYS_PREFIX).with_prefix(),
            ],
        ));
    }
    ensure_user(&mut client, ROOT_USER).await?;
    ignore_exists(client.user_grant_role(ROOT_USER, "root").await)?;
    for (user, permissions) in grants {
        // One role per user, named after it, so a role never grants more than its user needs.
        ignore_exists(client.role_add(user.clone()).await)?;
        for permission in permissions {
            client
                .role_grant_permission(user.clone(), permission)
                .await
                .with_context(|| format!("granting etcd role {user}"))?;
        }
        ensure_user(&mut client, &user).await?;
        client
            .user_grant_role(user.clone(), user.clone())
            .await
            .with_context(|| format!("granting etcd user {user} its role"))?;
    }
    client.auth_enable().await.context("enabling etcd auth")?;
    Ok(())
}

async fn ensure_user(client: &mut Client, user: &str) -> anyhow::Result<()> {
    // Password-less: the user can only log in with a client certificate whose CN is its name.
    let added = client
        .user_add(user, "", Some(UserAddOptions::new().with_no_pwd()))
        .await
        .map(|_| ());
    ignore_exists(added).with_context(|| format!("adding etcd user {user}"))
}

/// Treats etcd's "already exists" answers as success (lock-down is re-runnable).
fn ignore_exists<T>(result: Result<T, etcd_client::Error>) -> anyhow::Result<()> {
    match result {
        Ok(_) => Ok(()),
        Err(error) if error.to_string().contains("already exists") => Ok(()),
        Err(error) => Err(error.into()),
    }
}
