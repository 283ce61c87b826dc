//! A cluster deployed with `global.enable_tls`: every instance serves its API over HTTPS and
//! wants a client certificate signed by the cluster's CA. dm-patch uses the store's `tls/`
//! files, as TiUP does, and works as on a plain cluster; a bad certificate is a TLS problem
//! naming the file, a missing or unreadable file is bad input caught before any host is
//! contacted.

use std::fs;
use std::path::Path;
use std::time::Duration;

use dm_sandbox::{Sandbox, SandboxBuilder};
use serde_json::Value;

use crate::cluster::{Cluster, id_set};
use crate::support::Run;

/// Long enough for a new leader's scheduler to start and for a log line to be written.
const SETTLE: Duration = Duration::from_secs(10);

fn tls_cluster(builder: SandboxBuilder) -> Cluster {
    Cluster::start(builder.tls(true))
}

/// `display --format json` as `(component, status, running version, row)` per instance.
fn display_rows(cluster: &Cluster) -> Vec<(String, String, String, Value)> {
    let name = cluster.sandbox.cluster_name();
    let run = Run::of(cluster.dm_patch().args(["display", name, "--format", "json"])).success();
    let json: Value = serde_json::from_str(&run.stdout).expect("display prints JSON");
    // TiUP's shape (`instances`, whose `version` is the cluster's); a bare list of rows before.
    let rows = json.get("instances").unwrap_or(&json).as_array().expect("rows").clone();
    let text = |row: &Value, key: &str| row[key].as_str().unwrap_or_default().to_owned();
    rows.into_iter()
        .map(|row| {
            let component = text(&row, "role").split(' ').next().unwrap_or_default().to_owned();
            let running = match row.get("running_version") {
                Some(_) => text(&row, "running_version"),
                None => text(&row, "version"),
            };
            (component, text(&row, "status"), running, row)
        })
        .collect()
}

#[test]
fn workers_are_patched_over_mutual_tls_and_display_sees_them() {
    let cluster = tls_cluster(Sandbox::builder().hosts(3).masters(2).workers(2).sources(1));
    let pkg = cluster.package("dm-worker", "v8.5.2", &[]);
    let workers = cluster.ids("dm-worker");
    let run = cluster.patch(&pkg, &["-R", "dm-worker"]).success();
    assert_eq!(run.outcome_names(), ["patched"; 2]);
    assert_eq!(cluster.patched_ids(), id_set(&workers));

    let leader = cluster.leader_id();
    let rows = display_rows(&cluster);
    assert_eq!(rows.len(), 4);
    for (component, status, running, row) in &rows {
        match component.as_str() {
            "dm-worker" => {
                assert_eq!(running, "v8.5.2", "{row}");
                assert!(matches!(status.as_str(), "Free" | "Bound"), "{row}");
            }
            "dm-master" => {
                assert_eq!(running, "v8.5.1", "{row}");
                let expected = if row["id"] == leader.as_str() { "Healthy|L" } else { "Healthy" };
                assert_eq!(status, expected, "{row}");
            }
            other => panic!("unexpected component {other}: {row}"),
        }
    }
}

#[test]
fn masters_are_patched_over_mutual_tls_with_the_leader_evicted_last() {
    let cluster = tls_cluster(Sandbox::builder().hosts(3).masters(3).workers(1).sources(1));
    let pkg = cluster.package("dm-master", "v8.5.2", &[]);
    let (leader, masters) = (cluster.leader_id(), cluster.ids("dm-master"));
    let run = cluster.patch(&pkg, &["-R", "dm-master"]).success();
    let order: Vec<String> = run.outcomes().into_iter().map(|(id, _)| id).collect();
    assert_eq!((order.len(), order.last()), (3, Some(&leader)), "the leader goes last: {order:?}");
    assert_eq!(run.outcome_names(), ["patched"; 3]);
    assert_ne!(cluster.leader_id(), leader, "the old leader was evicted over HTTPS");
    assert_eq!(cluster.patched_ids(), id_set(&masters));

    // Right after the last leader change DM's new leader may not have started its scheduler
    // (workers then read N/A, on a plain cluster too): display once the worker is listed again.
    let bound = || cluster.members().workers().iter().any(|w| w.stage == "bound");
    cluster.sandbox.wait_until("the worker to be listed bound again", SETTLE, bound);
    let rows = display_rows(&cluster);
    let leaders = rows.iter().filter(|(_, status, _, _)| status == "Healthy|L").count();
    assert_eq!(leaders, 1, "{rows:?}");
    for (component, status, running, row) in &rows {
        match component.as_str() {
            "dm-master" => {
                assert_eq!(running, "v8.5.2", "{row}");
                assert!(matches!(status.as_str(), "Healthy" | "Healthy|L"), "{row}");
            }
            "dm-worker" => {
                assert_eq!(running, "v8.5.1", "{row}");
                assert_eq!(status, "Bound", "{row}");
            }
            other => panic!("unexpected component {other}: {row}"),
        }
    }
}

