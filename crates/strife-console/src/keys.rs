//! API keys (`/keys`): every user lists, creates and revokes their own keys (the admin sees
//! everyone's and may revoke any). A new key is shown once, on the page that created it;
//! lists show ids only. Each action is the service call gRPC and the HTTP API make.

use std::fmt::Write;
use std::sync::Arc;

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use strife_gateway::scopes::Scope;
use strife_present::{timestamp, timestamp_or};
use strife_proto::v1 as pb;

use crate::form::{accepted, FormInput};
use crate::html::{self, csrf_field, escape, notice, Page};
use crate::session::Session;
use crate::state::{call, Console, LoggedIn};

/// The form field of a scope's checkbox (`scope_payments_write`).
fn field_of(scope: Scope) -> String {
    format!("scope_{}", scope.as_str().replace(':', "_"))
}

pub async fn keys(State(console): State<Arc<Console>>, LoggedIn { session }: LoggedIn) -> Response {
    keys_page(&console, &session, None, StatusCode::OK).await
}

async fn keys_page(
    console: &Console,
    session: &Session,
    message: Option<(&str, String)>,
    status: StatusCode,
) -> Response {
    let mut body = String::new();
    if let Some((kind, text)) = message {
        body.push_str(&text_or_markup(kind, text));
    }
    let mut boxes = String::new();
    for scope in Scope::ALL
        .into_iter()
        .filter(|scope| scope.open_to(session.role))
    {
        let _ = write!(
            boxes,
            "<label class=\"check\"><input type=\"checkbox\" name=\"{field}\" value=\"on\"> {name}</label>",
            field = field_of(scope),
            name = escape(scope.as_str()),
        );
    }
    let _ = write!(
        body,
        "<section><h2>Create a key</h2><p>An API key lets a program use the HTTP API \
         (<code>Authorization: Bearer sk_…</code>) with only the scopes you tick. It is shown \
         once.</p><form method=\"post\" action=\"/keys/create\" id=\"create-key\" class=\"card\">{csrf}\
         <fieldset><legend>Scopes</legend>{boxes}</fieldset>\
         <label>Description <input name=\"description\" maxlength=\"200\" autocomplete=\"off\"></label>\
         <label>Expires in days (empty: never) <input name=\"expires_in_days\" inputmode=\"numeric\"></label>\
         <button type=\"submit\">Create key</button></form></section>",
        csrf = csrf_field(session),
    );
    let listed = console
        .service
        .list_api_keys(&call(session), pb::ListApiKeysRequest::default())
        .await;
    match listed {
        Ok(list) => {
            let mut rows = String::new();
            for key in &list.keys {
                let revoke = if key.revoked_unix_ms == 0 {
                    format!(
                        "<form method=\"post\" action=\"/keys/{id}/revoke\" class=\"inline\">{csrf}\
                         <button type=\"submit\" id=\"revoke-{id}\">Revoke</button></form>",
                        id = escape(&key.key_id),
                        csrf = csrf_field(session),
                    )
                } else {
                    format!("revoked {}", escape(&timestamp(key.revoked_unix_ms)))
                };
                let _ = write!(
                    rows,
                    "<tr><td><code>{id}</code></td><td>{owner}</td><td>{scopes}</td><td>{description}</td>\
                     <td>{created}</td><td>{expires}</td><td>{used}</td><td>{revoke}</td></tr>",
                    id = escape(&key.key_id),
                    owner = escape(&key.owner),
                    scopes = escape(&key.scopes.join(", ")),
                    description = escape(&key.description),
                    created = escape(&timestamp(key.created_unix_ms)),
                    expires = escape(&timestamp_or(key.expires_unix_ms, "never")),
                    used = escape(&timestamp_or(key.last_used_unix_ms, "never")),
                );
            }
            let _ = write!(
                body,
                "<section><h2>Keys</h2><div class=\"scroll\"><table id=\"api-keys\"><thead><tr><th>Key id</th>\
                 <th>Owner</th><th>Scopes</th><th>Description</th><th>Created</th><th>Expires</th>\
                 <th>Last used</th><th></th></tr></thead><tbody>{rows}</tbody></table></div></section>"
            );
        }
        Err(failure) => body.push_str(&notice("error", &html::explain(&failure))),
    }
    Page::new("API keys", Some(session), body)
        .with_status(status)
        .into_response()
}

