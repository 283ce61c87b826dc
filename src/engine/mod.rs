//! The only place with side effects on hosts. It takes a checked plan and its [`Settings`],
//! runs it in phases — connect, preflight, stage, roll, clean up — and returns a `Report`; it
//! never prints, it emits events.

pub mod audit;
pub mod events;
mod hosts;
pub mod judge;
mod preflight;
mod put_back;
mod remote;
pub mod report;
mod roll;
pub mod roll_points;
pub mod signals;
mod stage;
mod tasks;
mod tree;

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use futures_util::StreamExt;

use self::events::{Event, Progress};
use self::hosts::Hosts;
use self::judge::SourceMove;
use self::preflight::InstanceFacts;
use self::put_back::PutBack;
use self::report::{InstanceReport, Outcome, PackageReport, PhaseTime, Report, RunResult};
use self::roll::{Failure, Job, RollContext};
use self::signals::Interrupt;
use self::stage::Staged;
use self::tasks::TaskGate;
use crate::dm::client::{DmClient, WorkerMember};
use crate::dm::version::release_line;
use crate::plan::{Plan, PlannedInstance};
use crate::ssh::{HostKeyPolicy, Reach};
use crate::topology::store::{self, ClusterLock, StoreError};
use crate::topology::{Cluster, Role};

/// How the engine goes about its work, whatever the plan: timeouts, fan-out, trust.
#[derive(Debug)]
pub struct Settings {
    /// Connecting and logging in to a host; also each DM API call.
    pub ssh_timeout: Duration,
    /// Each wait of the roll: a restarted instance turning healthy, a leader moving.
    pub wait_timeout: Duration,
    /// Hosts connected to and staged at the same time.
    pub concurrency: usize,
    pub host_key_policy: HostKeyPolicy,
    /// Patch even when a migration task is already paused (it is named, and left as it is).
    pub force: bool,
    /// Rollback points kept per instance (what each patch replaced), newest first.
    pub keep_rollbacks: usize,
    /// The executor, and the jump host that carries SSH and the DM API, if any.
    pub reach: Reach,
    /// The command line as typed, for the audit record.
    pub command_line: Vec<String>,
}

/// Runs a confirmed plan on `cluster` to its end. Everything that goes wrong, on the hosts or
/// in the store, ends up in the report and its result.
pub async fn execute(
    cluster: &mut Cluster,
    plan: Plan,
    settings: &Settings,
    lock: &ClusterLock,
    progress: Arc<dyn Progress>,
    interrupt: &Interrupt,
) -> Report {
    let started = Instant::now();
    let started_at = SystemTime::now();
    let plan = Arc::new(plan);
    let mut run = Run {
        phase_started: Instant::now(),
        report: new_report(&plan, started_at),
        plan: plan.clone(),
        progress,
        client: DmClient::new(settings.ssh_timeout, cluster.tls(), settings.reach.http_proxy()),
        masters: addrs_of(cluster, Role::Master),
        tasks: None,
    };
    let audit = audit::Audit::start(&lock.store().audit_dir(), &settings.command_line);

    run.phases(cluster, settings, lock, interrupt).await;
    run.end_phase();
    let report = &mut run.report;
    report.seconds = started.elapsed().as_secs_f64();
    report.finished_at = humantime::format_rfc3339_seconds(SystemTime::now()).to_string();
    audit.finish(report);
    run.report
}

struct Run {
    plan: Arc<Plan>,
    report: Report,
    progress: Arc<dyn Progress>,
    client: DmClient,
    masters: Vec<String>,
    /// The migration tasks the roll must keep running (none with `--offline`).
    tasks: Option<TaskGate>,
    /// When the current phase began.
    phase_started: Instant,
}

/// A rollback point's name: when (UTC, sortable) and which package.
fn rollback_stamp(package_sha256: &str) -> String {
    let now = humantime::format_rfc3339_millis(SystemTime::now()).to_string();
    let now: String = now.chars().filter(|c| c.is_ascii_alphanumeric() || *c == '.').collect();
    format!("{now}-{}", package_sha256.get(..7).unwrap_or(package_sha256))
}

/// The API addresses of the cluster's instances of `role`.
fn addrs_of(cluster: &Cluster, role: Role) -> Vec<String> {
    cluster.instances.iter().filter(|i| i.role == role).map(|i| i.addr()).collect()
}

