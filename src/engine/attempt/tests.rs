//! The undo matrix: every step that can fail (stop, swap, start, health, version, tasks, a
//! signal), then every step of the undo that can fail too (restore, start, health), with and
//! without a leader eviction, against a fake instance that records what was done to it.

use std::cell::RefCell;

use super::*;
use crate::dm::tasks::{Subtask, TaskStage};
use crate::engine::tasks::PausedSubtask;
use Step::*;

/// A step of an attempt or its undo, as the fake records it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Step {
    Stop,
    Swap,
    Restore,
    Start,
    /// Waiting until healthy on the package (`true`) or on the previous binary (`false`).
    Ready(bool),
    Tasks(Judging),
    RunsPackage(bool),
    CancelEvict,
}

/// How the fake fails a step.
#[derive(Debug, Clone)]
enum Fault {
    Ssh,
    StillActive,
    Unhealthy,
    WrongVersion,
    Interrupted,
    /// A subtask paused, on a worker that runs the package (`true`) or not.
    Paused(bool),
    CancelFails,
}

/// An instance that does what it is told, except the `faults` (each at the `nth` time its
/// step runs, counting from 1), and records every step.
#[derive(Default)]
struct FakeInstance {
    faults: Vec<(Step, usize, Fault)>,
    done: RefCell<Vec<Step>>,
}

impl FakeInstance {
    fn failing(faults: &[(Step, usize, Fault)]) -> FakeInstance {
        FakeInstance { faults: faults.to_vec(), done: RefCell::default() }
    }

    fn run(&self, step: Step) -> Result<(), StepError> {
        self.done.borrow_mut().push(step);
        let nth = self.done.borrow().iter().filter(|s| **s == step).count();
        let fault = self.faults.iter().find(|(s, n, _)| *s == step && *n == nth);
        match fault.map(|(_, _, fault)| fault.clone()) {
            None | Some(Fault::CancelFails) => Ok(()),
            Some(Fault::Ssh) => Err(StepError::Ssh(SshError::CommandFailed {
                endpoint: "127.0.9.1:22".to_owned(),
                command: "fake".to_owned(),
                exit_status: 1,
                stderr: "no such thing".to_owned(),
            })),
            Some(Fault::StillActive) => {
                Err(StepError::StillActive { unit: "dm-worker-8262.service".to_owned() })
            }
            Some(Fault::Unhealthy) => Err(StepError::Wait(WaitError::TimedOut {
                reason: "not healthy".to_owned(),
                timeout: Duration::from_secs(120),
            })),
            Some(Fault::WrongVersion) => Err(StepError::Wait(WaitError::TimedOut {
                reason: "it runs v8.5.1, not v8.5.2".to_owned(),
                timeout: Duration::from_secs(120),
            })),
            Some(Fault::Interrupted) => {
                Err(StepError::Wait(WaitError::Failed("interrupted by a signal".to_owned())))
            }
            Some(Fault::Paused(against_package)) => Err(StepError::Tasks(Box::new(TaskFailure {
                paused: PausedSubtask {
                    subtask: Subtask {
                        task: "task-1".to_owned(),
                        source: "mysql-replica-01".to_owned(),
                        worker: "dm-127.0.9.1-8262".to_owned(),
                        stage: TaskStage::Paused,
                        progress: None,
                    },
                    error: Some("sync unit failed to resume".to_owned()),
                },
                stalled: None,
                against_package,
            }))),
        }
    }

    fn done(&self) -> Vec<Step> {
        self.done.borrow().clone()
    }
}

impl Steps for FakeInstance {
    fn place(&self) -> Place {
        Place {
            host: "127.0.9.1:22".to_owned(),
            bin_dir: "/d/bin".to_owned(),
            binary: "/d/bin/dm-worker/dm-worker".to_owned(),
            service: "dm-worker-8262.service".to_owned(),
            log_dir: "/d/log".to_owned(),
        }
    }
    fn say(&self, _step: &str) {}
    async fn stop(&self) -> Result<(), StepError> {
        self.run(Stop)
    }
    async fn swap_in(&self) -> Result<(), StepError> {
        self.run(Swap)
    }
    async fn restore(&self, kept: &str) -> Result<(), StepError> {
        assert_eq!(kept, KEPT, "restored from what the swap kept");
        self.run(Restore)
    }
    async fn start(&self) -> Result<(), StepError> {
        self.run(Start)
    }
    async fn wait_ready(&self, expected: &VersionInfo, _on: OnInterrupt) -> Result<(), StepError> {
        self.run(Ready(expected == &version(PACKAGE)))
    }
    async fn wait_tasks(&self, _on: OnInterrupt, judging: Judging) -> Result<(), StepError> {
        self.run(Tasks(judging))
    }
    fn runs_package(&self, runs: bool) {
        self.done.borrow_mut().push(RunsPackage(runs));
    }
    async fn cancel_evict(&self) -> Result<(), String> {
        self.done.borrow_mut().push(CancelEvict);
        let fails = self.faults.iter().any(|(_, _, fault)| matches!(fault, Fault::CancelFails));
        if fails { Err("no leader".to_owned()) } else { Ok(()) }
    }
}

