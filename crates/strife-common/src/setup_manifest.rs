//! `setup.json`: the record `strife setup` leaves of which banks and users it has made. Read
//! here by anyone who needs the network's names (the audit, `strife bench`, the etcd
//! lock-down, the tests), so reading it needs no certificate authority; only `strife-pki`
//! writes it, as part of setup.

use anyhow::Context;
use serde::{Deserialize, Serialize};

use crate::layout::Layout;

/// The banks and users setup has made, in the order they were first made.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct SetupManifest {
    pub banks: Vec<String>,
    pub users: Vec<String>,
}

impl SetupManifest {
    /// Reads `setup.json` under the data dir; an absent file is an empty manifest (nothing
    /// set up yet), an unreadable or malformed one an error naming the file.
    pub fn load(layout: &Layout) -> anyhow::Result<Self> {
        let path = layout.setup_manifest();
        match std::fs::read(&path) {
            Ok(bytes) => serde_json::from_slice(&bytes)
                .with_context(|| format!("{} is not valid JSON", path.display())),
            Err(error) if error.kind() == std::io::ErrorKind::NotFound => Ok(Self::default()),
            Err(error) => Err(error).with_context(|| format!("reading {}", path.display())),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_absent_manifest_is_empty_and_a_broken_one_is_named() {
        let dir = tempfile::tempdir().unwrap();
        let layout = Layout::new(dir.path());
        assert_eq!(
            SetupManifest::load(&layout).unwrap(),
            SetupManifest::default()
        );
        std::fs::write(
            layout.setup_manifest(),
            br#"{"banks": ["bank0", "bank1"], "users": ["alice"]}"#,
        )
        .unwrap();
        let manifest = SetupManifest::load(&layout).unwrap();
        assert_eq!(manifest.banks, ["bank0", "bank1"]);
        assert_eq!(manifest.users, ["alice"]);
        std::fs::write(layout.setup_manifest(), b"{").unwrap();
        let error = format!("{:#}", SetupManifest::load(&layout).unwrap_err());
        assert!(error.contains("setup.json is not valid JSON"), "{error}");
    }
}
