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

/// One subtask as its worker runs it: what the worker reports to the leader with each
/// keepalive, and serves on `/metrics`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SubtaskReport {
    pub task: String,
    pub source: String,
    pub stage: TaskStage,
    /// Why it is paused, empty otherwise.
    #[serde(default)]
    pub error: String,
}

/// The leader's answer to a worker's keepalive: the source bound to it and that source's tasks.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Assignment {
    pub source: Option<String>,
    pub tasks: Vec<String>,
}

/// `dm_worker_task_state` lines of Prometheus text for `worker`'s subtasks.
pub fn render_task_metrics(worker: &str, subtasks: &[SubtaskReport]) -> String {
    let mut text = format!(
        "# HELP {TASK_STATE_METRIC} state of task, 0 - invalidStage, 1 - New, 2 - Running, 3 - \
         Paused, 4 - Stopped, 5 - Finished\n# TYPE {TASK_STATE_METRIC} gauge\n"
    );
    for subtask in subtasks {
        text.push_str(&format!(
            "{TASK_STATE_METRIC}{{source_id=\"{}\",task=\"{}\",worker=\"{worker}\"}} {}\n",
            subtask.source,
            subtask.task,
            subtask.stage.metric_value()
        ));
    }
    text
}
