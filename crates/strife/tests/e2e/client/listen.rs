//! `strife client listen --forward-to`: payment events forwarded to a real HTTP receiver (a
//! short Python server using Python's own HMAC, written from the spec), signed so that the
//! receiver accepts every delivery, in decision order, and refuses a tampered body.

use std::io::{BufRead, BufReader, Read, Write};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use serde_json::Value;

use crate::support::dev::DevNetwork;
use crate::support::strife_bin;

const SECRET: &str = "whsec_e2e_listen_0123456789abcdef";

/// The Python receiver, its port, and the lines it printed (read on a thread).
struct Receiver {
    process: Child,
    port: u16,
    lines: std::sync::mpsc::Receiver<Value>,
}

impl Receiver {
    fn start() -> Self {
        let script = concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/tests/e2e/python/webhook_receiver.py"
        );
        let mut process = Command::new("python3")
            .arg(script)
            .env("STRIFE_WEBHOOK_SECRET", SECRET)
            .stdout(Stdio::piped())
            .spawn()
            .expect("python3 is installed");
        let mut stdout = BufReader::new(process.stdout.take().unwrap());
        let mut first = String::new();
        stdout.read_line(&mut first).unwrap();
        let port = serde_json::from_str::<Value>(&first).unwrap()["port"]
            .as_u64()
            .unwrap() as u16;
        let (sender, lines) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            for line in stdout.lines().map_while(Result::ok) {
                if let Ok(value) = serde_json::from_str(&line) {
                    let _ = sender.send(value);
                }
            }
        });
        Receiver {
            process,
            port,
            lines,
        }
    }

    fn next(&self) -> Value {
        self.lines
            .recv_timeout(Duration::from_secs(20))
            .expect("the receiver got a delivery")
    }

    /// POSTs `body` with `signature` by hand; the receiver's HTTP status.
    fn post(&self, signature: &str, body: &str) -> u16 {
        let mut stream = std::net::TcpStream::connect(("127.0.0.1", self.port)).unwrap();
        write!(
            stream,
            "POST /hook HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n\
             Strife-Signature: {signature}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
            body.len()
        )
        .unwrap();
        let mut answer = String::new();
        stream.read_to_string(&mut answer).unwrap();
        answer
            .split_whitespace()
            .nth(1)
            .and_then(|code| code.parse().ok())
            .unwrap_or(0)
    }
}

impl Drop for Receiver {
    fn drop(&mut self) {
        let _ = self.process.kill();
        let _ = self.process.wait();
    }
}

fn client(network: &DevNetwork, args: &[&str]) -> (i32, Vec<Value>) {
    let output = Command::new(strife_bin())
        .args(["client", "--json", "--gateway", &network.gateway])
        .args(["--user", "alice", "--dir"])
        .arg(network.dir())
        .args(args)
        .env("STRIFE_PASSWORD", network.password("alice"))
        .env("STRIFE_WEBHOOK_SECRET", SECRET)
        .output()
        .unwrap();
    let lines = String::from_utf8_lossy(&output.stdout)
        .lines()
        .filter_map(|line| serde_json::from_str(line).ok())
        .collect();
    (output.status.code().unwrap_or(-1), lines)
}

