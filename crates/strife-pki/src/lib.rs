//! `strife setup`: the project's own certificate authority and a certificate for every
//! process (gateway, each bank, the admin, each user), made in pure Rust with `rcgen`.
//!
//! Re-running setup never overwrites a key unless `force` is set: the existing CA is reused
//! and only missing certificates are issued, so adding a user later is one more `setup` call.

mod ca;
mod files;

use std::collections::BTreeMap;
use std::path::PathBuf;

use anyhow::Context;
use serde::Serialize;
use strife_common::etcd::access::{
    bank_user as etcd_bank_user, GATEWAY_USER as ETCD_GATEWAY_USER, ROOT_USER as ETCD_ROOT_USER,
};
use strife_common::layout::{validate_name, KeyPairPaths, Layout};
use strife_common::net::connection::{PeerRole, GATEWAY_CN};
use strife_common::setup_manifest::SetupManifest;

pub use ca::{
    default_hosts, has_current_profile, CertificateAuthority, IssuedCertificate, Validity, WEB_CN,
};

pub use strife_common::admin::{read_admin_password, ADMIN_USER};

/// What `strife setup` was asked to make.
#[derive(Debug, Clone)]
pub struct SetupOptions {
    pub dir: PathBuf,
    pub banks: Vec<String>,
    pub users: Vec<String>,
    /// Replace existing keys (the CA and every certificate) instead of keeping them.
    pub force: bool,
    /// Hosts a server certificate is served on, by process name (`gateway` or a bank id);
    /// a process not listed gets loopback (`localhost`, `127.0.0.1`).
    pub hosts: BTreeMap<String, Vec<String>>,
}

/// What setup did, for the caller to print.
#[derive(Debug, Clone, Default, Serialize)]
pub struct SetupReport {
    /// Files written by this run.
    pub created: Vec<PathBuf>,
    /// Certificates that already existed and were left alone.
    pub kept: Vec<PathBuf>,
    /// The admin password, only when this run generated it (it is printed once).
    #[serde(skip)]
    pub new_admin_password: Option<String>,
    pub admin_password_file: PathBuf,
}

