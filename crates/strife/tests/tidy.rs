//! Tidy: ARCHITECTURE.md's claims about the code, checked against the source tree.
//!
//! Written the way rust-analyzer's `xtask/src/tidy.rs` is: read every file as text, walk the
//! tree, collect every violation, and fail once with the whole list, so one run shows all that
//! a change broke (`file:line: what`). One `#[test]` per claim, so the failing test's name says
//! which claim broke; each claim in ARCHITECTURE.md ("Boundaries") names its test here. Where
//! part of a claim holds today and part only after the restructure of issue 25 (crate
//! dependencies, RPC coverage), the two parts are two tests, so the part that holds keeps
//! running.
//!
//! Only non-test code is checked: folders named `tests/`, files named `tests.rs` or
//! `*_tests.rs`, and every item marked `#[cfg(test)]` (a `mod tests { … }` block, a
//! `mod tests;` line, a test-only `fn` or `use`) are skipped. Nothing here needs the network
//! or a process: it reads files under the repository root and calls into the code twice
//! (`strife_proto::FILE_DESCRIPTOR_SET`, `strife_gateway::roles::allowed_roles`).
//!
//! The reading is lexical, not a Rust parser: comments are blanked, string and char literals
//! are lifted out with their line, `#[cfg(test)]` items are blanked, and the rules look at
//! what is left. That is exact for code rustfmt formatted (`Status::new(` and `crate::a::b`
//! are never split by it); where a rule could still be fooled, its doc comment says how.
//!
//! Run it alone: `cargo nextest run -p strife --test tidy` (about a second once built).

// Test code: a failed unwrap is the test failing.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use tonic_prost::prost::Message;

// ---------------------------------------------------------------------------------------------
// Rule 1: statuses are built only in failure.rs.

/// The one module that turns a `Failure` into a `tonic::Status`.
const STATUS_HOME: &str = "crates/strife-common/src/failure.rs";

/// Statuses built elsewhere on purpose: (file, the exact call, why). Neither is an answer a
/// Strife server sends, so the claim holds. Keyed by the call itself, so another constructor
/// in the same file is still caught, and a changed call has to be looked at again.
const STATUS_EXCEPTIONS: &[(&str, &str, &str)] = &[
    (
        "crates/strife-gateway/src/registry.rs",
        "Status::new(Code::from_i32(error.code), error.message)",
        "a bank's per-item answer inside a batch, read back into the status the single call \
         would have returned; `registry::bank_failure` then translates it like any bank status",
    ),
    (
        "crates/strife-client/src/watch.rs",
        "Status::unavailable(\"the gateway ended the watch\")",
        "the client's stand-in for a watch the gateway ended, so it is resumed like a transport \
         failure; it never leaves the client",
    ),
    (
        "crates/strife-common/src/net/grpc_limits.rs",
        "tonic::Status::from_header_map(headers)",
        "reads the status tonic wrote into a response (a trailers-only answer), so that \
         `fix_tonic_status` can replace it with the one `failure` builds",
    ),
];

/// **Only `strife_common::failure` turns errors into gRPC statuses** (ARCHITECTURE.md,
/// Boundaries). Every `Status::<lower-case fn>(` (`new`, `with_details`, `internal`,
/// `unavailable`, `with_error_details…`, `from_error`, …; also spelled `tonic::Status::…`)
/// outside `failure.rs` is a violation. `Status::from(…)` (the `From<Failure>` conversion),
/// `.into()` and the type name are fine. An alias (`use tonic::Status as S`) would fool it.
#[test]
fn statuses_are_built_only_in_failure() {
    let mut violations = Vec::new();
    for file in &tree().files {
        if file.path == STATUS_HOME {
            continue;
        }
        for (offset, constructor) in status_constructors(&file.code) {
            let line = file.line_of(offset);
            let excused = STATUS_EXCEPTIONS
                .iter()
                .any(|(path, call, _)| *path == file.path && file.line_text(line).contains(call));
            if !excused {
                violations.push(format!(
                    "{}:{line}: `Status::{constructor}(` builds a status outside {STATUS_HOME}; \
                     return a `Failure` (or add a `failure` constructor)",
                    file.path
                ));
            }
        }
    }
    for (path, call, _) in STATUS_EXCEPTIONS {
        let still_there = tree()
            .file(path)
            .is_some_and(|file| file.text.contains(call));
        if !still_there {
            violations.push(format!(
                "{path}: the exception `{call}` is gone; remove it from STATUS_EXCEPTIONS"
            ));
        }
    }
    finish("statuses_are_built_only_in_failure", &violations);
}

/// Offsets and names of `Status::<lower-case>(` calls in `code` (comments and literals blank).
fn status_constructors(code: &str) -> Vec<(usize, String)> {
    let bytes = code.as_bytes();
    let mut found = Vec::new();
    for (at, _) in code.match_indices("Status::") {
        if at > 0 && is_ident_byte(bytes[at - 1]) {
            continue; // `PaymentStatus::`, not tonic's `Status`.
        }
        let name_start = at + "Status::".len();
        let name_end = ident_end(bytes, name_start);
        let name = &code[name_start..name_end];
        let lower = name.starts_with(|c: char| c.is_ascii_lowercase());
        if lower && bytes.get(name_end) == Some(&b'(') && name != "from" {
            found.push((at, name.to_owned()));
        }
    }
    found
}

// ---------------------------------------------------------------------------------------------
// Rule 2: SQL only in store modules.

/// Where SQL may be written: each process's store, and the SQLite plumbing they all share. A
/// path ending in `/` is a folder (everything under it); otherwise one file.
const SQL_PATHS: &[&str] = &[
    // The gateway's store: the `GatewayStore` interface and its SQLite and PostgreSQL backends.
    "crates/strife-ledger/src/store/",
    // The bank's store (and its test folder).
    "crates/strife-bank/src/store.rs",
    "crates/strife-bank/src/store/",
    // The client's outbox is the client's store.
    "crates/strife-client/src/outbox.rs",
    // How every database is opened (PRAGMAs), the group-commit writer (BEGIN / SAVEPOINT /
    // COMMIT) and every database's `meta` table and migrations.
    "crates/strife-common/src/storage/sqlite.rs",
    "crates/strife-common/src/storage/group_commit.rs",
    "crates/strife-common/src/storage/store_identity.rs",
    // `strife dev --store postgres` administers its private PostgreSQL cluster through psql
    // (is it up, create the database); it knows no table of Strife's.
    "crates/strife/src/dev_postgres.rs",
];

/// **Only the store modules know a schema** (ARCHITECTURE.md, Boundaries: "Only
/// `strife-ledger/src/store/` knows the gateway's schema", and the code map's `store.rs`,
/// `outbox.rs`, `sqlite.rs`, `store_identity.rs`). A string literal holding SQL — `SELECT `,
/// `INSERT INTO`, `UPDATE <table> SET`, `DELETE FROM`, `CREATE TABLE` / `INDEX`, `ALTER
/// TABLE`, `DROP TABLE`, `PRAGMA `, or a literal that is a `BEGIN` / `COMMIT` / `ROLLBACK` /
/// `SAVEPOINT` statement — outside [`SQL_PATHS`] is a violation. Keywords are matched in upper
/// case, as all of Strife's SQL is written, so English messages do not match.
#[test]
fn sql_only_in_store_modules() {
    let mut violations = Vec::new();
    for file in &tree().files {
        if SQL_PATHS.iter().any(|allowed| under(&file.path, allowed)) {
            continue;
        }
        for literal in &file.literals {
            if let Some(keyword) = sql_keyword(&literal.text) {
                violations.push(format!(
                    "{}:{}: SQL ({keyword}) outside a store module: {:?}",
                    file.path,
                    file.line_of(literal.offset),
                    abbreviate(&literal.text)
                ));
            }
        }
    }
    finish("sql_only_in_store_modules", &violations);
}

