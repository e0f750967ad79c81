//! Which process a FUSE request comes from. FUSE names the calling thread; the write path needs
//! the process (thread group), so that a close by any thread of the opener uploads while a
//! close by a forked child that inherited the descriptor does not.

/// The thread group (process id) of thread `tid`, or `tid` itself if /proc does not say.
pub fn thread_group(tid: u32) -> u32 {
    let status = std::fs::read_to_string(format!("/proc/{tid}/status")).unwrap_or_default();
    status
        .lines()
        .find_map(|line| line.strip_prefix("Tgid:"))
        .and_then(|value| value.trim().parse().ok())
        .unwrap_or(tid)
}
