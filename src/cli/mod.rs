//! `cli/` parses the command line, resolves the configuration and runs the chosen command.
//! Every failure ends as one line on standard error and a non-zero exit status: 2 for a command
//! line, option value or log filter that is refused before anything runs, 1 after. The one
//! exception is a clap error that needs its later lines (the valid values, the usage line).

pub mod args;
pub mod bounds;
mod bulk;
pub mod config;
mod generate;
mod in_flight;
pub mod layers;
mod ledger;
pub mod logging;
mod mount;
mod notify;
mod open_files;
pub mod options;
mod output;
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
    /// The reader of our standard output went away (`| head`): not reported (see `output`).
    #[error("standard output closed")]
    StdoutClosed,
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
        Err(line) => return usage_error(&line),
    };
    let parsed = Cli::command()
        .try_get_matches_from(&argv)
        .and_then(|matches| Cli::from_arg_matches(&matches));
    let mut cli = match parsed {
        Ok(cli) => cli,
        // --help, --version: clap ignores a closed stdout (`scribefs --help | head -1`).
        Err(e) if !e.use_stderr() => e.exit(),
        Err(e) => {
            eprint!("{}", parse_error_text(&e));
            return ExitCode::from(2);
        }
    };
    if let Some(result) = generate::run(&cli.command) {
        return match result {
            Ok(()) | Err(CliError::StdoutClosed) => ExitCode::SUCCESS,
            Err(CliError::Usage(line)) => usage_error(&line),
            Err(e) => fail(&e),
        };
    }
    if let Err(line) = init_logging(&cli) {
        return usage_error(&line);
    }
    // Before anything runs, as the flags were: a bad [storage.s3] value is a usage error too.
    let config = match resolve_config(&mut cli, &|name| std::env::var(name).ok()) {
        Ok(config) => config,
        Err(e) => return usage_error(&e.to_string()),
    };
    open_files::raise_for_pool(config.pool_size);
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
    match runtime.block_on(run(cli, config)) {
        Ok(()) | Err(CliError::StdoutClosed) => ExitCode::SUCCESS,
        Err(e) => fail(&e),
    }
}

/// A command line refused before anything ran: one line, exit status 2 (as clap's own errors).
fn usage_error(line: &str) -> ExitCode {
    eprintln!("scribefs: error: {}", line.replace('\n', " "));
    ExitCode::from(2)
}

/// What a parse error prints. A refused value is one line naming the option, the value and why
/// (`--part-size 1M is out of range: 5 MiB to 5 GiB`); any other error keeps clap's text, whose
/// later lines are what its reader needs (the valid values, the missing arguments, the usage
/// line), with `scribefs: ` in front so that it starts `scribefs: error:` like every error.
fn parse_error_text(error: &clap::Error) -> String {
    match refused_value(error) {
        Some(line) => format!("scribefs: error: {}\n", line.replace('\n', " ")),
        None => format!("scribefs: {error}"),
    }
}

