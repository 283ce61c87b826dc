//! The only place with side effects on hosts. It takes a checked plan and its [`Settings`],
//! runs it in phases — connect, preflight, stage, roll, clean up — and returns a `Report`; it
//! never prints, it emits events.

mod attempt;
pub mod audit;
pub mod events;
mod hosts;
mod job_steps;
pub mod judge;
mod preflight;
mod put_back;
mod remote;
pub mod report;
mod roll;
pub mod roll_points;
mod rolling;
pub mod signals;
pub mod soak;
mod stage;
mod tasks;
mod tree;

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use self::events::{Event, Progress};
use self::hosts::Hosts;
use self::preflight::InstanceFacts;
use self::report::{InstanceReport, Outcome, PackageReport, PhaseTime, Report, RunResult};
use self::roll::RollContext;
use self::rolling::Roll;
use self::signals::Interrupt;
use self::stage::Staged;
use self::tasks::TaskGate;
use crate::dm::client::DmClient;
use crate::dm::version::release_line;
use crate::plan::{Plan, Strategy};
use crate::ssh::{HostKeyPolicy, Reach};
use crate::topology::store::{self, ClusterLock};
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
    /// `--canary`/`--soak`: when and how long to watch the build under real traffic.
    pub proving: Proving,
    /// The executor, and the jump host that carries SSH and the DM API, if any.
    pub reach: Reach,
    /// The command line as typed, for the audit record.
    pub command_line: Vec<String>,
}

