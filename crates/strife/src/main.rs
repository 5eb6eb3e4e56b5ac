//! `strife`: one binary, one subcommand per process (SPEC §1).

mod cli;
mod dev;

use clap::Parser;

fn main() -> std::process::ExitCode {
    let cli = cli::Cli::parse();
    match cli.run() {
        Ok(status) => std::process::ExitCode::from(status),
        Err(error) => {
            eprintln!("error: {error:#}");
            std::process::ExitCode::FAILURE
        }
    }
}
