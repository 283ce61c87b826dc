//! The only place with side effects on hosts. It takes a checked plan, runs it in phases —
//! connect, preflight, stage, roll, clean up — and returns a `Report`; it never prints, it
//! emits events.

mod audit;
pub mod events;
mod hosts;
mod preflight;
mod remote;
pub mod report;
mod roll;
pub mod signals;
mod stage;

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Instant, SystemTime};

use self::events::{Event, Progress};
use self::hosts::Hosts;
use self::preflight::InstanceFacts;
use self::report::{InstanceReport, Outcome, PackageReport, Report, RunResult};
use self::roll::{Failure, Job, RollContext};
use self::signals::Interrupt;
use self::stage::Staged;
use crate::commands::patch::PatchConfig;
use crate::dm::client::DmClient;
use crate::plan::{Plan, PlannedInstance};
use crate::topology::store::{self, ClusterLock};
use crate::topology::{Cluster, Role};

/// Runs a confirmed plan to its end. Problems with the cluster end up in the report (and its
/// result); an `Err` means dm-patch itself could not go on (e.g. meta.yaml could not be saved).
pub async fn execute(
    mut config: PatchConfig,
    lock: &ClusterLock,
    progress: Arc<dyn Progress>,
    interrupt: &Interrupt,
) -> anyhow::Result<Report> {
    let started = Instant::now();
    let started_at = SystemTime::now();
    let plan = Arc::new(config.plan.clone());
    let mut run = Run {
        report: new_report(&plan, started_at),
        plan: plan.clone(),
        progress,
        client: DmClient::new(config.ssh_timeout, config.cluster.tls_enabled()),
        masters: config
            .cluster
            .instances
            .iter()
            .filter(|i| i.role == Role::Master)
            .map(|i| i.addr())
            .collect(),
    };
    let audit = audit::Audit::start(&config.store, &config.command_line);

    let result = run.phases(&mut config, lock, interrupt).await;
    let report = &mut run.report;
    report.seconds = started.elapsed().as_secs_f64();
    report.finished_at = humantime::format_rfc3339_seconds(SystemTime::now()).to_string();
    if let Err(err) = &result {
        report.result = RunResult::Failed;
        report.message = Some(format!("{err:#}"));
    }
    audit.finish(report);
    result.map(|()| run.report)
}

struct Run {
    plan: Arc<Plan>,
    report: Report,
    progress: Arc<dyn Progress>,
    client: DmClient,
    masters: Vec<String>,
}

impl Run {
    async fn phases(
        &mut self,
        config: &mut PatchConfig,
        lock: &ClusterLock,
        interrupt: &Interrupt,
    ) -> anyhow::Result<()> {
        let host_count = self.plan.hosts.len();
        self.phase(&format!("Connecting to {host_count} host(s)"));
        let (hosts, problems) = Hosts::connect(config).await;
        if !problems.is_empty() {
            return self.stop_before_roll(&hosts, problems, false).await;
        }

        self.phase("Checking instances");
        let (facts, problems) =
            preflight::check(&self.plan, &hosts, &self.client, &self.masters).await;
        if !problems.is_empty() {
            return self.stop_before_roll(&hosts, problems, false).await;
        }
        for (id, fact) in &facts {
            row(&mut self.report, id).old_version = Some(fact.installed_version.clone());
        }
        if interrupt.requested() {
            return self.interrupted_before_roll(&hosts).await;
        }

        self.phase(&format!("Uploading the package to {host_count} host(s)"));
        let (staged, problems) =
            stage::stage_all(&self.plan, &hosts, &self.progress, config.concurrency).await;
        if !problems.is_empty() {
            return self.stop_before_roll(&hosts, problems, true).await;
        }
        self.report.package.version = staged.values().next().map(|s| s.version.clone());
        if interrupt.requested() {
            return self.interrupted_before_roll(&hosts).await;
        }

        let keep = self
            .roll(config, lock, &hosts, &facts, &staged, interrupt)
            .await?;
        stage::cleanup(&self.plan, &hosts, &keep).await;
        hosts.close().await;

        if self.report.result == RunResult::Success && self.plan.overwrite {
            let kept = store::keep_package(&config.cluster, &self.plan.package)?;
            self.report.kept_package = Some(kept.display().to_string());
        }
        Ok(())
    }

