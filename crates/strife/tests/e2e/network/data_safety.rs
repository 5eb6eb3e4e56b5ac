//! Operator mistakes and sick disks must never misdirect money (docs/RELIABILITY.md,
//! "Operator mistakes and sick disks"): real processes on real data dirs, each mistake made
//! for real — a second process on the same dir, an emptied database, a foreign key file.

use std::process::Command;
use std::time::Duration;

use crate::support::disk::{fill, Tmpfs};
use crate::support::network::{bank_balances, pay_request, ManualNetwork};
use crate::support::{run_expecting_exit, strife_bin, wait_until};
use strife_common::etcd::discovery::ServiceEntry;
use strife_common::etcd::keys::bank_key;

/// How long a refused start may take to exit.
const REFUSAL_LIMIT: Duration = Duration::from_secs(15);

fn bank_command(network: &ManualNetwork, bank_id: &str) -> Command {
    let mut command = Command::new(strife_bin());
    command
        .args(["bank", "--json", "--lease-ttl", "2", "--id", bank_id])
        .args(["--etcd", &network.etcd.endpoint, "--dir"])
        .arg(network.network.path());
    command
}

fn gateway_command(network: &ManualNetwork) -> Command {
    let mut command = Command::new(strife_bin());
    command
        .args([
            "gateway",
            "--json",
            "--lease-ttl",
            "2",
            "--listen",
            "127.0.0.1:0",
        ])
        .args(["--etcd", &network.etcd.endpoint, "--dir"])
        .arg(network.network.path());
    command
}

async fn registered(network: &ManualNetwork, key: &str) -> Option<ServiceEntry> {
    let value = network.etcd.get(key).await?;
    serde_json::from_slice(&value).ok()
}

fn pays(network: &ManualNetwork, key: &str) -> bool {
    let (code, paid) = network.client(
        "alice",
        &["pay", "--to", "bob", "--amount", "1.00", "--key", key],
    );
    code == 0 && paid["payment"]["status"] == "COMMITTED"
}

#[tokio::test]
async fn a_second_bank_on_the_same_dir_is_refused_and_the_first_keeps_working() {
    let network = ManualNetwork::alice_and_bob().await;
    let first_pid = network.banks[0].process.child.id();
    let lock = network.network.layout().bank_lock("bank0");

    let (code, stderr) = run_expecting_exit(bank_command(&network, "bank0"), REFUSAL_LIMIT);
    assert!(
        code.is_some_and(|code| code != 0),
        "second bank exit {code:?}: {stderr}"
    );
    assert!(
        stderr.contains(&lock.display().to_string()),
        "names the lock file: {stderr}"
    );
    assert!(
        stderr.contains(&format!("pid {first_pid}")),
        "names the holder: {stderr}"
    );

    let address = network.banks[0].address.to_string();
    let entry = registered(&network, &bank_key("bank0")).await;
    assert_eq!(entry.map(|entry| entry.address), Some(address.clone()));
    assert!(pays(&network, "after-second-bank"), "payments still work");

    // Even if something else overwrites or deletes the key, the running bank puts it back.
    // As etcd's root: under the lock-down, no other process may touch bank0's key.
    let mut etcd = network.etcd.root_client().await;
    etcd.put(
        bank_key("bank0"),
        r#"{"id":"bank0","address":"127.0.0.1:9"}"#,
        None,
    )
    .await
    .unwrap();
    let restored = wait_until(Duration::from_secs(10), || async {
        registered(&network, &bank_key("bank0"))
            .await
            .is_some_and(|entry| entry.address == address)
    })
    .await;
    assert!(restored, "an overwritten registration was put back");
    etcd.delete(bank_key("bank0"), None).await.unwrap();
    let restored = wait_until(Duration::from_secs(10), || async {
        registered(&network, &bank_key("bank0"))
            .await
            .is_some_and(|entry| entry.address == address)
    })
    .await;
    assert!(restored, "a deleted registration was put back");
    assert!(
        network.banks[0]
            .process
            .log_text()
            .contains("putting it back"),
        "the takeover was logged"
    );
}