/// The store's client certificate is replaced by one from another CA: the instances refuse it,
/// and dm-patch says so, naming the file, without touching anything (exit 1: the cluster
/// refused). The other way round, a store CA that did not sign the instances' certificates
/// makes dm-patch refuse them, naming that file.
#[test]
fn a_client_certificate_from_another_ca_is_refused_and_named() {
    let cluster = tls_cluster(Sandbox::builder().hosts(2).masters(1).workers(1).sources(1));
    let pkg = cluster.package("dm-worker", "v8.5.2", &[]);
    let tls_dir = cluster.sandbox.store_tls_dir();
    let ca_crt = tls_dir.join("ca.crt");
    let cluster_ca = fs::read(&ca_crt).unwrap();
    let stranger = dm_sandbox::tls::ClusterCa::new().unwrap();
    fs::write(&ca_crt, stranger.cert_pem()).unwrap();
    let pids = cluster.pids();

    let run = cluster.patch(&pkg, &["-R", "dm-worker"]).code(1);
    let said = format!("{}\n{}", run.stdout, run.stderr);
    let named = ca_crt.display().to_string();
    assert!(said.contains("TLS: the instance's certificate is not valid"), "{said}");
    assert!(said.contains(&named), "names {named}: {said}");
    fs::write(&ca_crt, cluster_ca).unwrap();

    dm_sandbox::tls::write_foreign_client(&tls_dir, cluster.sandbox.cluster_name()).unwrap();

    let run = cluster.patch(&pkg, &["-R", "dm-worker"]).code(1);
    let said = format!("{}\n{}", run.stdout, run.stderr);
    let client_crt = tls_dir.join("client.crt").display().to_string();
    assert!(said.contains("TLS"), "reported as a TLS problem: {said}");
    assert!(said.contains(&client_crt), "names {client_crt}: {said}");
    assert!(said.contains("refused the client certificate"), "{said}");
    assert!(!said.contains("use --offline"), "advice for a stopped cluster: {said}");
    cluster.assert_untouched(&pids, pids.keys());
    assert!(cluster.patched_ids().is_empty());

    // display still shows the cluster (exit 0, as TiUP's), and says why no master answered.
    let name = cluster.sandbox.cluster_name();
    let display = Run::of(cluster.dm_patch().args(["display", name])).success();
    assert!(display.stderr.contains("no dm-master answered"), "{}", display.stderr);
    assert!(display.stderr.contains(&client_crt), "names {client_crt}: {}", display.stderr);

    // The instance itself turned the handshake down (the simulator logs it, just after sending
    // the alert dm-patch read).
    let master = cluster.sandbox.instances().into_iter().find(|i| i.is_master()).unwrap();
    let log = Path::new(&master.log_dir).join("dm-master_stderr.log");
    let logged = || fs::read_to_string(&log).is_ok_and(|text| text.contains("TLS handshake"));
    cluster.sandbox.wait_until("the master to log the refused handshake", SETTLE, logged);
}

