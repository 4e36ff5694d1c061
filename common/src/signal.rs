//! [`shutdown_signal`]: SIGINT or SIGTERM, whichever comes first.

use std::fmt;
use std::future::pending;

/// The signal that asked the process to stop.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ShutdownSignal {
    /// SIGINT: Ctrl-C in a terminal.
    Interrupt,
    /// SIGTERM: service managers, Kubernetes, JupyterHub stopping its proxy.
    Terminate,
}

impl fmt::Display for ShutdownSignal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Interrupt => "SIGINT",
            Self::Terminate => "SIGTERM",
        })
    }
}

/// Resolves on SIGINT (Ctrl-C) or SIGTERM, logging which; the binaries then shut down
/// gracefully.
///
/// A signal that cannot be listened for is logged as an error and never fires (the other one
/// still does); it does not count as received. The handlers are installed when the future is
/// first polled.
pub async fn shutdown_signal() -> ShutdownSignal {
    let interrupt = async {
        if let Err(e) = tokio::signal::ctrl_c().await {
            tracing::error!(error = %e, "cannot listen for SIGINT");
            pending::<()>().await;
        }
    };
    #[cfg(unix)]
    let terminate = async {
        use tokio::signal::unix::{SignalKind, signal};
        match signal(SignalKind::terminate()) {
            Ok(mut term) => {
                term.recv().await;
            }
            Err(e) => {
                tracing::error!(error = %e, "cannot listen for SIGTERM");
                pending::<()>().await;
            }
        }
    };
    #[cfg(not(unix))]
    let terminate = pending::<()>();
    let received = tokio::select! {
        () = interrupt => ShutdownSignal::Interrupt,
        () = terminate => ShutdownSignal::Terminate,
    };
    tracing::info!(signal = %received, "shutting down");
    received
}

#[cfg(all(test, unix))]
mod tests {
    use std::future::Future;
    use std::pin::Pin;
    use std::task::{Context, Poll, Waker};
    use std::time::Duration;

    use nix::sys::signal::{Signal, raise};

    use super::*;

    /// Polls `fut` once (installing its handlers); it must still be waiting.
    fn poll_once(fut: &mut Pin<Box<impl Future<Output = ShutdownSignal>>>) {
        let mut cx = Context::from_waker(Waker::noop());
        assert_eq!(fut.as_mut().poll(&mut cx), Poll::Pending, "no signal yet");
    }

    // One test for both signals: a SIGINT raised while another test waited for SIGTERM would
    // end that one instead.
    #[tokio::test]
    async fn sigterm_and_sigint_are_told_apart() {
        for (signal, want) in [
            (Signal::SIGTERM, ShutdownSignal::Terminate),
            (Signal::SIGINT, ShutdownSignal::Interrupt),
        ] {
            let mut fut = Box::pin(shutdown_signal());
            poll_once(&mut fut);
            raise(signal).unwrap();
            let got = tokio::time::timeout(Duration::from_secs(10), fut).await;
            assert_eq!(got, Ok(want), "{signal}");
        }
    }
}
