//! Proving a build under real traffic (`--soak`, after `--canary N` instances or after each):
//! the roll stops and watches for the soak's length. The instances on the package (the
//! canaries) must stay healthy on it and must not restart behind dm-patch's back (their
//! `process_start_time_seconds` stays put), and every migration subtask must keep running and,
//! by the end, have replicated. A subtask paused where the package runs proves it bad, like any
//! other step of the roll (see [`super::judge`]).

use std::time::Duration;

use serde::Serialize;
use tokio::time::{Instant, sleep};

use super::events::Event;
use super::judge::{self, CanaryLook, Judging};
use super::roll::RollContext;
use crate::dm::health::{Readiness, master_readiness, wait_until, worker_readiness};
use crate::dm::tasks::Subtask;
use crate::dm::version::VersionInfo;
use crate::plan::PlannedInstance;
use crate::topology::Role;

/// How often the soak looks.
const LOOK_EVERY: Duration = Duration::from_secs(1);
/// How often the soak tells its progress.
const TELL_EVERY: Duration = Duration::from_secs(5);
/// The id progress events of the soak carry.
const SOAK: &str = "soak";

/// How a soak ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SoakEnd {
    Passed,
    /// Something failed; `against_package` when it proves the package bad (a canary unhealthy
    /// or restarted, a subtask failing where the package runs).
    Failed {
        why: String,
        against_package: bool,
    },
    Interrupted,
}

/// What one soak saw, for the report.
#[derive(Debug, Clone, Serialize)]
pub struct SoakReport {
    /// The instances on the package while it ran.
    pub canaries: Vec<String>,
    /// How long it was to last, and how long it watched.
    pub seconds: f64,
    pub watched_seconds: f64,
    pub looks: u32,
    /// `passed`, `failed` or `interrupted`.
    pub result: &'static str,
    pub failure: Option<String>,
    /// The subtasks seen at the last look.
    pub subtasks: Vec<Subtask>,
}

/// Watches `canaries` (each with the version it must run) and the subtasks for `length`.
pub async fn soak(
    context: &RollContext<'_>,
    canaries: &[(&PlannedInstance, &VersionInfo)],
    length: Duration,
) -> (SoakEnd, SoakReport) {
    let started = Instant::now();
    let mut report = SoakReport {
        canaries: canaries.iter().map(|(planned, _)| planned.id.clone()).collect(),
        seconds: length.as_secs_f64(),
        watched_seconds: 0.0,
        looks: 0,
        result: "passed",
        failure: None,
        subtasks: Vec::new(),
    };
    let end = watch(context, canaries, length, &mut report).await;
    report.watched_seconds = started.elapsed().as_secs_f64();
    report.result = match &end {
        SoakEnd::Passed => "passed",
        SoakEnd::Failed { .. } => "failed",
        SoakEnd::Interrupted => "interrupted",
    };
    if let SoakEnd::Failed { why, .. } = &end {
        report.failure = Some(why.clone());
    }
    (end, report)
}

async fn watch(
    context: &RollContext<'_>,
    canaries: &[(&PlannedInstance, &VersionInfo)],
    length: Duration,
    report: &mut SoakReport,
) -> SoakEnd {
    let deadline = Instant::now() + length;
    let client = context.client;
    let mut starts = Vec::new();
    for (planned, _) in canaries {
        starts.push(client.process_start(&planned.instance.addr()).await);
    }
    let mut unhealthy = vec![0; canaries.len()];
    if let Some(gate) = context.tasks {
        gate.begin_watch();
    }
    let mut told = None;
    loop {
        if context.interrupt.requested() {
            return SoakEnd::Interrupted;
        }
        for (n, (planned, version)) in canaries.iter().enumerate() {
            let started = (starts[n], context.client.process_start(&planned.instance.addr()).await);
            let healthy = healthy_on(context, planned, version).await;
            match judge::canary_look(started, healthy, unhealthy[n]) {
                CanaryLook::Fine => unhealthy[n] = 0,
                CanaryLook::Unsure(looks) => unhealthy[n] = looks,
                CanaryLook::Failed(why) => {
                    let why = format!("{} {why}", planned.id);
                    return SoakEnd::Failed { why, against_package: true };
                }
            }
        }
        if let Some(end) = look_at_subtasks(context, report).await {
            return end;
        }
        report.looks += 1;
        let now = Instant::now();
        if now >= deadline {
            break;
        }
        let left = deadline - now;
        if told.is_none_or(|at: Instant| at.elapsed() >= TELL_EVERY) {
            told = Some(now);
            let step = format!(
                "watching {} instance(s) on the package and every subtask: {}s left",
                canaries.len(),
                left.as_secs_f64().ceil()
            );
            context.progress.event(Event::Step { id: SOAK, step: &step });
        }
        sleep(left.min(LOOK_EVERY)).await;
    }
    finish(context, report).await
}

/// Whether `planned` is healthy on `version`, as DM says (no SSH during a soak).
async fn healthy_on(
    context: &RollContext<'_>,
    planned: &PlannedInstance,
    version: &VersionInfo,
) -> Result<(), String> {
    let (client, addr, name) = (context.client, planned.instance.addr(), &planned.instance.name);
    let readiness = match planned.role {
        Role::Master => master_readiness(client, &addr, name, version).await,
        Role::Worker => worker_readiness(client, &addr, name, context.masters, version).await,
    };
    match readiness {
        Readiness::Ready => Ok(()),
        Readiness::Waiting(why) | Readiness::Failed(why) => Err(why),
    }
}

/// One look at the subtasks: the end of the soak when one failed.
async fn look_at_subtasks(context: &RollContext<'_>, report: &mut SoakReport) -> Option<SoakEnd> {
    let gate = context.tasks?;
    let look = gate.look(context.client, SOAK, Judging::Roll).await;
    report.subtasks = gate.checked(SOAK);
    if let Readiness::Failed(why) = look {
        let failure = gate.take_failure();
        let against_package = failure.as_ref().is_some_and(|f| f.against_package);
        return Some(SoakEnd::Failed { why, against_package });
    }
    None
}

/// At the end of the soak: every subtask must have replicated while it was watched, and run
/// healthy now (a lag may still be catching up, within the wait timeout).
async fn finish(context: &RollContext<'_>, report: &mut SoakReport) -> SoakEnd {
    let Some(gate) = context.tasks else { return SoakEnd::Passed };
    if let Some(stalled) = gate.stalled(context.client, Judging::Roll).await {
        let against_package = stalled.against_package;
        return SoakEnd::Failed { why: stalled.to_string(), against_package };
    }
    let settled =
        wait_until(context.wait_timeout, || gate.look(context.client, SOAK, Judging::Roll)).await;
    report.subtasks = gate.checked(SOAK);
    match (settled, gate.take_failure()) {
        (Ok(()), _) => SoakEnd::Passed,
        (Err(_), Some(failure)) => {
            SoakEnd::Failed { why: failure.to_string(), against_package: failure.against_package }
        }
        (Err(err), None) => SoakEnd::Failed { why: err.to_string(), against_package: false },
    }
}
