//! `scribefs-devserver`: the local S3 server for the quickstart, tests and benchmarks.
//!
//! ```text
//! scribefs-devserver --root DIR --listen 127.0.0.1:9000 --bucket demo --seed-segments 20
//! scribefs-devserver stats --listen 127.0.0.1:9000 [--reset]
//! ```
//!
//! Prints one `ready on` line when it serves, and stops cleanly on SIGTERM or SIGINT.

use std::io::{IsTerminal, Write};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::{Args, Parser, Subcommand};
use scribefs::devserver::{DevServer, DevServerConfig, control};
use tokio::signal::unix::{SignalKind, signal};

const DEFAULT_LISTEN: &str = "127.0.0.1:9000";

#[derive(Parser)]
#[command(
    name = "scribefs-devserver",
    version,
    about = "Local S3 server for scribefs: S3 key semantics, optional persistence, latency, bandwidth and fault emulation",
    args_conflicts_with_subcommands = true
)]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
    #[command(flatten)]
    serve: ServeArgs,
}

#[derive(Subcommand)]
enum Command {
    /// Print a running server's request counts as JSON (or reset them).
    Stats {
        /// Address of the running server.
        #[arg(long, default_value = DEFAULT_LISTEN)]
        listen: SocketAddr,
        /// Zero the counts (prints the counts that were cleared).
        #[arg(long)]
        reset: bool,
    },
}

#[derive(Args)]
struct ServeArgs {
    /// Persist buckets under this directory (default: memory only).
    #[arg(long, value_name = "DIR")]
    root: Option<PathBuf>,
    /// Address to listen on.
    #[arg(long, default_value = DEFAULT_LISTEN)]
    listen: SocketAddr,
    #[arg(long, default_value = "devkey", env = "SCRIBEFS_DEV_ACCESS_KEY")]
    access_key: String,
    #[arg(long, default_value = "devsecret", env = "SCRIBEFS_DEV_SECRET_KEY")]
    secret_key: String,
    /// Bucket to create (repeatable) [default: demo].
    #[arg(long = "bucket", value_name = "NAME")]
    buckets: Vec<String>,
    /// Demo Scribe Ledger segments to put into each bucket that has none.
    #[arg(long, default_value_t = 0, value_name = "N")]
    seed_segments: usize,
    /// Delay before each response, in milliseconds.
    #[arg(long, default_value_t = 0, value_name = "MS")]
    latency_ms: u64,
    /// Per-connection bandwidth cap in megabits per second (default: unlimited).
    #[arg(long, value_name = "MBPS", value_parser = parse_bandwidth)]
    bandwidth_mbps: Option<f64>,
    /// Fraction of S3 requests that fail on purpose (500, 503, dropped or cut connections).
    #[arg(long, default_value_t = 0.0, value_name = "FRACTION", value_parser = parse_fail_rate)]
    fail_rate: f64,
    /// Enforce this region as AWS does: requests signed for another get a 301 naming it
    /// (default: any region is accepted).
    #[arg(long, value_name = "REGION")]
    region: Option<String>,
}

fn parse_fail_rate(text: &str) -> Result<f64, String> {
    match text.parse::<f64>() {
        Ok(rate) if (0.0..=1.0).contains(&rate) => Ok(rate),
        _ => Err(format!("{text:?} is not a fraction between 0 and 1")),
    }
}

fn parse_bandwidth(text: &str) -> Result<f64, String> {
    match text.parse::<f64>() {
        Ok(mbps) if mbps > 0.0 && mbps.is_finite() => Ok(mbps),
        _ => Err(format!(
            "{text:?} is not a positive number of megabits per second"
        )),
    }
}

fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(error) if !error.use_stderr() => {
            // --help and --version
            let _ = error.print();
            return ExitCode::SUCCESS;
        }
        Err(error) => {
            let rendered = error.render().to_string();
            eprintln!(
                "{}",
                rendered
                    .lines()
                    .next()
                    .unwrap_or("error: invalid arguments")
            );
            return ExitCode::from(2);
        }
    };
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn")),
        )
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal())
        .init();

    let result = match cli.command {
        Some(Command::Stats { listen, reset }) => print_stats(listen, reset),
        None => serve(cli.serve),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(message) => {
            eprintln!("scribefs-devserver: {message}");
            ExitCode::FAILURE
        }
    }
}

fn print_stats(listen: SocketAddr, reset: bool) -> Result<(), String> {
    let body = control::control_request(listen, reset)
        .map_err(|e| format!("cannot read stats from {listen}: {e}"))?;
    let mut stdout = std::io::stdout().lock();
    match writeln!(stdout, "{}", String::from_utf8_lossy(&body)).and_then(|()| stdout.flush()) {
        // `stats | head`: the reader had what it wanted (println! would panic).
        Err(e) if e.kind() != std::io::ErrorKind::BrokenPipe => {
            Err(format!("cannot write the stats: {e}"))
        }
        _ => Ok(()),
    }
}

fn serve(args: ServeArgs) -> Result<(), String> {
    let buckets = if args.buckets.is_empty() {
        vec!["demo".to_string()]
    } else {
        args.buckets
    };
    let config = DevServerConfig {
        root: args.root,
        listen: args.listen,
        access_key: args.access_key,
        secret_key: args.secret_key,
        buckets,
        seed_segments: args.seed_segments,
        latency: Duration::from_millis(args.latency_ms),
        bandwidth_bytes_per_sec: args
            .bandwidth_mbps
            .map(|mbps| (mbps * 1_000_000.0 / 8.0) as u64),
        fail_rate: args.fail_rate,
        region: args.region,
    };
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .map_err(|e| format!("cannot start the runtime: {e}"))?;
    runtime.block_on(async move {
        let mut terminate =
            signal(SignalKind::terminate()).map_err(|e| format!("cannot watch SIGTERM: {e}"))?;
        let mut interrupt =
            signal(SignalKind::interrupt()).map_err(|e| format!("cannot watch SIGINT: {e}"))?;
        let listen = config.listen;
        let server = DevServer::start(config)
            .await
            .map_err(|e| format!("cannot start on {listen}: {e}"))?;
        let mut stdout = std::io::stdout();
        let ready = writeln!(
            stdout,
            "scribefs-devserver ready on {} (buckets: {})",
            server.endpoint(),
            server.bucket_names().join(", ")
        )
        .and_then(|()| stdout.flush());
        if let Err(error) = ready {
            tracing::warn!(%error, "cannot print the ready line");
        }
        tokio::select! {
            _ = terminate.recv() => {}
            _ = interrupt.recv() => {}
        }
        server.shutdown().await;
        Ok(())
    })
}
