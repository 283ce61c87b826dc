//! The roll of a staged plan: one instance at a time, in the order the cluster calls for at each
//! step (see [`take_next`]), each instance's result recorded and its `patched` mark saved as it
//! finishes; the build watched under real traffic where `--canary`/`--soak` ask (see
//! [`soak`]); a package proven bad put back everywhere this run put it. With `--offline`,
//! nothing restarts, so every swap runs side by side instead.

use std::collections::HashMap;
use std::time::Instant;

use futures_util::StreamExt;

use super::events::Event;
use super::hosts::Hosts;
use super::judge::{self, Judging, SourceMove};
use super::preflight::InstanceFacts;
use super::put_back::PutBack;
use super::remote::PointKept;
use super::report::{Outcome, Report, RunResult};
use super::roll::{self, Failure, Job, RollContext};
use super::signals::Interrupt;
use super::soak::{self, SoakEnd};
use super::stage::Staged;
use super::tasks::TaskGate;
use super::{Settings, rollback_stamp};
use crate::dm::client::WorkerMember;
use crate::dm::health::wait_until;
use crate::dm::version::VersionInfo;
use crate::plan::{Plan, PlannedInstance, Strategy};
use crate::ssh::SshError;
use crate::topology::store::{self, ClusterLock, StoreError};
use crate::topology::{Cluster, Role};

/// Everything the roll works with, for its whole length.
pub struct Roll<'r> {
    pub context: RollContext<'r>,
    pub hosts: &'r Hosts,
    pub facts: &'r HashMap<String, InstanceFacts>,
    pub staged: &'r HashMap<String, Staged>,
    pub plan: &'r Plan,
    pub settings: &'r Settings,
    pub cluster: &'r mut Cluster,
    pub lock: &'r ClusterLock,
    pub report: &'r mut Report,
}

/// What the roll keeps track of as it goes.
#[derive(Default)]
struct Tally {
    /// Where each instance patched by this run keeps what it replaced: what a put-back uses.
    points: HashMap<String, String>,
    /// Instances whose staging dir holds the only copy of what an operator still needs.
    needs_operator: Vec<String>,
    /// Instances whose staging dirs went with their rollback point's keeping.
    staging_removed: Vec<String>,
    /// Instance IDs in the order they were visited.
    visited: Vec<String>,
    /// Instances this run left on the package (patched, or found on it), in that order.
    on_package: Vec<String>,
    /// The canaries were watched (`--canary`).
    soaked: bool,
    /// What this run patched was put back.
    put_back: bool,
}

/// What the cleanup after a roll leaves alone.
#[derive(Debug, Default)]
pub struct Leftovers {
    /// Instances whose staging dir holds the only copy of what an operator still needs.
    pub keep: Vec<String>,
    /// Instances whose staging dirs are gone already.
    pub removed: Vec<String>,
}

/// Whether the roll goes on after an instance.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Next {
    Continue,
    Stop,
}

impl<'r> Roll<'r> {
    /// Runs the roll to its end; the report says what happened. Returns what the run's
    /// cleanup must leave alone.
    pub async fn run(mut self) -> Leftovers {
        let mut tally = Tally::default();
        match self.plan.strategy {
            Strategy::Offline => self.offline(&mut tally).await,
            Strategy::Rolling => self.online(&mut tally).await,
        }
        // The report lists instances in the order they were visited, those not reached last.
        let position = |id: &str| tally.visited.iter().position(|v| v == id).unwrap_or(usize::MAX);
        self.report.instances.sort_by_key(|row| position(&row.id));
        Leftovers { keep: tally.needs_operator, removed: tally.staging_removed }
    }

