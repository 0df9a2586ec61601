//! `provision`: the command-line interface of the provisioning policy host.

mod cli;

use std::process::ExitCode;

use clap::Parser;

fn main() -> ExitCode {
    let args = cli::Cli::parse();
    if let Err(error) = cli::init_logging(&args.log_level) {
        eprintln!("error: --log-level: {error}");
        return ExitCode::from(cli::EXIT_USAGE);
    }
    match cli::run(args) {
        Ok(code) => code,
        Err(error) => {
            eprintln!("error: {error:#}");
            ExitCode::from(cli::exit_code(&error))
        }
    }
}
