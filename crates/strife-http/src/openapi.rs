//! The OpenAPI 3.1 document of the HTTP API, generated from the handlers' annotations and the
//! JSON types in [`crate::model`], so it cannot describe an API other than the one served. It
//! is served at `/v1/openapi.json` and checked in as `docs/openapi.json` (a test fails when
//! the two differ).
//!
//! The refusals every operation can answer (a bad request, no or a wrong key, a missing
//! scope, a limit, an outage, a bug; and for operations with a body, one too large or not
//! JSON) are added to each by [`Refusals`] rather than repeated in every annotation.

use utoipa::openapi::path::Operation;
use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::openapi::{ContentBuilder, Ref, RefOr, ResponseBuilder};
use utoipa::{Modify, OpenApi};

use crate::{admin, model, payments, stream};

#[derive(OpenApi)]
#[openapi(
    info(
        title = "Strife HTTP API",
        description = "Pay, authorize and capture, refund and follow payments over JSON with a bearer API key. Money is integer minor units with an ISO 4217 currency. Every refusal is `{\"error\": {type, code, message, param, payment_id}}`; `code` is Strife's reason (docs/SPEC.md §7).",
        version = "1"
    ),
    paths(
        payments::pay,
        payments::list_payments,
        payments::get_payment,
        payments::get_payment_by_key,
        payments::refund,
        payments::list_refunds,
        payments::authorize,
        payments::capture,
        payments::void,
        payments::balances,
        payments::link_account,
        payments::events,
        stream::event_stream,
        admin::create_api_key,
        admin::list_api_keys,
        admin::revoke_api_key,
        admin::register_user,
        admin::open_account,
        admin::positions,
        admin::set_cap,
        admin::list_windows,
        admin::close_window,
        admin::window_report,
        admin::settle_window,
    ),
    components(schemas(model::ErrorBody, model::ErrorDetail)),
    modifiers(&Refusals),
    tags(
        (name = "payments", description = "Pay, refund, look payments up."),
        (name = "accounts", description = "Your accounts and balances."),
        (name = "events", description = "Payments as their decisions become durable."),
        (name = "api-keys", description = "Bearer keys with scopes."),
        (name = "admin", description = "Users and accounts (admin keys)."),
        (name = "settlement", description = "Interbank settlement (admin keys)."),
    )
)]
pub struct ApiDoc;

/// The document as served and checked in: pretty JSON with a final newline.
pub fn document() -> String {
    let mut text = ApiDoc::openapi()
        .to_pretty_json()
        .unwrap_or_else(|error| format!("{{\"error\": \"{error}\"}}"));
    text.push('\n');
    text
}

/// Adds the bearer scheme and every operation's common refusals.
struct Refusals;

const COMMON: &[(&str, &str)] = &[
    (
        "400",
        "The request is malformed: a bad field (named in `param`), bad JSON or an unknown field.",
    ),
    (
        "401",
        "No API key, or one that is unknown, revoked or expired.",
    ),
    (
        "403",
        "The key lacks the scope this operation needs, or its owner's role may not call it.",
    ),
    (
        "429",
        "A limit was reached; retry after `Retry-After` seconds.",
    ),
    ("500", "A bug; the detail is in the server log."),
    (
        "503",
        "A bank or the store cannot be reached now; nothing was done. Retry with the same key.",
    ),
];

const WITH_BODY: &[(&str, &str)] = &[
    ("413", "The body is larger than 16 KiB."),
    ("415", "The body is not `application/json`."),
];

impl Modify for Refusals {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        if let Some(components) = openapi.components.as_mut() {
            components.add_security_scheme(
                "api_key",
                SecurityScheme::Http(
                    HttpBuilder::new()
                        .scheme(HttpAuthScheme::Bearer)
                        .bearer_format("sk_<key_id>_<secret>")
                        .description(Some(
                            "An API key: `Authorization: Bearer sk_…`. Create one with `strife client api-key create` or `POST /v1/api-keys`.",
                        ))
                        .build(),
                ),
            );
        }
        for item in openapi.paths.paths.values_mut() {
            for operation in [
                &mut item.get,
                &mut item.put,
                &mut item.post,
                &mut item.delete,
                &mut item.patch,
            ]
            .into_iter()
            .flatten()
            {
                add_refusals(operation);
            }
        }
    }
}

fn add_refusals(operation: &mut Operation) {
    let with_body = operation.request_body.is_some();
    let statuses = COMMON.iter().chain(if with_body { WITH_BODY } else { &[] });
    for (status, description) in statuses {
        operation
            .responses
            .responses
            .entry((*status).to_owned())
            .or_insert_with(|| {
                RefOr::T(
                    ResponseBuilder::new()
                        .description(*description)
                        .content(
                            "application/json",
                            ContentBuilder::new()
                                .schema(Some(Ref::from_schema_name("ErrorBody")))
                                .build(),
                        )
                        .build(),
                )
            });
    }
}

#[cfg(test)]
mod tests {
    /// The checked-in document (`docs/openapi.json`, what integrators and code generators
    /// read) is the one the code generates. After changing the API, regenerate it with
    /// `STRIFE_WRITE_OPENAPI=1 cargo test -p strife-http openapi`.
    #[test]
    fn the_checked_in_openapi_document_is_the_generated_one() {
        let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../../docs/openapi.json");
        let generated = super::document();
        if std::env::var_os("STRIFE_WRITE_OPENAPI").is_some() {
            std::fs::write(path, &generated).unwrap_or_else(|error| panic!("{path}: {error}"));
        }
        let checked_in = std::fs::read_to_string(path).unwrap_or_default();
        assert!(
            checked_in == generated,
            "docs/openapi.json differs from the generated document; regenerate it with \
             `STRIFE_WRITE_OPENAPI=1 cargo test -p strife-http openapi` and review the diff"
        );
    }

    #[test]
    fn every_operation_documents_its_refusals_and_a_scope() {
        let document: serde_json::Value =
            serde_json::from_str(&super::document()).unwrap_or_default();
        assert_eq!(document["openapi"], "3.1.0");
        let paths = document["paths"].as_object().cloned().unwrap_or_default();
        assert!(paths.len() >= 15, "{}", paths.len());
        for (path, item) in paths {
            for (method, operation) in item.as_object().cloned().unwrap_or_default() {
                let responses = &operation["responses"];
                for status in ["200", "400", "401", "403", "429", "500", "503"] {
                    assert!(
                        responses.get(status).is_some(),
                        "{method} {path} documents no {status}"
                    );
                }
                assert!(
                    operation["security"][0]["api_key"].is_array(),
                    "{method} {path} names no scope"
                );
            }
        }
    }
}
