//! `teamtalk`: the whole system in one process, each server role alone, and administration.
//! Run `teamtalk --help`.
//!
//! Layout: `cli` parses the command line (clap); `serve`, `users` (accounts and
//! departments), `backup` and `roles` (one server role alone) carry the commands out;
//! `store_choice` opens the store they work on.

mod backup;
mod cli;
mod roles;
mod serve;
mod store_choice;
mod users;

use std::io::Write;
use std::path::Path;
use std::process::ExitCode;

use clap::{CommandFactory, Parser};

use cli::{Cli, Command};

/// The exit code of a command-line or configuration problem (BSD's `EX_USAGE`).
const EXIT_USAGE: u8 = 64;

/// A command-line or configuration problem (exit code 64).
struct Usage(String);

/// A [`Usage`] problem.
fn usage(message: impl Into<String>) -> Usage {
    Usage(message.into())
}

fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(error) => {
            // Help and version go to stdout with success; anything else is a bad command
            // line: clap's message on stderr, and our exit code for it (clap's own is 2).
            let _ = error.print();
            return if error.use_stderr() {
                ExitCode::from(EXIT_USAGE)
            } else {
                ExitCode::SUCCESS
            };
        }
    };
    let command = match cli.command {
        Some(Command::Completions { shell }) => return completions(shell),
        Some(Command::Version) => {
            println!("teamtalk {}", cli::VERSION);
            return ExitCode::SUCCESS;
        }
        Some(command) => command,
        None => {
            return match Cli::command().print_long_help() {
                Ok(()) => ExitCode::SUCCESS,
                Err(_) => ExitCode::from(1),
            };
        }
    };
    init_logging();
    if matches!(command, Command::Serve(_) | Command::Role(_)) {
        // Connection caps are derived from the limit in force after this.
        teamtalk_servers::limits::raise_descriptor_limit();
    }
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(error) => {
            eprintln!("teamtalk: cannot start the runtime: {error}");
            return ExitCode::from(1);
        }
    };
    match runtime.block_on(execute(command)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(Failure::Usage(Usage(message))) => {
            eprintln!("teamtalk: {message}");
            ExitCode::from(EXIT_USAGE)
        }
        Err(Failure::Run(message)) => {
            eprintln!("teamtalk: {message}");
            ExitCode::from(1)
        }
    }
}

/// `teamtalk completions SHELL`: the completion script on stdout.
fn completions(shell: clap_complete::Shell) -> ExitCode {
    let mut script = Vec::new();
    clap_complete::generate(shell, &mut Cli::command(), "teamtalk", &mut script);
    let mut stdout = std::io::stdout().lock();
    match stdout.write_all(&script).and_then(|()| stdout.flush()) {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("teamtalk: cannot write the completion script: {error}");
            ExitCode::from(1)
        }
    }
}

/// Carries `command` out.
async fn execute(command: Command) -> Result<(), Failure> {
    match command {
        Command::Serve(opts) => serve::run(opts).await,
        Command::User(command) => users::user(command).await,
        Command::Dept(command) => users::dept(command).await,
        Command::Backup { file, opts } => backup::run(&file, &opts).await,
        Command::Role(role) => role.run().await,
        // Answered before the runtime starts.
        Command::Completions { .. } | Command::Version => Ok(()),
    }
}

/// Logs to stderr at `TEAMTALK_LOG`'s level (default info).
fn init_logging() {
    let level = match std::env::var("TEAMTALK_LOG").as_deref() {
        Ok("error") => tracing::Level::ERROR,
        Ok("warn") => tracing::Level::WARN,
        Ok("debug") => tracing::Level::DEBUG,
        Ok("trace") => tracing::Level::TRACE,
        _ => tracing::Level::INFO,
    };
    let _ = tracing_subscriber::fmt()
        .with_max_level(level)
        .with_writer(std::io::stderr)
        .try_init();
}

/// Why a command failed: its exit code and message.
enum Failure {
    /// The command line or configuration (exit code 64).
    Usage(Usage),
    /// While running (exit code 1).
    Run(String),
}

impl From<Usage> for Failure {
    fn from(usage: Usage) -> Failure {
        Failure::Usage(usage)
    }
}

/// A failure while running.
fn run_error(error: impl std::fmt::Display) -> Failure {
    Failure::Run(error.to_string())
}

/// A configuration error in the file at `path`.
fn conf_error(path: &Path, error: impl std::fmt::Display) -> Failure {
    Failure::Usage(usage(format!("{}: {error}", path.display())))
}
