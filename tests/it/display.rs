//! `dm-patch display`: TiUP's table and JSON document, every component of the topology, with
//! live status and version. Nothing listens on 127.0.9.x, so every instance there reads Down.

use std::net::TcpListener;
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::support::{META_V2, Store};

/// A TiUP store's meta.yaml (yaml.v3) with prometheus, grafana and two alertmanagers besides
/// one dm-master and one dm-worker, all on 127.0.9.x.
pub const META_MONITORING: &str = include_str!("fixtures/meta-monitoring.yaml");

/// A cluster where nothing answers: every row reads Down, and the table is stable.
#[test]
fn table_of_an_unreachable_cluster() {
    let run = Store::demo().run(["display", "demo", "--ssh-timeout", "1"]).success();
    insta::assert_snapshot!(run.stdout);
}

#[test]
fn json_and_filters() {
    let store = Store::new().cluster("old", META_V2);
    let run = store.run(["display", "old", "-R", "dm-worker", "--format", "json"]).success();
    crate::support::conforms("display", &run.json());
    insta::assert_snapshot!(run.stdout);
}

fn monitoring() -> Store {
    Store::new().cluster("mon", META_MONITORING)
}

/// Prometheus, grafana and alertmanager rows as TiUP shows them: sorted by role, host and
/// ports, their ports (alertmanager web/cluster) and dirs (grafana has no data dir), counted.
#[test]
fn monitoring_components_in_the_table() {
    let run = monitoring().run(["display", "mon"]).success();
    insta::assert_snapshot!(run.stdout);
}

/// TiUP's JSON document: `cluster_meta` and `instances` with TiUP's field names, then
/// dm-patch's own fields.
#[test]
fn monitoring_components_in_json() {
    let run = monitoring().run(["display", "mon", "--format", "json"]).success();
    insta::assert_snapshot!(run.stdout);
}

/// TiUP's `--format default` is the text table.
#[test]
fn format_default_is_the_table() {
    let store = monitoring();
    let table = store.run(["display", "mon"]).success().stdout;
    assert_eq!(store.run(["display", "mon", "--format", "default"]).success().stdout, table);
    assert_eq!(store.run(["--format", "default", "display", "mon"]).success().stdout, table);
}

/// `--uptime` adds TiUP's Since column; nothing answers here, so it reads `-`.
#[test]
fn uptime_adds_a_since_column() {
    let run = monitoring().run(["display", "mon", "--uptime", "-R", "alertmanager"]).success();
    insta::assert_snapshot!(run.stdout);
}

/// `--version` prints the cluster's version and nothing else, in any format, as TiUP does.
#[test]
fn version_prints_only_the_cluster_version() {
    let store = monitoring();
    assert_eq!(store.run(["display", "mon", "--version"]).success().stdout, "v8.5.1\n");
    let json = store.run(["display", "mon", "--version", "--format", "json"]).success();
    assert_eq!(json.stdout, "v8.5.1\n");
}

fn ids(run: &crate::support::Run) -> Vec<String> {
    let document = run.json();
    let instances = document["instances"].as_array().cloned().unwrap_or_default();
    instances.iter().map(|i| i["id"].as_str().unwrap().to_owned()).collect()
}

#[test]
fn roles_and_nodes_choose_monitoring_rows_too() {
    let store = monitoring();
    let run = store.run(["display", "mon", "-R", "alertmanager,prometheus", "--format", "json"]);
    assert_eq!(ids(&run.success()), ["127.0.9.13:9093", "127.0.9.14:9093", "127.0.9.13:9090"]);
    let run = store.run(["display", "mon", "-N", "127.0.9.13:3000", "--format", "json"]);
    assert_eq!(ids(&run.success()), ["127.0.9.13:3000"]);

    // Nothing chosen: TiUP leaves `instances` out.
    let run = store.run(["display", "mon", "-R", "grafana", "-N", "127.0.9.11:8261"]).success();
    assert!(run.stdout.ends_with("Total nodes: 0\n"), "{}", run.stdout);
    let run = store
        .run(["display", "mon", "-R", "grafana", "-N", "127.0.9.11:8261", "--format", "json"])
        .success();
    assert_eq!(run.json().get("instances"), None);

    let line = store.run(["display", "mon", "-R", "tikv"]).code(2).stderr;
    assert_eq!(line.lines().count(), 1, "{line}");
    assert!(line.contains("unknown role 'tikv'") && line.contains("alertmanager"), "{line}");
    let line = store.run(["display", "mon", "-N", "127.0.9.13:1"]).code(2).stderr;
    assert!(line.contains("127.0.9.13:9090"), "{line}");
}

