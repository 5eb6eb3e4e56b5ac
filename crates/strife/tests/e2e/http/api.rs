use std::path::Path;
use std::process::Command;
use std::time::Duration;

use serde_json::{json, Value};

use crate::support::dev::DevNetwork;

/// One answer: status, headers (lower-case names), JSON body (`Null` when not JSON).
pub struct Answer {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: Value,
}

impl Answer {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(key, _)| key == name)
            .map(|(_, value)| value.as_str())
    }

    fn code(&self) -> &str {
        self.body["error"]["code"].as_str().unwrap_or_default()
    }
}

/// `curl` one request, trusting only the network's CA.
fn curl(
    dir: &Path,
    method: &str,
    url: &str,
    key: Option<&str>,
    headers: &[(&str, &str)],
    body: Option<&Value>,
) -> Answer {
    let scratch = tempfile::tempdir().unwrap();
    let (body_file, head_file) = (scratch.path().join("body"), scratch.path().join("head"));
    let mut command = Command::new("curl");
    command
        .args(["-sS", "--max-time", "30", "-X", method, "--cacert"])
        .arg(dir.join("pki/ca.crt"))
        .arg("-o")
        .arg(&body_file)
        .arg("-D")
        .arg(&head_file)
        .args(["-w", "%{http_code}"]);
    if let Some(key) = key {
        command.args(["-H", &format!("Authorization: Bearer {key}")]);
    }
    for (name, value) in headers {
        command.args(["-H", &format!("{name}: {value}")]);
    }
    if let Some(body) = body {
        command.args(["-H", "Content-Type: application/json", "--data-binary"]);
        command.arg(body.to_string());
    }
    let output = command
        .arg(url)
        .output()
        .expect("curl is installed (scripts/test installs it)");
    assert!(
        output.status.success(),
        "curl {method} {url}: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    let status = String::from_utf8_lossy(&output.stdout)
        .trim()
        .parse()
        .unwrap();
    let headers = std::fs::read_to_string(&head_file)
        .unwrap_or_default()
        .lines()
        .filter_map(|line| line.split_once(':'))
        .map(|(name, value)| (name.trim().to_ascii_lowercase(), value.trim().to_owned()))
        .collect();
    let body = std::fs::read(&body_file)
        .ok()
        .and_then(|bytes| serde_json::from_slice(&bytes).ok())
        .unwrap_or(Value::Null);
    Answer {
        status,
        headers,
        body,
    }
}

/// A `strife dev` network and what its ready line says of the HTTP API.
pub struct Api {
    pub(super) network: DevNetwork,
    /// Every replica's base URL (`https://127.0.0.1:PORT/v1/`).
    urls: Vec<String>,
}

impl Api {
    pub fn start(extra: &[&str]) -> Self {
        let network = DevNetwork::start_with(extra);
        let urls: Vec<String> = network.ready["http"]
            .as_array()
            .expect("strife dev prints the HTTP API URLs")
            .iter()
            .map(|url| url.as_str().unwrap().to_owned())
            .collect();
        assert!(!urls.is_empty());
        Api { network, urls }
    }

    pub fn key(&self, owner: &str) -> String {
        self.network.ready["api_keys"][owner]
            .as_str()
            .unwrap_or_else(|| panic!("strife dev made an API key for {owner}"))
            .to_owned()
    }

    pub fn call(&self, method: &str, path: &str, key: Option<&str>, body: Option<Value>) -> Answer {
        self.call_at(0, method, path, key, &[], body)
    }

    pub fn call_at(
        &self,
        replica: usize,
        method: &str,
        path: &str,
        key: Option<&str>,
        headers: &[(&str, &str)],
        body: Option<Value>,
    ) -> Answer {
        let url = format!("{}{path}", self.urls[replica]);
        curl(
            &self.network.dir(),
            method,
            &url,
            key,
            headers,
            body.as_ref(),
        )
    }

    fn pay(&self, key: &str, idempotency_key: &str, amount_minor: i64) -> Answer {
        self.call_at(
            0,
            "POST",
            "payments",
            Some(key),
            &[("Idempotency-Key", idempotency_key)],
            Some(json!({"to_username": "bob", "amount": {"amount_minor": amount_minor, "currency": "USD"}, "memo": "from curl"})),
        )
    }

    /// The cursor of `key`'s newest event now (`GET /v1/events` answers it at once): what
    /// later events are asked after.
    fn events_head(&self, key: &str) -> String {
        self.call("GET", "events", Some(key), None).body["next_cursor"]
            .as_str()
            .unwrap()
            .to_owned()
    }

    /// The first `count` events after `cursor` (`GET /v1/events` long polls, each waiting up
    /// to a second server side), or fewer if they do not come within 20 s.
    fn events_after(&self, key: &str, cursor: &str, count: usize) -> Vec<Value> {
        let mut seen = Vec::new();
        let mut cursor = cursor.to_owned();
        let deadline = std::time::Instant::now() + Duration::from_secs(20);
        while seen.len() < count && std::time::Instant::now() < deadline {
            let page = self.call(
                "GET",
                &format!("events?after={cursor}&wait_seconds=1"),
                Some(key),
                None,
            );
            assert_eq!(page.status, 200, "{}", page.body);
            seen.extend(page.body["data"].as_array().unwrap().iter().cloned());
            cursor = page.body["next_cursor"].as_str().unwrap().to_owned();
        }
        seen
    }

    /// A new key of `user`'s with `scopes`, made with the CLI (certificate and password).
    pub fn new_key(&self, user: &str, scopes: &str) -> (String, String) {
        let (code, created) = self
            .network
            .client(user, &["api-key", "create", "--scope", scopes]);
        assert_eq!(code, 0, "{created}");
        (
            created["secret"].as_str().unwrap().to_owned(),
            created["key"]["key_id"].as_str().unwrap().to_owned(),
        )
    }
}

#[test]
fn a_key_pays_replays_the_same_key_and_refuses_its_reuse_for_another_payment() {
    let api = Api::start(&[]);
    let alice = api.key("alice");
    let before = api.network.available_minor("alice");

    let paid = api.pay(&alice, "order-1001", 1250);
    assert_eq!(paid.status, 200, "{}", paid.body);
    assert_eq!(paid.body["status"], "committed");
    assert_eq!(
        paid.body["amount"],
        json!({"amount_minor": 1250, "currency": "USD"})
    );
    assert_eq!(paid.header("idempotent-replayed"), None);
    assert_eq!(paid.header("cache-control"), Some("no-store"));
    let payment_id = paid.body["payment_id"].as_str().unwrap().to_owned();

    let again = api.pay(&alice, "order-1001", 1250);
    assert_eq!(again.status, 200, "{}", again.body);
    assert_eq!(again.body["payment_id"], payment_id.as_str());
    assert_eq!(again.header("idempotent-replayed"), Some("true"));

    let other = api.pay(&alice, "order-1001", 999);
    assert_eq!(other.status, 422, "{}", other.body);
    assert_eq!(other.code(), "idempotency_key_reused");
    assert_eq!(other.body["error"]["param"], "Idempotency-Key");
    assert_eq!(other.body["error"]["type"], "payment_error");

    // Exactly one payment moved money.
    assert_eq!(api.network.available_minor("alice"), before - 1250);
    let fetched = api.call("GET", &format!("payments/{payment_id}"), Some(&alice), None);
    assert_eq!(fetched.status, 200);
    assert_eq!(fetched.body["payment_id"], payment_id.as_str());
    let by_key = api.call("GET", "payments/by-key/order-1001", Some(&alice), None);
    assert_eq!(by_key.body["payment_id"], payment_id.as_str());
    let history = api.call("GET", "payments?limit=1", Some(&alice), None);
    assert_eq!(history.status, 200);
    assert_eq!(history.body["data"][0]["payment_id"], payment_id.as_str());

    // Refused money: recorded, named, and 422 with its own reason.
    let poor = api.pay(&alice, "order-too-big", 1_000_000_000);
    assert_eq!(poor.status, 422, "{}", poor.body);
    assert_eq!(poor.code(), "insufficient_funds");
    assert!(poor.body["error"]["payment_id"].is_string());

    // The payee refunds part of it with a key of their own.
    let (bob, _) = api.new_key("bob", "refunds:write,payments:read");
    let refund = api.call_at(
        0,
        "POST",
        &format!("payments/{payment_id}/refunds"),
        Some(&bob),
        &[("Idempotency-Key", "refund-1001")],
        Some(json!({"amount": {"amount_minor": 250, "currency": "USD"}, "reason": "returned"})),
    );
    assert_eq!(refund.status, 200, "{}", refund.body);
    assert_eq!(refund.body["refund_of"], payment_id.as_str());
    let refunded = api.call("GET", &format!("payments/{payment_id}"), Some(&alice), None);
    assert_eq!(refunded.body["refunded"]["amount_minor"], 250);
    assert_eq!(api.network.available_minor("alice"), before - 1000);
    let (clean, report) = audit(&api);
    assert!(clean, "{report}");
}

/// Registers `user` over the HTTP API with the admin's key and gives them a key (the admin
/// may create keys for anyone).
fn register_with_key(api: &Api, admin: &str, user: &str) -> (String, String) {
    let registered = api.call(
        "POST",
        "users",
        Some(admin),
        Some(json!({"username": user, "password": "a long passphrase 1"})),
    );
    assert_eq!(registered.status, 200, "{}", registered.body);
    let created = api.call(
        "POST",
        "api-keys",
        Some(admin),
        Some(json!({"owner": user, "scopes": ["payments:read"], "description": "test"})),
    );
    assert_eq!(created.status, 200, "{}", created.body);
    (
        created.body["secret"].as_str().unwrap().to_owned(),
        created.body["key"]["key_id"].as_str().unwrap().to_owned(),
    )
}

fn audit(api: &Api) -> (bool, String) {
    let output = Command::new(crate::support::strife_bin())
        .args(["audit", "--dir"])
        .arg(api.network.dir())
        .output()
        .unwrap();
    (
        output.status.success(),
        String::from_utf8_lossy(&output.stdout).into_owned(),
    )
}

#[test]
fn a_payment_first_sent_over_grpc_replays_over_http_under_the_same_key() {
    let api = Api::start(&[]);
    let (code, paid) = api.network.client(
        "alice",
        &[
            "pay",
            "--to",
            "bob",
            "--amount",
            "3.00",
            "--memo",
            "from curl",
            "--key",
            "grpc-first",
        ],
    );
    assert_eq!(code, 0, "{paid}");
    let over_http = api.pay(&api.key("alice"), "grpc-first", 300);
    assert_eq!(over_http.status, 200, "{}", over_http.body);
    assert_eq!(over_http.header("idempotent-replayed"), Some("true"));
    assert_eq!(over_http.body["payment_id"], paid["payment"]["payment_id"]);
}

#[test]
fn keys_grant_only_their_scopes_and_their_owners_money() {
    let api = Api::start(&[]);
    let alice = api.key("alice");
    let paid = api.pay(&alice, "k-1", 100);
    assert_eq!(paid.status, 200, "{}", paid.body);
    let payment_id = paid.body["payment_id"].as_str().unwrap().to_owned();

    // A read-only key reads and cannot pay.
    let (reader, _) = api.new_key("alice", "payments:read");
    assert_eq!(api.call("GET", "balances", Some(&reader), None).status, 200);
    let refused = api.pay(&reader, "k-2", 100);
    assert_eq!(refused.status, 403, "{}", refused.body);
    assert_eq!(refused.code(), "permission_denied");
    assert!(refused.body["error"]["message"]
        .as_str()
        .unwrap()
        .contains("payments:write"));
    // Events need their own scope.
    assert_eq!(api.call("GET", "events", Some(&reader), None).status, 403);

    // Someone else's payment is not found, exactly like one that does not exist.
    let (bob, _) = api.new_key("bob", "payments:read");
    let payee = api.call("GET", &format!("payments/{payment_id}"), Some(&bob), None);
    assert_eq!(payee.status, 200, "bob is the payee: {}", payee.body);
    let admin = api.key("admin");
    let (carol, _) = register_with_key(&api, &admin, "carol");
    let stranger = api.call("GET", &format!("payments/{payment_id}"), Some(&carol), None);
    assert_eq!(stranger.status, 404, "{}", stranger.body);
    let nobody = api.call("GET", "payments/no-such-payment", Some(&alice), None);
    assert_eq!(nobody.status, 404);
    assert_eq!(nobody.code(), "not_found");

    // A client's key cannot reach the admin's resources, whatever it asks for.
    let admin_route = api.call(
        "POST",
        "users",
        Some(&alice),
        Some(json!({"username": "zed", "password": "long enough pw"})),
    );
    assert_eq!(admin_route.status, 403, "{}", admin_route.body);
    let (code, refused) = api
        .network
        .client("alice", &["api-key", "create", "--scope", "admin"]);
    assert_ne!(code, 0);
    assert_eq!(refused["code"], "InvalidArgument", "{refused}");
    assert!(
        refused["error"].as_str().unwrap().contains("admin"),
        "{refused}"
    );

    // No key, a malformed key, a well-formed unknown key: 401 with a challenge.
    for key in [
        None,
        Some("sk_nope"),
        Some("sk_0123456789abcdef_0123456789abcdef0123456789abcdef"),
    ] {
        let answer = api.call("GET", "balances", key, None);
        assert_eq!(answer.status, 401, "{key:?}");
        assert_eq!(answer.code(), "unauthenticated");
        assert!(answer.header("www-authenticate").is_some());
    }

    // Bad input: named, never a framework's text.
    let unknown_field = api.call_at(
        0,
        "POST",
        "payments",
        Some(&alice),
        &[("Idempotency-Key", "k-3")],
        Some(json!({"to_username": "bob", "amount": {"amount_minor": 1, "currency": "USD"}, "tip": 5})),
    );
    assert_eq!(unknown_field.status, 400);
    assert!(unknown_field.body["error"]["message"]
        .as_str()
        .unwrap()
        .contains("tip"));
    let no_key = api.call(
        "POST",
        "payments",
        Some(&alice),
        Some(json!({"to_username": "bob", "amount": {"amount_minor": 1, "currency": "USD"}})),
    );
    assert_eq!(no_key.status, 400);
    assert_eq!(no_key.body["error"]["param"], "Idempotency-Key");
    let bad_amount = api.pay(&alice, "k-4", 0);
    assert_eq!(bad_amount.status, 400);
    assert_eq!(bad_amount.body["error"]["param"], "amount.amount_minor");
    let no_route = api.call("GET", "no-such-thing", Some(&alice), None);
    assert_eq!(no_route.status, 404);
    assert_eq!(no_route.code(), "not_found");
    let wrong_method = api.call("DELETE", "balances", Some(&alice), None);
    assert_eq!(wrong_method.status, 405);
    assert!(wrong_method.body["error"].is_object());
    let bad_query = api.call("GET", "payments?limit=abc", Some(&alice), None);
    assert_eq!(bad_query.status, 400);
    assert!(bad_query.body["error"].is_object());
    let too_big = api.call_at(
        0,
        "POST",
        "payments",
        Some(&alice),
        &[("Idempotency-Key", "k-5")],
        Some(json!({"to_username": "bob", "amount": {"amount_minor": 1, "currency": "USD"}, "memo": "x".repeat(20_000)})),
    );
    assert_eq!(too_big.status, 413, "{}", too_big.body);
    assert_eq!(too_big.code(), "too_large");
}

#[test]
fn a_revoked_key_is_refused_by_every_replica_at_once() {
    let api = Api::start(&["--replicas", "2", "--store", "postgres"]);
    assert_eq!(api.urls.len(), 2);
    let (key, key_id) = api.new_key("alice", "payments:read");
    for replica in 0..2 {
        let answer = api.call_at(replica, "GET", "balances", Some(&key), &[], None);
        assert_eq!(answer.status, 200, "replica {replica}: {}", answer.body);
    }
    let (code, revoked) = api.network.client("alice", &["api-key", "revoke", &key_id]);
    assert_eq!(code, 0, "{revoked}");
    // Stated bound: none. Every request reads its key from the shared store.
    for replica in 0..2 {
        let answer = api.call_at(replica, "GET", "balances", Some(&key), &[], None);
        assert_eq!(answer.status, 401, "replica {replica}: {}", answer.body);
    }
    let (code, listed) = api.network.client("alice", &["api-key", "list"]);
    assert_eq!(code, 0);
    let listed_key = listed["keys"]
        .as_array()
        .unwrap()
        .iter()
        .find(|listed| listed["key_id"] == key_id.as_str())
        .cloned()
        .unwrap();
    assert!(listed_key["revoked_unix_ms"].is_i64(), "{listed_key}");
    assert!(listed_key["last_used_unix_ms"].is_i64(), "{listed_key}");
    assert!(
        !listed.to_string().contains(&key),
        "a list never shows a secret"
    );
}

#[test]
fn events_follow_decisions_in_order_from_a_cursor() {
    let api = Api::start(&[]);
    let alice = api.key("alice");
    let first = api.call("GET", "events", Some(&alice), None);
    assert_eq!(first.status, 200, "{}", first.body);
    let start = first.body["next_cursor"].as_str().unwrap().to_owned();
    for index in 0..3 {
        assert_eq!(
            api.pay(&alice, &format!("ev-{index}"), 10 + index).status,
            200
        );
    }
    let seen: Vec<i64> = api
        .events_after(&alice, &start, 3)
        .iter()
        .map(|event| event["payment"]["amount"]["amount_minor"].as_i64().unwrap())
        .collect();
    // The dev demo's own payments are before `start`; these three come in decision order.
    assert_eq!(seen, [10, 11, 12]);
    let foreign = api.call("GET", "events?after=not-a-cursor", Some(&alice), None);
    assert_eq!(foreign.status, 400);
    assert_eq!(foreign.body["error"]["param"], "since");
}

#[test]
fn the_served_openapi_document_is_the_checked_in_one() {
    let api = Api::start(&[]);
    let served = api.call("GET", "openapi.json", None, None);
    assert_eq!(served.status, 200);
    let checked_in: Value = serde_json::from_str(
        &std::fs::read_to_string(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../../docs/openapi.json"
        ))
        .unwrap(),
    )
    .unwrap();
    assert_eq!(served.body, checked_in);
}

