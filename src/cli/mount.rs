//! `scribefs mount BUCKET DIR`: check the bucket, mount, and serve until unmounted.
//!
//! Without `--foreground` the command re-runs itself in the background and returns only once
//! the mount is live (exit 0) or has failed (non-zero, with the child's one-line reason): the
//! child reports through a pipe whose fd it inherits.

use std::io::{BufRead, Write};
use std::os::fd::{FromRawFd, OwnedFd};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use fuser::{MountOption, SessionACL};

use super::args::{LayoutArg, MountArgs, PosixMetadataArg};
use super::{CliError, connect_with_check};
use crate::cache::{DiskCache, MetadataCache};
use crate::fs::fuse::FuseAdapter;
use crate::fs::{Fs, FsConfig, Layout, LayoutKind};
use crate::store::StoreError;
use crate::store::config::S3Config;

/// Environment variable naming the fd a background child reports readiness on.
const READY_FD_ENV: &str = "SCRIBEFS_READY_FD";

pub async fn run(args: MountArgs, mut config: S3Config) -> Result<(), CliError> {
    config.bucket = args.bucket.clone();
    config
        .validate()
        .map_err(|e| CliError::Config(e.to_string()))?;
    // Options that contradict each other fail before anything is sent or forked.
    fs_config(&args)?;
    // Checked first: a stat of a dead mount point fails, which would read as "not a directory".
    if is_mount_point(&args.dir) {
        if !connection_is_gone(&args.dir).await {
            return Err(CliError::Usage(format!(
                "{} is already a mount point; unmount it first (umount or fusermount3 -u)",
                args.dir.display()
            )));
        }
        // The process serving it died (kill -9, OOM): nothing can be lost by detaching it.
        tracing::warn!(dir = %args.dir.display(), "recovering a dead mount point left by a crashed mount");
        detach(&args.dir);
        if is_mount_point(&args.dir) {
            return Err(CliError::Usage(format!(
                "{} is a dead mount point that could not be detached; run fusermount3 -uz on it",
                args.dir.display()
            )));
        }
    }
    if !args.dir.is_dir() {
        return Err(CliError::Usage(format!(
            "mount point {} is not a directory",
            args.dir.display()
        )));
    }
    if !args.foreground {
        return spawn_background(args.log_file.as_deref()).await;
    }
    let ready = ReadyPipe::from_env();
    match serve(args, config, &ready).await {
        Ok(()) => Ok(()),
        Err(e) => {
            ready.report(&format!("error: {e}"));
            Err(e)
        }
    }
}

