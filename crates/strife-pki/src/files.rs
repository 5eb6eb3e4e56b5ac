//! Writing setup's files: private material with mode 0600, written to a temporary file and
//! renamed so a crash never leaves half a key behind.

use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;

use anyhow::Context;
use rand::distr::{Alphanumeric, SampleString};
use strife_common::layout::KeyPairPaths;

const ADMIN_PASSWORD_LEN: usize = 24;

pub(crate) fn write_pair(
    paths: &KeyPairPaths,
    certificate_pem: &str,
    key_pem: &str,
) -> anyhow::Result<()> {
    write_private(&paths.key, key_pem.as_bytes())?;
    write_public(&paths.cert, certificate_pem.as_bytes())
}

pub(crate) fn write_private(path: &Path, contents: &[u8]) -> anyhow::Result<()> {
    write_atomically(path, contents, 0o600)
}

pub(crate) fn write_public(path: &Path, contents: &[u8]) -> anyhow::Result<()> {
    write_atomically(path, contents, 0o644)
}

pub(crate) fn random_password() -> String {
    Alphanumeric.sample_string(&mut rand::rng(), ADMIN_PASSWORD_LEN)
}

fn write_atomically(path: &Path, contents: &[u8], mode: u32) -> anyhow::Result<()> {
    let parent = path
        .parent()
        .with_context(|| format!("{} has no parent directory", path.display()))?;
    // Key directories are private (0700), like every state dir.
    strife_common::storage::state_dir::create_private_dir(parent)?;
    let temporary = path.with_extension("tmp");
    let _ = std::fs::remove_file(&temporary);
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(mode)
        .open(&temporary)
        .with_context(|| format!("creating {}", temporary.display()))?;
    file.write_all(contents)?;
    file.sync_all()?;
    strife_common::storage::state_dir::durable_rename(&temporary, path)
}
