//! Patching one instance (TiUP's backup of `bin` was made while staging): (evict,) stop, swap,
//! start, verify; on failure put back the binary that ran just before, start it, and confirm
//! it is healthy.

use std::cell::Cell;
use std::future::Future;
use std::time::{Duration, Instant};

pub use super::attempt::Failure;
use super::attempt::{self, OnInterrupt, StepError};
use super::events::{Event, Progress};
use super::job_steps::JobSteps;
use super::judge::Judging;
use super::preflight::InstanceFacts;
use super::remote::{PointKept, PointToKeep, Remote, Removal, UnitState};
use super::report::Outcome;
use super::signals::Interrupt;
use super::stage::Staged;
use super::tasks::TaskGate;
use crate::dm::client::DmClient;
use crate::dm::health::{Readiness, WaitError, master_readiness, wait_until, worker_readiness};
use crate::dm::version::VersionInfo;
use crate::package::PackageFile;
use crate::plan::{PlannedInstance, Strategy};
use crate::ssh::SshError;
use crate::topology::Role;
use crate::topology::layout::DeployLayout;

/// What every instance's roll needs to know about the cluster.
pub struct RollContext<'a> {
    pub client: &'a DmClient,
    /// Every dm-master's address: members can be asked of any of them.
    pub masters: &'a [String],
    pub wait_timeout: Duration,
    pub strategy: Strategy,
    pub progress: &'a dyn Progress,
    /// A stop request ends any wait at once; what the instance was given is then undone.
    pub interrupt: &'a Interrupt,
    /// The migration tasks that must run again after each restart; `None` when there are none.
    pub tasks: Option<&'a TaskGate>,
    /// `--force`: a worker is restarted even while a shard DDL lock waits on its source.
    pub force: bool,
    /// The masters serve DM's OpenAPI: a source can be moved on purpose before its worker
    /// stops.
    pub openapi: bool,
}

impl RollContext<'_> {
    /// `wait_until` under the wait timeout, except that a stop request (Ctrl-C, SIGTERM) ends
    /// the wait at once: the operator is not kept waiting for a deadline.
    async fn wait<F, Fut>(&self, mut check: F) -> Result<(), WaitError>
    where
        F: FnMut() -> Fut,
        Fut: Future<Output = Readiness>,
    {
        wait_until(self.wait_timeout, || {
            let interrupted = self.interrupt.requested();
            let look = check();
            async move {
                if interrupted {
                    Readiness::Failed("interrupted by a signal".to_owned())
                } else {
                    look.await
                }
            }
        })
        .await
    }
}

/// One instance and everything known about it.
pub struct Job<'a> {
    pub planned: &'a PlannedInstance,
    pub remote: &'a Remote,
    /// The binary it runs now.
    pub installed: &'a InstanceFacts,
    pub staged: &'a Staged,
    /// What the package puts under `bin/`.
    pub files: &'a [PackageFile],
    /// What the swap deletes from `bin/` (see [`crate::plan::Plan::remove`]).
    pub remove: &'a [String],
}

impl<'a> Job<'a> {
    /// The job of `planned` in a run of `plan`, with what was learned of it and staged for it.
    pub fn of(
        planned: &'a PlannedInstance,
        plan: &'a crate::plan::Plan,
        hosts: &'a super::hosts::Hosts,
        facts: &'a std::collections::HashMap<String, InstanceFacts>,
        staged: &'a std::collections::HashMap<String, Staged>,
    ) -> Job<'a> {
        Job {
            planned,
            remote: hosts.get(&planned.ssh_host, planned.ssh_port),
            installed: &facts[&planned.id],
            staged: &staged[&planned.id],
            files: &plan.package.files,
            remove: &plan.remove,
        }
    }

    /// Where what the swap replaced in `bin/` is kept until the instance is done.
    pub(super) fn previous_dir(&self) -> String {
        DeployLayout::previous(&self.planned.staging_dir)
    }

    pub(super) fn bin_dir(&self) -> String {
        self.planned.instance.layout().bin()
    }

    pub(super) fn say(&self, context: &RollContext<'_>, step: &str) {
        context.progress.event(Event::Step { id: &self.planned.id, step });
    }
}

