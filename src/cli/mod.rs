//! `cli/` parses the command line, resolves the configuration and runs the chosen command.
//! Every failure ends as one line on standard error and a non-zero exit status.

pub mod args;
mod bulk;
pub mod config;
mod layers;
mod ledger;
pub mod logging;
mod mount;
mod notify;
pub mod options;
mod segments;
mod uploads;

use std::process::ExitCode;
use std::sync::Arc;

use clap::{CommandFactory, FromArgMatches};

use crate::store::ObjectStore;
use crate::store::StoreError;
use crate::store::config::S3Config;
use crate::store::metered::Metered;
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
    #[error("{0}")]
    Segment(#[from] crate::segment::entries::EntriesError),
}

impl From<std::io::Error> for CliError {
    fn from(error: std::io::Error) -> Self {
        CliError::Io(error.to_string())
    }
}

/// Entry point of the `scribefs` binary.
pub fn main() -> ExitCode {
    let argv = match command_line(std::env::args_os().collect()) {
        Ok(argv) => argv,
        Err(line) => {
            eprintln!("scribefs: {line}");
            return ExitCode::from(2);
        }
    };
    let parsed = Cli::command()
        .try_get_matches_from(&argv)
        .and_then(|matches| Cli::from_arg_matches(&matches));
    let cli = match parsed {
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
    init_logging(&cli);
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

/// The command line as clap should see it: the mount helper's form rewritten, then the flags
/// the environment and the config file set added.
fn command_line(args: Vec<std::ffi::OsString>) -> Result<Vec<std::ffi::OsString>, String> {
    let argv = options::normalize(args, &Cli::command())?;
    layers::apply(argv, Cli::command(), &|name| std::env::var(name).ok())
}

fn init_logging(cli: &Cli) {
    // A segments command reports its failure itself, in one line; retry warnings on the same
    // stderr would make that several. A mount's log keeps them, and its mount/unmount lines.
    let (default, target) = match &cli.command {
        Command::Segments(_) | Command::Uploads(_) => {
            ("error,scribefs::cli::config=warn", logging::Target::Stderr)
        }
        Command::Mount(args) => {
            // A background child without --log-file has nowhere else to report to.
            let background = args.foreground && mount::is_background_child();
            let target = if background && args.log_file.is_none() {
                logging::Target::Syslog(args.syslog_socket.clone())
            } else {
                logging::Target::Stderr
            };
            ("warn,scribefs::cli=info", target)
        }
    };
    logging::init(cli.log_level.as_deref(), default, target);
}

async fn run(mut cli: Cli) -> Result<(), CliError> {
    if let Command::Mount(args) = &cli.command {
        cli.connection.bucket = Some(args.bucket.clone());
    }
    let config = config::resolve(&cli.connection, &|name| std::env::var(name).ok())?;
    match cli.command {
        Command::Segments(command) => segments::run(command, &config).await,
        Command::Uploads(command) => uploads::run(command, &config).await,
        Command::Mount(args) => mount::run(*args, config).await,
    }
}

/// The store every command uses: S3 over HTTP, each attempt metered, with our retries around it.
pub async fn connect(config: &S3Config) -> Result<Arc<dyn ObjectStore>, CliError> {
    let s3 = S3Store::new(config).await?;
    let policy = RetryPolicy {
        max_retries: config.max_retries,
        ..RetryPolicy::default()
    };
    Ok(Arc::new(Retrying::new(Metered::new(s3), policy)))
}
