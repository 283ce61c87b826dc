//! The subtasks a dm-worker runs, and how each replicates: its checkpoint follows the upstream
//! (see [`Binlog::upstream_at`]) a moment behind, unless the worker's build is broken (the
//! `paused-tasks`, `stalled-tasks` and `late-pause` faults).

use std::time::{Duration, SystemTime};

use dm_sandbox::Fault;
use dm_sandbox::task_api::{Assignment, Binlog, SubtaskReport, TaskStage};

use crate::cli::Settings;

/// How far behind the upstream a healthy subtask's checkpoint is.
const HEALTHY_LAG: Duration = Duration::from_millis(200);
/// How long after a source is moved on purpose its subtasks resume on the new worker (DM
/// resumes them from a goroutine after answering the transfer).
const RESUME_AFTER_TRANSFER: Duration = Duration::from_millis(500);

/// How this worker's build runs the subtasks it takes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Behaviour {
    Replicates,
    /// Paused with an error as soon as it is taken (`paused-tasks`).
    PausesAtOnce,
    /// Running, its checkpoint stuck where it was taken (`stalled-tasks`).
    Stalls,
    /// Replicates for a while, then pauses with an error (`late-pause`).
    PausesAfter(Duration),
}

impl Behaviour {
    /// The fault behind it, as its error messages name it.
    fn fault(self) -> &'static str {
        match self {
            Behaviour::Replicates => "none",
            Behaviour::PausesAtOnce => Fault::PausedTasks.name(),
            Behaviour::Stalls => Fault::StalledTasks.name(),
            Behaviour::PausesAfter(_) => Fault::LatePause.name(),
        }
    }

    pub fn of(settings: &Settings) -> Behaviour {
        if settings.has(Fault::PausedTasks) {
            Behaviour::PausesAtOnce
        } else if settings.has(Fault::StalledTasks) {
            Behaviour::Stalls
        } else if settings.has(Fault::LatePause) {
            Behaviour::PausesAfter(settings.timings.late_pause)
        } else {
            Behaviour::Replicates
        }
    }
}

/// One subtask this worker runs, since it took it.
#[derive(Debug, Clone)]
struct Subtask {
    task: String,
    source: String,
    /// When it runs here: when the worker took the source, or a moment after, when the source
    /// was moved here on purpose (Paused, without an error, until then).
    runs_from: SystemTime,
}

/// The subtasks of the source bound to this worker.
#[derive(Debug)]
pub struct Subtasks {
    behaviour: Behaviour,
    running: Vec<Subtask>,
}

impl Subtasks {
    pub fn new(behaviour: Behaviour) -> Subtasks {
        Subtasks { behaviour, running: Vec::new() }
    }

    /// Takes up the subtasks of `assignment` (dropping those of a source it no longer has),
    /// unless it already runs them. Returns what changed, for the event log.
    pub fn follow(&mut self, assignment: &Assignment, now: SystemTime) -> Option<String> {
        let source = assignment.source.clone().unwrap_or_default();
        let unchanged = self.running.len() == assignment.tasks.len()
            && self
                .running
                .iter()
                .zip(&assignment.tasks)
                .all(|(s, task)| &s.task == task && s.source == source);
        if unchanged {
            return None;
        }
        let transferred = assignment
            .transferred_at_ms
            .map(|ms| SystemTime::UNIX_EPOCH + Duration::from_millis(ms) + RESUME_AFTER_TRANSFER);
        let runs_from = transferred.filter(|resume| *resume > now).unwrap_or(now);
        self.running = assignment
            .tasks
            .iter()
            .map(|task| Subtask { task: task.clone(), source: source.clone(), runs_from })
            .collect();
        Some(if self.running.is_empty() {
            "runs no subtask".to_owned()
        } else {
            let names: Vec<String> =
                self.running.iter().map(|s| format!("{}/{}", s.task, s.source)).collect();
            format!("runs subtasks {} (fault: {})", names.join(", "), self.behaviour.fault())
        })
    }

    /// What each subtask looks like at `now`.
    pub fn reports(&self, now: SystemTime) -> Vec<SubtaskReport> {
        self.running.iter().map(|s| report(s, self.behaviour, now)).collect()
    }
}

