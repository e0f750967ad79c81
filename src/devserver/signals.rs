//! How the dev server's programs (the server, its proxy, the bench's s3s-fs) are stopped:
//! SIGTERM from a script, or SIGINT from Ctrl-C.

use std::future::Future;

use tokio::signal::unix::{SignalKind, signal};

/// Watches SIGTERM and SIGINT from now on, and returns a future that ends at the first of them.
/// Call it (inside a runtime) before printing the ready line: a signal that arrives before it is
/// watched kills the process without a clean stop.
pub fn termination() -> Result<impl Future<Output = ()>, String> {
    let mut terminate =
        signal(SignalKind::terminate()).map_err(|e| format!("cannot watch SIGTERM: {e}"))?;
    let mut interrupt =
        signal(SignalKind::interrupt()).map_err(|e| format!("cannot watch SIGINT: {e}"))?;
    Ok(async move {
        tokio::select! {
            _ = terminate.recv() => {}
            _ = interrupt.recv() => {}
        }
    })
}
