//! `cli/` parses the command line, resolves the configuration and runs the chosen command.
//! Every failure ends as one line on standard error and a non-zero exit status.

pub mod args;
pub mod config;
mod mount;
mod segments;
mod uploads;

use std::process::ExitCode;
use std::sync::Arc;

use clap::Parser;

use crate::store::ObjectStore;
use crate::store::StoreError;
use crate::store::config::S3Config;
use crate::store::retry::{RetryPolicy, Retrying};
use crate::store::s3::S3Store;
use args::{Cli, Command};

#[derive(Debug, thiserror::Error)]
pub enum CliError {
    #[error("{0}")]
    Config(String),
    #[error("{0}")]
    Usage(String),
    #[error("{0}")]
    Store(#[from] StoreError),
    #[error("{0}")]
    Io(String),
}

impl From<std::io::Error> for CliError {
    fn from(error: std::io::Error) -> Self {
        CliError::Io(error.to_string())
    }
}

/// Entry point of the `scribefs` binary.
pub fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) if !e.use_stderr() => e.exit(), // --help, --version
        Err(e) => {
            // clap's first line names the problem; its usage hints would make scripts' logs
            // multi-line, so they are left to --help.
            let text = e.to_string();
            let line = text.lines().next().unwrap_or("invalid arguments");
            eprintln!("scribefs: {line}");
            return ExitCode::from(2);
        }
    };
    init_logging(&cli.command);
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(e) => {
            return fail(&CliError::Io(format!(
                "cannot start the async runtime: {e}"
            )));
        }
    };
    match runtime.block_on(run(cli)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => fail(&e),
    }
}

fn fail(error: &CliError) -> ExitCode {
    let line = error.to_string().replace('\n', " ");
    eprintln!("scribefs: error: {line}");
    ExitCode::FAILURE
}

fn init_logging(command: &Command) {
    // A segments command reports its failure itself, in one line; retry warnings on the same
    // stderr would make that several. A mount's log keeps them.
    let default = match command {
        Command::Segments(_) | Command::Uploads(_) => "error",
        Command::Mount(_) => "warn",
    };
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .try_init();
}

async fn run(mut cli: Cli) -> Result<(), CliError> {
    if let Command::Mount(args) = &cli.command {
        cli.connection.bucket = Some(args.bucket.clone());
    }
    let config = config::resolve(&cli.connection, &|name| std::env::var(name).ok())?;
    match cli.command {
        Command::Segments(command) => segments::run(command, &config).await,
        Command::Uploads(command) => uploads::run(command, &config).await,
        Command::Mount(args) => mount::run(args, config).await,
    }
}

/// The store every command uses: S3 over HTTP with our retries around it.
pub async fn connect(config: &S3Config) -> Result<Arc<dyn ObjectStore>, CliError> {
    let s3 = S3Store::new(config).await?;
    let policy = RetryPolicy {
        max_retries: config.max_retries,
        ..RetryPolicy::default()
    };
    Ok(Arc::new(Retrying::new(s3, policy)))
}