/// A request refused before its body was read (here: no `Idempotency-Key`) must not cost the
/// next request on the same keep-alive connection, even when the body arrives in a write of
/// its own after the headers (as urllib3 sends it). Found by Schemathesis: the server used
/// to answer and then drop the connection without a word.
#[test]
fn an_early_refusal_keeps_the_connection_for_the_next_request() {
    use std::io::{Read, Write};

    use rustls::pki_types::ServerName;

    let api = Api::start(&[]);
    let key = api.key("alice");
    let config = crate::support::trusting_only(&api.network.dir().join("pki/ca.crt"));
    let mut connection =
        rustls::ClientConnection::new(config, ServerName::try_from("localhost").unwrap()).unwrap();
    let address = api.urls[0]
        .trim_start_matches("https://")
        .trim_end_matches("/v1/")
        .to_owned();
    let mut socket = std::net::TcpStream::connect(&address).unwrap();
    socket
        .set_read_timeout(Some(Duration::from_millis(300)))
        .unwrap();
    let mut tls = rustls::Stream::new(&mut connection, &mut socket);
    let body = r#"{"to_username":"bob","amount":{"amount_minor":1,"currency":"USD"}}"#;
    write!(
        tls,
        "POST /v1/payments HTTP/1.1\r\nHost: localhost\r\nAuthorization: Bearer {key}\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n",
        body.len()
    )
    .unwrap();
    tls.flush().unwrap();
    let mut received = Vec::new();
    let mut buffer = [0u8; 8192];
    // An old server answered here, before the body; a fixed one waits for it. Either way, at
    // most 300 ms.
    if let Ok(read) = tls.read(&mut buffer) {
        received.extend_from_slice(&buffer[..read]);
    }
    write!(
        tls,
        "{body}GET /v1/balances HTTP/1.1\r\nHost: localhost\r\nAuthorization: Bearer {key}\r\n\r\n"
    )
    .unwrap();
    tls.flush().unwrap();
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while std::time::Instant::now() < deadline {
        let text = String::from_utf8_lossy(&received);
        if text.matches("HTTP/1.1 ").count() >= 2 && text.contains("\"accounts\"") {
            break;
        }
        match tls.read(&mut buffer) {
            Ok(0) => break,
            Ok(read) => received.extend_from_slice(&buffer[..read]),
            Err(error)
                if matches!(
                    error.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) => {}
            Err(_) => break,
        }
    }
    let text = String::from_utf8_lossy(&received);
    assert!(text.starts_with("HTTP/1.1 400"), "{text}");
    assert!(text.contains("Idempotency-Key"), "{text}");
    assert_eq!(
        text.matches("HTTP/1.1 ").count(),
        2,
        "the second request on the connection was answered: {text}"
    );
    assert!(text.contains("HTTP/1.1 200"), "{text}");
}

