//! The most common DM layout, one spare dm-worker (3 workers, 2 sources, 2 tasks), through real
//! sshd: stopping a bound worker moves its source to the free worker at once, so a build is
//! judged where its subtasks run, and the roll orders workers so that each source moves once,
//! onto a worker that already runs the package.

use std::collections::BTreeMap;

use dm_sandbox::task_api::TaskStage;
use dm_sandbox::{Fault, Sandbox, SandboxBuilder};

use crate::cluster::Cluster;

/// 3 workers, 2 sources and 2 tasks over both: one worker is free.
fn spare_layout() -> SandboxBuilder {
    Sandbox::builder().hosts(4).masters(1).workers(3).sources(2).tasks(2)
}

pub fn one_spare_worker() -> Cluster {
    Cluster::start(spare_layout())
}

/// Every subtask the workers report is Running, and there are `tasks x sources` of them.
#[track_caller]
pub fn assert_all_running(cluster: &Cluster) {
    let subtasks = cluster.sandbox.subtasks();
    assert_eq!(subtasks.len(), 4, "{subtasks:?}");
    assert!(subtasks.iter().all(|(.., stage)| *stage == TaskStage::Running), "{subtasks:?}");
}

/// The worker IDs, keyed by member name.
fn worker_ids(cluster: &Cluster) -> BTreeMap<String, String> {
    let instances = cluster.sandbox.instances();
    instances.into_iter().filter(|i| i.role == "dm-worker").map(|i| (i.name, i.id)).collect()
}

/// How many times each source was bound to a worker in the master's log since `before`
/// events.
fn moves_since(cluster: &Cluster, before: usize) -> BTreeMap<String, usize> {
    let mut moves = BTreeMap::new();
    for (source, _) in cluster.sandbox.bind_events().into_iter().skip(before) {
        *moves.entry(source).or_default() += 1;
    }
    moves
}

#[test]
fn a_hotfix_that_pauses_subtasks_on_the_spare_worker_is_put_back_everywhere() {
    let cluster = one_spare_worker();
    let ids = worker_ids(&cluster);
    let bound = cluster.sandbox.bindings();
    let spare: Vec<&String> =
        ids.keys().filter(|name| !bound.values().any(|w| w == *name)).collect();
    assert_eq!(spare.len(), 1, "one free worker: {bound:?}");
    let (spare_name, spare_id) = (spare[0], &ids[spare[0]]);
    let bad = cluster.package("dm-worker", "v8.5.2", &[Fault::PausedTasks]);

    let plan = cluster.patch(&bad, &["-R", "dm-worker", "--dry-run"]).success().json();
    let steps = plan["instances"].as_array().unwrap();
    let positions: Vec<&str> = steps.iter().map(|s| s["position"].as_str().unwrap()).collect();
    assert_eq!(positions, ["free-worker", "bound-worker", "bound-worker"], "{plan}");
    assert_eq!(steps[0]["id"], spare_id.as_str(), "the plan puts the spare first");
    let sources: Vec<&str> = steps[1..].iter().map(|s| s["source"].as_str().unwrap()).collect();
    assert_eq!(sources.len(), 2, "the plan names each bound worker's source: {plan}");

    let run = cluster.patch(&bad, &["-R", "dm-worker"]).code(1);

    let message = run.json()["message"].as_str().unwrap().to_owned();
    let blamed = format!("worker {spare_name}, which runs the package");
    assert!(message.contains(&blamed), "names the spare: {message}");
    assert!(message.contains("failed to resume (paused-tasks)"), "DM's reason: {message}");
    for id in ids.values() {
        assert_eq!(cluster.version(id).as_deref(), Some("v8.5.1"), "{id} runs the old build");
        assert_eq!(cluster.installed_version(id), "v8.5.1", "{id} has the old build");
    }
    assert_all_running(&cluster);
    assert_eq!(cluster.sandbox.bindings().len(), 2, "every source bound");
    assert!(cluster.patched_ids().is_empty(), "{:?}", cluster.patched_ids());

    // The same cluster takes a good hotfix: every worker, each source moved at most once.
    let good = cluster.package("dm-worker", "v8.5.2", &[]);
    let before = cluster.sandbox.bind_events().len();
    let run = cluster.patch(&good, &["-R", "dm-worker"]).success();

    assert_eq!(run.outcome_names(), ["patched"; 3]);
    assert_eq!(run.outcomes()[0].0, *spare_id, "the free worker goes first");
    for id in ids.values() {
        assert_eq!(cluster.version(id).as_deref(), Some("v8.5.2"), "{id}");
    }
    let moves = moves_since(&cluster, before);
    assert!(moves.values().all(|count| *count <= 1), "each source moved at most once: {moves:?}");
    assert_all_running(&cluster);
    assert_eq!(cluster.sandbox.bindings().len(), 2, "every source bound");
}

