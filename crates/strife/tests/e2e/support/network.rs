//! A network whose processes a test starts and stops one by one (unlike `strife dev`): real
//! etcd, real banks, a real gateway that can be stopped, SIGKILLed and restarted on the same
//! port and data dir, and the `strife client` binary run against it.

use std::process::Command;
use std::time::Duration;

use serde_json::Value;
use strife_common::net::tls::ExpectedPeer;
use strife_proto::v1 as pb;

use super::{
    spawn_with_ready_line, strife_bin, wait_until, BankProcess, BankStart, Etcd, Network, Process,
};

/// Passwords the tests register users with. They follow the password policy, so they must
/// not contain the user name: the name is rot13'd (digits rotated by 5) into the password.
pub fn password_of(user: &str) -> String {
    let rotated: String = user
        .chars()
        .map(|character| match character {
            'a'..='z' => char::from(b'a' + (character as u8 - b'a' + 13) % 26),
            '0'..='9' => char::from(b'0' + (character as u8 - b'0' + 5) % 10),
            other => other,
        })
        .collect();
    let password = format!("Test:{rotated}:battery-staple");
    assert_eq!(
        strife_common::password::check_password(user, &password),
        Ok(()),
        "test password for {user}"
    );
    password
}

pub struct ManualNetwork {
    pub network: Network,
    pub etcd: Etcd,
    pub banks: Vec<BankProcess>,
    pub gateway: Option<Process>,
    /// Fixed after the first start, so clients keep one address across restarts.
    pub gateway_address: String,
    /// Extra flags for every gateway start (e.g. lockout settings).
    pub gateway_args: Vec<String>,
    /// The replica id the running gateway announced in its ready line.
    pub gateway_replica_id: String,
    /// The latest gateway start's JSON ready line (e.g. `metrics_address`).
    pub gateway_ready: Value,
    /// Extra environment for every gateway start (e.g. `STRIFE_GATEWAY_STORE`).
    pub gateway_env: Vec<(String, String)>,
}

/// How to start a network: extra flags per bank and for the gateway.
#[derive(Default)]
pub struct NetworkOptions {
    pub bank_args: Vec<(String, Vec<String>)>,
    pub gateway_args: Vec<String>,
    pub gateway_env: Vec<(String, String)>,
    /// Start etcd and the banks only: the test starts its gateways itself (replicas, see
    /// `support::replicas`).
    pub without_gateway: bool,
}

impl ManualNetwork {
    /// etcd, the banks and a gateway; users get certificates (and, with `fund`, an account
    /// with 100.00 USD each at the banks in turn).
    /// The usual two-bank network: alice (100.00 at bank0) and bob (0 at bank1).
    pub async fn alice_and_bob() -> Self {
        let network = ManualNetwork::start(&["bank0", "bank1"], &["alice", "bob"]).await;
        network.fund("alice", "bank0", "100.00").await;
        network.fund("bob", "bank1", "0").await;
        network
    }

    pub async fn start(banks: &[&str], users: &[&str]) -> Self {
        Self::start_with(banks, users, NetworkOptions::default()).await
    }

    pub async fn start_with(banks: &[&str], users: &[&str], options: NetworkOptions) -> Self {
        let network = Network::setup(banks, users);
        let etcd = Etcd::start(&network).await;
        let started = banks
            .iter()
            .map(|bank| {
                let mut start = BankStart::new(&network, bank)
                    .etcd(&etcd.endpoint)
                    .arg("--lease-ttl")
                    .arg("2");
                for (name, args) in &options.bank_args {
                    if name == bank {
                        for arg in args {
                            start = start.arg(arg);
                        }
                    }
                }
                start.start()
            })
            .collect();
        let mut manual = ManualNetwork {
            network,
            etcd,
            banks: started,
            gateway: None,
            gateway_address: "127.0.0.1:0".into(),
            gateway_args: options.gateway_args,
            gateway_replica_id: String::new(),
            gateway_ready: Value::Null,
            gateway_env: options.gateway_env,
        };
        if !options.without_gateway {
            manual.start_gateway(&[]);
        }
        manual
    }

    /// Starts the gateway (on the same address as before, if it ran before).
    pub fn start_gateway(&mut self, env: &[(&str, &str)]) {
        let log = self
            .network
            .path()
            .join(format!("gateway-{}.log", std::process::id()));
        let (process, ready) = self.spawn_gateway(&self.gateway_address, &[], env, &log);
        self.gateway_address = ready["address"].as_str().unwrap().to_owned();
        self.gateway_replica_id = ready["replica_id"].as_str().unwrap_or_default().to_owned();
        self.gateway_ready = ready;
        self.gateway = Some(process);
    }

