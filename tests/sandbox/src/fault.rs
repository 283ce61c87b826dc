//! Faults a package can carry, so tests can hand dm-patch a broken hotfix and watch it react.
//!
//! The one list of them, shared by the simulator (which reads them from `DM_SIM_FAULT`, a
//! comma list of [`Fault::name`]s) and by whoever builds packages ([`crate::Sandbox::package`],
//! `sandbox package --fault`).

use std::fmt;
use std::str::FromStr;

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Fault {
    /// Prints an error and exits 1 before listening: a binary that does not start at all.
    ExitAtStart,
    /// Runs and answers `/status`, but a master is never healthy (no campaign, `alive:false`,
    /// `/health` 503) and a worker never registers.
    NeverHealthy,
    /// `-V` prints the packaged version, but the running server reports another one, as if the
    /// old binary were still running.
    WrongVersion,
    /// A leader acknowledges eviction and keeps leading.
    IgnoreEvict,
    /// A worker registers and comes back bound, but every subtask it runs is Paused with an
    /// error, as with a hotfix whose sync unit is broken.
    PausedTasks,
    /// Every subtask a worker takes says Running, but its checkpoint never moves while the
    /// upstream's does: a hotfix whose syncer is stuck.
    StalledTasks,
    /// Every subtask a worker takes runs, and replicates, for some seconds
    /// (`DM_SIM_LATE_PAUSE_MS`, 3 s), then pauses with an error.
    LatePause,
}

impl Fault {
    /// Every fault the simulator knows.
    pub const ALL: [Fault; 7] = [
        Fault::ExitAtStart,
        Fault::NeverHealthy,
        Fault::WrongVersion,
        Fault::IgnoreEvict,
        Fault::PausedTasks,
        Fault::StalledTasks,
        Fault::LatePause,
    ];

    /// The name in `DM_SIM_FAULT`, package file names and `sandbox package --fault`.
    pub fn name(self) -> &'static str {
        match self {
            Fault::ExitAtStart => "exit-at-start",
            Fault::NeverHealthy => "never-healthy",
            Fault::WrongVersion => "wrong-version",
            Fault::IgnoreEvict => "ignore-evict",
            Fault::PausedTasks => "paused-tasks",
            Fault::StalledTasks => "stalled-tasks",
            Fault::LatePause => "late-pause",
        }
    }

    /// The fault called `name`; an unknown name is an error, so a typo fails loudly instead
    /// of silently testing a healthy binary.
    pub fn parse(name: &str) -> Result<Fault, UnknownFault> {
        name.parse()
    }
}

impl fmt::Display for Fault {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for Fault {
    type Err = UnknownFault;

    fn from_str(name: &str) -> Result<Fault, UnknownFault> {
        Fault::ALL
            .into_iter()
            .find(|fault| fault.name() == name)
            .ok_or_else(|| UnknownFault(name.to_owned()))
    }
}

/// A fault name the simulator does not know.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UnknownFault(pub String);

impl fmt::Display for UnknownFault {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let known: Vec<&str> = Fault::ALL.iter().map(|fault| fault.name()).collect();
        write!(f, "unknown fault {:?} (known: {})", self.0, known.join(", "))
    }
}

impl std::error::Error for UnknownFault {}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_fault_parses_back_from_its_name() {
        for fault in Fault::ALL {
            assert_eq!(fault.name().parse::<Fault>(), Ok(fault));
            assert_eq!(fault.to_string(), fault.name());
        }
    }

    #[test]
    fn an_unknown_name_is_an_error_listing_the_known_ones() {
        let err = Fault::parse("exit-at-stat").unwrap_err();
        assert_eq!(
            err.to_string(),
            "unknown fault \"exit-at-stat\" (known: exit-at-start, never-healthy, wrong-version, ignore-evict, paused-tasks, stalled-tasks, late-pause)"
        );
    }
}
