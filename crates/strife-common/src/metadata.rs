//! gRPC metadata keys Strife puts on requests and statuses, and (feature `grpc`) the client
//! interceptor that sends a user's credentials (`Credentials`).

/// Request: the caller's user name (must equal its certificate's CN).
pub const USER_KEY: &str = "x-strife-user";
/// Request: the caller's password. Never logged.
pub const PASSWORD_KEY: &str = "x-strife-password";
/// Status of a refused or failed payment: the id it was recorded under.
pub const PAYMENT_ID_KEY: &str = "x-strife-payment-id";

#[cfg(feature = "grpc")]
use tonic::metadata::{errors::InvalidMetadataValue, Ascii, MetadataValue};

/// Adds a user name and password to every request (a tonic interceptor): what every client
/// of the gateway sends.
#[cfg(feature = "grpc")]
#[derive(Clone)]
pub struct Credentials {
    user: MetadataValue<Ascii>,
    password: MetadataValue<Ascii>,
}

#[cfg(feature = "grpc")]
impl Credentials {
    /// Fails if either is not valid header text (printable ASCII).
    pub fn new(user: &str, password: &str) -> Result<Self, InvalidMetadataValue> {
        Ok(Credentials {
            user: user.parse()?,
            password: password.parse()?,
        })
    }
}

#[cfg(feature = "grpc")]
impl tonic::service::Interceptor for Credentials {
    fn call(
        &mut self,
        mut request: tonic::Request<()>,
    ) -> Result<tonic::Request<()>, tonic::Status> {
        request.metadata_mut().insert(USER_KEY, self.user.clone());
        request
            .metadata_mut()
            .insert(PASSWORD_KEY, self.password.clone());
        Ok(request)
    }
}
