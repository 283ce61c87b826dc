//! The roll's rules about migration, as decisions over observed values (no host, no network):
//! which worker to restart next so that each source moves once, onto a worker that already runs
//! the package; and what a failing subtask says about the package, judged by the worker that
//! runs it now, since DM moves a stopped worker's source to a free worker at once
//! (dm-master-api.md, "Migration tasks" and "Workers and sources").

use std::collections::{BTreeMap, BTreeSet};

use crate::dm::client::WorkerMember;
use crate::dm::tasks::{Binlog, Subtask, TaskStage};

/// How many seconds more than before the roll a subtask may lag once a step is over: a restart
/// costs a subtask a few seconds, which it must make up within the wait.
pub const LAG_MARGIN_SECONDS: u64 = 10;

/// Each (task, source) that must run, with its lag before the roll when its worker said.
pub type Expected = BTreeMap<(String, String), Option<u64>>;

/// The first checkpoint seen of each (task, source, worker) since the step began: a subtask
/// replicates when its checkpoint moves past it.
pub type FirstSeen = BTreeMap<(String, String, String), Binlog>;

/// Records in `first_seen` the checkpoint of each subtask of `now` not seen yet.
pub fn note_first_seen(first_seen: &mut FirstSeen, now: &[Subtask]) {
    for subtask in now {
        if let Some(progress) = subtask.progress {
            let key = (subtask.task.clone(), subtask.source.clone(), subtask.worker.clone());
            first_seen.entry(key).or_insert(progress.checkpoint);
        }
    }
}

/// Whether a running subtask replicates: its checkpoint moved past the first one seen since
/// the step began (or it has caught up with its upstream, which may simply be idle), and it
/// lags no more than before the roll plus [`LAG_MARGIN_SECONDS`]. Says why not.
fn replicating(
    subtask: &Subtask,
    first_seen: &FirstSeen,
    lag_before: Option<u64>,
) -> Result<(), String> {
    let Some(progress) = subtask.progress else { return Ok(()) };
    let key = (subtask.task.clone(), subtask.source.clone(), subtask.worker.clone());
    let moved = first_seen.get(&key).is_some_and(|first| progress.checkpoint > *first);
    if !moved && progress.checkpoint < progress.upstream {
        return Err(format!(
            "{} is Running on worker {} but its checkpoint {} has not moved while the upstream \
             is at {} ({}s behind)",
            subtask.name(),
            subtask.worker,
            progress.checkpoint,
            progress.upstream,
            progress.lag_seconds
        ));
    }
    match lag_before {
        Some(before) if progress.lag_seconds > before + LAG_MARGIN_SECONDS => Err(format!(
            "{} is {}s behind its upstream on worker {}, more than before the roll ({before}s) \
             plus {LAG_MARGIN_SECONDS}s",
            subtask.name(),
            progress.lag_seconds,
            subtask.worker
        )),
        _ => Ok(()),
    }
}

/// Which of `remaining` (worker member names, in plan order) to restart next, given the workers
/// as the members list shows them now: a free or offline one first, then the others in plan
/// order.
///
/// A free worker runs no subtask, so restarting it moves nothing; once it runs the package, the
/// next bound worker to stop hands its source to it (DM binds a waiting source to a free worker
/// at once), and that worker comes back free on the package for the one after. So each source
/// moves once, onto the package, and its subtasks are proven there at once. An offline worker is
/// brought back before any other is stopped, so that two are never down together.
pub fn next_worker(remaining: &[&str], workers: &[WorkerMember]) -> usize {
    let runs_nothing = |name: &&str| workers.iter().any(|w| w.name == *name && w.runs_no_source());
    remaining.iter().position(runs_nothing).unwrap_or(0)
}

/// A source that changed workers across a step, as the members list showed it before and after.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct SourceMove {
    pub source: String,
    /// The worker it was bound to before; empty when it was unbound.
    pub from: String,
    /// The worker it is bound to now; empty when it is unbound.
    pub to: String,
}