impl Run {
    async fn phases(
        &mut self,
        cluster: &mut Cluster,
        settings: &Settings,
        lock: &ClusterLock,
        interrupt: &Interrupt,
    ) {
        let host_count = self.plan.hosts.len();
        self.phase(&format!("Connecting to {host_count} host(s)"));
        let (hosts, problems) = Hosts::connect(cluster, &self.plan, settings).await;
        if !problems.is_empty() {
            return self.stop_before_roll(problems);
        }

        self.phase("Checking instances");
        let (facts, problems) =
            preflight::check(&self.plan, &hosts, &self.client, &self.masters).await;
        if !problems.is_empty() {
            return self.stop_before_roll(problems);
        }
        for (id, installed) in &facts {
            let row = row(&mut self.report, id);
            row.old_version = Some(installed.version.clone());
            row.old_binary_sha256.clone_from(&installed.sha256);
        }
        if !self.plan.offline {
            let workers = addrs_of(cluster, Role::Worker);
            let component = self.plan.component;
            let (gate, paused) =
                TaskGate::survey(&self.client, workers, self.masters.clone(), component).await;
            if !paused.is_empty() && !settings.force {
                let problems = paused
                    .iter()
                    .map(|p| {
                        format!(
                            "{}; resume or fix it first (or pass --force to patch anyway, \
                             leaving it as it is)",
                            p.describe()
                        )
                    })
                    .collect();
                return self.stop_before_roll(problems);
            }
            for paused in &paused {
                self.progress.event(Event::Note(&format!(
                    "--force: {}; patching anyway, it is left as it is",
                    paused.describe()
                )));
            }
            self.report.paused_before = paused.into_iter().map(|p| p.subtask).collect();
            if let Err(problems) = self.no_shard_ddl_pending(&gate, settings).await {
                return self.stop_before_roll(problems);
            }
            self.tasks = Some(gate);
        }
        if interrupt.requested() {
            return self.interrupted_before_roll(&hosts).await;
        }

        let to_stage = stage::hosts_to_stage(&self.plan, &facts).len();
        self.phase(&format!("Uploading the package to {to_stage} host(s)"));
        let (staged, problems) =
            stage::stage_all(&self.plan, &hosts, &facts, &self.progress, settings.concurrency)
                .await;
        if !problems.is_empty() {
            stage::cleanup(&self.plan, &hosts, &[]).await;
            return self.stop_before_roll(problems);
        }
        self.report.package.version = staged.values().next().map(|s| s.version.clone());
        if let Some(message) = self.other_release_line() {
            stage::cleanup(&self.plan, &hosts, &[]).await;
            self.report.result = RunResult::PackageRefused;
            self.report.message = Some(message);
            return;
        }
        if interrupt.requested() {
            return self.interrupted_before_roll(&hosts).await;
        }

        let needs_operator =
            self.roll(cluster, settings, lock, &hosts, &facts, &staged, interrupt).await;
        stage::cleanup(&self.plan, &hosts, &needs_operator).await;
        hosts.close().await;

        if self.report.result == RunResult::Success && self.plan.overwrite {
            let package = &self.plan.package;
            let (role, sha) = (package.component, package.sha256.as_str());
            match store::keep_package(cluster, role, &package.path, sha) {
                Ok(kept) => self.report.kept_package = Some(kept.display().to_string()),
                Err(err) => {
                    self.report.result = RunResult::Failed;
                    self.report.message = Some(format!(
                        "every instance was patched, but the package could not be kept for \
                         --overwrite: {err}; run the same command again once the store is \
                         writable (patched instances are skipped)"
                    ));
                }
            }
        }
    }