    /// One instance at a time; each marked as soon as it is done, so that a crash or Ctrl-C
    /// later never loses a finished instance.
    async fn online(&mut self, tally: &mut Tally) {
        let mut remaining: Vec<&PlannedInstance> = self.plan.instances.iter().collect();
        while !remaining.is_empty() {
            if self.context.interrupt.requested() {
                self.report.result = RunResult::Interrupted;
                self.report.message = Some(
                    "interrupted: instances not reached are untouched; run the same command \
                     again to finish"
                        .to_owned(),
                );
                break;
            }
            let (planned, before) = take_next(&mut remaining, &self.context).await;
            tally.visited.push(planned.id.clone());
            let started = Instant::now();
            let result = patch_or_finish(&self.context, &self.job(planned), self.plan).await;
            let moved = moves_since(&self.context, before).await;
            let patched = matches!(result, Ok(Outcome::Patched));
            let next = self.record(tally, planned, result, started, moved).await;
            // One instance at a time: its host has nothing to do until its next instance.
            self.job(planned).remote.rest().await;
            if next == Next::Stop {
                break;
            }
            self.feed_canaries(tally, remaining.len()).await;
            if self.context.tasks.and_then(TaskGate::proven_bad).is_some() {
                break;
            }
            if self.soak_due(tally, patched, remaining.len()).await
                && self.soak(tally).await == Next::Stop
            {
                break;
            }
        }
        if !tally.put_back
            && let Some(evidence) = self.context.tasks.and_then(TaskGate::proven_bad)
        {
            self.put_back_everywhere(tally, &format!("the package is proven bad: {evidence}"))
                .await;
        }
    }

    /// Records how `planned` ended (its row, its mark, its rollback point); says whether the
    /// roll goes on.
    async fn record(
        &mut self,
        tally: &mut Tally,
        planned: &PlannedInstance,
        result: Result<Outcome, Failure>,
        started: Instant,
        moved: Vec<SourceMove>,
    ) -> Next {
        let runs_package = matches!(result, Ok(_) | Err(Failure::Elsewhere(_)));
        let patched = matches!(result, Ok(Outcome::Patched));
        let (outcome, detail) = outcome_of(tally, planned, result);
        let unsaved = if runs_package {
            tally.on_package.push(planned.id.clone());
            self.save_mark(planned, self.plan.finished_mark).err()
        } else {
            None
        };
        let mut replaced = None;
        if patched && let Some(kept) = self.keep_rollback_point(planned).await {
            if kept.staging_removed {
                tally.staging_removed.push(planned.id.clone());
            }
            if let Some(point) = kept.point {
                replaced = point.binary_sha256;
                tally.points.insert(planned.id.clone(), point.dir);
            }
        }
        self.write_row(planned, outcome, detail.clone(), started, moved);
        self.note_old_binary(planned, replaced);
        if let Some(err) = unsaved {
            self.report.result = RunResult::NeedsAttention;
            self.report.message = Some(unsaved_message(self.report, self.cluster, &err));
            return Next::Stop;
        }
        match detail {
            Some(reason) => {
                stopped_at(self.report, planned, outcome, &reason, self.context.interrupt);
                Next::Stop
            }
            None => Next::Continue,
        }
    }

    /// Whether the roll stops now to watch the build (see [`soak`]): with `--soak` alone, after
    /// each instance it patched; with `--canary N`, once, when N instances run the package (for
    /// dm-workers: N workers on it run a source), if any are left to do.
    async fn soak_due(&self, tally: &Tally, patched: bool, remaining: usize) -> bool {
        let proving = self.settings.proving;
        if proving.soak.is_none() {
            return false;
        }
        let Some(canaries) = proving.canaries else { return patched };
        if tally.soaked || remaining == 0 || tally.on_package.len() < canaries {
            return false;
        }
        if self.plan.component == Role::Master {
            return true;
        }
        let Ok(members) = self.context.client.members_from_any(self.context.masters).await else {
            return true;
        };
        let names: Vec<&str> =
            self.on_package(tally).into_iter().map(|planned| planned.name.as_str()).collect();
        let bound = |w: &&WorkerMember| w.stage == "bound";
        let running =
            members.workers().iter().filter(bound).filter(|w| names.contains(&w.name.as_str()));
        // A cluster with no bound worker at all (no source) has nothing more to wait for.
        running.count() >= canaries || !members.workers().iter().any(|w| bound(&w))
    }

