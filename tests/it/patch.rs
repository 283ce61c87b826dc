//! The patch engine end to end, on a sandbox cluster behind real sshd hosts.

use std::collections::{BTreeMap, BTreeSet};
use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;

use dm_sandbox::Sandbox;
use serde_json::Value;

use crate::cluster::{Cluster, patched_ids};

fn json(output: &std::process::Output) -> Value {
    serde_json::from_slice(&output.stdout).unwrap_or_else(|err| {
        panic!(
            "stdout is not JSON ({err}): {}\nstderr: {}",
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        )
    })
}

fn outcomes(report: &Value) -> Vec<(String, String)> {
    report["instances"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| {
            (
                i["id"].as_str().unwrap().to_owned(),
                i["outcome"].as_str().unwrap().to_owned(),
            )
        })
        .collect()
}

/// Watches the given instances while a run goes on, and remembers the most that were down at
/// the same moment.
struct DownWatcher {
    stop: Arc<AtomicBool>,
    max_down: Arc<AtomicUsize>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl DownWatcher {
    fn start(cluster: &Cluster, ids: Vec<String>) -> DownWatcher {
        let stop = Arc::new(AtomicBool::new(false));
        let max_down = Arc::new(AtomicUsize::new(0));
        let sandbox = cluster.sandbox.clone();
        let thread = {
            let (stop, max_down) = (stop.clone(), max_down.clone());
            std::thread::spawn(move || {
                while !stop.load(Ordering::SeqCst) {
                    let down = ids.iter().filter(|id| sandbox.pid(id).is_none()).count();
                    max_down.fetch_max(down, Ordering::SeqCst);
                    std::thread::sleep(Duration::from_millis(20));
                }
            })
        };
        DownWatcher {
            stop,
            max_down,
            thread: Some(thread),
        }
    }

    fn finish(mut self) -> usize {
        self.stop.store(true, Ordering::SeqCst);
        self.thread.take().unwrap().join().unwrap();
        self.max_down.load(Ordering::SeqCst)
    }
}

#[test]
fn workers_are_patched_one_by_one_and_sources_stay_bound() {
    let cluster = Cluster::start(Sandbox::builder().hosts(5).masters(3).workers(3).sources(2));
    let pkg = cluster.package("dm-worker", "v8.5.2", &[]);
    let workers = cluster.ids("dm-worker");
    let watcher = DownWatcher::start(&cluster, workers.clone());

    let output = cluster
        .dm_patch(
            ["patch", "-R", "dm-worker", "--yes", "--format", "json"],
            &pkg,
        )
        .output()
        .unwrap();
    let max_down = watcher.finish();
    assert_eq!(
        output.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let report = json(&output);
    assert_eq!(report["result"], "success");
    assert!(outcomes(&report).iter().all(|(_, o)| o == "patched"));
    assert!(max_down <= 1, "{max_down} workers were down at once");

    for id in &workers {
        assert_eq!(
            cluster.sandbox.status_version(id).as_deref(),
            Some("v8.5.2"),
            "{id}"
        );
        let deploy = cluster.deploy_dir(id);
        assert!(
            deploy.join("bin.old.v8.5.1").is_dir(),
            "{id}: no TiUP backup"
        );
        assert!(
            !deploy
                .join(format!("bin.patch-{}", &cluster.sha7(&pkg)))
                .exists()
        );
    }
    let members = cluster.members();
    let bound: BTreeSet<String> = members
        .workers()
        .iter()
        .filter(|w| w.stage == "bound")
        .map(|w| w.source.clone())
        .collect();
    assert_eq!(bound.len(), 2, "every source is bound: {members:?}");
    assert!(
        members
            .workers()
            .iter()
            .all(|w| matches!(w.stage.as_str(), "bound" | "free"))
    );
    assert_eq!(
        patched_ids(&cluster),
        workers.into_iter().collect::<BTreeSet<_>>()
    );
}

#[test]
fn masters_go_followers_first_and_the_leader_last() {
    let cluster = Cluster::start(Sandbox::builder().hosts(3).masters(3).workers(1).sources(1));
    let pkg = cluster.package("dm-master", "v8.5.2", &[]);
    let leader = cluster.leader_id();
    let masters = cluster.ids("dm-master");
    let watcher = DownWatcher::start(&cluster, masters.clone());

    let output = cluster
        .dm_patch(
            ["patch", "-R", "dm-master", "--yes", "--format", "json"],
            &pkg,
        )
        .output()
        .unwrap();
    let max_down = watcher.finish();
    assert_eq!(
        output.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let order: Vec<String> = outcomes(&json(&output))
        .into_iter()
        .map(|(id, _)| id)
        .collect();
    assert_eq!(
        order.last(),
        Some(&leader),
        "the leader goes last: {order:?}"
    );
    assert_eq!(order.len(), 3);
    assert!(max_down <= 1, "{max_down} masters were down at once");
    for id in &masters {
        assert_eq!(
            cluster.sandbox.status_version(id).as_deref(),
            Some("v8.5.2")
        );
    }
    assert!(cluster.members().leader().is_some());
    assert_eq!(patched_ids(&cluster), masters.into_iter().collect());
}

#[test]
fn node_and_role_filters_intersect() {
    let cluster = Cluster::start(Sandbox::builder().hosts(3).masters(1).workers(3).sources(2));
    let pkg = cluster.package("dm-worker", "v8.5.2", &[]);
    let target = cluster.ids("dm-worker")[1].clone();
    let pids_before: BTreeMap<String, Option<u32>> = cluster.pids();

    let output = cluster
        .dm_patch(["patch", "-R", "dm-worker", "-N", &target, "--yes"], &pkg)
        .output()
        .unwrap();
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    for (id, pid) in cluster.pids() {
        if id == target {
            assert_ne!(pid, pids_before[&id], "{id} was not restarted");
            assert_eq!(
                cluster.sandbox.status_version(&id).as_deref(),
                Some("v8.5.2")
            );
        } else {
            assert_eq!(pid, pids_before[&id], "{id} was touched");
        }
    }
    assert_eq!(patched_ids(&cluster), BTreeSet::from([target]));
}

#[test]
fn offline_swaps_binaries_of_a_stopped_cluster() {
    let cluster = Cluster::start(Sandbox::builder().hosts(2).masters(1).workers(2).sources(1));
    let pkg = cluster.package("dm-worker", "v8.5.2", &[]);
    for id in cluster
        .ids("dm-worker")
        .into_iter()
        .chain(cluster.ids("dm-master"))
    {
        cluster.sandbox.stop_service(&id);
    }

    let output = cluster
        .dm_patch(["patch", "-R", "dm-worker", "--offline", "--yes"], &pkg)
        .output()
        .unwrap();
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    for id in cluster.ids("dm-worker") {
        assert_eq!(cluster.sandbox.pid(&id), None, "{id} was started");
        assert_eq!(cluster.installed_version(&id), "v8.5.2");
    }
    assert_eq!(
        patched_ids(&cluster),
        cluster.ids("dm-worker").into_iter().collect()
    );
}

#[test]
fn overwrite_keeps_the_package_as_tiup_does() {
    let cluster = Cluster::start(Sandbox::builder().hosts(2).masters(1).workers(1).sources(1));
    let pkg = cluster.package("dm-worker", "v8.5.2", &[]);
    for _ in 0..2 {
        let output = cluster
            .dm_patch(["patch", "-R", "dm-worker", "--overwrite", "--yes"], &pkg)
            .output()
            .unwrap();
        assert!(
            output.status.success(),
            "{}",
            String::from_utf8_lossy(&output.stderr)
        );
    }
    let patch_dir = cluster.cluster_dir().join("patch");
    let kept_name = format!("dm-worker-{}.tar.gz", cluster.sha7(&pkg));
    assert_eq!(
        std::fs::read(patch_dir.join(&kept_name)).unwrap(),
        std::fs::read(&pkg).unwrap()
    );
    let link = std::fs::read_link(patch_dir.join("dm-worker.tar.gz")).unwrap();
    assert_eq!(
        link,
        std::path::PathBuf::from(&kept_name),
        "a relative link"
    );
}

#[test]
fn a_failing_package_is_rolled_back_to_the_binary_that_ran_before_and_a_rerun_finishes() {
    let cluster = Cluster::start(Sandbox::builder().hosts(3).masters(1).workers(3).sources(2));
    let good = cluster.package("dm-worker", "v8.5.2", &[]);
    let crashing = cluster.package("dm-worker", "v8.5.3", &["exit-at-start"]);
    let workers = cluster.ids("dm-worker");
    let first = workers[0].clone();

    // The first worker gets the good hotfix alone.
    let output = cluster
        .dm_patch(["patch", "-N", &first, "--yes"], &good)
        .output()
        .unwrap();
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let pids_before = cluster.pids();

    // A package whose binary exits at start fails on the first worker, which goes back to the
    // hotfix it ran just before (not to TiUP's bin.old.v8.5.1), running; the others are untouched.
    let output = cluster
        .dm_patch(
            ["patch", "-R", "dm-worker", "--yes", "--format", "json"],
            &crashing,
        )
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(1));
    let report = json(&output);
    assert_eq!(report["result"], "failed");
    assert_eq!(
        outcomes(&report)
            .iter()
            .map(|(_, o)| o.as_str())
            .collect::<Vec<_>>(),
        ["rolled-back", "not-reached", "not-reached"]
    );
    assert_eq!(
        cluster.sandbox.status_version(&first).as_deref(),
        Some("v8.5.2")
    );
    assert!(cluster.sandbox.pid(&first).is_some());
    for id in &workers[1..] {
        assert_eq!(cluster.sandbox.pid(id), pids_before[id], "{id} was touched");
    }
    assert_eq!(patched_ids(&cluster), BTreeSet::from([first.clone()]));

    // The same good package again: the first worker already runs it and is skipped.
    let output = cluster
        .dm_patch(
            ["patch", "-R", "dm-worker", "--yes", "--format", "json"],
            &good,
        )
        .output()
        .unwrap();
    assert_eq!(
        output.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert_eq!(
        outcomes(&json(&output))
            .iter()
            .map(|(_, o)| o.as_str())
            .collect::<Vec<_>>(),
        ["skipped", "patched", "patched"]
    );
    assert_eq!(patched_ids(&cluster), workers.iter().cloned().collect());
}

#[test]
fn a_binary_that_never_turns_healthy_is_rolled_back() {
    let cluster = Cluster::start(Sandbox::builder().hosts(3).masters(3).workers(1).sources(1));
    let stuck = cluster.package("dm-master", "v8.5.2", &["never-healthy"]);
    let pids_before = cluster.pids();
    let output = cluster
        .dm_patch(
            [
                "patch",
                "-R",
                "dm-master",
                "--yes",
                "--format",
                "json",
                "--wait-timeout",
                "4",
            ],
            &stuck,
        )
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(1));
    let outcomes = outcomes(&json(&output));
    assert_eq!(outcomes[0].1, "rolled-back");
    let failed = &outcomes[0].0;
    assert_eq!(
        cluster.sandbox.status_version(failed).as_deref(),
        Some("v8.5.1")
    );
    for (id, _) in &outcomes[1..] {
        assert_eq!(cluster.sandbox.pid(id), pids_before[id], "{id} was touched");
    }
    assert!(patched_ids(&cluster).is_empty());
    cluster.sandbox.wait_until(
        "a leader after the roll back",
        Duration::from_secs(10),
        || cluster.members().leader().is_some(),
    );
}

#[test]
fn a_leader_that_ignores_eviction_is_left_running() {
    let cluster = Cluster::start(Sandbox::builder().hosts(3).masters(3).workers(1).sources(1));
    let stubborn = cluster.package("dm-master", "v8.5.2", &["ignore-evict"]);
    let good = cluster.package("dm-master", "v8.5.3", &[]);
    // Every master gets a binary that ignores eviction, so the leader runs it too.
    let output = cluster
        .dm_patch(["patch", "-R", "dm-master", "--yes"], &stubborn)
        .output()
        .unwrap();
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let leader = cluster.leader_id();
    let leader_pid = cluster.sandbox.pid(&leader);

    let output = cluster
        .dm_patch(
            [
                "patch",
                "-N",
                &leader,
                "--yes",
                "--format",
                "json",
                "--wait-timeout",
                "3",
            ],
            &good,
        )
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(1));
    let report = json(&output);
    assert_eq!(outcomes(&report)[0].1, "failed-unchanged");
    assert!(
        report["message"].as_str().unwrap().contains("did not move"),
        "{report}"
    );
    assert_eq!(
        cluster.sandbox.pid(&leader),
        leader_pid,
        "the leader was restarted"
    );
}

#[test]
fn ctrl_c_finishes_the_instance_in_flight_and_stops() {
    let cluster = Cluster::start(Sandbox::builder().hosts(3).masters(1).workers(3).sources(2));
    let pkg = cluster.package("dm-worker", "v8.5.2", &[]);
    let mut child = Command::new(assert_cmd::cargo::cargo_bin("dm-patch"))
        .args(cluster.args(
            ["patch", "-R", "dm-worker", "--yes", "--format", "json"],
            &pkg,
        ))
        .env("TIUP_HOME", cluster.sandbox.tiup_home())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // Interrupt as soon as the first worker is stopping; keep reading stderr after that.
    let mut lines = BufReader::new(child.stderr.take().unwrap()).lines();
    let mut seen = Vec::new();
    for line in lines.by_ref() {
        let line = line.unwrap();
        let stopping = line.contains(": stopping");
        seen.push(line);
        if stopping {
            // SAFETY: signalling our own child process.
            unsafe { libc::kill(child.id() as libc::pid_t, libc::SIGINT) };
            break;
        }
    }
    seen.extend(lines.map_while(Result::ok));
    let output = child.wait_with_output().unwrap();
    assert_eq!(output.status.code(), Some(130), "stderr so far: {seen:#?}");
    let report = json(&output);
    assert_eq!(report["result"], "interrupted");
    let outcomes = outcomes(&report);
    assert_eq!(
        outcomes[0].1, "patched",
        "the instance in flight is finished"
    );
    assert!(outcomes[1..].iter().all(|(_, o)| o == "not-reached"));
    for id in cluster
        .ids("dm-worker")
        .iter()
        .chain(cluster.ids("dm-master").iter())
    {
        assert!(cluster.sandbox.pid(id).is_some(), "{id} was left stopped");
    }
    assert_eq!(
        patched_ids(&cluster),
        BTreeSet::from([outcomes[0].0.clone()])
    );
}
