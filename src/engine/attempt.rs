//! One attempt on an instance, and its undo, over a narrow seam ([`Steps`]): stop, swap, start,
//! wait until healthy on the package, wait for the migration tasks; on a failure, put back what
//! the swap replaced (when it got that far), start it, wait until it is healthy again, and
//! cancel a leader eviction made for the attempt. What each failure leaves the operator with is
//! decided here, once: [`Failure`].
//!
//! The roll drives real hosts and DM through [`super::roll`]'s implementation; the tests below
//! drive a fake, so that every way an attempt and its undo can fail is covered in
//! milliseconds, beside the real-sshd tests.

use std::time::Duration;

use super::judge::Judging;
use super::tasks::TaskFailure;
use crate::dm::health::WaitError;
use crate::dm::version::VersionInfo;
use crate::ssh::SshError;

/// How an instance's roll ended, when it did not succeed. Each carries the message the
/// operator reads.
#[derive(Debug)]
pub enum Failure {
    /// Nothing was changed on the instance (e.g. the leader would not move).
    Unchanged(String),
    /// It failed after its service was stopped, and is back on its previous binary, healthy.
    RolledBack(String),
    /// It failed and could not be brought back; the message says what to do.
    NeedsAttention(String),
    /// It runs the package, healthy, but a subtask failed on a worker that does not run the
    /// package: not the package's fault, and the roll stops for a person to look.
    Elsewhere(String),
}