    /// `--canary N` with DM's OpenAPI: once N instances run the package, each free one among
    /// them gets a source moved onto it on purpose (from a worker not on the package yet), so
    /// that N workers on the package run subtasks without stopping another; then those subtasks
    /// must run and replicate there (a failure proves the package bad).
    async fn feed_canaries(&self, tally: &Tally, remaining: usize) {
        let (Some(canaries), Some(gate)) = (self.settings.proving.canaries, self.context.tasks)
        else {
            return;
        };
        if !self.context.openapi || tally.soaked || remaining == 0 {
            return;
        }
        let (client, masters) = (self.context.client, self.context.masters);
        let Ok(members) = client.members_from_any(masters).await else { return };
        let on_package = gate.on_package();
        let workers = members.workers();
        let running = workers.iter().filter(|w| w.stage == "bound" && on_package.contains(&w.name));
        let wanted = canaries.saturating_sub(running.count());
        let free = workers.iter().filter(|w| w.stage == "free" && on_package.contains(&w.name));
        let donors = workers.iter().filter(|w| w.stage == "bound" && !on_package.contains(&w.name));
        let mut moved = Vec::new();
        for (target, donor) in free.zip(donors).take(wanted) {
            let (source, target) = (&donor.source, &target.name);
            match client.transfer_source(masters, source, target).await {
                Ok(()) => {
                    self.context.progress.event(Event::Note(&format!(
                        "canary: source {source} moved on purpose from worker {} to worker \
                         {target}, on the package",
                        donor.name
                    )));
                    moved.push((source.clone(), target.clone()));
                }
                Err(err) => self.context.progress.event(Event::Note(&format!(
                    "canary: source {source} could not be moved to worker {target}: {err}"
                ))),
            }
        }
        for (source, target) in &moved {
            let _ = wait_until(self.context.wait_timeout, || gate.runs_on(client, source, target))
                .await;
        }
        if !moved.is_empty() {
            gate.begin_watch();
            let canary = || gate.look(client, "canaries", Judging::Roll);
            // A failure on the package proves it bad (the gate keeps that); any other, or a
            // subtask still settling, is the soak's to judge.
            let _ = wait_until(self.context.wait_timeout, canary).await;
            gate.take_failure();
        }
    }

    /// Watches what runs the package for `--soak`; a failure that proves the package bad puts
    /// back everything this run patched. Says whether the roll goes on.
    async fn soak(&mut self, tally: &mut Tally) -> Next {
        let length = self.settings.proving.soak.expect("a soak is due only with --soak");
        tally.soaked = true;
        let staged = self.staged;
        let canaries: Vec<(&PlannedInstance, &VersionInfo)> = self
            .on_package(tally)
            .into_iter()
            .map(|planned| (planned, &staged[&planned.id].version))
            .collect();
        let (end, seen) = soak::soak(&self.context, &canaries, length).await;
        self.report.soaks.push(seen);
        let patched = tally.on_package.join(", ");
        match end {
            SoakEnd::Passed => return Next::Continue,
            SoakEnd::Interrupted => {
                self.report.result = RunResult::Interrupted;
                self.report.message = Some(format!(
                    "interrupted during the soak: {patched} run the package; instances after \
                     them are untouched. Run the same command again to finish"
                ));
            }
            SoakEnd::Failed { why, against_package: true } => {
                self.put_back_everywhere(tally, &format!("the soak failed: {why}")).await;
            }
            SoakEnd::Failed { why, against_package: false } => {
                self.report.result = RunResult::Failed;
                self.report.message = Some(format!(
                    "during the soak: {why}; that is not the package's doing, so {patched} stay \
                     on it. The roll stopped; instances after them are untouched. Fix the \
                     cause, then run the same command again: finished instances are skipped."
                ));
            }
        }
        Next::Stop
    }