    /// The roll itself: one instance at a time, in plan order. Returns the instances whose
    /// staging dir must be kept for the operator.
    async fn roll(
        &mut self,
        config: &mut PatchConfig,
        lock: &ClusterLock,
        hosts: &Hosts,
        facts: &HashMap<String, InstanceFacts>,
        staged: &HashMap<String, Staged>,
        interrupt: &Interrupt,
    ) -> anyhow::Result<Vec<String>> {
        let plan = self.plan.clone();
        let mut keep = Vec::new();
        self.phase(if plan.offline {
            "Swapping binaries (offline)"
        } else {
            "Rolling, one instance at a time"
        });
        let context = RollContext {
            client: &self.client,
            masters: &self.masters,
            wait_timeout: config.wait_timeout,
            offline: plan.offline,
            progress: self.progress.as_ref(),
        };
        let mut remaining: Vec<&PlannedInstance> = plan.instances.iter().collect();
        let mut done = Vec::new();
        while !remaining.is_empty() {
            if interrupt.requested() {
                self.report.result = RunResult::Interrupted;
                self.report.message = Some(
                    "interrupted: instances not reached are untouched; run the same command again to finish"
                        .to_owned(),
                );
                break;
            }
            let step = take_next(&mut remaining, &context).await;
            done.push(step.id.clone());
            let (fact, new) = (&facts[&step.id], &staged[&step.id]);
            let started = Instant::now();
            let job = Job {
                step,
                remote: hosts.get(&step.ssh_host, step.ssh_port),
                facts: fact,
                staged: new,
            };
            let already = fact.installed_sha256.as_deref() == Some(new.sha256.as_str());
            let result = if already {
                Ok(Outcome::Skipped)
            } else {
                roll::patch_instance(&context, &job)
                    .await
                    .map(|()| Outcome::Patched)
            };
            let (outcome, detail) = match result {
                Ok(outcome) => {
                    // Saved at once: a crash or Ctrl-C later never loses a finished instance.
                    mark_patched(&mut config.cluster, step.role, step.instance.index, lock)?;
                    (outcome, None)
                }
                Err(Failure::Untouched(reason)) => (Outcome::FailedUnchanged, Some(reason)),
                Err(Failure::RolledBack(reason)) => (Outcome::RolledBack, Some(reason)),
                Err(Failure::NeedsAttention(reason)) => {
                    keep.push(step.id.clone());
                    (Outcome::NeedsAttention, Some(reason))
                }
            };
            let record = row(&mut self.report, &step.id);
            record.outcome = outcome;
            record.seconds = started.elapsed().as_secs_f64();
            record.new_version = match outcome {
                Outcome::Patched | Outcome::Skipped => Some(new.version.clone()),
                _ => None,
            };
            record.detail = detail.clone();
            context.progress.event(Event::InstanceFinished {
                id: &step.id,
                outcome,
                detail: detail.as_deref(),
            });
            if let Some(reason) = detail {
                self.report.result = RunResult::Failed;
                self.report.message = Some(format!(
                    "{}: {reason}. The roll stopped there; instances after it are untouched. \
                     Fix the cause, then run the same command again: finished instances are skipped.",
                    step.id
                ));
                break;
            }
        }
        // The report lists instances in the order they were visited, those not reached last.
        let position = |id: &str| done.iter().position(|d| d == id).unwrap_or(usize::MAX);
        self.report.instances.sort_by_key(|row| position(&row.id));
        Ok(keep)
    }

    /// Ends the run before any service was touched: report the problems, remove staged files.
    async fn stop_before_roll(
        &mut self,
        hosts: &Hosts,
        problems: Vec<String>,
        staged: bool,
    ) -> anyhow::Result<()> {
        if staged {
            stage::cleanup(&self.plan, hosts, &[]).await;
        }
        self.report.result = RunResult::PreflightFailed;
        self.report.message = Some(format!(
            "{} problem(s) found before touching any service; nothing was changed",
            problems.len()
        ));
        self.report.problems = problems;
        Ok(())
    }

    async fn interrupted_before_roll(&mut self, hosts: &Hosts) -> anyhow::Result<()> {
        stage::cleanup(&self.plan, hosts, &[]).await;
        self.report.result = RunResult::Interrupted;
        self.report.message = Some("interrupted before any service was touched".to_owned());
        Ok(())
    }

    fn phase(&self, name: &str) {
        self.progress.event(Event::Phase(name));
    }
}

/// The next instance to patch. The plan's order stands, except that a dm-master which leads
/// *now* goes after every other dm-master still to do: leadership can move during a roll, and
/// the leader must be the last master restarted.
async fn take_next<'p>(
    remaining: &mut Vec<&'p PlannedInstance>,
    context: &RollContext<'_>,
) -> &'p PlannedInstance {
    let masters_left = remaining.iter().filter(|i| i.role == Role::Master).count();
    if !context.offline
        && masters_left > 1
        && let Ok(members) = context.client.members_from_any(context.masters).await
    {
        let leader = members.leader().map(|l| l.name.clone());
        let first_follower = remaining
            .iter()
            .position(|i| Some(&i.name) != leader.as_ref());
        if let Some(index) = first_follower {
            return remaining.remove(index);
        }
    }
    remaining.remove(0)
}

/// The report row of instance `id`.
fn row<'r>(report: &'r mut Report, id: &str) -> &'r mut InstanceReport {
    report
        .instances
        .iter_mut()
        .find(|i| i.id == id)
        .expect("every planned instance has a report row")
}

fn mark_patched(
    cluster: &mut Cluster,
    role: Role,
    index: usize,
    lock: &ClusterLock,
) -> anyhow::Result<()> {
    cluster.mark_patched(role, index);
    store::save(cluster, lock)?;
    Ok(())
}

fn new_report(plan: &Plan, started_at: SystemTime) -> Report {
    Report {
        cluster: plan.cluster.clone(),
        component: plan.component,
        package: PackageReport {
            path: plan.package.path.display().to_string(),
            sha256: plan.package.sha256.clone(),
            size: plan.package.size,
            version: None,
        },
        offline: plan.offline,
        overwrite: plan.overwrite,
        started_at: humantime::format_rfc3339_seconds(started_at).to_string(),
        finished_at: String::new(),
        seconds: 0.0,
        result: RunResult::Success,
        message: None,
        problems: Vec::new(),
        instances: plan
            .instances
            .iter()
            .map(|step| InstanceReport {
                id: step.id.clone(),
                role: step.role,
                host: step.host.clone(),
                old_version: None,
                new_version: None,
                outcome: Outcome::NotReached,
                seconds: 0.0,
                detail: None,
            })
            .collect(),
        kept_package: None,
    }
}