/// The SQL keyword `literal` holds, if it holds SQL.
fn sql_keyword(literal: &str) -> Option<&'static str> {
    // One line, single spaces: SQL is often split over lines (`\` continuations, raw strings).
    let text = literal
        .replace("\\\n", " ")
        .split_whitespace()
        .collect::<Vec<_>>()
        .join(" ");
    const ANYWHERE: &[&str] = &[
        "SELECT ",
        "INSERT INTO ",
        "DELETE FROM ",
        "CREATE TABLE",
        "CREATE INDEX",
        "CREATE UNIQUE INDEX",
        "ALTER TABLE",
        "DROP TABLE",
        "PRAGMA ",
    ];
    if let Some(keyword) = ANYWHERE.iter().find(|keyword| text.contains(*keyword)) {
        return Some(keyword.trim_end());
    }
    if has_update_set(&text) {
        return Some("UPDATE … SET");
    }
    // Transaction control is a whole statement: `"BEGIN IMMEDIATE"`, `"COMMIT"`, never
    // `"COMMITTED"` (a payment status).
    const STATEMENTS: &[&str] = &["BEGIN", "COMMIT", "ROLLBACK", "SAVEPOINT"];
    let first = text.split([' ', ';']).next().unwrap_or_default();
    STATEMENTS
        .iter()
        .find(|keyword| **keyword == first)
        .copied()
}

/// `UPDATE <table> SET` somewhere in `text` (single-spaced).
fn has_update_set(text: &str) -> bool {
    text.match_indices("UPDATE ").any(|(at, keyword)| {
        let mut words = text[at + keyword.len()..].split(' ');
        let table = words.next().unwrap_or_default();
        !table.is_empty() && words.next() == Some("SET")
    })
}

// ---------------------------------------------------------------------------------------------
// Rule 3: crate dependencies the architecture forbids.

/// A dependency a crate must not have (in `[dependencies]`; dev-dependencies are free).
struct Forbidden {
    krate: &'static str,
    /// Any dependency whose name starts with this (`tonic` also forbids `tonic-prost`, …).
    dependency_prefix: &'static str,
    why: &'static str,
}

/// The crate graph's rules. Rows about crates that do not exist yet are kept (and skipped),
/// so the rule is in place the day the crate appears.
const FORBIDDEN_DEPENDENCIES: &[Forbidden] = &[
    Forbidden {
        krate: "strife-gateway",
        dependency_prefix: "strife-pki",
        why: "the admin's identity is `strife_common::admin`; only setup issues certificates",
    },
    Forbidden {
        krate: "strife-client",
        dependency_prefix: "strife-pki",
        why: "the admin's identity is `strife_common::admin`; only setup issues certificates",
    },
    Forbidden {
        krate: "strife-audit",
        dependency_prefix: "strife-gateway",
        why: "audit reads the gateway's log through the read-only log interface, not the server",
    },
    Forbidden {
        krate: "strife-audit",
        dependency_prefix: "strife-console",
        why: "audit is a reader of the log; the console is a user interface",
    },
    Forbidden {
        krate: "strife-audit",
        dependency_prefix: "strife-pki",
        why: "reading the setup manifest is not issuing certificates",
    },
    Forbidden {
        krate: "strife-ledger",
        dependency_prefix: "tonic",
        why: "the core knows no transport",
    },
    Forbidden {
        krate: "strife-ledger",
        dependency_prefix: "axum",
        why: "the core knows no transport",
    },
    Forbidden {
        krate: "strife-ledger",
        dependency_prefix: "hyper",
        why: "the core knows no transport",
    },
    Forbidden {
        krate: "strife-ledger",
        dependency_prefix: "etcd-client",
        why: "the core knows no discovery",
    },
    Forbidden {
        krate: "strife-console",
        dependency_prefix: "strife-ledger",
        why: "the console goes through the gateway's API, never around it",
    },
    Forbidden {
        krate: "strife-http",
        dependency_prefix: "strife-ledger",
        why: "the HTTP API goes through the gateway's service, never around it",
    },
    Forbidden {
        krate: "strife-audit",
        dependency_prefix: "strife-http",
        why: "audit is a reader of the log; the HTTP API is a transport",
    },
];

/// Features a crate must not enable on one of its dependencies (in `[dependencies]`;
/// dev-dependencies are free).
struct ForbiddenFeature {
    krate: &'static str,
    /// The dependency, by package name.
    dependency: &'static str,
    features: &'static [&'static str],
    why: &'static str,
}

/// The crate graph's rules about features: a dependency the layers allow, but not all of it.
const FORBIDDEN_FEATURES: &[ForbiddenFeature] = &[ForbiddenFeature {
    krate: "strife-ledger",
    dependency: "strife-common",
    features: &["grpc", "etcd"],
    why: "the core knows no transport: strife-common's `net/` and `etcd/` (tonic, hyper, \
          etcd-client) stay out of it",
}];

/// **Crates** (ARCHITECTURE.md, Boundaries: "`strife-gateway` and `strife-client` do not
/// depend on `strife-pki`", "`strife-ledger` links no transport", and the layers of issue 25
/// for crates still to come): every [`FORBIDDEN_DEPENDENCIES`] and [`FORBIDDEN_FEATURES`] row
/// whose crate exists, against its `Cargo.toml`'s `[dependencies]` (and
/// `[target.….dependencies]`), by package name (a renamed dependency counts under its real
/// name). A dependency's features are those its entry names, those of the
/// `[workspace.dependencies]` entry it inherits, its default features unless turned off, and
/// every feature those imply in the dependency's own `[features]`.

#[test]
fn crate_dependencies_keep_the_layers() {
    check_dependencies("crate_dependencies_keep_the_layers");
}

fn check_dependencies(rule: &str) {
    let manifests = crate_manifests();
    let mut violations = Vec::new();
    let mut absent = BTreeSet::new();
    for row in FORBIDDEN_DEPENDENCIES {
        let Some(manifest) = manifests.iter().find(|m| m.name == row.krate) else {
            absent.insert(row.krate);
            continue;
        };
        for dependency in &manifest.dependencies {
            if dependency.starts_with(row.dependency_prefix) {
                violations.push(format!(
                    "{}:{}: {} depends on {dependency}: {}",
                    manifest.path,
                    line_mentioning(&manifest.text, dependency),
                    row.krate,
                    row.why
                ));
            }
        }
    }
    for row in FORBIDDEN_FEATURES {
        let Some(manifest) = manifests.iter().find(|m| m.name == row.krate) else {
            absent.insert(row.krate);
            continue;
        };
        let Some(named) = manifest.features.get(row.dependency) else {
            continue;
        };
        let dependency = manifests.iter().find(|m| m.name == row.dependency);
        let enabled = implied_features(named, dependency);
        for feature in row.features.iter().filter(|f| enabled.contains(**f)) {
            violations.push(format!(
                "{}:{}: {} enables {}'s feature `{feature}`: {}",
                manifest.path,
                line_mentioning(&manifest.text, row.dependency),
                row.krate,
                row.dependency,
                row.why
            ));
        }
    }
    if !absent.is_empty() {
        eprintln!("{rule}: not in the tree yet, their rows kept: {absent:?}");
    }
    finish(rule, &violations);
}

