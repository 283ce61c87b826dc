//! Processes tracked by pid *and* start time.
//!
//! A bare pid is not enough to know that "our" process still runs: `kill -0` succeeds on a
//! zombie (where PID 1 reaps slowly, a crashed service looks alive for a while), and pids are
//! reused. A [`ProcessRecord`] therefore also keeps the start time from `/proc/<pid>/stat`
//! (field 22, in clock ticks since boot), and a process counts as running only while its pid
//! exists, is not a zombie, and still has that start time.

use std::fs;
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

use crate::wait::Backoff;

/// A process as it was when it was recorded.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProcessRecord {
    pub pid: u32,
    /// Field 22 of `/proc/<pid>/stat`.
    pub start_time: u64,
}

/// What `/proc/<pid>/stat` says about a process right now.
struct Stat {
    state: char,
    parent: u32,
    start_time: u64,
}

fn stat(pid: u32) -> Option<Stat> {
    let text = fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name (field 2) is in parentheses and may itself hold spaces or ')'; the
    // fields after the last ')' are plain numbers and letters.
    let after_name = &text[text.rfind(')')? + 1..];
    let fields: Vec<&str> = after_name.split_whitespace().collect();
    // `fields[0]` is field 3 (state), so field N is `fields[N - 3]`.
    Some(Stat {
        state: fields.first()?.chars().next()?,
        parent: fields.get(1)?.parse().ok()?,
        start_time: fields.get(19)?.parse().ok()?,
    })
}

/// The start time of `pid`, whether it still runs or is already a zombie.
pub fn start_time(pid: u32) -> Option<u64> {
    stat(pid).map(|stat| stat.start_time)
}

/// Zombies (Z) and dead tasks (X) have finished running; only their entry is left.
fn is_finished(state: char) -> bool {
    matches!(state, 'Z' | 'X')
}

impl ProcessRecord {
    /// Records the live process `pid`, or `None` when there is no such running process.
    pub fn of(pid: u32) -> Option<ProcessRecord> {
        let stat = stat(pid)?;
        (!is_finished(stat.state)).then_some(ProcessRecord { pid, start_time: stat.start_time })
    }

    /// True while the recorded process runs: same pid, same start time, not a zombie.
    pub fn is_running(&self) -> bool {
        stat(self.pid)
            .is_some_and(|stat| stat.start_time == self.start_time && !is_finished(stat.state))
    }

    /// Sends `signal` to the recorded process, if it still runs.
    pub fn signal(&self, signal: libc::c_int) {
        if self.is_running() {
            // SAFETY: kill(2) has no memory-safety preconditions; the pid was just checked
            // to still belong to the recorded process.
            unsafe { libc::kill(self.pid as libc::pid_t, signal) };
        }
    }

    /// Sends `signal` to the process group the recorded process leads (services and sshd
    /// are started as session leaders), or to the process alone when it leads none.
    pub fn signal_group(&self, signal: libc::c_int) {
        if !self.is_running() {
            return;
        }
        // SAFETY: getpgid(2) and kill(2) have no memory-safety preconditions.
        unsafe {
            if libc::getpgid(self.pid as libc::pid_t) == self.pid as libc::pid_t {
                libc::kill(-(self.pid as libc::pid_t), signal);
            } else {
                libc::kill(self.pid as libc::pid_t, signal);
            }
        }
    }

    /// Waits until the process no longer runs; false when it still does at the deadline.
    pub fn wait_gone(&self, timeout: Duration) -> bool {
        let deadline = Instant::now() + timeout;
        let mut backoff = Backoff::new();
        loop {
            if !self.is_running() {
                return true;
            }
            if Instant::now() >= deadline {
                return false;
            }
            backoff.sleep_until(deadline);
        }
    }

    /// SIGTERM to the group, then SIGKILL once `grace` has passed; returns once it is gone.
    pub fn terminate(&self, grace: Duration) {
        self.signal_group(libc::SIGTERM);
        if !self.wait_gone(grace) {
            self.kill();
        }
    }

    /// SIGKILL to the group, then waits (briefly: SIGKILL cannot be ignored) until it is gone.
    pub fn kill(&self) {
        self.signal_group(libc::SIGKILL);
        self.wait_gone(Duration::from_secs(5));
    }

    /// Every running process descending from this one (children, their children, ...).
    pub fn descendants(&self) -> Vec<ProcessRecord> {
        if !self.is_running() {
            return Vec::new();
        }
        let table: Vec<(u32, Stat)> = fs::read_dir("/proc")
            .into_iter()
            .flatten()
            .flatten()
            .filter_map(|entry| entry.file_name().to_str()?.parse::<u32>().ok())
            .filter_map(|pid| Some((pid, stat(pid)?)))
            .collect();
        let mut found = Vec::new();
        let mut parents = vec![self.pid];
        while let Some(parent) = parents.pop() {
            for (pid, stat) in table.iter().filter(|(_, stat)| stat.parent == parent) {
                if !is_finished(stat.state) {
                    found.push(ProcessRecord { pid: *pid, start_time: stat.start_time });
                }
                parents.push(*pid);
            }
        }
        found
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_current_process_runs_and_a_changed_start_time_does_not() {
        let me = ProcessRecord::of(std::process::id()).expect("this process exists");
        assert!(me.is_running());
        let reused = ProcessRecord { start_time: me.start_time + 1, ..me };
        assert!(!reused.is_running(), "a reused pid is not the recorded process");
    }

    #[test]
    fn a_zombie_is_not_running() {
        let mut child = std::process::Command::new("true").spawn().unwrap();
        let record =
            ProcessRecord { pid: child.id(), start_time: stat(child.id()).unwrap().start_time };
        // Not yet reaped: the child is a zombie once it has exited.
        assert!(record.wait_gone(Duration::from_secs(5)));
        child.wait().unwrap();
    }
}
