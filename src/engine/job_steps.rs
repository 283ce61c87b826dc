//! The steps of an attempt on a real instance ([`Steps`]): over SSH to its host, and DM's API.
//!
//! An attempt's stop, swap and start are one command on the host ([`Remote::converse_roll`]),
//! each step taken when the roll says so: one SSH channel and one remote shell instead of
//! three, nothing between the stop and the start but the roll's word, and still a step at a
//! time, so that progress, a failure and a dm-patch killed between two steps each leave the
//! instance exactly where the last step left it. The undo's steps are commands of their own.

use tokio::sync::Mutex;

use super::attempt::{OnInterrupt, Place, StepError, Steps};
use super::judge::Judging;
use super::remote::{RollTalk, StepEnd};
use super::roll::{self, Job, RollContext};
use crate::dm::version::VersionInfo;
use crate::ssh::{ExecOutput, SshError, shell_quote};

/// An instance's steps, as an attempt or an undo takes them.
pub(super) struct JobSteps<'a> {
    context: &'a RollContext<'a>,
    job: &'a Job<'a>,
    /// The attempt's command, while its steps are taken (`None`: an undo's steps only).
    talk: Option<Mutex<Talk<'a>>>,
}

/// Where the attempt's command is.
enum Talk<'a> {
    /// The attempt has not stopped the instance yet.
    NotStarted,
    /// Stopped (and then swapped), waiting for the next word.
    Open(Box<RollTalk<'a>>),
    /// Done, or given up: what follows (an undo) runs commands of its own.
    Over,
}

impl<'a> JobSteps<'a> {
    /// The steps of an attempt: its stop, swap and start in one command.
    pub(super) fn rolling(context: &'a RollContext<'a>, job: &'a Job<'a>) -> JobSteps<'a> {
        JobSteps { context, job, talk: Some(Mutex::new(Talk::NotStarted)) }
    }

    /// The steps of an undo, each a command of its own.
    pub(super) fn undoing(context: &'a RollContext<'a>, job: &'a Job<'a>) -> JobSteps<'a> {
        JobSteps { context, job, talk: None }
    }

    /// The stop that begins the attempt's command; `Err` as a stop of its own fails.
    async fn open_and_stop(&self) -> Result<RollTalk<'a>, StepError> {
        let (job, unit) = (self.job, &self.job.planned.service);
        let stopped = roll::within_wait_timeout(self.context, "stop", unit, async {
            let mut talk = job.remote.converse_roll(job.planned, job.files, job.remove).await?;
            let end = talk.step("stopped").await;
            Ok((talk, end))
        });
        let (talk, end) = stopped.await?;
        // On a failure the command is dropped: said no word more, it ends at its next step.
        self.ended(end, &self.systemctl("stop"))?;
        Ok(talk)
    }

    /// A step of the attempt's command, as the step's own command would have ended: `what`
    /// names it in the error when the command ended before it was done.
    fn ended(&self, step: Result<StepEnd, SshError>, what: &str) -> Result<(), StepError> {
        match step? {
            StepEnd::Done => Ok(()),
            StepEnd::StillActive => {
                Err(StepError::StillActive { unit: self.job.planned.service.clone() })
            }
            StepEnd::Ended(output) => Err(self.failed(what, output)),
        }
    }

    /// A step the command did not finish, as the step's own command failing would read.
    fn failed(&self, command: &str, output: ExecOutput) -> StepError {
        StepError::Ssh(output.failure(&self.job.remote.label, command))
    }

    fn systemctl(&self, verb: &str) -> String {
        self.job.remote.systemctl(&format!("{verb} {}", shell_quote(&self.job.planned.service)))
    }

    /// The attempt's command, if it is open; it is over from now on whatever happens to it.
    async fn take_open(&self) -> Option<RollTalk<'a>> {
        let mut talk = self.talk.as_ref()?.lock().await;
        match std::mem::replace(&mut *talk, Talk::Over) {
            Talk::Open(open) => Some(*open),
            _ => None,
        }
    }

    async fn keep_open(&self, open: RollTalk<'a>) {
        if let Some(talk) = &self.talk {
            *talk.lock().await = Talk::Open(Box::new(open));
        }
    }
}

impl Steps for JobSteps<'_> {
    fn place(&self) -> Place {
        let planned = self.job.planned;
        Place {
            host: self.job.remote.label.clone(),
            bin_dir: self.job.bin_dir(),
            binary: planned.binary.clone(),
            service: planned.service.clone(),
            log_dir: planned.instance.log_dir.clone(),
        }
    }

    fn say(&self, step: &str) {
        self.job.say(self.context, step);
    }

    async fn stop(&self) -> Result<(), StepError> {
        let starts_the_attempt = match &self.talk {
            Some(talk) => {
                let mut talk = talk.lock().await;
                let first = matches!(*talk, Talk::NotStarted);
                *talk = Talk::Over;
                first
            }
            None => false,
        };
        if !starts_the_attempt {
            return roll::stop(self.context, self.job).await;
        }
        let open = self.open_and_stop().await?;
        self.keep_open(open).await;
        Ok(())
    }

    async fn swap_in(&self) -> Result<(), StepError> {
        let Some(mut open) = self.take_open().await else {
            return roll::swap_in(self.job).await;
        };
        let swapped = open.step("swapped").await;
        self.ended(swapped, &format!("the swap into {}", self.job.bin_dir()))?;
        self.keep_open(open).await;
        Ok(())
    }

    async fn restore(&self, kept: &str) -> Result<(), StepError> {
        let job = self.job;
        job.remote.restore(job.planned, kept, job.files, job.remove).await?;
        Ok(())
    }

    async fn start(&self) -> Result<(), StepError> {
        let Some(mut open) = self.take_open().await else {
            return roll::start(self.context, self.job).await;
        };
        let (start, unit) = (self.systemctl("start"), &self.job.planned.service);
        let started = roll::within_wait_timeout(self.context, "start", unit, async {
            let started = open.step("started").await;
            Ok::<_, SshError>((started, open))
        });
        let (started, open) = started.await?;
        self.ended(started, &start)?;
        let output = open.end().await?;
        match output.exit_status {
            0 => Ok(()),
            _ => Err(self.failed(&start, output)),
        }
    }

    async fn wait_ready(&self, expected: &VersionInfo, on: OnInterrupt) -> Result<(), StepError> {
        roll::wait_ready(self.context, self.job, expected, on).await
    }

    async fn wait_tasks(&self, on: OnInterrupt, judging: Judging) -> Result<(), StepError> {
        roll::wait_tasks(self.context, self.job, on, judging).await
    }

    fn runs_package(&self, runs: bool) {
        roll::runs_package(self.context, self.job, runs);
    }

    async fn cancel_evict(&self) -> Result<(), String> {
        let addr = self.job.planned.instance.addr();
        self.context.client.cancel_evict_leader(&addr).await.map_err(|err| err.to_string())
    }
}
