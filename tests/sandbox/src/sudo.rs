//! Logging in as a non-root deploy user who runs commands through `sudo`, as TiUP does once a
//! cluster is deployed (it connects as the deploy user and prefixes `sudo -H bash -c`).
//!
//! `sudo` resets `PATH` to its `secure_path` and drops the environment, which would hide both
//! the stand-in `systemctl` and `DM_SANDBOX_HOST_DIR`. So the user gets a sudoers drop-in whose
//! `secure_path` starts with [`SHARED_STAND_IN_DIR`] and which keeps `DM_SANDBOX_HOST_DIR`.
//! These are machine-wide settings, shared by every sandbox: the drop-in's text depends only
//! on the user name, and the shared directory's `systemctl` is replaced atomically, so parallel
//! sandboxes write the same things and never see a half-written file. Both are left in place
//! on teardown, since another sandbox may be using them.

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::Command;

use anyhow::{Context, Result, bail};

/// The stand-in directory that sudo's `secure_path` names for every sandbox.
pub const SHARED_STAND_IN_DIR: &str = "/tmp/dm-sandbox-bin";

const SUDOERS_DIR: &str = "/etc/sudoers.d";

/// Makes `user` a TiUP-style deploy user: exists, may log in with a key, sudo without password.
pub fn prepare_deploy_user(user: &str, systemctl: &Path) -> Result<()> {
    validate_user_name(user)?;
    if user_ids(user).is_none() {
        create_system_user(user)?;
    }
    install_sudoers_drop_in(user)?;
    install_shared_stand_in(systemctl)
}

/// `(uid, gid)` of `user`, if the account exists.
pub fn user_ids(user: &str) -> Option<(u32, u32)> {
    let name = std::ffi::CString::new(user).ok()?;
    // SAFETY: a zeroed passwd is a valid out-parameter (plain integers and null pointers).
    let mut entry: libc::passwd = unsafe { std::mem::zeroed() };
    let mut strings = vec![0 as libc::c_char; 4096];
    let mut found: *mut libc::passwd = std::ptr::null_mut();
    // SAFETY: getpwnam_r (the thread-safe variant: tests start sandboxes from many threads)
    // writes only into `entry` and `strings`, which outlive the call, and sets `found` to
    // null or to `&entry`.
    let status = unsafe {
        libc::getpwnam_r(
            name.as_ptr(),
            &mut entry,
            strings.as_mut_ptr(),
            strings.len(),
            &mut found,
        )
    };
    (status == 0 && !found.is_null()).then_some((entry.pw_uid, entry.pw_gid))
}

fn validate_user_name(user: &str) -> Result<()> {
    let mut chars = user.chars();
    let first_ok = chars
        .next()
        .is_some_and(|c| c.is_ascii_lowercase() || c == '_');
    let rest_ok =
        chars.all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_' || c == '-');
    if !first_ok || !rest_ok || user.len() > 32 {
        bail!(
            "{user:?} is not a valid user name for the sandbox (lowercase letters, digits, _ and -)"
        );
    }
    Ok(())
}

fn create_system_user(user: &str) -> Result<()> {
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
            user,
        ])
        .output()
        .context("running useradd")?;
    // Another sandbox may have created the same user a moment ago.
    if !output.status.success() && user_ids(user).is_none() {
        bail!(
            "useradd {user} failed: {}",
            String::from_utf8_lossy(&output.stderr)
        );
    }
    Ok(())
}

fn install_sudoers_drop_in(user: &str) -> Result<()> {
    let text = format!(
        "# Written by dm-sandbox: {user} is a deploy user, as TiUP sets one up.\n\
         Defaults:{user} secure_path=\"{SHARED_STAND_IN_DIR}:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin\"\n\
         Defaults:{user} env_keep += \"DM_SANDBOX_HOST_DIR\"\n\
         {user} ALL=(ALL) NOPASSWD: ALL\n"
    );
    let path = Path::new(SUDOERS_DIR).join(format!("dm-sandbox-{user}"));
    if fs::read_to_string(&path).is_ok_and(|existing| existing == text) {
        return Ok(());
    }
    fs::create_dir_all(SUDOERS_DIR)?;
    // sudo ignores drop-ins whose name holds a '.', so the file is invisible until renamed.
    let staging = Path::new(SUDOERS_DIR).join(format!(".dm-sandbox-{user}.{}", std::process::id()));
    fs::write(&staging, &text)?;
    fs::set_permissions(&staging, fs::Permissions::from_mode(0o440))?;
    let check = Command::new("visudo").arg("-cf").arg(&staging).output();
    if let Ok(check) = &check
        && !check.status.success()
    {
        let _ = fs::remove_file(&staging);
        bail!(
            "visudo rejects the sudoers drop-in: {}",
            String::from_utf8_lossy(&check.stdout)
        );
    }
    fs::rename(&staging, &path).with_context(|| format!("installing {}", path.display()))
}

fn install_shared_stand_in(systemctl: &Path) -> Result<()> {
    let dir = Path::new(SHARED_STAND_IN_DIR);
    fs::create_dir_all(dir)?;
    fs::set_permissions(dir, fs::Permissions::from_mode(0o755))?;
    let target = dir.join("systemctl");
    let wanted = fs::read(systemctl).with_context(|| format!("reading {}", systemctl.display()))?;
    if fs::read(&target).is_ok_and(|current| current == wanted) {
        return Ok(());
    }
    let staging = dir.join(format!(".systemctl.{}", std::process::id()));
    fs::write(&staging, &wanted)?;
    fs::set_permissions(&staging, fs::Permissions::from_mode(0o755))?;
    fs::rename(&staging, &target).with_context(|| format!("installing {}", target.display()))
}
