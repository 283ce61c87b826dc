//! `sandbox cleanup` after a crashed run. A test binary of its own, so that no sandbox of a
//! parallel test is live while it runs (cargo runs test binaries one after another), and
//! cleanup can be expected to remove everything.
//!
//! The crash is real: a child process (this binary, running the ignored `crashing_child`)
//! brings a sandbox up with a deploy user and is SIGKILLed, so nothing is torn down: its
//! claim names a process that is gone, its sshd runs on as an orphan, and the drop-in, the
//! user and the sandbox directory stay behind.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use dm_sandbox::Sandbox;
use dm_sandbox::state::SandboxState;

/// A user no other test logs in as.
const USER: &str = "dmsbxcrash";
/// Set (to the file the child writes its sandbox root to) only for the crashing child.
const CHILD_VAR: &str = "DM_SANDBOX_TEST_CRASHING_CHILD";

fn user_exists(user: &str) -> bool {
    Command::new("getent").args(["passwd", user]).output().unwrap().status.success()
}

#[test]
#[ignore = "the crashing half of a_crashed_runs_leftovers_are_removed_by_sandbox_cleanup"]
fn crashing_child() {
    let Some(report_to) = std::env::var_os(CHILD_VAR).map(PathBuf::from) else {
        return;
    };
    let sandbox = Sandbox::builder()
        .hosts(1)
        .masters(0)
        .workers(0)
        .sources(0)
        .ssh_user(USER)
        .start()
        .expect("hosts come up");
    let staged = report_to.with_extension("staged");
    fs::write(&staged, sandbox.root().to_str().unwrap()).unwrap();
    fs::rename(&staged, &report_to).unwrap();
    // The parent SIGKILLs this process meanwhile: the sandbox is never torn down.
    std::thread::sleep(Duration::from_secs(120));
}

/// Runs `crashing_child` in a child process, SIGKILLs it once its sandbox is up, and returns
/// that sandbox's root.
fn crash_a_run() -> PathBuf {
    let scratch = tempfile::tempdir().unwrap();
    let report = scratch.path().join("root");
    let mut child = Command::new(std::env::current_exe().unwrap())
        .args(["--exact", "crashing_child", "--ignored", "--test-threads=1"])
        .env(CHILD_VAR, &report)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap();
    let mut exited = None;
    dm_sandbox::wait::poll("the child's sandbox to come up", Duration::from_secs(60), || {
        exited = child.try_wait().unwrap();
        exited.is_some() || report.exists()
    })
    .unwrap();
    assert_eq!(exited, None, "the child ended before its sandbox was up");
    child.kill().unwrap();
    child.wait().unwrap();
    PathBuf::from(fs::read_to_string(&report).unwrap())
}

#[test]
fn a_crashed_runs_leftovers_are_removed_by_sandbox_cleanup() {
    assert!(
        !user_exists(USER),
        "the test needs {USER} not to exist yet (left by a crashed run? `sandbox cleanup`)"
    );
    let root = crash_a_run();
    let state = SandboxState::load(&root).expect("the crashed sandbox's sandbox.json");
    let sshd = state.hosts[0].sshd.expect("the crashed sandbox's sshd");
    let drop_in = Path::new("/etc/sudoers.d").join(format!("dm-sandbox-{USER}"));
    assert!(sshd.is_running(), "the crashed run's sshd outlives it");
    assert!(drop_in.is_file());
    assert!(user_exists(USER));

    let output = Command::new(env!("CARGO_BIN_EXE_sandbox")).arg("cleanup").output().unwrap();
    let report = String::from_utf8_lossy(&output.stdout).into_owned();
    assert!(output.status.success(), "sandbox cleanup: {output:?}");
    eprintln!("sandbox cleanup said:\n{report}");
    for line in [
        format!("stopped the processes of the crashed sandbox at {}", root.display()),
        format!("removed {}", root.display()),
        format!("removed {}", drop_in.display()),
        format!("deleted user {USER} (created by dm-sandbox)"),
    ] {
        assert!(report.lines().any(|l| l == line), "{line:?} in:\n{report}");
    }
    assert!(!sshd.is_running(), "cleanup stops the orphaned sshd");
    assert!(!root.exists());
    assert!(!drop_in.exists());
    assert!(!user_exists(USER));
    assert!(!Path::new("/run/dm-sandbox/claims").join(&state.subnet).exists());
    // With no live sandbox left (none of this binary's, but another run on the machine may
    // have one), nothing of the test bed is left either.
    if !report.contains("kept /run/dm-sandbox: in use") {
        assert!(report.lines().any(|l| l == "removed /run/dm-sandbox/bin"), "{report}");
        assert!(!Path::new("/run/dm-sandbox").exists());
        let again = Command::new(env!("CARGO_BIN_EXE_sandbox")).arg("cleanup").output().unwrap();
        assert!(again.status.success(), "{again:?}");
        assert!(
            String::from_utf8_lossy(&again.stdout).starts_with("nothing to clean up"),
            "{again:?}"
        );
        assert!(!Path::new("/run/dm-sandbox").exists());
    }
}
