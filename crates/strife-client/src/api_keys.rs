//! `strife client api-key create|list|revoke`: API keys for the HTTP API. The whole key is
//! printed once, when it is created; lists show ids only.

use serde_json::json;
use strife_proto::v1 as pb;

use crate::args::{ApiKeyCommand, ClientArgs};
use crate::render::{emit, failed, table, timestamp};
use crate::session::Gateway;
use strife_present::timestamp_or;

fn key_json(key: &pb::ApiKey) -> serde_json::Value {
    let optional = |unix_ms: i64| (unix_ms > 0).then_some(unix_ms);
    json!({
        "key_id": key.key_id,
        "owner": key.owner,
        "scopes": key.scopes,
        "description": key.description,
        "created_unix_ms": key.created_unix_ms,
        "expires_unix_ms": optional(key.expires_unix_ms),
        "revoked_unix_ms": optional(key.revoked_unix_ms),
        "last_used_unix_ms": optional(key.last_used_unix_ms),
    })
}

pub async fn api_key(
    args: &ClientArgs,
    gateway: &mut Gateway,
    command: &ApiKeyCommand,
) -> anyhow::Result<u8> {
    match command {
        ApiKeyCommand::Create {
            scopes,
            owner,
            description,
            expires_in_days,
        } => {
            let request = pb::CreateApiKeyRequest {
                owner: owner.clone().unwrap_or_default(),
                scopes: scopes
                    .iter()
                    .flat_map(|list| list.split(','))
                    .map(|scope| scope.trim().to_owned())
                    .filter(|scope| !scope.is_empty())
                    .collect(),
                description: description.clone(),
                expires_in_seconds: expires_in_days.map_or(0, |days| u64::from(days) * 86_400),
            };
            match gateway.create_api_key(request).await {
                Ok(created) => {
                    let created = created.into_inner();
                    let key = created.key.unwrap_or_default();
                    emit(
                        args,
                        format!(
                            "{}\n(API key {} for {} with {}; shown this once — store it now. Send it as `Authorization: Bearer <key>`.)",
                            created.secret,
                            key.key_id,
                            key.owner,
                            key.scopes.join(", ")
                        ),
                        json!({"ok": true, "secret": created.secret, "key": key_json(&key)}),
                    );
                    Ok(0)
                }
                Err(status) => Ok(failed(args, &status)),
            }
        }
        ApiKeyCommand::List { owner } => {
            let request = pb::ListApiKeysRequest {
                owner: owner.clone().unwrap_or_default(),
            };
            match gateway.list_api_keys(request).await {
                Ok(list) => {
                    let keys = list.into_inner().keys;
                    let rows: Vec<Vec<String>> = keys
                        .iter()
                        .map(|key| {
                            vec![
                                key.key_id.clone(),
                                key.owner.clone(),
                                key.scopes.join(","),
                                timestamp(key.created_unix_ms),
                                timestamp_or(key.expires_unix_ms, "never"),
                                timestamp_or(key.revoked_unix_ms, "-"),
                                timestamp_or(key.last_used_unix_ms, "never"),
                                key.description.clone(),
                            ]
                        })
                        .collect();
                    let human = if keys.is_empty() {
                        "no API keys".to_owned()
                    } else {
                        table(
                            &[
                                "KEY ID",
                                "OWNER",
                                "SCOPES",
                                "CREATED",
                                "EXPIRES",
                                "REVOKED",
                                "LAST USED",
                                "DESCRIPTION",
                            ],
                            &rows,
                        )
                    };
                    emit(
                        args,
                        human,
                        json!({"ok": true, "keys": keys.iter().map(key_json).collect::<Vec<_>>()}),
                    );
                    Ok(0)
                }
                Err(status) => Ok(failed(args, &status)),
            }
        }
        ApiKeyCommand::Revoke { key_id } => {
            let request = pb::RevokeApiKeyRequest {
                key_id: key_id.clone(),
            };
            match gateway.revoke_api_key(request).await {
                Ok(key) => {
                    let key = key.into_inner();
                    emit(
                        args,
                        format!(
                            "revoked API key {} of {} (refused by every gateway replica from now on)",
                            key.key_id, key.owner
                        ),
                        json!({"ok": true, "key": key_json(&key)}),
                    );
                    Ok(0)
                }
                Err(status) => Ok(failed(args, &status)),
            }
        }
    }
}
