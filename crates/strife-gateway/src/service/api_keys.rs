//! API keys (docs/SPEC.md §10): created, listed and revoked through the service like any
//! other request, and turned back into a [`Caller`] when one arrives as a bearer credential.
//!
//! A key is `sk_<key_id>_<secret>`: 16 hex digits of id (how it is looked up, listed and
//! logged) and 32 of secret (128 random bits). The store keeps only a keyed BLAKE2b hash of
//! the secret under a secret every replica shares (`api-keys`), so a stolen database does not
//! hold usable keys; a hash, not argon2, because a 128-bit random secret cannot be guessed and
//! every request checks one. Each request reads its key from the store, so a revocation or
//! expiry is in force on every replica from the moment it is written.

use std::time::{Duration, Instant};

use strife_common::limits::{validate_id, MAX_TEXT_BYTES};
use strife_common::net::connection::{PeerIdentity, PeerRole};
use strife_common::time::now_unix_ms;
use strife_common::Failure;
use strife_ledger::records::ApiKeyRecord;
use strife_proto::v1 as pb;
use subtle::ConstantTimeEq;

use super::validate::check_text;
use super::Service;
use crate::request::{Call, Caller, KeyGrant};
use crate::roles::Role;
use crate::scopes::{Scope, Scopes};

/// Name of the store secret API key hashes are keyed with.
pub const API_KEY_SECRET: &str = "api-keys";

/// What every key starts with, so a leaked one is recognisable (secret scanners, logs).
pub const KEY_PREFIX: &str = "sk_";
const KEY_ID_HEX: usize = 16;
const SECRET_HEX: usize = 32;

/// Active (unrevoked, unexpired) keys one user may hold: enough for every integration, few
/// enough that one user cannot fill the table.
pub const MAX_ACTIVE_KEYS_PER_USER: usize = 100;
/// The longest a key may live (`expires_in_seconds`).
pub const MAX_KEY_LIFETIME: Duration = Duration::from_secs(3 * 366 * 24 * 3600);

/// The id and secret of a presented key, if it has the shape of one.
fn split_key(presented: &str) -> Option<(&str, &str)> {
    let rest = presented.strip_prefix(KEY_PREFIX)?;
    let (key_id, secret) = rest.split_once('_')?;
    let hex = |text: &str, length: usize| {
        text.len() == length
            && text
                .bytes()
                .all(|byte| byte.is_ascii_digit() || (b'a'..=b'f').contains(&byte))
    };
    (hex(key_id, KEY_ID_HEX) && hex(secret, SECRET_HEX)).then_some((key_id, secret))
}

fn random_hex(length: usize) -> String {
    (0..length / 2)
        .map(|_| format!("{:02x}", rand::random::<u8>()))
        .collect()
}

pub(crate) fn api_key_proto(key: &ApiKeyRecord) -> pb::ApiKey {
    pb::ApiKey {
        key_id: key.key_id.clone(),
        owner: key.owner.clone(),
        scopes: key.scopes.clone(),
        description: key.description.clone(),
        created_unix_ms: key.created_unix_ms,
        expires_unix_ms: key.expires_unix_ms.unwrap_or(0),
        revoked_unix_ms: key.revoked_unix_ms.unwrap_or(0),
        last_used_unix_ms: key.last_used_unix_ms.unwrap_or(0),
    }
}

/// Whether a key is usable at `now_unix_ms`.
fn is_active(key: &ApiKeyRecord, now_unix_ms: i64) -> bool {
    key.revoked_unix_ms.is_none()
        && key
            .expires_unix_ms
            .is_none_or(|expires| now_unix_ms < expires)
}