/// Patches one instance in a roll: on `Ok` it runs the new binary. (An offline run swaps with
/// [`swap_in_and_keep_point`].)
pub async fn patch_instance(context: &RollContext<'_>, job: &Job<'_>) -> Result<(), Failure> {
    let planned = job.planned;

    let evicted = match planned.role {
        Role::Master => make_way_for_master(context, job).await?,
        Role::Worker => {
            job.say(context, "checking for a dm-master leader");
            require_leader(context).await.map_err(|err| Failure::Unchanged(err.to_string()))?;
            wait_for_shard_ddl(context, job)
                .await
                .map_err(|err| Failure::Unchanged(err.to_string()))?;
            move_source_first(context, job).await?;
            false
        }
    };

    if context.interrupt.requested() {
        return Err(Failure::Unchanged("interrupted by a signal before it was stopped".to_owned()));
    }
    let (package, previous) = (&job.staged.version, &job.installed.version);
    // One command for its stop, swap and start, each step on the roll's word.
    let steps = JobSteps::rolling(context, job);
    attempt::attempt(&steps, package, previous, evicted, &job.previous_dir()).await
}

/// Puts back what an instance ran before this run patched it, from the rollback point the
/// patch left (`point`, a dir of `bin.rollback/`), once the package is proven bad elsewhere:
/// stopped, restored, started and healthy again on its previous version. The point is used up.
pub async fn put_back(context: &RollContext<'_>, job: &Job<'_>, point: &str, why: &str) -> Failure {
    job.say(context, "putting back what it ran before");
    let reason = format!("put back: {why}");
    let previous = &job.installed.version;
    let steps = JobSteps::undoing(context, job);
    let failure = attempt::undo(&steps, reason, previous, false, true, point).await;
    if let Failure::RolledBack(_) = failure {
        drop_used_point(job, point).await;
    }
    failure
}

/// Removes a rollback point an undo used up (its files went back into `bin/`): `dm-patch
/// rollback` must not find it again. A failure is only logged: what is left is inert.
async fn drop_used_point(job: &Job<'_>, point: &str) {
    if let Err(err) = job.remote.remove(&[Removal::Dir(point)]).await {
        tracing::warn!(
            "{}: could not remove the used rollback point {point}: {err}",
            job.remote.label
        );
    }
}

/// Tells the task gate whether the worker of `job` runs the package from now on.
pub(super) fn runs_package(context: &RollContext<'_>, job: &Job<'_>, runs: bool) {
    if let Some(gate) = context.tasks
        && job.planned.role == Role::Worker
    {
        gate.runs_package(&job.planned.name, runs);
    }
}

/// An instance whose installed binary already is the package's: an earlier run put it there.
/// It is done only if it runs, healthy, on the package's version. If that earlier run was cut
/// short (killed after the swap, or during the health wait), its job is finished here: the
/// instance is started if it does not run, gated, and undone with the binary that run kept
/// beside it if it fails the gate.
pub async fn finish_earlier_run(
    context: &RollContext<'_>,
    job: &Job<'_>,
) -> Result<Outcome, Failure> {
    let expected = &job.staged.version;
    runs_package(context, job, true);
    if context.strategy == Strategy::Offline
        || readiness(context, job, expected, None).await == Readiness::Ready
    {
        return Ok(Outcome::Skipped);
    }
    let planned = job.planned;
    job.say(context, "an earlier run left it unfinished: finishing it");
    if planned.role == Role::Worker {
        require_leader(context).await.map_err(|err| Failure::Unchanged(err.to_string()))?;
    }
    let restart = runs_an_older_binary(context, job).await;
    let attempt = async {
        if restart {
            // Swapped with `--offline` while it ran: it still runs what it had before.
            job.say(context, "restarting onto the package (swapped while it ran)");
            stop(context, job).await?;
            start(context, job).await?;
        } else if job.remote.unit_state(&planned.service).await? == UnitState::NotActive {
            job.say(context, "starting");
            start(context, job).await?;
        }
        job.say(context, "waiting until healthy on the new version");
        wait_ready(context, job, expected, OnInterrupt::GiveUp).await?;
        wait_tasks(context, job, OnInterrupt::GiveUp, Judging::Roll).await
    };
    let reason = match attempt.await {
        Ok(()) => return Ok(Outcome::Patched),
        Err(StepError::Tasks(failure)) if !failure.against_package => {
            return Err(Failure::Elsewhere(failure.to_string()));
        }
        Err(reason) => reason.to_string(),
    };
    match kept_by_earlier_run(job).await {
        Some((kept, version)) => {
            let steps = JobSteps::undoing(context, job);
            let failure = attempt::undo(&steps, reason, &version, false, true, &kept).await;
            if kept != job.previous_dir()
                && let Failure::RolledBack(_) = failure
            {
                drop_used_point(job, &kept).await;
            }
            Err(failure)
        }
        None => Err(Failure::NeedsAttention(format!(
            "{reason}; the run that installed it kept no earlier binary on {} to go back to: \
             TiUP's backup of bin is in {}",
            job.remote.label, planned.backup_dir
        ))),
    }
}

