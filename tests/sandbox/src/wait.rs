//! Polling under a deadline: a short first interval that backs off, never a fixed sleep.

use std::thread;
use std::time::{Duration, Instant};

use anyhow::{Result, bail};

const FIRST_INTERVAL: Duration = Duration::from_millis(10);
const LONGEST_INTERVAL: Duration = Duration::from_millis(200);

/// Poll intervals: 10 ms at first, doubling up to 200 ms.
pub struct Backoff {
    interval: Duration,
}

impl Backoff {
    pub fn new() -> Backoff {
        Backoff { interval: FIRST_INTERVAL }
    }

    /// Sleeps for the next interval, but never past `deadline`.
    pub fn sleep_until(&mut self, deadline: Instant) {
        let left = deadline.saturating_duration_since(Instant::now());
        thread::sleep(self.interval.min(left));
        self.interval = (self.interval * 2).min(LONGEST_INTERVAL);
    }
}

impl Default for Backoff {
    fn default() -> Self {
        Backoff::new()
    }
}

/// Polls `condition` until it holds; an error naming `what` once `timeout` has passed.
pub fn poll(what: &str, timeout: Duration, mut condition: impl FnMut() -> bool) -> Result<()> {
    poll_for(what, timeout, || condition().then_some(())).map(|_| ())
}

/// Polls `probe` until it yields a value; an error naming `what` once `timeout` has passed.
pub fn poll_for<T>(
    what: &str,
    timeout: Duration,
    mut probe: impl FnMut() -> Option<T>,
) -> Result<T> {
    let started = Instant::now();
    let deadline = started + timeout;
    let mut backoff = Backoff::new();
    loop {
        if let Some(value) = probe() {
            return Ok(value);
        }
        if Instant::now() >= deadline {
            bail!("timed out after {:?} waiting for {what}", started.elapsed());
        }
        backoff.sleep_until(deadline);
    }
}