async fn serve(args: MountArgs, config: S3Config, ready: &ReadyPipe) -> Result<(), CliError> {
    if let Some(addr) = args.metrics_addr {
        let bound = crate::metrics::http::serve(addr)
            .await
            .map_err(|e| CliError::Io(format!("cannot serve metrics at {addr}: {e}")))?;
        tracing::info!("metrics at http://{bound}/metrics");
    }
    // The bucket check retries like any request (a fault at mount time must not fail the
    // mount), but ends within --connect-timeout-secs: a server that accepts connections and
    // never answers would otherwise hold the mount for twice the request timeout. One that
    // refuses them is gone after 3 attempts (retry::GONE_AFTER), well within that.
    let check_timeout = Duration::from_secs(args.connect_timeout_secs);
    let (store, check) = connect_with_check(&config, Some(check_timeout)).await?;
    match check.head_bucket().await {
        Ok(()) => {}
        Err(e) if matches!(e.root(), StoreError::Timeout(_)) => {
            return Err(CliError::Config(format!(
                "cannot reach the S3 endpoint {}: no answer to HeadBucket within {}s (--connect-timeout-secs)",
                config.endpoint.as_deref().unwrap_or("AWS S3"),
                args.connect_timeout_secs
            )));
        }
        Err(e) => return Err(explain_bucket_check(&e, &config)),
    }
    let mut fs_config = fs_config(&args)?;
    fs_config.max_heads_in_flight = config.pool_size;
    if let Some(dir) = &args.cache_dir {
        let budget = mib_bytes("--cache-dir-size", args.cache_dir_size)?;
        let disk = DiskCache::open(dir, budget, args.block_size)
            .map_err(|e| CliError::Usage(e.to_string()))?;
        fs_config.disk_cache = Some(disk);
    }
    if fs_config.posix_metadata {
        let budget = mib_bytes("--metadata-cache-size-mib", args.metadata_cache_size_mib)?;
        fs_config.metadata_cache = open_metadata_cache(&args, &config, budget);
    }
    let disk_cache = fs_config.disk_cache.clone();
    std::fs::create_dir_all(&fs_config.staging_dir).map_err(|e| {
        CliError::Io(format!(
            "cannot create staging dir {}: {e}",
            fs_config.staging_dir.display()
        ))
    })?;
    if let Some(bytes) = fs_config.write_budget_bytes {
        tracing::info!(
            "uploads share {} MiB of memory for buffers and parts in flight",
            bytes >> 20
        );
    }
    let fs = Fs::new(store, fs_config);
    let adapter = FuseAdapter::new(fs.clone(), tokio::runtime::Handle::current());
    let mut session = fuser::Session::new(adapter, &args.dir, &fuse_config(&args, &config))
        .map_err(|e| CliError::Io(format!("cannot mount at {}: {e}", args.dir.display())))?;
    let mut unmounter = session.unmount_callable();
    let background = session
        .spawn()
        .map_err(|e| CliError::Io(format!("cannot start the FUSE session: {e}")))?;
    let (ended_tx, ended_rx) = tokio::sync::oneshot::channel();
    std::thread::spawn(move || {
        let result = background.join();
        let _ = ended_tx.send(result);
    });
    tracing::info!(
        dir = %args.dir.display(),
        connection = %redacted(&config),
        options = ?args,
        "mounted"
    );
    raise_readahead(&args.dir);
    ready.report("ok");
    super::notify::notify("READY=1");
    let mut terminate = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    let result = tokio::select! {
        result = ended_rx => {
            super::notify::notify("STOPPING=1");
            // Unmounted from outside (umount, fusermount3 -u): destroy() already flushed.
            match result {
                Ok(Err(e)) => Err(CliError::Io(format!("FUSE session ended with an error: {e}"))),
                _ => Ok(()),
            }
        }
        _ = tokio::signal::ctrl_c() => shutdown(&fs, &mut unmounter, &args.dir).await,
        _ = terminate.recv() => shutdown(&fs, &mut unmounter, &args.dir).await,
    };
    if let Some(disk) = disk_cache {
        // The blocks still queued reach the disk before the lock on the folder is released.
        let _ = tokio::task::spawn_blocking(move || disk.close()).await;
    }
    // Aborts that failed while S3 was unreachable get a last chance; the rest are logged.
    crate::upload::settle_pending_aborts(ABORT_GRACE).await;
    tracing::info!(
        dir = %args.dir.display(),
        counters = %crate::metrics::registry().summary(),
        "unmounted"
    );
    result
}

/// How long a mount that ends waits for aborts still being retried before it logs them.
const ABORT_GRACE: Duration = Duration::from_secs(3);

/// Whether the mount at `dir` has lost its FUSE connection (its process died): a stat then
/// fails with ENOTCONN at once. A live but slow mount is not touched: the stat runs on a thread
/// and is given up after a while.
async fn connection_is_gone(dir: &Path) -> bool {
    let dir = dir.to_path_buf();
    let stat = tokio::task::spawn_blocking(move || std::fs::metadata(&dir));
    match tokio::time::timeout(Duration::from_secs(2), stat).await {
        Ok(Ok(Err(e))) => e.raw_os_error() == Some(libc::ENOTCONN),
        _ => false,
    }
}

/// The connection settings for the log, with the secret key left out.
fn redacted(config: &S3Config) -> String {
    let credentials = if config.no_sign_request {
        "none (unsigned requests)".to_string()
    } else if let Some(id) = &config.access_key_id {
        format!("static key {id} (secret redacted)")
    } else {
        match &config.profile {
            Some(profile) => format!("AWS default chain, profile {profile}"),
            None => "AWS default chain".to_string(),
        }
    };
    format!(
        "bucket={} endpoint={} region={} path_style={} credentials={credentials} pool_size={} \
         timeout_secs={} max_retries={}",
        config.bucket,
        config.endpoint.as_deref().unwrap_or("AWS S3"),
        config.region.as_deref().unwrap_or("(the bucket's own)"),
        config.path_style,
        config.pool_size,
        config.timeout_secs,
        config.max_retries
    )
}