/// The sources whose worker differs between `before` and `after`.
pub fn source_moves(before: &[WorkerMember], after: &[WorkerMember]) -> Vec<SourceMove> {
    let bound = |workers: &[WorkerMember]| -> Vec<(String, String)> {
        let mut pairs: Vec<(String, String)> = workers
            .iter()
            .filter(|w| !w.source.is_empty())
            .map(|w| (w.source.clone(), w.name.clone()))
            .collect();
        pairs.sort();
        pairs
    };
    let (before, after) = (bound(before), bound(after));
    let worker_of = |pairs: &[(String, String)], source: &str| {
        pairs.iter().find(|(s, _)| s == source).map(|(_, w)| w.clone()).unwrap_or_default()
    };
    let sources: BTreeSet<&String> = before.iter().chain(&after).map(|(s, _)| s).collect();
    sources
        .into_iter()
        .filter_map(|source| {
            let (from, to) = (worker_of(&before, source), worker_of(&after, source));
            (from != to).then(|| SourceMove { source: source.clone(), from, to })
        })
        .collect()
}

/// Whom a failing subtask is blamed on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Suspects<'a> {
    /// A worker roll: the workers that run the package now (member names). A subtask runs
    /// the build of the worker it runs on.
    Workers(&'a BTreeSet<String>),
    /// A master roll: the masters schedule every subtask, so any failing one counts.
    Everyone,
}

impl Suspects<'_> {
    fn include(self, worker: &str) -> bool {
        match self {
            Suspects::Workers(names) => names.contains(worker),
            Suspects::Everyone => true,
        }
    }
}

/// What the roll is waiting for when it looks at the subtasks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Judging {
    /// A step of the roll: a failure on a suspect is evidence against the package.
    Roll,
    /// Putting the package back: failures on suspects are expected (those workers are put back
    /// in turn), every other subtask must run.
    PutBack,
}

/// What one look at the subtasks says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// Every subtask that ran before runs again (or has finished).
    Healthy,
    /// Not yet; the reason is what the operator reads if the deadline passes.
    Waiting(String),
    /// A subtask failed on a worker that runs the package: the package is proven bad.
    AgainstPackage(Subtask),
    /// A subtask failed on a worker that does not run the package: it is not blamed for it.
    Elsewhere(Subtask),
}

/// Judges the subtasks seen `now` against the (task, source) pairs `expected` to run: each
/// must run (or have finished) and replicate (see [`replicating`]).
pub fn judge(
    expected: &Expected,
    first_seen: &FirstSeen,
    now: &[Subtask],
    suspects: Suspects<'_>,
    judging: Judging,
) -> Verdict {
    let mut waiting = Vec::new();
    let mut elsewhere = None;
    for ((task, source), lag_before) in expected {
        let mine: Vec<&Subtask> =
            now.iter().filter(|s| &s.task == task && &s.source == source).collect();
        let on_suspect = mine.iter().any(|s| suspects.include(&s.worker));
        if judging == Judging::PutBack && on_suspect {
            // Its worker runs the package and is put back in turn.
            continue;
        }
        if let Some(healthy) = mine.iter().find(|s| s.stage.is_healthy()) {
            if let Err(why) = replicating(healthy, first_seen, *lag_before) {
                waiting.push(why);
            }
            continue;
        }
        if let Some(paused) = mine.iter().find(|s| s.stage == TaskStage::Paused) {
            if suspects.include(&paused.worker) {
                return Verdict::AgainstPackage((*paused).clone());
            }
            elsewhere.get_or_insert_with(|| (*paused).clone());
            continue;
        }
        waiting.push(match mine.first() {
            Some(s) => format!("{} is {} on worker {}", s.name(), s.stage.word(), s.worker),
            None => format!("task '{task}' on source '{source}' runs on no worker"),
        });
    }
    match elsewhere {
        Some(subtask) => Verdict::Elsewhere(subtask),
        None if waiting.is_empty() => Verdict::Healthy,
        None => {
            Verdict::Waiting(format!("migration tasks not running again: {}", waiting.join("; ")))
        }
    }
}

/// At the end of a wait: the first subtask that runs but does not replicate (stalled, or
/// lagging), with why. Such a subtask is as bad as a paused one.
pub fn stalled(
    expected: &Expected,
    first_seen: &FirstSeen,
    now: &[Subtask],
) -> Option<(Subtask, String)> {
    expected.iter().find_map(|((task, source), lag_before)| {
        let running = now
            .iter()
            .find(|s| &s.task == task && &s.source == source && s.stage == TaskStage::Running)?;
        let why = replicating(running, first_seen, *lag_before).err()?;
        Some((running.clone(), why))
    })
}