/// Whether the instance runs, but another binary than the package's (its `/status` says so):
/// an `--offline` run swapped the package in while it ran.
async fn runs_an_older_binary(context: &RollContext<'_>, job: &Job<'_>) -> bool {
    match context.client.status(&job.planned.instance.addr()).await {
        Ok(running) => !running.matches(&job.staged.version),
        Err(_) => false,
    }
}

/// What the run that installed the package kept of what it replaced, and its version: the
/// staging dir's `previous/` (a run cut short), or else the newest rollback point of this
/// package (an `--offline` run, which keeps one at once).
async fn kept_by_earlier_run(job: &Job<'_>) -> Option<(String, VersionInfo)> {
    let kept = job.remote.kept_by_earlier_run(job.planned).await?;
    let binary = format!("{kept}/{}", job.planned.instance.layout().entry());
    let version = job.remote.binary_version(&binary).await.ok()?;
    (!version.release.is_empty()).then_some((kept, version))
}

/// After a patch: what it replaced in `bin/` (the staging dir's `previous/`) becomes a rollback
/// point, `<deploy>/bin.rollback/<stamp>/`, with a `.manifest` saying what ran before and after
/// (and the sha256 of the binary that ran before); only the newest `keep` points are kept.
/// Returns the point's dir, unless there was nothing to keep or it was not kept.
pub async fn keep_rollback_point(
    job: &Job<'_>,
    keep: usize,
    stamp: &str,
    package_sha256: &str,
    action: crate::plan::Action,
) -> Result<PointKept, SshError> {
    let manifest = manifest(job, package_sha256, action);
    job.remote.keep_point(job.planned, &PointToKeep { stamp, manifest: &manifest, keep }).await
}

/// `--offline`: the swap (see [`swap_in`]) and, once it succeeded, the rollback point's keeping
/// (see [`keep_rollback_point`]), in one round trip. A failed swap needs the operator (what it
/// replaced is in the staging dir); a failed keeping is the inner error: the instance is
/// patched either way.
pub async fn swap_in_and_keep_point(
    job: &Job<'_>,
    keep: usize,
    stamp: &str,
    package_sha256: &str,
    action: crate::plan::Action,
) -> Result<Result<PointKept, SshError>, Failure> {
    let manifest = manifest(job, package_sha256, action);
    let point = PointToKeep { stamp, manifest: &manifest, keep };
    job.remote.swap_in_and_keep_point(job.planned, job.files, job.remove, &point).await.map_err(
        |err| {
            Failure::NeedsAttention(format!(
                "{err}; what it replaced in bin/ is kept in {} on {}",
                job.previous_dir(),
                job.remote.label
            ))
        },
    )
}

/// A rollback point's `.manifest`. `action` tells a point a rollback left (what it took back)
/// from one a patch left: a rollback cut short is finished by finding it.
fn manifest(job: &Job<'_>, package_sha256: &str, action: crate::plan::Action) -> String {
    format!(
        "from {}\nto {}\npackage {}\naction {}\n",
        job.installed.version.short(),
        job.staged.version.short(),
        package_sha256,
        action.word(),
    )
}