    /// `--offline`: every swap (and its rollback point), `--concurrency` at a time; every
    /// swapped instance is then marked in one save of meta.yaml, and recorded in plan order.
    async fn offline(&mut self, tally: &mut Tally) {
        let mut swapped = self.swap_all().await;
        for planned in &self.plan.instances {
            if let Some((Ok(_), _)) = swapped.get(&planned.id) {
                let (role, index) = (planned.role, planned.instance.index);
                self.cluster.set_patched(role, index, self.plan.finished_mark);
            }
        }
        let unsaved = match swapped.values().any(|(result, _)| result.is_ok()) {
            true => store::save(self.cluster, self.lock).err(),
            false => None,
        };
        for planned in &self.plan.instances {
            tally.visited.push(planned.id.clone());
            let (result, kept) = swapped.remove(&planned.id).expect("every instance was swapped");
            let kept = kept.unwrap_or(PointKept { point: None, staging_removed: false });
            if kept.staging_removed {
                tally.staging_removed.push(planned.id.clone());
            }
            let replaced = kept.point.and_then(|point| point.binary_sha256);
            let (outcome, detail) = outcome_of(tally, planned, result);
            self.write_row(planned, outcome, detail, Instant::now(), Vec::new());
            self.note_old_binary(planned, replaced);
        }
        if let Some(err) = unsaved {
            self.report.result = RunResult::NeedsAttention;
            self.report.message = Some(unsaved_message(self.report, self.cluster, &err));
        } else if let Some(failed) = self.report.instances.iter().find(|i| i.detail.is_some()) {
            // Every swap ran: each failure is in its row, and the run failed.
            self.report.result = RunResult::Failed;
            self.report.message = Some(format!(
                "{}: {}. Fix the cause, then run the same command again: finished instances \
                 are skipped.",
                failed.id,
                failed.detail.as_deref().unwrap_or_default()
            ));
        }
    }

    /// Each instance's swap and its rollback point (one round trip), `--concurrency` at a time.
    async fn swap_all(&self) -> HashMap<String, (Result<Outcome, Failure>, Option<PointKept>)> {
        futures_util::stream::iter(&self.plan.instances)
            .map(|planned| async move {
                let swapped = self.swap_and_keep(planned).await;
                self.hosts.instance_done(planned).await;
                (planned.id.clone(), swapped)
            })
            .buffer_unordered(self.settings.concurrency)
            .collect()
            .await
    }

    /// Puts back every instance this run patched (see [`PutBack`]), and their marks.
    async fn put_back_everywhere(&mut self, tally: &mut Tally, why: &str) {
        let put_back = PutBack {
            context: &self.context,
            hosts: self.hosts,
            facts: self.facts,
            staged: self.staged,
            plan: self.plan,
        };
        tally.put_back = true;
        let done = put_back.everywhere(self.report, &tally.points, why).await;
        tally.needs_operator.extend(done.needs_operator);
        for id in &done.put_back {
            let planned = self.plan.instances.iter().find(|i| &i.id == id).expect("planned");
            // Back to what it ran before: patched by an earlier run, or not.
            let index = planned.instance.index;
            self.cluster.set_patched(planned.role, index, planned.marked_patched);
        }
        if let Err(err) = store::save(self.cluster, self.lock) {
            self.report.result = RunResult::NeedsAttention;
            self.report.message = Some(format!(
                "{}; meta.yaml could not be saved ({err}): remove `patched: true` from {} by \
                 hand",
                self.report.message.as_deref().unwrap_or_default(),
                done.put_back.join(", ")
            ));
        }
    }

