//! The test bed's machine-wide state, and removing it again once no sandbox needs it.
//!
//! Everything a sandbox keeps outside its own root lives in one directory, [`STATE_DIR`]
//! (`/run/dm-sandbox`, mode 0755, owned by root):
//!
//! ```text
//! /run/dm-sandbox/
//!   .lock               the flock every look at (or change to) the state is made under
//!   claims/127.<a>.<b>  one per live sandbox: its subnet, root, ssh user and keepers (see crate::claim)
//!   bin/systemctl       the stand-in that sudo's secure_path names (see crate::sudo)
//!   users/<user>        a deploy user the test bed created with useradd (so it may delete it)
//! ```
//!
//! Outside it there are only the sudoers drop-ins `/etc/sudoers.d/dm-sandbox-<user>`. Before
//! use, the directory and each subdirectory is checked to be a real directory (not a link),
//! owned by root and writable by nobody else; the test bed refuses to run otherwise. Files in
//! it are written under unpredictable names ([`tempfile::NamedTempFile`]) and renamed into
//! place, so nothing ever writes through a link.
//!
//! The claims count the sandboxes that use the state. A sandbox's teardown (its `Drop`, and
//! `sandbox down`) removes its claim and then [sweeps](sweep): claims whose keepers are all
//! gone (a crashed run) are reaped (their recorded processes stopped, their root removed); a
//! deploy user's drop-in, and the user when the test bed created it, go with the last live
//! sandbox that logs in as that user; and when no live claim is left at all, the whole state
//! directory goes too. `sandbox cleanup` runs the same sweep by hand, after a crash.

use std::collections::BTreeSet;
use std::fs::{self, File, OpenOptions};
use std::io::{ErrorKind, Write};
use std::os::unix::fs::{DirBuilderExt, MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};
use tempfile::NamedTempFile;

use crate::claim::{self, ClaimRecord};
use crate::sudo;

/// Where all machine-wide state of the test bed lives.
pub const STATE_DIR: &str = "/run/dm-sandbox";
/// The stand-in `systemctl` for sudo's `secure_path`: `<STATE_DIR>/bin`.
pub const STAND_IN_DIR: &str = "/run/dm-sandbox/bin";
/// Subnet claims: `<STATE_DIR>/claims`.
pub const CLAIMS_DIR: &str = "/run/dm-sandbox/claims";
/// Records of the users the test bed created: `<STATE_DIR>/users`.
pub const USERS_DIR: &str = "/run/dm-sandbox/users";
const LOCK_FILE: &str = ".lock";

/// Where earlier versions of the test bed kept this state, world-creatable under /tmp. A
/// sweep that finds nothing live removes them (only when they are root's own directories).
const LEGACY_DIRS: [&str; 2] = ["/tmp/dm-sandbox-bin", "/tmp/dm-sandbox-claims"];

/// The exclusive `flock` on `<STATE_DIR>/.lock`, held while the state is looked at or
/// changed. Released when dropped.
pub struct MachineLock {
    _file: File,
    /// Whether this acquisition created the state directory.
    created: bool,
}

impl MachineLock {
    /// Creates the state directory when missing, checks it, and waits for the lock.
    pub fn acquire() -> Result<MachineLock> {
        let dir = Path::new(STATE_DIR);
        let path = dir.join(LOCK_FILE);
        // The holder before us may remove the whole directory when it is the last to leave;
        // whoever waited for the lock of that removed file must start over.
        for _ in 0..1000 {
            let created = match ensure_private_dir(dir) {
                Ok(created) => created,
                // Removed right after we found it there: start over.
                Err(err)
                    if err
                        .root_cause()
                        .downcast_ref::<std::io::Error>()
                        .is_some_and(|err| err.kind() == ErrorKind::NotFound) =>
                {
                    continue;
                }
                Err(err) => return Err(err),
            };
            let file = match OpenOptions::new()
                .create(true)
                .truncate(false)
                .write(true)
                .mode(0o600)
                .custom_flags(libc::O_NOFOLLOW)
                .open(&path)
            {
                Ok(file) => file,
                Err(err) if err.kind() == ErrorKind::NotFound => continue,
                Err(err) => {
                    return Err(err).with_context(|| format!("opening {}", path.display()));
                }
            };
            file.lock().with_context(|| format!("locking {}", path.display()))?;
            let locked = file.metadata()?;
            let still_there = fs::symlink_metadata(&path).is_ok_and(|current| {
                current.dev() == locked.dev() && current.ino() == locked.ino()
            });
            if still_there {
                check_private_dir(dir)?;
                return Ok(MachineLock { _file: file, created });
            }
        }
        bail!("could not lock {}: it keeps being removed", path.display())
    }