    /// The roll itself: one instance at a time, in plan order. Returns the instances whose
    /// staging dir must be kept for the operator.
    #[allow(clippy::too_many_arguments)]
    async fn roll(
        &mut self,
        cluster: &mut Cluster,
        settings: &Settings,
        lock: &ClusterLock,
        hosts: &Hosts,
        facts: &HashMap<String, InstanceFacts>,
        staged: &HashMap<String, Staged>,
        interrupt: &Interrupt,
    ) -> Vec<String> {
        let plan = self.plan.clone();
        let mut needs_operator = Vec::new();
        self.phase(if plan.offline {
            "Swapping binaries (offline)"
        } else {
            "Rolling, one instance at a time"
        });
        let context = RollContext {
            client: &self.client,
            masters: &self.masters,
            wait_timeout: settings.wait_timeout,
            offline: plan.offline,
            progress: self.progress.as_ref(),
            interrupt,
            tasks: self.tasks.as_ref().filter(|gate| !gate.is_empty()),
            force: settings.force,
        };
        // `--offline` restarts nothing, so the swaps run side by side, `--concurrency` at a
        // time, each keeping its rollback point; every swapped instance is then marked in one
        // save of meta.yaml. The loop below records them in plan order as if they had run one
        // by one.
        let mut swapped = HashMap::new();
        let mut unsaved_offline = None;
        if plan.offline {
            swapped = swap_offline(&context, hosts, facts, staged, &plan, settings).await;
            for planned in &plan.instances {
                if let Some(Ok(_)) = swapped.get(&planned.id) {
                    cluster.mark_patched(planned.role, planned.instance.index);
                }
            }
            if swapped.values().any(Result::is_ok) {
                unsaved_offline = store::save(cluster, lock).err();
            }
        }
        let mut remaining: Vec<&PlannedInstance> = plan.instances.iter().collect();
        let mut done = Vec::new();
        // Where each instance patched by this run keeps what it replaced: what a put-back uses.
        let mut points = HashMap::new();
        while !remaining.is_empty() {
            if interrupt.requested() {
                self.report.result = RunResult::Interrupted;
                self.report.message = Some(
                    "interrupted: instances not reached are untouched; run the same command again to finish"
                        .to_owned(),
                );
                break;
            }
            let (planned, before) = take_next(&mut remaining, &context).await;
            done.push(planned.id.clone());
            let (installed, new) = (&facts[&planned.id], &staged[&planned.id]);
            let started = Instant::now();
            let job = Job {
                planned,
                remote: hosts.get(&planned.ssh_host, planned.ssh_port),
                installed,
                staged: new,
                files: &plan.package.files,
                remove: &plan.remove,
            };
            let result = match swapped.remove(&planned.id) {
                Some(result) => result,
                None => patch_or_finish(&context, &job, &plan).await,
            };
            let moved = moves_since(&context, before).await;
            let mut unsaved = None;
            let (outcome, detail) = match result {
                Ok(outcome) => {
                    if !plan.offline {
                        // Saved at once: a crash or Ctrl-C later never loses a finished
                        // instance.
                        cluster.mark_patched(planned.role, planned.instance.index);
                        unsaved = store::save(cluster, lock).err();
                        if outcome == Outcome::Patched
                            && let Some(point) =
                                keep_rollback_point(&context, &job, settings, &plan).await
                        {
                            points.insert(planned.id.clone(), point);
                        }
                    }
                    (outcome, None)
                }
                Err(Failure::Unchanged(reason)) => (Outcome::FailedUnchanged, Some(reason)),
                Err(Failure::RolledBack(reason)) => (Outcome::RolledBack, Some(reason)),
                Err(Failure::NeedsAttention(reason)) => {
                    needs_operator.push(planned.id.clone());
                    (Outcome::NeedsAttention, Some(reason))
                }
                Err(Failure::Elsewhere(reason)) => {
                    cluster.mark_patched(planned.role, planned.instance.index);
                    unsaved = store::save(cluster, lock).err();
                    (Outcome::Patched, Some(reason))
                }
            };
            let record = row(&mut self.report, &planned.id);
            record.outcome = outcome;
            record.seconds = started.elapsed().as_secs_f64();
            record.new_version = match outcome {
                Outcome::Patched | Outcome::Skipped => Some(new.version.clone()),
                _ => None,
            };
            record.detail = detail.clone();
            record.tasks = context.tasks.map(|gate| gate.checked(&planned.id)).unwrap_or_default();
            record.moved = moved;
            context.progress.event(Event::InstanceFinished {
                id: &planned.id,
                outcome,
                detail: detail.as_deref(),
            });
            if let Some(err) = unsaved {
                self.report.result = RunResult::Failed;
                self.report.message = Some(unsaved_message(&self.report, cluster, &err));
                break;
            }
            if let Some(reason) = detail
                && !plan.offline
            {
                stopped_at(&mut self.report, planned, outcome, &reason, interrupt);
                break;
            }
        }
        if let Some(evidence) = context.tasks.and_then(TaskGate::proven_bad) {
            let put_back = PutBack { context: &context, hosts, facts, staged, plan: &plan };
            let unmarked = put_back.everywhere(&mut self.report, &points, &evidence).await;
            needs_operator.extend(unmarked.needs_operator);
            for id in &unmarked.put_back {
                let planned = plan.instances.iter().find(|i| &i.id == id).expect("planned");
                // Back to what it ran before: patched by an earlier run, or not.
                cluster.set_patched(planned.role, planned.instance.index, planned.marked_patched);
            }
            if let Err(err) = store::save(cluster, lock) {
                self.report.message = Some(format!(
                    "{}; meta.yaml could not be saved ({err}): remove `patched: true` from {} \
                     by hand",
                    self.report.message.as_deref().unwrap_or_default(),
                    unmarked.put_back.join(", ")
                ));
            }
        }
        if let Some(err) = unsaved_offline {
            self.report.result = RunResult::Failed;
            self.report.message = Some(unsaved_message(&self.report, cluster, &err));
        }
        // Offline swaps all ran: every failure is in its row, and the run failed.
        if let Some(failed) = self.report.instances.iter().find(|i| i.detail.is_some())
            && plan.offline
            && self.report.result == RunResult::Success
        {
            self.report.result = RunResult::Failed;
            self.report.message = Some(format!(
                "{}: {}. Fix the cause, then run the same command again: finished instances are \
                 skipped.",
                failed.id,
                failed.detail.as_deref().unwrap_or_default()
            ));
        }
        // The report lists instances in the order they were visited, those not reached last.
        let position = |id: &str| done.iter().position(|d| d == id).unwrap_or(usize::MAX);
        self.report.instances.sort_by_key(|row| position(&row.id));
        needs_operator
    }