    /// Spawns one `strife gateway` on this network listening on `listen`, with the network's
    /// gateway flags and environment plus `args` and `env`, logging to `log`; waits for its
    /// JSON ready line.
    pub fn spawn_gateway(
        &self,
        listen: &str,
        args: &[String],
        env: &[(&str, &str)],
        log: &std::path::Path,
    ) -> (Process, Value) {
        let mut command = Command::new(strife_bin());
        command.args(["gateway", "--json"]);
        // Short timeouts for tests, unless the test sets its own.
        let given = |flag: &str| self.gateway_args.iter().chain(args).any(|arg| arg == flag);
        if !given("--prepare-timeout") {
            command.args(["--prepare-timeout", "1s"]);
        }
        if !given("--lease-ttl") {
            command.args(["--lease-ttl", "2"]);
        }
        command
            .args(["--listen", listen, "--etcd", &self.etcd.endpoint, "--dir"])
            .arg(self.network.path())
            .args(&self.gateway_args)
            .args(args)
            .envs(self.gateway_env.iter().map(|(name, value)| (name, value)))
            .envs(env.iter().copied());
        let (process, line) = spawn_with_ready_line(command, log);
        let ready: Value = serde_json::from_str(&line).unwrap();
        (process, ready)
    }

    /// SIGTERM the gateway and wait for it to exit.
    pub fn stop_gateway(&mut self) {
        if let Some(mut gateway) = self.gateway.take() {
            assert!(
                gateway.terminate(crate::support::GATEWAY_EXIT_WAIT),
                "gateway did not stop"
            );
        }
    }

    pub fn gateway_log(&self) -> String {
        self.gateway
            .as_ref()
            .map(Process::log_text)
            .unwrap_or_default()
    }

    /// Runs `strife client --json …` as `user`; returns the exit status and the JSON printed.
    pub fn client(&self, user: &str, args: &[&str]) -> (i32, Value) {
        let password = if user == "admin" {
            strife_pki::read_admin_password(&self.network.layout()).unwrap()
        } else {
            password_of(user)
        };
        let output = Command::new(strife_bin())
            .args([
                "client",
                "--json",
                "--gateway",
                &self.gateway_address,
                "--user",
                user,
                "--dir",
            ])
            .arg(self.network.path())
            .args(args)
            .env("STRIFE_PASSWORD", password)
            .env(
                "STRIFE_NEW_PASSWORD",
                args.get(1)
                    .map(|name| password_of(name))
                    .unwrap_or_default(),
            )
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

    /// Registers `user` and opens a USD account at `bank` with `deposit` (e.g. "100.00"),
    /// retrying while the gateway has not yet seen the bank in etcd — with one idempotency
    /// key, so a retry after a lost reply cannot open a second account.
    pub async fn fund(&self, user: &str, bank: &str, deposit: &str) {
        let (code, registered) = self.client("admin", &["register", user]);
        assert_eq!(code, 0, "{registered}");
        let key = format!("fund-{user}-{bank}");
        let opened = wait_until(Duration::from_secs(10), || async {
            self.client(
                "admin",
                &[
                    "open-account",
                    "--user",
                    user,
                    "--bank",
                    bank,
                    "--deposit",
                    deposit,
                    "--key",
                    &key,
                ],
            )
            .0 == 0
        })
        .await;
        assert!(
            opened,
            "could not open {user}'s account at {bank}; log:\n{}",
            self.gateway_log()
        );
    }

    /// `user`'s available balance on its first account, in minor units.
    pub fn available_minor(&self, user: &str) -> i64 {
        let (code, balance) = self.client(user, &["balance"]);
        assert_eq!(code, 0, "{balance}");
        balance["accounts"][0]["available"]["amount_minor"]
            .as_i64()
            .unwrap()
    }
}

/// Adds a user's credentials to every request.
pub use strife_common::metadata::Credentials;

pub type GatewayClient = strife_proto::v1::gateway_client::GatewayClient<
    tonic::service::interceptor::InterceptedService<tonic::transport::Channel, Credentials>,
>;

impl ManualNetwork {
    /// A raw gRPC gateway client presenting `cert_of`'s certificate and `user`/`password`.
    pub fn gateway_client_as(&self, cert_of: &str, user: &str, password: &str) -> GatewayClient {
        self.gateway_client_at(
            &self.gateway_address,
            cert_of,
            user,
            password,
            Duration::from_secs(10),
        )
    }

    /// A raw gRPC client for the gateway (replica) at `address`, presenting `cert_of`'s
    /// certificate and `user`/`password`, each call bounded by `timeout`.
    pub fn gateway_client_at(
        &self,
        address: &str,
        cert_of: &str,
        user: &str,
        password: &str,
        timeout: Duration,
    ) -> GatewayClient {
        let layout = self.network.layout();
        let tls = self.network.tls(&layout.user_identity(cert_of));
        let channel = tls
            .endpoint(address, &ExpectedPeer::Gateway, timeout)
            .unwrap()
            .connect_lazy();
        strife_proto::v1::gateway_client::GatewayClient::with_interceptor(
            channel,
            Credentials::new(user, password).unwrap(),
        )
    }

