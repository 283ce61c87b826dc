//! The closing summary of a patch run through real sshd, as the operator reads it.
//!
//! `--offline`: the new binary is installed but runs only from each instance's next restart,
//! so the summary says "swapped (takes effect at restart)" and never claims the instance runs
//! the new version; a warning says so before the prompt. A failed instance: where its log is.

use dm_sandbox::{Fault, Sandbox};

use crate::cluster::Cluster;
use crate::hosts::{deploy_worker, hosts_with_workers, worker_hotfix};
use crate::support::{Run, Store, dm_patch};

const WARNING: &str = "warning: with --offline the new binaries take effect only at the next \
                       restart of each instance";

#[test]
fn offline_summary_says_the_binary_takes_effect_at_restart() {
    let (sandbox, _) = hosts_with_workers(2, deploy_worker);
    let packages = Store::new();
    let package = worker_hotfix(&packages, "v8.5.2");
    let patch = |format: &str| {
        let args = ["patch", sandbox.cluster_name(), &package, "-R", "dm-worker", "--offline"];
        Run::of(dm_patch(sandbox.tiup_home()).args(args).args(["--yes", "--format", format]))
            .success()
    };

    let run = patch("json");
    assert!(run.stderr.contains(WARNING), "{}", run.stderr);
    let report = run.json();
    for instance in report["instances"].as_array().unwrap() {
        assert_eq!(instance["outcome"], "patched", "{instance}");
        assert_eq!(instance["takes_effect"], "next-restart", "{instance}");
    }

    // Again, as text: both are skipped (already installed), and still only at restart.
    let run = patch("default");
    assert!(run.stderr.contains(WARNING), "{}", run.stderr);
    let table = run.stdout;
    assert!(table.contains("Binary"), "{table}");
    assert!(!table.contains("Version"), "{table}");
    assert!(table.contains("next restart"), "{table}");
    assert!(!table.contains("Patched cluster"), "{table}");
}

/// Patched once, offline, then shown in the summary table as swapped.
#[test]
fn offline_table_reads_swapped() {
    let (sandbox, _) = hosts_with_workers(1, deploy_worker);
    let packages = Store::new();
    let package = worker_hotfix(&packages, "v8.5.2");
    let args = ["patch", sandbox.cluster_name(), &package, "-R", "dm-worker", "--offline", "--yes"];
    let run = Run::of(dm_patch(sandbox.tiup_home()).args(args)).success();
    let row = run.stdout.lines().find(|l| l.contains("dm-worker ")).unwrap().to_owned();
    assert!(row.contains("swapped (takes effect at restart)"), "{}", run.stdout);
    assert!(run.stdout.contains("runs from each instance's next restart"), "{}", run.stdout);
}

/// An instance that failed is named on stderr with where to look: its log files on its host.
#[test]
fn a_failed_instance_points_at_its_log() {
    let cluster = Cluster::start(Sandbox::builder().hosts(2).masters(1).workers(1).sources(1));
    let crashing = cluster.package("dm-worker", "v8.5.3", &[Fault::ExitAtStart]);
    let run = cluster.patch(&crashing, &["-R", "dm-worker"]).code(1);
    assert_eq!(run.outcome_names(), ["rolled-back"]);
    let worker = cluster.sandbox.instances().into_iter().find(|i| i.role == "dm-worker").unwrap();
    let hint = format!(
        "{}: see its log {}/dm-worker.log (and {}/dm-worker_stderr.log) on {}",
        worker.id, worker.log_dir, worker.log_dir, worker.host
    );
    assert!(run.stderr.contains(&hint), "{hint:?} not in:\n{}", run.stderr);
}

/// What a script and an operator read of a run, whole: the JSON report and the summary table
/// of an `--offline` run, with what changes from run to run (times, addresses, paths, sums)
/// filtered out.
#[test]
fn the_report_and_the_table_read_as_expected() {
    let (sandbox, _) = hosts_with_workers(1, deploy_worker);
    let packages = Store::new();
    let package = worker_hotfix(&packages, "v8.5.2");
    let patch = |extra: &[&str]| {
        let args = ["patch", sandbox.cluster_name(), &package, "-R", "dm-worker", "--offline"];
        Run::of(dm_patch(sandbox.tiup_home()).args(args).args(["--yes"]).args(extra)).success()
    };
    let filters = vec![
        // Times first: a time's digits may read as a short sha.
        (r#""(seconds|watched_seconds)": [0-9.e-]+"#, r#""$1": "[SECONDS]""#),
        (r"\b[0-9a-f]{64}\b", "[SHA256]"),
        (r"\b[0-9a-f]{7}\b", "[SHA7]"),
        (r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ", "[TIME]"),
        (r"127\.\d+\.\d+\.\d+", "[IP]"),
        (r"/tmp/[^\s\x22]+", "[PATH]"),
        (r"in \d+\.\d+s", "in [SECONDS]s"),
        (r#""size": \d+"#, r#""size": "[SIZE]""#),
        // The table's columns are as wide as their widest cell: addresses differ in length.
        (r"\d+\.\ds\n", "[SECONDS]s\n"),
        (r" {2,}", "  "),
    ];
    let report = patch(&["--format", "json"]);
    let table = patch(&[]);
    insta::with_settings!({ filters => filters }, {
        insta::assert_snapshot!("offline_report_json", report.stdout);
        insta::assert_snapshot!("offline_summary_table", table.stdout);
    });
}
