//! The admin's identity, shared by the processes that create it (`strife setup`), seed it
//! (the gateway) and act as it (the client, bench, `strife dev`): its name and where setup
//! keeps its password. Here, not in `strife-pki`, so those processes need no certificate-
//! authority code to know who the admin is.

use anyhow::Context;

use crate::layout::Layout;

/// The admin's user name (its certificate CN and its gateway login).
pub const ADMIN_USER: &str = "admin";

/// Reads the admin password that setup stored (`<dir>/admin-password`).
pub fn read_admin_password(layout: &Layout) -> anyhow::Result<String> {
    let path = layout.admin_password();
    let text = std::fs::read_to_string(&path)
        .with_context(|| format!("cannot read {}; run `strife setup` first", path.display()))?;
    Ok(text.trim().to_owned())
}
