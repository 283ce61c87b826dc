//! Logging in as a non-root deploy user who runs commands through `sudo`, as TiUP does once a
//! cluster is deployed (it connects as the deploy user and prefixes `sudo -H bash -c`).
//!
//! `sudo` resets `PATH` to its `secure_path` and drops the environment, which would hide both
//! the stand-in `systemctl` and `DM_SANDBOX_HOST_DIR`. So the user gets a sudoers drop-in,
//! `/etc/sudoers.d/dm-sandbox-<user>`, whose `secure_path` starts with [`STAND_IN_DIR`]
//! (`/run/dm-sandbox/bin`, a directory of root's that nobody else can create or change: see
//! [`crate::machine`]) and which keeps `DM_SANDBOX_HOST_DIR`. A user that does not exist is
//! created (`useradd`) and recorded in `/run/dm-sandbox/users/`, so that the test bed deletes
//! only users it created, never one that was there before.
//!
//! These are machine-wide, shared by every sandbox with the same user; all are set up under
//! the [`MachineLock`], and files are written under unpredictable names and renamed into
//! place. A user's drop-in, and the user when the test bed created it, are removed when the
//! last live sandbox logging in as that user ends; the stand-in directory goes with the last
//! sandbox of all (see [`crate::machine::sweep`]).

use std::collections::BTreeSet;
use std::ffi::CStr;
use std::fs::{self, OpenOptions};
use std::io::{ErrorKind, Read};
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;
use std::process::Command;

use anyhow::{Context, Result, bail};

use crate::machine::{self, MachineLock, Sweep, USERS_DIR};

pub use crate::machine::STAND_IN_DIR;

const SUDOERS_DIR: &str = "/etc/sudoers.d";
/// Prefix of the drop-ins' names; sudo ignores names holding a '.', so staged files are unseen.
const DROP_IN_PREFIX: &str = "dm-sandbox-";
/// The first line of every drop-in the test bed writes (older versions wrote it too): only
/// files that start with it are ever removed.
const DROP_IN_MARK: &str = "# Written by dm-sandbox";
/// The comment (GECOS) of the users the test bed creates; a recorded user is deleted only
/// while it still has it.
const USER_COMMENT: &str = "dm-sandbox deploy user";

/// Makes `user` a TiUP-style deploy user: exists, may log in with a key, sudo without password.
pub fn prepare_deploy_user(user: &str, systemctl: &Path) -> Result<()> {
    validate_user_name(user)?;
    let lock = MachineLock::acquire()?;
    if user_ids(user).is_none() {
        create_system_user(&lock, user)?;
    }
    install_shared_stand_in(&lock, systemctl)?;
    install_sudoers_drop_in(user)
}

/// `/etc/sudoers.d/dm-sandbox-<user>`.
pub fn drop_in_path(user: &str) -> std::path::PathBuf {
    Path::new(SUDOERS_DIR).join(format!("{DROP_IN_PREFIX}{user}"))
}

/// `(uid, gid)` of `user`, if the account exists.
pub fn user_ids(user: &str) -> Option<(u32, u32)> {
    passwd_entry(user).map(|entry| (entry.uid, entry.gid))
}

struct PasswdEntry {
    uid: u32,
    gid: u32,
    comment: String,
}

fn passwd_entry(user: &str) -> Option<PasswdEntry> {
    let name = std::ffi::CString::new(user).ok()?;
    // SAFETY: a zeroed passwd is a valid out-parameter (plain integers and null pointers).
    let mut entry: libc::passwd = unsafe { std::mem::zeroed() };
    let mut strings = vec![0 as libc::c_char; 4096];
    let mut found: *mut libc::passwd = std::ptr::null_mut();
    // SAFETY: getpwnam_r (the thread-safe variant: tests start sandboxes from many threads)
    // writes only into `entry` and `strings`, which outlive the call, and sets `found` to
    // null or to `&entry`.
    let status = unsafe {
        libc::getpwnam_r(name.as_ptr(), &mut entry, strings.as_mut_ptr(), strings.len(), &mut found)
    };
    if status != 0 || found.is_null() {
        return None;
    }
    let comment = if entry.pw_gecos.is_null() {
        String::new()
    } else {
        // SAFETY: getpwnam_r succeeded, so pw_gecos points at a NUL-terminated string inside
        // `strings`, which is still alive.
        unsafe { CStr::from_ptr(entry.pw_gecos) }.to_string_lossy().into_owned()
    };
    Some(PasswdEntry { uid: entry.pw_uid, gid: entry.pw_gid, comment })
}

fn validate_user_name(user: &str) -> Result<()> {
    let mut chars = user.chars();
    let first_ok = chars.next().is_some_and(|c| c.is_ascii_lowercase() || c == '_');
    let rest_ok =
        chars.all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_' || c == '-');
    if !first_ok || !rest_ok || user.len() > 32 {
        bail!(
            "{user:?} is not a valid user name for the sandbox (lowercase letters, digits, _ and -)"
        );
    }
    Ok(())
}

/// Creates `user`, recorded first, so that a crash right after useradd still leaves a record.
fn create_system_user(lock: &MachineLock, user: &str) -> Result<()> {
    let users = lock.dir(USERS_DIR)?;
    let record = users.join(user);
    machine::install(machine::stage(&users, b"", 0o644)?, &record)?;
    // Password field `*`: no password login, but not "locked" (`!`), which sshd without PAM
    // would refuse even for key authentication.
    let output = Command::new("useradd")
        .args([
            "--system",
            "--no-create-home",
            "--shell",
            "/bin/bash",
            "--password",
            "*",
            "--comment",
            USER_COMMENT,
            user,
        ])
        .output()
        .context("running useradd")?;
    if !output.status.success() {
        let _ = fs::remove_file(&record);
        bail!("useradd {user} failed: {}", String::from_utf8_lossy(&output.stderr));
    }
    Ok(())
}

