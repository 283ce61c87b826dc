//! What a run did: the facts the summary table, the JSON report and the audit record show.

use serde::Serialize;

use super::judge::SourceMove;
use super::soak::SoakReport;
use crate::dm::tasks::Subtask;
use crate::dm::version::VersionInfo;
use crate::plan::Action;
use crate::topology::Role;

#[derive(Debug, Clone, Serialize)]
pub struct Report {
    pub action: Action,
    pub cluster: String,
    pub component: Role,
    pub package: PackageReport,
    pub offline: bool,
    pub overwrite: bool,
    pub started_at: String,
    pub finished_at: String,
    pub seconds: f64,
    pub result: RunResult,
    /// What happened and what to do, when the run did not simply succeed.
    pub message: Option<String>,
    /// Everything preflight found wrong (the run stops before touching any service).
    pub problems: Vec<String>,
    /// Subtasks already paused before the roll, patched around with `--force`.
    pub paused_before: Vec<Subtask>,
    pub instances: Vec<InstanceReport>,
    /// What each soak (`--soak`) watched, and how it ended.
    pub soaks: Vec<SoakReport>,
    /// With `--overwrite`: where the package was kept in the store.
    pub kept_package: Option<String>,
    /// How long each phase of the run took, in order: where the time goes.
    pub phases: Vec<PhaseTime>,
}

impl Report {
    /// A failed run that left something for a person: it needs attention (exit 3).
    pub fn settle_failure(&mut self) {
        let left_for_a_person = self.instances.iter().any(|i| i.outcome == Outcome::NeedsAttention);
        if self.result == RunResult::Failed && left_for_a_person {
            self.result = RunResult::NeedsAttention;
        }
    }

    /// The instances that run the package after the run (patched by it, or found on it).
    pub fn on_package(&self) -> Vec<String> {
        let on_package =
            |i: &&InstanceReport| matches!(i.outcome, Outcome::Patched | Outcome::Skipped);
        self.instances.iter().filter(on_package).map(|i| i.id.clone()).collect()
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct PhaseTime {
    pub name: String,
    pub seconds: f64,
}

#[derive(Debug, Clone, Serialize)]
pub struct PackageReport {
    pub path: String,
    pub sha256: String,
    /// `sha256` was checked against the one the package's provider gave (`--expect-sha256`).
    pub sha256_checked: bool,
    pub size: u64,
    /// What the package's binary says of itself (`-V`), once staged.
    pub version: Option<VersionInfo>,
    /// The sha256 of the package's `<comp>/<comp>`.
    pub binary_sha256: String,
}

impl PackageReport {
    /// What the local check found of `package`; its version is learned once it is staged.
    pub fn of(package: &crate::package::Package) -> PackageReport {
        PackageReport {
            path: package.path.display().to_string(),
            sha256: package.sha256.clone(),
            sha256_checked: package.sha256_checked,
            size: package.size,
            version: None,
            binary_sha256: package.entry_sha256.clone(),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum RunResult {
    /// Every selected instance runs the package (patched now or before).
    Success,
    /// Preflight or staging found problems; no service was touched.
    PreflightFailed,
    /// What the package's binary says of itself on the hosts rules it out (another release
    /// line); no service was touched.
    PackageRefused,
    /// An instance failed; the roll stopped there, and every instance is as it was before the
    /// run (or patched and healthy).
    Failed,
    /// Failed, and something needs a person: an instance that could not be put back, or
    /// meta.yaml's marks that could not be recorded.
    NeedsAttention,
    /// Ctrl-C or SIGTERM; the instance in flight was put back as it was first.
    Interrupted,
}

impl RunResult {
    /// Its word in JSON and in audit records: `success`, `preflight-failed`...
    pub fn word(self) -> &'static str {
        match self {
            RunResult::Success => "success",
            RunResult::PreflightFailed => "preflight-failed",
            RunResult::PackageRefused => "package-refused",
            RunResult::Failed => "failed",
            RunResult::NeedsAttention => "needs-attention",
            RunResult::Interrupted => "interrupted",
        }
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct InstanceReport {
    pub id: String,
    pub role: Role,
    pub host: String,
    pub old_version: Option<VersionInfo>,
    /// The sha256 of the binary it ran before, when preflight hashed it (its size was the
    /// package binary's).
    pub old_binary_sha256: Option<String>,
    pub new_version: Option<VersionInfo>,
    pub outcome: Outcome,
    pub seconds: f64,
    pub detail: Option<String>,
    /// The migration tasks' subtasks seen running again after its restart.
    pub tasks: Vec<Subtask>,
    /// The sources that changed workers during its turn (its own, moved to a free worker when
    /// it stopped; or one that a put-back moved).
    pub moved: Vec<SourceMove>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Outcome {
    /// Running the package's binary, healthy (or swapped, with `--offline`).
    Patched,
    /// Already had the package's binary (same sha256); nothing to do.
    Skipped,
    /// Failed before its service was touched (e.g. the leader would not move): as it was.
    FailedUnchanged,
    /// Failed, and is back on the binary it ran before, running and healthy.
    RolledBack,
    /// Failed, and could not be brought back: needs the operator (the detail says how).
    NeedsAttention,
    /// The roll stopped before reaching it: untouched.
    NotReached,
}

impl Outcome {
    /// What a patched instance reads as after `--offline`: its new binary runs from its next
    /// restart (the summary and the audit record say the same).
    pub const SWAPPED_LABEL: &'static str = "swapped (takes effect at restart)";

    /// Every outcome.
    pub const ALL: [Outcome; 6] = [
        Outcome::Patched,
        Outcome::Skipped,
        Outcome::FailedUnchanged,
        Outcome::RolledBack,
        Outcome::NeedsAttention,
        Outcome::NotReached,
    ];

    pub fn label(self) -> &'static str {
        match self {
            Outcome::Patched => "patched",
            Outcome::Skipped => "skipped (already on this package)",
            Outcome::FailedUnchanged => "failed, left as it was",
            Outcome::RolledBack => "failed, rolled back",
            Outcome::NeedsAttention => "FAILED, needs attention",
            Outcome::NotReached => "not reached",
        }
    }
}
