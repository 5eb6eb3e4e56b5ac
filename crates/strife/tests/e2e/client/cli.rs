//! The CLI tour, driven through the built `strife` binary against a real `strife dev`
//! network (real etcd, banks, gateway and TLS), asserting on `--json` output.

use std::process::Command;

use crate::support::dev::DevNetwork;
use crate::support::strife_bin;
use serde_json::Value;

#[test]
fn cli_tour_registers_opens_links_pays_and_reports() {
    let network = DevNetwork::start();
    assert_eq!(network.available_minor("alice"), 10_000);
    assert_eq!(network.available_minor("bob"), 5_000);

    // Admin registers carol and opens her an account (carol's certificate comes from setup).
    let setup = Command::new(strife_bin())
        .args([
            "setup",
            "--banks",
            "bank0,bank1",
            "--users",
            "carol",
            "--dir",
        ])
        .arg(network.dir())
        .output()
        .unwrap();
    assert!(setup.status.success());
    // The password policy: a password containing the name is refused, clearly.
    let (code, weak) = network.client_with_env(
        "admin",
        &["register", "carol"],
        &[("STRIFE_NEW_PASSWORD", "carol-secret-1")],
    );
    assert_eq!(
        (code, weak["code"].as_str()),
        (1, Some("InvalidArgument")),
        "{weak}"
    );
    assert!(
        weak["error"]
            .as_str()
            .unwrap()
            .contains("must not contain the user name"),
        "{weak}"
    );
    let (code, registered) = network.client_with_env(
        "admin",
        &["register", "carol"],
        &[("STRIFE_NEW_PASSWORD", "C-secret-number-1")],
    );
    assert_eq!(
        (code, registered["username"].as_str()),
        (0, Some("carol")),
        "{registered}"
    );
    let (code, opened) = network.client(
        "admin",
        &[
            "open-account",
            "--user",
            "carol",
            "--bank",
            "bank1",
            "--deposit",
            "20.00",
        ],
    );
    assert_eq!(code, 0, "{opened}");
    let carol_account = opened["account"].as_str().unwrap().to_owned();
    let carol = |args: &[&str]| {
        network.client_with_env("carol", args, &[("STRIFE_PASSWORD", "C-secret-number-1")])
    };
    let (code, linked) = carol(&[
        "link",
        "--bank",
        "bank1",
        "--account",
        &carol_account,
        "--holder-name",
        "Carol C",
    ]);
    assert_eq!(
        (code, linked["holder_name"].as_str()),
        (0, Some("Carol C")),
        "{linked}"
    );
    let (code, balance) = carol(&["balance"]);
    assert_eq!(code, 0);
    assert_eq!(balance["accounts"][0]["balance"]["amount_minor"], 2000);
    assert_eq!(balance["accounts"][0]["balance"]["display"], "20.00 USD");

    // A payment, then the same key again: one movement, the same payment.
    let (code, paid) = network.client(
        "alice",
        &["pay", "--to", "bob", "--amount", "12.50", "--key", "tour-1"],
    );
    assert_eq!(code, 0, "{paid}");
    assert_eq!(paid["payment"]["status"], "COMMITTED");
    let payment_id = paid["payment"]["payment_id"].as_str().unwrap().to_owned();
    let (code, again) = network.client(
        "alice",
        &["pay", "--to", "bob", "--amount", "12.50", "--key", "tour-1"],
    );
    assert_eq!(code, 0, "{again}");
    assert_eq!(network.available_minor("alice"), 8_750);
    assert_eq!(network.available_minor("bob"), 6_250);

    let (code, history) = network.client("bob", &["history"]);
    assert_eq!(code, 0);
    assert_eq!(history["payments"][0]["payment_id"], payment_id.as_str());
    assert_eq!(history["payments"][0]["amount"]["display"], "12.50 USD");
    let (code, shown) = network.client("alice", &["payment", &payment_id]);
    assert_eq!((code, shown["payment"]["to"].as_str()), (0, Some("bob")));

    // Refused by the bank: reported, final, nothing moved.
    let (code, refused) = network.client("alice", &["pay", "--to", "bob", "--amount", "1000"]);
    assert_eq!(code, 1);
    assert_eq!(refused["reason_code"], "insufficient_funds");
    assert_eq!(network.available_minor("alice"), 8_750);

    // Others' money is out of reach.
    let (code, denied) = network.client("alice", &["balance", "--of", "bob"]);
    assert_eq!(
        (code, denied["code"].as_str()),
        (1, Some("PermissionDenied"))
    );
    let (code, denied) = network.client("alice", &["register", "mallory"]);
    assert_eq!(code, 1, "{denied}");

    let (code, outbox) = network.client("alice", &["outbox"]);
    assert_eq!(code, 0);
    let states: Vec<&str> = outbox["entries"]
        .as_array()
        .unwrap()
        .iter()
        .map(|entry| entry["state"].as_str().unwrap())
        .collect();
    assert_eq!(states, vec!["declined", "succeeded"]);

    // The whole network reconciles.
    let audit = Command::new(strife_bin())
        .args([
            "audit",
            "--json",
            "--etcd",
            network.ready["etcd"].as_str().unwrap(),
            "--dir",
        ])
        .arg(network.dir())
        .output()
        .unwrap();
    let report: Value = serde_json::from_slice(&audit.stdout).unwrap();
    assert!(audit.status.success(), "{report}");
    assert_eq!(report["violations"].as_array().unwrap().len(), 0);
    assert_eq!(report["payments_committed"], 1);
    assert_eq!(report["payments_aborted"], 1);
}

