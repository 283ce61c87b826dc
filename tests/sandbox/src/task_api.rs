//! Migration tasks as DM exposes them (see "Migration tasks, seen from each dm-worker" in the
//! project's reference facts), shared by the simulator and the tests:
//!
//! - creating a task, `POST /api/v1/tasks` (DM's OpenAPI; only the fields that matter here);
//! - query-status of one task, `GET /apis/v1alpha1/status/{task}` (the v1alpha1 gateway:
//!   camelCase, `ProcessError`'s fields as the proto spells them);
//! - each dm-worker's `dm_worker_task_state{task,source_id,worker}` gauge on `/metrics`;
//! - what the simulator's workers and leader tell each other in their keepalive, standing in for
//!   DM's etcd-driven subtask scheduling.

use serde::{Deserialize, Serialize};

/// A subtask's stage (DM's `pb.Stage`), by the number the metric holds and the name the
/// gateway writes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub enum TaskStage {
    New,
    Running,
    Paused,
    Stopped,
    Finished,
}

impl TaskStage {
    pub fn metric_value(self) -> u8 {
        match self {
            TaskStage::New => 1,
            TaskStage::Running => 2,
            TaskStage::Paused => 3,
            TaskStage::Stopped => 4,
            TaskStage::Finished => 5,
        }
    }

    pub fn from_metric_value(value: f64) -> Option<TaskStage> {
        [
            TaskStage::New,
            TaskStage::Running,
            TaskStage::Paused,
            TaskStage::Stopped,
            TaskStage::Finished,
        ]
        .into_iter()
        .find(|stage| f64::from(stage.metric_value()) == value)
    }
}

/// The metric every dm-worker exports per subtask.
pub const TASK_STATE_METRIC: &str = "dm_worker_task_state";

/// `POST /api/v1/tasks` body.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CreateTaskRequest {
    pub task: TaskConfig,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TaskConfig {
    pub name: String,
    pub source_config: TaskSources,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TaskSources {
    pub source_conf: Vec<TaskSource>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TaskSource {
    pub source_name: String,
}

impl CreateTaskRequest {
    /// A task replicating from every one of `sources`.
    pub fn new(name: &str, sources: &[String]) -> CreateTaskRequest {
        let source_conf =
            sources.iter().map(|source| TaskSource { source_name: source.clone() }).collect();
        CreateTaskRequest {
            task: TaskConfig { name: name.to_owned(), source_config: TaskSources { source_conf } },
        }
    }
}

/// `GET /apis/v1alpha1/status/{task}` answer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct QueryStatusResponse {
    pub result: bool,
    pub msg: String,
    pub sources: Vec<SourceTaskStatus>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SourceTaskStatus {
    pub result: bool,
    pub msg: String,
    pub source_status: SourceStatus,
    pub sub_task_status: Vec<SubTaskStatus>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SourceStatus {
    pub source: String,
    pub worker: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SubTaskStatus {
    pub name: String,
    pub stage: TaskStage,
    pub unit: String,
    pub result: Option<ProcessResult>,
    /// The shard DDL lock this subtask waits in; empty when none.
    #[serde(rename = "unresolvedDDLLockID", default)]
    pub unresolved_ddl_lock_id: String,
    /// The sync unit's progress (DM's `SyncStatus`), for a subtask in the Sync unit.
    #[serde(default)]
    pub sync: Option<SyncStatus>,
}

/// DM's `pb.SyncStatus`, as the gateway writes it (int64 as strings).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SyncStatus {
    /// The upstream's position, `(mysql-bin.000001, 4586)`.
    pub master_binlog: String,
    /// The subtask's checkpoint, in the same form.
    pub syncer_binlog: String,
    pub seconds_behind_master: String,
    pub synced: bool,
    pub blocking_ddls: Vec<String>,
    pub unresolved_groups: Vec<ShardingGroup>,
}

/// DM's `pb.ShardingGroup`: a shard DDL waiting until every upstream table has run it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ShardingGroup {
    pub target: String,
    #[serde(rename = "DDLs")]
    pub ddls: Vec<String>,
    pub synced: Vec<String>,
    pub unsynced: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ProcessResult {
    pub is_canceled: bool,
    pub errors: Vec<ProcessError>,
}

/// DM's `pb.ProcessError`, whose proto field names start with a capital.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProcessError {
    #[serde(rename = "ErrCode")]
    pub err_code: i32,
    #[serde(rename = "Message")]
    pub message: String,
    #[serde(rename = "RawCause")]
    pub raw_cause: String,
}

/// One subtask as its worker runs it: what the worker reports to the leader when asked, and
/// serves on `/metrics`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SubtaskReport {
    pub task: String,
    pub source: String,
    pub stage: TaskStage,
    /// Why it is paused, empty otherwise.
    #[serde(default)]
    pub error: String,
    /// Its checkpoint: how far it has replicated.
    #[serde(default)]
    pub syncer: Binlog,
    /// The upstream's position now.
    #[serde(default)]
    pub master: Binlog,
    /// How far behind the upstream it is, in seconds.
    #[serde(default)]
    pub lag_seconds: u64,
}

/// A binlog position: the file's index (`mysql-bin.000042` is 42) and the position in it.
/// Ordered as DM compares locations: file first.
#[derive(
    Debug, Clone, Copy, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize,
)]
pub struct Binlog {
    pub file: u64,
    pub pos: u64,
}