    /// The planned instances this run left on the package, in that order.
    fn on_package(&self, tally: &Tally) -> Vec<&'r PlannedInstance> {
        let plan = self.plan;
        let planned = |id: &String| plan.instances.iter().find(|i| &i.id == id);
        tally.on_package.iter().filter_map(planned).collect()
    }

    fn job<'j>(&'j self, planned: &'j PlannedInstance) -> Job<'j> {
        Job::of(planned, self.plan, self.hosts, self.facts, self.staged)
    }

    /// Marks `planned` in meta.yaml and saves it at once.
    fn save_mark(&mut self, planned: &PlannedInstance, patched: bool) -> Result<(), StoreError> {
        self.cluster.set_patched(planned.role, planned.instance.index, patched);
        store::save(self.cluster, self.lock)
    }

    /// The sha256 of the binary an instance ran before, once its patch hashed it (keeping its
    /// rollback point) where preflight did not (it hashes only a binary of the package's size).
    fn note_old_binary(&mut self, planned: &PlannedInstance, replaced: Option<String>) {
        let row = self.report.instances.iter_mut().find(|i| i.id == planned.id);
        if let Some(row) = row.filter(|row| row.old_binary_sha256.is_none()) {
            row.old_binary_sha256 = replaced;
        }
    }

    fn write_row(
        &mut self,
        planned: &PlannedInstance,
        outcome: Outcome,
        detail: Option<String>,
        started: Instant,
        moved: Vec<SourceMove>,
    ) {
        let new = &self.staged[&planned.id];
        let row = self
            .report
            .instances
            .iter_mut()
            .find(|i| i.id == planned.id)
            .expect("every planned instance has a report row");
        row.outcome = outcome;
        row.seconds = started.elapsed().as_secs_f64();
        row.new_version = match outcome {
            Outcome::Patched | Outcome::Skipped => Some(new.version.clone()),
            _ => None,
        };
        row.tasks = self.context.tasks.map(|gate| gate.checked(&planned.id)).unwrap_or_default();
        row.moved = moved;
        self.context.progress.event(Event::InstanceFinished {
            id: &planned.id,
            outcome,
            detail: detail.as_deref(),
        });
        row.detail = detail;
    }

    /// After a patch: what it replaced becomes a rollback point (and the staging dirs go). A
    /// failure here is told, not fatal: the instance is patched either way.
    async fn keep_rollback_point(&self, planned: &PlannedInstance) -> Option<PointKept> {
        let (keep, sha) = (self.settings.keep_rollbacks, &self.plan.package.sha256);
        let job = self.job(planned);
        let (stamp, action) = (rollback_stamp(sha), self.plan.action);
        let kept = roll::keep_rollback_point(&job, keep, &stamp, sha, action).await;
        self.told_unless_kept(planned, kept)
    }

    /// `--offline`: an instance on the package already is done if it runs it; any other is
    /// swapped, and what the swap replaced becomes a rollback point, in one round trip.
    async fn swap_and_keep(
        &self,
        planned: &PlannedInstance,
    ) -> (Result<Outcome, Failure>, Option<PointKept>) {
        let job = self.job(planned);
        if job.installed.on_package(&self.plan.package) {
            return (roll::finish_earlier_run(&self.context, &job).await, None);
        }
        job.say(&self.context, "swapping the binary");
        let (keep, sha) = (self.settings.keep_rollbacks, &self.plan.package.sha256);
        let (stamp, action) = (rollback_stamp(sha), self.plan.action);
        match roll::swap_in_and_keep_point(&job, keep, &stamp, sha, action).await {
            Ok(kept) => (Ok(Outcome::Patched), self.told_unless_kept(planned, kept)),
            Err(failure) => (Err(failure), None),
        }
    }

    /// The rollback point kept, or `None` with a note saying why it was not.
    fn told_unless_kept(
        &self,
        planned: &PlannedInstance,
        kept: Result<PointKept, SshError>,
    ) -> Option<PointKept> {
        kept.inspect_err(|err| {
            self.context.progress.event(Event::Note(&format!(
                "{}: patched, but what it replaced could not be kept for `dm-patch rollback`: \
                 {err}",
                planned.id
            )));
        })
        .ok()
    }
}

/// The outcome and detail of an instance's result; one that needs the operator is noted.
fn outcome_of(
    tally: &mut Tally,
    planned: &PlannedInstance,
    result: Result<Outcome, Failure>,
) -> (Outcome, Option<String>) {
    match result {
        Ok(outcome) => (outcome, None),
        Err(Failure::Unchanged(reason)) => (Outcome::FailedUnchanged, Some(reason)),
        Err(Failure::RolledBack(reason)) => (Outcome::RolledBack, Some(reason)),
        Err(Failure::NeedsAttention(reason)) => {
            tally.needs_operator.push(planned.id.clone());
            (Outcome::NeedsAttention, Some(reason))
        }
        // It runs the package, healthy; what failed is elsewhere.
        Err(Failure::Elsewhere(reason)) => (Outcome::Patched, Some(reason)),
    }
}

