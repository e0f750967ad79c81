//! The command line, as clap parses it. Validation beyond types happens in `config`.

use std::path::PathBuf;

use clap::builder::TypedValueParser;
use clap::{Args, Parser, Subcommand};

use super::bounds;
use crate::store::config::{SSE_VALUES, STORAGE_CLASSES};

#[derive(Debug, Parser)]
#[command(
    name = "scribefs",
    version,
    about = "Mount an S3 bucket as a directory, and manage Scribe Ledger segments"
)]
pub struct Cli {
    #[command(flatten)]
    pub connection: ConnectionArgs,
    /// Log filter: a level (error, warn, info, debug, trace) or RUST_LOG directives [default: warn] [env: RUST_LOG]
    #[arg(long, global = true, value_name = "FILTER", value_parser = super::logging::parse_filter)]
    pub log_level: Option<String>,
    /// Log debug messages: every S3 request and FUSE operation (same as --log-level debug)
    #[arg(long, global = true, conflicts_with = "log_level")]
    pub debug: bool,
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
    /// Region to sign requests for [default: the profile's, else the bucket's own] [env: S3_REGION, AWS_REGION, AWS_DEFAULT_REGION]
    #[arg(long, global = true)]
    pub region: Option<String>,
    /// Bucket name [env: S3_BUCKET]
    #[arg(long, global = true)]
    pub bucket: Option<String>,
    /// TOML file with a [storage.s3] table (bucket, region, endpoint, access_key_id, ...)
    #[arg(long, global = true, value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// Extra attempts for throttled, failed (5xx) or timed-out requests (0 to 100) [default: 9 for mount, 3 for the other commands]
    #[arg(long, global = true, value_name = "N", value_parser = bounds::MAX_RETRIES.parser::<u32>(), allow_hyphen_values = true)]
    pub max_retries: Option<u32>,
    /// Timeout of one request attempt, in seconds (1 to 86400); a request with its retries ends within twice this [default: 30]
    #[arg(long, global = true, value_name = "SECS", value_parser = bounds::TIMEOUT_SECS.parser::<u64>(), allow_hyphen_values = true)]
    pub timeout_secs: Option<u64>,
    /// Most connections (and requests) open to S3 at once (1 to 4096) [default: 512]
    #[arg(long, global = true, value_name = "N", value_parser = bounds::POOL_SIZE.parser::<usize>(), allow_hyphen_values = true)]
    pub pool_size: Option<usize>,
    /// Named profile of ~/.aws/config and ~/.aws/credentials [env: AWS_PROFILE]
    #[arg(long, global = true, value_name = "NAME")]
    pub profile: Option<String>,
    /// Send unsigned requests, for public buckets (no credentials looked up)
    #[arg(long, global = true)]
    pub no_sign_request: bool,
    /// Do not check downloads of whole objects against their MD5 ETag (for a store whose
    /// ETags are not MD5s of the data)
    #[arg(long, global = true)]
    pub no_etag_check: bool,
    /// Server-side encryption of the objects written: AES256 (SSE-S3), aws:kms (SSE-KMS) or
    /// aws:kms:dsse [default: the bucket's]
    #[arg(long, global = true, value_name = "TYPE", value_parser = clap::builder::PossibleValuesParser::new(SSE_VALUES), help_heading = "AWS")]
    pub sse: Option<String>,
    /// KMS key (id or ARN) for --sse aws:kms [default: the bucket's or the account's key]
    #[arg(
        long,
        global = true,
        value_name = "KEY",
        requires = "sse",
        help_heading = "AWS"
    )]
    pub sse_kms_key_id: Option<String>,
    /// Storage class of the objects written (STANDARD, STANDARD_IA, INTELLIGENT_TIERING, ...)
    /// [default: STANDARD]
    #[arg(long, global = true, value_name = "CLASS", value_parser = clap::builder::PossibleValuesParser::new(STORAGE_CLASSES), hide_possible_values = true, help_heading = "AWS")]
    pub storage_class: Option<String>,
    /// Pay for the requests and transfer of a Requester Pays bucket (x-amz-request-payer)
    #[arg(long, global = true, help_heading = "AWS")]
    pub requester_pays: bool,
    /// Refuse (403) a bucket that another AWS account (12 digits) owns
    #[arg(long, global = true, value_name = "ACCOUNT", value_parser = parse_account_id, help_heading = "AWS")]
    pub expected_bucket_owner: Option<String>,
    /// Checksum each upload carries, checked by the server before it stores: crc32c (cheap;
    /// AWS and current S3-compatible servers), md5 (Content-MD5, for servers without flexible
    /// checksums) or off
    #[arg(
        long,
        global = true,
        value_enum,
        value_name = "ALGORITHM",
        default_value = "crc32c",
        help_heading = "AWS"
    )]
    pub upload_checksums: UploadChecksumsArg,
    /// Text put before the User-Agent of every request, to find this mount's requests in logs
    #[arg(long, global = true, value_name = "TEXT", value_parser = parse_user_agent_prefix, help_heading = "AWS")]
    pub user_agent_prefix: Option<String>,
}

