//! The accept loop that the dev server and the proxy share: one task per connection, until
//! shutdown.

use std::future::Future;
use std::time::Duration;

use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio::task::JoinSet;

/// Pause after a failed accept (e.g. out of file descriptors) so the loop does not spin.
const ACCEPT_BACKOFF: Duration = Duration::from_millis(50);

/// Accepts connections until `shutdown` fires (or its sender is dropped), serving each in a task
/// of its own, and closes the listener. Returns the connections still open, for the caller to
/// drain or abort.
pub(crate) async fn accept_until_shutdown<S, F>(
    listener: TcpListener,
    mut shutdown: watch::Receiver<bool>,
    mut serve: S,
) -> JoinSet<()>
where
    S: FnMut(TcpStream) -> F,
    F: Future<Output = ()> + Send + 'static,
{
    let mut connections = JoinSet::new();
    loop {
        tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => {
                    connections.spawn(serve(stream));
                }
                Err(error) => {
                    tracing::warn!(%error, "accept failed");
                    tokio::time::sleep(ACCEPT_BACKOFF).await;
                }
            },
            _ = shutdown.changed() => break,
            // Reap finished connections so the set stays as small as the live ones.
            Some(_) = connections.join_next(), if !connections.is_empty() => {}
        }
    }
    connections
}