fn install_sudoers_drop_in(user: &str) -> Result<()> {
    let text = format!(
        "{DROP_IN_MARK}: {user} is a deploy user, as TiUP sets one up. Removed with the last sandbox that uses it.\n\
         Defaults:{user} secure_path=\"{STAND_IN_DIR}:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin\"\n\
         Defaults:{user} env_keep += \"DM_SANDBOX_HOST_DIR\"\n\
         {user} ALL=(ALL) NOPASSWD: ALL\n"
    );
    let path = drop_in_path(user);
    if read_no_follow(&path).is_ok_and(|existing| existing == text.as_bytes()) {
        return Ok(());
    }
    fs::create_dir_all(SUDOERS_DIR)?;
    // Staged under a name with a '.', which sudo ignores, until renamed.
    let staged = machine::stage(Path::new(SUDOERS_DIR), text.as_bytes(), 0o440)?;
    let check = Command::new("visudo").arg("-cf").arg(staged.path()).output();
    if let Ok(check) = &check
        && !check.status.success()
    {
        bail!("visudo rejects the sudoers drop-in: {}", String::from_utf8_lossy(&check.stdout));
    }
    machine::install(staged, &path)
}

fn install_shared_stand_in(lock: &MachineLock, systemctl: &Path) -> Result<()> {
    let dir = lock.dir(STAND_IN_DIR)?;
    let target = dir.join("systemctl");
    let wanted = fs::read(systemctl).with_context(|| format!("reading {}", systemctl.display()))?;
    if read_no_follow(&target).is_ok_and(|current| current == wanted) {
        return Ok(());
    }
    machine::install(machine::stage(&dir, &wanted, 0o755)?, &target)
}

/// The contents of `path`, refusing to read through a link.
fn read_no_follow(path: &Path) -> std::io::Result<Vec<u8>> {
    let mut bytes = Vec::new();
    OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NOFOLLOW)
        .open(path)?
        .read_to_end(&mut bytes)?;
    Ok(bytes)
}

/// Removes the drop-ins of users no live sandbox logs in as (`in_use`), and deletes those
/// users the test bed created. Part of [`crate::machine::sweep`].
pub(crate) fn remove_unused(lock: &MachineLock, in_use: &BTreeSet<String>, sweep: &mut Sweep) {
    remove_unused_drop_ins(in_use, sweep);
    if let Err(err) = remove_unused_users(lock, in_use, sweep) {
        sweep.problems.push(format!("{err:#}"));
    }
}

/// Every `/etc/sudoers.d/dm-sandbox-<user>` that dm-sandbox wrote (it starts with the mark)
/// for a user not in use, older versions' included.
fn remove_unused_drop_ins(in_use: &BTreeSet<String>, sweep: &mut Sweep) {
    let Ok(entries) = fs::read_dir(SUDOERS_DIR) else {
        return;
    };
    for entry in entries.flatten() {
        let name = entry.file_name();
        let Some(user) = name.to_str().and_then(|name| name.strip_prefix(DROP_IN_PREFIX)) else {
            continue;
        };
        if in_use.contains(user) {
            continue;
        }
        let path = entry.path();
        let ours =
            read_no_follow(&path).is_ok_and(|text| text.starts_with(DROP_IN_MARK.as_bytes()));
        if !ours {
            sweep.kept.push(format!("{}: not written by dm-sandbox, left alone", path.display()));
            continue;
        }
        match fs::remove_file(&path) {
            Ok(()) => sweep.removed.push(format!("removed {}", path.display())),
            Err(err) if err.kind() == ErrorKind::NotFound => {}
            Err(err) => sweep.problems.push(format!("removing {}: {err}", path.display())),
        }
    }
}

/// Deletes the recorded users that are not in use, if they still are the accounts the test
/// bed created (same comment).
fn remove_unused_users(
    lock: &MachineLock,
    in_use: &BTreeSet<String>,
    sweep: &mut Sweep,
) -> Result<()> {
    let Some(dir) = lock.existing_dir(USERS_DIR)? else {
        return Ok(());
    };
    for entry in fs::read_dir(&dir)?.flatten() {
        let Some(user) = entry.file_name().to_str().map(str::to_owned) else {
            continue;
        };
        if user.starts_with('.') || in_use.contains(&user) {
            continue;
        }
        match passwd_entry(&user) {
            None => {}
            Some(entry) if entry.comment != USER_COMMENT => sweep.kept.push(format!(
                "user {user}: no longer the account dm-sandbox created (comment {:?}), left alone",
                entry.comment
            )),
            Some(_) => {
                let output =
                    Command::new("userdel").arg(&user).output().context("running userdel")?;
                if !output.status.success() {
                    sweep.problems.push(format!(
                        "userdel {user} failed: {}",
                        String::from_utf8_lossy(&output.stderr).trim()
                    ));
                    continue;
                }
                sweep.removed.push(format!("deleted user {user} (created by dm-sandbox)"));
            }
        }
        fs::remove_file(entry.path())
            .with_context(|| format!("removing {}", entry.path().display()))?;
    }
    Ok(())
}
