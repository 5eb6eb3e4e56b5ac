//! Disks that fill up, for the tests of full disks: a small tmpfs over a process's data
//! directory, and a file that takes every byte left on it.

use std::process::Command;

/// A tmpfs mounted over a directory for one test; unmounted (lazily, so processes still
/// holding files on it cannot block it) when dropped, also when the test fails.
pub struct Tmpfs {
    path: std::path::PathBuf,
}

impl Tmpfs {
    /// `None` (after a loud message) where mounting is not permitted.
    pub fn mount(path: &std::path::Path, size: &str) -> Option<Tmpfs> {
        std::fs::create_dir_all(path).unwrap();
        let status = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size},mode=0700")])
            .arg("tmpfs")
            .arg(path)
            .status();
        match status {
            Ok(status) if status.success() => Some(Tmpfs {
                path: path.to_owned(),
            }),
            other => {
                eprintln!(
                    "\n!!! SKIPPED: cannot mount a tmpfs at {} ({other:?}); the disk-full test \
                     needs root (or CAP_SYS_ADMIN) !!!\n",
                    path.display()
                );
                None
            }
        }
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(&self.path).status();
    }
}

/// Fills the filesystem holding `path` until it refuses another byte.
pub fn fill(path: &std::path::Path) {
    use std::io::Write;
    let mut file = std::fs::File::create(path).unwrap();
    for chunk in [64 * 1024, 4096, 512, 1] {
        let bytes = vec![0xEE_u8; chunk];
        while file.write_all(&bytes).is_ok() {}
    }
    let _ = file.sync_all();
}