/// Looks in a row an instance on the package may be unhealthy during a soak before it counts as
/// failed: one look can miss a busy instance.
pub const UNHEALTHY_LOOKS: u32 = 2;

/// What one look during a soak says of an instance on the package (a canary), given when its
/// process started at the soak's start and now (`process_start_time_seconds`), whether it is
/// healthy on the package (`Err` says why not), and how many looks in a row it was unhealthy
/// before this one.
#[derive(Debug, Clone, PartialEq)]
pub enum CanaryLook {
    Fine,
    /// Unhealthy at this many looks in a row: not yet a failure.
    Unsure(u32),
    /// It failed the soak: restarted behind dm-patch's back, or unhealthy too long.
    Failed(String),
}

pub fn canary_look(
    started: (Option<f64>, Option<f64>),
    healthy: Result<(), String>,
    unhealthy_before: u32,
) -> CanaryLook {
    if let (Some(before), Some(now)) = started
        && now != before
    {
        return CanaryLook::Failed("restarted during the soak, behind dm-patch's back".to_owned());
    }
    match healthy {
        Ok(()) => CanaryLook::Fine,
        Err(_) if unhealthy_before + 1 < UNHEALTHY_LOOKS => {
            CanaryLook::Unsure(unhealthy_before + 1)
        }
        Err(why) => CanaryLook::Failed(format!("not healthy during the soak: {why}")),
    }
}

