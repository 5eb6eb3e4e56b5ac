//! A whole `strife dev` network (real etcd, banks, gateway) in a temporary directory, and a
//! way to run the `strife client` binary against it.

use std::path::PathBuf;
use std::process::Command;

use serde_json::Value;

use super::{spawn_with_ready_line, strife_bin, Process};

/// A `strife dev` network in a temporary directory.
pub struct DevNetwork {
    _process: Process,
    pub dir: tempfile::TempDir,
    pub gateway: String,
    pub ready: Value,
}

impl DevNetwork {
    pub fn start() -> Self {
        Self::start_with(&[])
    }

    /// Starts `strife dev` with `extra` flags (e.g. `--metrics`).
    pub fn start_with(extra: &[&str]) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let mut command = Command::new(strife_bin());
        command
            .args([
                "dev",
                "--json",
                "--gateway-listen",
                "127.0.0.1:0",
                "--etcd-port",
                "0",
                "--dir",
            ])
            .arg(dir.path())
            .args(extra);
        let (process, line) = spawn_with_ready_line(command, &dir.path().join("dev.log"));
        let ready: Value =
            serde_json::from_str(&line).unwrap_or_else(|_| panic!("dev ready line: {line}"));
        assert_eq!(ready["event"], "ready");
        DevNetwork {
            _process: process,
            gateway: ready["gateway"].as_str().unwrap().to_owned(),
            dir,
            ready,
        }
    }

    pub fn password(&self, user: &str) -> String {
        if user == "admin" {
            return std::fs::read_to_string(self.dir.path().join("admin-password"))
                .unwrap()
                .trim()
                .to_owned();
        }
        self.ready["passwords"][user]
            .as_str()
            .map(str::to_owned)
            .unwrap_or_else(|| "no-such-password".into())
    }

    /// Runs `strife client --json …` as `user`; returns the exit status and the JSON printed.
    pub fn client(&self, user: &str, args: &[&str]) -> (i32, Value) {
        self.client_with_env(user, args, &[])
    }

    pub fn client_with_env(&self, user: &str, args: &[&str], env: &[(&str, &str)]) -> (i32, Value) {
        let output = Command::new(strife_bin())
            .args([
                "client",
                "--json",
                "--gateway",
                &self.gateway,
                "--user",
                user,
                "--dir",
            ])
            .arg(self.dir.path())
            .args(args)
            .env("STRIFE_PASSWORD", self.password(user))
            .envs(env.iter().copied())
            .output()
            .unwrap();
        let stdout = String::from_utf8_lossy(&output.stdout);
        let document = stdout
            .lines()
            .last()
            .and_then(|line| serde_json::from_str(line).ok())
            .unwrap_or(Value::Null);
        (output.status.code().unwrap_or(-1), document)
    }

    pub fn available_minor(&self, user: &str) -> i64 {
        let (code, balance) = self.client(user, &["balance"]);
        assert_eq!(code, 0, "{balance}");
        balance["accounts"][0]["available"]["amount_minor"]
            .as_i64()
            .unwrap()
    }

    pub fn outbox_len(&self, user: &str) -> usize {
        let (_, outbox) = self.client(user, &["outbox"]);
        outbox["entries"].as_array().map(Vec::len).unwrap_or(0)
    }

    pub fn dir(&self) -> PathBuf {
        self.dir.path().to_owned()
    }
}