/// An instance already on the package is done only if it runs it (an earlier run may have been
/// cut short, or swapped it `--offline` while it ran); any other is patched.
async fn patch_or_finish(
    context: &RollContext<'_>,
    job: &Job<'_>,
    plan: &Plan,
) -> Result<Outcome, Failure> {
    if job.installed.on_package(&plan.package) {
        roll::finish_earlier_run(context, job).await
    } else {
        roll::patch_instance(context, job).await.map(|()| Outcome::Patched)
    }
}

/// The next instance to patch, and the workers as DM showed them just before (for the sources
/// it moves). The plan's order stands, except that a dm-master which leads *now* goes after
/// every other dm-master still to do (leadership can move during a roll, and the leader must be
/// the last master restarted), and that a dm-worker which runs no source now goes first (see
/// [`judge::next_worker`]: bindings change as the roll goes).
async fn take_next<'p>(
    remaining: &mut Vec<&'p PlannedInstance>,
    context: &RollContext<'_>,
) -> (&'p PlannedInstance, Option<Vec<WorkerMember>>) {
    let Ok(members) = context.client.members_from_any(context.masters).await else {
        return (remaining.remove(0), None);
    };
    let index = match remaining[0].role {
        Role::Master => {
            let leader = members.leader().map(|l| l.name.as_str());
            remaining.iter().position(|i| Some(i.name.as_str()) != leader).unwrap_or(0)
        }
        Role::Worker => {
            let names: Vec<&str> = remaining.iter().map(|i| i.name.as_str()).collect();
            judge::next_worker(&names, members.workers())
        }
    };
    (remaining.remove(index), Some(members.workers().to_vec()))
}

/// The sources that changed workers since `before` (the workers as DM showed them before an
/// instance's turn), each told as it is found.
async fn moves_since(
    context: &RollContext<'_>,
    before: Option<Vec<WorkerMember>>,
) -> Vec<SourceMove> {
    let Some(before) = before else { return Vec::new() };
    let Ok(after) = context.client.members_from_any(context.masters).await else {
        return Vec::new();
    };
    let moved = judge::source_moves(&before, after.workers());
    for change in &moved {
        let place = |worker: &str| {
            if worker.is_empty() { "no worker".to_owned() } else { format!("worker {worker}") }
        };
        context.progress.event(Event::Note(&format!(
            "source {} moved from {} to {}",
            change.source,
            place(&change.from),
            place(&change.to)
        )));
    }
    moved
}

/// The roll stops at `planned`, which ended with `outcome` for `reason`: the run failed, or
/// was interrupted when a stop request made the instance give up and be undone.
fn stopped_at(
    report: &mut Report,
    planned: &PlannedInstance,
    outcome: Outcome,
    reason: &str,
    interrupt: &Interrupt,
) {
    let interrupted = interrupt.requested() && outcome != Outcome::NeedsAttention;
    let (result, next) = if interrupted {
        (RunResult::Interrupted, "Run the same command again to finish")
    } else {
        (RunResult::Failed, "Fix the cause, then run the same command again")
    };
    report.result = result;
    report.message = Some(format!(
        "{}: {reason}. The roll stopped there; instances after it are untouched. {next}: \
         finished instances are skipped.",
        planned.id
    ));
}

/// What to tell the operator when meta.yaml could not be saved after an instance was patched:
/// the roll stopped, which instances run the package but are not marked, and how to repair it.
fn unsaved_message(report: &Report, cluster: &Cluster, err: &StoreError) -> String {
    let done = report.on_package();
    format!(
        "meta.yaml could not be saved ({err}); the roll stopped there. These instances run the \
         package but may not be marked patched: {}. Add `patched: true` to them in {} by hand, \
         or make the store writable and run the same command again (they are skipped)",
        done.join(", "),
        cluster.dir.join("meta.yaml").display()
    )
}
