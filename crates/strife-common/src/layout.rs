//! Where things live under a Strife data directory (`--dir`, default `./strife-data`).
//! One folder holds a whole local network, so every path is derived here and nowhere else.
//!
//! ```text
//! D/pki/ca.crt  D/pki/ca.key                 the project's CA
//! D/pki/gateway.crt  .key                    gateway (server and client use)
//! D/pki/banks/<bank>.crt  .key               one per bank
//! D/pki/users/<user>.crt  .key               admin and each user (CN = user name)
//! D/pki/ca.crl                              revoked certificates (strife setup --revoke)
//! D/pki/etcd/ca.crt  ca.key  server.crt/key  etcd's own CA and its server certificate
//! D/pki/etcd/clients/<etcd user>.crt  .key   root, strife-gateway, strife-bank-<id>
//! D/admin-password                           admin password, 0600, written once by setup
//! D/setup.json                               what setup made (banks, users)
//! D/network.json                             where `strife dev`'s etcd and gateway listen
//! D/banks/<bank>/bank.db                     a bank's SQLite database
//! D/banks/<bank>/LOCK                        held (flock) by the running bank; holds its pid
//! D/gateway/gateway.db                       the gateway's SQLite database
//! D/gateway/LOCK                             held (flock) by the running gateway; its pid
//! D/clients/<user>/outbox.db                 a client's offline outbox
//! D/state/bank-<bank>.created                written when a bank's database is created
//! D/state/gateway.created                    written when the gateway's database is created
//!                                            (kept apart from the databases' own dirs, so
//!                                            losing one of those is noticed)
//! ```

use std::path::{Path, PathBuf};

/// The default data directory.
pub const DEFAULT_DIR: &str = "./strife-data";

/// A certificate and its private key, as file paths.
#[derive(Debug, Clone)]
pub struct KeyPairPaths {
    pub cert: PathBuf,
    pub key: PathBuf,
}

/// Paths under one data directory.
#[derive(Debug, Clone)]
pub struct Layout {
    root: PathBuf,
}

impl Layout {
    pub fn new(root: impl Into<PathBuf>) -> Self {
        Layout { root: root.into() }
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    pub fn pki_dir(&self) -> PathBuf {
        self.root.join("pki")
    }

    pub fn ca(&self) -> KeyPairPaths {
        self.pair(self.pki_dir(), "ca")
    }

    pub fn gateway_identity(&self) -> KeyPairPaths {
        self.pair(self.pki_dir(), "gateway")
    }

    /// The web console's HTTPS certificate (`strife gateway --web-listen`): a server-only
    /// certificate from the project CA, for browsers, which have no client certificate.
    pub fn web_identity(&self) -> KeyPairPaths {
        self.pair(self.pki_dir(), "web")
    }

    pub fn bank_identity(&self, bank_id: &str) -> KeyPairPaths {
        self.pair(self.pki_dir().join("banks"), bank_id)
    }

    pub fn user_identity(&self, username: &str) -> KeyPairPaths {
        self.pair(self.pki_dir().join("users"), username)
    }

    /// The CA's certificate revocation list (absent until `strife setup --revoke`).
    pub fn ca_crl(&self) -> PathBuf {
        self.pki_dir().join("ca.crl")
    }

    /// Where `strife setup --revoke` moves a revoked certificate (its key is deleted).
    pub fn revoked_dir(&self) -> PathBuf {
        self.pki_dir().join("revoked")
    }

    /// The etcd CA: separate from the project's CA, so no payment-network certificate can
    /// ever log in to etcd (see `etcd/access.rs`).
    pub fn etcd_ca(&self) -> KeyPairPaths {
        self.pair(self.pki_dir().join("etcd"), "ca")
    }

    /// etcd's own server certificate.
    pub fn etcd_server(&self) -> KeyPairPaths {
        self.pair(self.pki_dir().join("etcd"), "server")
    }

    /// The client certificate of etcd user `user` (CN = `user`).
    pub fn etcd_client(&self, user: &str) -> KeyPairPaths {
        self.pair(self.pki_dir().join("etcd").join("clients"), user)
    }

    pub fn admin_password(&self) -> PathBuf {
        self.root.join("admin-password")
    }

    pub fn setup_manifest(&self) -> PathBuf {
        self.root.join("setup.json")
    }

    /// Written by `strife dev`: where its etcd and gateway listen.
    pub fn network_file(&self) -> PathBuf {
        self.root.join("network.json")
    }

    pub fn bank_dir(&self, bank_id: &str) -> PathBuf {
        self.root.join("banks").join(bank_id)
    }

    pub fn bank_db(&self, bank_id: &str) -> PathBuf {
        self.bank_dir(bank_id).join("bank.db")
    }

    /// The lock a running bank holds on its state dir, so a second one cannot start there.
    pub fn bank_lock(&self, bank_id: &str) -> PathBuf {
        self.bank_dir(bank_id).join("LOCK")
    }

    pub fn gateway_dir(&self) -> PathBuf {
        self.root.join("gateway")
    }

    pub fn gateway_db(&self) -> PathBuf {
        self.gateway_dir().join("gateway.db")
    }

    /// The lock the running gateway holds on its state dir.
    pub fn gateway_lock(&self) -> PathBuf {
        self.gateway_dir().join("LOCK")
    }

    /// Creation markers of the databases, outside the databases' own directories.
    pub fn state_dir(&self) -> PathBuf {
        self.root.join("state")
    }

    /// Written when bank `bank_id`'s database is created (see `store_identity`).
    pub fn bank_marker(&self, bank_id: &str) -> PathBuf {
        self.state_dir().join(format!("bank-{bank_id}.created"))
    }

    /// Written when the gateway's database is created.
    pub fn gateway_marker(&self) -> PathBuf {
        self.state_dir().join("gateway.created")
    }

    pub fn client_dir(&self, username: &str) -> PathBuf {
        self.root.join("clients").join(username)
    }

    fn pair(&self, dir: PathBuf, name: &str) -> KeyPairPaths {
        KeyPairPaths {
            cert: dir.join(format!("{name}.crt")),
            key: dir.join(format!("{name}.key")),
        }
    }
}

/// Checks a name used as a bank id or user name: it becomes a file name, a certificate CN
/// and an etcd key segment, so it is kept to a safe, bounded alphabet.
pub fn validate_name(kind: &str, name: &str) -> Result<(), String> {
    use crate::limits::MAX_NAME_BYTES;
    if name.is_empty() {
        return Err(format!("{kind} name is empty"));
    }
    if name.len() > MAX_NAME_BYTES {
        return Err(format!(
            "{kind} name is longer than {MAX_NAME_BYTES} characters"
        ));
    }
    let first_ok = name.as_bytes()[0].is_ascii_alphanumeric();
    let rest_ok = name
        .bytes()
        .all(|byte| byte.is_ascii_alphanumeric() || byte == b'-' || byte == b'_');
    if !first_ok || !rest_ok {
        return Err(format!(
            "{kind} name {name:?} may only contain letters, digits, '-' and '_', starting with a letter or digit"
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_checked() {
        assert!(validate_name("bank", "bank0").is_ok());
        assert!(validate_name("user", "alice_b-2").is_ok());
        for bad in ["", "../x", "a/b", "-x", "a b", "é"] {
            assert!(validate_name("user", bad).is_err(), "{bad}");
        }
        assert!(validate_name("user", &"a".repeat(65)).is_err());
    }
}