/// Missing or unreadable TLS files are bad input: exit 2 naming the file, for patch and display
/// alike, before any host is contacted (the one line on stderr is the error: no phase began,
/// no instance restarted).
#[test]
fn missing_or_unreadable_tls_files_are_bad_input() {
    let cluster = tls_cluster(Sandbox::builder().hosts(2).masters(1).workers(1).sources(1));
    let pkg = cluster.package("dm-worker", "v8.5.2", &[]);
    let tls_dir = cluster.sandbox.store_tls_dir();
    let pids = cluster.pids();
    let original = |name: &str| fs::read(tls_dir.join(name)).unwrap();
    let (ca, cert, key) = (original("ca.crt"), original("client.crt"), original("client.pem"));
    let restore = || {
        let ca_path = tls_dir.join("ca.crt");
        if ca_path.is_dir() {
            fs::remove_dir(&ca_path).unwrap();
        }
        fs::write(&ca_path, &ca).unwrap();
        fs::write(tls_dir.join("client.crt"), &cert).unwrap();
        fs::write(tls_dir.join("client.pem"), &key).unwrap();
    };
    let stranger = tempfile::tempdir().unwrap();
    dm_sandbox::tls::write_foreign_client(stranger.path(), "stranger").unwrap();
    let foreign_key = fs::read(stranger.path().join("client.pem")).unwrap();

    type Damage<'a> = Box<dyn Fn() + 'a>;
    let cases: Vec<(&str, &str, Damage)> = vec![
        (
            "client.pem",
            "does not exist",
            Box::new(|| fs::remove_file(tls_dir.join("client.pem")).unwrap()),
        ),
        (
            "ca.crt",
            "is not a regular file",
            Box::new(|| {
                fs::remove_file(tls_dir.join("ca.crt")).unwrap();
                fs::create_dir(tls_dir.join("ca.crt")).unwrap();
            }),
        ),
        (
            "client.crt",
            "holds no PEM certificate",
            Box::new(|| fs::write(tls_dir.join("client.crt"), "garbage\n").unwrap()),
        ),
        (
            "client.pem",
            "is not the key of the certificate",
            Box::new(|| fs::write(tls_dir.join("client.pem"), &foreign_key).unwrap()),
        ),
    ];
    for (file, problem, damage) in cases {
        damage();
        let path = tls_dir.join(file).display().to_string();
        let run = cluster.patch(&pkg, &["-R", "dm-worker"]).code(2);
        assert!(run.stderr.contains(&path), "{file}: names {path}: {}", run.stderr);
        assert!(run.stderr.contains(problem), "{file}: says it {problem}: {}", run.stderr);
        assert_eq!(run.stderr.lines().count(), 1, "nothing began: {}", run.stderr);
        let name = cluster.sandbox.cluster_name();
        let display = Run::of(cluster.dm_patch().args(["display", name])).code(2);
        assert!(display.stderr.contains(&path), "display names {path}: {}", display.stderr);
        restore();
    }
    cluster.assert_untouched(&pids, pids.keys());
    assert!(cluster.patched_ids().is_empty());

    // With the files back, the same command goes through.
    cluster.patch(&pkg, &["-R", "dm-worker"]).success();
}

/// A cluster running TLS whose meta.yaml says `enable_tls: false` (changed behind TiUP's back)
/// answers plain HTTP as Go's HTTPS servers do; dm-patch says so, as a TLS mismatch, not as a
/// stopped cluster to patch with --offline, and changes nothing.
#[test]
fn a_tls_cluster_that_meta_yaml_calls_plain_is_named_as_such() {
    let cluster = tls_cluster(Sandbox::builder().hosts(2).masters(1).workers(1).sources(1));
    let pkg = cluster.package("dm-worker", "v8.5.2", &[]);
    let meta = cluster.cluster_dir().join("meta.yaml");
    let text = fs::read_to_string(&meta).unwrap();
    assert!(text.contains("enable_tls: true"), "{text}");
    fs::write(&meta, text.replace("enable_tls: true", "enable_tls: false")).unwrap();
    let pids = cluster.pids();

    let run = cluster.patch(&pkg, &["-R", "dm-worker"]).code(1);

    let said = format!("{}\n{}", run.stdout, run.stderr);
    assert!(
        said.contains("serves HTTPS only, but meta.yaml says global.enable_tls: false"),
        "{said}"
    );
    assert!(!said.contains("--offline"), "advice for a stopped cluster: {said}");
    cluster.assert_untouched(&pids, pids.keys());
}