fn parse_account_id(text: &str) -> Result<String, String> {
    if text.len() == 12 && text.bytes().all(|b| b.is_ascii_digit()) {
        Ok(text.to_string())
    } else {
        Err("an AWS account id is 12 digits".into())
    }
}

fn parse_user_agent_prefix(text: &str) -> Result<String, String> {
    if !text.is_empty() && text.bytes().all(|b| b.is_ascii_graphic() || b == b' ') {
        Ok(text.to_string())
    } else {
        Err("printable ASCII, not empty".into())
    }
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Mount BUCKET at DIR (returns once the mount is live; unmount with umount DIR)
    Mount(Box<MountArgs>),
    /// Scribe Ledger segments (segments/segment-<16 hex>.bin), without mounting
    #[command(subcommand)]
    Segments(SegmentsCommand),
    /// Incomplete multipart uploads (invisible, but billed until aborted)
    #[command(subcommand)]
    Uploads(UploadsCommand),
    /// Print a shell completion script (scripts/install.sh installs them), e.g.
    /// `scribefs completions bash > /usr/share/bash-completion/completions/scribefs`
    Completions {
        #[arg(value_enum)]
        shell: clap_complete::Shell,
    },
    /// Print the manual page of scribefs, or of one command (`scribefs man mount | man -l -`),
    /// in roff; --out-dir writes every page
    Man(ManArgs),
}

#[derive(Debug, Clone, Args)]
pub struct ManArgs {
    /// The command whose page to print, e.g. `mount` or `segments ls`
    pub command: Vec<String>,
    /// Write the pages of scribefs and of every command (scribefs.1, scribefs-mount.1, ...)
    /// into DIR instead
    #[arg(long, value_name = "DIR", conflicts_with = "command")]
    pub out_dir: Option<PathBuf>,
}

#[derive(Debug, Subcommand)]
pub enum UploadsCommand {
    /// List pending uploads: start time (UTC), upload id and key, one per line
    Ls(UploadsFilter),
    /// Abort pending uploads (prints each one aborted)
    Abort(UploadsFilter),
}

#[derive(Debug, Clone, Args)]
pub struct UploadsFilter {
    /// Only uploads of keys below this prefix (a mount's --prefix)
    #[arg(long)]
    pub prefix: Option<String>,
    /// Only uploads started longer ago than this (e.g. 90s, 30m, 24h, 7d)
    #[arg(long, value_name = "AGE", value_parser = bounds::AGE.parser::<u64>().map(std::time::Duration::from_secs), allow_hyphen_values = true)]
    pub older_than: Option<std::time::Duration>,
}