/// `--option value reason` for a value a value parser refused, from clap's error context.
fn refused_value(error: &clap::Error) -> Option<String> {
    use clap::error::{ContextKind, ContextValue, ErrorKind};
    if error.kind() != ErrorKind::ValueValidation {
        return None;
    }
    let (Some(ContextValue::String(arg)), Some(ContextValue::String(value))) = (
        error.get(ContextKind::InvalidArg),
        error.get(ContextKind::InvalidValue),
    ) else {
        return None;
    };
    // clap names the argument as `--part-size <PART_SIZE>`.
    let option = arg.split_whitespace().next().unwrap_or(arg.as_str());
    let source = std::error::Error::source(error)?;
    // Our parsers' reasons read on from the value ("is out of range: ..."); others' do not.
    let reason = if let Some(bound) = source.downcast_ref::<bounds::BoundError>() {
        bound.to_string()
    } else if let Some(filter) = source.downcast_ref::<logging::FilterError>() {
        filter.to_string()
    } else {
        format!("is refused: {source}")
    };
    Some(bounds::describe(option, value, &reason))
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

/// Installs logging; a bad `RUST_LOG` is refused (`--log-level` was checked by clap).
fn init_logging(cli: &Cli) -> Result<(), String> {
    // A segments command reports its failure itself, in one line; retry warnings on the same
    // stderr would make that several. A mount's log keeps them, and its mount/unmount lines.
    let (default, target) = match &cli.command {
        Command::Segments(_)
        | Command::Uploads(_)
        | Command::Completions { .. }
        | Command::Man(_) => ("error,scribefs::cli::config=warn", logging::Target::Stderr),
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
    let level = if cli.debug {
        Some("debug")
    } else {
        cli.log_level.as_deref()
    };
    let filter = logging::filter(level, default, &|name| std::env::var(name).ok())?;
    logging::init(filter, target);
    Ok(())
}

/// The connection settings from flags, environment (`env`) and `[storage.s3]`; a mount's
/// BUCKET argument is its bucket, and a mount retries more by default than the commands do
/// (a failed `close()` cannot be run again; a failed command can).
fn resolve_config(
    cli: &mut Cli,
    env: &dyn Fn(&str) -> Option<String>,
) -> Result<S3Config, CliError> {
    let mut defaults = S3Config::default();
    if let Command::Mount(args) = &cli.command {
        cli.connection.bucket = Some(args.bucket.clone());
        defaults.max_retries = crate::store::config::MOUNT_MAX_RETRIES;
    }
    config::resolve_over(defaults, &cli.connection, env)
}

async fn run(cli: Cli, config: S3Config) -> Result<(), CliError> {
    match cli.command {
        Command::Segments(command) => segments::run(command, &config).await,
        Command::Uploads(command) => uploads::run(command, &config).await,
        Command::Mount(args) => mount::run(*args, config).await,
        // Answered by `main` before a configuration was needed (`generate::run`).
        Command::Completions { .. } | Command::Man(_) => Ok(()),
    }
}

/// The store every command uses: S3 over HTTP, each attempt metered, with our retries around it.
pub async fn connect(config: &S3Config) -> Result<Arc<dyn ObjectStore>, CliError> {
    Ok(connect_with_check(config, None).await?.0)
}

/// [`connect`], and beside it a store over the same connections whose calls retry as many
/// times but end within `check_total` (a mount's bucket check, `--connect-timeout-secs`).
pub(crate) async fn connect_with_check(
    config: &S3Config,
    check_total: Option<std::time::Duration>,
) -> Result<(Arc<dyn ObjectStore>, Arc<dyn ObjectStore>), CliError> {
    let s3 = Arc::new(Metered::new(S3Store::new(config).await?));
    let policy = RetryPolicy::from_config(config);
    let check = RetryPolicy {
        total: check_total.or(policy.total),
        ..policy.clone()
    };
    Ok((
        Arc::new(Retrying::shared(Arc::clone(&s3), policy)),
        Arc::new(Retrying::shared(s3, check)),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    fn max_retries(argv: &[&str], env: &[(&str, &str)]) -> u32 {
        let env: Vec<(String, String)> = env
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        let lookup = move |name: &str| env.iter().find(|(k, _)| k == name).map(|(_, v)| v.clone());
        let mut cli = Cli::try_parse_from(argv).unwrap();
        resolve_config(&mut cli, &lookup).unwrap().max_retries
    }

    #[test]
    fn a_mount_retries_9_times_by_default_the_commands_3_and_the_flag_wins() {
        assert_eq!(max_retries(&["scribefs", "mount", "b", "/mnt"], &[]), 9);
        let segments = ["scribefs", "--bucket", "b", "segments", "ls"];
        assert_eq!(max_retries(&segments, &[]), 3);
        assert_eq!(
            max_retries(&["scribefs", "--bucket", "b", "uploads", "ls"], &[]),
            3
        );
        let explicit = ["scribefs", "mount", "b", "/mnt", "--max-retries", "2"];
        assert_eq!(max_retries(&explicit, &[]), 2);
        let explicit = [
            "scribefs",
            "--max-retries",
            "0",
            "--bucket",
            "b",
            "segments",
            "ls",
        ];
        assert_eq!(max_retries(&explicit, &[("S3_REGION", "eu-west-1")]), 0);
    }
}