/// `named` and every feature they imply through `dependency`'s `[features]` (`default`
/// included when named); `dep:…` and `crate/feature` entries are not features of its own.
fn implied_features(named: &BTreeSet<String>, dependency: Option<&Manifest>) -> BTreeSet<String> {
    let table = dependency
        .and_then(|manifest| manifest.table.get("features"))
        .and_then(toml::Value::as_table);
    let mut enabled = named.clone();
    let mut pending: Vec<String> = named.iter().cloned().collect();
    while let Some(feature) = pending.pop() {
        let implied = table
            .and_then(|table| table.get(&feature))
            .and_then(toml::Value::as_array)
            .into_iter()
            .flatten()
            .filter_map(toml::Value::as_str)
            .filter(|implied| !implied.contains(':') && !implied.contains('/'));
        for implied in implied {
            if enabled.insert(implied.to_owned()) {
                pending.push(implied.to_owned());
            }
        }
    }
    enabled
}

/// A crate's manifest: its package name and what it depends on (outside tests).
struct Manifest {
    path: String,
    text: String,
    table: toml::Table,
    name: String,
    dependencies: Vec<String>,
    /// Each dependency's features as its entry turns them on (`default` among them unless
    /// turned off), before what they imply.
    features: BTreeMap<String, BTreeSet<String>>,
}

/// Every `crates/*/Cargo.toml`.
fn crate_manifests() -> Vec<Manifest> {
    let workspace: toml::Table = std::fs::read_to_string(root().join("Cargo.toml"))
        .expect("the workspace manifest")
        .parse()
        .expect("the workspace manifest parses");
    let workspace_dependencies = workspace
        .get("workspace")
        .and_then(|workspace| workspace.get("dependencies"))
        .and_then(toml::Value::as_table)
        .cloned()
        .unwrap_or_default();
    let mut manifests = Vec::new();
    for entry in sorted_entries(&root().join("crates")) {
        let path = entry.join("Cargo.toml");
        let Ok(text) = std::fs::read_to_string(&path) else {
            continue;
        };
        let table: toml::Table = text.parse().expect("a crate manifest parses");
        let name = table["package"]["name"].as_str().unwrap().to_owned();
        let mut tables: Vec<&toml::Table> = table
            .get("dependencies")
            .and_then(toml::Value::as_table)
            .into_iter()
            .collect();
        if let Some(targets) = table.get("target").and_then(toml::Value::as_table) {
            tables.extend(
                targets
                    .values()
                    .filter_map(|target| target.get("dependencies")?.as_table()),
            );
        }
        let mut dependencies = Vec::new();
        let mut features = BTreeMap::new();
        for (key, spec) in tables.into_iter().flat_map(|table| table.iter()) {
            // `x.workspace = true` takes its source, name and features from the root.
            let inherited = (spec.get("workspace").and_then(toml::Value::as_bool) == Some(true))
                .then(|| workspace_dependencies.get(key))
                .flatten();
            let renamed = [Some(spec), inherited]
                .into_iter()
                .flatten()
                .find_map(|spec| spec.get("package")?.as_str());
            let dependency = renamed.unwrap_or(key).to_owned();
            let mut named: BTreeSet<String> = [Some(spec), inherited]
                .into_iter()
                .flatten()
                .filter_map(|spec| spec.get("features")?.as_array())
                .flatten()
                .filter_map(|feature| Some(feature.as_str()?.to_owned()))
                .collect();
            // Default features stay on unless the entry that decides them turns them off.
            let decides = inherited.unwrap_or(spec).get("default-features");
            if decides.and_then(toml::Value::as_bool) != Some(false) {
                named.insert("default".to_owned());
            }
            features.insert(dependency.clone(), named);
            dependencies.push(dependency);
        }
        manifests.push(Manifest {
            path: relative(&path),
            text,
            table,
            name,
            dependencies,
            features,
        });
    }
    manifests
}

// ---------------------------------------------------------------------------------------------
// Rule 4: every RPC has its rows.

/// The services the gateway serves, whose every method needs a role-table entry.
const GATEWAY_SERVICES: &[&str] = &["Gateway", "Coordinator"];

/// The test tables every RPC needs a row in. Both name a method by a string literal of its
/// bare name (`"Pay"`, `"GetDecision"`), next to the request they send it.
const ROW_TABLES: &[&str] = &[
    "crates/strife/tests/e2e/security/status_codes.rs",
    "crates/strife/tests/e2e/security/matrix.rs",
];

/// **Every RPC of the gateway is in the role table** (the code map's `roles.rs`, "the method
/// → roles table — the only place"; ARCHITECTURE.md, Identity: "`roles.rs` decides who may
/// call which method"): for each method of the gateway's services in
/// `strife_proto::FILE_DESCRIPTOR_SET` (package `strife.v1`, so a new RPC in a `.proto` file
/// is caught), `roles::allowed_roles` answers `Some` (the function is called, not parsed).
#[test]
fn every_gateway_rpc_has_a_role() {
    let mut violations = Vec::new();
    for (service, method) in strife_v1_methods() {
        let path = format!("/strife.v1.{service}/{method}");
        if GATEWAY_SERVICES.contains(&service.as_str())
            && strife_gateway::roles::allowed_roles(&path).is_none()
        {
            violations.push(format!(
                "crates/strife-gateway/src/roles.rs: {path} has no entry in `allowed_roles`"
            ));
        }
    }
    finish("every_gateway_rpc_has_a_role", &violations);
}

/// **Every RPC has its rows in both test tables** (ARCHITECTURE.md, Boundaries:
/// "`tests/e2e/status_codes.rs` asserts it for every RPC"; `security_matrix.rs` says of itself
/// "the security matrix over every RPC of both services"): each method of every `strife.v1` service appears as a
/// `"Method"` literal in each of [`ROW_TABLES`]. The literal is looked for in the whole file,
/// so `OpenAccount` (a Bank and a Gateway method) is one name there.
#[test]
fn every_rpc_has_its_test_rows() {
    let methods = strife_v1_methods();
    let mut violations = Vec::new();
    for table in ROW_TABLES {
        let names = literals_of(table);
        for (service, method) in &methods {
            if !names.contains(method.as_str()) {
                violations.push(format!(
                    "{table}: no row for /strife.v1.{service}/{method} (no \"{method}\" literal)"
                ));
            }
        }
    }
    finish("every_rpc_has_its_test_rows", &violations);
}

/// (service, method) of every RPC in package `strife.v1`, as the descriptors say.
fn strife_v1_methods() -> Vec<(String, String)> {
    let set = prost_types::FileDescriptorSet::decode(strife_proto::FILE_DESCRIPTOR_SET)
        .expect("FILE_DESCRIPTOR_SET decodes");
    let methods = set
        .file
        .iter()
        .filter(|file| file.package() == "strife.v1")
        .flat_map(|file| &file.service)
        .flat_map(|service| {
            service
                .method
                .iter()
                .map(|method| (service.name().to_owned(), method.name().to_owned()))
        })
        .collect::<Vec<_>>();
    assert!(methods.len() > 20, "too few strife.v1 methods: {methods:?}");
    methods
}

/// The string literals of a file (test files included: here they are the point).
fn literals_of(path: &str) -> BTreeSet<String> {
    let text = std::fs::read_to_string(root().join(path)).expect(path);
    lex(&text)
        .1
        .into_iter()
        .map(|literal| literal.text)
        .collect()
}

// ---------------------------------------------------------------------------------------------
// Rule 5: reason codes live in one module.

/// The reason module to be: every reason code defined once, as a constant, and listed in
/// `pub const ALL: &[&str]`.
const REASON_MODULE: &str = "crates/strife-common/src/reason.rs";