impl Binlog {
    /// How fast the simulated upstream writes, and how often its binlog rotates.
    const BYTES_PER_MS: u64 = 1_000;
    const FILE_MS: u64 = 60_000;
    /// Simulated time starts here (2026-01-01), so that file indexes stay short.
    const EPOCH_MS: u64 = 1_767_225_600_000;

    /// Where every simulated upstream MySQL is at `at`: writes arrive at a steady rate and the
    /// binlog rotates every minute. A function of the clock, so that every process agrees.
    pub fn upstream_at(at: std::time::SystemTime) -> Binlog {
        let since_epoch = at.duration_since(std::time::UNIX_EPOCH).unwrap_or_default();
        let ms = (since_epoch.as_millis() as u64).saturating_sub(Binlog::EPOCH_MS);
        Binlog {
            file: 1 + ms / Binlog::FILE_MS,
            pos: 4 + (ms % Binlog::FILE_MS) * Binlog::BYTES_PER_MS,
        }
    }

    /// DM's text form, `(mysql-bin.000042, 4586)`.
    pub fn location(&self) -> String {
        format!("(mysql-bin.{:06}, {})", self.file, self.pos)
    }
}

/// The leader's answer to a worker's keepalive: the source bound to it and that source's tasks.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Assignment {
    pub source: Option<String>,
    pub tasks: Vec<String>,
    /// When the source was moved here on purpose (ms since the epoch): its subtasks resume a
    /// moment later, Paused without an error until then.
    #[serde(default)]
    pub transferred_at_ms: Option<u64>,
}

/// Each subtask's checkpoint and the upstream's position (`node="syncer"` and `node="master"`),
/// and its lag, as DM's syncer exports them (tiflow `dm/syncer/metrics`).
pub const BINLOG_FILE_METRIC: &str = "dm_syncer_binlog_file";
pub const BINLOG_POS_METRIC: &str = "dm_syncer_binlog_pos";
pub const LAG_METRIC: &str = "dm_syncer_replication_lag_gauge";

/// The Prometheus text of `worker`'s `/metrics` for its subtasks: `dm_worker_task_state`, and
/// the syncer's binlog positions and lag.
pub fn render_task_metrics(worker: &str, subtasks: &[SubtaskReport]) -> String {
    let mut text = format!(
        "# HELP {TASK_STATE_METRIC} state of task, 0 - invalidStage, 1 - New, 2 - Running, 3 - \
         Paused, 4 - Stopped, 5 - Finished\n# TYPE {TASK_STATE_METRIC} gauge\n"
    );
    for s in subtasks {
        let (source, task) = (&s.source, &s.task);
        text.push_str(&format!(
            "{TASK_STATE_METRIC}{{source_id=\"{source}\",task=\"{task}\",worker=\"{worker}\"}} {}\n",
            s.stage.metric_value()
        ));
        for (node, at) in [("master", s.master), ("syncer", s.syncer)] {
            let labels = format!("node=\"{node}\",source_id=\"{source}\",task=\"{task}\"");
            text.push_str(&format!("{BINLOG_FILE_METRIC}{{{labels}}} {}\n", at.file));
            text.push_str(&format!("{BINLOG_POS_METRIC}{{{labels}}} {}\n", at.pos));
        }
        text.push_str(&format!(
            "{LAG_METRIC}{{source_id=\"{source}\",task=\"{task}\",worker=\"{worker}\"}} {}\n",
            s.lag_seconds
        ));
    }
    text
}