/// Why one step of an instance's roll failed.
#[derive(Debug, thiserror::Error)]
pub enum StepError {
    #[error(transparent)]
    Ssh(#[from] SshError),
    #[error(transparent)]
    Wait(#[from] WaitError),
    /// A migration subtask failed (see [`TaskFailure::against_package`]).
    #[error("{0}")]
    Tasks(Box<TaskFailure>),
    #[error("{unit} is still active after `systemctl stop`")]
    StillActive { unit: String },
    #[error("`systemctl {verb} {unit}` did not finish within {}s (--wait-timeout)", .after.as_secs())]
    TimedOut { verb: &'static str, unit: String, after: Duration },
}

/// Whether a wait gives up when the operator asks to stop.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OnInterrupt {
    /// Waiting on the new binary: give up, so that it is undone at once.
    GiveUp,
    /// Waiting on the undo itself: it must finish, signal or not.
    KeepWaiting,
}

/// The step of an undo that failed: the operator's next step differs.
#[derive(Debug)]
enum RollBackError {
    /// The previous binary is still where the roll kept it.
    Restore(StepError),
    /// The previous binary is back in place, but `systemctl start` failed (or never ran).
    Start(StepError),
    /// The previous binary is back in place and was started, but is not healthy.
    Health(StepError),
}

/// Where an instance is, as the operator's messages name it.
#[derive(Debug, Clone)]
pub struct Place {
    /// `host:port` of its SSH endpoint.
    pub host: String,
    pub bin_dir: String,
    pub binary: String,
    pub service: String,
    pub log_dir: String,
}

/// What an attempt does to one instance, step by step.
pub trait Steps {
    fn place(&self) -> Place;
    /// Progress: the step it is at.
    fn say(&self, step: &str);
    async fn stop(&self) -> Result<(), StepError>;
    /// Keeps what the package replaces in `bin/` and moves the package in.
    async fn swap_in(&self) -> Result<(), StepError>;
    /// Puts back what a swap replaced, kept in `kept`.
    async fn restore(&self, kept: &str) -> Result<(), StepError>;
    async fn start(&self) -> Result<(), StepError>;
    /// Running, healthy and on `expected`.
    async fn wait_ready(&self, expected: &VersionInfo, on: OnInterrupt) -> Result<(), StepError>;
    /// Every migration subtask that ran before runs again and replicates.
    async fn wait_tasks(&self, on: OnInterrupt, judging: Judging) -> Result<(), StepError>;
    /// Tells the task gate whether the instance runs the package from now on.
    fn runs_package(&self, runs: bool);
    /// Lets a dm-master evicted for the attempt run for leader again.
    async fn cancel_evict(&self) -> Result<(), String>;
}

/// Stop, swap, start, then healthy on `package` with every subtask running again; on a failure
/// it is undone to `previous` from `kept` (a `Failure` says how that ended). `evicted`: the
/// instance, a dm-master, was evicted as leader for the attempt.
pub async fn attempt(
    steps: &impl Steps,
    package: &VersionInfo,
    previous: &VersionInfo,
    evicted: bool,
    kept: &str,
) -> Result<(), Failure> {
    // Whether bin/ may have changed: until then, an undo only has to see the instance run.
    let mut swapped = false;
    let tried = async {
        steps.say("stopping");
        steps.stop().await?;
        steps.say("swapping the binary");
        swapped = true;
        steps.swap_in().await?;
        steps.runs_package(true);
        steps.say("starting");
        steps.start().await?;
        steps.say("waiting until healthy on the new version");
        steps.wait_ready(package, OnInterrupt::GiveUp).await?;
        steps.wait_tasks(OnInterrupt::GiveUp, Judging::Roll).await
    };
    match tried.await {
        Ok(()) => Ok(()),
        Err(StepError::Tasks(failure)) if !failure.against_package => {
            Err(Failure::Elsewhere(failure.to_string()))
        }
        Err(reason) => Err(undo(steps, reason.to_string(), previous, evicted, swapped, kept).await),
    }
}

/// Undoes a failed attempt: what the swap replaced, kept in `kept`, goes back in place (when
/// the attempt got as far as the swap) and is started, healthy on `previous`; a leader eviction
/// made for the attempt is cancelled. Returns the failure as the operator reads it.
pub async fn undo(
    steps: &impl Steps,
    reason: String,
    previous: &VersionInfo,
    evicted: bool,
    swapped: bool,
    kept: &str,
) -> Failure {
    steps.say("failed: rolling back");
    let restored = roll_back(steps, previous, swapped, kept).await;
    // A restarted master forgets its evict flag; this covers a restart that did not happen,
    // so the cluster is never left with a master that refuses to lead.
    let evict_note = match evicted {
        true => match steps.cancel_evict().await {
            Ok(()) => String::new(),
            Err(err) => format!(
                "; cancelling its leader eviction failed ({err}): it will not run for leader \
                 until restarted"
            ),
        },
        false => String::new(),
    };
    let Place { host, bin_dir, binary, service, log_dir } = steps.place();
    let previous = previous.short();
    match restored {
        Ok(()) => Failure::RolledBack(format!("{reason}; rolled back to {previous}{evict_note}")),
        Err(RollBackError::Restore(err)) => Failure::NeedsAttention(format!(
            "{reason}; rolling back failed too: {err}. What the patch replaced in {bin_dir} is \
             kept in {kept} on {host}: copy it back over {bin_dir}, then `systemctl start \
             {service}`{evict_note}"
        )),
        Err(RollBackError::Start(err)) => Failure::NeedsAttention(format!(
            "{reason}; the previous binary ({previous}) is back in place at {binary} on {host}, \
             but starting it failed: {err}. Start it with `systemctl start {service}` once the \
             cause is fixed (see its log in {log_dir}){evict_note}"
        )),
        Err(RollBackError::Health(err)) => Failure::NeedsAttention(format!(
            "{reason}; the previous binary ({previous}) is in place at {binary} on {host} and \
             was started, but it did not turn healthy: {err}. See its log in {log_dir}{evict_note}"
        )),
    }
}

/// Puts the previous binary back from `kept` (if `swapped`: the attempt got as far as the
/// swap), starts it, and waits until it is healthy on `previous`, with every subtask that does
/// not run on the package running.
async fn roll_back(
    steps: &impl Steps,
    previous: &VersionInfo,
    swapped: bool,
    kept: &str,
) -> Result<(), RollBackError> {
    if swapped {
        // It may be running (the new binary started but never turned healthy).
        let restore = async {
            steps.stop().await?;
            steps.restore(kept).await
        };
        restore.await.map_err(RollBackError::Restore)?;
    }
    steps.runs_package(false);
    steps.start().await.map_err(RollBackError::Start)?;
    let healthy = async {
        steps.wait_ready(previous, OnInterrupt::KeepWaiting).await?;
        steps.wait_tasks(OnInterrupt::KeepWaiting, Judging::PutBack).await
    };
    healthy.await.map_err(RollBackError::Health)
}

#[cfg(test)]
mod tests;
