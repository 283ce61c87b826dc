//! An instance's stop, swap and start are one command on its host, each step taken on the
//! roll's word, through real sshd: whichever step fails, the undo knows how far the command got
//! (before the swap, bin/ is as it was and the instance is only started again; from the swap
//! on, what it replaced is put back first).

use std::os::unix::fs::PermissionsExt;
use std::path::Path;

use dm_sandbox::Sandbox;
use sha2::{Digest, Sha256};

use crate::cluster::Cluster;
use crate::patch::on_systemctl;
use crate::support::{Entry, Run};

/// A cluster of one dm-worker, its ID and the sha256 of its binary.
fn one_worker() -> (Cluster, String, String) {
    let cluster = Cluster::start(Sandbox::builder().hosts(2).masters(1).workers(1).sources(1));
    let worker = cluster.ids("dm-worker").remove(0);
    let sha = binary_sha256(&cluster, &worker);
    (cluster, worker, sha)
}

fn binary_sha256(cluster: &Cluster, id: &str) -> String {
    let binary = cluster.deploy_dir(id).join("bin/dm-worker/dm-worker");
    Sha256::digest(std::fs::read(binary).unwrap()).iter().map(|b| format!("{b:02x}")).collect()
}

/// The worker's one row was rolled back, and it runs what it ran before, unchanged.
#[track_caller]
fn rolled_back_unchanged(cluster: &Cluster, worker: &str, before: &str, run: &Run) -> String {
    assert_eq!(run.outcome_names(), ["rolled-back"], "{}", run.stderr);
    assert_eq!(cluster.version(worker).as_deref(), Some("v8.5.1"));
    assert_eq!(binary_sha256(cluster, worker), before, "the binary that ran before");
    run.json()["instances"][0]["detail"].as_str().unwrap().to_owned()
}

/// The stop fails: the command ends there, nothing was swapped, and the undo only starts the
/// instance (it puts nothing back: a stop before a restore would fail again, and the undo
/// with it).
#[test]
fn a_stop_that_fails_in_the_command_is_undone_without_a_restore() {
    let (cluster, worker, before) = one_worker();
    on_systemctl(&cluster, "stop", "echo 'Job for the unit failed' >&2; exit 1");
    let pkg = cluster.package("dm-worker", "v8.5.2", &[]);

    let run = cluster.patch(&pkg, &["-R", "dm-worker"]).code(1);

    let detail = rolled_back_unchanged(&cluster, &worker, &before, &run);
    assert!(detail.contains("systemctl stop") && detail.contains("Job for the unit failed"));
}

/// The swap fails after it moved the new binary in (its second file cannot be moved): the undo
/// puts back what the swap replaced before starting the instance.
#[test]
fn a_swap_that_fails_in_the_command_is_put_back() {
    let (cluster, worker, before) = one_worker();
    let extra = [Entry::file("dm-worker/hotfix.toml", 0o644, b"[hotfix]\n")];
    let pkg = cluster.package_with("dm-worker", "v8.5.2", &[], &extra);
    let real = ["/usr/bin/mv", "/bin/mv"].into_iter().find(|p| Path::new(p).exists()).unwrap();
    let mv = cluster.sandbox.root().join("bin/path/mv");
    let script = format!(
        "#!/bin/sh\ncase \"$*\" in */tree/*hotfix.toml*) echo 'mv: No space left on device' >&2; \
         exit 1;; esac\nexec {real} \"$@\"\n"
    );
    std::fs::write(&mv, script).unwrap();
    std::fs::set_permissions(&mv, std::fs::Permissions::from_mode(0o755)).unwrap();

    let run = cluster.patch(&pkg, &["-R", "dm-worker"]).code(1);

    let detail = rolled_back_unchanged(&cluster, &worker, &before, &run);
    assert!(detail.contains("the swap into") && detail.contains("No space left"), "{detail}");
    let bin = cluster.deploy_dir(&worker).join("bin/dm-worker");
    assert!(!bin.join("hotfix.toml").exists(), "what the swap added is taken away");
}

/// The start fails once the swap is done: the undo stops the instance, puts back what the swap
/// replaced and starts that.
#[test]
fn a_start_that_fails_in_the_command_is_put_back() {
    let (cluster, worker, before) = one_worker();
    let count = cluster.sandbox.root().join("starts");
    let first_fails = format!(
        "n=$(($(cat {0} 2>/dev/null || echo 0) + 1)); echo $n > {0}; \
         if [ $n -eq 1 ]; then echo 'Job for the unit failed' >&2; exit 1; fi",
        count.display()
    );
    on_systemctl(&cluster, "start", &first_fails);
    let pkg = cluster.package("dm-worker", "v8.5.2", &[]);

    let run = cluster.patch(&pkg, &["-R", "dm-worker"]).code(1);

    let detail = rolled_back_unchanged(&cluster, &worker, &before, &run);
    assert!(detail.contains("systemctl start") && detail.contains("Job for the unit failed"));
}
