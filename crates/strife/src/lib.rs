//! The `strife` binary's code, as a library so that the end-to-end tests (`tests/e2e/`) run
//! the same code the binary does where they need it in-process — today the PostgreSQL server
//! start ([`postgres_server`]) — instead of a copy. `main.rs` is only the process set-up
//! (allocator, malloc tuning) around [`run`].

mod cli;
mod config;
mod dev;
mod dev_postgres;
pub mod postgres_server;

/// Parses the command line (with `--config` files and `STRIFE_*` variables merged in) and
/// runs the subcommand: exit code 2 for a usage error, 1 for a failure.
pub fn run() -> std::process::ExitCode {
    let cli = match cli::Cli::parse_merged() {
        Ok(cli) => cli,
        Err(error) => {
            eprintln!("error: {error:#}");
            return std::process::ExitCode::from(2);
        }
    };
    match cli.run() {
        Ok(status) => std::process::ExitCode::from(status),
        Err(error) => {
            eprintln!("error: {error:#}");
            std::process::ExitCode::FAILURE
        }
    }
}
