//! The process's limit of open files. Every connection of the pool is a file descriptor, and
//! the lean HEAD path keeps connections of its own beside the SDK's, so a pool of N may hold
//! up to 2N sockets, plus the disk cache's and the mount's own files. Many systems start a
//! process with a soft limit of 1024 and a far higher hard one; the soft limit is raised to the
//! hard one at start, as Go's runtime does for every program, so the default pool fits.

/// Sockets and files beyond the pool's: the disk cache, staged writes, logs, SQLite.
const HEADROOM: u64 = 256;

/// Raises the soft limit of open files to the hard limit; warns when even that leaves too
/// few for `pool_size` connections.
pub fn raise_for_pool(pool_size: usize) {
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit and setrlimit only read and write the struct passed to them.
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) } != 0 {
        return;
    }
    if limit.rlim_cur < limit.rlim_max {
        let raised = libc::rlimit {
            rlim_cur: limit.rlim_max,
            rlim_max: limit.rlim_max,
        };
        // SAFETY: as above.
        if unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &raised) } == 0 {
            limit = raised;
        }
    }
    let wanted = 2 * pool_size as u64 + HEADROOM;
    if limit.rlim_cur < wanted {
        tracing::warn!(
            open_files = limit.rlim_cur,
            pool_size,
            "the open-file limit is below twice --pool-size plus {HEADROOM}: requests may fail with EMFILE; raise `ulimit -n` or lower --pool-size"
        );
    }
}
