//! `dm-patch rollback` through real sshd: back to what ran before the last patch, or to the
//! cluster's original binary, with the same rolling care as `patch`; and `history` of it all.

use std::collections::BTreeSet;

use dm_sandbox::{Fault, Sandbox};
use sha2::{Digest, Sha256};

use crate::cluster::{Cluster, id_set};
use crate::support::{Entry, Run};

/// The sha256 of the binary installed on `id`.
fn installed_sha256(cluster: &Cluster, id: &str) -> String {
    let binary = cluster.deploy_dir(id).join("bin/dm-worker/dm-worker");
    let digest = Sha256::digest(std::fs::read(binary).unwrap());
    digest.iter().map(|b| format!("{b:02x}")).collect()
}

fn rollback(cluster: &Cluster, args: &[&str]) -> Run {
    let mut all = vec!["rollback", cluster.sandbox.cluster_name()];
    all.extend(args);
    all.extend(["--yes", "--format", "json"]);
    Run::of(cluster.dm_patch().args(all))
}

#[test]
fn rollback_puts_back_the_previous_patch_then_the_original_and_history_tells_it_all() {
    let cluster = Cluster::start(Sandbox::builder().hosts(3).masters(1).workers(2).sources(2));
    let workers = cluster.ids("dm-worker");
    let original: Vec<String> = workers.iter().map(|id| installed_sha256(&cluster, id)).collect();
    let (a, b) =
        (cluster.package("dm-worker", "v8.5.2", &[]), cluster.package("dm-worker", "v8.5.3", &[]));
    cluster.patch(&a, &["-R", "dm-worker"]).success();
    let on_a: Vec<String> = workers.iter().map(|id| installed_sha256(&cluster, id)).collect();
    cluster.patch(&b, &["-R", "dm-worker"]).success();

    let name = cluster.sandbox.cluster_name();
    let display = Run::of(cluster.dm_patch().args(["display", name, "--format", "json"]));
    let display = display.success().json();
    for instance in display["instances"].as_array().unwrap() {
        let expected = (instance["component"] == "dm-worker").then_some("v8.5.2 (");
        let rollback_to = instance["rollback_to"].as_str();
        assert_eq!(rollback_to.map(|v| &v[..8]), expected, "{instance}");
    }
    let text = Run::of(cluster.dm_patch().args(["display", name, "--rollback-info"])).success();
    assert!(text.stdout.contains("Rollback To"), "{}", text.stdout);

    let plan = rollback(&cluster, &["-R", "dm-worker", "--dry-run"]).success().json();
    crate::support::conforms("rollback-plan", &plan);
    let to_version = plan["instances"][0]["to_version"].as_str().unwrap();
    assert_eq!(to_version.split(' ').next(), Some("v8.5.2"), "{plan}");
    assert_eq!(
        (plan["result"].as_str(), plan["schema_version"].as_u64()),
        (Some("planned"), Some(1))
    );

    let watcher = crate::patch::DownWatcher::start(&cluster, workers.clone());
    let back = rollback(&cluster, &["-R", "dm-worker"]).success();
    crate::support::conforms("report", &back.json());
    assert!(watcher.finish() <= 1, "two workers were down at once");
    assert_eq!(back.json()["action"], "rollback");
    assert_eq!(back.outcome_names(), ["patched"; 2]);
    for (id, sha) in workers.iter().zip(&on_a) {
        assert_eq!(cluster.version(id).as_deref(), Some("v8.5.2"), "{id}");
        assert_eq!(&installed_sha256(&cluster, id), sha, "{id}: A's very binary");
    }
    let members = cluster.members();
    assert!(members.workers().iter().all(|w| w.stage == "bound"), "{members:?}");
    assert_eq!(cluster.patched_ids(), id_set(&workers));

    rollback(&cluster, &["-R", "dm-worker", "--to-original"]).success();
    for (id, sha) in workers.iter().zip(&original) {
        assert_eq!(cluster.version(id).as_deref(), Some("v8.5.1"), "{id}");
        assert_eq!(&installed_sha256(&cluster, id), sha, "{id}: the original binary");
    }
    assert_eq!(cluster.patched_ids(), BTreeSet::new(), "meta.yaml: no longer patched");
    let display = Run::of(cluster.dm_patch().args(["display", cluster.sandbox.cluster_name()]));
    assert!(!display.success().stdout.contains("(patched)"));

    let history = Run::of(cluster.dm_patch().args([
        "history",
        cluster.sandbox.cluster_name(),
        "--format",
        "json",
    ]))
    .success()
    .json();
    crate::support::conforms("history", &history);
    let commands: Vec<&str> = history["runs"]
        .as_array()
        .unwrap()
        .iter()
        .map(|run| {
            if run["command"].as_str().unwrap().contains(" rollback ") {
                "rollback"
            } else {
                "patch"
            }
        })
        .collect();
    assert_eq!(commands, ["rollback", "rollback", "patch", "patch"], "newest first: {history}");
    let text = Run::of(cluster.dm_patch().args(["history", name])).success().stdout;
    let newest_line = text.lines().nth(2).unwrap();
    assert!(newest_line.contains("rollback") && newest_line.contains("success"), "{text}");
    assert!(newest_line.contains("-> v8.5.1 ("), "the version change: {text}");
    let newest = &history["runs"][0];
    assert_eq!(newest["result"], "success");
    let instance = &newest["instances"][0];
    assert_eq!(instance["outcome"], "patched", "{instance}");
    let before = instance["version_before"].as_str().unwrap();
    let after = instance["version_after"].as_str().unwrap();
    assert!(before.starts_with("v8.5.2 (") && after.starts_with("v8.5.1 ("), "{instance}");
}

