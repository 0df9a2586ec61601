//! `provision`: the command-line interface of the provisioning policy host.

#![cfg_attr(not(test), warn(clippy::unwrap_used))]

mod cli;

use std::process::ExitCode;

use clap::Parser;

fn main() -> ExitCode {
    // Die quietly when stdout is a closed pipe (`provision orders list | head`), as Unix tools
    // do, instead of panicking on the failed write.
    // SAFETY: restoring the default disposition of a signal before any thread starts.
    unsafe {
        libc::signal(libc::SIGPIPE, libc::SIG_DFL);
    }
    let args = cli::Cli::parse();
    if let Err(error) = cli::init_logging(&args.log_level) {
        eprintln!("error: --log-level: {}", cli::message(&format!("{error:#}")));
        return ExitCode::from(cli::EXIT_USAGE);
    }
    match cli::run(args) {
        Ok(code) => code,
        Err(error) => {
            eprintln!("error: {}", cli::message(&format!("{error:#}")));
            ExitCode::from(cli::exit_code(&error))
        }
    }
}
