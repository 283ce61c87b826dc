//! Claiming a `/24` of the loopback range, so parallel sandboxes never share an address; the
//! claims also count the sandboxes that use the machine-wide state (see [`crate::machine`]).
//!
//! A claim is a file `/run/dm-sandbox/claims/127.<a>.<b>` ([`CLAIMS_DIR`]) holding a
//! [`ClaimRecord`]: the sandbox's root, the user its hosts log in as, and its *keepers*, the
//! processes (pid and start time) whose life is the sandbox's. A sandbox a process brings up
//! is kept by that process; once `sandbox up` detaches it, by its sshds; while `sandbox down`
//! tears it down, by that process again. A claim none of whose keepers still runs is stale:
//! its owner crashed (or its hosts were killed). Claims are taken, rewritten and removed under
//! the [`MachineLock`]; a sandbox's teardown removes its claim and sweeps (see
//! [`crate::machine::sweep`]), which reaps stale claims and removes the machine-wide state
//! once no live claim is left. Subnets of stale claims are not reused until they are reaped.

use std::fs;
use std::io::ErrorKind;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};
use serde::{Deserialize, Serialize};

pub use crate::machine::CLAIMS_DIR;
use crate::machine::{self, MachineLock, Sweep};
use crate::process::ProcessRecord;

/// First octets handed out: 127.100.x.x up to 127.199.x.x.
const FIRST_OCTETS: std::ops::RangeInclusive<u8> = 100..=199;

/// What a claim file says.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ClaimRecord {
    /// The sandbox's root directory.
    pub root: PathBuf,
    /// The user its hosts log in as (`root`, or a deploy user with a sudoers drop-in).
    pub ssh_user: String,
    /// The claim is live while one of these runs.
    pub keepers: Vec<ProcessRecord>,
}

impl ClaimRecord {
    /// True while one of the keepers runs (same pid, same start time).
    pub fn is_live(&self) -> bool {
        self.keepers.iter().any(ProcessRecord::is_running)
    }

    /// `pid 12, 34`: the keepers, for messages.
    pub(crate) fn keeper_pids(&self) -> String {
        let pids: Vec<String> = self.keepers.iter().map(|k| k.pid.to_string()).collect();
        format!("pid {}", pids.join(", "))
    }

    /// The record in `file`; one that cannot be read as a record (a crash of an older version
    /// mid-write) reads as a stale claim of nothing. `None` when there is no such file.
    fn load(file: &Path) -> Result<Option<ClaimRecord>> {
        match fs::read_to_string(file) {
            Ok(text) => Ok(Some(serde_json::from_str(&text).unwrap_or_default())),
            Err(err) if err.kind() == ErrorKind::NotFound => Ok(None),
            Err(err) => Err(err).with_context(|| format!("reading {}", file.display())),
        }
    }

    fn write(&self, dir: &Path, subnet: &str) -> Result<()> {
        let staged = machine::stage(dir, serde_json::to_string(self)?.as_bytes(), 0o644)?;
        machine::install(staged, &dir.join(subnet))
    }
}

/// The running process, as a keeper.
fn this_process() -> Result<ProcessRecord> {
    ProcessRecord::of(std::process::id()).context("reading this process's start time")
}

/// A claimed subnet `127.<a>.<b>.0/24`.
#[derive(Debug)]
pub struct Claim {
    subnet: String,
    root: PathBuf,
}

impl Claim {
    /// Claims a free subnet for the sandbox at `root`, whose hosts log in as `ssh_user`, kept
    /// by this process.
    pub fn take(root: &Path, ssh_user: &str) -> Result<Claim> {
        let lock = MachineLock::acquire()?;
        let dir = lock.dir(CLAIMS_DIR)?;
        let record = ClaimRecord {
            root: root.to_path_buf(),
            ssh_user: ssh_user.to_owned(),
            keepers: vec![this_process()?],
        };
        // Start somewhere that depends on this process, so parallel test binaries do not
        // all probe the same first subnets.
        let slots = FIRST_OCTETS.len() * 256;
        let start = (std::process::id() as usize * 7919) % slots;
        for offset in 0..slots {
            let slot = (start + offset) % slots;
            let subnet =
                format!("127.{}.{}", *FIRST_OCTETS.start() as usize + slot / 256, slot % 256);
            if fs::symlink_metadata(dir.join(&subnet)).is_err() {
                record.write(&dir, &subnet)?;
                return Ok(Claim { subnet, root: root.to_path_buf() });
            }
        }
        bail!("every subnet 127.100.0.0 - 127.199.255.0 is claimed (see {CLAIMS_DIR})")
    }

    /// The handle of the existing claim of the sandbox at `root` (for `sandbox down`).
    pub fn existing(subnet: &str, root: &Path) -> Claim {
        Claim { subnet: subnet.to_owned(), root: root.to_path_buf() }
    }