/// A notice; the `key` kind carries markup built here (the new key, escaped).
fn text_or_markup(kind: &str, text: String) -> String {
    if kind == "key" {
        format!("<div class=\"notice ok\">{text}</div>")
    } else {
        notice(kind, &text)
    }
}

#[derive(Deserialize)]
pub struct CreateKeyForm {
    #[serde(default)]
    csrf: String,
    #[serde(default)]
    description: String,
    #[serde(default)]
    expires_in_days: String,
    #[serde(default)]
    scope_payments_write: Option<String>,
    #[serde(default)]
    scope_payments_read: Option<String>,
    #[serde(default)]
    scope_refunds_write: Option<String>,
    #[serde(default)]
    scope_events_read: Option<String>,
    #[serde(default)]
    scope_settlement_read: Option<String>,
    #[serde(default)]
    scope_settlement_write: Option<String>,
    #[serde(default)]
    scope_admin: Option<String>,
}

impl CreateKeyForm {
    fn scopes(&self) -> Vec<String> {
        [
            (Scope::PaymentsWrite, &self.scope_payments_write),
            (Scope::PaymentsRead, &self.scope_payments_read),
            (Scope::RefundsWrite, &self.scope_refunds_write),
            (Scope::EventsRead, &self.scope_events_read),
            (Scope::SettlementRead, &self.scope_settlement_read),
            (Scope::SettlementWrite, &self.scope_settlement_write),
            (Scope::Admin, &self.scope_admin),
        ]
        .into_iter()
        .filter(|(_, ticked)| ticked.is_some())
        .map(|(scope, _)| scope.as_str().to_owned())
        .collect()
    }
}

pub async fn create_key(
    State(console): State<Arc<Console>>,
    LoggedIn { session }: LoggedIn,
    form: FormInput<CreateKeyForm>,
) -> Response {
    let form = match accepted(&session, form, |form| &form.csrf) {
        Ok(form) => form,
        Err(refused) => return *refused,
    };
    let days = form.expires_in_days.trim();
    let expires_in_seconds = if days.is_empty() {
        0
    } else {
        match days.parse::<u64>() {
            Ok(days) if days > 0 => days.saturating_mul(86_400),
            _ => {
                let problem =
                    "Expires in days must be a whole number of days, or empty.".to_owned();
                return keys_page(
                    &console,
                    &session,
                    Some(("error", problem)),
                    StatusCode::BAD_REQUEST,
                )
                .await;
            }
        }
    };
    let created = console
        .service
        .create_api_key(
            &call(&session),
            pb::CreateApiKeyRequest {
                owner: String::new(),
                scopes: form.scopes(),
                description: form.description.clone(),
                expires_in_seconds,
            },
        )
        .await;
    let (message, status) = match created {
        Ok(created) => (
            (
                "key",
                format!(
                    "Your new key (shown this once; store it now): <code id=\"new-key\">{}</code>",
                    escape(&created.secret)
                ),
            ),
            StatusCode::OK,
        ),
        Err(failure) => (
            ("error", html::explain(&failure)),
            html::http_status(&failure),
        ),
    };
    keys_page(&console, &session, Some(message), status).await
}

#[derive(Deserialize)]
pub struct RevokeForm {
    #[serde(default)]
    csrf: String,
}

pub async fn revoke_key(
    State(console): State<Arc<Console>>,
    LoggedIn { session }: LoggedIn,
    Path(key_id): Path<String>,
    form: FormInput<RevokeForm>,
) -> Response {
    if let Err(refused) = accepted(&session, form, |form| &form.csrf) {
        return *refused;
    }
    let revoked = console
        .service
        .revoke_api_key(&call(&session), pb::RevokeApiKeyRequest { key_id })
        .await;
    let (message, status) = match revoked {
        Ok(key) => (
            (
                "ok",
                format!(
                    "Key {} revoked: every gateway refuses it from now on.",
                    key.key_id
                ),
            ),
            StatusCode::OK,
        ),
        Err(failure) => (
            ("error", html::explain(&failure)),
            html::http_status(&failure),
        ),
    };
    keys_page(&console, &session, Some(message), status).await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_scope_has_its_own_form_field() {
        let fields: Vec<String> = Scope::ALL.into_iter().map(field_of).collect();
        assert_eq!(
            fields,
            [
                "scope_payments_write",
                "scope_payments_read",
                "scope_refunds_write",
                "scope_events_read",
                "scope_settlement_read",
                "scope_settlement_write",
                "scope_admin",
            ]
        );
    }
}