#[tokio::test]
async fn a_second_gateway_on_the_same_dir_is_refused_and_the_first_keeps_working() {
    let network = ManualNetwork::alice_and_bob().await;
    let first_pid = network.gateway.as_ref().unwrap().child.id();
    let lock = network.network.layout().gateway_lock();

    let (code, stderr) = run_expecting_exit(gateway_command(&network), REFUSAL_LIMIT);
    assert!(
        code.is_some_and(|code| code != 0),
        "second gateway exit {code:?}: {stderr}"
    );
    assert!(
        stderr.contains(&lock.display().to_string()),
        "names the lock file: {stderr}"
    );
    assert!(
        stderr.contains(&format!("pid {first_pid}")),
        "names the holder: {stderr}"
    );

    let replicas = network.etcd.gateway_entries().await;
    assert_eq!(
        replicas
            .into_iter()
            .map(|entry| entry.address)
            .collect::<Vec<_>>(),
        vec![network.gateway_address.clone()],
        "only the first gateway is registered"
    );
    assert!(
        pays(&network, "after-second-gateway"),
        "payments still work"
    );
    assert_eq!(network.available_minor("alice"), 9_900);
}

/// Stops bank `index` (SIGKILL: the WAL stays as a crash leaves it).
fn kill_bank(network: &mut ManualNetwork, index: usize) {
    network.banks[index].process.kill();
}

fn assert_refused(command: Command, expected: &[&str]) -> String {
    let (code, stderr) = run_expecting_exit(command, REFUSAL_LIMIT);
    assert!(
        code.is_some_and(|code| code != 0),
        "start must be refused (exit {code:?}): {stderr}"
    );
    for part in expected {
        assert!(stderr.contains(part), "{part:?} missing from: {stderr}");
    }
    eprintln!("refused as expected: {stderr}");
    stderr
}

#[tokio::test]
async fn an_emptied_or_missing_bank_database_is_refused_unless_initialize() {
    let mut network = ManualNetwork::alice_and_bob().await;
    kill_bank(&mut network, 0);
    let db = network.network.layout().bank_db("bank0");
    let shown = db.display().to_string();

    // Emptied in place (`: > bank.db`), its WAL left behind.
    std::fs::write(&db, b"").unwrap();
    assert_refused(
        bank_command(&network, "bank0"),
        &[
            "bank0's database",
            &shown,
            "is missing or empty but bank0 has run before",
            "restore it from backup",
            "--initialize",
        ],
    );
    // Gone altogether.
    for suffix in ["", "-wal", "-shm"] {
        let _ = std::fs::remove_file(format!("{shown}{suffix}"));
    }
    assert_refused(
        bank_command(&network, "bank0"),
        &[&shown, "is missing or empty but bank0 has run before"],
    );
    assert!(!db.exists(), "a refused start creates no database");
}

#[tokio::test]
async fn an_emptied_gateway_database_is_refused() {
    let mut network = ManualNetwork::alice_and_bob().await;
    network.stop_gateway();
    let db = network.network.layout().gateway_db();
    std::fs::write(&db, b"").unwrap();
    assert_refused(
        gateway_command(&network),
        &[
            &db.display().to_string(),
            "is missing or empty but the gateway has run before",
            "strife gateway --initialize",
        ],
    );
}

#[tokio::test]
async fn another_banks_database_is_refused_as_foreign() {
    let mut network = ManualNetwork::alice_and_bob().await;
    kill_bank(&mut network, 0);
    kill_bank(&mut network, 1);
    let layout = network.network.layout();
    for suffix in ["", "-wal", "-shm"] {
        let from = format!("{}{suffix}", layout.bank_db("bank1").display());
        let to = format!("{}{suffix}", layout.bank_db("bank0").display());
        let _ = std::fs::remove_file(&to);
        if std::path::Path::new(&from).exists() {
            std::fs::copy(&from, &to).unwrap();
        }
    }
    assert_refused(
        bank_command(&network, "bank0"),
        &[
            &layout.bank_db("bank0").display().to_string(),
            "belongs to bank:bank1",
            "foreign",
        ],
    );
}