impl Service {
    pub async fn create_api_key(
        &self,
        call: &Call,
        body: pb::CreateApiKeyRequest,
    ) -> Result<pb::CreatedApiKey, Failure> {
        self.authorize(call, "CreateApiKey")?;
        let caller = &call.caller;
        let owner = if body.owner.is_empty() {
            caller.username.clone()
        } else {
            validate_id("owner", &body.owner)?;
            body.owner.clone()
        };
        if owner != caller.username && caller.role != Role::Admin {
            return Err(Failure::PermissionDenied(
                "only the admin may create API keys for another user".into(),
            ));
        }
        check_text("description", &body.description, MAX_TEXT_BYTES)?;
        let owner_role = self.role_of(&owner).await?;
        let scopes = parse_scopes(&body.scopes, owner_role)?;
        let now = now_unix_ms();
        let expires_unix_ms = match body.expires_in_seconds {
            0 => None,
            seconds if seconds > MAX_KEY_LIFETIME.as_secs() => {
                return Err(Failure::invalid_field(
                    "expires_in_seconds",
                    format!(
                        "expires_in_seconds must be at most {} (3 years), or 0 for a key that does not expire",
                        MAX_KEY_LIFETIME.as_secs()
                    ),
                ))
            }
            // At most 3 years in ms: far inside i64.
            seconds => Some(now.saturating_add((seconds as i64).saturating_mul(1000))),
        };
        let active = self
            .store
            .api_keys(Some(&owner))
            .await?
            .iter()
            .filter(|key| is_active(key, now))
            .count();
        if active >= MAX_ACTIVE_KEYS_PER_USER {
            return Err(Failure::ResourceExhausted(format!(
                "{owner} already has {MAX_ACTIVE_KEYS_PER_USER} active API keys; revoke one first"
            )));
        }
        let key_id = random_hex(KEY_ID_HEX);
        let secret = random_hex(SECRET_HEX);
        let record = ApiKeyRecord {
            secret_hash: self.api_key_hasher.hash(&key_id, &secret),
            key_id,
            owner,
            scopes: scopes.names(),
            description: body.description,
            created_unix_ms: now,
            expires_unix_ms,
            revoked_unix_ms: None,
            last_used_unix_ms: None,
        };
        self.store.insert_api_key(&record).await?;
        tracing::info!(key_id = %record.key_id, owner = %record.owner, by = %caller.username, "API key created");
        Ok(pb::CreatedApiKey {
            secret: format!("{KEY_PREFIX}{}_{secret}", record.key_id),
            key: Some(api_key_proto(&record)),
        })
    }

    pub async fn list_api_keys(
        &self,
        call: &Call,
        body: pb::ListApiKeysRequest,
    ) -> Result<pb::ListApiKeysResponse, Failure> {
        self.authorize(call, "ListApiKeys")?;
        let caller = &call.caller;
        let owner = match (body.owner.is_empty(), caller.role) {
            (true, Role::Admin) => None,
            (true, _) => Some(caller.username.as_str()),
            (false, _) => {
                validate_id("owner", &body.owner)?;
                if body.owner != caller.username && caller.role != Role::Admin {
                    return Err(Failure::PermissionDenied(
                        "only the admin may list another user's API keys".into(),
                    ));
                }
                Some(body.owner.as_str())
            }
        };
        let keys = self.store.api_keys(owner).await?;
        Ok(pb::ListApiKeysResponse {
            keys: keys.iter().map(api_key_proto).collect(),
        })
    }

    pub async fn revoke_api_key(
        &self,
        call: &Call,
        body: pb::RevokeApiKeyRequest,
    ) -> Result<pb::ApiKey, Failure> {
        self.authorize(call, "RevokeApiKey")?;
        let caller = &call.caller;
        validate_id("key_id", &body.key_id)?;
        // Someone else's key answers exactly like one that does not exist.
        let not_found = || Failure::NotFound(format!("API key {} not found", body.key_id));
        let key = self
            .store
            .api_key(&body.key_id)
            .await?
            .ok_or_else(not_found)?;
        if key.owner != caller.username && caller.role != Role::Admin {
            return Err(not_found());
        }
        let revoked = self
            .store
            .revoke_api_key(&body.key_id, now_unix_ms())
            .await?
            .ok_or_else(not_found)?;
        tracing::info!(key_id = %revoked.key_id, by = %caller.username, "API key revoked");
        Ok(api_key_proto(&revoked))
    }

    /// The caller a presented API key stands for: its owner, with the owner's role and the
    /// key's scopes. `UNAUTHENTICATED` for anything but an active key whose secret matches,
    /// with no hint of which part was wrong.
    pub async fn caller_of_api_key(&self, presented: &str) -> Result<Caller, Failure> {
        let (key_id, secret) = split_key(presented).ok_or(Failure::Unauthenticated)?;
        let key = self
            .store
            .api_key(key_id)
            .await?
            .ok_or(Failure::Unauthenticated)?;
        let expected = self.api_key_hasher.hash(key_id, secret);
        let matches: bool = expected.ct_eq(&key.secret_hash).into();
        let now = now_unix_ms();
        if !matches || !is_active(&key, now) {
            return Err(Failure::Unauthenticated);
        }
        // The owner's role as it is now: a key never grants more than its owner has.
        let role = self
            .role_of(&key.owner)
            .await
            .map_err(|_| Failure::Unauthenticated)?;
        let scopes: Scopes = key
            .scopes
            .iter()
            .filter_map(|name| Scope::parse(name))
            .filter(|scope| scope.open_to(role))
            .collect();
        if self.api_key_hasher.due_for_touch(key_id, Instant::now()) {
            let store = std::sync::Arc::clone(&self.store);
            let key_id = key_id.to_owned();
            // Off the request's path: a lost "last used" write costs nothing.
            tokio::spawn(async move {
                if let Err(error) = store.touch_api_key(&key_id, now).await {
                    tracing::debug!(%error, %key_id, "could not record an API key's use");
                }
            });
        }
        Ok(Caller {
            peer: PeerIdentity {
                role: PeerRole::User,
                name: key.owner.clone(),
            },
            username: key.owner,
            role,
            key: Some(KeyGrant {
                key_id: key.key_id,
                scopes,
            }),
        })
    }