#[test]
fn bad_input_at_the_cli_is_refused_before_anything_is_queued_or_sent() {
    let network = DevNetwork::start();
    let bad_amounts = ["-5", "1.234", "abc", "99999999999999999999", "0", ""];
    for amount in bad_amounts {
        let (code, refused) = network.client("alice", &["pay", "--to", "bob", "--amount", amount]);
        assert_eq!(code, 2, "--amount {amount:?}: {refused}");
        assert!(
            refused["error"].as_str().unwrap().contains("amount"),
            "{refused}"
        );
    }
    let (code, _) = network.client(
        "alice",
        &["pay", "--to", "bob", "--amount", "1", "--currency", "XXX"],
    );
    assert_eq!(code, 2);
    let (code, _) = network.client("alice", &["pay", "--to", "../bob", "--amount", "1"]);
    assert_eq!(code, 2);
    assert_eq!(network.outbox_len("alice"), 0, "nothing queued");

    let (code, unknown_user) = network.client("alice", &["pay", "--to", "nobody", "--amount", "1"]);
    assert_eq!((code, unknown_user["code"].as_str()), (1, Some("NotFound")));
    let (code, unknown_bank) = network.client(
        "alice",
        &[
            "pay",
            "--to",
            "bob",
            "--amount",
            "1",
            "--from-bank",
            "bank9",
        ],
    );
    assert_eq!((code, unknown_bank["code"].as_str()), (1, Some("NotFound")));
    let (_, outbox) = network.client("alice", &["outbox"]);
    assert!(
        outbox["entries"]
            .as_array()
            .unwrap()
            .iter()
            .all(|entry| entry["state"] == "declined"),
        "declined, not queued: {outbox}"
    );
    assert_eq!(network.available_minor("alice"), 10_000);
    assert_eq!(network.available_minor("bob"), 5_000);
}

/// After `strife dev`, nothing under the data dir is open to other local users: every
/// directory is 0700, and keys, databases (and their WAL), passwords and logs are 0600.
#[test]
fn strife_dev_leaves_only_private_directories_and_secrets() {
    use std::os::unix::fs::PermissionsExt;

    let network = DevNetwork::start();
    let mut checked_secrets = 0;
    let mut pending = vec![network.dir.path().to_path_buf()];
    while let Some(dir) = pending.pop() {
        for entry in std::fs::read_dir(&dir).unwrap() {
            let path = entry.unwrap().path();
            let metadata = std::fs::symlink_metadata(&path).unwrap();
            let mode = metadata.permissions().mode() & 0o777;
            let name = path.file_name().unwrap().to_string_lossy().into_owned();
            // The harness's own capture of the process output, not a file strife wrote.
            if dir == network.dir.path() && name == "dev.log" {
                continue;
            }
            if metadata.is_dir() {
                assert_eq!(mode & 0o077, 0, "{} is {mode:o}", path.display());
                pending.push(path);
                continue;
            }
            let secret = name.ends_with(".key")
                || name.contains(".db")
                || name.ends_with(".log")
                || name == "admin-password"
                || name == "dev-passwords.json";
            if secret {
                assert_eq!(mode & 0o077, 0, "{} is {mode:o}", path.display());
                checked_secrets += 1;
            }
            assert_eq!(mode & 0o022, 0, "{} is writable by others", path.display());
        }
    }
    assert!(
        checked_secrets >= 10,
        "only {checked_secrets} secrets found"
    );
}