/// A `manage_host` different from `host` adds TiUP's Manage Host column; the status is asked
/// of the manage host.
#[test]
fn a_manage_host_adds_its_column() {
    let meta = "user: tidb\ndm_version: v8.5.1\ntopology:\n  worker_servers:\n  - host: 127.0.9.31\n  grafana_servers:\n  - host: 127.0.9.33\n    manage_host: 127.0.9.32\n";
    let store = Store::new().cluster("managed", meta);
    let run = store.run(["display", "managed"]).success();
    insta::assert_snapshot!(run.stdout);
    let run = store.run(["display", "managed", "--format", "json"]).success();
    let document = run.json();
    let rows = document["instances"].as_array().unwrap();
    let grafana = rows.iter().find(|r| r["role"] == "grafana").unwrap();
    assert_eq!(grafana["manage_host"], "127.0.9.32");
    let urls = &document["cluster_meta"]["grafana_urls"];
    assert_eq!(urls, &serde_json::json!(["http://127.0.9.33:3000"]));
}

/// `--status-timeout` bounds each status query: a dm-master whose port accepts connections
/// but never answers reads Down after that long, not after the default 10 s.
#[test]
fn status_timeout_bounds_each_query() {
    let silent = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = silent.local_addr().unwrap().port();
    let meta = format!(
        "user: tidb\ndm_version: v8.5.1\ntopology:\n  master_servers:\n  - host: 127.0.0.1\n    port: {port}\n"
    );
    let store = Store::new().cluster("silent", &meta);
    let started = Instant::now();
    let run = store.run(["display", "silent", "--status-timeout", "1", "--format", "json"]);
    let elapsed = started.elapsed();
    let document = run.success().json();
    assert_eq!(document["instances"][0]["status"], "Down");
    assert!(elapsed < Duration::from_secs(5), "took {elapsed:?}");
    assert!(elapsed >= Duration::from_secs(1), "did not wait: {elapsed:?}");
    let line = store.run(["display", "silent", "--status-timeout", "0"]).code(2).stderr;
    assert!(line.contains("--status-timeout"), "{line}");
}

/// display makes no SSH connection: any executor TiUP has is taken, an unknown one refused.
#[test]
fn executors_are_taken_and_unknown_ones_refused() {
    let store = monitoring();
    for args in [
        &["display", "mon", "--ssh", "system"][..],
        &["--ssh", "none", "display", "mon"],
        &["display", "mon", "--native-ssh"],
    ] {
        store.run(args).success();
    }
    let run = store.run(["display", "mon", "--ssh", "telnet"]).code(2);
    assert!(run.stdout.is_empty(), "{run:?}");
    assert!(run.stderr.contains("[possible values: builtin, system, none]"), "{run:?}");
}

/// Every modelled monitoring key is written back where TiUP writes it: a load and a save give
/// back the very bytes of a meta.yaml as current TiUP writes it.
#[test]
fn monitoring_sections_survive_a_save_byte_for_byte() {
    use dm_patch::topology::store::{self, Store as TiupStore};
    let store = monitoring();
    let tiup = TiupStore::locate(Some(store.home().to_owned())).unwrap();
    let cluster = tiup.load("mon").unwrap();
    let lock = tiup.lock("mon").unwrap();
    store::save(&cluster, &lock).unwrap();
    // Nothing to mark: the very bytes, quotes as Go's yaml.v3 wrote them included.
    assert_eq!(store.meta("mon"), META_MONITORING);
    let value: Value = serde_json::to_value(&cluster.monitors).unwrap();
    assert_eq!(value.as_array().unwrap().len(), 4);
}