/// Keeps what the package replaces in `bin/` (hard links) and moves the verified tree in: each
/// file is renamed over the old one, atomically, on the same file system.
pub(super) async fn swap_in(job: &Job<'_>) -> Result<(), StepError> {
    job.remote.swap_in(job.planned, job.files, job.remove).await?;
    Ok(())
}

/// Stops the instance's service and makes sure it is no longer active.
pub(super) async fn stop(context: &RollContext<'_>, job: &Job<'_>) -> Result<(), StepError> {
    let unit = &job.planned.service;
    match within_wait_timeout(context, "stop", unit, job.remote.stop(unit)).await? {
        UnitState::NotActive => Ok(()),
        UnitState::Active => Err(StepError::StillActive { unit: unit.clone() }),
    }
}

pub(super) async fn start(context: &RollContext<'_>, job: &Job<'_>) -> Result<(), StepError> {
    let unit = &job.planned.service;
    within_wait_timeout(context, "start", unit, job.remote.start(unit)).await
}

/// `systemctl <verb> <unit>` (the `step`), within the wait timeout. systemd bounds stop and
/// start with the unit's own timeouts, but a unit told to wait forever, or a host that stops
/// answering without closing the connection, must not hold the roll, and the operator, forever.
pub(super) async fn within_wait_timeout<T>(
    context: &RollContext<'_>,
    verb: &'static str,
    unit: &str,
    step: impl Future<Output = Result<T, SshError>>,
) -> Result<T, StepError> {
    let after = context.wait_timeout;
    match tokio::time::timeout(after, step).await {
        Ok(done) => Ok(done?),
        Err(_) => Err(StepError::TimedOut { verb, unit: unit.to_owned(), after }),
    }
}

/// Waits until the instance is healthy and runs `expected`; gives up at once if its service
/// exits.
pub(super) async fn wait_ready(
    context: &RollContext<'_>,
    job: &Job<'_>,
    expected: &VersionInfo,
    on_interrupt: OnInterrupt,
) -> Result<(), StepError> {
    let systemd = SystemdAsks::new();
    let look = || readiness(context, job, expected, Some(&systemd));
    let ready = match on_interrupt {
        OnInterrupt::GiveUp => context.wait(look).await,
        OnInterrupt::KeepWaiting => wait_until(context.wait_timeout, look).await,
    };
    Ok(ready?)
}

/// How often a wait asks systemd (over SSH) whether a service that does not answer yet still
/// runs: not before it has been silent this long, then at most this often. An instance that
/// answers within it costs no round trip; one that exited is noticed within it.
const SYSTEMD_EVERY: Duration = Duration::from_secs(1);

/// When one wait asked systemd (see [`SYSTEMD_EVERY`]).
struct SystemdAsks {
    began: Instant,
    last: Cell<Option<Instant>>,
}

impl SystemdAsks {
    fn new() -> SystemdAsks {
        SystemdAsks { began: Instant::now(), last: Cell::new(None) }
    }

    /// Whether to ask now; if so, the ask is counted.
    fn due(&self) -> bool {
        let since = self.last.get().unwrap_or(self.began);
        let due = since.elapsed() >= SYSTEMD_EVERY;
        if due {
            self.last.set(Some(Instant::now()));
        }
        due
    }
}

/// Waits until every migration task that ran before the roll runs again (see [`TaskGate`]);
/// gives up at once if one is paused, saying whether that proves the package bad.
pub(super) async fn wait_tasks(
    context: &RollContext<'_>,
    job: &Job<'_>,
    on_interrupt: OnInterrupt,
    judging: Judging,
) -> Result<(), StepError> {
    let Some(gate) = context.tasks else {
        return Ok(());
    };
    job.say(context, "waiting until its migration tasks run and replicate again");
    gate.begin_watch();
    let look = || gate.look(context.client, &job.planned.id, judging);
    let ready = match on_interrupt {
        OnInterrupt::GiveUp => context.wait(look).await,
        OnInterrupt::KeepWaiting => wait_until(context.wait_timeout, look).await,
    };
    match (ready, gate.take_failure()) {
        (Ok(()), _) => Ok(()),
        (Err(WaitError::Failed(_)), Some(failure)) => Err(StepError::Tasks(Box::new(failure))),
        (Err(err @ WaitError::TimedOut { .. }), _) => {
            match gate.stalled(context.client, judging).await {
                Some(failure) => Err(StepError::Tasks(Box::new(failure))),
                None => Err(err.into()),
            }
        }
        (Err(err), _) => Err(err.into()),
    }
}

