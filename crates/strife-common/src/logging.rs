//! Log setup shared by every process: `tracing` to stderr, human-readable or JSON, filtered
//! by `RUST_LOG` (default `info`). Stdout is kept for the machine-readable lines a process
//! prints on purpose (e.g. a server's bound address).

use std::io::IsTerminal;

use tracing_subscriber::EnvFilter;

/// Installs the global subscriber. Calling it twice is harmless (the second call is ignored).
pub fn init(json: bool) {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_target(false)
        .with_ansi(std::io::stderr().is_terminal());
    let result = if json {
        builder.json().flatten_event(true).try_init()
    } else {
        builder.try_init()
    };
    // An already-installed subscriber (tests) is fine.
    drop(result);
}