async fn shutdown(
    fs: &Arc<Fs>,
    unmounter: &mut fuser::SessionUnmounter,
    dir: &Path,
) -> Result<(), CliError> {
    tracing::info!("signal received: finishing uploads, then unmounting");
    super::notify::notify("STOPPING=1");
    fs.flush_all().await;
    if let Err(e) = unmounter.unmount() {
        tracing::warn!(error = %e, "unmount failed");
    }
    // fuser's unmount fails (EBUSY) or skips itself while a file is open; exiting then would
    // leave a dead mount point that answers every access with ENOTCONN, so detach it.
    if is_mount_point(dir) {
        tracing::warn!("the mount is busy; detaching it lazily");
        detach(dir);
    }
    Ok(())
}

/// Whether this process is the background child of a `scribefs mount` without --foreground.
pub fn is_background_child() -> bool {
    std::env::var_os(READY_FD_ENV).is_some()
}

/// Whether `dir` is a mount point, from /proc/self/mountinfo (a stat could block on it).
fn is_mount_point(dir: &Path) -> bool {
    mount_device(dir).is_some()
}

/// The device (`major:minor`) of the newest mount at `dir`, from /proc/self/mountinfo.
fn mount_device(dir: &Path) -> Option<String> {
    let (Some(parent), Some(name)) = (dir.parent(), dir.file_name()) else {
        return None;
    };
    let parent = if parent.as_os_str().is_empty() {
        Path::new(".")
    } else {
        parent
    };
    let parent = parent.canonicalize().ok()?;
    // mountinfo escapes space, tab, newline and backslash as octal.
    let wanted = parent
        .join(name)
        .to_string_lossy()
        .replace('\\', "\\134")
        .replace(' ', "\\040")
        .replace('\t', "\\011")
        .replace('\n', "\\012");
    let info = std::fs::read_to_string("/proc/self/mountinfo").ok()?;
    info.lines()
        .filter(|line| line.split(' ').nth(4) == Some(wanted.as_str()))
        .filter_map(|line| line.split(' ').nth(2))
        .next_back()
        .map(str::to_string)
}

/// Lets the kernel read ahead as far as the mount asked for. The kernel caps a FUSE mount's
/// readahead at its device default (128 KiB) whatever `max_readahead` says, so sequential
/// reads arrive in 128 KiB requests, a FUSE round trip each; at 1 MiB a cold read on loopback
/// went from 228 to 420 MiB/s. Only root may write the setting: others keep 128 KiB.
fn raise_readahead(dir: &Path) {
    let Some(device) = mount_device(dir) else {
        return;
    };
    let setting = format!("/sys/class/bdi/{device}/read_ahead_kb");
    let kib = crate::fs::fuse::MAX_READAHEAD / 1024;
    match std::fs::write(&setting, kib.to_string()) {
        Ok(()) => tracing::debug!(setting, kib, "raised the mount's readahead"),
        Err(e) => tracing::debug!(setting, error = %e, "readahead stays at the kernel's default"),
    }
}

/// Lazy unmount: umount2(MNT_DETACH) as root, `fusermount3 -uz` otherwise.
fn detach(dir: &Path) {
    use std::os::unix::ffi::OsStrExt;
    if let Ok(path) = std::ffi::CString::new(dir.as_os_str().as_bytes()) {
        // SAFETY: path is a valid NUL-terminated string that outlives the call.
        if unsafe { libc::umount2(path.as_ptr(), libc::MNT_DETACH) } == 0 {
            return;
        }
    }
    match std::process::Command::new("fusermount3")
        .arg("-u")
        .arg("-z")
        .arg("--")
        .arg(dir)
        .output()
    {
        Ok(output) if output.status.success() => {}
        Ok(output) => tracing::error!(
            stderr = %String::from_utf8_lossy(&output.stderr).trim(),
            "lazy unmount failed"
        ),
        Err(e) => tracing::error!(error = %e, "cannot run fusermount3"),
    }
}