#[test]
fn listen_forwards_each_event_signed_in_order_to_a_receiver_that_verifies_it() {
    let network = DevNetwork::start();
    let receiver = Receiver::start();
    // Where alice's events stand now (the demo's payments are before it): the HTTP API's
    // events answer with the current cursor at once, the one WatchPayments uses.
    let alice_key = network.ready["api_keys"]["alice"].as_str().unwrap();
    let head = Command::new("curl")
        .args(["-sS", "--max-time", "30", "--cacert"])
        .arg(network.dir().join("pki/ca.crt"))
        .args(["-H", &format!("Authorization: Bearer {alice_key}")])
        .arg(format!(
            "{}events",
            network.ready["http"][0].as_str().unwrap()
        ))
        .output()
        .unwrap();
    let head: Value = serde_json::from_slice(&head.stdout).unwrap();
    let start = head["next_cursor"].as_str().unwrap().to_owned();

    let mut paid = Vec::new();
    for (amount, key) in [
        ("1.25", "listen-1"),
        ("2.50", "listen-2"),
        ("999999.00", "listen-3"),
    ] {
        let (_, lines) = client(
            &network,
            &[
                "pay",
                "--to",
                "bob",
                "--amount",
                amount,
                "--key",
                key,
                "--meta",
                "order=A-7",
            ],
        );
        let payment_id = lines.last().and_then(|line| {
            line["payment"]["payment_id"]
                .as_str()
                .or(line["payment_id"].as_str())
                .map(str::to_owned)
        });
        paid.push(payment_id);
    }
    assert!(paid[0].is_some() && paid[1].is_some(), "{paid:?}");
    let url = format!("http://127.0.0.1:{}/hook", receiver.port);
    let (code, lines) = client(
        &network,
        &[
            "listen",
            "--forward-to",
            &url,
            "--since",
            &start,
            "--max-events",
            "3",
        ],
    );
    assert_eq!(code, 0, "{lines:?}");
    assert_eq!(lines[0]["event"], "ready", "{lines:?}");
    assert_eq!(lines[0]["secret"], SECRET);
    let forwarded: Vec<&Value> = lines[1..].iter().collect();
    assert_eq!(forwarded.len(), 3, "{lines:?}");
    for line in &forwarded {
        assert_eq!(line["status"], 200, "the receiver verified it: {line}");
    }

    let deliveries: Vec<Value> = forwarded.iter().map(|_| receiver.next()).collect();
    let mut types = Vec::new();
    for (index, (line, delivery)) in forwarded.iter().zip(&deliveries).enumerate() {
        assert_eq!(delivery["verified"], true, "{delivery}");
        assert_eq!(delivery["path"], "/hook");
        let raw = delivery["body"].as_str().unwrap();
        let header = delivery["header"].as_str().unwrap();
        // The Rust helper agrees with Python's HMAC on the very bytes received.
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_secs();
        assert_eq!(
            strife_client::webhook::verify(SECRET, header, raw.as_bytes(), now, 300),
            Ok(())
        );
        let event: Value = serde_json::from_str(raw).unwrap();
        assert_eq!(event["data"]["payment"]["payment_id"], line["payment_id"]);
        assert_eq!(event["cursor"], line["cursor"]);
        assert_eq!(event["data"]["payment"]["metadata"]["order"], "A-7");
        assert_eq!(
            event["id"],
            format!(
                "evt_{}_{}",
                line["payment_id"].as_str().unwrap(),
                event["type"]
                    .as_str()
                    .unwrap()
                    .trim_start_matches("payment.")
            )
        );
        if let Some(Some(expected)) = paid.get(index) {
            assert_eq!(event["data"]["payment"]["payment_id"], expected.as_str());
        }
        types.push(event["type"].as_str().unwrap().to_owned());

        // The same signature over a changed body is refused by the receiver.
        let tampered = raw.replacen("A-7", "A-8", 1);
        assert_eq!(receiver.post(header, &tampered), 400);
        assert_eq!(receiver.next()["verified"], false);
    }
    assert_eq!(
        types,
        ["payment.committed", "payment.committed", "payment.aborted"]
    );

    // A receiver that is down: the event is reported not delivered, with its cursor, and
    // the listener goes on (here to its bound).
    let closed_port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let down = format!("http://127.0.0.1:{closed_port}/hook");
    let (code, lines) = client(
        &network,
        &[
            "listen",
            "--forward-to",
            &down,
            "--since",
            &start,
            "--max-events",
            "1",
        ],
    );
    assert_eq!(code, 0, "{lines:?}");
    assert!(
        lines[1]["error"]
            .as_str()
            .unwrap()
            .contains("cannot connect"),
        "{lines:?}"
    );
    assert_eq!(lines[1]["cursor"], forwarded[0]["cursor"]);

    // Only plain http to this machine.
    let (code, refused) = client(
        &network,
        &["listen", "--forward-to", "http://10.0.0.1:9/hook"],
    );
    assert_eq!(code, 2, "{refused:?}");
    assert!(
        refused[0]["error"].as_str().unwrap().contains("loopback"),
        "{refused:?}"
    );
}