/// Whom a subtask failing on `worker` blames: the package when `worker` runs it.
pub fn blames_package(worker: &str, suspects: Suspects<'_>) -> bool {
    suspects.include(worker)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::dm::tasks::Progress;

    fn worker(name: &str, stage: &str, source: &str) -> WorkerMember {
        WorkerMember {
            name: name.into(),
            addr: String::new(),
            stage: stage.into(),
            source: source.into(),
        }
    }

    fn subtask(task: &str, source: &str, worker: &str, stage: TaskStage) -> Subtask {
        let (task, source, worker) = (task.into(), source.into(), worker.into());
        Subtask { task, source, worker, stage, progress: None }
    }

    /// A running subtask at `checkpoint`, its upstream at `upstream`, `lag` seconds behind.
    fn replicating(worker: &str, checkpoint: u64, upstream: u64, lag: u64) -> Subtask {
        let at = |pos| Binlog { file: 7, pos };
        let progress =
            Progress { checkpoint: at(checkpoint), upstream: at(upstream), lag_seconds: lag };
        Subtask { progress: Some(progress), ..subtask("t1", "s1", worker, TaskStage::Running) }
    }

    fn expected() -> Expected {
        [("t1", "s1"), ("t1", "s2")]
            .iter()
            .map(|(t, s)| ((t.to_string(), s.to_string()), None))
            .collect()
    }

    fn just(subtask: &Subtask) -> Expected {
        [((subtask.task.clone(), subtask.source.clone()), Some(1))].into()
    }

    #[test]
    fn free_and_offline_workers_go_first_then_plan_order() {
        let seen =
            [worker("w1", "bound", "s1"), worker("w2", "bound", "s2"), worker("w3", "free", "")];
        assert_eq!(next_worker(&["w1", "w2", "w3"], &seen), 2);
        assert_eq!(next_worker(&["w1", "w2"], &seen), 0, "no free one: plan order");
        let offline = [worker("w1", "bound", "s1"), worker("w2", "offline", "")];
        assert_eq!(next_worker(&["w1", "w2"], &offline), 1);
        assert_eq!(next_worker(&["w9"], &[]), 0, "unknown to DM: plan order");
    }

    /// DM's scheduler, as far as a restart goes: a stopped worker's source is bound to a free
    /// worker at once, or waits for its own worker when none is free.
    fn restart(workers: &mut [WorkerMember], name: &str) {
        let at = workers.iter().position(|w| w.name == name).unwrap();
        let source = std::mem::take(&mut workers[at].source);
        workers[at].stage = "offline".into();
        let free = workers.iter_mut().find(|w| w.stage == "free");
        let waiting = match free {
            Some(free) if !source.is_empty() => {
                (free.stage, free.source) = ("bound".into(), source);
                String::new()
            }
            _ => source,
        };
        let stage = if waiting.is_empty() { "free" } else { "bound" };
        (workers[at].stage, workers[at].source) = (stage.into(), waiting);
    }

    /// Rolling a spare-worker layout with the rule: each source moves once, onto a worker
    /// already on the package, whatever the meta.yaml order.
    #[test]
    fn the_rule_moves_each_source_once_onto_the_package() {
        for layout in [["bound", "bound", "free"], ["free", "bound", "bound"]] {
            let mut seen: Vec<WorkerMember> = ["w1", "w2", "w3"]
                .iter()
                .zip(layout)
                .enumerate()
                .map(|(i, (name, stage))| {
                    let source = if stage == "bound" { format!("s{i}") } else { String::new() };
                    worker(name, stage, &source)
                })
                .collect();
            let mut remaining = vec!["w1", "w2", "w3"];
            let mut patched: Vec<&str> = Vec::new();
            let mut moved = Vec::new();
            while !remaining.is_empty() {
                let next = remaining.remove(next_worker(&remaining, &seen));
                let before = seen.clone();
                restart(&mut seen, next);
                patched.push(next);
                for change in source_moves(&before, &seen) {
                    assert!(patched.contains(&change.to.as_str()), "{change:?}: onto the package");
                    moved.push(change.source);
                }
            }
            moved.sort();
            let mut once = moved.clone();
            once.dedup();
            assert_eq!((moved.len(), once.len()), (2, 2), "{layout:?}: each source moved once");
        }
    }

    #[test]
    fn without_a_free_worker_a_source_waits_for_its_own() {
        let mut seen = vec![worker("w1", "bound", "s1"), worker("w2", "bound", "s2")];
        let before = seen.clone();
        restart(&mut seen, "w1");
        assert!(source_moves(&before, &seen).is_empty(), "{seen:?}");
    }

    #[test]
    fn source_moves_name_where_each_source_went() {
        let before = [worker("w1", "bound", "s1"), worker("w2", "free", "")];
        let after = [worker("w1", "offline", ""), worker("w2", "bound", "s1")];
        let moved = source_moves(&before, &after);
        assert_eq!(moved, [SourceMove { source: "s1".into(), from: "w1".into(), to: "w2".into() }]);
        assert!(source_moves(&before, &before).is_empty());
        let unbound = source_moves(&before, &[worker("w1", "offline", "")]);
        assert_eq!(unbound[0].to, "", "unbound: nowhere");
    }

    #[test]
    fn a_paused_subtask_is_blamed_on_the_build_of_the_worker_that_runs_it() {
        let on_package: BTreeSet<String> = ["w3".to_owned()].into();
        let now = [
            subtask("t1", "s1", "w3", TaskStage::Paused),
            subtask("t1", "s2", "w2", TaskStage::Running),
        ];
        let suspects = Suspects::Workers(&on_package);
        assert_eq!(
            judge(&expected(), &FirstSeen::new(), &now, suspects, Judging::Roll),
            Verdict::AgainstPackage(now[0].clone())
        );
        // Putting back: w3 is put back in turn; nothing else is failing.
        assert_eq!(
            judge(&expected(), &FirstSeen::new(), &now, suspects, Judging::PutBack),
            Verdict::Healthy
        );
        // Masters schedule every subtask: any failing one counts against their build.
        assert_eq!(
            judge(&expected(), &FirstSeen::new(), &now, Suspects::Everyone, Judging::Roll),
            Verdict::AgainstPackage(now[0].clone())
        );
    }

    #[test]
    fn a_failure_where_the_package_does_not_run_is_not_blamed_on_it() {
        let on_package: BTreeSet<String> = ["w1".to_owned()].into();
        let now = [
            subtask("t1", "s1", "w3", TaskStage::Paused),
            subtask("t1", "s2", "w1", TaskStage::Running),
        ];
        let suspects = Suspects::Workers(&on_package);
        for judging in [Judging::Roll, Judging::PutBack] {
            assert_eq!(
                judge(&expected(), &FirstSeen::new(), &now, suspects, judging),
                Verdict::Elsewhere(now[0].clone())
            );
        }
    }

    #[test]
    fn a_subtask_not_running_yet_is_waited_for() {
        let none = BTreeSet::new();
        let now = [subtask("t1", "s2", "w2", TaskStage::New)];
        let Verdict::Waiting(why) =
            judge(&expected(), &FirstSeen::new(), &now, Suspects::Workers(&none), Judging::Roll)
        else {
            panic!("waits")
        };
        assert!(why.contains("task 't1' on source 's1' runs on no worker"), "{why}");
        assert!(why.contains("task 't1' on source 's2' is new on worker w2"), "{why}");
        let finished = [
            subtask("t1", "s1", "w1", TaskStage::Finished),
            subtask("t1", "s2", "w2", TaskStage::Running),
        ];
        let verdict = judge(
            &expected(),
            &FirstSeen::new(),
            &finished,
            Suspects::Workers(&none),
            Judging::Roll,
        );
        assert_eq!(verdict, Verdict::Healthy);
    }

    #[test]
    fn a_canary_fails_its_soak_when_restarted_or_unhealthy_twice() {
        let same = (Some(100.0), Some(100.0));
        assert_eq!(canary_look(same, Ok(()), 1), CanaryLook::Fine);
        assert_eq!(canary_look(same, Err("503".into()), 0), CanaryLook::Unsure(1));
        let CanaryLook::Failed(why) = canary_look(same, Err("503".into()), 1) else {
            panic!("twice unhealthy")
        };
        assert!(why.contains("503"), "{why}");
        let restarted = canary_look((Some(100.0), Some(160.5)), Ok(()), 0);
        assert!(matches!(restarted, CanaryLook::Failed(why) if why.contains("restarted")));
        assert_eq!(canary_look((None, Some(1.0)), Ok(()), 0), CanaryLook::Fine, "not known then");
    }

    #[test]
    fn a_running_subtask_must_be_seen_to_replicate() {
        let none = BTreeSet::new();
        let suspects = Suspects::Workers(&none);
        let first = replicating("w1", 100, 500, 1);
        let mut first_seen = FirstSeen::new();
        note_first_seen(&mut first_seen, std::slice::from_ref(&first));
        let expected = just(&first);
        let verdict = |now: &Subtask| {
            judge(&expected, &first_seen, std::slice::from_ref(now), suspects, Judging::Roll)
        };

        let Verdict::Waiting(why) = verdict(&first) else { panic!("not seen to move yet") };
        assert!(why.contains("checkpoint (000007, 100) has not moved"), "{why}");
        assert_eq!(verdict(&replicating("w1", 150, 600, 1)), Verdict::Healthy, "it moved");
        assert_eq!(verdict(&replicating("w1", 100, 100, 0)), Verdict::Healthy, "caught up");
        let Verdict::Waiting(why) = verdict(&replicating("w1", 150, 600, 12)) else {
            panic!("lagging")
        };
        assert!(why.contains("12s behind"), "{why}");
        // On another worker (the source moved): it must be seen to move there.
        let moved = replicating("w2", 900, 1000, 1);
        assert!(matches!(verdict(&moved), Verdict::Waiting(_)));
    }

    #[test]
    fn at_the_deadline_a_subtask_that_does_not_replicate_is_stalled() {
        let stuck = replicating("w3", 100, 900, 8);
        let mut first_seen = FirstSeen::new();
        note_first_seen(&mut first_seen, std::slice::from_ref(&stuck));
        let expected = just(&stuck);
        let (subtask, why) = stalled(&expected, &first_seen, std::slice::from_ref(&stuck)).unwrap();
        assert_eq!(subtask.worker, "w3");
        assert!(why.contains("has not moved while the upstream is at (000007, 900)"), "{why}");
        let moving = replicating("w3", 200, 900, 1);
        assert_eq!(stalled(&expected, &first_seen, &[moving]), None);
        let on_package: BTreeSet<String> = ["w3".to_owned()].into();
        assert!(blames_package("w3", Suspects::Workers(&on_package)));
        assert!(!blames_package("w1", Suspects::Workers(&on_package)));
    }
}
