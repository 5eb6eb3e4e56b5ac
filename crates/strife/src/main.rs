//! `strife`: one binary, one subcommand per process (docs/SPEC.md §1).

mod cli;
mod config;
mod dev;
mod dev_postgres;

/// mimalloc instead of glibc's allocator: the servers allocate and free many small buffers
/// per request across threads (TLS records, HTTP/2 frames, protobuf messages), and glibc's
/// malloc/free/consolidation showed as ≈ 8 % of the gateway's CPU.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> std::process::ExitCode {
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