/// Every subtask's checkpoint moves forward from `before` (the simulated upstream never rests).
#[track_caller]
fn assert_checkpoints_advance(cluster: &Cluster, before: &BTreeMap<(String, String), (u64, u64)>) {
    let after = cluster.sandbox.checkpoints();
    assert_eq!(after.len(), 4, "{after:?}");
    for (subtask, at) in &after {
        assert!(
            before.get(subtask).is_some_and(|was| at > was),
            "{subtask:?}: {before:?} -> {at:?}"
        );
    }
}

#[test]
fn a_hotfix_whose_subtasks_stall_fails_within_the_wait_and_runs_nowhere() {
    let cluster = one_spare_worker();
    let ids = worker_ids(&cluster);
    let stalled = cluster.package("dm-worker", "v8.5.2", &[Fault::StalledTasks]);
    let before = cluster.sandbox.checkpoints();

    let run = cluster.patch(&stalled, &["-R", "dm-worker", "--wait-timeout", "4"]).code(1);

    let message = run.json()["message"].as_str().unwrap().to_owned();
    assert!(message.contains("is Running on worker"), "{message}");
    assert!(message.contains("has not moved while the upstream is at"), "{message}");
    assert!(message.contains("runs the package"), "{message}");
    for id in ids.values() {
        assert_eq!(cluster.version(id).as_deref(), Some("v8.5.1"), "{id} runs the old build");
    }
    assert_all_running(&cluster);
    assert_checkpoints_advance(&cluster, &before);

    // A good build keeps every checkpoint moving.
    let good = cluster.package("dm-worker", "v8.5.2", &[]);
    let before = cluster.sandbox.checkpoints();
    let run = cluster.patch(&good, &["-R", "dm-worker", "--wait-timeout", "4"]).success();
    assert_eq!(run.outcome_names(), ["patched"; 3]);
    assert_checkpoints_advance(&cluster, &before);
}

#[test]
fn a_pending_shard_ddl_lock_refuses_the_roll_until_it_resolves() {
    let cluster = one_spare_worker();
    let source = "mysql-replica-02";
    cluster.sandbox.shard_ddl_lock("task-2", source, true);
    let good = cluster.package("dm-worker", "v8.5.2", &[]);
    let pids = cluster.pids();

    let refused = cluster.patch(&good, &["-R", "dm-worker"]).code(1);

    assert_eq!(refused.json()["result"], "preflight-failed");
    let problems = refused.json()["problems"].to_string();
    assert!(problems.contains(&format!("task 'task-2' on source '{source}'")), "{problems}");
    assert!(problems.contains("unresolved shard DDL lock task-2-"), "{problems}");
    cluster.assert_untouched(&pids, &cluster.ids("dm-worker"));

    cluster.sandbox.shard_ddl_lock("task-2", source, false);
    let run = cluster.patch(&good, &["-R", "dm-worker"]).success();
    assert_eq!(run.outcome_names(), ["patched"; 3]);
    assert_all_running(&cluster);
}

/// A lock that appears mid-roll holds the worker of its source until it resolves.
#[test]
fn a_shard_ddl_lock_met_mid_roll_is_waited_for() {
    let cluster = one_spare_worker();
    let good = cluster.package("dm-worker", "v8.5.2", &[]);
    let (source, worker) = cluster.sandbox.bindings().into_iter().next().unwrap();
    let id = worker_ids(&cluster)[&worker].clone();
    let checking = format!("{id}: checking that no shard DDL lock waits on its source");
    let sandbox = cluster.sandbox.clone();
    let mut resolver = None;

    let run = cluster.patch_watching(&good, &["-R", "dm-worker"], |line, pid| {
        if line.contains("Uploading the package") {
            // After the run's survey (which would refuse it), before its roll, a shard DDL
            // starts; dm-patch is held still meanwhile, so that it meets the lock in its roll.
            let signal = |name: &str| {
                let kill =
                    std::process::Command::new("kill").args([name, &pid.to_string()]).status();
                assert!(kill.unwrap().success());
            };
            signal("-STOP");
            sandbox.shard_ddl_lock("task-1", &source, true);
            signal("-CONT");
        } else if line.contains(&checking) && resolver.is_none() {
            let (sandbox, source) = (sandbox.clone(), source.clone());
            resolver = Some(std::thread::spawn(move || {
                std::thread::sleep(std::time::Duration::from_secs(1));
                sandbox.shard_ddl_lock("task-1", &source, false);
            }));
        }
    });
    resolver.expect("the roll checked for the lock").join().unwrap();

    let run = run.success();
    assert_eq!(run.outcome_names(), ["patched"; 3]);
    let events = cluster.sandbox.master_events();
    let at = |what: &str| events.iter().position(|e| e.starts_with(what));
    let resolved = at(&format!("shard DDL lock of task task-1 on source {source} resolved"));
    let stopped = at(&format!("worker {worker} is offline"));
    assert!(resolved.is_some() && stopped > resolved, "{worker} stopped after: {events:#?}");
    assert_all_running(&cluster);
}