/// Until [`REASON_MODULE`] exists, the reason codes found in the tree today: the failure
/// classes (`failure::reason`), the coordinator's transient aborts (`failure` and
/// `strife_gateway::payment::reason`), settlement and refund refusals (`failure::settlement`),
/// a bank's leg aborts (`strife_bank::participant::reason`, `metrics::ABORT_REASONS`) and the
/// gateway's reason for a bank refusal without one (`registry`).
const KNOWN_REASON_CODES: &[&str] = &[
    // failure::reason: a failure's class.
    "invalid_argument",
    "unauthenticated",
    "permission_denied",
    "not_found",
    "unknown_bank",
    "already_exists",
    "in_progress",
    "unavailable",
    "unimplemented",
    "resource_exhausted",
    "too_large",
    "internal",
    // Transient aborts.
    "bank_timeout",
    "bank_unavailable",
    "gateway_restarted",
    "decision_timeout",
    // Settlement and refunds.
    "net_debit_cap_exceeded",
    "position_overflow",
    "window_not_open",
    "window_open",
    "window_already_settled",
    "payment_not_committed",
    "payment_is_a_refund",
    "refund_exceeds_payment",
    // A bank's leg aborts.
    "account_not_found",
    "currency_mismatch",
    "insufficient_funds",
    "balance_overflow",
    "account_owner_mismatch",
    "aborted_by_coordinator",
    "aborted_before_prepare",
    // The gateway's, for a bank's refusal that carried none.
    "bank_refused",
];

/// **Reason codes live in one module** (issue 25; ARCHITECTURE.md, Boundaries, "Each claim
/// names the tidy test that keeps it"): a string literal equal to a reason code appears only
/// in [`REASON_MODULE`]; everyone else names the constant. The codes are that module's string
/// literals once it exists (those shaped like a code: `lower_snake`), [`KNOWN_REASON_CODES`]
/// until then.
#[test]
fn reason_codes_live_in_one_module() {
    let codes = reason_codes();
    let mut violations = Vec::new();
    for file in &tree().files {
        if file.path == REASON_MODULE {
            continue;
        }
        for literal in &file.literals {
            if codes.contains(literal.text.as_str()) {
                violations.push(format!(
                    "{}:{}: reason code {:?} outside {REASON_MODULE}",
                    file.path,
                    file.line_of(literal.offset),
                    literal.text
                ));
            }
        }
    }
    finish("reason_codes_live_in_one_module", &violations);
}

/// The reason codes: [`REASON_MODULE`]'s if it exists, else the built-in list.
fn reason_codes() -> BTreeSet<String> {
    let Some(module) = tree().file(REASON_MODULE) else {
        eprintln!(
            "reason_codes_live_in_one_module: {REASON_MODULE} does not exist yet; \
             using the {} codes built into this test",
            KNOWN_REASON_CODES.len()
        );
        return KNOWN_REASON_CODES
            .iter()
            .map(|code| (*code).to_owned())
            .collect();
    };
    let is_code = |text: &str| {
        text.starts_with(|c: char| c.is_ascii_lowercase())
            && text.bytes().all(|b| b.is_ascii_lowercase() || b == b'_')
    };
    let codes: BTreeSet<String> = module
        .literals
        .iter()
        .map(|literal| literal.text.clone())
        .filter(|text| is_code(text))
        .collect();
    assert!(!codes.is_empty(), "{REASON_MODULE} defines no reason code");
    codes
}

// ---------------------------------------------------------------------------------------------
// Rule 6: the `#[allow(unsafe_code)]` count ARCHITECTURE.md states.

/// The sentence of ARCHITECTURE.md that states the count: `<before>N<after>`, whitespace and
/// line breaks as one space.
const UNSAFE_SENTENCE: (&str, &str) = (
    "`unsafe_code` is denied except ",
    " documented `#[allow(unsafe_code)]`s",
);

/// **`unsafe_code` is denied except N documented `#[allow(unsafe_code)]`s** (ARCHITECTURE.md,
/// Boundaries, "Crates"): N is read from that sentence and must equal the number of
/// `#[allow(…unsafe_code…)]` / `#![allow(…)]` (and `expect`) attributes in non-test code,
/// counting lists such as `#[allow(clippy::x, unsafe_code)]`. A new `unsafe` block therefore
/// changes the sentence too, in the same commit.
#[test]
fn unsafe_code_allows_are_counted() {
    let architecture = std::fs::read_to_string(root().join("ARCHITECTURE.md")).unwrap();
    let stated = stated_unsafe_allows(&architecture);
    let mut found = Vec::new();
    for file in &tree().files {
        for offset in unsafe_code_allows(&file.code) {
            found.push(format!("{}:{}", file.path, file.line_of(offset)));
        }
    }
    let mut violations = Vec::new();
    match stated {
        None => violations.push(format!(
            "ARCHITECTURE.md: no sentence \"{}N{}\"",
            UNSAFE_SENTENCE.0, UNSAFE_SENTENCE.1
        )),
        Some(stated) if stated != found.len() => violations.push(format!(
            "ARCHITECTURE.md states {stated} `#[allow(unsafe_code)]`s; the code has {}:\n    {}",
            found.len(),
            found.join("\n    ")
        )),
        Some(_) => {}
    }
    eprintln!("unsafe_code_allows_are_counted: {found:#?}");
    finish("unsafe_code_allows_are_counted", &violations);
}

/// N of the sentence [`UNSAFE_SENTENCE`] in `markdown`.
fn stated_unsafe_allows(markdown: &str) -> Option<usize> {
    let text = markdown.split_whitespace().collect::<Vec<_>>().join(" ");
    let (before, after) = UNSAFE_SENTENCE;
    let start = text.find(before)? + before.len();
    let (number, rest) = text[start..].split_at(text[start..].find(' ')?);
    rest.starts_with(after)
        .then(|| number.parse().ok())
        .flatten()
}

/// Offsets of every `unsafe_code` inside an `allow(…)` / `expect(…)` attribute of `code`.
fn unsafe_code_allows(code: &str) -> Vec<usize> {
    let bytes = code.as_bytes();
    let mut found = Vec::new();
    for (at, _) in code.match_indices('#') {
        let open = if code[at..].starts_with("#![") {
            at + 2
        } else if code[at..].starts_with("#[") {
            at + 1
        } else {
            continue;
        };
        let attribute = &code[open..=matching(bytes, open)];
        if !(attribute.contains("allow(") || attribute.contains("expect(")) {
            continue;
        }
        for (inner, _) in attribute.match_indices("unsafe_code") {
            let before = attribute.as_bytes().get(inner.wrapping_sub(1));
            let after = attribute.as_bytes().get(inner + "unsafe_code".len());
            if !before.is_some_and(|b| is_ident_byte(*b))
                && !after.is_some_and(|b| is_ident_byte(*b))
            {
                found.push(at);
            }
        }
    }
    found
}

// ---------------------------------------------------------------------------------------------
// Rule 7: no `use` cycle between files.

/// **No `use` cycle between the files of a crate** (issue 25; ARCHITECTURE.md, Boundaries,
/// "Each claim names the tidy test that keeps it"): the file-level import graph of each crate
/// has no strongly connected component of more than one file.
///
/// The graph: an arrow from a file to the file that defines what it names, for every
/// - `use` leaf (`pub use` too) rooted at `crate::`, `super::`, `self::` or a child module of
///   where it stands (`use session::Sessions` in `web/mod.rs`), glob imports included (`use
///   super::*` is an arrow to the parent);
/// - path in code with such a root (`crate::api::payment_proto(…)`, `super::X`,
///   `sqlite::SqliteGatewayStore::open(…)`).
///
/// A path resolves to the longest module path that names a file (`foo.rs` or `foo/mod.rs`;
/// an inline `mod x { … }` belongs to its file, and `self`/`super` inside it count from it).
/// When the name after that module is one the file itself imports (a re-export such as
/// `pub use failure::Failure` in `lib.rs`, or a private `use`), the path is followed to where
/// the name comes from: naming `crate::Failure` is an arrow to `failure.rs`, not to `lib.rs`.
/// So a parent that only declares its children (`mod child;` is no arrow) or re-exports them
/// is never the middle of a false cycle; its own `pub use child::X` is still an arrow from it
/// to the child (it is an import), and a child's `use super::X` of a name the parent defines
/// is an arrow to the parent. A parent that re-exports a child which uses the parent's own
/// items is therefore a cycle (`store/mod.rs` ↔ `store/sqlite.rs`: the interface and the
/// façade share a file).
///
/// A crate's root is `src/lib.rs`, else `src/main.rs`; `#[path]` attributes are not followed
/// (the one in the tree marks a test module). Each cycle is printed as its files, the shortest
/// loop through each arrow, and every arrow with the names (and lines) that make it.
#[test]
fn no_use_cycles_between_files() {
    let graph = import_graph();
    let mut violations = Vec::new();
    for component in strongly_connected(&graph) {
        violations.push(describe_cycle(&graph, &component));
    }
    finish("no_use_cycles_between_files", &violations);
}

