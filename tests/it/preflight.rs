//! A run that cannot reach its hosts stops before touching anything and says why, per host.

use std::process::Command;

use crate::support::{Run, Store};

/// Patches the demo cluster's workers, whose hosts (127.0.9.x) refuse every connection at
/// once, with `--format <format>`.
fn patch_unreachable_workers(store: &Store, format: &str) -> Run {
    let key = store.cluster_dir("demo").join("ssh/id_rsa");
    let keygen = Command::new("ssh-keygen")
        .args(["-q", "-t", "rsa", "-b", "2048", "-N", "", "-f"])
        .arg(&key)
        .status()
        .expect("ssh-keygen (openssh-client) is installed");
    assert!(keygen.success());
    let pkg = store.good_package("dm-worker");
    let args = ["patch", "demo", &pkg, "-R", "dm-worker", "--yes", "--format", format];
    store.run(args.into_iter().chain(["--ssh-timeout", "2"])).code(1)
}

#[test]
fn unreachable_hosts_stop_the_run_before_anything_changes() {
    let store = Store::demo();
    let before = store.meta("demo");
    let run = patch_unreachable_workers(&store, "json");
    let report = run.json();
    assert_eq!(report["result"], "preflight-failed");
    let problems = report["problems"].as_array().unwrap();
    assert_eq!(problems.len(), 2, "one problem per host: {problems:?}");
    assert!(problems[0].as_str().unwrap().contains("127.0.9.1:22"), "{problems:?}");
    assert!(problems[1].as_str().unwrap().contains("127.0.9.2:22"), "{problems:?}");
    assert!(run.outcome_names().iter().all(|o| o == "not-reached"));
    assert_eq!(store.meta("demo"), before, "meta.yaml changed");
}

/// Every run leaves an audit record that TiUP's `tiup dm audit` can list.
#[test]
fn a_stopped_run_leaves_an_audit_record() {
    let store = Store::demo();
    patch_unreachable_workers(&store, "json");
    let audit = store.home().join("storage/dm/audit");
    let records: Vec<_> = std::fs::read_dir(&audit).unwrap().collect();
    assert_eq!(records.len(), 1);
    let record = std::fs::read_to_string(records[0].as_ref().unwrap().path()).unwrap();
    assert!(record.lines().next().unwrap().contains("patch demo"), "{record}");
    assert!(record.contains("result: preflight-failed"), "{record}");
}

/// stdout holds the result alone (the table); every problem and the reason go to stderr.
#[test]
fn problems_go_to_stderr_and_the_table_to_stdout() {
    let run = patch_unreachable_workers(&Store::demo(), "text");
    assert!(run.stdout.contains("not reached"), "{run:?}");
    assert!(!run.stdout.contains("127.0.9.1:22"), "a problem on stdout: {run:?}");
    assert!(!run.stdout.contains("problem(s) found"), "the reason on stdout: {run:?}");
    assert!(run.stderr.contains("127.0.9.1:22"), "{run:?}");
    assert!(run.stderr.contains("problem(s) found before touching any service"), "{run:?}");
}