#[test]
fn the_event_stream_replays_after_a_cursor_and_resumes_from_last_event_id() {
    use std::io::{BufRead, BufReader};
    use std::process::Stdio;

    let api = Api::start(&[]);
    let alice = api.key("alice");
    let start = api.events_head(&alice);
    for index in 0..3 {
        assert_eq!(
            api.pay(&alice, &format!("sse-{index}"), 20 + index).status,
            200
        );
    }
    // Reads `payment` events from the stream until `count` arrived (curl ends it after 20 s
    // at most); returns (id, amount) of each.
    let read = |header: Option<String>, query: &str, count: usize| -> Vec<(String, i64)> {
        let mut command = std::process::Command::new("curl");
        command
            .args(["-sS", "-N", "--max-time", "20", "--cacert"])
            .arg(api.network.dir().join("pki/ca.crt"))
            .args(["-H", &format!("Authorization: Bearer {alice}")]);
        if let Some(header) = header {
            command.args(["-H", &header]);
        }
        let mut curl = command
            .arg(format!("{}events/stream{query}", api.urls[0]))
            .stdout(Stdio::piped())
            .spawn()
            .unwrap();
        let mut events = Vec::new();
        let mut id = String::new();
        for line in BufReader::new(curl.stdout.take().unwrap()).lines() {
            let line = line.unwrap();
            if let Some(value) = line
                .strip_prefix("id: ")
                .or_else(|| line.strip_prefix("id:"))
            {
                id = value.trim().to_owned();
            } else if let Some(data) = line
                .strip_prefix("data: ")
                .or_else(|| line.strip_prefix("data:"))
            {
                let payment: Value = serde_json::from_str(data.trim()).unwrap();
                events.push((
                    id.clone(),
                    payment["amount"]["amount_minor"].as_i64().unwrap(),
                ));
                if events.len() == count {
                    break;
                }
            }
        }
        let _ = curl.kill();
        let _ = curl.wait();
        events
    };
    let all = read(None, &format!("?after={start}"), 3);
    assert_eq!(
        all.iter().map(|(_, amount)| *amount).collect::<Vec<_>>(),
        [20, 21, 22]
    );
    // Reconnecting with the first event's id gives the other two, nothing twice.
    let resumed = read(Some(format!("Last-Event-ID: {}", all[0].0)), "", 2);
    assert_eq!(
        resumed
            .iter()
            .map(|(_, amount)| *amount)
            .collect::<Vec<_>>(),
        [21, 22]
    );
    assert_eq!(resumed[1].0, all[2].0, "the same cursors as the first read");
    // A read-only key is refused before any stream starts.
    let (reader, _) = api.new_key("alice", "payments:read");
    assert_eq!(
        api.call("GET", "events/stream", Some(&reader), None).status,
        403
    );
}

