//! Faults a package can carry (`DM_SIM_FAULT`, a comma list), so tests can hand dm-patch a
//! broken hotfix and watch it react.

use std::fmt;

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
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
}

impl Fault {
    const ALL: [Fault; 4] = [
        Fault::ExitAtStart,
        Fault::NeverHealthy,
        Fault::WrongVersion,
        Fault::IgnoreEvict,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Fault::ExitAtStart => "exit-at-start",
            Fault::NeverHealthy => "never-healthy",
            Fault::WrongVersion => "wrong-version",
            Fault::IgnoreEvict => "ignore-evict",
        }
    }
}

impl fmt::Display for Fault {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// The set of faults this process runs with.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Faults(Vec<Fault>);

impl Faults {
    /// Reads a comma list; an unknown name is an error, so a typo in a test fails loudly
    /// instead of silently testing a healthy binary.
    pub fn parse(list: &str) -> Result<Faults, String> {
        let mut faults = Vec::new();
        for name in list.split(',').map(str::trim).filter(|n| !n.is_empty()) {
            let fault = Fault::ALL
                .into_iter()
                .find(|fault| fault.name() == name)
                .ok_or_else(|| {
                    let known: Vec<&str> = Fault::ALL.iter().map(|f| f.name()).collect();
                    format!("unknown fault {name:?} (known: {})", known.join(", "))
                })?;
            faults.push(fault);
        }
        faults.sort();
        faults.dedup();
        Ok(Faults(faults))
    }

    pub fn has(&self, fault: Fault) -> bool {
        self.0.contains(&fault)
    }
}

/// The canonical comma list (sorted, no duplicates), part of what the commit hash derives from.
impl fmt::Display for Faults {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let names: Vec<&str> = self.0.iter().map(|fault| fault.name()).collect();
        f.write_str(&names.join(","))
    }
}