/// `--canary 1` on the spare-worker layout: the free worker alone runs nothing, so the canary
/// phase also takes the first bound worker (whose source moves onto the free one); then the
/// soak watches them under traffic before the rest.
#[test]
fn a_good_build_passes_its_canary_soak_and_the_roll_goes_on() {
    let cluster = one_spare_worker();
    let good = cluster.package("dm-worker", "v8.5.2", &[]);
    let args = ["-R", "dm-worker", "--canary", "1", "--soak", "6s"];

    let plan = cluster.patch(&good, &[&args[..], &["--dry-run"]].concat()).success().json();
    let canaries: Vec<bool> = plan["instances"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| i["canary"].as_bool().unwrap())
        .collect();
    assert_eq!(canaries, [true, true, false], "the free worker and one bound worker: {plan}");
    assert_eq!(plan["soak_seconds"], 6);

    let started = std::time::Instant::now();
    let run = cluster.patch(&good, &args).success();

    assert!(started.elapsed().as_secs_f64() >= 6.0, "the run lasts at least the soak");
    assert_eq!(run.outcome_names(), ["patched"; 3]);
    crate::support::conforms("report", &run.json());
    let soaks = run.json()["soaks"].as_array().unwrap().clone();
    assert_eq!(soaks.len(), 1, "{soaks:?}");
    assert_eq!(soaks[0]["result"], "passed");
    assert_eq!(soaks[0]["canaries"].as_array().unwrap().len(), 2);
    assert!(soaks[0]["watched_seconds"].as_f64().unwrap() >= 6.0, "{soaks:?}");
    assert!(run.stderr.contains("soak: watching 2 instance(s) on the package"), "{}", run.stderr);
    assert_all_running(&cluster);
}

/// A build whose subtasks pause some seconds after taking a source passes each step's gate,
/// but not the soak: the canaries are put back, the rest never touched. (The pause comes 8 s
/// after the source moves, so that even a slow restart of the worker it left passes its gate
/// first.)
#[test]
fn a_build_that_pauses_during_the_soak_is_put_back_and_the_rest_is_untouched() {
    let cluster = Cluster::start(spare_layout().sim_env("DM_SIM_LATE_PAUSE_MS", "8000"));
    let late = cluster.package("dm-worker", "v8.5.2", &[Fault::LatePause]);
    let ids = worker_ids(&cluster);
    let pids = cluster.pids();

    let run = cluster.patch(&late, &["-R", "dm-worker", "--canary", "1", "--soak", "30s"]).code(1);

    let report = run.json();
    assert_eq!(report["soaks"][0]["result"], "failed", "{report}");
    let message = report["message"].as_str().unwrap();
    assert!(message.contains("the soak failed"), "{message}");
    assert!(message.contains("failed to resume (late-pause)"), "{message}");
    for id in ids.values() {
        assert_eq!(cluster.version(id).as_deref(), Some("v8.5.1"), "{id} runs the old build");
    }
    let untouched: Vec<&String> =
        ids.values().filter(|id| cluster.sandbox.pid(id) == pids[*id]).collect();
    assert_eq!(untouched.len(), 1, "the worker after the canaries never restarted");
    assert_eq!(run.outcomes().iter().filter(|(_, o)| o == "not-reached").count(), 1);
    assert_all_running(&cluster);
    assert!(cluster.patched_ids().is_empty(), "{:?}", cluster.patched_ids());
}