/// Metadata is the payer's own: given on the CLI (`--meta`, over gRPC) or in JSON, stored,
/// returned by every read and event in key order, part of the idempotency key's request, and
/// checked (a bad key or too many entries is a 400 naming `metadata`, and nothing is paid).
#[test]
fn metadata_is_stored_returned_on_every_read_and_event_and_belongs_to_the_request() {
    let api = Api::start(&[]);
    let alice = api.key("alice");
    let start = api.events_head(&alice);
    let (code, paid) = api.network.client(
        "alice",
        &[
            "pay",
            "--to",
            "bob",
            "--amount",
            "2.00",
            "--key",
            "meta-cli",
            "--meta",
            "order=A-1",
            "--meta",
            "customer=7",
        ],
    );
    assert_eq!(code, 0, "{paid}");
    let tags = json!({"customer": "7", "order": "A-1"});
    assert_eq!(paid["payment"]["metadata"], tags);
    let (code, refused) = api.network.client(
        "alice",
        &["pay", "--to", "bob", "--amount", "1.00", "--meta", "order"],
    );
    assert_ne!(code, 0, "{refused}");
    assert!(refused.to_string().contains("KEY=VALUE"), "{refused}");

    let by_key = api.call("GET", "payments/by-key/meta-cli", Some(&alice), None);
    assert_eq!(by_key.body["metadata"], tags);
    let payment_id = by_key.body["payment_id"].as_str().unwrap().to_owned();
    let pay_json = |key: &str, metadata: Value| {
        api.call_at(
            0,
            "POST",
            "payments",
            Some(&alice),
            &[("Idempotency-Key", key)],
            Some(json!({"to_username": "bob", "amount": {"amount_minor": 200, "currency": "USD"}, "metadata": metadata})),
        )
    };
    let replayed = pay_json("meta-cli", tags.clone());
    assert_eq!(replayed.status, 200, "{}", replayed.body);
    assert_eq!(replayed.header("idempotent-replayed"), Some("true"));
    assert_eq!(replayed.body["payment_id"], payment_id.as_str());
    let retagged = pay_json("meta-cli", json!({"order": "A-2"}));
    assert_eq!(retagged.status, 422, "{}", retagged.body);
    assert_eq!(retagged.code(), "idempotency_key_reused");

    let before = api.network.available_minor("alice");
    let bad_key = pay_json("meta-bad", json!({"order id": "1"}));
    assert_eq!(bad_key.status, 400, "{}", bad_key.body);
    assert_eq!(bad_key.body["error"]["param"], "metadata");
    let many: serde_json::Map<String, Value> =
        (0..51).map(|n| (format!("k{n}"), json!(""))).collect();
    let too_many = pay_json("meta-many", Value::Object(many));
    assert_eq!(too_many.status, 400, "{}", too_many.body);
    assert_eq!(too_many.body["error"]["param"], "metadata");
    let not_text = pay_json("meta-number", json!({"order": 7}));
    assert_eq!(not_text.status, 400, "{}", not_text.body);
    assert_eq!(api.network.available_minor("alice"), before, "nothing paid");

    let (bob, _) = api.new_key("bob", "refunds:write,payments:read");
    let refund = api.call_at(
        0,
        "POST",
        &format!("payments/{payment_id}/refunds"),
        Some(&bob),
        &[("Idempotency-Key", "meta-refund")],
        Some(
            json!({"amount": {"amount_minor": 50, "currency": "USD"}, "metadata": {"rma": "R-9"}}),
        ),
    );
    assert_eq!(refund.status, 200, "{}", refund.body);
    assert_eq!(refund.body["metadata"], json!({"rma": "R-9"}));
    let history = api.call("GET", "payments?limit=2", Some(&alice), None);
    assert_eq!(history.body["data"][0]["metadata"], json!({"rma": "R-9"}));
    let refunds = api.call(
        "GET",
        &format!("payments/{payment_id}/refunds?limit=5"),
        Some(&alice),
        None,
    );
    assert_eq!(refunds.status, 200, "{}", refunds.body);
    assert_eq!(
        refunds.body["data"][0]["payment_id"],
        refund.body["payment_id"]
    );
    assert_eq!(refunds.body["has_more"], false);
    // Found again by its metadata, and a bad filter is a 400 naming it.
    let found = api.call(
        "GET",
        "payments?metadata_key=order&metadata_value=A-1&direction=sent",
        Some(&alice),
        None,
    );
    assert_eq!(found.status, 200, "{}", found.body);
    assert_eq!(found.body["data"][0]["payment_id"], payment_id.as_str());
    assert_eq!(found.body["data"].as_array().map(Vec::len), Some(1));
    let bad = api.call("GET", "payments?status=done", Some(&alice), None);
    assert_eq!(bad.status, 400, "{}", bad.body);
    assert_eq!(bad.body["error"]["param"], "status");
    assert_eq!(history.body["data"][1]["metadata"], tags);

    let seen: Vec<Value> = api
        .events_after(&alice, &start, 2)
        .iter()
        .map(|event| event["payment"]["metadata"].clone())
        .collect();
    assert_eq!(seen, [tags, json!({"rma": "R-9"})]);
}