    /// Why the staged binary may not be used, when it reports another release line than the
    /// cluster's and that was not allowed. A hotfix stays on its release line: a binary from
    /// another one is a wrong package far more often than a wish to move.
    fn other_release_line(&self) -> Option<String> {
        let plan = &self.plan;
        let package = self.report.package.version.as_ref()?;
        let cluster = release_line(&plan.cluster_version)?;
        if plan.allow_version_change || package.release_line() == Some(cluster) {
            return None;
        }
        Some(format!(
            "the package's {} reports {}, but cluster '{}' runs {}: a hotfix stays on its \
             release line (v{}.{}), so nothing was changed; pass --allow-version-change if the \
             move is meant",
            plan.component,
            package.short(),
            plan.cluster,
            plan.cluster_version,
            cluster.0,
            cluster.1
        ))
    }

    /// A worker roll does not start while a shard DDL lock is pending on a source: DM's guide
    /// says not to restart a worker during a shard DDL migration (it can be left blocked at
    /// the DDL). `--force` goes ahead, and says so.
    async fn no_shard_ddl_pending(
        &self,
        gate: &TaskGate,
        settings: &Settings,
    ) -> Result<(), Vec<String>> {
        if self.plan.component != Role::Worker {
            return Ok(());
        }
        let locks = gate.ddl_locks(&self.client, None).await;
        if settings.force {
            for lock in &locks {
                self.progress.event(Event::Note(&format!(
                    "--force: {lock}; patching anyway, its worker may be restarted mid-DDL"
                )));
            }
            return Ok(());
        }
        let problems: Vec<String> = locks
            .iter()
            .map(|lock| {
                format!(
                    "{lock}: a worker restarted during a shard DDL migration can be left blocked \
                     at the DDL; let it resolve first (or pass --force to patch anyway)"
                )
            })
            .collect();
        if problems.is_empty() { Ok(()) } else { Err(problems) }
    }

    /// Ends the run before any service was touched: the problems go into the report.
    fn stop_before_roll(&mut self, problems: Vec<String>) {
        self.report.result = RunResult::PreflightFailed;
        self.report.message = Some(format!(
            "{} problem(s) found before touching any service; nothing was changed",
            problems.len()
        ));
        self.report.problems = problems;
    }

    async fn interrupted_before_roll(&mut self, hosts: &Hosts) {
        stage::cleanup(&self.plan, hosts, &[]).await;
        self.report.result = RunResult::Interrupted;
        self.report.message = Some("interrupted before any service was touched".to_owned());
    }

    /// A new phase begins: the one before it ends, and its time goes into the report.
    fn phase(&mut self, name: &str) {
        self.end_phase();
        self.phase_started = Instant::now();
        self.report.phases.push(PhaseTime { name: name.to_owned(), seconds: 0.0 });
        self.progress.event(Event::Phase(name));
    }

    fn end_phase(&mut self) {
        if let Some(last) = self.report.phases.last_mut() {
            last.seconds = self.phase_started.elapsed().as_secs_f64();
        }
    }
}