/// A canary restarted behind dm-patch's back during the soak fails it: the build is put back.
#[test]
fn a_canary_restarted_during_the_soak_fails_it() {
    let cluster = one_spare_worker();
    let good = cluster.package("dm-worker", "v8.5.2", &[]);
    let ids = worker_ids(&cluster);
    let bound = cluster.sandbox.bindings();
    let spare = ids.iter().find(|(name, _)| !bound.values().any(|w| w == *name)).unwrap().1;
    let host = spare.split(':').next().unwrap().to_owned();
    let args = ["-R", "dm-worker", "--canary", "1", "--soak", "30s"];

    let run = cluster.patch_when(&good, &args, "soak: watching", |_| {
        let restart = cluster.sandbox.ssh(&host, "systemctl restart dm-worker-8262.service");
        assert!(restart.status.success(), "{restart:?}");
    });

    let run = run.code(1);
    let message = run.json()["message"].as_str().unwrap().to_owned();
    assert!(message.contains(&format!("{spare} restarted during the soak")), "{message}");
    for id in ids.values() {
        assert_eq!(cluster.version(id).as_deref(), Some("v8.5.1"), "{id} put back");
    }
    assert_all_running(&cluster);
}

/// `--soak` alone watches after every instance.
#[test]
fn soak_alone_watches_after_each_instance() {
    let cluster =
        Cluster::start(Sandbox::builder().hosts(3).masters(1).workers(2).sources(2).tasks(1));
    let good = cluster.package("dm-worker", "v8.5.2", &[]);

    let run = cluster.patch(&good, &["-R", "dm-worker", "--soak", "1s"]).success();

    let soaks = run.json()["soaks"].as_array().unwrap().clone();
    assert_eq!(soaks.len(), 2, "{soaks:?}");
    assert!(soaks.iter().all(|soak| soak["result"] == "passed"), "{soaks:?}");
    assert_eq!(soaks[1]["canaries"].as_array().unwrap().len(), 2, "everything on the package");
}

fn one_spare_worker_with_openapi() -> Cluster {
    Cluster::start(spare_layout().openapi(true))
}

/// With DM's OpenAPI each bound worker's source is moved on purpose onto a free worker already
/// on the package, and proven there, before the bound worker stops.
#[test]
fn with_the_openapi_sources_move_on_purpose_before_their_worker_stops() {
    let cluster = one_spare_worker_with_openapi();
    let good = cluster.package("dm-worker", "v8.5.2", &[]);
    let before = cluster.sandbox.bind_events().len();

    let run = cluster.patch(&good, &["-R", "dm-worker"]).success();

    assert_eq!(run.outcome_names(), ["patched"; 3]);
    let moves = moves_since(&cluster, before);
    assert_eq!(moves.values().copied().collect::<Vec<_>>(), [1, 1], "each source once: {moves:?}");
    let events = cluster.sandbox.master_events();
    let transferred = events.iter().filter(|e| e.contains(" transferred from ")).count();
    assert_eq!(transferred, 2, "moved on purpose, not by a stop: {events:#?}");
    assert!(run.stderr.contains(", on the package"), "{}", run.stderr);
    let report = run.json();
    let moved: Vec<&serde_json::Value> = report["instances"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|i| i["moved"].as_array().unwrap())
        .collect();
    assert_eq!(moved.len(), 2, "the report says where each source went: {moved:?}");
    assert_all_running(&cluster);
}

/// With DM's OpenAPI a hotfix that pauses subtasks is caught on the free worker a source was
/// moved to, before the worker that held it is ever stopped.
#[test]
fn with_the_openapi_a_bad_hotfix_is_caught_before_a_bound_worker_stops() {
    let cluster = one_spare_worker_with_openapi();
    let bad = cluster.package("dm-worker", "v8.5.2", &[Fault::PausedTasks]);
    let ids = worker_ids(&cluster);
    let bound = cluster.sandbox.bindings();
    let pids = cluster.pids();

    let run = cluster.patch(&bad, &["-R", "dm-worker"]).code(1);

    let message = run.json()["message"].as_str().unwrap().to_owned();
    assert!(message.contains("proven bad"), "{message}");
    for worker in bound.values() {
        let id = &ids[worker];
        assert_eq!(
            cluster.sandbox.pid(id),
            pids[id],
            "{id}, bound, was never stopped: {}",
            run.stderr
        );
    }
    for id in ids.values() {
        assert_eq!(cluster.version(id).as_deref(), Some("v8.5.1"), "{id}");
    }
    assert_all_running(&cluster);
    assert_eq!(cluster.sandbox.bindings().len(), 2, "every source bound");
}

