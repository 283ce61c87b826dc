//! Ctrl-C and SIGTERM become a request to stop at the next safe point, never an exit in the
//! middle of an instance: the instance in flight is put back as it was first.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use tokio::signal::unix::{SignalKind, signal};

/// Set once a stop was asked for; checked by the engine between instances.
#[derive(Clone, Default)]
pub struct Interrupt {
    requested: Arc<AtomicBool>,
}

impl Interrupt {
    /// Takes over SIGINT and SIGTERM for the rest of the process. `on_signal` is called for
    /// every signal, with whether it was the first, to tell the operator what happens next.
    pub fn install(on_signal: impl Fn(bool) + Send + 'static) -> std::io::Result<Interrupt> {
        let interrupt = Interrupt::default();
        let mut sigint = signal(SignalKind::interrupt())?;
        let mut sigterm = signal(SignalKind::terminate())?;
        let requested = interrupt.requested.clone();
        tokio::spawn(async move {
            loop {
                tokio::select! {
                    _ = sigint.recv() => {}
                    _ = sigterm.recv() => {}
                }
                let first = !requested.swap(true, Ordering::SeqCst);
                on_signal(first);
            }
        });
        Ok(interrupt)
    }

    pub fn requested(&self) -> bool {
        self.requested.load(Ordering::SeqCst)
    }
}