/// An instance already on the package is done only if it runs it (an earlier run may have been
/// cut short); any other is patched.
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

/// `--offline`: every instance's swap (and then its rollback point), `--concurrency` at a
/// time, by instance ID.
async fn swap_offline(
    context: &RollContext<'_>,
    hosts: &Hosts,
    facts: &HashMap<String, InstanceFacts>,
    staged: &HashMap<String, Staged>,
    plan: &Plan,
    settings: &Settings,
) -> HashMap<String, Result<Outcome, Failure>> {
    futures_util::stream::iter(&plan.instances)
        .map(|planned| async move {
            let job = Job {
                planned,
                remote: hosts.get(&planned.ssh_host, planned.ssh_port),
                installed: &facts[&planned.id],
                staged: &staged[&planned.id],
                files: &plan.package.files,
                remove: &plan.remove,
            };
            let result = patch_or_finish(context, &job, plan).await;
            if let Ok(Outcome::Patched) = result {
                keep_rollback_point(context, &job, settings, plan).await;
            }
            (planned.id.clone(), result)
        })
        .buffer_unordered(settings.concurrency)
        .collect()
        .await
}

/// After a patch: what it replaced becomes a rollback point; returns its dir. A failure here is
/// told, not fatal: the instance is patched either way.
async fn keep_rollback_point(
    context: &RollContext<'_>,
    job: &Job<'_>,
    settings: &Settings,
    plan: &Plan,
) -> Option<String> {
    let (keep, sha) = (settings.keep_rollbacks, &plan.package.sha256);
    match roll::keep_rollback_point(job, keep, &rollback_stamp(sha), sha).await {
        Ok(point) => point,
        Err(err) => {
            context.progress.event(Event::Note(&format!(
                "{}: patched, but what it replaced could not be kept for `dm-patch rollback`: \
                 {err}",
                job.planned.id
            )));
            None
        }
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
    if context.offline {
        return (remaining.remove(0), None);
    }
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

/// What to tell the operator when meta.yaml could not be saved after an instance was patched:
/// the roll stopped, which instances run the package but are not marked, and how to repair it.
fn unsaved_message(report: &Report, cluster: &Cluster, err: &StoreError) -> String {
    let done: Vec<&str> = report
        .instances
        .iter()
        .filter(|i| matches!(i.outcome, Outcome::Patched | Outcome::Skipped))
        .map(|i| i.id.as_str())
        .collect();
    format!(
        "meta.yaml could not be saved ({err}); the roll stopped there. These instances run the \
         package but may not be marked patched: {}. Add `patched: true` to them in {} by hand, \
         or make the store writable and run the same command again (they are skipped)",
        done.join(", "),
        cluster.dir.join("meta.yaml").display()
    )
}

/// The roll stops at `planned`, which ended with `outcome` for `reason`: the run failed,
/// or was interrupted when a stop request made the instance give up and be undone.
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
        "{}: {reason}. The roll stopped there; instances after it are untouched. \
         {next}: finished instances are skipped.",
        planned.id
    ));
}

/// The report row of instance `id`.
fn row<'r>(report: &'r mut Report, id: &str) -> &'r mut InstanceReport {
    report
        .instances
        .iter_mut()
        .find(|i| i.id == id)
        .expect("every planned instance has a report row")
}

fn new_report(plan: &Plan, started_at: SystemTime) -> Report {
    Report {
        action: plan.action,
        cluster: plan.cluster.clone(),
        component: plan.component,
        package: PackageReport {
            path: plan.package.path.display().to_string(),
            sha256: plan.package.sha256.clone(),
            size: plan.package.size,
            version: None,
            binary_sha256: plan.package.entry_sha256.clone(),
        },
        offline: plan.offline,
        overwrite: plan.overwrite,
        started_at: humantime::format_rfc3339_seconds(started_at).to_string(),
        finished_at: String::new(),
        seconds: 0.0,
        result: RunResult::Success,
        message: None,
        problems: Vec::new(),
        paused_before: Vec::new(),
        instances: plan
            .instances
            .iter()
            .map(|planned| InstanceReport {
                id: planned.id.clone(),
                role: planned.role,
                host: planned.host.clone(),
                old_version: None,
                old_binary_sha256: None,
                new_version: None,
                outcome: Outcome::NotReached,
                seconds: 0.0,
                detail: None,
                tasks: Vec::new(),
                moved: Vec::new(),
            })
            .collect(),
        kept_package: None,
        phases: Vec::new(),
    }
}
