//! Ctrl-C and SIGTERM become a request to stop at the next safe point, never an exit in the
//! middle of an instance: the instance in flight is finished or undone first.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use tokio::signal::unix::{SignalKind, signal};

/// Set once a stop was asked for; checked by the engine between instances.
#[derive(Clone, Default)]
pub struct Interrupt {
    requested: Arc<AtomicBool>,
}

impl Interrupt {
    /// Takes over SIGINT and SIGTERM for the rest of the process. `on_first` is called once,
    /// when the first signal arrives, to tell the operator what happens next.
    pub fn install(on_first: impl Fn() + Send + 'static) -> std::io::Result<Interrupt> {
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
                if !requested.swap(true, Ordering::SeqCst) {
                    on_first();
                }
            }
        });
        Ok(interrupt)
    }

    pub fn requested(&self) -> bool {
        self.requested.load(Ordering::SeqCst)
    }
}