/// With DM's OpenAPI the canary phase is the free worker alone: a source is moved onto it on
/// purpose, and a build that fails the soak is put back with both bound workers never stopped.
#[test]
fn with_the_openapi_the_free_worker_alone_is_the_canary() {
    let cluster =
        Cluster::start(spare_layout().openapi(true).sim_env("DM_SIM_LATE_PAUSE_MS", "8000"));
    let late = cluster.package("dm-worker", "v8.5.2", &[Fault::LatePause]);
    let args = ["-R", "dm-worker", "--canary", "1", "--soak", "30s"];
    let plan = cluster.patch(&late, &[&args[..], &["--dry-run"]].concat()).success().json();
    let canaries: Vec<bool> =
        plan["instances"].as_array().unwrap().iter().map(|i| i["canary"] == true).collect();
    assert_eq!(canaries, [true, false, false], "{plan}");
    let ids = worker_ids(&cluster);
    let bound = cluster.sandbox.bindings();
    let pids = cluster.pids();

    let run = cluster.patch(&late, &args).code(1);

    let report = run.json();
    assert_eq!(report["soaks"][0]["result"], "failed", "{report}");
    assert_eq!(report["soaks"][0]["canaries"].as_array().unwrap().len(), 1, "{report}");
    for worker in bound.values() {
        let id = &ids[worker];
        assert_eq!(cluster.sandbox.pid(id), pids[id], "{id} was never stopped: {}", run.stderr);
    }
    for id in ids.values() {
        assert_eq!(cluster.version(id).as_deref(), Some("v8.5.1"), "{id}");
    }
    assert_all_running(&cluster);
}

/// A worker stopped by hand: selected, it is brought back (patched) before any other stops;
/// not selected, the roll is refused, since stopping another would leave two down at once.
#[test]
fn a_worker_already_offline_goes_first_or_refuses_the_roll() {
    let cluster = one_spare_worker();
    let ids = worker_ids(&cluster);
    let (_, stopped_worker) = cluster.sandbox.bindings().into_iter().next().unwrap();
    let stopped = ids[&stopped_worker].clone();
    cluster.sandbox.stop_service(&stopped);
    let good = cluster.package("dm-worker", "v8.5.2", &[]);
    let other = ids.values().find(|id| **id != stopped).unwrap().clone();
    let pids = cluster.pids();

    let refused = cluster.patch(&good, &["-N", &other]).code(1);
    assert!(
        refused.stderr.contains(&format!("dm-worker {stopped_worker} is offline")),
        "{}",
        refused.stderr
    );
    cluster.assert_untouched(&pids, ids.values());

    let run = cluster.patch(&good, &["-R", "dm-worker"]).success();
    assert_eq!(run.outcomes()[0].0, stopped, "the stopped worker first");
    assert_eq!(run.outcome_names(), ["patched"; 3]);
    for id in ids.values() {
        assert_eq!(cluster.version(id).as_deref(), Some("v8.5.2"), "{id} runs the hotfix");
    }
    assert_all_running(&cluster);
}

/// With no rollback point kept (`--keep-rollbacks 0`), a bad build on the spare cannot be put
/// back there: the run says so and names the command that can (`rollback --to-original`, with
/// `--force`: the subtasks the build paused are paused still), which does.
#[test]
fn a_bad_build_with_no_rollback_point_names_the_rollback_that_puts_it_back() {
    let cluster = one_spare_worker();
    let ids = worker_ids(&cluster);
    let bound = cluster.sandbox.bindings();
    let spare = ids.iter().find(|(name, _)| !bound.values().any(|w| w == *name));
    let spare_id = spare.expect("one free worker").1.clone();
    let bad = cluster.package("dm-worker", "v8.5.2", &[Fault::PausedTasks]);

    let run = cluster.patch(&bad, &["-R", "dm-worker", "--keep-rollbacks", "0"]).code(3);

    let said = run.json().to_string();
    let command = format!("dm-patch rollback --to-original -N {spare_id} --force");
    assert!(said.contains(&command), "names {command}: {said}");
    let name = cluster.sandbox.cluster_name();
    let args = ["rollback", name, "--to-original", "-N", &spare_id, "--force", "--yes"];
    crate::support::Run::of(cluster.dm_patch().args(args)).success();
    for id in ids.values() {
        assert_eq!(cluster.version(id).as_deref(), Some("v8.5.1"), "{id} runs the old build");
    }
    assert_all_running(&cluster);
}
