//! Config files (`--config`): a gateway takes its settings from a TOML file, a flag and a
//! `STRIFE_GATEWAY_*` environment variable each override the file, and a mistake in the
//! file stops the process with the file and key named. `strife setup` writes the examples. A
//! file others may write, or another user owns, is refused before it is read.

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use serde_json::Value;

use crate::support::{
    free_port, run_expecting_exit, spawn_with_ready_line, strife_bin, Etcd, Network,
};

/// Starts `strife gateway --json --config <file>` plus `args` and `env`; returns the address
/// of its ready line and its log once it has stopped again.
fn gateway_with(
    network: &Network,
    file: &Path,
    args: &[&str],
    env: &[(&str, &str)],
    name: &str,
) -> (String, String) {
    let mut command = Command::new(strife_bin());
    command
        .args(["gateway", "--json", "--config"])
        .arg(file)
        .args(args)
        .envs(env.iter().copied());
    let log = network.path().join(format!("{name}.log"));
    let (mut process, line) = spawn_with_ready_line(command, &log);
    let ready: Value = serde_json::from_str(&line).unwrap();
    assert!(
        process.terminate(crate::support::GATEWAY_EXIT_WAIT),
        "gateway did not stop"
    );
    (
        ready["address"].as_str().unwrap().to_owned(),
        process.log_text(),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn config_file_sets_gateway_settings_and_flags_and_environment_override_it() {
    let network = Network::setup(&["bank0"], &[]);
    let etcd = Etcd::start(&network).await;

    // setup wrote commented examples listing every key with its default.
    let example = std::fs::read_to_string(network.path().join("examples/gateway.toml")).unwrap();
    for line in [
        "# prepare-timeout = \"2s\"",
        "# listen = \"127.0.0.1:50050\"",
        "# max-connections = ",
        "# idle-timeout = \"120s\"",
    ] {
        assert!(example.contains(line), "{line} missing from:\n{example}");
    }
    let bank_example = std::fs::read_to_string(network.path().join("examples/bank.toml")).unwrap();
    assert!(
        bank_example.contains("# resolve-interval-ms = 1000"),
        "{bank_example}"
    );

    let file_port = free_port();
    let file = network.path().join("gateway.toml");
    let settings = format!(
        "dir = {:?}\netcd = [{:?}]\nlisten = \"127.0.0.1:{file_port}\"\nprepare-timeout = \"750ms\"\nlease-ttl = 2\n",
        network.path().display().to_string(),
        etcd.endpoint
    );
    std::fs::write(&file, &settings).unwrap();

    // The file alone: its address is where the gateway listens, its timeout is in force.
    let (address, log) = gateway_with(&network, &file, &[], &[], "file");
    assert_eq!(address, format!("127.0.0.1:{file_port}"));
    assert!(log.contains("prepare_timeout=750ms"), "{log}");

    // A flag beats the file.
    let flag_port = free_port();
    let (address, log) = gateway_with(
        &network,
        &file,
        &["--listen", &format!("127.0.0.1:{flag_port}")],
        &[],
        "flag",
    );
    assert_eq!(address, format!("127.0.0.1:{flag_port}"));
    assert!(log.contains("prepare_timeout=750ms"), "{log}");

    // An environment variable beats the file too.
    let env_port = free_port();
    let env_listen = format!("127.0.0.1:{env_port}");
    let (address, log) = gateway_with(
        &network,
        &file,
        &[],
        &[
            ("STRIFE_GATEWAY_LISTEN", &env_listen),
            ("STRIFE_GATEWAY_PREPARE_TIMEOUT", "300ms"),
        ],
        "env",
    );
    assert_eq!(address, env_listen);
    assert!(log.contains("prepare_timeout=300ms"), "{log}");
}

#[test]
fn config_file_mistakes_stop_the_process_naming_file_and_key() {
    let network = Network::setup(&["bank0"], &[]);
    for (process, text, expected) in [
        (
            "gateway",
            "listen = \"127.0.0.1:0\"\ncolour = \"blue\"\n",
            vec!["`colour`", "known keys"],
        ),
        (
            "gateway",
            "lease_ttl = 3\n",
            vec!["`lease_ttl`", "`lease-ttl`"],
        ),
        (
            "gateway",
            "prepare-timeout = \"soon\"\n",
            vec!["`prepare-timeout`", "\"2s\""],
        ),
        (
            "gateway",
            "prepare-timeout = \"5m\"\n",
            vec!["`prepare-timeout`", "between 10ms and 5s"],
        ),
        (
            "bank",
            "id = \"bank0\"\ninitialize = true\n",
            vec!["`initialize`"],
        ),
        (
            "bank",
            "id = \"bank0\"\nlease-ttl = \"long\"\n",
            vec!["`lease-ttl`"],
        ),
    ] {
        let file = network.path().join(format!("{process}.toml"));
        std::fs::write(&file, text).unwrap();
        let mut command = Command::new(strife_bin());
        command
            .arg(process)
            .arg("--config")
            .arg(&file)
            .arg("--dir")
            .arg(network.path());
        let (code, stderr) = run_expecting_exit(command, Duration::from_secs(10));
        assert_eq!(code, Some(2), "{process} {text:?}: {stderr}");
        assert!(stderr.contains(&file.display().to_string()), "{stderr}");
        for part in expected {
            assert!(stderr.contains(part), "{part} not in {stderr}");
        }
    }
}

#[test]
fn config_file_others_may_write_stops_gateway_and_bank_naming_it() {
    use std::os::unix::fs::PermissionsExt;
    let network = Network::setup(&["bank0"], &[]);
    for (process, mode) in [("gateway", 0o666), ("bank", 0o620)] {
        let file = network.path().join(format!("{process}-open.toml"));
        std::fs::write(&file, "id = \"bank0\"\n").unwrap();
        std::fs::set_permissions(&file, std::fs::Permissions::from_mode(mode)).unwrap();
        let mut command = Command::new(strife_bin());
        command
            .arg(process)
            .args(["--listen", "127.0.0.1:0", "--config"])
            .arg(&file)
            .arg("--dir")
            .arg(network.path());
        let (code, stderr) = run_expecting_exit(command, Duration::from_secs(10));
        assert_eq!(code, Some(2), "{process}: {stderr}");
        assert!(stderr.contains(&file.display().to_string()), "{stderr}");
        assert!(stderr.contains("chmod go-w"), "{stderr}");
    }
    // Owned by another user (not root): refused too, naming the fix.
    let file = network.path().join("foreign.toml");
    std::fs::write(&file, "json = true\n").unwrap();
    std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o644)).unwrap();
    let owner = 1;
    std::os::unix::fs::chown(&file, Some(owner), None).unwrap();
    let mut command = Command::new(strife_bin());
    // (A free port, should it start after all: the test must not take the default one.)
    command
        .args(["gateway", "--listen", "127.0.0.1:0", "--config"])
        .arg(&file)
        .arg("--dir")
        .arg(network.path());
    let (code, stderr) = run_expecting_exit(command, Duration::from_secs(10));
    assert_eq!(code, Some(2), "{stderr}");
    assert!(
        stderr.contains(&file.display().to_string()) && stderr.contains("chown"),
        "{stderr}"
    );
}