/// A client that offers HTTP/2 (ALPN `h2`) gets it, with the same answers: here curl sends
/// two payments and a read as three streams of one HTTP/2 connection.
#[test]
fn the_api_speaks_http2_to_a_client_that_offers_it() {
    let api = Api::start(&[]);
    let alice = api.key("alice");
    let before = api.network.available_minor("alice");
    let base = &api.urls[0];
    let body = |amount_minor: i64| {
        json!({"to_username": "bob", "amount": {"amount_minor": amount_minor, "currency": "USD"}})
            .to_string()
    };
    // One request's arguments; `--next` separates them on one curl command line.
    let ca = api.network.dir().join("pki/ca.crt");
    let request = |key: Option<&str>, body: Option<String>, path: &str| -> Vec<String> {
        let mut args: Vec<String> = ["-sS", "--http2", "--max-time", "30", "--cacert"]
            .map(String::from)
            .to_vec();
        args.push(ca.display().to_string());
        args.extend(["-H".into(), format!("Authorization: Bearer {alice}")]);
        args.extend([
            "-w".into(),
            "\n%{http_version} %{http_code} %{num_connects}\n".into(),
        ]);
        if let (Some(key), Some(body)) = (key, body) {
            args.extend(["-H".into(), "Content-Type: application/json".into()]);
            args.extend(["-H".into(), format!("Idempotency-Key: {key}")]);
            args.extend(["--data-binary".into(), body]);
        }
        args.push(format!("{base}{path}"));
        args
    };
    let output = Command::new("curl")
        .args(request(Some("h2-1"), Some(body(101)), "payments"))
        .arg("--next")
        .args(request(Some("h2-1"), Some(body(101)), "payments"))
        .arg("--next")
        .args(request(None, None, "payments/by-key/h2-1"))
        .output()
        .expect("curl is installed");
    let text = String::from_utf8_lossy(&output.stdout).into_owned();
    assert!(
        output.status.success(),
        "{text}{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let lines: Vec<&str> = text.lines().collect();
    let outcomes: Vec<&str> = lines.iter().skip(1).step_by(2).copied().collect();
    // HTTP/2, 200 each; one connection opened, then reused by the next two requests.
    assert_eq!(outcomes, ["2 200 1", "2 200 0", "2 200 0"], "{text}");
    let paid: Value = serde_json::from_str(lines[0]).unwrap();
    let replayed: Value = serde_json::from_str(lines[2]).unwrap();
    let read: Value = serde_json::from_str(lines[4]).unwrap();
    assert_eq!(paid["status"], "committed");
    assert_eq!(replayed["payment_id"], paid["payment_id"]);
    assert_eq!(read["payment_id"], paid["payment_id"]);
    assert_eq!(api.network.available_minor("alice"), before - 101);
}

/// Over HTTP/2 one connection carries many requests, so no connection deadline can end a slow
/// one: a body that stops coming is answered 408 (JSON) at the request deadline, while
/// another request on the same connection is answered at once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stalled_http2_body_is_refused_at_the_deadline_without_holding_its_connection() {
    use bytes::Bytes;
    use rustls::pki_types::ServerName;

    let api = Api::start(&[]);
    let alice = api.key("alice");
    let authority = api.urls[0]
        .trim_start_matches("https://")
        .trim_end_matches("/v1/")
        .to_owned();
    let mut config =
        (*crate::support::trusting_only(&api.network.dir().join("pki/ca.crt"))).clone();
    config.alpn_protocols = vec![b"h2".to_vec()];
    let tcp = tokio::net::TcpStream::connect(&authority).await.unwrap();
    let tls = tokio_rustls::TlsConnector::from(std::sync::Arc::new(config))
        .connect(ServerName::try_from("localhost").unwrap(), tcp)
        .await
        .unwrap();
    let (send, connection) = h2::client::handshake(tls).await.unwrap();
    tokio::spawn(connection);
    let request = |method: &str, path: &str| {
        http::Request::builder()
            .method(method)
            .uri(format!("https://{authority}/v1/{path}"))
            .header("authorization", format!("Bearer {alice}"))
            .header("content-type", "application/json")
            .header("idempotency-key", "h2-stalled")
            .body(())
            .unwrap()
    };
    let mut send = send.ready().await.unwrap();
    // Headers, then 10 of the 100 bytes promised, then nothing.
    let mut stalled = request("POST", "payments");
    stalled
        .headers_mut()
        .insert("content-length", "100".parse().unwrap());
    let (stalled_answer, mut body) = send.send_request(stalled, false).unwrap();
    body.send_data(Bytes::from_static(b"{\"to_usern"), false)
        .unwrap();
    let started = std::time::Instant::now();

    let mut send = send.ready().await.unwrap();
    let (quick, _) = send.send_request(request("GET", "balances"), true).unwrap();
    let quick = tokio::time::timeout(Duration::from_secs(5), quick)
        .await
        .expect("the other request is not held up")
        .unwrap();
    assert_eq!(quick.status(), 200);

    let answer = tokio::time::timeout(Duration::from_secs(30), stalled_answer)
        .await
        .expect("the stalled request is answered")
        .unwrap();
    assert_eq!(answer.status(), 408);
    assert!(
        started.elapsed() >= Duration::from_secs(9),
        "{:?}",
        started.elapsed()
    );
    let mut received = answer.into_body();
    let mut bytes = Vec::new();
    while let Some(chunk) = received.data().await {
        bytes.extend_from_slice(&chunk.unwrap());
    }
    let error: Value = serde_json::from_slice(&bytes).unwrap();
    assert_eq!(error["error"]["type"], "invalid_request_error", "{error}");
    drop(body);
    // Nothing was paid.
    let by_key = api.call("GET", "payments/by-key/h2-stalled", Some(&alice), None);
    assert_eq!(by_key.status, 404, "{}", by_key.body);
}

