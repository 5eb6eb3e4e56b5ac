//! `strife setup`: the project's own certificate authority and a certificate for every
//! process (gateway, each bank, the admin, each user), made in pure Rust with `rcgen`.
//!
//! Re-running setup never overwrites a key unless `force` is set: the existing CA is reused
//! and only missing certificates are issued, so adding a user later is one more `setup` call.

mod ca;
mod files;

use std::path::PathBuf;

use anyhow::Context;
use serde::{Deserialize, Serialize};
use strife_common::layout::{validate_name, KeyPairPaths, Layout};
use strife_common::tls::{PeerRole, GATEWAY_CN};

pub use ca::{CertificateAuthority, IssuedCertificate, Validity};

/// The admin's user name (its certificate CN and its gateway login).
pub const ADMIN_USER: &str = "admin";

/// What `strife setup` was asked to make.
#[derive(Debug, Clone)]
pub struct SetupOptions {
    pub dir: PathBuf,
    pub banks: Vec<String>,
    pub users: Vec<String>,
    /// Replace existing keys (the CA and every certificate) instead of keeping them.
    pub force: bool,
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

/// The record setup leaves in `setup.json`: which banks and users it has made.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct Manifest {
    pub banks: Vec<String>,
    pub users: Vec<String>,
}

impl Manifest {
    /// Reads `setup.json` under the data dir; an absent file is an empty manifest.
    pub fn load(layout: &Layout) -> anyhow::Result<Self> {
        let path = layout.setup_manifest();
        match std::fs::read(&path) {
            Ok(bytes) => serde_json::from_slice(&bytes)
                .with_context(|| format!("{} is not valid JSON", path.display())),
            Err(error) if error.kind() == std::io::ErrorKind::NotFound => Ok(Manifest::default()),
            Err(error) => Err(error).with_context(|| format!("reading {}", path.display())),
        }
    }
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
    strife_common::state_dir::create_private_dir(&layout.pki_dir())?;
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
        if paths.key.exists() && !reissue_all {
            report.kept.push(paths.cert);
            continue;
        }
        let issued = ca.issue(role, &name, Validity::default_leaf())?;
        files::write_pair(&paths, &issued.certificate_pem, &issued.key_pem)?;
        report.created.push(paths.cert);
    }

    let password_path = layout.admin_password();
    if !password_path.exists() || options.force {
        let password = files::random_password();
        files::write_private(&password_path, format!("{password}\n").as_bytes())?;
        report.created.push(password_path);
        report.new_admin_password = Some(password);
    }

    let mut manifest = Manifest::load(&layout)?;
    merge_names(&mut manifest.banks, &options.banks);
    merge_names(&mut manifest.users, &options.users);
    let manifest_json = serde_json::to_vec_pretty(&manifest)?;
    files::write_public(&layout.setup_manifest(), &manifest_json)?;
    Ok(report)
}

/// Reads the admin password that setup stored.
pub fn read_admin_password(layout: &Layout) -> anyhow::Result<String> {
    let path = layout.admin_password();
    let text = std::fs::read_to_string(&path)
        .with_context(|| format!("cannot read {}; run `strife setup` first", path.display()))?;
    Ok(text.trim().to_owned())
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