/// Runs setup: creates (or reuses) the CA, then every missing certificate and the admin
/// password.
pub fn setup(options: &SetupOptions) -> anyhow::Result<SetupReport> {
    for bank in &options.banks {
        validate_name("bank", bank).map_err(anyhow::Error::msg)?;
    }
    for user in &options.users {
        validate_name("user", user).map_err(anyhow::Error::msg)?;
        anyhow::ensure!(
            user != ADMIN_USER,
            "the admin user is always created; leave it out of --users"
        );
    }
    for process in options.hosts.keys() {
        anyhow::ensure!(
            process == GATEWAY_CN || process == ETCD_HOST_NAME || options.banks.contains(process),
            "--host names {process:?}, which is neither `gateway`, `etcd` nor one of --banks"
        );
    }
    let layout = Layout::new(&options.dir);
    // A new data dir is private; an existing one (maybe `--dir .`) is the operator's to set,
    // but everything Strife creates inside it is 0700 / 0600.
    {
        use std::os::unix::fs::DirBuilderExt;
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(layout.root())
            .with_context(|| format!("creating {}", layout.root().display()))?;
    }
    strife_common::storage::state_dir::create_private_dir(&layout.pki_dir())?;
    let mut report = SetupReport {
        admin_password_file: layout.admin_password(),
        ..SetupReport::default()
    };

    let ca_paths = layout.ca();
    let ca = if ca_paths.key.exists() && !options.force {
        report.kept.push(ca_paths.cert.clone());
        CertificateAuthority::load(&ca_paths)?
    } else {
        let ca = CertificateAuthority::generate()?;
        files::write_pair(&ca_paths, &ca.certificate_pem(), &ca.key_pem())?;
        report.created.push(ca_paths.cert.clone());
        ca
    };

    let mut wanted: Vec<(PeerRole, String, KeyPairPaths)> = vec![(
        PeerRole::Gateway,
        GATEWAY_CN.to_owned(),
        layout.gateway_identity(),
    )];
    for bank in &options.banks {
        wanted.push((PeerRole::Bank, bank.clone(), layout.bank_identity(bank)));
    }
    for user in std::iter::once(ADMIN_USER.to_owned()).chain(options.users.iter().cloned()) {
        let paths = layout.user_identity(&user);
        wanted.push((PeerRole::User, user, paths));
    }
    // A new CA invalidates every old certificate, so `force` (or a fresh CA) reissues all.
    let reissue_all = report.created.contains(&ca_paths.cert);
    for (role, name, paths) in wanted {
        let hosts = options.hosts.get(&name).filter(|_| role != PeerRole::User);
        // An existing certificate is kept unless setup must reissue: a new CA, new hosts
        // asked for, or a profile from an older version (which peers would now refuse).
        let current_profile = std::fs::read_to_string(&paths.cert)
            .map(|pem| has_current_profile(&pem, role, &name))
            .unwrap_or(false);
        if paths.key.exists() && !reissue_all && hosts.is_none() && current_profile {
            report.kept.push(paths.cert);
            continue;
        }
        let hosts = hosts.cloned().unwrap_or_else(default_hosts);
        let issued = ca.issue_for_hosts(role, &name, &hosts, Validity::default_leaf())?;
        files::write_pair(&paths, &issued.certificate_pem, &issued.key_pem)?;
        report.created.push(paths.cert);
    }

    // The console's HTTPS certificate, served on the gateway's hosts.
    let web = layout.web_identity();
    let gateway_hosts = options.hosts.get(GATEWAY_CN);
    if !web.key.exists() || reissue_all || gateway_hosts.is_some() {
        let hosts = gateway_hosts.cloned().unwrap_or_else(default_hosts);
        let issued = ca.issue_web(&hosts, Validity::default_leaf())?;
        files::write_pair(&web, &issued.certificate_pem, &issued.key_pem)?;
        report.created.push(web.cert);
    } else {
        report.kept.push(web.cert);
    }

    issue_etcd_material(&layout, options, &mut report)?;

    let password_path = layout.admin_password();
    if !password_path.exists() || options.force {
        let password = files::random_password();
        files::write_private(&password_path, format!("{password}\n").as_bytes())?;
        report.created.push(password_path);
        report.new_admin_password = Some(password);
    }

    // Setup records what it made in `setup.json`; reading it is `strife_common`'s.
    let mut manifest = SetupManifest::load(&layout)?;
    merge_names(&mut manifest.banks, &options.banks);
    merge_names(&mut manifest.users, &options.users);
    let manifest_json = serde_json::to_vec_pretty(&manifest)?;
    files::write_public(&layout.setup_manifest(), &manifest_json)?;
    Ok(report)
}

/// The `--host` entry that names etcd's own server certificate's hosts.
pub const ETCD_HOST_NAME: &str = "etcd";

/// etcd's CA, its server certificate and one client certificate per etcd user (root, the
/// gateway, each bank): see `strife_common::etcd::access`. Kept like the rest unless the CA is new.
fn issue_etcd_material(
    layout: &Layout,
    options: &SetupOptions,
    report: &mut SetupReport,
) -> anyhow::Result<()> {
    let ca_paths = layout.etcd_ca();
    let ca = if ca_paths.key.exists() && !options.force {
        CertificateAuthority::load(&ca_paths)?
    } else {
        let ca = CertificateAuthority::generate_named("Strife etcd CA")?;
        files::write_pair(&ca_paths, &ca.certificate_pem(), &ca.key_pem())?;
        report.created.push(ca_paths.cert.clone());
        ca
    };
    let reissue_all = report.created.contains(&ca_paths.cert);
    let server_hosts = options.hosts.get(ETCD_HOST_NAME);
    let mut wanted: Vec<(String, Option<Vec<String>>, KeyPairPaths)> = vec![(
        "etcd".to_owned(),
        Some(server_hosts.cloned().unwrap_or_else(default_hosts)),
        layout.etcd_server(),
    )];
    let users = [ETCD_ROOT_USER.to_owned(), ETCD_GATEWAY_USER.to_owned()]
        .into_iter()
        .chain(options.banks.iter().map(|bank| etcd_bank_user(bank)));
    for user in users {
        let paths = layout.etcd_client(&user);
        wanted.push((user, None, paths));
    }
    for (name, hosts, paths) in wanted {
        let new_hosts = hosts.is_some() && server_hosts.is_some();
        if paths.key.exists() && !reissue_all && !new_hosts {
            continue;
        }
        let issued = ca.issue_etcd(&name, hosts.as_deref(), Validity::default_leaf())?;
        files::write_pair(&paths, &issued.certificate_pem, &issued.key_pem)?;
        report.created.push(paths.cert);
    }
    Ok(())
}

