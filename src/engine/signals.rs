//! Ctrl-C, SIGTERM and SIGHUP become a request to stop at the next safe point, never an exit in
//! the middle of an instance: the instance in flight is put back as it was first. SIGHUP is
//! what an operator's dropped SSH session to the bastion sends: by default it would end the
//! run wherever it was, a service perhaps stopped.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use tokio::signal::unix::{SignalKind, signal};

/// Set once a stop was asked for; checked by the engine between instances.
#[derive(Clone, Default)]
pub struct Interrupt {
    requested: Arc<AtomicBool>,
}

impl Interrupt {
    /// Takes over SIGINT, SIGTERM and SIGHUP for the rest of the process. `on_signal` is called
    /// for every signal, with whether it was the first, to tell the operator what happens next.
    pub fn install(on_signal: impl Fn(bool) + Send + 'static) -> std::io::Result<Interrupt> {
        let interrupt = Interrupt::default();
        let mut sigint = signal(SignalKind::interrupt())?;
        let mut sigterm = signal(SignalKind::terminate())?;
        let mut sighup = signal(SignalKind::hangup())?;
        let requested = interrupt.requested.clone();
        tokio::spawn(async move {
            loop {
                tokio::select! {
                    _ = sigint.recv() => {}
                    _ = sigterm.recv() => {}
                    _ = sighup.recv() => {}
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