fn report(subtask: &Subtask, behaviour: Behaviour, now: SystemTime) -> SubtaskReport {
    let from = subtask.runs_from;
    // Where its checkpoint stopped, and whether it is paused there.
    let stuck = match behaviour {
        // Moved on purpose: paused where the transfer stopped it, until it resumes.
        _ if now < from => Some((from - RESUME_AFTER_TRANSFER, true)),
        Behaviour::Replicates => None,
        Behaviour::PausesAtOnce => Some((from, true)),
        Behaviour::Stalls => Some((from, false)),
        Behaviour::PausesAfter(after) => {
            let pause = from + after;
            (now >= pause).then_some((pause, true))
        }
    };
    let (checkpoint_at, paused) = stuck.unwrap_or((now - HEALTHY_LAG, false));
    // Paused until it resumes after a transfer: by an operation, so without an error.
    let failed = paused && now >= from;
    let lag = now.duration_since(checkpoint_at).unwrap_or_default();
    SubtaskReport {
        task: subtask.task.clone(),
        source: subtask.source.clone(),
        stage: if paused { TaskStage::Paused } else { TaskStage::Running },
        error: if failed {
            format!(
                "[code=36069] sync unit of {} on {} failed to resume ({})",
                subtask.task,
                subtask.source,
                behaviour.fault()
            )
        } else {
            String::new()
        },
        syncer: Binlog::upstream_at(checkpoint_at),
        master: Binlog::upstream_at(now),
        lag_seconds: lag.as_secs(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn taken(behaviour: Behaviour, at: SystemTime) -> Subtasks {
        let mut subtasks = Subtasks::new(behaviour);
        let assignment = Assignment {
            source: Some("s1".into()),
            tasks: vec!["t1".into()],
            transferred_at_ms: None,
        };
        assert!(subtasks.follow(&assignment, at).is_some());
        assert!(subtasks.follow(&assignment, at).is_none(), "already runs them");
        subtasks
    }

    #[test]
    fn a_healthy_subtask_follows_the_upstream() {
        let start = SystemTime::now();
        let subtasks = taken(Behaviour::Replicates, start);
        let (early, late) =
            (subtasks.reports(start), subtasks.reports(start + Duration::from_secs(5)));
        assert_eq!(late[0].stage, TaskStage::Running);
        assert!(late[0].syncer > early[0].syncer, "advances");
        assert!(late[0].syncer < late[0].master, "a moment behind");
        assert_eq!(late[0].lag_seconds, 0);
    }

    #[test]
    fn a_source_moved_on_purpose_resumes_a_moment_later() {
        let start = SystemTime::now();
        let mut subtasks = Subtasks::new(Behaviour::Replicates);
        let since_epoch = start.duration_since(SystemTime::UNIX_EPOCH).unwrap();
        let assignment = Assignment {
            source: Some("s1".into()),
            tasks: vec!["t1".into()],
            transferred_at_ms: Some(since_epoch.as_millis() as u64),
        };
        subtasks.follow(&assignment, start);
        let resuming = subtasks.reports(start + Duration::from_millis(100));
        assert_eq!((resuming[0].stage, resuming[0].error.as_str()), (TaskStage::Paused, ""));
        let resumed = subtasks.reports(start + Duration::from_secs(1));
        assert_eq!(resumed[0].stage, TaskStage::Running);
    }

    #[test]
    fn a_stalled_subtask_runs_but_its_checkpoint_stays() {
        let start = SystemTime::now();
        let subtasks = taken(Behaviour::Stalls, start);
        let later = subtasks.reports(start + Duration::from_secs(5));
        assert_eq!(later[0].stage, TaskStage::Running);
        assert_eq!(later[0].syncer, subtasks.reports(start)[0].syncer);
        assert_eq!(later[0].lag_seconds, 5);
    }

    #[test]
    fn a_late_pause_replicates_then_pauses_with_an_error() {
        let start = SystemTime::now();
        let subtasks = taken(Behaviour::PausesAfter(Duration::from_secs(3)), start);
        let before = subtasks.reports(start + Duration::from_secs(2));
        assert_eq!((before[0].stage, before[0].error.as_str()), (TaskStage::Running, ""));
        let after = subtasks.reports(start + Duration::from_secs(4));
        assert_eq!(after[0].stage, TaskStage::Paused);
        assert!(after[0].error.contains("failed to resume"), "{}", after[0].error);
        assert_eq!(after[0].syncer, Binlog::upstream_at(start + Duration::from_secs(3)));
    }
}
