//! What every request carries past authentication, whichever transport it came by: who made
//! it ([`Caller`], as a transport verified it) and where its one log line collects what the
//! handlers learn ([`RequestLogSlot`]). The service takes both as a [`Call`].

use std::sync::{Arc, Mutex};

use strife_common::net::connection::PeerIdentity;

use crate::roles::Role;
use crate::scopes::Scopes;

/// Who made a request, as the auth layer verified it.
#[derive(Debug, Clone)]
pub struct Caller {
    pub username: String,
    pub role: Role,
    pub peer: PeerIdentity,
    /// What the caller may do when it came with an API key (`crate::scopes`); `None` for a
    /// certificate, a password or a console session, which carry their role's every right.
    pub key: Option<KeyGrant>,
}

/// The API key a caller authenticated with: its id (what logs show of it) and its scopes.
#[derive(Debug, Clone)]
pub struct KeyGrant {
    pub key_id: String,
    pub scopes: Scopes,
}

/// What the request's log line will say beyond its method, status and latency.
#[derive(Debug, Default, Clone)]
pub struct Fields {
    pub peer: Option<String>,
    pub username: Option<String>,
    /// The API key the caller came with: its id only, never the secret.
    pub key_id: Option<String>,
    pub payment_id: Option<String>,
    pub amount: Option<String>,
    /// The answer is a payment an earlier request under the same idempotency key recorded.
    pub replayed: bool,
}

/// Put in every request's extensions; the auth layer and handlers fill it in.
#[derive(Debug, Default, Clone)]
pub struct RequestLogSlot(Arc<Mutex<Fields>>);

impl RequestLogSlot {
    fn with(&self, update: impl FnOnce(&mut Fields)) {
        let mut fields = self
            .0
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        update(&mut fields);
    }

    pub fn set_caller(&self, caller: Option<&Caller>) {
        self.with(|fields| {
            fields.peer = caller.map(|caller| caller.peer.to_string());
            fields.username = caller.map(|caller| caller.username.clone());
            fields.key_id = caller
                .and_then(|caller| caller.key.as_ref())
                .map(|grant| grant.key_id.clone());
        });
    }

    /// Records the payment a request concerns.
    pub fn set_payment(&self, payment_id: &str, amount: Option<String>) {
        self.with(|fields| {
            fields.payment_id = Some(payment_id.to_owned());
            if amount.is_some() {
                fields.amount = amount;
            }
        });
    }

    /// Records that the answer replays what an earlier request with the same idempotency key
    /// recorded (the HTTP API says so in `Idempotent-Replayed`).
    pub fn set_replayed(&self) {
        self.with(|fields| fields.replayed = true);
    }

    pub fn replayed(&self) -> bool {
        self.snapshot().replayed
    }

    /// Records the amount before a payment id exists.
    pub fn set_amount(&self, amount: String) {
        self.with(|fields| fields.amount = Some(amount));
    }

    /// What the log line will say, as collected so far.
    pub fn snapshot(&self) -> Fields {
        self.0
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .clone()
    }
}

/// One call into the service: who makes it and its log slot.
#[derive(Debug, Clone)]
pub struct Call {
    pub caller: Caller,
    pub log: RequestLogSlot,
}

impl Call {
    /// A call whose log line nobody collects (the console logs its own requests).
    pub fn unlogged(caller: Caller) -> Self {
        Call {
            caller,
            log: RequestLogSlot::default(),
        }
    }
}
