//! A tiny run of `strife bench` against a real dev network: it drives payments, and its
//! closing audit finds the network consistent. (Speed is measured in docs/BENCHMARKS.md, not
//! asserted here.)

use std::process::Command;

use crate::support::dev::DevNetwork;
use crate::support::strife_bin;
use serde_json::Value;

#[test]
fn bench_smoke_pays_and_its_audit_is_clean() {
    let network = DevNetwork::start();
    let output = Command::new(strife_bin())
        .args([
            "bench",
            "--json",
            "--duration",
            "1s",
            "--concurrency",
            "4",
            "--payers",
            "2",
            "--dir",
        ])
        .arg(network.dir())
        .output()
        .unwrap();
    let report: Value = serde_json::from_slice(&output.stdout)
        .unwrap_or_else(|_| panic!("bench output: {}", String::from_utf8_lossy(&output.stderr)));
    assert!(output.status.success(), "{report}");
    assert!(report["succeeded"].as_u64().unwrap() > 0, "{report}");
    assert_eq!(report["audit_clean"], true, "{report}");
    assert!(report["latency"]["p50_us"].as_u64().unwrap() > 0);

    let raw = Command::new(strife_bin())
        .args([
            "bench",
            "--json",
            "--raw-rpc",
            "--duration",
            "1s",
            "--concurrency",
            "2",
            "--dir",
        ])
        .arg(network.dir())
        .output()
        .unwrap();
    let report: Value = serde_json::from_slice(&raw.stdout).unwrap();
    assert!(report["succeeded"].as_u64().unwrap() > 0, "{report}");

    // Through the HTTP API, over HTTP/1.1 and over HTTP/2, each ending with a clean audit.
    for (version, mode) in [(None, "payments-http"), (Some("--http2"), "payments-http2")] {
        let mut command = Command::new(strife_bin());
        command.args(["bench", "--json", "--http", "--duration", "1s"]);
        command.args(["--concurrency", "4", "--payers", "2", "--connections", "2"]);
        command.args(version).arg("--dir").arg(network.dir());
        let output = command.output().unwrap();
        let report: Value = serde_json::from_slice(&output.stdout).unwrap_or_else(|_| {
            panic!("bench output: {}", String::from_utf8_lossy(&output.stderr))
        });
        assert_eq!(report["mode"], mode, "{report}");
        assert!(report["succeeded"].as_u64().unwrap() > 0, "{report}");
        assert_eq!(
            report["failed_by_reason"],
            serde_json::json!({}),
            "{report}"
        );
        assert_eq!(report["audit_clean"], true, "{report}");
    }
}
