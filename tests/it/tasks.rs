//! The task gate through real sshd: a patch never leaves a migration task paused. The sandbox
//! clusters here have 2 tasks over 2 sources, and no free worker, so a restarted worker gets its
//! own source (and subtasks) back.

use dm_sandbox::task_api::TaskStage;
use dm_sandbox::{Fault, Sandbox};
use serde_json::Value;

use crate::cluster::Cluster;

fn two_tasks_over_two_sources() -> Cluster {
    Cluster::start(Sandbox::builder().hosts(3).masters(1).workers(2).sources(2).tasks(2))
}

/// Every (task, source) subtask the workers report, with its stage.
fn stages(cluster: &Cluster) -> Vec<(String, String, TaskStage)> {
    let subtasks = cluster.sandbox.subtasks();
    subtasks.into_iter().map(|(task, source, _, stage)| (task, source, stage)).collect()
}

fn all_running(cluster: &Cluster) -> bool {
    let stages = stages(cluster);
    stages.len() == 4 && stages.iter().all(|(_, _, stage)| *stage == TaskStage::Running)
}

/// The `(task, source, stage)` of one instance's `tasks` in a JSON report.
fn reported_tasks(instance: &Value) -> Vec<(String, String, String)> {
    let text = |t: &Value, key: &str| t[key].as_str().unwrap().to_owned();
    let tasks = instance["tasks"].as_array().unwrap();
    tasks.iter().map(|t| (text(t, "task"), text(t, "source"), text(t, "stage"))).collect()
}

/// Runs `dm-worker`'s faulty binary on `id`: swapped in offline, then restarted.
fn break_worker(cluster: &Cluster, id: &str) {
    let faulty = cluster.package("dm-worker", "v8.5.1", &[Fault::PausedTasks]);
    cluster.patch(&faulty, &["-N", id, "--offline"]).success();
    let host = id.split(':').next().unwrap();
    let restart = cluster.sandbox.ssh(host, "systemctl restart dm-worker-8262.service");
    assert!(restart.status.success(), "{restart:?}");
    cluster.sandbox.wait_until("a paused subtask", std::time::Duration::from_secs(20), || {
        stages(cluster).iter().any(|(_, _, stage)| *stage == TaskStage::Paused)
    });
}

#[test]
fn a_worker_roll_keeps_every_subtask_running_and_reports_them() {
    let cluster = two_tasks_over_two_sources();
    assert!(all_running(&cluster), "{:?}", stages(&cluster));
    let pkg = cluster.package("dm-worker", "v8.5.2", &[]);

    let run = cluster.patch(&pkg, &["-R", "dm-worker"]).success();

    assert_eq!(run.outcome_names(), ["patched"; 2]);
    for instance in run.json()["instances"].as_array().unwrap() {
        let tasks = reported_tasks(instance);
        assert_eq!(tasks.len(), 4, "{instance}");
        assert!(tasks.iter().all(|(_, _, stage)| stage == "Running"), "{instance}");
    }
    assert!(all_running(&cluster), "{:?}", stages(&cluster));
}

#[test]
fn a_hotfix_whose_subtasks_come_back_paused_is_rolled_back_and_the_roll_stops() {
    let cluster = two_tasks_over_two_sources();
    let pkg = cluster.package("dm-worker", "v8.5.2", &[Fault::PausedTasks]);
    let workers = cluster.ids("dm-worker");

    let run = cluster.patch(&pkg, &["-R", "dm-worker"]).code(1);

    assert_eq!(run.outcome_names(), ["rolled-back", "not-reached"]);
    let message = run.json()["message"].as_str().unwrap().to_owned();
    assert!(message.contains("task 'task-1' on source 'mysql-replica-0"), "{message}");
    assert!(message.contains("is Paused on worker"), "{message}");
    assert!(message.contains("failed to resume (paused-tasks)"), "DM's reason: {message}");
    for id in &workers {
        assert_eq!(cluster.version(id).as_deref(), Some("v8.5.1"), "{id}");
    }
    assert!(all_running(&cluster), "back on the old binary: {:?}", stages(&cluster));
}

#[test]
fn a_task_already_paused_is_refused_before_anything_changes_and_force_goes_ahead() {
    let cluster = two_tasks_over_two_sources();
    let workers = cluster.ids("dm-worker");
    break_worker(&cluster, &workers[0]);
    let pkg = cluster.package("dm-worker", "v8.5.2", &[]);
    let pids = cluster.pids();

    let refused = cluster.patch(&pkg, &["-R", "dm-worker"]).code(1);
    assert_eq!(refused.outcome_names(), ["not-reached"; 2]);
    assert!(refused.stderr.contains("is Paused on worker"), "{}", refused.stderr);
    assert!(refused.stderr.contains("pass --force"), "{}", refused.stderr);
    cluster.assert_untouched(&pids, &workers);

    let forced = cluster.patch(&pkg, &["-R", "dm-worker", "--force"]).success();
    assert!(forced.stderr.contains("--force: task '"), "{}", forced.stderr);
    assert_eq!(forced.json()["paused_before"].as_array().unwrap().len(), 2);
    assert_eq!(forced.outcome_names(), ["patched"; 2]);
    assert!(all_running(&cluster), "the hotfix fixed it: {:?}", stages(&cluster));
}

#[test]
fn display_shows_the_tasks_each_worker_runs() {
    let cluster = two_tasks_over_two_sources();
    let name = cluster.sandbox.cluster_name();

    let text = crate::support::Run::of(cluster.dm_patch().args(["display", name])).success();
    let header = text.stdout.lines().find(|line| line.starts_with("ID")).unwrap();
    assert!(header.trim_end().ends_with("Tasks"), "{}", text.stdout);
    let worker_lines: Vec<&str> =
        text.stdout.lines().filter(|line| line.contains("dm-worker")).collect();
    assert_eq!(worker_lines.len(), 2, "{}", text.stdout);
    assert!(
        worker_lines.iter().all(|line| line.trim_end().ends_with("2 running")),
        "{}",
        text.stdout
    );

    let json =
        crate::support::Run::of(cluster.dm_patch().args(["display", name, "--format", "json"]))
            .success()
            .json();
    for instance in json["instances"].as_array().unwrap() {
        if instance["component"] == "dm-worker" {
            let tasks = reported_tasks(instance);
            assert_eq!(tasks.len(), 2, "{instance}");
            assert!(tasks.iter().all(|(_, _, stage)| stage == "Running"), "{instance}");
        } else {
            assert!(instance.get("tasks").is_none(), "{instance}");
        }
    }
}