#[tokio::test]
async fn a_reissued_account_number_never_credits_its_new_owner() {
    let mut network = ManualNetwork::start(&["bank0", "bank1"], &["alice", "carol"]).await;
    network.fund("alice", "bank0", "100.00").await;
    network.fund("carol", "bank1", "50.00").await;
    kill_bank(&mut network, 0);
    let layout = network.network.layout();
    for suffix in ["", "-wal", "-shm"] {
        let _ = std::fs::remove_file(format!("{}{suffix}", layout.bank_db("bank0").display()));
    }
    // The operator insists on a fresh bank0: its account numbers start again at 1.
    network.banks[0] = crate::support::BankStart::new(&network.network, "bank0")
        .etcd(&network.etcd.endpoint)
        .arg("--lease-ttl")
        .arg("2")
        .arg("--initialize")
        .start();
    let mut bank0 = network.bank(0);
    let reissued = bank0
        .open_account(strife_proto::v1::OpenAccountRequest {
            request_id: "dave-1".into(),
            owner: "dave".into(),
            holder_name: "Dave".into(),
            currency: "USD".into(),
            opening_deposit_minor: 0,
        })
        .await
        .unwrap()
        .into_inner();
    let (_, alice) = network.client("alice", &["balance"]);
    let alice_number = alice["accounts"][0]["account"].clone();
    assert_eq!(
        alice_number,
        reissued.account_number.as_str(),
        "dave got alice's old account number"
    );

    // Carol pays alice: the gateway names alice as the owner, bank0 knows dave — NO vote.
    let mut outcome = serde_json::Value::Null;
    let decided = wait_until(Duration::from_secs(20), || {
        let (code, paid) = network.client(
            "carol",
            &[
                "pay", "--to", "alice", "--amount", "5.00", "--key", "to-alice",
            ],
        );
        outcome = serde_json::json!({"code": code, "output": paid});
        // 75: the gateway has not seen the restarted bank yet; the same key is retried.
        async move { code != 75 }
    })
    .await;
    assert!(decided, "no final answer: {outcome}");
    assert_eq!(
        outcome["output"]["reason_code"], "account_owner_mismatch",
        "{outcome}"
    );
    let dave = bank0
        .get_balance(strife_proto::v1::GetBalanceRequest {
            account_number: reissued.account_number.clone(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        (dave.balance_minor, dave.available_minor),
        (0, 0),
        "dave got nothing"
    );
    assert_eq!(
        network.available_minor("carol"),
        5_000,
        "carol paid nothing"
    );
}

/// Overwrites `bytes.len()` bytes of `path` at `offset`.
fn overwrite(path: &std::path::Path, offset: u64, bytes: &[u8]) {
    use std::io::{Seek, SeekFrom, Write};
    let mut file = std::fs::OpenOptions::new().write(true).open(path).unwrap();
    file.seek(SeekFrom::Start(offset)).unwrap();
    file.write_all(bytes).unwrap();
    file.sync_all().unwrap();
}

#[tokio::test]
async fn a_corrupt_bank_database_is_refused_naming_the_file() {
    let mut network = ManualNetwork::alice_and_bob().await;
    kill_bank(&mut network, 0);
    let db = network.network.layout().bank_db("bank0");
    let shown = db.display().to_string();
    // Fold the WAL into the file, so the damage below hits pages SQLite will read.
    let (page_size, accounts_page) = {
        let connection = rusqlite::Connection::open(&db).unwrap();
        connection
            .query_row("PRAGMA wal_checkpoint(TRUNCATE)", [], |_| Ok(()))
            .unwrap();
        let page_size: u64 = connection
            .query_row("PRAGMA page_size", [], |row| row.get(0))
            .unwrap();
        let root: u64 = connection
            .query_row(
                "SELECT rootpage FROM sqlite_master WHERE name = 'accounts'",
                [],
                |row| row.get(0),
            )
            .unwrap();
        (page_size, root)
    };
    assert!(accounts_page > 1);
    // A page in the middle of the file: the accounts table's b-tree page, its header garbled.
    overwrite(&db, (accounts_page - 1) * page_size, &[0xA5; 64]);
    assert_refused(
        bank_command(&network, "bank0"),
        &[&shown, "restore it from backup"],
    );
    // The header itself: SQLite's "file is not a database", with the file named.
    overwrite(&db, 0, b"this is no sqlite");
    assert_refused(
        bank_command(&network, "bank0"),
        &[&shown, "file is not a database"],
    );
}

fn mode_of(path: &std::path::Path) -> u32 {
    use std::os::unix::fs::PermissionsExt;
    std::fs::metadata(path)
        .unwrap_or_else(|error| panic!("{}: {error}", path.display()))
        .permissions()
        .mode()
        & 0o777
}

#[tokio::test]
async fn a_private_key_others_can_read_is_refused_before_the_ready_line() {
    let network = crate::support::Network::setup(&["bank0"], &[]);
    let key = network.layout().bank_identity("bank0").key;
    std::fs::set_permissions(&key, std::os::unix::fs::PermissionsExt::from_mode(0o644)).unwrap();
    let mut command = Command::new(strife_bin());
    command
        .args([
            "bank",
            "--id",
            "bank0",
            "--etcd",
            "http://127.0.0.1:1",
            "--dir",
        ])
        .arg(network.path());
    let shown = key.display().to_string();
    assert_refused(command, &[&shown, "chmod 600"]);
    assert!(
        !network.layout().bank_db("bank0").exists(),
        "refused before the database was touched"
    );

    // A private but unparseable key is refused before the ready line too, naming the file.
    std::fs::set_permissions(&key, std::os::unix::fs::PermissionsExt::from_mode(0o600)).unwrap();
    std::fs::write(
        &key,
        b"-----BEGIN PRIVATE KEY-----\nbm90IGEga2V5\n-----END PRIVATE KEY-----\n",
    )
    .unwrap();
    let mut command = Command::new(strife_bin());
    command
        .args([
            "bank",
            "--id",
            "bank0",
            "--etcd",
            "http://127.0.0.1:1",
            "--dir",
        ])
        .arg(network.path());
    let (code, stdout_and_stderr) = {
        let output = command.output().unwrap();
        (
            output.status.code(),
            format!(
                "{}{}",
                String::from_utf8_lossy(&output.stdout),
                String::from_utf8_lossy(&output.stderr)
            ),
        )
    };
    assert_ne!(code, Some(0), "{stdout_and_stderr}");
    assert!(stdout_and_stderr.contains(&shown), "{stdout_and_stderr}");
    assert!(
        !stdout_and_stderr.contains("listening"),
        "no ready line: {stdout_and_stderr}"
    );
}

#[tokio::test]
async fn setup_and_a_bank_leave_private_dirs_and_files() {
    let network = crate::support::Network::setup(&["bank0"], &["alice"]);
    let layout = network.layout();
    let bank = crate::support::BankStart::new(&network, "bank0").start();
    for dir in [
        layout.root().to_owned(),
        layout.pki_dir(),
        layout.pki_dir().join("banks"),
        layout.pki_dir().join("users"),
        layout.bank_dir("bank0"),
        layout.state_dir(),
    ] {
        assert_eq!(mode_of(&dir), 0o700, "{}", dir.display());
    }
    let db = layout.bank_db("bank0");
    let wal = std::path::PathBuf::from(format!("{}-wal", db.display()));
    for file in [
        db,
        wal,
        layout.bank_lock("bank0"),
        layout.bank_marker("bank0"),
        layout.bank_identity("bank0").key,
        layout.user_identity("alice").key,
        layout.ca().key,
        layout.admin_password(),
    ] {
        assert_eq!(mode_of(&file), 0o600, "{}", file.display());
    }
    drop(bank);
}

#[tokio::test]
async fn a_full_gateway_disk_answers_unavailable_and_recovers_when_space_is_freed() {
    let mut network = ManualNetwork::alice_and_bob().await;
    // Move the gateway's state dir onto a small tmpfs (the same database, so it opens as
    // itself; its creation marker stays in state/).
    network.stop_gateway();
    let gateway_dir = network.network.layout().gateway_dir();
    let saved = network.network.path().join("gateway-saved");
    std::fs::rename(&gateway_dir, &saved).unwrap();
    let Some(_tmpfs) = Tmpfs::mount(&gateway_dir, "4m") else {
        return;
    };
    for entry in std::fs::read_dir(&saved).unwrap() {
        let entry = entry.unwrap();
        std::fs::copy(entry.path(), gateway_dir.join(entry.file_name())).unwrap();
    }
    network.start_gateway(&[]);
    let mut alice = network.gateway_client("alice");
    assert!(
        alice.pay(pay_request("before-full")).await.is_ok(),
        "pays before the disk fills"
    );

    let filler = gateway_dir.join("filler");
    fill(&filler);
    // Pay until a write needs space the disk no longer has (the WAL and the database only
    // grow now and then, so the first few payments may still fit).
    let mut refused = None;
    for attempt in 0..400 {
        let key = format!("full-{attempt}");
        let before = bank_balances(&network).await;
        match alice.pay(pay_request(&key)).await {
            Ok(_) => continue,
            Err(status) => {
                refused = Some((key, status, before));
                break;
            }
        }
    }
    let (key, status, before) = refused.expect("some payment must hit the full disk");
    eprintln!("{key} refused on the full disk: {status:?}");
    assert_eq!(
        status.code(),
        tonic::Code::Unavailable,
        "storage trouble is transient: {status:?}; log:\n{}",
        network.gateway_log()
    );
    assert!(
        status
            .message()
            .contains("storage write failed at gateway.db"),
        "{status:?}"
    );
    assert_eq!(bank_balances(&network).await, before, "no money moved");

    // Space again: the same key goes through (after the retrier aborts a payment the full
    // disk left PENDING, if any, a retry runs a new attempt).
    std::fs::remove_file(&filler).unwrap();
    let last = std::cell::RefCell::new(String::new());
    let paid = wait_until(Duration::from_secs(30), || {
        let mut alice = alice.clone();
        let key = key.clone();
        let last = &last;
        async move {
            let outcome = alice.pay(pay_request(&key)).await;
            let done = outcome.as_ref().is_ok_and(|reply| {
                reply.get_ref().status == strife_proto::v1::PaymentStatus::Committed as i32
            });
            *last.borrow_mut() = format!("{outcome:?}");
            done
        }
    })
    .await;
    assert!(paid, "the same key pays once space is back: {last:?}");
    assert!(alice.pay(pay_request("after-full")).await.is_ok());
    let log = network.gateway_log();
    for line in log.lines().filter(|line| {
        line.contains("checkpoint") || line.contains("storage") || line.contains("rolled back")
    }) {
        eprintln!("gateway: {line}");
    }
    if log.contains("WAL checkpoint failed") {
        let recovered = wait_until(Duration::from_secs(10), || async {
            network.gateway_log().contains("WAL checkpoints work again")
        })
        .await;
        assert!(recovered, "checkpoints resume after the disk has space");
    }

    let audit = Command::new(strife_bin())
        .args(["audit", "--json", "--etcd", &network.etcd.endpoint, "--dir"])
        .arg(network.network.path())
        .output()
        .unwrap();
    let report = String::from_utf8_lossy(&audit.stdout);
    assert!(audit.status.success(), "audit must be clean: {report}");
}