#[test]
fn a_rollback_whose_target_will_not_start_is_itself_undone() {
    let cluster = Cluster::start(Sandbox::builder().hosts(2).masters(1).workers(1).sources(1));
    let worker = cluster.ids("dm-worker").remove(0);
    let added = [Entry::file("dm-worker/hotfix.toml", 0o644, b"[hotfix]\n")];
    let good = cluster.package_with("dm-worker", "v8.5.2", &[], &added);
    cluster.patch(&good, &["-R", "dm-worker"]).success();
    let running = installed_sha256(&cluster, &worker);
    // The binary that ran before no longer starts here (say, its config was changed since):
    // the rollback point holds one that exits at start, and its record says so.
    let crashing = cluster.package("dm-worker", "v8.5.1", &[Fault::ExitAtStart]);
    let points = cluster.deploy_dir(&worker).join("bin.rollback");
    let point = std::fs::read_dir(&points).unwrap().next().unwrap().unwrap().path();
    let mut archive =
        tar::Archive::new(flate2::read::GzDecoder::new(std::fs::File::open(&crashing).unwrap()));
    let mut entry = archive.entries().unwrap().next().unwrap().unwrap();
    let mut binary = Vec::new();
    std::io::Read::read_to_end(&mut entry, &mut binary).unwrap();
    let target = point.join("dm-worker/dm-worker");
    std::fs::remove_file(&target).unwrap();
    std::fs::write(&target, &binary).unwrap();
    std::fs::set_permissions(&target, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    let sha: String = Sha256::digest(&binary).iter().map(|b| format!("{b:02x}")).collect();
    let manifest = point.join(".manifest");
    let text = std::fs::read_to_string(&manifest).unwrap();
    let text: Vec<String> =
        text.lines()
            .map(|line| {
                if line.starts_with("binary ") { format!("binary {sha}") } else { line.to_owned() }
            })
            .collect();
    std::fs::write(&manifest, text.join("\n") + "\n").unwrap();

    let run = rollback(&cluster, &["-R", "dm-worker"]).code(1);

    assert_eq!(run.outcome_names(), ["rolled-back"]);
    assert!(
        run.json()["message"].as_str().unwrap().contains("exited after start"),
        "{}",
        run.stderr
    );
    assert_eq!(cluster.version(&worker).as_deref(), Some("v8.5.2"), "it keeps running what it ran");
    assert_eq!(installed_sha256(&cluster, &worker), running);
    let kept = cluster.deploy_dir(&worker).join("bin/dm-worker/hotfix.toml");
    assert_eq!(std::fs::read(kept).unwrap(), b"[hotfix]\n", "what its patch added is back");
}

#[test]
fn nothing_to_go_back_to_is_refused_naming_the_instance() {
    let cluster = Cluster::start(Sandbox::builder().hosts(2).masters(1).workers(1).sources(1));
    let worker = cluster.ids("dm-worker").remove(0);
    let run = rollback(&cluster, &["-R", "dm-worker"]).code(2);
    assert!(run.stderr.contains(&format!("nothing to go back to for {worker}")), "{}", run.stderr);
    assert!(run.stderr.contains("no dm-patch run has replaced its binary"), "{}", run.stderr);
    assert_eq!(run.stderr.lines().count(), 1, "{}", run.stderr);

    // Patched, but with no rollback point kept: that is what is said, and the way out.
    let pkg = cluster.package("dm-worker", "v8.5.2", &[]);
    cluster.patch(&pkg, &["-R", "dm-worker", "--keep-rollbacks", "0"]).success();
    let run = rollback(&cluster, &["-R", "dm-worker"]).code(2);
    assert!(run.stderr.contains("no rollback point was kept for it"), "{}", run.stderr);
    assert!(run.stderr.contains("--to-original"), "{}", run.stderr);
}

#[test]
fn masters_roll_back_followers_first_and_the_leader_last() {
    let cluster = Cluster::start(Sandbox::builder().hosts(3).masters(3).workers(1).sources(1));
    let pkg = cluster.package("dm-master", "v8.5.2", &[]);
    cluster.patch(&pkg, &["-R", "dm-master"]).success();
    let (leader, masters) = (cluster.leader_id(), cluster.ids("dm-master"));
    let watcher = crate::patch::DownWatcher::start(&cluster, masters.clone());

    let run = rollback(&cluster, &["-R", "dm-master"]).success();

    assert!(watcher.finish() <= 1, "two masters were down at once");
    let order: Vec<String> = run.outcomes().into_iter().map(|(id, _)| id).collect();
    assert_eq!((order.len(), order.last()), (3, Some(&leader)), "the leader goes last: {order:?}");
    for id in &masters {
        assert_eq!(cluster.version(id).as_deref(), Some("v8.5.1"), "{id}");
    }
    assert!(cluster.members().leader().is_some());
    assert_eq!(cluster.patched_ids(), BTreeSet::new(), "back on the original: not patched");
}

#[test]
fn a_rollback_point_that_changed_since_it_was_kept_is_refused() {
    let cluster = Cluster::start(Sandbox::builder().hosts(2).masters(1).workers(1).sources(1));
    let worker = cluster.ids("dm-worker").remove(0);
    let good = cluster.package("dm-worker", "v8.5.2", &[]);
    cluster.patch(&good, &["-R", "dm-worker"]).success();
    let points = cluster.deploy_dir(&worker).join("bin.rollback");
    let point = std::fs::read_dir(&points).unwrap().next().unwrap().unwrap().path();
    let binary = point.join("dm-worker/dm-worker");
    let mut bytes = std::fs::read(&binary).unwrap();
    bytes.extend_from_slice(b"\n# changed behind dm-patch's back\n");
    std::fs::remove_file(&binary).unwrap();
    std::fs::write(&binary, bytes).unwrap();
    std::fs::set_permissions(&binary, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    let pid = cluster.sandbox.pid(&worker);

    let run = rollback(&cluster, &["-R", "dm-worker"]).code(1);

    // In JSON mode the error is one JSON line on stderr, and stdout holds nothing.
    assert_eq!(run.stdout, "", "no document for a run that did not start");
    let error: serde_json::Value = serde_json::from_str(run.stderr.trim()).expect(&run.stderr);
    crate::support::conforms("error", &error);
    let message = error["error"].as_str().unwrap();
    assert!(message.contains("has changed since it was recorded"), "{error}");
    assert_eq!((error["kind"].as_str(), error["exit_code"].as_u64()), (Some("failed"), Some(1)));
    assert_eq!(error["schema_version"], 1);
    assert_eq!(cluster.sandbox.pid(&worker), pid, "untouched");
    assert_eq!(cluster.version(&worker).as_deref(), Some("v8.5.2"));
    // The refused rollback is on record, saying why and that nothing changed.
    let name = cluster.sandbox.cluster_name();
    let history = Run::of(cluster.dm_patch().args(["history", name, "--format", "json"]));
    let newest = history.success().json()["runs"][0].clone();
    assert!(newest["command"].as_str().unwrap().contains(" rollback "), "{newest}");
    assert_eq!(newest["result"], "failed", "{newest}");
    let message = newest["message"].as_str().unwrap();
    assert!(message.contains("has changed since it was recorded"), "{newest}");
    assert!(message.ends_with("nothing was changed"), "{newest}");
}

/// A rollback takes back all of a patch: the files it replaced come back, and the files it
/// added go (kept in the rollback's own point, so rolling that back brings them again).
#[test]
fn rollback_takes_back_the_files_a_patch_added() {
    let cluster = Cluster::start(Sandbox::builder().hosts(2).masters(1).workers(1).sources(1));
    let worker = cluster.ids("dm-worker").remove(0);
    let bin = cluster.deploy_dir(&worker).join("bin/dm-worker");
    let extra = [
        Entry::file("dm-worker/hotfix.toml", 0o644, b"[hotfix]\n"),
        Entry::file("dm-worker/lib/extra.so", 0o644, b"not really a library\n"),
    ];
    let with_files = cluster.package_with("dm-worker", "v8.5.2", &[], &extra);
    let before = installed_sha256(&cluster, &worker);
    cluster.patch(&with_files, &["-R", "dm-worker"]).success();
    assert!(bin.join("hotfix.toml").is_file() && bin.join("lib/extra.so").is_file());

    rollback(&cluster, &["-R", "dm-worker"]).success();
    assert_eq!(installed_sha256(&cluster, &worker), before, "the binary that ran before");
    assert!(!bin.join("hotfix.toml").exists(), "the file the patch added is gone");
    assert!(!bin.join("lib/extra.so").exists(), "the file the patch added is gone");
    assert_eq!(cluster.version(&worker).as_deref(), Some("v8.5.1"));

    // The rollback is a change too: taking it back brings the patch, files and all.
    rollback(&cluster, &["-R", "dm-worker"]).success();
    assert_eq!(cluster.version(&worker).as_deref(), Some("v8.5.2"));
    assert_eq!(std::fs::read(bin.join("hotfix.toml")).unwrap(), b"[hotfix]\n");
    assert!(bin.join("lib/extra.so").is_file());
}

/// Going back to the original takes back what every patch since added, not only the last one.
#[test]
fn rollback_to_the_original_takes_back_the_files_every_patch_added() {
    let cluster = Cluster::start(Sandbox::builder().hosts(2).masters(1).workers(1).sources(1));
    let worker = cluster.ids("dm-worker").remove(0);
    let bin = cluster.deploy_dir(&worker).join("bin/dm-worker");
    let original = installed_sha256(&cluster, &worker);
    let first = [Entry::file("dm-worker/hotfix.toml", 0o644, b"[hotfix]\n")];
    let second = [Entry::file("dm-worker/lib/extra.so", 0o644, b"not really a library\n")];
    for (version, files) in [("v8.5.2", &first), ("v8.5.3", &second)] {
        let package = cluster.package_with("dm-worker", version, &[], files);
        cluster.patch(&package, &["-R", "dm-worker"]).success();
    }
    assert!(bin.join("hotfix.toml").is_file() && bin.join("lib/extra.so").is_file());

    // The plan says what goes.
    let args = ["-R", "dm-worker", "--to-original", "--dry-run"];
    let plan = rollback(&cluster, &args).success().json();
    let deletes = serde_json::json!(["dm-worker/hotfix.toml", "dm-worker/lib/extra.so"]);
    assert_eq!(plan["instances"][0]["deletes"], deletes, "{plan}");

    rollback(&cluster, &["-R", "dm-worker", "--to-original"]).success();
    assert_eq!(installed_sha256(&cluster, &worker), original, "the original binary");
    assert_eq!(cluster.version(&worker).as_deref(), Some("v8.5.1"));
    assert!(!bin.join("hotfix.toml").exists(), "the first patch's file is gone");
    assert!(!bin.join("lib/extra.so").exists(), "the second patch's file is gone");

    // Undone in turn, both files come back with the binary they came with.
    rollback(&cluster, &["-R", "dm-worker"]).success();
    assert_eq!(cluster.version(&worker).as_deref(), Some("v8.5.3"));
    assert!(bin.join("hotfix.toml").is_file() && bin.join("lib/extra.so").is_file());
}

/// `.added` comes from the host: a line that is not a plain path inside `bin/` refuses the
/// rollback before anything changes, instead of deleting whatever it names.
#[test]
fn a_rollback_point_listing_a_path_outside_bin_is_refused() {
    let cluster = Cluster::start(Sandbox::builder().hosts(2).masters(1).workers(1).sources(1));
    let worker = cluster.ids("dm-worker").remove(0);
    let added = [Entry::file("dm-worker/hotfix.toml", 0o644, b"[hotfix]\n")];
    let package = cluster.package_with("dm-worker", "v8.5.2", &[], &added);
    cluster.patch(&package, &["-R", "dm-worker"]).success();
    let points = cluster.deploy_dir(&worker).join("bin.rollback");
    let point = std::fs::read_dir(&points).unwrap().next().unwrap().unwrap().path();
    std::fs::write(point.join(".added"), "dm-worker/hotfix.toml\n../../conf/dm-worker.toml\n")
        .unwrap();
    let pids = cluster.pids();

    let run = rollback(&cluster, &["-R", "dm-worker"]).code(2);
    let error: serde_json::Value = serde_json::from_str(run.stderr.trim()).expect(&run.stderr);
    let message = error["error"].as_str().unwrap();
    assert!(message.contains("\"../../conf/dm-worker.toml\""), "{message}");
    assert!(message.contains("nothing was changed"), "{message}");
    assert_eq!(error["kind"], "bad-input");
    cluster.assert_untouched(&pids, pids.keys());
    assert_eq!(cluster.version(&worker).as_deref(), Some("v8.5.2"));
}

/// A rollback cut short (SIGINT, or SIGKILL) while it stops its second worker is finished by
/// the same command: the first worker, already back, is recognised as there (its newest point
/// is the one the cut-short rollback left), and marks are true at every moment.
#[test]
fn a_rollback_cut_short_is_finished_by_the_same_command() {
    let cluster = Cluster::start(Sandbox::builder().hosts(3).masters(1).workers(2).sources(2));
    let workers = cluster.ids("dm-worker");
    let original: Vec<String> = workers.iter().map(|id| installed_sha256(&cluster, id)).collect();
    let hotfix = cluster.package("dm-worker", "v8.5.2", &[]);
    let name = cluster.sandbox.cluster_name().to_owned();
    let args = ["rollback", &name, "-R", "dm-worker", "--yes", "--format", "json"];
    for signal in ["-INT", "-KILL"] {
        cluster.patch(&hotfix, &["-R", "dm-worker"]).success();
        let mut stops = 0;
        let cut = cluster.run_watching(&args, |line, pid| {
            stops += usize::from(line.contains(": stopping"));
            if stops == 2 && line.contains(": stopping") {
                let kill =
                    std::process::Command::new("kill").args([signal, &pid.to_string()]).status();
                assert!(kill.unwrap().success());
            }
        });
        assert_ne!(cut.code, Some(0), "{signal}: cut short: {}", cut.stderr);
        let back: Vec<&String> =
            workers.iter().filter(|id| cluster.version(id).as_deref() == Some("v8.5.1")).collect();
        let marked = cluster.patched_ids();
        assert!(back.iter().all(|id| !marked.contains(*id)), "{signal}: marks true: {marked:?}");

        let finished = Run::of(cluster.dm_patch().args(args)).success();

        assert!(finished.outcome_names().contains(&"skipped".to_owned()), "{}", finished.stdout);
        for (id, sha) in workers.iter().zip(&original) {
            assert_eq!(cluster.version(id).as_deref(), Some("v8.5.1"), "{signal}: {id}");
            assert_eq!(&installed_sha256(&cluster, id), sha, "{signal}: {id}");
        }
        assert!(cluster.patched_ids().is_empty(), "{signal}: {:?}", cluster.patched_ids());
        let members = cluster.members();
        assert!(members.workers().iter().all(|w| w.stage == "bound"), "{members:?}");
    }
    // The killed rollback's scratch (the fetched target) was in the store, not in /tmp.
    let in_tmp = std::fs::read_dir(std::env::temp_dir()).unwrap().filter_map(Result::ok);
    let left: Vec<_> = in_tmp
        .filter(|e| e.file_name().to_string_lossy().starts_with("dm-patch-rollback-"))
        .collect();
    assert!(left.is_empty(), "{left:?}");
}

/// A patch killed in the middle of an instance leaves it stopped (before or after its swap,
/// or starting the new binary); `rollback` undoes what that run left, from its staging dir, and
/// starts it. Nothing of the killed run is left behind.
#[test]
fn rollback_after_a_patch_killed_mid_instance_brings_it_back() {
    for when in [": stopping", ": swapping the binary", ": starting"] {
        let cluster = Cluster::start(Sandbox::builder().hosts(3).masters(1).workers(2).sources(2));
        let workers = cluster.ids("dm-worker");
        let original: Vec<String> =
            workers.iter().map(|id| installed_sha256(&cluster, id)).collect();
        let pkg = cluster.package("dm-worker", "v8.5.2", &[]);

        let killed = cluster.patch_signalled(&pkg, &["-R", "dm-worker"], when, "KILL");

        let line = killed.stderr.lines().find(|l| l.contains(when)).unwrap();
        let hit = workers.iter().find(|id| line.contains(id.as_str())).unwrap();
        rollback(&cluster, &["-N", hit]).success();
        for (id, sha) in workers.iter().zip(&original) {
            assert_eq!(cluster.version(id).as_deref(), Some("v8.5.1"), "{when}: {id} runs");
            assert_eq!(&installed_sha256(&cluster, id), sha, "{when}: {id}");
        }
        assert!(cluster.patched_ids().is_empty(), "{when}: {:?}", cluster.patched_ids());
        let deploy = cluster.deploy_dir(hit);
        let left: Vec<String> = std::fs::read_dir(&deploy)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .filter(|name| name.starts_with("bin.patch-"))
            .collect();
        assert!(left.is_empty(), "{when}: {left:?}");
    }
}

/// A run killed mid-roll still shows in `history`: its record says from the start what the run
/// is about, and each instance as it finished.
#[test]
fn a_killed_run_shows_in_history_with_what_it_did() {
    let cluster = Cluster::start(Sandbox::builder().hosts(3).masters(1).workers(2).sources(2));
    let pkg = cluster.package("dm-worker", "v8.5.2", &[]);
    let mut finished = None;
    let killed = cluster.patch_watching(&pkg, &["-R", "dm-worker"], |line, pid| {
        if finished.is_none() && line.ends_with(": patched") {
            finished = line.split_whitespace().nth(2).map(|id| id.trim_end_matches(':').to_owned());
            let kill =
                std::process::Command::new("kill").args(["-KILL", &pid.to_string()]).status();
            assert!(kill.unwrap().success());
        }
    });
    assert_eq!(killed.code, None, "killed");
    let finished = finished.expect("an instance finished before the kill");

    let name = cluster.sandbox.cluster_name();
    let history = Run::of(cluster.dm_patch().args(["history", name, "--format", "json"]));
    let history = history.success().json();

    let run = &history["runs"][0];
    assert_eq!(run["result"], "unfinished", "{history}");
    let instances = run["instances"].as_array().unwrap();
    let done = instances.iter().find(|i| i["id"] == finished.as_str()).expect("the finished one");
    assert_eq!(done["outcome"], "patched", "{history}");
}

/// A rollback holds the cluster's lock from its survey of the instances to its last mark: no
/// other run can change them in between. Frozen as it surveys (SIGSTOP), it holds the lock.
#[test]
fn a_rollback_holds_the_lock_from_its_survey_on() {
    let cluster = Cluster::start(Sandbox::builder().hosts(2).masters(1).workers(1).sources(1));
    let good = cluster.package("dm-worker", "v8.5.2", &[]);
    cluster.patch(&good, &["-R", "dm-worker"]).success();
    let name = cluster.sandbox.cluster_name();
    let args = ["rollback", name, "-R", "dm-worker", "--yes", "-v"];
    let mut held_during_survey = None;
    let run = cluster.run_watching(&args, |line, pid| {
        if held_during_survey.is_none() && line.contains("dm-patch-survey ") {
            let signal = |name: &str| {
                let sent =
                    std::process::Command::new("kill").args([name, &pid.to_string()]).status();
                assert!(sent.unwrap().success());
            };
            signal("-STOP");
            held_during_survey = Some(flock_holders(&cluster.cluster_dir()).contains(&pid));
            signal("-CONT");
        }
    });
    run.success();
    assert_eq!(held_during_survey, Some(true), "the cluster was not locked while surveyed");
}

/// The pids holding an flock on `path`, as the kernel lists them in /proc/locks.
fn flock_holders(path: &std::path::Path) -> Vec<u32> {
    use std::os::unix::fs::MetadataExt;
    let inode = format!(":{}", std::fs::metadata(path).unwrap().ino());
    let locks = std::fs::read_to_string("/proc/locks").unwrap();
    locks
        .lines()
        .filter_map(|line| {
            // `1: FLOCK  ADVISORY  WRITE 1234 08:01:5678 0 EOF`
            let fields: Vec<&str> = line.split_whitespace().collect();
            let on_path = fields.get(1) == Some(&"FLOCK") && fields.get(5)?.ends_with(&inode);
            on_path.then(|| fields.get(4)?.parse().ok())?
        })
        .collect()
}
