//! The command line, as clap parses it. Validation beyond types happens in `config`.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};

#[derive(Debug, Parser)]
#[command(name = "scribefs", version, about = "Mount an S3 bucket as a directory, and manage Scribe Ledger segments")]
pub struct Cli {
    #[command(flatten)]
    pub connection: ConnectionArgs,
    #[command(subcommand)]
    pub command: Command,
}

/// How to reach the bucket. Each flag beats the environment, which beats `--config`.
#[derive(Debug, Clone, Default, Args)]
#[command(next_help_heading = "Connection")]
pub struct ConnectionArgs {
    /// S3 endpoint, e.g. http://127.0.0.1:9000 for the dev server or MinIO [env: S3_ENDPOINT, AWS_ENDPOINT_URL]
    #[arg(long, global = true, value_name = "URL")]
    pub endpoint_url: Option<String>,
    /// Address buckets as ENDPOINT/BUCKET (needed by most non-AWS servers) [env: S3_PATH_STYLE]
    #[arg(long, global = true)]
    pub force_path_style: bool,
    /// Region to sign requests for [default: us-east-1] [env: S3_REGION, AWS_REGION]
    #[arg(long, global = true)]
    pub region: Option<String>,
    /// Bucket name [env: S3_BUCKET]
    #[arg(long, global = true)]
    pub bucket: Option<String>,
    /// TOML file with a [storage.s3] table (bucket, region, endpoint, access_key_id, ...)
    #[arg(long, global = true, value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// Extra attempts for throttled, failed (5xx) or timed-out requests [default: 3]
    #[arg(long, global = true, value_name = "N")]
    pub max_retries: Option<u32>,
    /// Timeout of one request attempt, in seconds [default: 30]
    #[arg(long, global = true, value_name = "SECS")]
    pub timeout_secs: Option<u64>,
    /// Most connections (and requests) open to S3 at once [default: 10]
    #[arg(long, global = true, value_name = "N")]
    pub pool_size: Option<usize>,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Scribe Ledger segments (segments/segment-<16 hex>.bin), without mounting
    #[command(subcommand)]
    Segments(SegmentsCommand),
}

#[derive(Debug, Subcommand)]
pub enum SegmentsCommand {
    /// List segment ids, one per line, ascending
    Ls,
    /// Write a segment's bytes to FILE (or standard output)
    Get {
        /// Segment id in hex, e.g. 2a or 0x000000000000002a
        id: String,
        file: Option<PathBuf>,
    },
    /// Upload FILE as segment ID
    Put { id: String, file: PathBuf },
    /// Delete a segment and its .meta.json sidecar
    Rm { id: String },
    /// Check that the bucket is reachable with these credentials (one HeadBucket)
    Health,
}
