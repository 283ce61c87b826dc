//! The faults this process runs with (`DM_SIM_FAULT`, a comma list of [`Fault`] names), so
//! tests can hand dm-patch a broken hotfix and watch it react. The faults themselves are the
//! library's [`dm_sandbox::Fault`], the one list shared with the package builders.

use std::fmt;

use dm_sandbox::Fault;

/// The set of faults this process runs with.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Faults(Vec<Fault>);

impl Faults {
    /// Reads a comma list; an unknown name is an error, so a typo in a test fails loudly
    /// instead of silently testing a healthy binary.
    pub fn parse(list: &str) -> Result<Faults, String> {
        let mut faults = list
            .split(',')
            .map(str::trim)
            .filter(|name| !name.is_empty())
            .map(|name| name.parse::<Fault>().map_err(|err| err.to_string()))
            .collect::<Result<Vec<Fault>, String>>()?;
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