/// One arrow's reasons: the names that tie two files, each with the line naming it.
type Ties = BTreeMap<String, usize>;

/// The files of the tree and the import arrows between them.
struct Graph {
    /// Indexes into `tree().files`.
    nodes: Vec<usize>,
    edges: BTreeMap<usize, BTreeMap<usize, Ties>>,
}

/// Where each module of a crate lives, and what each module imports.
struct CrateModules {
    /// Module path (`["store", "sqlite"]`) → file index; inline modules map to their file.
    file_of: BTreeMap<Vec<String>, usize>,
    /// (module path, a name it imports) → the absolute path the name stands for.
    imports: BTreeMap<(Vec<String>, String), Vec<String>>,
}

/// A path a file names, and where in the file.
struct Naming {
    offset: usize,
    /// The module the path is written in (inline modules included).
    module: Vec<String>,
    /// As written: `crate::store::GatewayStore`, `super` (of `super::*`).
    segments: Vec<String>,
    /// A `use` leaf (which the module then knows by a name), not a path in code.
    imported: bool,
    /// `use a::b as c`: `c`.
    alias: Option<String>,
    /// `use a::*`.
    glob: bool,
}

impl Naming {
    /// As written, for a violation line.
    fn written(&self) -> String {
        let mut text = self.segments.join("::");
        if self.glob {
            text.push_str("::*");
        }
        if let Some(alias) = &self.alias {
            text.push_str(&format!(" as {alias}"));
        }
        text
    }
}

fn import_graph() -> Graph {
    let files = &tree().files;
    let mut graph = Graph {
        nodes: Vec::new(),
        edges: BTreeMap::new(),
    };
    let mut crates: BTreeMap<&str, Vec<usize>> = BTreeMap::new();
    for (index, file) in files.iter().enumerate() {
        if let Some((krate, _)) = file.module.as_ref() {
            crates.entry(krate).or_default().push(index);
        }
    }
    for members in crates.values() {
        let mut modules = CrateModules {
            file_of: BTreeMap::new(),
            imports: BTreeMap::new(),
        };
        for &index in members {
            let (_, module) = files[index].module.as_ref().unwrap();
            modules.file_of.insert(module.clone(), index);
            for (_, _, inline) in inline_modules(&files[index].code) {
                let mut path = module.clone();
                path.extend(inline);
                modules.file_of.insert(path, index);
            }
        }
        let namings: Vec<(usize, Vec<Naming>)> = members
            .iter()
            .map(|&index| (index, namings(&files[index], &modules.file_of)))
            .collect();
        // What each module imports, by the name it imports it under (globs name nothing).
        for (_, names) in &namings {
            for naming in names
                .iter()
                .filter(|naming| naming.imported && !naming.glob)
            {
                if let Some(target) = absolute(naming, &modules.file_of) {
                    let name = naming.alias.clone().or_else(|| target.last().cloned());
                    if let Some(name) = name {
                        modules
                            .imports
                            .insert((naming.module.clone(), name), target);
                    }
                }
            }
        }
        for (from, names) in namings {
            graph.nodes.push(from);
            for naming in names {
                let Some(target) = absolute(&naming, &modules.file_of) else {
                    continue;
                };
                let to = resolve(&modules, &target, 0);
                if to != from {
                    let line = files[from].line_of(naming.offset);
                    let ties = graph.edges.entry(from).or_default().entry(to).or_default();
                    ties.entry(naming.written()).or_insert(line);
                }
            }
        }
    }
    graph
}

/// Every path `file` names that may lead to another file of its crate: `use` leaves and
/// paths in code, rooted at `crate`, `super`, `self` or a child module.
fn namings(file: &SourceFile, file_of: &BTreeMap<Vec<String>, usize>) -> Vec<Naming> {
    let (_, module) = file.module.as_ref().unwrap();
    let inline = inline_modules(&file.code);
    let module_at = |offset: usize| {
        let mut path = module.clone();
        if let Some((_, _, names)) = inline
            .iter()
            .filter(|(start, end, _)| (*start..*end).contains(&offset))
            .max_by_key(|(_, _, names)| names.len())
        {
            path.extend(names.iter().cloned());
        }
        path
    };
    let mut found = Vec::new();
    let uses = use_declarations(&file.code);
    for (start, end) in &uses {
        for (segments, alias, glob) in use_leaves(&file.code[*start..*end]) {
            found.push(Naming {
                offset: *start,
                module: module_at(*start),
                segments,
                imported: true,
                alias,
                glob,
            });
        }
    }
    for (offset, segments) in code_paths(&file.code) {
        if uses
            .iter()
            .any(|(start, end)| (*start..*end).contains(&offset))
        {
            continue;
        }
        let module = module_at(offset);
        let first = segments[0].as_str();
        let mut child = module.clone();
        child.push(first.to_owned());
        if matches!(first, "crate" | "super" | "self") || file_of.contains_key(&child) {
            found.push(Naming {
                offset,
                module,
                segments,
                imported: false,
                alias: None,
                glob: false,
            });
        }
    }
    found
}

/// The absolute module path a naming stands for, or `None` for a path into another crate.
fn absolute(naming: &Naming, file_of: &BTreeMap<Vec<String>, usize>) -> Option<Vec<String>> {
    let segments: Vec<&str> = naming.segments.iter().map(String::as_str).collect();
    let (&first, rest) = segments.split_first()?;
    let mut path = naming.module.clone();
    let mut rest = rest;
    match first {
        "crate" | "$crate" => path.clear(),
        "self" => {}
        "super" => {
            path.pop()?;
            while rest.first() == Some(&"super") {
                path.pop()?;
                rest = &rest[1..];
            }
        }
        child => {
            path.push(child.to_owned());
            if !file_of.contains_key(&path) {
                return None; // Another crate (`std::…`, `strife_common::…`).
            }
        }
    }
    path.extend(rest.iter().map(|segment| (*segment).to_owned()));
    Some(path)
}

/// The file that defines what `path` names: the longest module prefix that has a file,
/// followed through that module's own imports when the next name is one of them.
fn resolve(modules: &CrateModules, path: &[String], depth: usize) -> usize {
    let known = (0..=path.len())
        .rev()
        .find(|end| modules.file_of.contains_key(&path[..*end]))
        .expect("the crate root is a module");
    let file = modules.file_of[&path[..known]];
    if known < path.len() && depth < 8 {
        let key = (path[..known].to_vec(), path[known].clone());
        if let Some(target) = modules.imports.get(&key) {
            let mut next = target.clone();
            next.extend_from_slice(&path[known + 1..]);
            if next != path {
                return resolve(modules, &next, depth + 1);
            }
        }
    }
    file
}

