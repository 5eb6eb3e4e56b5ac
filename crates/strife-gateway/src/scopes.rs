//! What an API key may do (docs/SPEC.md §10): its scopes, and the one table of which scope
//! each method needs. A key's caller also passes the role table ([`crate::roles`]) with its
//! owner's role, so a key never grants more than its owner has.

use std::fmt;

/// One right an API key can carry.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Scope {
    /// Pay, link accounts.
    PaymentsWrite,
    /// Balances, history, one payment, a payment by key.
    PaymentsRead,
    RefundsWrite,
    /// Payment events (`WatchPayments`, `GET /v1/events`).
    EventsRead,
    /// Positions, settlement windows and reports (admin keys only).
    SettlementRead,
    /// Caps, closing and settling windows (admin keys only).
    SettlementWrite,
    /// Users, accounts and API keys (admin keys only).
    Admin,
}

impl Scope {
    pub const ALL: [Scope; 7] = [
        Scope::PaymentsWrite,
        Scope::PaymentsRead,
        Scope::RefundsWrite,
        Scope::EventsRead,
        Scope::SettlementRead,
        Scope::SettlementWrite,
        Scope::Admin,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Scope::PaymentsWrite => "payments:write",
            Scope::PaymentsRead => "payments:read",
            Scope::RefundsWrite => "refunds:write",
            Scope::EventsRead => "events:read",
            Scope::SettlementRead => "settlement:read",
            Scope::SettlementWrite => "settlement:write",
            Scope::Admin => "admin",
        }
    }

    pub fn parse(text: &str) -> Option<Scope> {
        Scope::ALL.into_iter().find(|scope| scope.as_str() == text)
    }

    /// Whether a key of a user with `role` may carry this scope: clients' keys move and read
    /// their own money; settlement and administration are the admin's.
    pub fn open_to(self, role: crate::roles::Role) -> bool {
        use crate::roles::Role;
        match self {
            Scope::PaymentsWrite
            | Scope::PaymentsRead
            | Scope::RefundsWrite
            | Scope::EventsRead => {
                matches!(role, Role::Admin | Role::Client)
            }
            Scope::SettlementRead | Scope::SettlementWrite | Scope::Admin => role == Role::Admin,
        }
    }
}

impl fmt::Display for Scope {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        formatter.write_str(self.as_str())
    }
}

/// The scopes one key carries.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Scopes(u8);

impl Scopes {
    fn bit(scope: Scope) -> u8 {
        1 << (scope as u8)
    }

    pub fn with(self, scope: Scope) -> Self {
        Scopes(self.0 | Self::bit(scope))
    }

    pub fn contains(self, scope: Scope) -> bool {
        self.0 & Self::bit(scope) != 0
    }

    pub fn iter(self) -> impl Iterator<Item = Scope> {
        Scope::ALL
            .into_iter()
            .filter(move |scope| self.contains(*scope))
    }

    /// Scope names as stored and shown, in [`Scope::ALL`]'s order.
    pub fn names(self) -> Vec<String> {
        self.iter().map(|scope| scope.as_str().to_owned()).collect()
    }
}

impl FromIterator<Scope> for Scopes {
    fn from_iter<I: IntoIterator<Item = Scope>>(scopes: I) -> Self {
        scopes.into_iter().fold(Scopes::default(), Scopes::with)
    }
}

/// The scope an API key needs to call the gateway method `method` (`"Pay"`), whatever the
/// transport. `None` for a method no key may call (a bank's decision query).
pub fn scope_needed(method: &str) -> Option<Scope> {
    Some(match method {
        "Pay" | "LinkAccount" | "Authorize" | "Capture" | "Void" => Scope::PaymentsWrite,
        "GetBalances" | "ListHistory" | "GetPayment" | "GetPaymentByKey" | "ListRefunds"
        | "ListPayments" => Scope::PaymentsRead,
        "Refund" => Scope::RefundsWrite,
        "WatchPayments" => Scope::EventsRead,
        "GetPositions" | "ListSettlementWindows" | "GetSettlementReport" => Scope::SettlementRead,
        "SetNetDebitCap" | "CloseSettlementWindow" | "MarkSettled" => Scope::SettlementWrite,
        "RegisterUser" | "OpenAccount" | "CreateApiKey" | "ListApiKeys" | "RevokeApiKey" => {
            Scope::Admin
        }
        _ => return None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::roles::{allowed_roles, Role};

    #[test]
    fn every_name_parses_back_and_unknown_names_do_not() {
        for scope in Scope::ALL {
            assert_eq!(Scope::parse(scope.as_str()), Some(scope));
        }
        assert_eq!(Scope::parse("payments"), None);
        assert_eq!(Scope::parse("ADMIN"), None);
    }

    #[test]
    fn a_set_holds_exactly_what_was_put_in() {
        let scopes: Scopes = [Scope::PaymentsRead, Scope::EventsRead]
            .into_iter()
            .collect();
        assert!(scopes.contains(Scope::PaymentsRead));
        assert!(!scopes.contains(Scope::PaymentsWrite));
        assert_eq!(scopes.names(), ["payments:read", "events:read"]);
    }

    #[test]
    fn every_method_a_user_may_call_needs_a_scope_and_clients_cannot_hold_admin_ones() {
        for method in [
            "Pay",
            "LinkAccount",
            "GetBalances",
            "ListHistory",
            "GetPayment",
            "GetPaymentByKey",
            "Refund",
            "ListRefunds",
            "ListPayments",
            "Authorize",
            "Capture",
            "Void",
            "WatchPayments",
            "GetPositions",
            "ListSettlementWindows",
            "GetSettlementReport",
            "SetNetDebitCap",
            "CloseSettlementWindow",
            "MarkSettled",
            "RegisterUser",
            "OpenAccount",
            "CreateApiKey",
            "ListApiKeys",
            "RevokeApiKey",
        ] {
            let roles = allowed_roles(&format!("/strife.v1.Gateway/{method}"))
                .unwrap_or_else(|| panic!("{method} is in the role table"));
            let scope = scope_needed(method).unwrap_or_else(|| panic!("{method} has a scope"));
            // A scope a method's roles cannot hold would make the method unreachable by key.
            assert!(roles.iter().any(|role| scope.open_to(*role)), "{method}");
            if !roles.contains(&Role::Client) {
                assert!(!scope.open_to(Role::Client), "{method}");
            }
        }
        assert_eq!(scope_needed("GetDecision"), None);
    }
}