const PACKAGE: &str = "v8.5.2";
const PREVIOUS: &str = "v8.5.1";
const KEPT: &str = "/d/bin.patch-1234567/previous";

fn version(release: &str) -> VersionInfo {
    VersionInfo { release: release.to_owned(), git_hash: "1a2b3c4".to_owned() }
}

/// One attempt on `instance`, as the roll makes it.
fn attempt_on(instance: &FakeInstance, evicted: bool) -> Result<(), Failure> {
    let runtime = tokio::runtime::Builder::new_current_thread().build().unwrap();
    runtime.block_on(attempt(instance, &version(PACKAGE), &version(PREVIOUS), evicted, KEPT))
}

/// The steps of a whole attempt that succeeds.
const ATTEMPT: [Step; 6] =
    [Stop, Swap, RunsPackage(true), Start, Ready(true), Tasks(Judging::Roll)];
/// The steps of a whole undo of an attempt that got past its swap.
const UNDO: [Step; 6] =
    [Stop, Restore, RunsPackage(false), Start, Ready(false), Tasks(Judging::PutBack)];

fn rolled_back(result: Result<(), Failure>) -> String {
    match result {
        Err(Failure::RolledBack(message)) => message,
        other => panic!("not rolled back: {other:?}"),
    }
}

fn needs_attention(result: Result<(), Failure>) -> String {
    match result {
        Err(Failure::NeedsAttention(message)) => message,
        other => panic!("not needing attention: {other:?}"),
    }
}

#[test]
fn an_attempt_that_succeeds_is_not_undone() {
    let instance = FakeInstance::default();
    assert!(attempt_on(&instance, true).is_ok());
    assert_eq!(instance.done(), ATTEMPT, "no eviction cancelled: the restart forgot it");
}

#[test]
fn a_stop_that_fails_is_undone_without_a_restore() {
    let instance = FakeInstance::failing(&[(Stop, 1, Fault::Ssh)]);
    let message = rolled_back(attempt_on(&instance, false));
    assert!(
        message.contains("no such thing") && message.ends_with("rolled back to v8.5.1 (1a2b3c4)")
    );
    // bin/ never changed: the instance is only started again, and checked.
    assert_eq!(
        instance.done(),
        [Stop, RunsPackage(false), Start, Ready(false), Tasks(Judging::PutBack)]
    );
}

#[test]
fn a_unit_still_active_after_stop_is_never_swapped() {
    let instance = FakeInstance::failing(&[(Stop, 1, Fault::StillActive)]);
    let message = rolled_back(attempt_on(&instance, false));
    assert!(message.contains("still active after `systemctl stop`"), "{message}");
    assert!(!instance.done().contains(&Swap));
}

#[test]
fn a_swap_that_fails_is_restored() {
    let instance = FakeInstance::failing(&[(Swap, 1, Fault::Ssh)]);
    rolled_back(attempt_on(&instance, false));
    assert_eq!(instance.done(), [&[Stop, Swap][..], &UNDO].concat());
}

#[test]
fn a_start_that_fails_is_restored() {
    let instance = FakeInstance::failing(&[(Start, 1, Fault::Ssh)]);
    rolled_back(attempt_on(&instance, false));
    assert_eq!(instance.done(), [&ATTEMPT[..4], &UNDO].concat());
}

#[test]
fn an_instance_that_never_turns_healthy_is_restored() {
    let instance = FakeInstance::failing(&[(Ready(true), 1, Fault::Unhealthy)]);
    let message = rolled_back(attempt_on(&instance, false));
    assert!(message.starts_with("not healthy (gave up after 120s)"), "{message}");
    assert_eq!(instance.done(), [&ATTEMPT[..5], &UNDO].concat());
}

#[test]
fn a_binary_that_runs_another_version_is_restored() {
    let instance = FakeInstance::failing(&[(Ready(true), 1, Fault::WrongVersion)]);
    let message = rolled_back(attempt_on(&instance, false));
    assert!(message.contains("it runs v8.5.1, not v8.5.2"), "{message}");
}

#[test]
fn subtasks_paused_on_the_package_are_restored() {
    let instance = FakeInstance::failing(&[(Tasks(Judging::Roll), 1, Fault::Paused(true))]);
    let message = rolled_back(attempt_on(&instance, false));
    assert!(message.contains("which runs the package"), "{message}");
    assert_eq!(instance.done(), [&ATTEMPT[..], &UNDO].concat());
}