/// Authorizations over HTTP and the CLI: a hold lowers the payer's available balance, the
/// payee captures it (the payer may not), a void gives it back, a key's retry replays it, a
/// bad expiry is a 400 naming it, and each ending is one event in decision order.
#[test]
fn an_authorization_is_held_then_captured_or_voided_over_http_and_the_cli() {
    let api = Api::start(&[]);
    let alice = api.key("alice");
    let (bob, _) = api.new_key("bob", "payments:write");
    let start = api.events_head(&alice);
    let before = api.network.available_minor("alice");
    let authorize = |key: &str, body: Value| {
        api.call_at(
            0,
            "POST",
            "authorizations",
            Some(&alice),
            &[("Idempotency-Key", key)],
            Some(body),
        )
    };
    let hotel = json!({"to_username": "bob", "amount": {"amount_minor": 300, "currency": "USD"},
                       "expires_in_seconds": 3600, "metadata": {"booking": "H-1"}});
    let held = authorize("hold-1", hotel.clone());
    assert_eq!(held.status, 200, "{}", held.body);
    assert_eq!(held.body["status"], "authorized");
    assert!(held.body["expires_unix_ms"].as_i64().unwrap() > 0);
    assert_eq!(api.network.available_minor("alice"), before - 300);
    let replayed = authorize("hold-1", hotel);
    assert_eq!(replayed.header("idempotent-replayed"), Some("true"));
    assert_eq!(replayed.body["payment_id"], held.body["payment_id"]);
    let no_expiry = authorize(
        "hold-bad",
        json!({"to_username": "bob", "amount": {"amount_minor": 1, "currency": "USD"}, "expires_in_seconds": 0}),
    );
    assert_eq!(no_expiry.status, 400, "{}", no_expiry.body);
    assert_eq!(no_expiry.body["error"]["param"], "expires_in_seconds");

    let payment_id = held.body["payment_id"].as_str().unwrap().to_owned();
    let by_payer = api.call(
        "POST",
        &format!("payments/{payment_id}/capture"),
        Some(&alice),
        None,
    );
    assert_eq!(by_payer.status, 403, "{}", by_payer.body);
    let captured = api.call(
        "POST",
        &format!("payments/{payment_id}/capture"),
        Some(&bob),
        Some(json!({"amount": {"amount_minor": 200, "currency": "USD"}})),
    );
    assert_eq!(captured.status, 200, "{}", captured.body);
    assert_eq!(captured.body["status"], "committed");
    assert_eq!(captured.body["amount"]["amount_minor"], 200);
    assert_eq!(captured.body["authorized"]["amount_minor"], 300);
    assert_eq!(api.network.available_minor("alice"), before - 200);
    let retried = api.call(
        "POST",
        &format!("payments/{payment_id}/capture"),
        Some(&bob),
        None,
    );
    assert_eq!(retried.status, 200, "{}", retried.body);
    assert_eq!(retried.body["amount"]["amount_minor"], 200);

    // The CLI: authorize, then the payer voids; the hold comes back.
    let (code, cli_held) = api.network.client(
        "alice",
        &[
            "authorize",
            "--to",
            "bob",
            "--amount",
            "1.00",
            "--expires-in",
            "600",
            "--meta",
            "order=8",
        ],
    );
    assert_eq!(code, 0, "{cli_held}");
    assert_eq!(cli_held["payment"]["status"], "AUTHORIZED");
    assert_eq!(cli_held["payment"]["metadata"], json!({"order": "8"}));
    assert_eq!(api.network.available_minor("alice"), before - 300);
    let cli_id = cli_held["payment"]["payment_id"]
        .as_str()
        .unwrap()
        .to_owned();
    let (code, voided) = api.network.client("alice", &["void", &cli_id]);
    assert_eq!(code, 0, "{voided}");
    assert_eq!(voided["payment"]["reason_code"], "authorization_voided");
    assert_eq!(api.network.available_minor("alice"), before - 200);
    let late = api.call(
        "POST",
        &format!("payments/{cli_id}/capture"),
        Some(&bob),
        None,
    );
    assert_eq!(late.status, 422, "{}", late.body);
    assert_eq!(late.code(), "payment_not_authorized");
    let (code, refused) = api.network.client("bob", &["capture", &cli_id]);
    assert_ne!(code, 0, "{refused}");

    let seen: Vec<(Value, Value)> = api
        .events_after(&alice, &start, 2)
        .iter()
        .map(|event| {
            (
                event["payment"]["status"].clone(),
                event["payment"]["reason_code"].clone(),
            )
        })
        .collect();
    assert_eq!(
        seen,
        [
            (json!("committed"), Value::Null),
            (json!("aborted"), json!("authorization_voided"))
        ]
    );
}
