//! A process's own state directory: created private (0700), and locked for the process's
//! whole life so a second bank with the same id, or a second gateway, on the same data dir is
//! refused before it can touch anything. Without the lock a second process would open the
//! same database, run recovery (aborting the first one's live payments), take over its etcd
//! key, and delete that key on exit while the first keeps running.

use std::fs::File;
use std::io::{Read, Seek, SeekFrom, Write};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use anyhow::Context;

/// Creates `path` and any missing parents with mode 0700, and tightens `path` itself to 0700
/// if it already exists: state directories hold keys and money, nobody else's business.
/// Renames `from` to `to` and fsyncs the parent directory, so the rename itself survives a
/// crash (a synced file under a name the directory never recorded is lost with it).
pub fn durable_rename(from: &Path, to: &Path) -> anyhow::Result<()> {
    std::fs::rename(from, to)
        .with_context(|| format!("renaming {} to {}", from.display(), to.display()))?;
    let parent = to
        .parent()
        .with_context(|| format!("{} has no parent directory", to.display()))?;
    std::fs::File::open(parent)
        .and_then(|directory| directory.sync_all())
        .with_context(|| format!("syncing {}", parent.display()))
}

pub fn create_private_dir(path: &Path) -> anyhow::Result<()> {
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(path)
        .with_context(|| format!("creating {}", path.display()))?;
    let mode = std::fs::metadata(path)
        .with_context(|| format!("reading {}", path.display()))?
        .permissions()
        .mode();
    if mode & 0o077 != 0 {
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o700))
            .with_context(|| format!("making {} private (0700)", path.display()))?;
    }
    Ok(())
}

/// An exclusive advisory lock (`flock`) on a `LOCK` file, held until dropped — in practice
/// until the process exits, since the kernel drops it with the last descriptor, also on
/// SIGKILL (so a crashed process never leaves a stale lock behind).
#[derive(Debug)]
pub struct DirLock {
    path: PathBuf,
    _file: File,
}

impl DirLock {
    /// Takes the lock at `path` (creating its directory 0700) and writes our pid into it.
    /// `what` names the process for the refusal, e.g. "bank bank0" or "the gateway".
    pub fn acquire(path: &Path, what: &str) -> anyhow::Result<DirLock> {
        if let Some(parent) = path.parent() {
            create_private_dir(parent)?;
        }
        let mut file = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .mode(0o600)
            .open(path)
            .with_context(|| format!("opening lock file {}", path.display()))?;
        match file.try_lock() {
            Ok(()) => {}
            Err(std::fs::TryLockError::WouldBlock) => {
                let mut holder = String::new();
                let _ = file.read_to_string(&mut holder);
                let holder = holder.trim();
                let holder = if holder.is_empty() {
                    "another process".to_owned()
                } else {
                    format!("pid {holder}")
                };
                anyhow::bail!(
                    "{what} is already running on this data dir: {} is locked by {holder}. \
                     Stop that process first, or give this one its own --dir",
                    path.display()
                );
            }
            Err(std::fs::TryLockError::Error(error)) => {
                return Err(error).with_context(|| format!("locking {}", path.display()));
            }
        }
        // Only the holder writes the pid, so a refused starter never clobbers it.
        file.set_len(0)
            .and_then(|()| file.seek(SeekFrom::Start(0)))
            .and_then(|_| writeln!(file, "{}", std::process::id()))
            .and_then(|()| file.sync_data())
            .with_context(|| format!("writing our pid into {}", path.display()))?;
        Ok(DirLock {
            path: path.to_owned(),
            _file: file,
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_durable_rename_moves_the_file_and_names_what_failed() {
        let dir = tempfile::tempdir().unwrap();
        let from = dir.path().join("a.tmp");
        let to = dir.path().join("a");
        std::fs::write(&from, b"x").unwrap();
        durable_rename(&from, &to).unwrap();
        assert_eq!(std::fs::read(&to).unwrap(), b"x");
        assert!(!from.exists());
        let error = durable_rename(&from, &to).unwrap_err();
        assert!(format!("{error:#}").contains("a.tmp"), "{error:#}");
    }

    #[test]
    fn a_second_lock_is_refused_naming_the_holder() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("state").join("LOCK");
        let first = DirLock::acquire(&path, "bank b").unwrap();
        let refused = DirLock::acquire(&path, "bank b").unwrap_err().to_string();
        assert!(refused.contains(&path.display().to_string()), "{refused}");
        assert!(
            refused.contains(&format!("pid {}", std::process::id())),
            "{refused}"
        );
        drop(first);
        DirLock::acquire(&path, "bank b").unwrap();
        let mode = std::fs::metadata(path.parent().unwrap())
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o700);
    }
}
