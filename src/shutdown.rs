//! Signals mapped to intents: SIGTERM/SIGINT cancel one token (a second one exits at once), SIGHUP
//! asks for a reload.

use std::sync::Arc;

use tokio::signal::unix::{SignalKind, signal};
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

/// Exit code when a second signal interrupts the drain.
pub const EXIT_INTERRUPTED: i32 = 130;

/// Handles signals until `done` is cancelled (the daemon has drained). The first SIGTERM/SIGINT
/// cancels `shutdown`; a second one exits the process at once; SIGHUP notifies `reload`.
pub async fn handle_signals(
    shutdown: CancellationToken,
    reload: Arc<Notify>,
    done: CancellationToken,
) -> std::io::Result<()> {
    let mut term = signal(SignalKind::terminate())?;
    let mut int = signal(SignalKind::interrupt())?;
    let mut hup = signal(SignalKind::hangup())?;
    let mut asked = false;
    loop {
        tokio::select! {
            _ = done.cancelled() => return Ok(()),
            _ = hup.recv() => {
                tracing::info!("SIGHUP: reloading mappings");
                reload.notify_one();
            }
            _ = async { tokio::select! { _ = term.recv() => {}, _ = int.recv() => {} } } => {
                if asked {
                    eprintln!("second signal: exiting without waiting for in-flight work");
                    std::process::exit(EXIT_INTERRUPTED);
                }
                asked = true;
                tracing::info!("shutting down: finishing in-flight work (signal again to quit at once)");
                shutdown.cancel();
            }
        }
    }
}