    /// `127.<a>.<b>`: append `.1`, `.2`, ... for host addresses.
    pub fn subnet(&self) -> &str {
        &self.subnet
    }

    /// The claim as its file says now; `None` once it is gone or names another sandbox. Only
    /// under the [`MachineLock`].
    fn own_record(&self) -> Result<Option<ClaimRecord>> {
        let record = ClaimRecord::load(&Path::new(CLAIMS_DIR).join(&self.subnet))?;
        Ok(record.filter(|record| record.root == self.root))
    }

    /// From now on the claim is live while one of `keepers` runs. Does nothing once the
    /// claim is no longer this sandbox's (reaped as stale).
    pub fn set_keepers(&self, keepers: &[ProcessRecord]) -> Result<()> {
        let lock = MachineLock::acquire()?;
        if let Some(mut record) = self.own_record()? {
            record.keepers = keepers.to_vec();
            record.write(&lock.dir(CLAIMS_DIR)?, &self.subnet)?;
        }
        Ok(())
    }

    /// From now on the claim is kept by this process (and by nothing else).
    pub fn keep_by_this_process(&self) -> Result<()> {
        self.set_keepers(&[this_process()?])
    }

    /// Gives the subnet back, then sweeps the machine-wide state (see
    /// [`crate::machine::sweep`]): when this was the last live sandbox, nothing of the test
    /// bed is left on the machine afterwards.
    pub fn release(&self) -> Result<Sweep> {
        let lock = MachineLock::acquire()?;
        if self.own_record()?.is_some() {
            let file = Path::new(CLAIMS_DIR).join(&self.subnet);
            fs::remove_file(&file).with_context(|| format!("removing {}", file.display()))?;
        }
        let sweep = machine::sweep(&lock);
        drop(lock);
        Ok(sweep)
    }
}

/// Every claim, by subnet.
pub(crate) fn all(lock: &MachineLock) -> Result<Vec<(String, ClaimRecord)>> {
    let Some(dir) = lock.existing_dir(CLAIMS_DIR)? else {
        return Ok(Vec::new());
    };
    let mut claims = Vec::new();
    for entry in fs::read_dir(&dir).with_context(|| format!("listing {}", dir.display()))? {
        let entry = entry?;
        let Some(subnet) = entry.file_name().to_str().map(str::to_owned) else {
            continue;
        };
        // Staged files (`.tmp...`) are not claims.
        if subnet.starts_with('.') {
            continue;
        }
        if let Some(record) = ClaimRecord::load(&entry.path())? {
            claims.push((subnet, record));
        }
    }
    claims.sort_by(|a, b| a.0.cmp(&b.0));
    Ok(claims)
}

/// Ends the stale claim of `subnet`: stops the processes its sandbox recorded, removes its
/// root (unless `DM_SANDBOX_KEEP=1`), and removes the claim.
pub(crate) fn reap(_lock: &MachineLock, subnet: &str, record: &ClaimRecord, sweep: &mut Sweep) {
    let gone = if record.keepers.is_empty() {
        "it names no process".to_owned()
    } else {
        format!("{} no longer running", record.keeper_pids())
    };
    crate::harness::reap(&record.root, sweep);
    let file = Path::new(CLAIMS_DIR).join(subnet);
    match fs::remove_file(&file) {
        Ok(()) => {
            sweep.removed.push(format!("removed the stale claim {} ({gone})", file.display()))
        }
        Err(err) if err.kind() == ErrorKind::NotFound => {}
        Err(err) => sweep.problems.push(format!("removing {}: {err}", file.display())),
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;
    use std::sync::Mutex;

    use super::*;

    /// Many threads taking and releasing claims at once: the last release of a moment removes
    /// the whole state directory while others are about to lock it, or waiting for the lock.
    #[test]
    fn parallel_claims_are_distinct_and_survive_the_state_dir_coming_and_going() {
        let held = Mutex::new(BTreeSet::new());
        std::thread::scope(|scope| {
            for thread in 0..8 {
                let held = &held;
                scope.spawn(move || {
                    for round in 0..25 {
                        let root =
                            PathBuf::from(format!("/nonexistent/claim-test-{thread}-{round}"));
                        let claim = Claim::take(&root, "root").expect("a claim");
                        assert!(
                            held.lock().unwrap().insert(claim.subnet().to_owned()),
                            "{} was handed out twice",
                            claim.subnet()
                        );
                        let record = ClaimRecord::load(&Path::new(CLAIMS_DIR).join(claim.subnet()))
                            .unwrap()
                            .expect("the claim file");
                        assert_eq!(record.root, root);
                        assert!(record.is_live());
                        held.lock().unwrap().remove(claim.subnet());
                        let sweep = claim.release().expect("a release");
                        assert!(sweep.problems.is_empty(), "{:?}", sweep.problems);
                    }
                });
            }
        });
    }
}
