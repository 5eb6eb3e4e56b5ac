//! The HTTP API's security matrix, read from the OpenAPI document so that a new route is in it
//! the day it is added: every operation against a key that holds every scope but the one it
//! needs (403, naming the scope), a key that holds only that scope (never 401 or 403), no key
//! and a revoked key (401), and a client's key with every scope a client can hold against
//! every admin operation (403: a key never grants more than its owner's role).

use serde_json::{json, Value};

use super::api::{Answer, Api};

const USER_SCOPES: &[&str] = &[
    "payments:write",
    "payments:read",
    "refunds:write",
    "events:read",
];
const ADMIN_SCOPES: &[&str] = &["settlement:read", "settlement:write", "admin"];

/// One operation of the document, ready to call.
struct Operation {
    method: String,
    /// Relative to the API's base URL, path parameters filled in.
    path: String,
    scope: String,
    body: Option<Value>,
    idempotency_key: bool,
    /// Its answer is an endless stream (server-sent events): only its refusals are called.
    streams: bool,
}

fn operations(document: &Value) -> Vec<Operation> {
    let mut operations = Vec::new();
    for (path, item) in document["paths"].as_object().unwrap() {
        for (method, operation) in item.as_object().unwrap() {
            let scope = operation["security"][0]["api_key"][0]
                .as_str()
                .unwrap_or_else(|| panic!("{method} {path} names its scope"))
                .to_owned();
            let body = operation["requestBody"]["content"]["application/json"]["schema"]["$ref"]
                .as_str()
                .map(|reference| {
                    let name = reference.rsplit('/').next().unwrap();
                    document["components"]["schemas"][name]["example"].clone()
                });
            let idempotency_key = operation["parameters"]
                .as_array()
                .is_some_and(|parameters| {
                    parameters.iter().any(|p| p["name"] == "Idempotency-Key")
                });
            let filled = path
                .trim_start_matches("/v1/")
                .replace("{payment_id}", "no-such-payment")
                .replace("{idempotency_key}", "no-such-key")
                .replace("{key_id}", "0123456789abcdef")
                .replace("{bank_id}", "bank0")
                .replace("{currency}", "USD")
                .replace("{window_id}", "999");
            let streams = operation["responses"]["200"]["content"]
                .get("text/event-stream")
                .is_some();
            operations.push(Operation {
                streams,
                method: method.to_uppercase(),
                path: filled,
                scope,
                body,
                idempotency_key,
            });
        }
    }
    operations
}

fn call(api: &Api, operation: &Operation, key: Option<&str>, attempt: usize) -> Answer {
    let idempotency_key = format!("matrix-{attempt}");
    let headers: Vec<(&str, &str)> = if operation.idempotency_key {
        vec![("Idempotency-Key", idempotency_key.as_str())]
    } else {
        Vec::new()
    };
    api.call_at(
        0,
        &operation.method,
        &operation.path,
        key,
        &headers,
        operation.body.clone(),
    )
}

#[test]
fn every_operation_needs_its_scope_its_role_and_a_live_key() {
    let api = Api::start(&[]);
    let admin = api.key("admin");
    let document = api.call("GET", "openapi.json", None, None).body;
    let operations = operations(&document);
    assert!(operations.len() >= 19, "{}", operations.len());
    let every_scope: Vec<&str> = USER_SCOPES.iter().chain(ADMIN_SCOPES).copied().collect();
    let admin_key = |scopes: Vec<&str>| {
        let created = api.call(
            "POST",
            "api-keys",
            Some(&admin),
            Some(json!({"scopes": scopes, "description": "matrix"})),
        );
        assert_eq!(created.status, 200, "{}", created.body);
        (
            created.body["secret"].as_str().unwrap().to_owned(),
            created.body["key"]["key_id"].as_str().unwrap().to_owned(),
        )
    };
    let (alice_everything, _) = api.new_key("alice", &USER_SCOPES.join(","));
    let (revoked, revoked_id) = admin_key(every_scope.clone());
    let revoke = api.call(
        "DELETE",
        &format!("api-keys/{revoked_id}"),
        Some(&admin),
        None,
    );
    assert_eq!(revoke.status, 200, "{}", revoke.body);
    let mut rows = 0;
    for (index, operation) in operations.iter().enumerate() {
        let what = format!("{} /v1/{}", operation.method, operation.path);
        // Every scope but the one it needs: refused for the scope, before anything is done.
        let (without, _) = admin_key(
            every_scope
                .iter()
                .copied()
                .filter(|scope| *scope != operation.scope)
                .collect(),
        );
        let refused = call(&api, operation, Some(&without), index);
        assert_eq!(
            refused.status, 403,
            "{what} without {}: {}",
            operation.scope, refused.body
        );
        assert!(
            refused.body["error"]["message"]
                .as_str()
                .unwrap()
                .contains(&operation.scope),
            "{what}: {}",
            refused.body
        );
        // Only the scope it needs: past authentication and authorization (whatever the
        // example request then meets: a payment that does not exist, a window that is not
        // open).
        if !operation.streams {
            let (only, _) = admin_key(vec![operation.scope.as_str()]);
            let allowed = call(&api, operation, Some(&only), index);
            assert!(
                ![401, 403].contains(&allowed.status),
                "{what} with {}: {} {}",
                operation.scope,
                allowed.status,
                allowed.body
            );
        }
        // No key, a revoked key.
        for (label, key) in [("no key", None), ("a revoked key", Some(revoked.as_str()))] {
            let answer = call(&api, operation, key, index);
            assert_eq!(answer.status, 401, "{what} with {label}: {}", answer.body);
        }
        // A client's key with everything a client may hold: the admin's resources stay shut.
        if ADMIN_SCOPES.contains(&operation.scope.as_str()) {
            let answer = call(&api, operation, Some(&alice_everything), index);
            assert_eq!(
                answer.status, 403,
                "{what} with alice's key: {}",
                answer.body
            );
            rows += 1;
        }
        rows += 4;
    }
    assert!(rows >= 19 * 4, "{rows}");
}
