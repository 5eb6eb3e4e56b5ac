//! Revoked certificates: the CA's CRL (`pki/ca.crl`, written by `strife setup --revoke`), read
//! by every server and re-read when the file changes, so a revocation takes effect within
//! [`RECHECK_INTERVAL`] without a restart.
//!
//! Servers install the list once at start ([`install`]); from then on every peer identity
//! read from a certificate (`connection.rs`, the one place both the gateway's auth layer
//! and the banks' interceptor go through) refuses a revoked serial as unauthenticated.
//! The CRL sits beside `ca.crt` in the trusted pki directory, so it is trusted as the CA
//! certificate is. A CRL that cannot be read after a change keeps the last good list and is
//! logged as an error (never "revoke nothing").

use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::sync::{OnceLock, RwLock};
use std::time::{Duration, Instant, SystemTime};

use anyhow::Context;
use x509_parser::prelude::{CertificateRevocationList, FromDer};

/// How often a server looks at the CRL file for changes (a `stat`, at most this often).
pub const RECHECK_INTERVAL: Duration = Duration::from_secs(1);

static INSTALLED: OnceLock<RevocationList> = OnceLock::new();

struct Loaded {
    checked: Instant,
    modified: Option<SystemTime>,
    serials: HashSet<Vec<u8>>,
}

/// The revoked serials of one CRL file, refreshed on change.
pub struct RevocationList {
    path: PathBuf,
    loaded: RwLock<Loaded>,
}

/// Starts honouring the CRL at `path` in this process (absent file: nothing revoked yet).
/// Fails when the file exists but is not a CRL, naming it.
pub fn install(path: &Path) -> anyhow::Result<()> {
    let (modified, serials) = read_crl(path)?;
    let list = RevocationList {
        path: path.to_owned(),
        loaded: RwLock::new(Loaded {
            checked: Instant::now(),
            modified,
            serials,
        }),
    };
    // A second install (tests running several servers in one process) keeps the first.
    let _ = INSTALLED.set(list);
    Ok(())
}

/// Whether the certificate with this (raw DER) serial is revoked by the installed CRL
/// (false when none is installed).
pub fn is_serial_revoked(serial: &[u8]) -> bool {
    INSTALLED.get().is_some_and(|list| list.contains(serial))
}

impl RevocationList {
    fn contains(&self, serial: &[u8]) -> bool {
        self.refresh();
        let loaded = self
            .loaded
            .read()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        loaded.serials.contains(serial)
    }

    fn refresh(&self) {
        {
            let loaded = self
                .loaded
                .read()
                .unwrap_or_else(|poisoned| poisoned.into_inner());
            if loaded.checked.elapsed() < RECHECK_INTERVAL {
                return;
            }
        }
        let mut loaded = self
            .loaded
            .write()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        loaded.checked = Instant::now();
        let modified = std::fs::metadata(&self.path)
            .and_then(|metadata| metadata.modified())
            .ok();
        if modified == loaded.modified {
            return;
        }
        match read_crl(&self.path) {
            Ok((modified, serials)) => {
                tracing::info!(crl = %self.path.display(), revoked = serials.len(), "revocation list reloaded");
                loaded.modified = modified;
                loaded.serials = serials;
            }
            Err(error) => {
                tracing::error!(crl = %self.path.display(), error = format!("{error:#}"), "cannot read the revocation list; keeping the last one");
            }
        }
    }
}

/// The revoked serials in the CRL at `path`, and the file's modification time.
pub fn read_crl(path: &Path) -> anyhow::Result<(Option<SystemTime>, HashSet<Vec<u8>>)> {
    let pem = match std::fs::read(path) {
        Ok(pem) => pem,
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => {
            return Ok((None, HashSet::new()))
        }
        Err(error) => return Err(error).with_context(|| format!("reading {}", path.display())),
    };
    let modified = std::fs::metadata(path)
        .and_then(|metadata| metadata.modified())
        .ok();
    let (_, block) = x509_parser::pem::parse_x509_pem(&pem)
        .map_err(|error| anyhow::anyhow!("{} is not a PEM CRL: {error}", path.display()))?;
    let (_, crl) = CertificateRevocationList::from_der(&block.contents)
        .map_err(|error| anyhow::anyhow!("{} is not a CRL: {error}", path.display()))?;
    let serials = crl
        .iter_revoked_certificates()
        .map(|revoked| revoked.raw_serial().to_vec())
        .collect();
    Ok((modified, serials))
}