    /// The role of a registered user; `NOT_FOUND` for an unknown one.
    async fn role_of(&self, username: &str) -> Result<Role, Failure> {
        let user = self
            .store
            .user(username)
            .await?
            .ok_or_else(|| Failure::NotFound(format!("user {username} does not exist")))?;
        Role::from_stored(&user.role).ok_or_else(|| {
            Failure::internal("reading a user", format!("unknown role {:?}", user.role))
        })
    }
}

/// The scopes asked for, each known and open to the owner's role; at least one.
fn parse_scopes(names: &[String], owner_role: Role) -> Result<Scopes, Failure> {
    if names.is_empty() {
        return Err(Failure::invalid_field(
            "scopes",
            "scopes must name at least one scope (payments:write, payments:read, refunds:write, events:read, settlement:read, settlement:write, admin)",
        ));
    }
    let mut scopes = Scopes::default();
    for name in names {
        let scope = Scope::parse(name).ok_or_else(|| {
            Failure::invalid_field(
                "scopes",
                format!(
                    "scopes: unknown scope {:?}",
                    name.chars().take(40).collect::<String>()
                ),
            )
        })?;
        if !scope.open_to(owner_role) {
            return Err(Failure::invalid_field(
                "scopes",
                format!(
                    "scopes: a key of a {} user cannot hold {scope}",
                    owner_role.as_str()
                ),
            ));
        }
        scopes = scopes.with(scope);
    }
    Ok(scopes)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_the_exact_key_shape_splits() {
        let key = format!("sk_{}_{}", "0123456789abcdef", "0".repeat(32));
        assert_eq!(
            split_key(&key),
            Some(("0123456789abcdef", "0".repeat(32).as_str()))
        );
        for bad in [
            "",
            "sk_",
            "0123456789abcdef_00000000000000000000000000000000",
            "sk_0123456789ABCDEF_00000000000000000000000000000000",
            "sk_0123456789abcde_000000000000000000000000000000000",
            "sk_0123456789abcdef_0000000000000000000000000000000",
            "sk_0123456789abcdef_00000000000000000000000000000000_",
            "pk_0123456789abcdef_00000000000000000000000000000000",
        ] {
            assert_eq!(split_key(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn scopes_are_refused_when_unknown_empty_or_beyond_the_owner() {
        let names = |list: &[&str]| list.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        assert!(parse_scopes(&[], Role::Client).is_err());
        assert!(parse_scopes(&names(&["payments:maybe"]), Role::Client).is_err());
        assert!(parse_scopes(&names(&["admin"]), Role::Client).is_err());
        assert!(parse_scopes(&names(&["settlement:read"]), Role::Client).is_err());
        let scopes = parse_scopes(&names(&["payments:read", "payments:read"]), Role::Client)
            .unwrap_or_default();
        assert_eq!(scopes.names(), ["payments:read"]);
        assert!(parse_scopes(&names(&["admin"]), Role::Admin).is_ok());
    }

    #[test]
    fn expired_and_revoked_keys_are_not_active() {
        let key = ApiKeyRecord {
            key_id: "k".into(),
            owner: "alice".into(),
            secret_hash: vec![0; 32],
            scopes: vec![],
            description: String::new(),
            created_unix_ms: 0,
            expires_unix_ms: Some(1_000),
            revoked_unix_ms: None,
            last_used_unix_ms: None,
        };
        assert!(is_active(&key, 999));
        assert!(!is_active(&key, 1_000));
        let revoked = ApiKeyRecord {
            expires_unix_ms: None,
            revoked_unix_ms: Some(5),
            ..key
        };
        assert!(!is_active(&revoked, 0));
    }
}