/// The strongly connected components of more than one file (Tarjan's algorithm).
fn strongly_connected(graph: &Graph) -> Vec<Vec<usize>> {
    struct State<'a> {
        graph: &'a Graph,
        index: BTreeMap<usize, usize>,
        low: BTreeMap<usize, usize>,
        stack: Vec<usize>,
        on_stack: BTreeSet<usize>,
        components: Vec<Vec<usize>>,
    }
    fn visit(state: &mut State, node: usize) {
        let next = state.index.len();
        state.index.insert(node, next);
        state.low.insert(node, next);
        state.stack.push(node);
        state.on_stack.insert(node);
        let targets: Vec<usize> = state
            .graph
            .edges
            .get(&node)
            .map(|edges| edges.keys().copied().collect())
            .unwrap_or_default();
        for target in targets {
            if !state.index.contains_key(&target) {
                visit(state, target);
                let low = state.low[&node].min(state.low[&target]);
                state.low.insert(node, low);
            } else if state.on_stack.contains(&target) {
                let low = state.low[&node].min(state.index[&target]);
                state.low.insert(node, low);
            }
        }
        if state.low[&node] == state.index[&node] {
            let mut component = Vec::new();
            while let Some(member) = state.stack.pop() {
                state.on_stack.remove(&member);
                component.push(member);
                if member == node {
                    break;
                }
            }
            if component.len() > 1 {
                component.sort_unstable();
                state.components.push(component);
            }
        }
    }
    let mut state = State {
        graph,
        index: BTreeMap::new(),
        low: BTreeMap::new(),
        stack: Vec::new(),
        on_stack: BTreeSet::new(),
        components: Vec::new(),
    };
    for &node in &graph.nodes {
        if !state.index.contains_key(&node) {
            visit(&mut state, node);
        }
    }
    state.components.sort();
    state.components
}

/// A component as a violation: its files, then each arrow between them with the names that
/// make it.
fn describe_cycle(graph: &Graph, component: &[usize]) -> String {
    let files = &tree().files;
    let short = |index: usize| {
        let path = &files[index].path;
        path.split_once("/src/")
            .map_or(path.as_str(), |(_, rest)| rest)
    };
    let krate = files[component[0]].module.as_ref().unwrap().0.as_str();
    let members: Vec<&str> = component.iter().map(|index| short(*index)).collect();
    let mut text = format!("{krate}: cycle between {}", members.join(", "));
    for cycle in shortest_cycles(graph, component) {
        let mut names: Vec<&str> = cycle.iter().map(|index| short(*index)).collect();
        names.push(names[0]);
        text.push_str(&format!("\n      cycle: {}", names.join(" → ")));
    }
    for from in component {
        for (to, ties) in &graph.edges[from] {
            if !component.contains(to) {
                continue;
            }
            let names: Vec<String> = ties
                .iter()
                .map(|(name, line)| format!("{name} ({line})"))
                .collect();
            text.push_str(&format!(
                "\n      {} → {}: {}",
                short(*from),
                short(*to),
                names.join(", ")
            ));
        }
    }
    text
}

/// For each arrow inside `component`, the shortest cycle through it; each cycle once, starting
/// at its smallest file. Easier to read than the component's arrows alone.
fn shortest_cycles(graph: &Graph, component: &[usize]) -> BTreeSet<Vec<usize>> {
    let inside = |node: &usize| component.contains(node);
    let targets = |node: usize| {
        graph.edges[&node]
            .keys()
            .copied()
            .filter(inside)
            .collect::<Vec<_>>()
    };
    let mut cycles = BTreeSet::new();
    for &from in component {
        for to in targets(from) {
            // Breadth first from `to` back to `from`.
            let mut came_from = BTreeMap::from([(to, to)]);
            let mut queue = std::collections::VecDeque::from([to]);
            while let Some(node) = queue.pop_front() {
                if node == from {
                    break;
                }
                for next in targets(node) {
                    if let std::collections::btree_map::Entry::Vacant(entry) = came_from.entry(next)
                    {
                        entry.insert(node);
                        queue.push_back(next);
                    }
                }
            }
            let mut cycle = vec![from];
            let mut node = from;
            while node != to {
                node = came_from[&node];
                cycle.push(node);
            }
            // `cycle` runs backwards (from, …, to); arrows go from → to → … → from.
            cycle[1..].reverse();
            let smallest = (0..cycle.len()).min_by_key(|at| cycle[*at]).unwrap();
            cycle.rotate_left(smallest);
            cycles.insert(cycle);
        }
    }
    cycles
}

/// Inline modules of a file: (start, end, path inside the file) of every `mod x { … }`.
fn inline_modules(code: &str) -> Vec<(usize, usize, Vec<String>)> {
    let bytes = code.as_bytes();
    let mut found: Vec<(usize, usize, Vec<String>)> = Vec::new();
    for (at, _) in code.match_indices("mod ") {
        if at > 0 && is_ident_byte(bytes[at - 1]) {
            continue;
        }
        let name_start = at + "mod ".len();
        let name_end = ident_end(bytes, name_start);
        let open = skip_spaces(bytes, name_end);
        if name_end == name_start || bytes.get(open) != Some(&b'{') {
            continue; // `mod x;` (a file of its own) or not a declaration.
        }
        let end = matching(bytes, open);
        let mut path: Vec<String> = found
            .iter()
            .filter(|(start, stop, _)| (*start..*stop).contains(&at))
            .max_by_key(|(_, _, path)| path.len())
            .map(|(_, _, path)| path.clone())
            .unwrap_or_default();
        path.push(code[name_start..name_end].to_owned());
        found.push((open, end, path));
    }
    found
}

/// (start, end) of the tree of every `use` declaration: from after `use ` to its `;`.
fn use_declarations(code: &str) -> Vec<(usize, usize)> {
    let bytes = code.as_bytes();
    let mut found = Vec::new();
    for (at, _) in code.match_indices("use") {
        let boundary_before = at == 0 || !is_ident_byte(bytes[at - 1]);
        let space_after = bytes.get(at + 3).is_some_and(u8::is_ascii_whitespace);
        if boundary_before && space_after {
            let start = at + 3;
            let end = code[start..]
                .find(';')
                .map_or(code.len(), |end| start + end);
            found.push((start, end));
        }
    }
    found
}

/// The leaves of one `use` tree: (path, alias, glob). `a::{self, b::c as d, e::*}` gives
/// `a`, `a::b::c` as `d`, and `a::e` as a glob. A tree rooted at `::` (another crate) gives
/// nothing.
fn use_leaves(tree: &str) -> Vec<(Vec<String>, Option<String>, bool)> {
    let tokens = use_tokens(tree);
    let mut leaves = Vec::new();
    if tokens.first().map(String::as_str) != Some("::") {
        let mut at = 0;
        use_subtree(&tokens, &mut at, &[], &mut leaves);
    }
    leaves
}

fn use_subtree(
    tokens: &[String],
    at: &mut usize,
    prefix: &[String],
    leaves: &mut Vec<(Vec<String>, Option<String>, bool)>,
) {
    let mut path = prefix.to_vec();
    loop {
        match tokens.get(*at).map(String::as_str) {
            Some("{") => {
                *at += 1;
                while let Some(token) = tokens.get(*at) {
                    if token == "}" {
                        break;
                    }
                    use_subtree(tokens, at, &path, leaves);
                    if tokens.get(*at).map(String::as_str) == Some(",") {
                        *at += 1;
                    }
                }
                *at += 1;
                return;
            }
            Some("*") => {
                *at += 1;
                leaves.push((path, None, true));
                return;
            }
            Some(word) if is_ident_byte(word.as_bytes()[0]) || word.starts_with('$') => {
                path.push(word.to_owned());
                *at += 1;
            }
            _ => break,
        }
        if tokens.get(*at).map(String::as_str) == Some("::") {
            *at += 1;
        } else {
            break;
        }
    }
    let mut alias = None;
    if tokens.get(*at).map(String::as_str) == Some("as") {
        alias = tokens.get(*at + 1).cloned();
        *at += 2;
    }
    if path.last().map(String::as_str) == Some("self") {
        path.pop();
    }
    if !path.is_empty() {
        leaves.push((path, alias, false));
    }
}