    /// The password the tests gave `user` (the admin's is the one setup wrote).
    pub fn password(&self, user: &str) -> String {
        if user == "admin" {
            strife_pki::read_admin_password(&self.network.layout()).unwrap()
        } else {
            password_of(user)
        }
    }

    /// `user`'s own gateway client with the right password.
    pub fn gateway_client(&self, user: &str) -> GatewayClient {
        self.gateway_client_as(user, user, &self.password(user))
    }

    /// Runs `strife audit --json` against the network: whether it is clean, and its report.
    pub fn audit(&self) -> (bool, String) {
        let output = Command::new(strife_bin())
            .args(["audit", "--json", "--etcd", &self.etcd.endpoint, "--dir"])
            .arg(self.network.path())
            .output()
            .unwrap();
        (
            output.status.success(),
            String::from_utf8_lossy(&output.stdout).into_owned(),
        )
    }

    /// Legs PREPARED now at any bank (each as `bank: payment/role`); empty once every
    /// payment has been decided and its decision delivered.
    pub async fn prepared_legs(&self) -> Vec<String> {
        let mut prepared = Vec::new();
        for index in 0..self.banks.len() {
            let Ok(listed) = self
                .bank(index)
                .list_accounts(strife_proto::v1::ListAccountsRequest {})
                .await
            else {
                prepared.push(format!("{}: unreachable", self.banks[index].id));
                continue;
            };
            for leg in listed.into_inner().prepared_legs {
                prepared.push(format!(
                    "{}: {}/{}",
                    self.banks[index].id, leg.payment_id, leg.role
                ));
            }
        }
        prepared
    }

    /// A bank client (with the gateway's certificate) for bank number `index`.
    pub fn bank(
        &self,
        index: usize,
    ) -> strife_proto::v1::bank_client::BankClient<tonic::transport::Channel> {
        self.network.gateway_bank_client(
            &self.banks[index].id,
            &self.banks[index].address.to_string(),
        )
    }
}

/// Every account at every bank with its balance: (account number, balance in minor units).
pub async fn bank_balances(network: &ManualNetwork) -> Vec<(String, i64)> {
    let mut balances = Vec::new();
    for index in 0..network.banks.len() {
        let listed = network
            .bank(index)
            .list_accounts(strife_proto::v1::ListAccountsRequest {})
            .await
            .unwrap()
            .into_inner();
        for account in listed.accounts {
            balances.push((account.account_number, account.balance_minor));
        }
    }
    balances
}

/// A payment of 0.01 USD to bob under idempotency key `key`.
pub fn pay_request(key: &str) -> strife_proto::v1::PayRequest {
    strife_proto::v1::PayRequest {
        idempotency_key: key.into(),
        to_username: "bob".into(),
        amount: Some(strife_proto::v1::Money {
            amount_minor: 1,
            currency: "USD".into(),
        }),
        ..Default::default()
    }
}

/// States of the legs of `payment_id` on both banks.
pub async fn leg_states(network: &ManualNetwork, payment_id: &str) -> Vec<i32> {
    let mut states = Vec::new();
    for bank in &network.banks {
        let mut client = network
            .network
            .gateway_bank_client(&bank.id, &bank.address.to_string());
        for role in [pb::LegRole::Debit, pb::LegRole::Credit] {
            let request = pb::LegRequest {
                settle_minor: 0,
                payment_id: payment_id.into(),
                role: role as i32,
            };
            if let Ok(leg) = client.get_leg(request).await {
                states.push(leg.into_inner().state);
            }
        }
    }
    states
}

/// The payment ids of every leg the banks hold PREPARED.
pub async fn prepared_payment_ids(network: &ManualNetwork) -> Vec<String> {
    let mut ids = Vec::new();
    for bank in &network.banks {
        let mut client = network
            .network
            .gateway_bank_client(&bank.id, &bank.address.to_string());
        let listed = client
            .list_accounts(pb::ListAccountsRequest {})
            .await
            .unwrap()
            .into_inner();
        ids.extend(listed.prepared_legs.into_iter().map(|leg| leg.payment_id));
    }
    ids.sort();
    ids.dedup();
    ids
}

/// Journal entries (across both banks) that name `payment_id`.
pub async fn journal_entries_for(network: &ManualNetwork, payment_id: &str) -> usize {
    let mut count = 0;
    for bank in &network.banks {
        let mut client = network
            .network
            .gateway_bank_client(&bank.id, &bank.address.to_string());
        let listed = client
            .list_accounts(pb::ListAccountsRequest {})
            .await
            .unwrap()
            .into_inner();
        for account in listed.accounts {
            let entries = client
                .list_journal(pb::ListJournalRequest {
                    account_number: account.account_number,
                    after_seq: 0,
                    limit: 0,
                })
                .await
                .unwrap()
                .into_inner()
                .entries;
            count += entries
                .iter()
                .filter(|entry| entry.payment_id == payment_id)
                .count();
        }
    }
    count
}