/// One look at the instance: running, healthy and on `expected`? Asked of its HTTP API first:
/// when that says ready, no SSH round trip is spent. Otherwise systemd, when `systemd` says it
/// is due (never without it: a look that only asks "ready?"), tells a service that exited
/// (final: during a wait, it exited after start) from one still starting.
async fn readiness(
    context: &RollContext<'_>,
    job: &Job<'_>,
    expected: &VersionInfo,
    systemd: Option<&SystemdAsks>,
) -> Readiness {
    let instance = &job.planned.instance;
    let addr = instance.addr();
    let over_http = match instance.role {
        Role::Master => master_readiness(context.client, &addr, &instance.name, expected).await,
        Role::Worker => {
            worker_readiness(context.client, &addr, &instance.name, context.masters, expected).await
        }
    };
    if over_http == Readiness::Ready || !systemd.is_some_and(SystemdAsks::due) {
        return over_http;
    }
    match job.remote.unit_state(&job.planned.service).await {
        Ok(UnitState::Active) => over_http,
        Ok(UnitState::NotActive) => Readiness::Failed(format!(
            "{} exited after start (see its log in {})",
            job.planned.service, instance.log_dir
        )),
        Err(err) => Readiness::Waiting(err.to_string()),
    }
}

/// Before a dm-master stops: the others must keep a quorum, and if it leads, it hands over
/// first. Returns whether it was evicted.
async fn make_way_for_master(context: &RollContext<'_>, job: &Job<'_>) -> Result<bool, Failure> {
    let instance = &job.planned.instance;
    job.say(context, "waiting for the other dm-masters to be alive");
    // The previous master may still be rejoining: wait (within the deadline) until stopping
    // this one keeps a quorum, rather than failing at the first look.
    let quorum_kept = context.wait(|| async {
        let answer = match context.client.members_from_any(context.masters).await {
            Ok(answer) => answer,
            Err(err) => return Readiness::Waiting(err.to_string()),
        };
        let masters = answer.masters();
        let alive_others = masters
            .iter()
            .filter(|m| m.alive && m.name != instance.name)
            .count();
        let quorum = masters.len() / 2 + 1;
        if masters.len() <= 1 || alive_others >= quorum {
            Readiness::Ready
        } else {
            Readiness::Waiting(format!(
                "stopping {} would leave {alive_others} of {} dm-masters alive, below the quorum of {quorum}",
                instance.name,
                masters.len()
            ))
        }
    })
    .await;
    if let Err(reason) = quorum_kept {
        return Err(Failure::Unchanged(format!("{reason}; bring the others back first")));
    }
    let members = context
        .client
        .members_from_any(context.masters)
        .await
        .map_err(|err| Failure::Unchanged(err.to_string()))?;
    let alive_others =
        members.masters().iter().filter(|m| m.alive && m.name != instance.name).count();
    let leads = members.leader().is_some_and(|l| l.name == instance.name);
    if !leads || alive_others == 0 {
        return Ok(false);
    }

    job.say(context, "evicting the leader");
    let addr = instance.addr();
    context
        .client
        .evict_leader(&addr)
        .await
        .map_err(|err| Failure::Unchanged(format!("evicting the leader failed: {err}")))?;
    let others: Vec<String> = context.masters.iter().filter(|a| **a != addr).cloned().collect();
    let moved = context
        .wait(|| async {
            match context.client.members_from_any(&others).await {
                Ok(members) => match members.leader() {
                    Some(leader) if leader.name != instance.name => Readiness::Ready,
                    Some(_) => Readiness::Waiting(format!("{} still leads", instance.name)),
                    None => Readiness::Waiting("no leader elected yet".to_owned()),
                },
                Err(err) => Readiness::Waiting(err.to_string()),
            }
        })
        .await;
    if let Err(reason) = moved {
        let cancelled = match context.client.cancel_evict_leader(&addr).await {
            Ok(()) => "eviction was cancelled".to_owned(),
            Err(err) => format!(
                "cancelling the eviction failed too ({err}): {} will not run for leader again \
                 until it is restarted",
                instance.name
            ),
        };
        return Err(Failure::Unchanged(format!(
            "the leader did not move after eviction: {reason}; {cancelled}"
        )));
    }
    Ok(true)
}