/// A `use` tree as tokens: words, `::`, `{`, `}`, `,`, `*`.
fn use_tokens(tree: &str) -> Vec<String> {
    let bytes = tree.as_bytes();
    let mut tokens = Vec::new();
    let mut at = 0;
    while at < bytes.len() {
        let byte = bytes[at];
        if is_ident_byte(byte) || byte == b'$' {
            let end = ident_end(bytes, at + 1);
            tokens.push(tree[at..end].to_owned());
            at = end;
        } else if bytes[at..].starts_with(b"::") {
            tokens.push("::".to_owned());
            at += 2;
        } else {
            if matches!(byte, b'{' | b'}' | b',' | b'*') {
                tokens.push((byte as char).to_string());
            }
            at += 1;
        }
    }
    tokens
}

/// Every path of two or more segments in code, at its start: (offset, segments). `a::b::<T>`
/// gives `a::b`; a path starting after `::` or `.` is a continuation, not a start.
fn code_paths(code: &str) -> Vec<(usize, Vec<String>)> {
    let bytes = code.as_bytes();
    let mut found = Vec::new();
    let mut at = 0;
    while at < bytes.len() {
        let starts_word = (bytes[at].is_ascii_alphabetic() || bytes[at] == b'_')
            && (at == 0 || !is_ident_byte(bytes[at - 1]));
        if !starts_word {
            at += 1;
            continue;
        }
        let continuation = code[..at].ends_with("::") || code[..at].ends_with('.');
        let start = at;
        let mut segments = Vec::new();
        loop {
            let end = ident_end(bytes, at);
            segments.push(code[at..end].to_owned());
            at = end;
            let next_is_word = bytes
                .get(at + 2)
                .is_some_and(|b| b.is_ascii_alphabetic() || *b == b'_');
            if code[at..].starts_with("::") && next_is_word {
                at += 2;
            } else {
                break;
            }
        }
        if segments.len() > 1 && !continuation {
            found.push((start, segments));
        }
    }
    found
}

// ---------------------------------------------------------------------------------------------
// The tree: every non-test `.rs` file under `crates/`, lexed once.

/// A string literal: where it starts and what is between its quotes (escapes as written).
struct Literal {
    offset: usize,
    text: String,
}

/// One non-test source file.
struct SourceFile {
    /// From the repository root, with `/`: `crates/strife-gateway/src/auth.rs`.
    path: String,
    /// As read.
    text: String,
    /// `text` with comments, the insides of literals and `#[cfg(test)]` items blanked (spaces;
    /// line breaks kept, so offsets and lines are the text's).
    code: String,
    /// The string literals outside `#[cfg(test)]` items.
    literals: Vec<Literal>,
    /// Where each line starts.
    line_starts: Vec<usize>,
    /// The crate's directory and the module path, for files under a crate's `src/`
    /// (`("strife-gateway", ["store", "sqlite"])`).
    module: Option<(String, Vec<String>)>,
}

impl SourceFile {
    fn read(path: &Path) -> Self {
        let text = std::fs::read_to_string(path).unwrap();
        let (code, literals) = lex(&text);
        let mut code = code.into_bytes();
        let tests = blank_test_items(&mut code);
        let literals = literals
            .into_iter()
            .filter(|literal| !tests.iter().any(|range| range.contains(&literal.offset)))
            .collect();
        let line_starts = std::iter::once(0)
            .chain(text.match_indices('\n').map(|(at, _)| at + 1))
            .collect();
        let path = relative(path);
        // The lexer's self-check: had it taken a quote or a comment for code (or the other
        // way round), brackets would no longer pair up, and every rule would read nonsense.
        for (open, close) in [(b'{', b'}'), (b'(', b')'), (b'[', b']')] {
            let count = |wanted: u8| code.iter().filter(|byte| **byte == wanted).count();
            assert_eq!(
                count(open),
                count(close),
                "{path}: the lexer lost its place"
            );
        }
        SourceFile {
            module: module_of(&path),
            path,
            code: String::from_utf8(code).expect("blanking keeps UTF-8"),
            text,
            literals,
            line_starts,
        }
    }

    /// The 1-based line of a byte offset.
    fn line_of(&self, offset: usize) -> usize {
        self.line_starts.partition_point(|start| *start <= offset)
    }

    fn line_text(&self, line: usize) -> &str {
        self.text.lines().nth(line - 1).unwrap_or_default()
    }
}

struct Tree {
    files: Vec<SourceFile>,
}

impl Tree {
    fn file(&self, path: &str) -> Option<&SourceFile> {
        self.files.iter().find(|file| file.path == path)
    }
}

/// The tree, read once for all rules.
fn tree() -> &'static Tree {
    static TREE: OnceLock<Tree> = OnceLock::new();
    TREE.get_or_init(|| {
        let mut paths = Vec::new();
        rust_files(&root().join("crates"), &mut paths);
        Tree {
            files: paths.iter().map(|path| SourceFile::read(path)).collect(),
        }
    })
}

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../..")
        .canonicalize()
        .unwrap()
}

/// `path` from the repository root, with `/`.
fn relative(path: &Path) -> String {
    let path = path.strip_prefix(root()).unwrap_or(path);
    path.to_string_lossy().replace('\\', "/")
}

/// The non-test `.rs` files under `dir`, sorted.
fn rust_files(dir: &Path, paths: &mut Vec<PathBuf>) {
    for entry in sorted_entries(dir) {
        let name = entry.file_name().unwrap().to_string_lossy().into_owned();
        if entry.is_dir() {
            if name != "tests" && name != "target" {
                rust_files(&entry, paths);
            }
        } else if name.ends_with(".rs") && name != "tests.rs" && !name.ends_with("_tests.rs") {
            paths.push(entry);
        }
    }
}

fn sorted_entries(dir: &Path) -> Vec<PathBuf> {
    let mut entries: Vec<PathBuf> = std::fs::read_dir(dir)
        .unwrap()
        .map(|entry| entry.unwrap().path())
        .collect();
    entries.sort();
    entries
}

/// The crate and module path of a file under `crates/<crate>/src/`: `lib.rs` or `main.rs` is
/// the crate root, `a/b.rs` and `a/b/mod.rs` are `a::b`.
fn module_of(path: &str) -> Option<(String, Vec<String>)> {
    let rest = path.strip_prefix("crates/")?;
    let (krate, rest) = rest.split_once("/src/")?;
    let mut module: Vec<String> = rest
        .trim_end_matches(".rs")
        .split('/')
        .map(str::to_owned)
        .collect();
    if matches!(module.as_slice(), [root] if root == "lib" || root == "main") {
        module.clear();
    }
    if module.last().map(String::as_str) == Some("mod") {
        module.pop();
    }
    Some((krate.to_owned(), module))
}

/// Whether `path` is `allowed` (a file) or under it (a folder, ending in `/`).
fn under(path: &str, allowed: &str) -> bool {
    if allowed.ends_with('/') {
        path.starts_with(allowed)
    } else {
        path == allowed
    }
}

/// The 1-based line of `text` that first mentions `word` at a line's start (a TOML key).
fn line_mentioning(text: &str, word: &str) -> usize {
    text.lines()
        .position(|line| line.trim_start().starts_with(word))
        .map_or(0, |index| index + 1)
}

