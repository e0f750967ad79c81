//! `scribefs-devserver`: the local S3 server for the quickstart, tests and benchmarks.
//!
//! ```text
//! scribefs-devserver --root DIR --listen 127.0.0.1:9000 --bucket demo --seed-segments 20
//! scribefs-devserver --listen 127.0.0.1:9000 --bucket big --seed-objects segments:500001 --seed-objects tree:1000x1000
//! scribefs-devserver stats --listen 127.0.0.1:9000 [--reset]
//! scribefs-devserver proxy --listen 127.0.0.1:9100 --upstream 127.0.0.1:9000 --latency-ms 20 --bandwidth-mbps 800
//! ```
//!
//! The server and the proxy print one `ready on` line when they serve, and stop cleanly on
//! SIGTERM or SIGINT.

use std::io::{IsTerminal, Write};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::{Args, Parser, Subcommand};
use scribefs::devserver::proxy::{Proxy, ProxyConfig};
use scribefs::devserver::{DevServer, DevServerConfig, SeedShape, control, signals};

const DEFAULT_LISTEN: &str = "127.0.0.1:9000";

#[derive(Parser)]
#[command(
    name = "scribefs-devserver",
    version,
    about = "Local S3 server for scribefs: S3 key semantics, optional persistence, latency, bandwidth and fault emulation; and a proxy emulating the same link in front of another server",
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
    /// Forward TCP connections to a server through an emulated link (latency, bandwidth cap).
    ///
    /// Each response waits --latency-ms before its first byte and each connection carries at
    /// most --bandwidth-mbps each way, paced as the server's own emulation paces it. In front of
    /// another S3 server it checks that emulation, or makes any server S3-like. Any protocol
    /// where requests and responses alternate on a connection (HTTP/1.1 without pipelining):
    /// bytes from the upstream that follow bytes from the client are a response. Prints its
    /// counts when it stops.
    Proxy(ProxyArgs),
}

#[derive(Args)]
struct ProxyArgs {
    /// Address to listen on.
    #[arg(long, value_name = "ADDR")]
    listen: SocketAddr,
    /// Address of the server to forward to (one connection to it per client connection).
    #[arg(long, value_name = "ADDR")]
    upstream: SocketAddr,
    #[command(flatten)]
    link: LinkArgs,
}

/// The emulated network link, shared by the server and the proxy.
#[derive(Args)]
struct LinkArgs {
    /// Delay before each response, in milliseconds.
    #[arg(long, default_value_t = 0, value_name = "MS")]
    latency_ms: u64,
    /// Per-connection bandwidth cap in megabits per second, each direction (default: unlimited).
    #[arg(long, value_name = "MBPS", value_parser = parse_bandwidth)]
    bandwidth_mbps: Option<f64>,
}

impl LinkArgs {
    fn latency(&self) -> Duration {
        Duration::from_millis(self.latency_ms)
    }

    fn bytes_per_sec(&self) -> Option<u64> {
        self.bandwidth_mbps
            .map(|mbps| (mbps * 1_000_000.0 / 8.0) as u64)
    }
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
    /// Many small objects to put into each bucket, in memory only (made again at each start,
    /// never written under --root): segments:N (N tiny valid ledger segments and their
    /// sidecars, 2N keys), tree:DIRSxFILES (tree/d0000/f000000 ...), flat:N (flat/f0000000
    /// ...). Repeatable. A million keys take a few seconds.
    #[arg(long = "seed-objects", value_name = "SHAPE")]
    seed_objects: Vec<SeedShape>,
    #[command(flatten)]
    link: LinkArgs,
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
            // One line: clap's first paragraph, which for a missing argument spans two lines.
            let rendered = error.render().to_string();
            let first_paragraph = rendered.split("\n\n").next().unwrap_or_default();
            eprintln!(
                "{}",
                first_paragraph
                    .split_whitespace()
                    .collect::<Vec<_>>()
                    .join(" ")
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
        Some(Command::Proxy(args)) => proxy(args),
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
        seed_objects: args.seed_objects,
        latency: args.link.latency(),
        bandwidth_bytes_per_sec: args.link.bytes_per_sec(),
        fail_rate: args.fail_rate,
        region: args.region,
    };
    run_until_signal(async move {
        let listen = config.listen;
        let server = DevServer::start(config)
            .await
            .map_err(|e| format!("cannot start on {listen}: {e}"))?;
        print_line(&format!(
            "scribefs-devserver ready on {} (buckets: {})",
            server.endpoint(),
            server.bucket_names().join(", ")
        ));
        Ok(async move { server.shutdown().await })
    })
}

fn proxy(args: ProxyArgs) -> Result<(), String> {
    let config = ProxyConfig {
        listen: args.listen,
        upstream: args.upstream,
        latency: args.link.latency(),
        bandwidth_bytes_per_sec: args.link.bytes_per_sec(),
    };
    run_until_signal(async move {
        let listen = config.listen;
        let upstream = config.upstream;
        let proxy = Proxy::start(config)
            .await
            .map_err(|e| format!("cannot listen on {listen}: {e}"))?;
        let bandwidth = args
            .link
            .bandwidth_mbps
            .map_or("unlimited".to_string(), |mbps| format!("{mbps} Mbit/s"));
        print_line(&format!(
            "scribefs-devserver proxy ready on {} (upstream {upstream}, latency {} ms, bandwidth {bandwidth})",
            proxy.local_addr(),
            args.link.latency_ms,
        ));
        Ok(async move {
            let stats = proxy.shutdown().await;
            print_line(&format!(
                "scribefs-devserver proxy stats: {} connections, {} requests forwarded, {} closed for an unreachable upstream",
                stats.connections, stats.requests, stats.upstream_unreachable
            ));
        })
    })
}

/// Starts a service on a multi-thread runtime and runs until SIGTERM or SIGINT. `start`
/// returns the service's stop, which runs after the signal.
fn run_until_signal<Start, Stop>(start: Start) -> Result<(), String>
where
    Start: Future<Output = Result<Stop, String>>,
    Stop: Future<Output = ()>,
{
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .map_err(|e| format!("cannot start the runtime: {e}"))?;
    runtime.block_on(async move {
        let terminated = signals::termination()?;
        let stop = start.await?;
        terminated.await;
        stop.await;
        Ok(())
    })
}

/// A line on stdout for the scripts that wait for it; a closed stdout is only logged.
fn print_line(line: &str) {
    let mut stdout = std::io::stdout();
    if let Err(error) = writeln!(stdout, "{line}").and_then(|()| stdout.flush()) {
        tracing::warn!(%error, "cannot print {line:?}");
    }
}