/// One line naming what is wrong: the bucket, the endpoint or the credentials.
fn explain_bucket_check(error: &StoreError, config: &S3Config) -> CliError {
    let endpoint = config.endpoint.as_deref().unwrap_or("AWS S3");
    let message = match error.root() {
        StoreError::NoSuchBucket(_) | StoreError::NotFound(_) => {
            format!("bucket {:?} does not exist at {endpoint}", config.bucket)
        }
        StoreError::AccessDenied(_) => {
            let key = config
                .access_key_id
                .as_deref()
                .map_or("from the AWS credential chain".to_string(), |id| {
                    format!("{id:?}")
                });
            format!(
                "access to bucket {:?} at {endpoint} was refused: check access key {key} and its secret (signature or permissions)",
                config.bucket
            )
        }
        StoreError::UntrustedCertificate { .. } | StoreError::Credentials(_) => {
            error.root().to_string()
        }
        StoreError::Connection(_) | StoreError::Unreachable(_) | StoreError::Timeout(_) => {
            format!("cannot reach the S3 endpoint {endpoint}: {error}")
        }
        _ => format!(
            "checking bucket {:?} at {endpoint} failed: {error}",
            config.bucket
        ),
    };
    CliError::Config(message)
}

/// Where metadata is remembered across mounts: `metadata/` below `--cache-dir` when given,
/// else below the machine's cache folder ($XDG_CACHE_HOME/scribefs when set, else
/// /var/cache/scribefs as root and ~/.cache/scribefs otherwise), its tables at most `budget`
/// bytes. A cache that cannot be opened is logged and done without: every listed version then
/// costs a HEAD, as on a first mount.
fn open_metadata_cache(args: &MountArgs, s3: &S3Config, budget: u64) -> Option<Arc<MetadataCache>> {
    let dir = match &args.cache_dir {
        Some(dir) => dir.clone(),
        None => default_state_dir()?,
    }
    .join("metadata");
    let scope = format!("{} {}", s3.endpoint.as_deref().unwrap_or("aws"), s3.bucket);
    match MetadataCache::open(&dir, &scope, budget) {
        Ok(cache) => {
            tracing::debug!(path = %cache.path().display(), "metadata cache");
            Some(Arc::new(cache))
        }
        Err(e) => {
            tracing::warn!(dir = %dir.display(), error = %e, "no metadata cache: every listed file costs a HEAD");
            None
        }
    }
}

pub(super) fn default_state_dir() -> Option<PathBuf> {
    if let Some(base) = std::env::var_os("XDG_CACHE_HOME").filter(|v| !v.is_empty()) {
        return Some(PathBuf::from(base).join("scribefs"));
    }
    // SAFETY: geteuid cannot fail and touches no memory.
    if unsafe { libc::geteuid() } == 0 {
        return Some(PathBuf::from("/var/cache/scribefs"));
    }
    let home = std::env::var_os("HOME")?;
    Some(PathBuf::from(home).join(".cache").join("scribefs"))
}

fn fs_config(args: &MountArgs) -> Result<FsConfig, CliError> {
    let kind = match args.layout {
        LayoutArg::Keys => LayoutKind::Keys,
        LayoutArg::Segments => LayoutKind::Segments,
    };
    let layout =
        Layout::new(kind, args.prefix.as_deref()).map_err(|e| CliError::Usage(e.to_string()))?;
    let mut config = FsConfig::new(layout);
    config.read_only = args.read_only;
    if let Some(uid) = args.uid {
        config.uid = uid;
    }
    if let Some(gid) = args.gid {
        config.gid = gid;
    }
    config.dir_mode = args.dir_mode;
    config.file_mode = args.file_mode;
    config.metadata_ttl = args.metadata_ttl.0;
    config.negative_metadata_ttl = args.negative_metadata_ttl.map(|ttl| ttl.0);
    config.cache_bytes = mib_bytes("--cache-size-mib", args.cache_size_mib)?;
    config.block_size = args.block_size;
    config.part_size = args.part_size;
    config.write_budget_bytes = Some(match args.max_memory_target {
        Some(target) => write_budget(target, &config)?,
        None => crate::upload::WriteBudget::default_bytes(
            machine_memory(),
            config.cache_bytes,
            config.part_size,
        ),
    });
    config.allow_overwrite = args.allow_overwrite;
    config.list_entries = args.list_entries;
    config.rename_dir_limit = args.rename_dir_limit;
    config.max_cached_nodes = args.max_cached_nodes;
    // A file is what it was (type, mode, owner, times) by default; segments carry no POSIX
    // metadata, their modes are the mount's.
    config.posix_metadata = match args.posix_metadata {
        PosixMetadataArg::On => true,
        PosixMetadataArg::Off => false,
        PosixMetadataArg::Auto => kind == LayoutKind::Keys,
    };
    config.staging_dir = args
        .staging_dir
        .clone()
        .unwrap_or_else(|| std::env::temp_dir().join("scribefs-staging"));
    Ok(config)
}