#[derive(Debug, Subcommand)]
pub enum SegmentsCommand {
    /// List segment ids, one per line, ascending
    ///
    /// Printed a listing page at a time: memory does not grow with the bucket. Ids whose keys
    /// are spelled otherwise than the ledger writes them (another number of hex digits, or
    /// upper case) come after the others, ascending.
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
    /// Print a segment's entries as JSON Lines sorted by key (gunzipped, checked against its
    /// sidecar), or its stored bytes with --format raw
    Cat {
        /// Segment id in hex
        id: String,
        #[arg(long, value_enum, default_value = "jsonl")]
        format: CatFormat,
    },
    /// Print the ids of the segments that hold KEY, newest (highest id) first
    Find {
        key: String,
        /// KEY is base64 (for keys that are not UTF-8)
        #[arg(long)]
        base64: bool,
        /// Segments fetched and decoded at once (1 to 1024) [default: --pool-size]
        #[arg(long, value_name = "N", value_parser = bounds::PARALLEL.parser::<usize>(), allow_hyphen_values = true)]
        parallel: Option<usize>,
        /// Fetch and decode every segment, neither reading nor writing the local index of
        /// their keys
        #[arg(long)]
        no_index: bool,
        /// Most the bucket's metadata database (the mounts' cache and this index) may hold on
        /// disk, in MiB, 1 to 1048576; the oldest written rows go first
        #[arg(long, value_name = "MIB", default_value = "2048", value_parser = bounds::METADATA_CACHE_SIZE_MIB.parser::<u64>(), allow_hyphen_values = true)]
        metadata_cache_size_mib: u64,
        /// Most MiB of segments fetched and not yet decoded at once, whatever --parallel (a
        /// larger segment goes alone); 1 to 1048576
        #[arg(long, value_name = "MIB", default_value_t = super::in_flight::DEFAULT_MIB, value_parser = bounds::IN_FLIGHT_MIB.parser::<u64>(), allow_hyphen_values = true)]
        max_in_flight_mib: u64,
    },
    /// Check that segments (all, or the IDs given) decompress, decode and match their sidecars;
    /// one line per bad segment, non-zero exit if any is bad
    Verify {
        ids: Vec<String>,
        /// Segments fetched and decoded at once (1 to 1024) [default: --pool-size]
        #[arg(long, value_name = "N", value_parser = bounds::PARALLEL.parser::<usize>(), allow_hyphen_values = true)]
        parallel: Option<usize>,
        /// Check only segments whose data file or sidecar changed since this machine last
        /// found them intact (and every one that failed before); say how many were skipped
        #[arg(long)]
        changed: bool,
        /// Most the bucket's metadata database (the mounts' cache and this index) may hold on
        /// disk, in MiB, 1 to 1048576; the oldest written rows go first
        #[arg(long, value_name = "MIB", default_value = "2048", value_parser = bounds::METADATA_CACHE_SIZE_MIB.parser::<u64>(), allow_hyphen_values = true)]
        metadata_cache_size_mib: u64,
        /// Most MiB of segments fetched and not yet decoded at once, whatever --parallel (a
        /// larger segment goes alone); 1 to 1048576
        #[arg(long, value_name = "MIB", default_value_t = super::in_flight::DEFAULT_MIB, value_parser = bounds::IN_FLIGHT_MIB.parser::<u64>(), allow_hyphen_values = true)]
        max_in_flight_mib: u64,
    },
    /// Copy every segment and sidecar to DIR, skipping files already identical (resumable)
    Pull {
        dir: PathBuf,
        /// Files copied at once (1 to 4096) [default: --pool-size]
        #[arg(long, value_name = "N", value_parser = bounds::JOBS.parser::<usize>(), allow_hyphen_values = true)]
        jobs: Option<usize>,
        /// Most MiB of files held at once, whatever --jobs (a file of up to 16 MiB is read
        /// whole to check its MD5 before it is written; larger ones stream); 1 to 1048576
        #[arg(long, value_name = "MIB", default_value_t = super::in_flight::DEFAULT_MIB, value_parser = bounds::IN_FLIGHT_MIB.parser::<u64>(), allow_hyphen_values = true)]
        max_in_flight_mib: u64,
    },
    /// Copy every segment file of DIR to the bucket, skipping objects already identical
    Push {
        dir: PathBuf,
        /// Files copied at once (1 to 4096) [default: --pool-size]
        #[arg(long, value_name = "N", value_parser = bounds::JOBS.parser::<usize>(), allow_hyphen_values = true)]
        jobs: Option<usize>,
        /// Most MiB the uploads hold at once (buffers and parts in flight), whatever --jobs;
        /// 1 to 1048576
        #[arg(long, value_name = "MIB", default_value_t = super::in_flight::DEFAULT_MIB, value_parser = bounds::IN_FLIGHT_MIB.parser::<u64>(), allow_hyphen_values = true)]
        max_in_flight_mib: u64,
    },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum CatFormat {
    /// One {"key": ..., "value": ...} object per line (key_base64/value_base64 for binary)
    Jsonl,
    /// The stored bytes, gzip included
    Raw,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum LayoutArg {
    /// Every `/`-separated key is a path
    Keys,
    /// Only Scribe Ledger segment files of the prefix (default segments/), in id order
    Segments,
}

#[derive(Debug, Clone, Args)]
pub struct MountArgs {
    pub bucket: String,
    pub dir: PathBuf,
    /// Show only keys below this prefix (e.g. data/)
    #[arg(long, help_heading = "Namespace")]
    pub prefix: Option<String>,
    /// How keys become files
    #[arg(long, value_enum, default_value = "keys", help_heading = "Namespace")]
    pub layout: LayoutArg,
    /// Refuse every change (writers get EROFS)
    #[arg(long, help_heading = "Namespace")]
    pub read_only: bool,
    /// Let writers replace existing segments (segments layout)
    #[arg(long, help_heading = "Namespace")]
    pub allow_overwrite: bool,
    /// List the decoded `entries/` directory in the root (segments layout); it is reachable by
    /// name either way, and unlisted by default so `cp -a`/`rsync -a` of the mount copy only segments
    #[arg(long, help_heading = "Namespace")]
    pub list_entries: bool,
    /// Directories with more entries are not renamed (EXDEV, so mv copies instead; 0 to 1000000)
    #[arg(
        long,
        default_value = "1000",
        value_name = "N",
        value_parser = bounds::RENAME_DIR_LIMIT.parser::<usize>(),
        allow_hyphen_values = true,
        help_heading = "Namespace"
    )]
    pub rename_dir_limit: usize,
    /// Directory entries kept in memory that the kernel does not hold, before the oldest are
    /// dropped (asked of S3 again when needed; never shortens a listing; 100 to 100000000)
    #[arg(
        long,
        default_value = "300000",
        value_name = "N",
        value_parser = bounds::MAX_CACHED_NODES.parser::<usize>(),
        allow_hyphen_values = true,
        help_heading = "Namespace"
    )]
    pub max_cached_nodes: usize,
    /// Owner shown for files without s3fs uid metadata [default: yours]
    #[arg(long, value_parser = bounds::ID.parser::<u32>(), allow_hyphen_values = true, help_heading = "Permissions")]
    pub uid: Option<u32>,
    /// Group shown for files without s3fs gid metadata [default: yours]
    #[arg(long, value_parser = bounds::ID.parser::<u32>(), allow_hyphen_values = true, help_heading = "Permissions")]
    pub gid: Option<u32>,
    /// Permission bits of directories (octal)
    #[arg(long, default_value = "755", value_parser = bounds::MODE.parser::<u16>(), allow_hyphen_values = true, help_heading = "Permissions")]
    pub dir_mode: u16,
    /// Permission bits of files without s3fs mode metadata (octal)
    #[arg(long, default_value = "644", value_parser = bounds::MODE.parser::<u16>(), allow_hyphen_values = true, help_heading = "Permissions")]
    pub file_mode: u16,
    /// Let other users use the mount (needs user_allow_other in /etc/fuse.conf unless root)
    #[arg(long, help_heading = "Permissions")]
    pub allow_other: bool,
    /// Let root use the mount
    #[arg(long, help_heading = "Permissions")]
    pub allow_root: bool,
    /// Have the kernel enforce the stored modes and owners (on by default with --allow-other)
    #[arg(long, help_heading = "Permissions")]
    pub default_permissions: bool,
    /// Show every name with its stored s3fs metadata (type, mode, owner, times): names this
    /// machine has not seen cost a HEAD once, remembered across mounts; auto = on in the keys
    /// layout, off in the segments layout; off = names only listed show the mount's defaults
    #[arg(
        long,
        value_enum,
        default_value = "auto",
        value_name = "WHEN",
        help_heading = "Permissions"
    )]
    pub posix_metadata: PosixMetadataArg,
    /// Memory block cache, in MiB, 1 to 1048576 (also accepted as --cache-size)
    #[arg(
        long,
        alias = "cache-size",
        default_value = "256",
        value_name = "MIB",
        value_parser = bounds::CACHE_SIZE_MIB.parser::<u64>(),
        allow_hyphen_values = true,
        help_heading = "Caching"
    )]
    pub cache_size_mib: u64,
    /// Memory the mount may use for its block cache and upload buffers together, in MiB: the
    /// cache keeps --cache-size-mib, all uploads share the rest for the buffers they fill and
    /// the parts being sent (writers wait for memory instead of adding up); at least the cache
    /// plus 9 x part size (one upload at full speed) [default: uploads share (memory - cache)
    /// / 8, at least 9 and at most 16 parts]
    #[arg(
        long,
        value_name = "MIB",
        value_parser = bounds::CACHE_SIZE_MIB.parser::<u64>(),
        allow_hyphen_values = true,
        help_heading = "Caching"
    )]
    pub max_memory_target: Option<u64>,
    /// Keep blocks read from S3 in this directory too (a disk tier below the memory cache, kept
    /// across remounts; one mount per directory)
    #[arg(long, value_name = "DIR", help_heading = "Caching")]
    pub cache_dir: Option<PathBuf>,
    /// Most the --cache-dir may hold, in MiB, 1 to 67108864 (least recently used blocks are
    /// deleted first)
    #[arg(
        long,
        default_value = "4096",
        value_name = "MIB",
        value_parser = bounds::CACHE_DIR_SIZE.parser::<u64>(),
        allow_hyphen_values = true,
        help_heading = "Caching"
    )]
    pub cache_dir_size: u64,
    /// Most the metadata cache (what HEADs told and what this machine uploaded, kept across
    /// mounts in a database per bucket, beside the index of `segments find`) may hold on disk,
    /// in MiB, 1 to 1048576; the oldest entries go first (about 140 bytes an object)
    #[arg(
        long,
        default_value = "2048",
        value_name = "MIB",
        value_parser = bounds::METADATA_CACHE_SIZE_MIB.parser::<u64>(),
        allow_hyphen_values = true,
        help_heading = "Caching"
    )]
    pub metadata_cache_size_mib: u64,
    /// Size of a cached block and of a ranged GET's unit, 4K to 256M (e.g. 1M)
    #[arg(long, default_value = "1M", value_parser = bounds::BLOCK_SIZE.parser::<u64>(), allow_hyphen_values = true, help_heading = "Caching")]
    pub block_size: u64,
    /// Seconds metadata (attributes, listings, misses) is trusted (0 to 31536000, fractions
    /// allowed), or "indefinite"
    #[arg(long, default_value = "1", value_parser = bounds::parse_ttl, allow_hyphen_values = true, help_heading = "Caching")]
    pub metadata_ttl: bounds::Ttl,
    /// Seconds a name found missing stays missing without asking S3 again (0 to 31536000, or
    /// "indefinite") [default: --metadata-ttl]
    #[arg(long, value_name = "SECS", value_parser = bounds::parse_ttl, allow_hyphen_values = true, help_heading = "Caching")]
    pub negative_metadata_ttl: Option<bounds::Ttl>,
    /// Multipart upload part size, 5M to 5G (S3's limits)
    #[arg(long, default_value = "8M", value_parser = bounds::PART_SIZE.parser::<u64>(), allow_hyphen_values = true, help_heading = "Writing")]
    pub part_size: u64,
    /// Where random writes and appends are staged before upload [default: $TMPDIR/scribefs-staging]
    #[arg(long, value_name = "DIR", help_heading = "Writing")]
    pub staging_dir: Option<PathBuf>,
    /// Give up the bucket check at mount time after this many seconds (a server that accepts
    /// connections but never answers; 1 to 3600)
    #[arg(long, default_value = "10", value_name = "SECS", value_parser = bounds::CONNECT_TIMEOUT_SECS.parser::<u64>(), allow_hyphen_values = true)]
    pub connect_timeout_secs: u64,
    /// Stay in the foreground (logs go to stderr)
    #[arg(short, long)]
    pub foreground: bool,
    /// Have the kernel unmount DIR when the mount process ends, even killed (kill -9): no
    /// dead mount point is left behind (implies --allow-root unless --allow-other is given)
    #[arg(long)]
    pub auto_unmount: bool,
    /// Where the background mount process writes its log, instead of syslog
    #[arg(long, value_name = "FILE")]
    pub log_file: Option<PathBuf>,
    /// The syslog socket a background mount without --log-file logs to
    #[arg(long, value_name = "PATH", default_value = super::logging::DEFAULT_SYSLOG_SOCKET)]
    pub syslog_socket: PathBuf,
    /// Serve Prometheus metrics at http://ADDR/metrics (e.g. 127.0.0.1:9108)
    #[arg(long, value_name = "ADDR")]
    pub metrics_addr: Option<std::net::SocketAddr>,
    /// Options, comma separated: every --flag as flag or flag=value (cache_size_mib=64,read_only), FUSE's (allow_other, default_permissions, nodev, ...), and mount(8)'s (_netdev, nofail, x-systemd.*, ...), which are ignored
    #[arg(short = 'o', value_name = "OPTIONS")]
    pub options: Vec<String>,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, clap::ValueEnum)]
pub enum UploadChecksumsArg {
    #[default]
    Crc32c,
    Md5,
    Off,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum PosixMetadataArg {
    Auto,
    On,
    Off,
}
