//! What every request carries past authentication, whichever transport it came by: who made
//! it ([`Caller`], as a transport verified it) and where its one log line collects what the
//! handlers learn ([`RequestLogSlot`]). The service takes both as a [`Call`].

use std::sync::{Arc, Mutex};

use strife_common::net::connection::PeerIdentity;

use crate::roles::Role;

/// Who made a request, as the auth layer verified it.
#[derive(Debug, Clone)]
pub struct Caller {
    pub username: String,
    pub role: Role,
    pub peer: PeerIdentity,
}

/// What the request's log line will say beyond its method, status and latency.
#[derive(Debug, Default, Clone)]
pub(crate) struct Fields {
    pub(crate) peer: Option<String>,
    pub(crate) username: Option<String>,
    pub(crate) payment_id: Option<String>,
    pub(crate) amount: Option<String>,
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

    /// Records the amount before a payment id exists.
    pub fn set_amount(&self, amount: String) {
        self.with(|fields| fields.amount = Some(amount));
    }

    pub(crate) fn snapshot(&self) -> Fields {
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