#[test]
fn subtasks_paused_elsewhere_leave_the_package_in_place() {
    let instance = FakeInstance::failing(&[(Tasks(Judging::Roll), 1, Fault::Paused(false))]);
    match attempt_on(&instance, false) {
        Err(Failure::Elsewhere(message)) => {
            assert!(message.contains("does not run the package"), "{message}")
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(instance.done(), ATTEMPT, "not undone: the package is not to blame");
}

#[test]
fn a_signal_during_the_wait_is_undone_at_once() {
    let instance = FakeInstance::failing(&[(Ready(true), 1, Fault::Interrupted)]);
    let message = rolled_back(attempt_on(&instance, false));
    assert!(message.starts_with("interrupted by a signal"), "{message}");
}

#[test]
fn a_restore_that_fails_says_where_the_previous_binary_is() {
    let instance = FakeInstance::failing(&[(Start, 1, Fault::Ssh), (Restore, 1, Fault::Ssh)]);
    let message = needs_attention(attempt_on(&instance, false));
    assert!(message.contains("rolling back failed too"), "{message}");
    assert!(message.contains(&format!("kept in {KEPT} on 127.0.9.1:22: copy it back over /d/bin")));
    assert!(!instance.done()[4..].contains(&Start), "nothing started over a half-restored bin/");
}

#[test]
fn a_stop_before_the_restore_that_fails_is_a_restore_failure() {
    let instance =
        FakeInstance::failing(&[(Ready(true), 1, Fault::Unhealthy), (Stop, 2, Fault::Ssh)]);
    let message = needs_attention(attempt_on(&instance, false));
    assert!(message.contains("rolling back failed too"), "{message}");
    assert!(!instance.done().contains(&Restore));
}

#[test]
fn an_undo_whose_start_fails_says_so_and_how_to_start_it() {
    let instance =
        FakeInstance::failing(&[(Ready(true), 1, Fault::Unhealthy), (Start, 2, Fault::Ssh)]);
    let message = needs_attention(attempt_on(&instance, false));
    assert!(message.contains("is back in place at /d/bin/dm-worker/dm-worker"), "{message}");
    assert!(message.contains("but starting it failed"), "{message}");
    assert!(message.contains("`systemctl start dm-worker-8262.service`"), "{message}");
    assert!(!message.contains("did not turn healthy"), "{message}");
}

#[test]
fn an_undo_that_does_not_turn_healthy_says_so() {
    let faults = [(Ready(true), 1, Fault::Unhealthy), (Ready(false), 1, Fault::Unhealthy)];
    let instance = FakeInstance::failing(&faults);
    let message = needs_attention(attempt_on(&instance, false));
    assert!(message.contains("was started, but it did not turn healthy"), "{message}");
    assert!(message.contains("See its log in /d/log"), "{message}");
}

#[test]
fn an_undo_whose_subtasks_stay_paused_needs_attention() {
    let faults = [
        (Tasks(Judging::Roll), 1, Fault::Paused(true)),
        (Tasks(Judging::PutBack), 1, Fault::Paused(false)),
    ];
    let instance = FakeInstance::failing(&faults);
    let message = needs_attention(attempt_on(&instance, false));
    assert!(message.contains("did not turn healthy"), "{message}");
}

#[test]
fn an_eviction_is_cancelled_after_every_undo() {
    for faults in [
        vec![(Start, 1, Fault::Ssh)],
        vec![(Start, 1, Fault::Ssh), (Restore, 1, Fault::Ssh)],
        vec![(Start, 1, Fault::Ssh), (Start, 2, Fault::Ssh)],
        vec![(Stop, 1, Fault::Ssh)],
    ] {
        let instance = FakeInstance::failing(&faults);
        let _ = attempt_on(&instance, true);
        assert_eq!(instance.done().last(), Some(&CancelEvict), "{faults:?}");
        let not_evicted = FakeInstance::failing(&faults);
        let _ = attempt_on(&not_evicted, false);
        assert!(!not_evicted.done().contains(&CancelEvict), "{faults:?}");
    }
}

#[test]
fn an_eviction_that_cannot_be_cancelled_is_said() {
    let instance =
        FakeInstance::failing(&[(Start, 1, Fault::Ssh), (CancelEvict, 1, Fault::CancelFails)]);
    let message = rolled_back(attempt_on(&instance, true));
    assert!(message.ends_with("it will not run for leader until restarted"), "{message}");
}

#[test]
fn a_put_back_restores_from_the_point_and_checks_its_subtasks() {
    let instance = FakeInstance::default();
    let runtime = tokio::runtime::Builder::new_current_thread().build().unwrap();
    let reason = "put back: the package is proven bad".to_owned();
    let failure = runtime.block_on(undo(&instance, reason, &version(PREVIOUS), false, true, KEPT));
    assert!(matches!(failure, Failure::RolledBack(_)), "{failure:?}");
    assert_eq!(instance.done(), UNDO);
}