/// A worker is not stopped while a shard DDL lock waits on its source (see
/// `Run::no_shard_ddl_pending`): the roll waits for it to resolve, within the wait timeout.
async fn wait_for_shard_ddl(context: &RollContext<'_>, job: &Job<'_>) -> Result<(), WaitError> {
    let Some(gate) = context.tasks else { return Ok(()) };
    let name = &job.planned.name;
    let members = context.client.members_from_any(context.masters).await;
    let source = members.ok().and_then(|members| {
        let worker = members.workers().iter().find(|w| &w.name == name)?;
        (!worker.source.is_empty()).then(|| worker.source.clone())
    });
    let Some(source) = source else { return Ok(()) };
    if context.force {
        for lock in gate.ddl_locks(context.client, Some(&source)).await {
            context
                .progress
                .event(Event::Note(&format!("--force: {lock}; restarting {name} anyway")));
        }
        return Ok(());
    }
    job.say(context, "checking that no shard DDL lock waits on its source");
    context
        .wait(|| async {
            match gate.ddl_locks(context.client, Some(&source)).await.first() {
                None => Readiness::Ready,
                Some(lock) => Readiness::Waiting(format!("{lock}; waiting for it to resolve")),
            }
        })
        .await
}

/// Before a bound worker stops: with DM's OpenAPI, its source moves on purpose to a free worker
/// that already runs the package, and its subtasks must run and replicate there before anything
/// stops (a failure there proves the package bad). Without it, or with no such free worker, DM
/// moves the source when the worker stops (see `judge::next_worker`).
async fn move_source_first(context: &RollContext<'_>, job: &Job<'_>) -> Result<(), Failure> {
    let Some(gate) = context.tasks.filter(|_| context.openapi) else { return Ok(()) };
    let Ok(members) = context.client.members_from_any(context.masters).await else {
        return Ok(());
    };
    let workers = members.workers();
    let name = &job.planned.name;
    let Some(source) = workers.iter().find(|w| &w.name == name).map(|w| &w.source) else {
        return Ok(());
    };
    let on_package = gate.on_package();
    let target = workers.iter().find(|w| w.stage == "free" && on_package.contains(&w.name));
    let (Some(target), false) = (target, source.is_empty()) else { return Ok(()) };
    let target = &target.name;
    job.say(context, &format!("moving source {source} to worker {target}, on the package"));
    if let Err(err) = context.client.transfer_source(context.masters, source, target).await {
        context.progress.event(Event::Note(&format!(
            "{}: source {source} could not be moved on purpose ({err}); DM moves it when the \
             worker stops",
            job.planned.id
        )));
        return Ok(());
    }
    let moved = async {
        context.wait(|| gate.runs_on(context.client, source, target)).await?;
        wait_tasks(context, job, OnInterrupt::GiveUp, Judging::Roll).await
    };
    moved.await.map_err(|err: StepError| {
        Failure::Unchanged(format!("after source {source} moved to worker {target}: {err}"))
    })
}

/// Workers are restarted only while a leader can rebind their sources.
async fn require_leader(context: &RollContext<'_>) -> Result<(), WaitError> {
    context
        .wait(|| async {
            match context.client.members_from_any(context.masters).await {
                Ok(members) if members.leader().is_some() => Readiness::Ready,
                Ok(_) => Readiness::Waiting("the DM cluster has no leader".to_owned()),
                Err(err) => Readiness::Waiting(err.to_string()),
            }
        })
        .await
}
