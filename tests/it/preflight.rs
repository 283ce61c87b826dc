//! A run that cannot reach its hosts stops before touching anything and says why, per host.

use std::process::Command;

use serde_json::Value;

use crate::support::{META_V3, Store};

#[test]
fn unreachable_hosts_stop_the_run_before_anything_changes() {
    let store = Store::new().cluster("demo", META_V3);
    let key = store.cluster_dir("demo").join("ssh/id_rsa");
    let keygen = Command::new("ssh-keygen")
        .args(["-q", "-t", "rsa", "-b", "2048", "-N", "", "-f"])
        .arg(&key)
        .status()
        .expect("ssh-keygen (openssh-client) is installed");
    assert!(keygen.success());
    let pkg = store.good_package("dm-worker");
    let before = store.meta("demo");

    // Nothing listens on 127.0.9.x: every connection is refused at once.
    let output = store
        .dm_patch([
            "patch",
            "demo",
            pkg.to_str().unwrap(),
            "-R",
            "dm-worker",
            "--yes",
            "--format",
            "json",
            "--ssh-timeout",
            "2",
        ])
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(1), "{output:?}");
    let report: Value = serde_json::from_slice(&output.stdout).unwrap();
    assert_eq!(report["result"], "preflight-failed");
    let problems: Vec<&str> = report["problems"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p.as_str().unwrap())
        .collect();
    assert_eq!(problems.len(), 2, "one problem per host: {problems:?}");
    assert!(problems[0].contains("127.0.9.1:22"), "{problems:?}");
    assert!(problems[1].contains("127.0.9.2:22"), "{problems:?}");
    assert!(
        report["instances"]
            .as_array()
            .unwrap()
            .iter()
            .all(|i| i["outcome"] == "not-reached")
    );
    assert_eq!(store.meta("demo"), before, "meta.yaml changed");

    // The run left an audit record TiUP's `tiup dm audit` can list.
    let audit = store.home().join("storage/dm/audit");
    let records: Vec<_> = std::fs::read_dir(&audit).unwrap().collect();
    assert_eq!(records.len(), 1);
    let record = std::fs::read_to_string(records[0].as_ref().unwrap().path()).unwrap();
    assert!(
        record.lines().next().unwrap().contains("patch demo"),
        "{record}"
    );
    assert!(record.contains("result: PreflightFailed"), "{record}");
}