    /// The subdirectory `path` of the state directory, created when missing, and checked.
    pub fn dir(&self, path: &str) -> Result<PathBuf> {
        let path = Path::new(path);
        ensure_private_dir(path)?;
        Ok(path.to_path_buf())
    }

    /// The subdirectory `path` if it exists (checked), without creating it.
    pub fn existing_dir(&self, path: &str) -> Result<Option<PathBuf>> {
        let path = Path::new(path);
        match fs::symlink_metadata(path) {
            Err(err) if err.kind() == ErrorKind::NotFound => Ok(None),
            _ => {
                check_private_dir(path)?;
                Ok(Some(path.to_path_buf()))
            }
        }
    }
}

/// Creates `dir` (mode 0755) when missing, then [checks](check_private_dir) it. True when
/// this call created it.
fn ensure_private_dir(dir: &Path) -> Result<bool> {
    if let Some(parent) = dir.parent()
        && !parent.exists()
    {
        fs::create_dir_all(parent).with_context(|| format!("creating {}", parent.display()))?;
    }
    let created = match fs::DirBuilder::new().mode(0o755).create(dir) {
        Ok(()) => {
            // The umask may have taken bits away; the mode is exactly 0755.
            fs::set_permissions(dir, fs::Permissions::from_mode(0o755))?;
            true
        }
        Err(err) if err.kind() == ErrorKind::AlreadyExists => false,
        Err(err) => return Err(err).with_context(|| format!("creating {}", dir.display())),
    };
    check_private_dir(dir)?;
    Ok(created)
}

/// Refuses a directory that anyone but root could have put there or could change: it must be
/// a real directory (not a symbolic link), owned by uid 0, and not writable by group or others.
pub fn check_private_dir(dir: &Path) -> Result<()> {
    let meta = fs::symlink_metadata(dir).with_context(|| format!("examining {}", dir.display()))?;
    let problem = if meta.file_type().is_symlink() {
        "is a symbolic link".to_owned()
    } else if !meta.is_dir() {
        "is not a directory".to_owned()
    } else if meta.uid() != 0 {
        format!("is owned by uid {}, not root", meta.uid())
    } else if meta.mode() & 0o022 != 0 {
        format!("is writable by group or others (mode {:o})", meta.mode() & 0o7777)
    } else {
        return Ok(());
    };
    bail!(
        "{} {problem}: dm-sandbox keeps its machine-wide state only in a directory of root's \
         that nobody else can change, and will not use this one (remove it, after checking who \
         made it)",
        dir.display()
    )
}

/// A file in `dir` under an unpredictable name (created exclusively, so never through a
/// link), holding `contents` with `mode`; [`install`] renames it into place.
pub fn stage(dir: &Path, contents: &[u8], mode: u32) -> Result<NamedTempFile> {
    let mut staged = NamedTempFile::new_in(dir)
        .with_context(|| format!("creating a file in {}", dir.display()))?;
    staged.write_all(contents)?;
    staged.as_file().set_permissions(fs::Permissions::from_mode(mode))?;
    staged.as_file().sync_all()?;
    Ok(staged)
}

/// Renames a [staged](stage) file to `target` (in the same directory), replacing what is there
/// (a link at `target` is replaced, not followed).
pub fn install(staged: NamedTempFile, target: &Path) -> Result<()> {
    staged
        .persist(target)
        .map_err(|err| err.error)
        .with_context(|| format!("installing {}", target.display()))?;
    Ok(())
}

/// What a [sweep] did and found.
#[derive(Debug, Default)]
pub struct Sweep {
    /// What was stopped, removed or deleted, one sentence each.
    pub removed: Vec<String>,
    /// What was left in place on purpose, and why.
    pub kept: Vec<String>,
    /// What should have been removed but could not be.
    pub problems: Vec<String>,
}

/// Reaps crashed sandboxes, removes what no live sandbox needs any more, and the whole state
/// directory when no live sandbox is left. Runs under `lock`, which it may leave pointing at
/// a removed file: drop it right after.
pub fn sweep(lock: &MachineLock) -> Sweep {
    let mut sweep = Sweep::default();
    let mut live: Vec<(String, ClaimRecord)> = Vec::new();
    match claim::all(lock) {
        Ok(claims) => {
            for (subnet, record) in claims {
                if record.is_live() {
                    live.push((subnet, record));
                } else {
                    claim::reap(lock, &subnet, &record, &mut sweep);
                }
            }
        }
        Err(err) => sweep.problems.push(format!("{err:#}")),
    }

    let users_in_use: BTreeSet<String> = live.iter().map(|(_, r)| r.ssh_user.clone()).collect();
    sudo::remove_unused(lock, &users_in_use, &mut sweep);

    if !live.is_empty() || !sweep.problems.is_empty() {
        for (subnet, record) in &live {
            sweep.kept.push(format!(
                "{STATE_DIR}: in use by the sandbox at {} (subnet {subnet}.0/24, kept by {})",
                record.root.display(),
                record.keeper_pids()
            ));
        }
        return sweep;
    }
    remove_state_dir(lock, &mut sweep);
    sweep
}