/// What `--max-memory-target` leaves the uploads once the block cache has its share; refused
/// when that cannot hold one upload's parts, which would make every large write crawl.
fn write_budget(target_mib: u64, config: &FsConfig) -> Result<u64, CliError> {
    let target = mib_bytes("--max-memory-target", target_mib)?;
    let one_upload = crate::upload::WriteBudget::least_bytes(config.part_size);
    let needed = config.cache_bytes + one_upload;
    if target < needed {
        return Err(CliError::Usage(format!(
            "--max-memory-target {target_mib} is below the {} MiB block cache plus one upload's {} MiB of parts ({} MiB): raise it, or lower --cache-size-mib or --part-size",
            config.cache_bytes >> 20,
            one_upload >> 20,
            needed.div_ceil(1 << 20)
        )));
    }
    Ok(target - config.cache_bytes)
}

/// The machine's memory, or its cgroup's limit if smaller (a container's): what the default
/// write budget is a share of. 0 if unknown, which leaves the budget at its floor.
fn machine_memory() -> u64 {
    let total = std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|info| {
            let line = info.lines().find(|l| l.starts_with("MemTotal:"))?;
            line.split_whitespace().nth(1)?.parse::<u64>().ok()
        })
        .map_or(0, |kib| kib.saturating_mul(1024));
    // cgroup v2, then v1; "max" (no limit) does not parse and is skipped.
    [
        "/sys/fs/cgroup/memory.max",
        "/sys/fs/cgroup/memory/memory.limit_in_bytes",
    ]
    .iter()
    .filter_map(|path| {
        std::fs::read_to_string(path)
            .ok()?
            .trim()
            .parse::<u64>()
            .ok()
    })
    .fold(total, u64::min)
}

/// A MiB option in bytes. Its bound keeps it far below u64::MAX; checked all the same, so that a
/// wider bound could never make it wrap.
fn mib_bytes(option: &str, mib: u64) -> Result<u64, CliError> {
    super::bounds::mib_to_bytes(mib)
        .ok_or_else(|| CliError::Usage(format!("{option} {mib} is too large to count in bytes")))
}

fn fuse_config(args: &MountArgs, s3: &S3Config) -> fuser::Config {
    let mut config = fuser::Config::default();
    config.mount_options = vec![
        // The bucket as the source, as in the fstab line: `mount -a` then sees it is mounted.
        MountOption::FSName(s3.bucket.clone()),
        MountOption::Subtype("scribefs".into()),
        MountOption::NoDev,
        MountOption::NoSuid,
    ];
    if args.read_only {
        config.mount_options.push(MountOption::RO);
    }
    for option in args
        .options
        .iter()
        .flat_map(|o| o.split(','))
        .filter(|o| !o.is_empty())
    {
        match option {
            "allow_other" => config.acl = SessionACL::All,
            "allow_root" => config.acl = SessionACL::RootAndOwner,
            "ro" => config.mount_options.push(MountOption::RO),
            "default_permissions" => config.mount_options.push(MountOption::DefaultPermissions),
            // nodev and nosuid are the default; an explicit dev or suid (fstab) lifts them.
            "dev" => replace_option(&mut config, &MountOption::NoDev, MountOption::Dev),
            "suid" => replace_option(&mut config, &MountOption::NoSuid, MountOption::Suid),
            "nodev" | "nosuid" => {}
            "exec" => config.mount_options.push(MountOption::Exec),
            "noexec" => config.mount_options.push(MountOption::NoExec),
            other => config
                .mount_options
                .push(MountOption::CUSTOM(other.to_string())),
        }
    }
    if args.allow_other {
        config.acl = SessionACL::All;
    } else if args.allow_root {
        config.acl = SessionACL::RootAndOwner;
    }
    if args.auto_unmount {
        config.mount_options.push(MountOption::AutoUnmount);
        // fusermount3 hands auto_unmount only to mounts that let root in (fuser checks).
        if config.acl == SessionACL::Owner {
            config.acl = SessionACL::RootAndOwner;
        }
    }
    // Other users must meet the stored modes: the kernel checks them against our attributes.
    if (args.allow_other || args.default_permissions)
        && !config
            .mount_options
            .contains(&MountOption::DefaultPermissions)
    {
        config.mount_options.push(MountOption::DefaultPermissions);
    }
    config
}