/// When the roll stops to watch the build under real traffic (see [`soak`]).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Proving {
    /// Watch once, after this many instances run the package (workers: run a source on it).
    pub canaries: Option<usize>,
    /// How long each watch lasts; without `canaries`, one follows every instance.
    pub soak: Option<Duration>,
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
    let report = new_report(&plan, started_at);
    let audit =
        Arc::new(audit::Audit::start(&lock.store().audit_dir(), &settings.command_line, &report));
    let progress = Arc::new(audit::Recorded { inner: progress, audit: audit.clone() });
    let mut run = Run {
        phase_started: Instant::now(),
        report,
        plan: plan.clone(),
        progress,
        client: DmClient::new(settings.ssh_timeout, cluster.tls(), settings.reach.http_proxy()),
        masters: addrs_of(cluster, Role::Master),
        tasks: None,
    };

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
            preflight::check(&self.plan, &hosts, &self.client, &self.masters, settings.concurrency)
                .await;
        if !problems.is_empty() {
            return self.stop_before_roll(problems);
        }
        for (id, installed) in &facts {
            let row = row(&mut self.report, id);
            row.old_version = Some(installed.version.clone());
            row.old_binary_sha256.clone_from(&installed.sha256);
        }
        if self.plan.strategy == Strategy::Rolling
            && let Err(problems) = self.survey_tasks(cluster, settings).await
        {
            return self.stop_before_roll(problems);
        }
        if self.plan.strategy == Strategy::Rolling && self.plan.component == Role::Master {
            self.let_every_master_lead().await;
        }
        if interrupt.requested() {
            return self.interrupted_before_roll(&hosts, settings.concurrency).await;
        }

        let Some(staged) = self.stage(&hosts, &facts, settings).await else { return };
        if interrupt.requested() {
            return self.interrupted_before_roll(&hosts, settings.concurrency).await;
        }

        self.phase(match self.plan.strategy {
            Strategy::Offline => "Swapping binaries (offline)",
            Strategy::Rolling => "Rolling, one instance at a time",
        });
        let context = RollContext {
            client: &self.client,
            masters: &self.masters,
            wait_timeout: settings.wait_timeout,
            strategy: self.plan.strategy,
            progress: self.progress.as_ref(),
            interrupt,
            tasks: self.tasks.as_ref().filter(|gate| !gate.is_empty()),
            force: settings.force,
            openapi: self.plan.openapi,
        };
        let roll = Roll {
            context,
            hosts: &hosts,
            facts: &facts,
            staged: &staged,
            plan: &self.plan,
            settings,
            cluster,
            lock,
            report: &mut self.report,
        };
        let leftovers = roll.run().await;
        self.report.settle_failure();
        let finished = self.report.on_package();
        let keep: Vec<String> = leftovers.keep.into_iter().chain(leftovers.removed).collect();
        stage::cleanup(&self.plan, &hosts, settings.concurrency, &keep, &finished).await;
        hosts.close().await;

        if self.report.result == RunResult::Success && self.plan.overwrite {
            self.keep_for_overwrite(cluster);
        }
    }

    /// Stages the package on every host that needs it; `None` when the run stops there (the
    /// report says why, and what was staged is removed).
    async fn stage(
        &mut self,
        hosts: &Hosts,
        facts: &HashMap<String, InstanceFacts>,
        settings: &Settings,
    ) -> Option<HashMap<String, Staged>> {
        let to_stage = stage::hosts_to_stage(&self.plan, facts).len();
        self.phase(&format!("Uploading the package to {to_stage} host(s)"));
        let (staged, problems) =
            stage::stage_all(&self.plan, hosts, facts, &self.progress, settings.concurrency).await;
        // Every upload is done: the store's disk gets back what the kept tar stream took.
        if let Some(kept) = &self.plan.package.kept_tar {
            kept.release();
        }
        if !problems.is_empty() {
            stage::cleanup(&self.plan, hosts, settings.concurrency, &[], &[]).await;
            self.stop_before_roll(problems);
            return None;
        }
        self.report.package.version = staged.values().next().map(|s| s.version.clone());
        if let Some(message) = self.other_release_line() {
            stage::cleanup(&self.plan, hosts, settings.concurrency, &[], &[]).await;
            self.report.result = RunResult::PackageRefused;
            self.report.message = Some(message);
            return None;
        }
        Some(staged)
    }

    /// Every dm-worker's subtasks before the roll: the task gate, unless a subtask is already
    /// paused or a shard DDL lock is pending (the problems; `--force` goes ahead, saying so).
    async fn survey_tasks(
        &mut self,
        cluster: &Cluster,
        settings: &Settings,
    ) -> Result<(), Vec<String>> {
        let workers = addrs_of(cluster, Role::Worker);
        let component = self.plan.component;
        let (gate, paused) =
            TaskGate::survey(&self.client, workers, self.masters.clone(), component).await;
        let anyway = self.plan.action.anyway();
        let found = paused.iter().map(|p| {
            let problem = format!(
                "{}; resume or fix it first (or pass --force to {anyway}, leaving it as it is)",
                p.describe()
            );
            (problem, format!("{}; going ahead, it is left as it is", p.describe()))
        });
        self.unless_forced(settings, found.collect())?;
        self.report.paused_before = paused.into_iter().map(|p| p.subtask).collect();
        self.no_shard_ddl_pending(&gate, settings).await?;
        self.no_worker_down_outside_the_roll(settings).await?;
        self.tasks = Some(gate);
        Ok(())
    }

    /// `--overwrite`: the package becomes the cluster's permanent patch in the store.
    fn keep_for_overwrite(&mut self, cluster: &Cluster) {
        let package = &self.plan.package;
        let (role, sha) = (package.component, package.sha256.as_str());
        match store::keep_package(cluster, role, &package.path, sha) {
            Ok(kept) => self.report.kept_package = Some(kept.display().to_string()),
            Err(err) => {
                self.report.result = RunResult::Failed;
                self.report.message = Some(format!(
                    "every instance was patched, but the package could not be kept for \
                     --overwrite: {err}; run the same command again once the store is writable \
                     (patched instances are skipped)"
                ));
            }
        }
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
        let anyway = self.plan.action.anyway();
        let found = locks.iter().map(|lock| {
            let problem = format!(
                "{lock}: a worker restarted during a shard DDL migration can be left blocked at \
                 the DDL; let it resolve first (or pass --force to {anyway})"
            );
            (problem, format!("{lock}; going ahead, its worker may be restarted mid-DDL"))
        });
        self.unless_forced(settings, found.collect())
    }

    /// A worker roll never has two workers down at once: a worker already offline that the run
    /// does not select would be down beside each one the roll stops (a selected one goes first,
    /// and comes back patched). `--force` goes ahead, and says so.
    async fn no_worker_down_outside_the_roll(
        &self,
        settings: &Settings,
    ) -> Result<(), Vec<String>> {
        if self.plan.component != Role::Worker {
            return Ok(());
        }
        let Ok(members) = self.client.members_from_any(&self.masters).await else {
            return Ok(());
        };
        let selected = |name: &str| self.plan.instances.iter().any(|i| i.name == name);
        let down: Vec<&str> = members
            .workers()
            .iter()
            .filter(|w| w.stage == "offline" && !selected(&w.name))
            .map(|w| w.name.as_str())
            .collect();
        let said = |name: &str| {
            format!(
                "dm-worker {name} is offline and not selected: stopping another worker would \
                 leave two down at once; start it, or select it too (it is then brought back \
                 first), or pass --force"
            )
        };
        self.unless_forced(
            settings,
            down.into_iter().map(|name| (said(name), said(name))).collect(),
        )
    }

    /// What stops the run before any change, as `(problem, note)` pairs: the problems, unless
    /// `--force` goes ahead, and then each note is told.
    fn unless_forced(
        &self,
        settings: &Settings,
        found: Vec<(String, String)>,
    ) -> Result<(), Vec<String>> {
        if !settings.force {
            let problems: Vec<String> = found.into_iter().map(|(problem, _)| problem).collect();
            return if problems.is_empty() { Ok(()) } else { Err(problems) };
        }
        for (_, note) in found {
            self.progress.event(Event::Note(&format!("--force: {note}")));
        }
        Ok(())
    }

    /// A master roll begins by letting every dm-master run for leader again: a run cut short
    /// between a leader's eviction and its restart leaves it refusing to lead (the flag lives in
    /// its memory until cancelled or restarted). A master that does not answer is passed over.
    async fn let_every_master_lead(&self) {
        for addr in &self.masters {
            if let Err(err) = self.client.cancel_evict_leader(addr).await {
                tracing::info!("cancelling any eviction of {addr}: {err}");
            }
        }
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

    async fn interrupted_before_roll(&mut self, hosts: &Hosts, concurrency: usize) {
        stage::cleanup(&self.plan, hosts, concurrency, &[], &[]).await;
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
        package: PackageReport::of(&plan.package),
        offline: plan.strategy.is_offline(),
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
        soaks: Vec::new(),
        kept_package: None,
        phases: Vec::new(),
    }
}
