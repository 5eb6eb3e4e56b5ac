//! The one table of who may call what. Authorization is decided here and enforced by
//! [`crate::auth::AuthLayer`]; handlers never check roles themselves (they only scope data to
//! the caller).

/// What kind of caller a request comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    /// The seed's StrifeAdmin: registers users, opens accounts, runs settlement.
    Admin,
    /// A person or shop: sees and moves only its own money.
    Client,
    /// A bank asking for a decision; authenticated by its certificate alone.
    Bank,
}

impl Role {
    /// Stored in `users.role`.
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Admin => "admin",
            Role::Client => "client",
            Role::Bank => "bank",
        }
    }

    pub fn from_stored(text: &str) -> Option<Self> {
        match text {
            "admin" => Some(Role::Admin),
            "client" => Some(Role::Client),
            _ => None,
        }
    }
}

const ADMIN: &[Role] = &[Role::Admin];
const USERS: &[Role] = &[Role::Admin, Role::Client];
const BANKS: &[Role] = &[Role::Bank];

/// Roles allowed to call the gRPC method at `path`; `None` for a method nobody may call.
pub fn allowed_roles(path: &str) -> Option<&'static [Role]> {
    match path {
        "/strife.v1.Gateway/RegisterUser"
        | "/strife.v1.Gateway/OpenAccount"
        | "/strife.v1.Gateway/SetNetDebitCap"
        | "/strife.v1.Gateway/GetPositions"
        | "/strife.v1.Gateway/ListSettlementWindows"
        | "/strife.v1.Gateway/CloseSettlementWindow"
        | "/strife.v1.Gateway/GetSettlementReport"
        | "/strife.v1.Gateway/MarkSettled" => Some(ADMIN),
        "/strife.v1.Gateway/LinkAccount"
        | "/strife.v1.Gateway/GetBalances"
        | "/strife.v1.Gateway/Pay"
        | "/strife.v1.Gateway/ListHistory"
        | "/strife.v1.Gateway/GetPayment"
        | "/strife.v1.Gateway/GetPaymentByKey"
        | "/strife.v1.Gateway/WatchPayments"
        | "/strife.v1.Gateway/Refund"
        | "/strife.v1.Gateway/ListRefunds"
        | "/strife.v1.Gateway/ListPayments"
        | "/strife.v1.Gateway/Authorize"
        | "/strife.v1.Gateway/Capture"
        | "/strife.v1.Gateway/Void"
        | "/strife.v1.Gateway/CreateApiKey"
        | "/strife.v1.Gateway/ListApiKeys"
        | "/strife.v1.Gateway/RevokeApiKey" => Some(USERS),
        "/strife.v1.Coordinator/GetDecision" => Some(BANKS),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn admin_only_methods_exclude_clients() {
        assert_eq!(
            allowed_roles("/strife.v1.Gateway/RegisterUser"),
            Some(ADMIN)
        );
        assert_eq!(allowed_roles("/strife.v1.Gateway/OpenAccount"), Some(ADMIN));
        for settlement in [
            "SetNetDebitCap",
            "GetPositions",
            "ListSettlementWindows",
            "CloseSettlementWindow",
            "GetSettlementReport",
            "MarkSettled",
        ] {
            assert_eq!(
                allowed_roles(&format!("/strife.v1.Gateway/{settlement}")),
                Some(ADMIN),
                "{settlement}"
            );
        }
    }

    #[test]
    fn refunds_are_for_users() {
        assert_eq!(allowed_roles("/strife.v1.Gateway/Refund"), Some(USERS));
    }

    #[test]
    fn decision_queries_are_for_banks_only() {
        assert_eq!(
            allowed_roles("/strife.v1.Coordinator/GetDecision"),
            Some(BANKS)
        );
    }

    #[test]
    fn unknown_methods_are_nobodys() {
        assert_eq!(allowed_roles("/strife.v1.Bank/Prepare"), None);
        assert_eq!(allowed_roles("/other/Thing"), None);
    }
}