/// A literal's first 60 characters, for a violation line.
fn abbreviate(text: &str) -> String {
    let one_line = text.split_whitespace().collect::<Vec<_>>().join(" ");
    match one_line.char_indices().nth(60) {
        Some((at, _)) => format!("{}…", &one_line[..at]),
        None => one_line,
    }
}

/// Prints every violation and fails if there is any.
fn finish(rule: &str, violations: &[String]) {
    if violations.is_empty() {
        return;
    }
    let list = violations.join("\n  ");
    panic!("{rule}: {} violation(s):\n  {list}", violations.len());
}

// ---------------------------------------------------------------------------------------------
// The lexer: just enough of Rust's to tell code from comments and literals.

/// `text` with comments and the insides of string and char literals blanked, and the string
/// literals (raw, byte and C strings too) with their offsets.
fn lex(text: &str) -> (String, Vec<Literal>) {
    let bytes = text.as_bytes();
    let mut code = bytes.to_vec();
    let mut literals = Vec::new();
    let mut at = 0;
    while at < bytes.len() {
        // Bytes, not `str`: `at` may stand inside a non-ASCII character of code.
        if bytes[at..].starts_with(b"//") {
            let end = (at..bytes.len())
                .find(|end| bytes[*end] == b'\n')
                .unwrap_or(bytes.len());
            blank(&mut code, at, end);
            at = end;
        } else if bytes[at..].starts_with(b"/*") {
            let end = block_comment_end(bytes, at);
            blank(&mut code, at, end);
            at = end;
        } else if let Some((open, close, end)) = string_at(bytes, at) {
            literals.push(Literal {
                offset: at,
                text: text[open..close].to_owned(),
            });
            blank(&mut code, open, close);
            at = end;
        } else if let Some(end) = char_at(bytes, at) {
            blank(&mut code, at + 1, end - 1);
            at = end;
        } else {
            at += 1;
        }
    }
    let code = String::from_utf8(code).expect("comments and literals end on ASCII");
    (code, literals)
}

/// Replaces `code[start..end]` by spaces, keeping line breaks.
fn blank(code: &mut [u8], start: usize, end: usize) {
    for byte in &mut code[start..end] {
        if *byte != b'\n' {
            *byte = b' ';
        }
    }
}

/// The end of the (nested) block comment opening at `at`.
fn block_comment_end(bytes: &[u8], mut at: usize) -> usize {
    let mut depth = 0;
    while at < bytes.len() {
        if bytes[at..].starts_with(b"/*") {
            depth += 1;
            at += 2;
        } else if bytes[at..].starts_with(b"*/") {
            depth -= 1;
            at += 2;
            if depth == 0 {
                return at;
            }
        } else {
            at += 1;
        }
    }
    bytes.len()
}

/// A string literal starting at `at` (`"…"`, `r#"…"#`, `b"…"`, `br"…"`, `c"…"`): where its
/// contents start and stop, and where it ends.
fn string_at(bytes: &[u8], at: usize) -> Option<(usize, usize, usize)> {
    if at > 0 && is_ident_byte(bytes[at - 1]) {
        return None; // Inside a word: `for"` is not Rust, and `br` in `abr"` is no prefix.
    }
    let mut quote = at;
    if matches!(bytes[quote], b'b' | b'c') {
        quote += 1;
    }
    let raw = bytes.get(quote) == Some(&b'r');
    if raw {
        quote += 1;
    }
    let mut hashes = 0;
    while raw && bytes.get(quote) == Some(&b'#') {
        hashes += 1;
        quote += 1;
    }
    if bytes.get(quote) != Some(&b'"') {
        return None;
    }
    let open = quote + 1;
    let mut close = open;
    if raw {
        let mut terminator = vec![b'"'];
        terminator.extend(std::iter::repeat_n(b'#', hashes));
        while close < bytes.len() && !bytes[close..].starts_with(&terminator) {
            close += 1;
        }
        return Some((open, close, (close + terminator.len()).min(bytes.len())));
    }
    while close < bytes.len() && bytes[close] != b'"' {
        close += if bytes[close] == b'\\' { 2 } else { 1 };
    }
    let close = close.min(bytes.len());
    Some((open, close, (close + 1).min(bytes.len())))
}

/// The end of a char literal starting at `at` (`'x'`, `'\n'`, `'\u{1F600}'`, `b'x'`); `None`
/// for a lifetime or label (`'a`, `'static`).
fn char_at(bytes: &[u8], at: usize) -> Option<usize> {
    let quote = if bytes[at] == b'b' && (at == 0 || !is_ident_byte(bytes[at - 1])) {
        at + 1
    } else {
        at
    };
    if bytes.get(quote) != Some(&b'\'') {
        return None;
    }
    if bytes.get(quote + 1) == Some(&b'\\') {
        let close = (quote + 3..bytes.len()).find(|i| bytes[*i] == b'\'')?;
        return Some(close + 1);
    }
    let first = *bytes.get(quote + 1)?;
    let width = match first {
        0..=0x7f => 1,
        0xc0..=0xdf => 2,
        0xe0..=0xef => 3,
        _ => 4,
    };
    (bytes.get(quote + 1 + width) == Some(&b'\'')).then_some(quote + 2 + width)
}

/// Blanks every item marked `#[cfg(test)]` (with the attributes after it) in `code`, which
/// has comments and literals blanked already; returns the blanked ranges.
fn blank_test_items(code: &mut [u8]) -> Vec<std::ops::Range<usize>> {
    let marker = b"#[cfg(test)]";
    let mut ranges = Vec::new();
    let mut from = 0;
    while let Some(found) = code[from..].windows(marker.len()).position(|w| w == marker) {
        let start = from + found;
        let end = item_end(code, start + marker.len());
        blank(code, start, end);
        ranges.push(start..end);
        from = end;
    }
    ranges
}

/// The end of the item starting at `at` (after its first attribute): through more
/// attributes, then to its `;` or the `}` closing its body, whichever comes first outside
/// parentheses and brackets.
fn item_end(code: &[u8], mut at: usize) -> usize {
    loop {
        at = skip_spaces(code, at);
        if code[at..].starts_with(b"#[") {
            at = matching(code, at + 1) + 1;
        } else {
            break;
        }
    }
    let mut depth = 0usize;
    while at < code.len() {
        match code[at] {
            b'(' | b'[' => depth += 1,
            b')' | b']' => depth = depth.saturating_sub(1),
            b';' if depth == 0 => return at + 1,
            b'{' if depth == 0 => return matching(code, at) + 1,
            _ => {}
        }
        at += 1;
    }
    code.len()
}

/// The index of the bracket closing the one at `open` (`(`, `[` or `{`), in blanked code.
fn matching(code: &[u8], open: usize) -> usize {
    let (opening, closing) = match code[open] {
        b'(' => (b'(', b')'),
        b'[' => (b'[', b']'),
        _ => (b'{', b'}'),
    };
    let mut depth = 0usize;
    for (at, byte) in code.iter().enumerate().skip(open) {
        if *byte == opening {
            depth += 1;
        } else if *byte == closing {
            depth -= 1;
            if depth == 0 {
                return at;
            }
        }
    }
    code.len() - 1
}

fn skip_spaces(bytes: &[u8], mut at: usize) -> usize {
    while bytes.get(at).is_some_and(u8::is_ascii_whitespace) {
        at += 1;
    }
    at
}

fn ident_end(bytes: &[u8], mut at: usize) -> usize {
    while bytes.get(at).is_some_and(|b| is_ident_byte(*b)) {
        at += 1;
    }
    at
}

fn is_ident_byte(byte: u8) -> bool {
    byte.is_ascii_alphanumeric() || byte == b'_'
}
