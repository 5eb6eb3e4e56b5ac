//! gRPC metadata keys Strife puts on requests and statuses.

/// Request: the caller's user name (must equal its certificate's CN).
pub const USER_KEY: &str = "x-strife-user";
/// Request: the caller's password. Never logged.
pub const PASSWORD_KEY: &str = "x-strife-password";
/// Status of a refused or failed payment: the id it was recorded under.
pub const PAYMENT_ID_KEY: &str = "x-strife-payment-id";
