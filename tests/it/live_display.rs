//! `dm-patch display` on a live sandbox cluster.

use std::time::{Duration, Instant};

use dm_sandbox::Sandbox;
use serde_json::Value;

use crate::cluster::Cluster;
use crate::support::{Run, Store};

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
        // TiUP's `version` is what meta.yaml gives the component; dm-patch's
        // `running_version` is what the instance reports.
        assert_eq!(row["version"], "v8.5.1");
        match row["role"].as_str().unwrap() {
            "dm-worker (patched)" => {
                assert_eq!(row["running_version"], "v8.5.2");
                assert_eq!(row["patched"], true);
                assert!(matches!(row["status"].as_str(), Some("Free" | "Bound")), "{row}");
            }
            "dm-master" => {
                assert_eq!(row["running_version"], "v8.5.1");
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
    // As TiUP shows it: the stage the masters give the worker, once they see it gone.
    let offline = |id: &str| {
        let name = cluster.sandbox.instances().into_iter().find(|i| i.id == id).unwrap().name;
        let members = cluster.members();
        members.workers().iter().any(|w| w.name == name && w.stage == "offline")
    };
    cluster
        .sandbox
        .wait_until("the masters to see the worker offline", LEASE, || offline(&workers[0]));
    let document = display(&cluster, &["--format", "json"]).json();
    crate::support::conforms("display", &document);
    let rows = document["instances"].as_array().unwrap().clone();
    let stopped = rows.iter().find(|r| r["id"] == workers[0].as_str()).unwrap();
    assert_eq!(stopped["status"], "Offline", "{stopped}");
    assert_eq!(stopped["ComponentName"], "dm-worker", "TiUP's keys: {stopped}");
    assert_eq!(stopped["Port"], 8262, "TiUP's keys: {stopped}");

    // A whole host down (sshd and services): display still answers, within the timeout. Its
    // master is Down; its worker is what the other masters say of it.
    let host = cluster.sandbox.instances().into_iter().find(|i| i.id == workers[1]).unwrap().host;
    cluster.sandbox.stop_host(&host);
    cluster
        .sandbox
        .wait_until("the masters to see the worker offline", LEASE, || offline(&workers[1]));
    let started = Instant::now();
    let rows = json_rows(&display(&cluster, &["--format", "json", "--status-timeout", "2"]));
    assert!(started.elapsed() < Duration::from_secs(3), "display hung on a dead host");
    for row in rows.iter().filter(|r| r["host"] == host.as_str()) {
        let expected = if row["component"] == "dm-master" { "Down" } else { "Offline" };
        assert_eq!(row["status"], expected, "{row}");
        assert_eq!(row["running_version"], Value::Null);
    }
}

/// Long enough for the masters to notice a worker gone (its keepalive lease, 3 s here) and,
/// with a master gone too, to elect another leader.
const LEASE: Duration = Duration::from_secs(30);

fn display(cluster: &Cluster, extra: &[&str]) -> Run {
    let name = cluster.sandbox.cluster_name();
    Run::of(cluster.dm_patch().args(["display", name]).args(extra)).success()
}

/// The `instances` of TiUP's JSON document.
fn json_rows(run: &Run) -> Vec<Value> {
    let document = run.json();
    document["instances"].as_array().expect("TiUP's document lists instances").clone()
}

/// A monitoring instance whose port is listened on reads Up, one whose port is not reads Down;
/// with `--uptime`, Since comes from its Prometheus `/metrics`, as TiUP reads it.
#[test]
fn a_listening_monitoring_port_is_up() {
    let prometheus = MetricsServer::start(3 * 3600 + 25 * 60);
    let port = prometheus.port;
    let meta = format!(
        "user: tidb\ndm_version: v8.5.1\ntopology:\n  worker_servers:\n  - host: 127.0.9.41\n  \
         monitoring_servers:\n  - host: 127.0.0.1\n    port: {port}\n  grafana_servers:\n  \
         - host: 127.0.9.42\n"
    );
    let store = Store::new().cluster("mon", &meta);
    let run = store.run(["display", "mon", "--format", "json", "--uptime"]).success();
    let rows = json_rows(&run);
    let row = |role: &str| rows.iter().find(|r| r["role"] == role).unwrap().clone();
    assert_eq!(row("prometheus")["status"], "Up");
    assert_eq!(row("prometheus")["id"], format!("127.0.0.1:{port}"));
    // Started 3h25m ago (give the test a minute).
    let since = row("prometheus")["since"].as_str().unwrap().to_owned();
    assert!(since.starts_with("3h25m") || since.starts_with("3h26m"), "{since}");
    assert_eq!(row("grafana")["status"], "Down");
    assert_eq!(row("grafana")["since"], "-");
    assert_eq!(row("dm-worker")["status"], "Down");

    let table = store.run(["display", "mon", "--uptime"]).success().stdout;
    let line = table.lines().find(|l| l.contains("prometheus")).unwrap();
    assert!(line.contains(" Up ") && line.contains(&since), "{table}");
    assert!(table.contains("Since"), "{table}");
    assert!(table.ends_with("Total nodes: 3\n"), "{table}");
}

/// A loopback HTTP server answering every request with Prometheus metrics whose
/// `process_start_time_seconds` is `age` seconds ago. It stops when dropped.
struct MetricsServer {
    port: u16,
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
}

impl MetricsServer {
    fn start(age: u64) -> MetricsServer {
        use std::io::{Read, Write};
        use std::sync::atomic::Ordering;
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        listener.set_nonblocking(true).unwrap();
        let port = listener.local_addr().unwrap().port();
        let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let stopping = stop.clone();
        let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap();
        let body = format!(
            "# TYPE process_start_time_seconds gauge\nprocess_start_time_seconds {}\n",
            now.as_secs() - age
        );
        std::thread::spawn(move || {
            // Bounded: at most a minute, whatever the test does.
            let deadline = Instant::now() + Duration::from_secs(60);
            while !stopping.load(Ordering::Relaxed) && Instant::now() < deadline {
                let Ok((mut stream, _)) = listener.accept() else {
                    std::thread::sleep(Duration::from_millis(10));
                    continue;
                };
                let _ = stream.set_nonblocking(false);
                let _ = stream.set_read_timeout(Some(Duration::from_secs(2)));
                let mut request = Vec::new();
                let mut buffer = [0u8; 1024];
                while !request.windows(4).any(|w| w == b"\r\n\r\n") {
                    match stream.read(&mut buffer) {
                        Ok(0) | Err(_) => break,
                        Ok(read) => request.extend_from_slice(&buffer[..read]),
                    }
                }
                let response = format!(
                    "HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: {}\r\n\
                     Connection: close\r\n\r\n{body}",
                    body.len()
                );
                let _ = stream.write_all(response.as_bytes());
            }
        });
        MetricsServer { port, stop }
    }
}

impl Drop for MetricsServer {
    fn drop(&mut self) {
        self.stop.store(true, std::sync::atomic::Ordering::Relaxed);
    }
}
