//! `dm-patch display` on a live sandbox cluster.

use std::time::{Duration, Instant};

use dm_sandbox::Sandbox;
use serde_json::Value;

use crate::cluster::Cluster;
use crate::support::Run;

#[test]
fn display_of_a_patched_live_cluster() {
    let cluster = Cluster::start(Sandbox::builder().hosts(5).masters(3).workers(3).sources(2));
    let pkg = cluster.package("dm-worker", "v8.5.2", &[]);
    cluster.patch(&pkg, &["-R", "dm-worker"]).success();

    let rows = json_rows(&display(&cluster, &["--format", "json"]));
    assert_eq!(rows.len(), 6);
    let leader = cluster.leader_id();
    for row in &rows {
        let id = row["id"].as_str().unwrap();
        match row["role"].as_str().unwrap() {
            "dm-worker (patched)" => {
                assert_eq!(row["version"], "v8.5.2");
                assert!(matches!(row["status"].as_str(), Some("Free" | "Bound")), "{row}");
            }
            "dm-master" => {
                assert_eq!(row["version"], "v8.5.1");
                let expected = if id == leader { "Healthy|L" } else { "Healthy" };
                assert_eq!(row["status"], expected);
            }
            other => panic!("unexpected role {other}"),
        }
    }

    // Volatile columns (addresses, paths) normalised, the table itself is stable.
    let table = display(&cluster, &[]).stdout;
    let root = cluster.sandbox.root().display().to_string();
    let normalised = table.replace(&root, "[ROOT]");
    // Subnets differ in width from run to run, so columns are compared as single spaces.
    insta::with_settings!({filters => vec![
            (r"127\.\d+\.\d+\.", "127.X.X."),
            (r"Cluster name:\s+\S+", "Cluster name: [NAME]"),
            (r"Healthy\|L", "Healthy"),
            (r"\b(Bound|Free)\b", "Free|Bound"),
            (r" {2,}", "  "),
            (r"(?m) +$", ""),
    ]}, {
            insta::assert_snapshot!(normalised);
        });
}

#[test]
fn stopped_worker_and_stopped_host() {
    let cluster = Cluster::start(Sandbox::builder().hosts(4).masters(3).workers(2).sources(1));
    let workers = cluster.ids("dm-worker");
    cluster.sandbox.stop_service(&workers[0]);
    let rows = json_rows(&display(&cluster, &["--format", "json"]));
    let stopped = rows.iter().find(|r| r["id"] == workers[0].as_str()).unwrap();
    assert!(matches!(stopped["status"].as_str(), Some("Offline" | "Down")), "{stopped}");

    // A whole host down (sshd and services): display still answers, within the timeout.
    let host = cluster.sandbox.instances().into_iter().find(|i| i.id == workers[1]).unwrap().host;
    cluster.sandbox.stop_host(&host);
    let started = Instant::now();
    let rows = json_rows(&display(&cluster, &["--format", "json", "--ssh-timeout", "2"]));
    assert!(started.elapsed() < Duration::from_secs(3), "display hung on a dead host");
    for row in rows.iter().filter(|r| r["host"] == host.as_str()) {
        assert_eq!(row["status"], "Down", "{row}");
        assert_eq!(row["version"], Value::Null);
    }
}

fn display(cluster: &Cluster, extra: &[&str]) -> Run {
    let name = cluster.sandbox.cluster_name();
    Run::of(cluster.dm_patch().args(["display", name]).args(extra)).success()
}

fn json_rows(run: &Run) -> Vec<Value> {
    serde_json::from_str(&run.stdout).unwrap()
}
