//! What "healthy again" means for a DM instance, and polling for it under a deadline.
//!
//! dm-master: `/health` answers 200, the members list shows it alive, and `/status` reports the
//! expected binary. dm-worker: `/status` reports the expected binary and the members list shows
//! it `free`, `bound` or `relay` (registered with the leader again).

use std::future::Future;
use std::time::Duration;

use tokio::time::{Instant, sleep};

use super::client::{DmClient, Health};
use super::version::VersionInfo;

/// The outcome of one look at an instance.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Readiness {
    Ready,
    /// Not yet; the reason is what the operator sees if the deadline passes.
    Waiting(String),
    /// It will not get there (the service exited): stop waiting now.
    Failed(String),
}

/// Why a wait ended without the instance getting ready.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum WaitError {
    /// It will not get there (e.g. its service exited).
    #[error("{0}")]
    Failed(String),
    /// The deadline passed; `reason` is the last thing that was still missing.
    #[error("{reason} (gave up after {}s)", .timeout.as_secs())]
    TimedOut { reason: String, timeout: Duration },
}

/// Calls `check` until it is `Ready`, fails, or `timeout` passes. Polls start at 50 ms and back
/// off to 500 ms: fast when things are fast, gentle when they are slow.
pub async fn wait_until<F, Fut>(timeout: Duration, mut check: F) -> Result<(), WaitError>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Readiness>,
{
    let deadline = Instant::now() + timeout;
    let mut interval = Duration::from_millis(50);
    loop {
        // A look that hangs (a host that stops answering) ends with the deadline too.
        let look = tokio::time::timeout_at(deadline, check());
        let reason = match look.await {
            Ok(Readiness::Ready) => return Ok(()),
            Ok(Readiness::Failed(reason)) => return Err(WaitError::Failed(reason)),
            Ok(Readiness::Waiting(reason)) => reason,
            Err(_) => {
                let reason = "the last look did not finish in time".to_owned();
                return Err(WaitError::TimedOut { reason, timeout });
            }
        };
        if Instant::now() + interval > deadline {
            return Err(WaitError::TimedOut { reason, timeout });
        }
        sleep(interval).await;
        interval = (interval * 2).min(Duration::from_millis(500));
    }
}

/// Whether the dm-master `name` at `addr` is back: healthy, alive among the members, and
/// running `expected`.
pub async fn master_readiness(
    client: &DmClient,
    addr: &str,
    name: &str,
    expected: &VersionInfo,
) -> Readiness {
    if let Some(waiting) = version_readiness(client, addr, expected).await {
        return waiting;
    }
    match client.health(addr).await {
        Ok(Health::Healthy) => {}
        Ok(Health::Unhealthy) => return Readiness::Waiting(format!("{addr} /health is not OK")),
        Err(err) => return Readiness::Waiting(err.to_string()),
    }
    match client.members(addr).await {
        Ok(members) if members.masters().iter().any(|m| m.name == name && m.alive) => {
            Readiness::Ready
        }
        Ok(_) => Readiness::Waiting(format!("{name} is not alive in the members list yet")),
        Err(err) => Readiness::Waiting(err.to_string()),
    }
}

/// Whether the dm-worker `name` at `addr` is back: running `expected` and registered with the
/// leader as `free`, `bound` or `relay`.
pub async fn worker_readiness(
    client: &DmClient,
    addr: &str,
    name: &str,
    masters: &[String],
    expected: &VersionInfo,
) -> Readiness {
    if let Some(waiting) = version_readiness(client, addr, expected).await {
        return waiting;
    }
    match client.members_from_any(masters).await {
        Ok(members) => match members.workers().iter().find(|w| w.name == name) {
            Some(worker) if matches!(worker.stage.as_str(), "free" | "bound" | "relay") => {
                Readiness::Ready
            }
            Some(worker) => Readiness::Waiting(format!("{name} is {}", worker.stage)),
            None if !members.worker_msg().is_empty() => {
                Readiness::Waiting(members.worker_msg().to_owned())
            }
            None => Readiness::Waiting(format!("{name} has not registered yet")),
        },
        Err(err) => Readiness::Waiting(err.to_string()),
    }
}

/// `None` when `/status` at `addr` reports `expected`; otherwise why not.
async fn version_readiness(
    client: &DmClient,
    addr: &str,
    expected: &VersionInfo,
) -> Option<Readiness> {
    match client.status(addr).await {
        Ok(running) if running.matches(expected) => None,
        Ok(running) => Some(Readiness::Waiting(format!(
            "{addr} runs {}, expected {}",
            running.short(),
            expected.short()
        ))),
        Err(err) => Some(Readiness::Waiting(err.to_string())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn wait_until_stops_on_ready_failed_or_deadline() {
        let mut calls = 0;
        let ready = wait_until(Duration::from_secs(5), || {
            calls += 1;
            let answer =
                if calls < 3 { Readiness::Waiting("not yet".into()) } else { Readiness::Ready };
            async move { answer }
        })
        .await;
        assert_eq!(ready, Ok(()));
        assert_eq!(calls, 3);

        let failed = wait_until(Duration::from_secs(5), || async {
            Readiness::Failed("service exited".into())
        })
        .await;
        assert_eq!(failed, Err(WaitError::Failed("service exited".into())));

        let started = std::time::Instant::now();
        let timed_out = wait_until(Duration::from_millis(300), || async {
            Readiness::Waiting("still starting".into())
        })
        .await;
        assert_eq!(timed_out.unwrap_err().to_string(), "still starting (gave up after 0s)");
        assert!(started.elapsed() < Duration::from_secs(2));
    }

    #[tokio::test(start_paused = true)]
    async fn a_look_that_never_answers_ends_at_the_deadline() {
        let started = Instant::now();
        let wait = wait_until(Duration::from_secs(30), std::future::pending::<Readiness>);
        let hung = tokio::time::timeout(Duration::from_secs(60), wait).await.expect("it ends");
        let message = hung.unwrap_err().to_string();
        assert_eq!(message, "the last look did not finish in time (gave up after 30s)");
        assert_eq!(started.elapsed(), Duration::from_secs(30));
    }
}