/// The last step of a sweep that found nothing live: the state directory and its contents,
/// and what earlier versions left under /tmp.
fn remove_state_dir(lock: &MachineLock, sweep: &mut Sweep) {
    for legacy in LEGACY_DIRS {
        let path = Path::new(legacy);
        match fs::symlink_metadata(path) {
            Err(_) => {}
            Ok(meta) if meta.is_dir() && meta.uid() == 0 => match fs::remove_dir_all(path) {
                Ok(()) => {
                    sweep.removed.push(format!("removed {legacy} (left by an older dm-sandbox)"))
                }
                Err(err) => sweep.problems.push(format!("removing {legacy}: {err}")),
            },
            Ok(_) => sweep.kept.push(format!(
                "{legacy}: not a directory of root's, so not dm-sandbox's: left alone"
            )),
        }
    }
    for sub in [STAND_IN_DIR, CLAIMS_DIR, USERS_DIR] {
        let path = Path::new(sub);
        if fs::symlink_metadata(path).is_err() {
            continue;
        }
        match fs::remove_dir_all(path) {
            Ok(()) => sweep.removed.push(format!("removed {sub}")),
            Err(err) => sweep.problems.push(format!("removing {sub}: {err}")),
        }
    }
    if !sweep.problems.is_empty() {
        return;
    }
    // The lock file goes last: from here on, a newcomer may create the directory afresh.
    let dir = Path::new(STATE_DIR);
    let _ = fs::remove_file(dir.join(LOCK_FILE));
    match fs::remove_dir(dir) {
        Ok(()) if !lock.created => sweep.removed.push(format!("removed {STATE_DIR}")),
        Ok(()) => {}
        // A newcomer already arrived: the directory is theirs now.
        Err(err) if err.kind() == ErrorKind::NotFound => {}
        Err(_) if fs::read_dir(dir).is_ok_and(|mut entries| entries.next().is_some()) => {}
        Err(err) => sweep.problems.push(format!("removing {STATE_DIR}: {err}")),
    }
}

/// `sandbox cleanup`: after a crashed run, the [sweep] that a teardown would have made.
pub fn cleanup() -> Result<Sweep> {
    let lock = MachineLock::acquire()?;
    let sweep = sweep(&lock);
    drop(lock);
    Ok(sweep)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_link_or_a_directory_others_can_write_is_refused() {
        let parent = tempfile::tempdir().unwrap();
        let real = parent.path().join("real");
        fs::create_dir(&real).unwrap();
        fs::set_permissions(&real, fs::Permissions::from_mode(0o755)).unwrap();
        let link = parent.path().join("link");
        std::os::unix::fs::symlink(&real, &link).unwrap();

        // The tests run as root, so a directory made here is root's.
        check_private_dir(&real).unwrap();
        let err = check_private_dir(&link).unwrap_err().to_string();
        assert!(err.contains("is a symbolic link"), "{err}");
        fs::set_permissions(&real, fs::Permissions::from_mode(0o777)).unwrap();
        let err = check_private_dir(&real).unwrap_err().to_string();
        assert!(err.contains("writable by group or others (mode 777)"), "{err}");
        fs::set_permissions(&real, fs::Permissions::from_mode(0o755)).unwrap();
        std::os::unix::fs::chown(&real, Some(65534), None).unwrap();
        let err = check_private_dir(&real).unwrap_err().to_string();
        assert!(err.contains("owned by uid 65534, not root"), "{err}");
    }

    #[test]
    fn staged_files_are_installed_over_a_link_without_following_it() {
        let dir = tempfile::tempdir().unwrap();
        let victim = dir.path().join("victim");
        fs::write(&victim, "untouched").unwrap();
        let target = dir.path().join("target");
        std::os::unix::fs::symlink(&victim, &target).unwrap();

        install(stage(dir.path(), b"new", 0o640).unwrap(), &target).unwrap();
        assert_eq!(fs::read_to_string(&victim).unwrap(), "untouched");
        let meta = fs::symlink_metadata(&target).unwrap();
        assert!(meta.is_file());
        assert_eq!(meta.mode() & 0o7777, 0o640);
        assert_eq!(fs::read_to_string(&target).unwrap(), "new");
    }
}
