//! A user's session with the gateway: the password (never from a plain flag, so it stays out
//! of shell history), the user's TLS identity, and a client that adds the credentials to
//! every request.

use anyhow::Context;
use strife_common::layout::Layout;
use strife_common::limits::CLIENT_CALL_TIMEOUT;
use strife_common::metadata::Credentials;
use strife_common::net::failover::{parse_addresses, Failover};
use strife_common::net::tls::{ExpectedPeer, TlsMaterial};
use strife_proto::v1::gateway_client::GatewayClient;
use tonic::service::interceptor::InterceptedService;

use crate::args::ClientArgs;

/// The authenticated gateway client, over every replica given (`--gateway a,b,c`).
pub type Gateway = GatewayClient<InterceptedService<Failover, Credentials>>;

/// Reads the password: `--password-file`, then `STRIFE_PASSWORD`, then (for `admin`) the
/// file setup wrote, then an interactive prompt.
pub fn password(args: &ClientArgs, layout: &Layout) -> anyhow::Result<String> {
    if let Some(path) = &args.password_file {
        let text =
            std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
        return Ok(text.trim_end_matches(['\n', '\r']).to_owned());
    }
    if let Ok(password) = std::env::var("STRIFE_PASSWORD") {
        return Ok(password);
    }
    if args.user == strife_common::admin::ADMIN_USER && layout.admin_password().exists() {
        return strife_common::admin::read_admin_password(layout);
    }
    rpassword::prompt_password(format!("password for {}: ", args.user))
        .context("no password: set STRIFE_PASSWORD, pass --password-file, or run in a terminal")
}

/// Connects (lazily: an unreachable gateway shows up on the first call) as `args.user`.
pub fn connect(args: &ClientArgs) -> anyhow::Result<Gateway> {
    strife_common::layout::validate_name("user", &args.user).map_err(anyhow::Error::msg)?;
    let layout = Layout::new(&args.dir);
    let identity = layout.user_identity(&args.user);
    anyhow::ensure!(
        identity.cert.exists(),
        "no certificate for user {} in {}; run `strife setup --dir {} --users {}` first",
        args.user,
        args.dir.display(),
        args.dir.display(),
        args.user
    );
    let tls = TlsMaterial::load(&layout.ca().cert, &identity)?;
    let password = password(args, &layout)?;
    let credentials = Credentials::new(&args.user, &password)
        .context("the user name and password must be printable ASCII")?;
    let replicas = parse_addresses(&args.gateway)
        .into_iter()
        .map(|address| {
            let channel = tls
                .endpoint(&address, &ExpectedPeer::Gateway, CLIENT_CALL_TIMEOUT)?
                .connect_lazy();
            Ok((address, channel))
        })
        .collect::<anyhow::Result<Vec<_>>>()?;
    let channel = Failover::new(replicas)?;
    Ok(GatewayClient::with_interceptor(channel, credentials))
}