/// Revokes the certificates of `names` (a bank id, a user name, `gateway`, or `bank/NAME`,
/// `user/NAME` where a name is both): adds their serials to the CA's CRL (`pki/ca.crl`,
/// signed by the CA, re-read by running servers within a second), moves each certificate to
/// `pki/revoked/` and deletes its key, so a later setup run issues a fresh one. Returns the
/// certificates revoked.
pub fn revoke(layout: &Layout, names: &[String]) -> anyhow::Result<Vec<PathBuf>> {
    let manifest = SetupManifest::load(layout)?;
    let mut targets = Vec::new();
    for name in names {
        let (role, bare) = match name.split_once('/') {
            Some(("bank", bare)) => (Some(PeerRole::Bank), bare),
            Some(("user", bare)) => (Some(PeerRole::User), bare),
            Some(_) => anyhow::bail!("--revoke {name:?}: use NAME, bank/NAME or user/NAME"),
            None => (None, name.as_str()),
        };
        let bank = layout.bank_identity(bare);
        let user = layout.user_identity(bare);
        let paths = match role {
            _ if bare == GATEWAY_CN && role.is_none() => layout.gateway_identity(),
            Some(PeerRole::Bank) => bank,
            Some(PeerRole::User) => user,
            _ => match (bank.cert.exists(), user.cert.exists()) {
                (true, true) => anyhow::bail!(
                    "{bare} is both a bank and a user; say bank/{bare} or user/{bare}"
                ),
                (true, false) => bank,
                (false, true) => user,
                (false, false) => anyhow::bail!(
                    "no certificate for {bare:?} under {} (banks: {})",
                    layout.pki_dir().display(),
                    manifest.banks.join(", ")
                ),
            },
        };
        anyhow::ensure!(
            paths.cert.exists(),
            "no certificate at {}",
            paths.cert.display()
        );
        targets.push(paths);
    }
    let ca = CertificateAuthority::load(&layout.ca())?;
    let crl_path = layout.ca_crl();
    let (_, mut serials) = strife_common::net::revocation::read_crl(&crl_path)?;
    for paths in &targets {
        let pem = std::fs::read(&paths.cert)
            .with_context(|| format!("reading {}", paths.cert.display()))?;
        let (_, block) = x509_parser::pem::parse_x509_pem(&pem)
            .map_err(|error| anyhow::anyhow!("{}: {error}", paths.cert.display()))?;
        let certificate = block
            .parse_x509()
            .map_err(|error| anyhow::anyhow!("{}: {error}", paths.cert.display()))?;
        serials.insert(certificate.raw_serial().to_vec());
    }
    let crl_pem = ca.revocation_list(serials.into_iter().collect())?;
    files::write_public(&crl_path, crl_pem.as_bytes())?;
    let mut revoked = Vec::new();
    std::fs::create_dir_all(layout.revoked_dir())?;
    for paths in targets {
        let stamp = strife_common::time::now_unix_ms();
        let file_name = paths
            .cert
            .file_name()
            .map(|name| name.to_string_lossy().into_owned())
            .unwrap_or_default();
        let destination = layout.revoked_dir().join(format!("{stamp}-{file_name}"));
        std::fs::rename(&paths.cert, &destination)
            .with_context(|| format!("moving {} aside", paths.cert.display()))?;
        match std::fs::remove_file(&paths.key) {
            Ok(()) => {}
            Err(error) if error.kind() == std::io::ErrorKind::NotFound => {}
            Err(error) => {
                return Err(error).with_context(|| format!("deleting {}", paths.key.display()))
            }
        }
        revoked.push(destination);
    }
    Ok(revoked)
}

fn merge_names(existing: &mut Vec<String>, added: &[String]) {
    for name in added {
        if !existing.contains(name) {
            existing.push(name.clone());
        }
    }
}

#[cfg(test)]
mod tests;
