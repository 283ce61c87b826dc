//! The patch engine end to end, on a sandbox cluster behind real sshd hosts.

use std::collections::BTreeSet;
use std::os::unix::fs::PermissionsExt;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;

use dm_sandbox::{Fault, Sandbox};

use crate::cluster::{Cluster, id_set, sha1_7, sha7};
use crate::support::{Entry, Immutable};

/// Watches the given instances while a run goes on, and remembers the most that were down at
/// the same moment.
pub struct DownWatcher {
    stop: Arc<AtomicBool>,
    max_down: Arc<AtomicUsize>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl DownWatcher {
    pub fn start(cluster: &Cluster, ids: Vec<String>) -> DownWatcher {
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
        DownWatcher { stop, max_down, thread: Some(thread) }
    }

    pub fn finish(mut self) -> usize {
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
    let run = cluster.patch(&pkg, &["-R", "dm-worker"]).success();
    assert!(watcher.finish() <= 1, "two workers were down at once");
    crate::support::conforms("report", &run.json());
    assert_eq!(run.outcome_names(), ["patched"; 3]);
    let report = run.json();
    for instance in report["instances"].as_array().unwrap() {
        // What it ran before is known for every patched instance, not only a skipped one.
        assert!(instance["old_binary_sha256"].is_string(), "{instance}");
    }
    for id in &workers {
        assert_eq!(cluster.version(id).as_deref(), Some("v8.5.2"), "{id}");
        let deploy = cluster.deploy_dir(id);
        assert!(deploy.join("bin.old.v8.5.1").is_dir(), "{id}: no TiUP backup");
        assert!(!deploy.join(format!("bin.patch-{}", sha7(&pkg))).exists(), "{id}: staged files");
    }
    let members = cluster.members();
    let stages: BTreeSet<&str> = members.workers().iter().map(|w| w.stage.as_str()).collect();
    assert!(stages.iter().all(|s| matches!(*s, "bound" | "free")), "{members:?}");
    let bound = members.workers().iter().filter(|w| w.stage == "bound").count();
    assert_eq!(bound, 2, "every source is bound: {members:?}");
    assert_eq!(cluster.patched_ids(), id_set(&workers));
}

#[test]
fn masters_go_followers_first_and_the_leader_last() {
    let cluster = Cluster::start(Sandbox::builder().hosts(3).masters(3).workers(1).sources(1));
    let pkg = cluster.package("dm-master", "v8.5.2", &[]);
    let (leader, masters) = (cluster.leader_id(), cluster.ids("dm-master"));
    let watcher = DownWatcher::start(&cluster, masters.clone());
    let run = cluster.patch(&pkg, &["-R", "dm-master"]).success();
    assert!(watcher.finish() <= 1, "two masters were down at once");
    let order: Vec<String> = run.outcomes().into_iter().map(|(id, _)| id).collect();
    assert_eq!((order.len(), order.last()), (3, Some(&leader)), "the leader goes last: {order:?}");
    for id in &masters {
        assert_eq!(cluster.version(id).as_deref(), Some("v8.5.2"));
    }
    assert!(cluster.members().leader().is_some());
    assert_eq!(cluster.patched_ids(), id_set(&masters));
}

#[test]
fn node_and_role_filters_intersect() {
    let cluster = Cluster::start(Sandbox::builder().hosts(3).masters(1).workers(3).sources(2));
    let pkg = cluster.package("dm-worker", "v8.5.2", &[]);
    let target = cluster.ids("dm-worker")[1].clone();
    let pids = cluster.pids();
    cluster.patch(&pkg, &["-R", "dm-worker", "-N", &target]).success();
    assert_ne!(cluster.sandbox.pid(&target), pids[&target], "{target} was not restarted");
    assert_eq!(cluster.version(&target).as_deref(), Some("v8.5.2"));
    cluster.assert_untouched(&pids, pids.keys().filter(|id| **id != target));
    assert_eq!(cluster.patched_ids(), BTreeSet::from([target]));
}

#[test]
fn offline_swaps_binaries_of_a_stopped_cluster() {
    let cluster = Cluster::start(Sandbox::builder().hosts(2).masters(1).workers(2).sources(1));
    let pkg = cluster.package("dm-worker", "v8.5.2", &[]);
    let workers = cluster.ids("dm-worker");
    for id in workers.iter().chain(&cluster.ids("dm-master")) {
        cluster.sandbox.stop_service(id);
    }
    cluster.patch(&pkg, &["-R", "dm-worker", "--offline"]).success();
    for id in &workers {
        assert_eq!(cluster.sandbox.pid(id), None, "{id} was started");
        assert_eq!(cluster.installed_version(id), "v8.5.2");
    }
    assert_eq!(cluster.patched_ids(), id_set(&workers));
}

/// `--offline` over running workers swaps their binaries and leaves them running the old ones;
/// the same package online then restarts each onto it.
#[test]
fn an_online_run_after_offline_restarts_the_running_workers_onto_the_package() {
    let cluster = Cluster::start(Sandbox::builder().hosts(2).masters(1).workers(2).sources(1));
    let pkg = cluster.package("dm-worker", "v8.5.2", &[]);
    let workers = cluster.ids("dm-worker");
    cluster.patch(&pkg, &["-R", "dm-worker", "--offline"]).success();
    for id in &workers {
        assert_eq!(cluster.version(id).as_deref(), Some("v8.5.1"), "{id} still runs the old one");
        assert_eq!(cluster.installed_version(id), "v8.5.2");
    }
    assert_eq!(worker_statuses(&cluster).len(), 2);
    for status in worker_statuses(&cluster) {
        assert!(status.ends_with(" (restart pending)"), "display says so: {status}");
    }

    let run = cluster.patch(&pkg, &["-R", "dm-worker", "--wait-timeout", "20"]).success();

    assert_eq!(run.outcome_names(), ["patched"; 2], "{}", run.stderr);
    for id in &workers {
        assert_eq!(cluster.version(id).as_deref(), Some("v8.5.2"), "{id} serves the package");
    }
    for status in worker_statuses(&cluster) {
        assert!(!status.contains("restart pending"), "{status}");
    }
}

/// The Status `display --format json` gives each dm-worker.
fn worker_statuses(cluster: &Cluster) -> Vec<String> {
    let name = cluster.sandbox.cluster_name();
    let display = cluster.dm_patch().args(["display", name, "--format", "json"]).output().unwrap();
    let json: serde_json::Value = serde_json::from_slice(&display.stdout).unwrap();
    let instances = json["instances"].as_array().unwrap();
    let workers = instances.iter().filter(|i| i["component"] == "dm-worker");
    workers.map(|i| i["status"].as_str().unwrap().to_owned()).collect()
}

#[test]
fn overwrite_keeps_the_package_as_tiup_does() {
    let cluster = Cluster::start(Sandbox::builder().hosts(2).masters(1).workers(1).sources(1));
    let pkg = cluster.package("dm-worker", "v8.5.2", &[]);
    for _ in 0..2 {
        cluster.patch(&pkg, &["-R", "dm-worker", "--overwrite"]).success();
    }
    let patch_dir = cluster.cluster_dir().join("patch");
    let kept_name = format!("dm-worker-{}.tar.gz", sha1_7(&pkg));
    assert_eq!(std::fs::read(patch_dir.join(&kept_name)).unwrap(), std::fs::read(&pkg).unwrap());
    let link = std::fs::read_link(patch_dir.join("dm-worker.tar.gz")).unwrap();
    assert_eq!(link, std::path::PathBuf::from(&kept_name), "a relative link");
}

/// A package whose binary exits at start fails on the first worker, which goes back to the
/// hotfix it ran just before (not to TiUP's bin.old.v8.5.1), running; the others are untouched.
/// The same good package again then skips the first worker and finishes the rest.
#[test]
fn a_failing_package_is_rolled_back_to_the_binary_that_ran_before_and_a_rerun_finishes() {
    let cluster = Cluster::start(Sandbox::builder().hosts(3).masters(1).workers(3).sources(2));
    let good = cluster.package("dm-worker", "v8.5.2", &[]);
    let crashing = cluster.package("dm-worker", "v8.5.3", &[Fault::ExitAtStart]);
    let workers = cluster.ids("dm-worker");
    cluster.patch(&good, &["-N", &workers[0]]).success();
    let pids = cluster.pids();

    let run = cluster.patch(&crashing, &["-R", "dm-worker"]).code(1);
    assert_eq!(run.outcome_names(), ["rolled-back", "not-reached", "not-reached"]);
    assert_eq!(cluster.version(&workers[0]).as_deref(), Some("v8.5.2"));
    cluster.assert_untouched(&pids, &workers[1..]);
    assert_eq!(cluster.patched_ids(), id_set(&workers[..1]));

    let run = cluster.patch(&good, &["-R", "dm-worker"]).success();
    assert_eq!(run.outcome_names(), ["skipped", "patched", "patched"]);
    assert_eq!(cluster.patched_ids(), id_set(&workers));
}

#[test]
fn a_binary_that_never_turns_healthy_is_rolled_back() {
    let cluster = Cluster::start(Sandbox::builder().hosts(3).masters(3).workers(1).sources(1));
    let stuck = cluster.package("dm-master", "v8.5.2", &[Fault::NeverHealthy]);
    let pids = cluster.pids();
    let run = cluster.patch(&stuck, &["-R", "dm-master", "--wait-timeout", "4"]).code(1);
    crate::support::conforms("report", &run.json());
    let (ids, outcomes): (Vec<String>, Vec<String>) = run.outcomes().into_iter().unzip();
    assert_eq!(outcomes, ["rolled-back", "not-reached", "not-reached"]);
    assert_eq!(cluster.version(&ids[0]).as_deref(), Some("v8.5.1"));
    cluster.assert_untouched(&pids, &ids[1..]);
    assert!(cluster.patched_ids().is_empty());
    let leader = || cluster.members().leader().is_some();
    cluster.sandbox.wait_until("a leader after the roll back", Duration::from_secs(10), leader);
}

/// A binary whose `-V` shows the package's version while the running server reports another
/// fails the version gate and is rolled back.
#[test]
fn a_binary_that_runs_another_version_than_it_claims_is_rolled_back() {
    let cluster = Cluster::start(Sandbox::builder().hosts(2).masters(1).workers(2).sources(1));
    let liar = cluster.package("dm-worker", "v8.5.2", &[Fault::WrongVersion]);
    let run = cluster.patch(&liar, &["-R", "dm-worker", "--wait-timeout", "3"]).code(1);
    assert_eq!(run.outcome_names(), ["rolled-back", "not-reached"]);
    assert!(run.json()["message"].as_str().unwrap().contains("expected v8.5.2"), "{run:?}");
    let first = &run.outcomes()[0].0;
    assert_eq!(cluster.version(first).as_deref(), Some("v8.5.1"));
    assert!(cluster.patched_ids().is_empty());
}

#[test]
fn a_leader_that_ignores_eviction_is_left_running() {
    let cluster = Cluster::start(Sandbox::builder().hosts(3).masters(3).workers(1).sources(1));
    let stubborn = cluster.package("dm-master", "v8.5.2", &[Fault::IgnoreEvict]);
    let good = cluster.package("dm-master", "v8.5.3", &[]);
    // Every master gets a binary that ignores eviction, so the leader runs it too.
    cluster.patch(&stubborn, &["-R", "dm-master"]).success();
    let leader = cluster.leader_id();
    let pids = cluster.pids();
    let run = cluster.patch(&good, &["-N", &leader, "--wait-timeout", "3"]).code(1);
    assert_eq!(run.outcome_names(), ["failed-unchanged"]);
    assert!(run.json()["message"].as_str().unwrap().contains("did not move"), "{run:?}");
    cluster.assert_untouched(&pids, [&leader]);
}

/// A signal while an instance is being patched puts that instance back as it was (never
/// stopped, never half-patched), leaves the rest untouched, and exits 130.
#[test]
fn ctrl_c_puts_the_instance_in_flight_back_and_stops() {
    let cluster = Cluster::start(Sandbox::builder().hosts(3).masters(1).workers(3).sources(2));
    let pkg = cluster.package("dm-worker", "v8.5.2", &[]);
    let run = cluster.patch_interrupted(&pkg, &["-R", "dm-worker"], ": stopping").code(130);
    assert_eq!(run.json()["result"], "interrupted");
    assert_eq!(run.outcome_names(), ["rolled-back", "not-reached", "not-reached"]);
    for (id, pid) in cluster.pids() {
        assert!(pid.is_some(), "{id} was left stopped");
        assert_eq!(cluster.version(&id).as_deref(), Some("v8.5.1"), "{id}");
    }
    assert!(cluster.patched_ids().is_empty());
}

/// The operator's SSH session to the bastion drops mid-roll: dm-patch gets SIGHUP and its
/// stdout and stderr go nowhere. It stops as on Ctrl-C (the instance in flight put back, never
/// left stopped) and exits 130, instead of dying where it was or on its first write.
#[test]
fn a_hangup_with_the_terminal_gone_puts_the_instance_back_and_stops() {
    use std::io::{BufRead, BufReader};
    let cluster = Cluster::start(Sandbox::builder().hosts(2).masters(1).workers(2).sources(1));
    let pkg = cluster.package("dm-worker", "v8.5.2", &[]);
    let name = cluster.sandbox.cluster_name();
    let args = ["patch", name, &pkg, "-R", "dm-worker", "--yes", "--format", "json"];
    let mut child = cluster
        .dm_patch()
        .args(args)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stderr.take().unwrap()).lines();
    let stopping = lines.by_ref().map_while(Result::ok).any(|line| line.contains(": stopping"));
    assert!(stopping, "the roll never got to stop an instance");
    // SAFETY: kill(2) of the child this test spawned and has not reaped.
    unsafe { libc::kill(child.id() as libc::pid_t, libc::SIGHUP) };
    drop(lines);
    drop(child.stdout.take());

    let status = child.wait().unwrap();
    assert_eq!(status.code(), Some(130), "{status:?}");
    for (id, pid) in cluster.pids() {
        assert!(pid.is_some(), "{id} was left stopped");
        assert_eq!(cluster.version(&id).as_deref(), Some("v8.5.1"), "{id}");
    }
    assert!(cluster.patched_ids().is_empty());
}

/// A signal during the health wait of a hotfix that never turns healthy undoes that instance
/// at once (not after --wait-timeout), and the run exits 130.
#[test]
fn ctrl_c_during_a_health_wait_undoes_the_instance_at_once() {
    let cluster = Cluster::start(Sandbox::builder().hosts(2).masters(1).workers(2).sources(1));
    let stuck = cluster.package("dm-worker", "v8.5.2", &[Fault::NeverHealthy]);
    let waiting = "waiting until healthy";
    let run = cluster.patch_interrupted(&stuck, &["-R", "dm-worker"], waiting).code(130);
    assert_eq!(run.outcome_names(), ["rolled-back", "not-reached"]);
    assert!(run.json()["message"].as_str().unwrap().contains("interrupted by a signal"), "{run:?}");
    let first = &run.outcomes()[0].0;
    assert_eq!(cluster.version(first).as_deref(), Some("v8.5.1"));
    assert!(cluster.patched_ids().is_empty());
}

/// Puts a script before the hosts' `systemctl`: `on_stop` runs for `systemctl stop`, every
/// other call goes to the sandbox's own.
fn on_systemctl_stop(cluster: &Cluster, on_stop: &str) {
    on_systemctl(cluster, "stop", on_stop);
}

/// Runs `script` before each `systemctl <verb>` on the sandbox's hosts.
pub fn on_systemctl(cluster: &Cluster, verb: &str, script: &str) {
    let stand_in = cluster.sandbox.stand_in_dir().join("systemctl");
    let real = cluster.sandbox.root().join("bin/systemctl.real");
    std::fs::rename(&stand_in, &real).unwrap();
    let wrapper = format!(
        "#!/bin/sh\nif [ \"$1\" = {verb} ]; then {script}; fi\nexec {} \"$@\"\n",
        real.display()
    );
    std::fs::write(&stand_in, wrapper).unwrap();
    std::fs::set_permissions(&stand_in, std::fs::Permissions::from_mode(0o755)).unwrap();
}

/// An instance whose systemd unit the host does not know (a store whose `systemd_mode` is not
/// the cluster's, a unit removed by hand) is refused in preflight, before any instance is
/// stopped, naming the unit; `--offline`, which stops nothing, does not ask for it.
#[test]
fn an_instance_without_its_systemd_unit_is_refused_before_anything_changes() {
    let cluster = Cluster::start(Sandbox::builder().hosts(2).masters(1).workers(2).sources(1));
    let pkg = cluster.package("dm-worker", "v8.5.2", &[]);
    let worker = cluster.ids("dm-worker")[1].clone();
    let instance = cluster.sandbox.instances().into_iter().find(|i| i.id == worker).unwrap();
    let unit = cluster.sandbox.host_dir(&instance.host).join("systemd").join(&instance.unit);
    std::fs::remove_file(&unit).unwrap();
    let pids = cluster.pids();

    let run = cluster.patch(&pkg, &["-R", "dm-worker"]).code(1);

    assert_eq!(run.json()["result"], "preflight-failed", "{}", run.stdout);
    let problems = run.json()["problems"].to_string();
    assert!(problems.contains(&format!("systemd does not know {}", instance.unit)), "{problems}");
    cluster.assert_untouched(&pids, pids.keys());
    let offline = cluster.patch(&pkg, &["-R", "dm-worker", "--offline"]).success();
    assert_eq!(offline.outcome_names(), ["patched", "patched"]);
}

/// A `systemctl stop` that succeeds but leaves the unit running (as one whose stop does not
/// reach the process would): the binary is not swapped under the running process; the
/// instance goes on running what it ran and the roll stops there.
#[test]
fn a_unit_still_active_after_stop_is_not_swapped() {
    let cluster = Cluster::start(Sandbox::builder().hosts(2).masters(1).workers(2).sources(1));
    let pkg = cluster.package("dm-worker", "v8.5.2", &[]);
    on_systemctl_stop(&cluster, "exit 0");
    let pids = cluster.pids();

    let run = cluster.patch(&pkg, &["-R", "dm-worker"]).code(1);

    assert_eq!(run.outcome_names(), ["rolled-back", "not-reached"], "{}", run.stdout);
    assert!(run.stderr.contains("still active after `systemctl stop`"), "{}", run.stderr);
    cluster.assert_untouched(&pids, pids.keys());
    let first = &run.outcomes()[0].0;
    assert_eq!(cluster.version(first).as_deref(), Some("v8.5.1"));
    let binary = cluster.deploy_dir(first).join("bin/dm-worker/dm-worker");
    let installed = std::fs::read(binary).unwrap();
    assert!(!installed.windows(6).any(|w| w == b"v8.5.2"), "the package was not swapped in");
}

/// A `systemctl stop` that never returns (a unit told to wait forever) holds the roll no
/// longer than `--wait-timeout`: the instance, never stopped, goes on running what it ran, and
/// the roll stops, saying which command did not finish.
#[test]
fn a_stop_that_never_returns_is_given_up_after_the_wait_timeout() {
    let cluster = Cluster::start(Sandbox::builder().hosts(2).masters(1).workers(2).sources(1));
    let pkg = cluster.package("dm-worker", "v8.5.2", &[]);
    // The hung stop is a `sleep` whose pid is kept, so that it does not outlive the test.
    let hung = cluster.sandbox.root().join("hung-stop.pid");
    on_systemctl_stop(&cluster, &format!("echo $$ > {}; exec sleep 10", hung.display()));
    let pids = cluster.pids();

    let run = cluster.patch(&pkg, &["-R", "dm-worker", "--wait-timeout", "2"]).code(1);
    let pid: libc::pid_t = std::fs::read_to_string(&hung).unwrap().trim().parse().unwrap();
    // SAFETY: kill(2) of the sleep this test's stand-in started (it may have exited already).
    unsafe { libc::kill(pid, libc::SIGKILL) };

    assert_eq!(run.outcome_names(), ["rolled-back", "not-reached"], "{}", run.stdout);
    let message = run.json()["message"].as_str().unwrap().to_owned();
    assert!(message.contains("did not finish within 2s (--wait-timeout)"), "{message}");
    assert!(message.contains("systemctl stop"), "{message}");
    cluster.assert_untouched(&pids, pids.keys());
    assert_eq!(cluster.version(&run.outcomes()[0].0).as_deref(), Some("v8.5.1"));
}

/// A host's SSH connection lost mid-roll (sshd restarted, a network blip) is made again by the
/// next command there, host key checked as the first time, and the roll goes on.
#[test]
fn a_connection_lost_mid_roll_is_made_again() {
    let cluster = Cluster::start(Sandbox::builder().hosts(2).masters(1).workers(2).sources(1));
    let pkg = cluster.package("dm-worker", "v8.5.2", &[]);
    let workers = cluster.ids("dm-worker");
    let host_of = |id: &str| id.split(':').next().unwrap().to_owned();
    let second_host = host_of(&workers[1]);
    assert_ne!(host_of(&workers[0]), second_host, "the workers are on different hosts");

    let run = cluster.patch_when(&pkg, &["-R", "dm-worker"], ": waiting until healthy", |_| {
        cluster.sandbox.drop_ssh_connections(&second_host);
    });

    let run = run.success();
    assert_eq!(run.outcome_names(), ["patched", "patched"]);
    assert!(run.stderr.contains("the SSH connection was lost; connecting again"), "{}", run.stderr);
    for id in &workers {
        assert_eq!(cluster.version(id).as_deref(), Some("v8.5.2"), "{id}");
    }
}

/// A run killed right after swapping the binary leaves the instance stopped on the package's
/// binary. The same command again finishes that job (start, gate) instead of calling the
/// instance "already on this package".
#[test]
fn a_rerun_finishes_an_instance_a_killed_run_left_stopped() {
    let cluster = Cluster::start(Sandbox::builder().hosts(2).masters(1).workers(2).sources(1));
    let pkg = cluster.package("dm-worker", "v8.5.2", &[]);
    let killed =
        cluster.patch_signalled(&pkg, &["-R", "dm-worker"], ": swapping the binary", "KILL");
    let line = killed.stderr.lines().find(|l| l.contains(": swapping the binary")).unwrap();
    let first = cluster.ids("dm-worker").into_iter().find(|id| line.contains(id.as_str())).unwrap();
    assert_eq!(cluster.sandbox.pid(&first), None, "the killed run left {first} stopped");
    let run = cluster.patch(&pkg, &["-R", "dm-worker"]).success();
    assert_eq!(run.outcome_names(), ["patched", "patched"]);
    for id in cluster.ids("dm-worker") {
        assert_eq!(cluster.version(&id).as_deref(), Some("v8.5.2"), "{id}");
    }
}

/// A run killed while a broken hotfix was failing its health wait leaves it running there.
/// The same command again does not pass it: it fails the gate and goes back to the binary the
/// killed run kept (which the re-run's staging must not delete).
#[test]
fn a_rerun_undoes_a_broken_instance_a_killed_run_left_behind() {
    let cluster = Cluster::start(Sandbox::builder().hosts(2).masters(1).workers(2).sources(1));
    let stuck = cluster.package("dm-worker", "v8.5.2", &[Fault::NeverHealthy]);
    let args = ["-R", "dm-worker", "--wait-timeout", "3"];
    cluster.patch_signalled(&stuck, &args, "waiting until healthy", "KILL");
    let run = cluster.patch(&stuck, &args).code(1);
    assert_eq!(run.outcome_names(), ["rolled-back", "not-reached"]);
    let first = &run.outcomes()[0].0;
    assert_eq!(cluster.version(first).as_deref(), Some("v8.5.1"));
    assert!(cluster.patched_ids().is_empty());
}

/// meta.yaml changed by another tool during the roll (`tiup dm edit-config` takes no lock of
/// dm-patch's): the `patched` marks are written into the file as it is then, and the change
/// stays.
#[test]
fn a_change_made_to_meta_yaml_during_the_roll_is_kept() {
    use dm_patch::topology::meta::Meta;
    let cluster = Cluster::start(Sandbox::builder().hosts(2).masters(1).workers(2).sources(1));
    let pkg = cluster.package("dm-worker", "v8.5.2", &[]);
    let meta_path = cluster.cluster_dir().join("meta.yaml");
    let edit_config = || {
        let mut meta: Meta = yaml_serde::from_str(&std::fs::read_to_string(&meta_path).unwrap())
            .expect("meta.yaml reads");
        let configs = "worker:\n  log-level: debug\n";
        meta.topology.server_configs = Some(yaml_serde::from_str(configs).unwrap());
        std::fs::write(&meta_path, yaml_serde::to_string(&meta).unwrap()).unwrap();
    };

    let run = cluster.patch_when(&pkg, &["-R", "dm-worker"], ": waiting until healthy", |_| {
        edit_config();
    });

    assert_eq!(run.success().outcome_names(), ["patched", "patched"]);
    let text = std::fs::read_to_string(&meta_path).unwrap();
    assert!(text.contains("log-level: debug"), "the edit was lost:\n{text}");
    assert_eq!(cluster.patched_ids(), id_set(&cluster.ids("dm-worker")));
}

/// meta.yaml turning unwritable during the roll stops it after the instance in flight, which
/// runs the package; the report says which instances are not marked and how to repair that.
#[test]
fn a_store_that_cannot_be_saved_stops_the_roll_and_says_what_changed() {
    let cluster = Cluster::start(Sandbox::builder().hosts(2).masters(1).workers(2).sources(1));
    let pkg = cluster.package("dm-worker", "v8.5.2", &[]);
    let meta = cluster.cluster_dir().join("meta.yaml");
    let mut frozen = None;
    let when = ": waiting until healthy";
    let run = cluster.patch_when(&pkg, &["-R", "dm-worker"], when, |_| {
        frozen = Some(Immutable::new(&meta));
    });
    let run = run.code(3);
    crate::support::conforms("report", &run.json());
    assert_eq!(run.json()["result"], "needs-attention");
    assert_eq!(run.outcome_names(), ["patched", "not-reached"]);
    let message = run.json()["message"].as_str().unwrap().to_owned();
    assert!(message.contains("meta.yaml could not be saved"), "{message}");
    assert!(message.contains(&run.outcomes()[0].0), "{message}");
}

/// `--offline` swaps side by side and marks them in one save: a store that turns unwritable
/// during the swaps fails the run (exit 3: the marks need a person), and the message names every
/// swapped instance.
#[test]
fn an_offline_run_whose_store_cannot_be_saved_names_every_swapped_instance() {
    let cluster = Cluster::start(Sandbox::builder().hosts(2).masters(1).workers(2).sources(1));
    let pkg = cluster.package("dm-worker", "v8.5.2", &[]);
    let meta = cluster.cluster_dir().join("meta.yaml");
    let mut frozen = None;
    let args = ["-R", "dm-worker", "--offline", "-c", "1"];
    let run = cluster.patch_when(&pkg, &args, ": swapping the binary", |_| {
        frozen = Some(Immutable::new(&meta));
    });
    let run = run.code(3);
    assert_eq!(run.outcome_names(), ["patched", "patched"]);
    let message = run.json()["message"].as_str().unwrap().to_owned();
    assert!(message.contains("meta.yaml could not be saved"), "{message}");
    for (id, _) in run.outcomes() {
        assert!(message.contains(&id), "{message}");
    }
    drop(frozen);
    assert!(cluster.patched_ids().is_empty());
}

/// A package from another release line is refused on what its binary reports, before any
/// service is touched; --allow-version-change lets it through.
#[test]
fn a_package_from_another_release_line_needs_allow_version_change() {
    let cluster = Cluster::start(Sandbox::builder().hosts(2).masters(1).workers(2).sources(1));
    let older = cluster.package("dm-worker", "v7.5.4", &[]);
    let pids = cluster.pids();
    let run = cluster.patch(&older, &["-R", "dm-worker"]).code(2);
    assert_eq!(run.json()["result"], "package-refused");
    assert!(run.stderr.contains("--allow-version-change"), "{run:?}");
    cluster.assert_untouched(&pids, pids.keys());
    assert!(cluster.patched_ids().is_empty());
    let run = cluster.patch(&older, &["-R", "dm-worker", "--allow-version-change"]).success();
    assert_eq!(run.outcome_names(), ["patched", "patched"]);
}

/// Everything the package holds lands in bin/, as TiUP unpacks it there; an undo takes all of
/// it back: replaced files restored, added ones removed.
#[test]
fn the_whole_package_is_installed_and_an_undo_takes_all_of_it_back() {
    let cluster = Cluster::start(Sandbox::builder().hosts(2).masters(1).workers(1).sources(1));
    let id = cluster.ids("dm-worker")[0].clone();
    let bin = cluster.deploy_dir(&id).join("bin/dm-worker");
    std::fs::write(bin.join("worker.toml"), "old").unwrap();
    let extra = [
        Entry::file("dm-worker/worker.toml", 0o644, b"new"),
        Entry::file("dm-worker/notes/hotfix.txt", 0o644, b"added"),
    ];
    let crashing = cluster.package_with("dm-worker", "v8.5.3", &[Fault::ExitAtStart], &extra);
    cluster.patch(&crashing, &["-N", &id]).code(1);
    assert_eq!(std::fs::read_to_string(bin.join("worker.toml")).unwrap(), "old");
    assert!(!bin.join("notes/hotfix.txt").exists(), "an added file outlived the undo");
    let good = cluster.package_with("dm-worker", "v8.5.2", &[], &extra);
    cluster.patch(&good, &["-N", &id]).success();
    assert_eq!(std::fs::read_to_string(bin.join("worker.toml")).unwrap(), "new");
    assert_eq!(std::fs::read_to_string(bin.join("notes/hotfix.txt")).unwrap(), "added");
}

/// A repack of the same binary with a file added is another package: "already on it" compares
/// every file, so the second run installs the file (TiUP would too).
#[test]
fn the_same_binary_in_another_package_is_installed() {
    let cluster = Cluster::start(Sandbox::builder().hosts(2).masters(1).workers(1).sources(1));
    let plain = cluster.package("dm-worker", "v8.5.2", &[]);
    cluster.patch(&plain, &["-R", "dm-worker"]).success();
    let fix = Entry::file("dm-worker/fix.toml", 0o644, b"level = 1\n");
    let repack = cluster.package_with("dm-worker", "v8.5.2", &[], &[fix]);

    let run = cluster.patch(&repack, &["-R", "dm-worker"]).success();

    assert_eq!(run.outcome_names(), ["patched"], "not skipped: {}", run.stderr);
    let id = &cluster.ids("dm-worker")[0];
    let installed = cluster.deploy_dir(id).join("bin/dm-worker/fix.toml");
    assert_eq!(std::fs::read_to_string(installed).unwrap(), "level = 1\n");
    let again = cluster.patch(&repack, &["-R", "dm-worker"]).success();
    assert_eq!(again.outcome_names(), ["skipped"], "now it is on it");
}

/// A run cut short between a leader's eviction and its restart leaves that master refusing to
/// lead; the next master roll lets it lead again, even one that restarts nothing.
#[test]
fn a_master_left_evicted_is_let_lead_again_by_the_next_master_roll() {
    let cluster = Cluster::start(Sandbox::builder().hosts(4).masters(3).workers(1).sources(1));
    let pkg = cluster.package("dm-master", "v8.5.2", &[]);
    let follower = cluster.ids("dm-master").into_iter().find(|id| *id != cluster.leader_id());
    let follower = follower.unwrap();
    cluster.patch(&pkg, &["-N", &follower]).success();
    cluster.sandbox.evict_leader();
    cluster.sandbox.wait_until("the eviction to take", Duration::from_secs(10), || {
        !cluster.sandbox.ineligible_masters().is_empty()
    });

    let run = cluster.patch(&pkg, &["-N", &follower]).success();

    assert_eq!(run.outcome_names(), ["skipped"], "nothing restarted");
    assert!(
        cluster.sandbox.ineligible_masters().is_empty(),
        "{:?}",
        cluster.sandbox.ineligible_masters()
    );
}

/// meta.yaml emptied while the roll runs (after the first worker was marked) is never written
/// over with an empty topology: the run stops and says which marks it could not record.
#[test]
fn a_meta_yaml_emptied_mid_roll_is_never_written() {
    let cluster = Cluster::start(Sandbox::builder().hosts(3).masters(1).workers(2).sources(2));
    let pkg = cluster.package("dm-worker", "v8.5.2", &[]);
    let meta = cluster.cluster_dir().join("meta.yaml");

    let run = cluster.patch_when(&pkg, &["-R", "dm-worker"], ": patched", |pid| {
        let signal = |name: &str| {
            let kill = std::process::Command::new("kill").args([name, &pid.to_string()]).status();
            assert!(kill.unwrap().success());
        };
        signal("-STOP");
        std::fs::write(&meta, "").unwrap();
        signal("-CONT");
    });

    let run = run.code(3);
    assert_eq!(std::fs::read_to_string(&meta).unwrap(), "", "left as it was found");
    let message = run.json()["message"].as_str().unwrap().to_owned();
    assert!(message.contains("no longer lists"), "{message}");
    assert!(message.contains("may not be marked patched"), "{message}");
}

/// An undo whose `systemctl start` fails says so, and how to start the instance: not that the
/// previous binary "was started, but did not turn healthy".
#[test]
fn an_undo_whose_start_fails_says_so() {
    let cluster = Cluster::start(Sandbox::builder().hosts(2).masters(1).workers(1).sources(1));
    let crashes = cluster.package("dm-worker", "v8.5.2", &[Fault::ExitAtStart]);
    // The first start (the hotfix's) goes through; every one after it fails, as a unit whose
    // start job fails would.
    let count = cluster.sandbox.root().join("starts");
    let script = format!(
        "n=$(($(cat {0} 2>/dev/null || echo 0) + 1)); echo $n > {0}; \
         if [ $n -ge 2 ]; then echo 'Job for the unit failed' >&2; exit 1; fi",
        count.display()
    );
    on_systemctl(&cluster, "start", &script);

    let run = cluster.patch(&crashes, &["-R", "dm-worker", "--wait-timeout", "5"]).code(3);

    assert_eq!(run.outcome_names(), ["needs-attention"], "{}", run.stdout);
    let message = run.json()["message"].as_str().unwrap().to_owned();
    assert!(message.contains("is back in place"), "{message}");
    assert!(message.contains("but starting it failed"), "{message}");
    assert!(!message.contains("was started"), "{message}");
}