fn replace_option(config: &mut fuser::Config, old: &MountOption, new: MountOption) {
    config.mount_options.retain(|o| o != old);
    config.mount_options.push(new);
}

/// Re-runs this command with `--foreground` in a new session, and waits for it to report.
async fn spawn_background(log_file: Option<&std::path::Path>) -> Result<(), CliError> {
    let mut fds = [0; 2];
    // SAFETY: pipe writes two fresh fds into the array we own.
    if unsafe { libc::pipe(fds.as_mut_ptr()) } != 0 {
        return Err(CliError::Io(format!(
            "pipe: {}",
            std::io::Error::last_os_error()
        )));
    }
    // SAFETY: both fds were just created by pipe and are owned by nobody else.
    let (read_end, write_end) =
        unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) };
    let exe = std::env::current_exe()?;
    let mut command = std::process::Command::new(exe);
    // The command line as parsed: the mount helper's form rewritten, config layers added.
    let argv = super::command_line(std::env::args_os().collect()).map_err(CliError::Usage)?;
    command.args(argv.into_iter().skip(1)).arg("--foreground");
    command.env(READY_FD_ENV, fds[1].to_string());
    // The child outlives this command: it must not hold the caller's terminal or pipes.
    let log = match log_file {
        Some(path) => std::process::Stdio::from(
            std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(path)
                .map_err(|e| {
                    CliError::Io(format!("cannot open log file {}: {e}", path.display()))
                })?,
        ),
        None => std::process::Stdio::null(),
    };
    command
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(log);
    use std::os::unix::process::CommandExt;
    let read_raw = fds[0];
    // SAFETY: the closure only calls async-signal-safe functions (setsid, close).
    unsafe {
        command.pre_exec(move || {
            libc::setsid();
            libc::close(read_raw);
            Ok(())
        });
    }
    let mut child = command.spawn()?;
    drop(write_end);
    let report = tokio::task::spawn_blocking(move || {
        let mut line = String::new();
        let _ = std::io::BufReader::new(std::fs::File::from(read_end)).read_line(&mut line);
        line
    })
    .await
    .unwrap_or_default();
    let line = report.trim_end().to_string();
    if line == "ok" {
        return Ok(());
    }
    let _ = child.wait();
    let reason = line
        .strip_prefix("error: ")
        .unwrap_or("the mount process exited before the mount was live");
    Err(CliError::Usage(reason.to_string()))
}

/// The write end of the readiness pipe, when this process is a background child. The first
/// report closes it, so the parent sees one line and then end of file.
struct ReadyPipe(std::sync::Mutex<Option<std::fs::File>>);

impl ReadyPipe {
    fn from_env() -> Self {
        let fd = std::env::var(READY_FD_ENV)
            .ok()
            .and_then(|v| v.parse::<i32>().ok());
        // SAFETY: the parent created this fd for us and nothing else in this process uses it.
        let file = fd.map(|fd| unsafe { std::fs::File::from_raw_fd(fd) });
        ReadyPipe(std::sync::Mutex::new(file))
    }

    fn report(&self, line: &str) {
        let taken = self.0.lock().ok().and_then(|mut f| f.take());
        if let Some(mut file) = taken {
            let _ = writeln!(file, "{line}");
            let _ = file.flush();
        }
    }
}
