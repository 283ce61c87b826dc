//! The simulator on its own: `dm-sim` processes spawned directly on loopback addresses
//! (`127.99.<n>.x`, a distinct `n` per test so tests run in parallel), no sshd. Each test owns
//! a [`Cluster`] guard that SIGKILLs every process it started when dropped, panics included.

use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use dm_sandbox::dm_api::{
    CommonResponse, CreateSourceRequest, MembersResponse, NO_LEADER_MESSAGE, SCHEDULER_NOT_STARTED,
    SourceConfig, VersionInfo, WorkerStage,
};
use dm_sandbox::wait;
use serde_json::Value;

const SIM: &str = env!("CARGO_BIN_EXE_dm-sim");

/// Short leases so crash tests stay fast; long enough that a busy machine never expires a
/// live lease by accident.
const MASTER_LEASE_MS: u64 = 1_500;
const WORKER_LEASE_MS: u64 = 1_500;
const SCHEDULER_DELAY_MS: u64 = 300;

const ELECTION_TIMEOUT: Duration = Duration::from_secs(5);
const SETTLE_TIMEOUT: Duration = Duration::from_secs(5);

/// Processes of one test, on `127.99.<net>.x`: masters on `.1`, `.2`, ..., workers on `.11`,
/// `.12`, ... Killed (SIGKILL) on drop.
struct Cluster {
    net: u8,
    cluster_size: usize,
    dir: tempfile::TempDir,
    env: BTreeMap<String, String>,
    processes: BTreeMap<String, Child>,
    http: reqwest::blocking::Client,
}

impl Cluster {
    /// A cluster of `cluster_size` masters (`--initial-cluster`), none started yet.
    fn new(net: u8, cluster_size: usize) -> Cluster {
        let env = [
            ("DM_SIM_MASTER_LEASE_MS", MASTER_LEASE_MS),
            ("DM_SIM_WORKER_LEASE_MS", WORKER_LEASE_MS),
            ("DM_SIM_SCHEDULER_DELAY_MS", SCHEDULER_DELAY_MS),
        ];
        Cluster {
            net,
            cluster_size,
            dir: tempfile::tempdir().expect("a temporary directory"),
            env: env.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect(),
            processes: BTreeMap::new(),
            http: reqwest::blocking::Client::builder()
                .timeout(Duration::from_secs(5))
                .no_proxy()
                .build()
                .expect("an HTTP client"),
        }
    }

    /// Sets a `DM_SIM_*` variable for every process started from now on.
    fn env(mut self, name: &str, value: impl ToString) -> Cluster {
        self.env.insert(name.to_owned(), value.to_string());
        self
    }

    fn master_addr(&self, index: usize) -> String {
        format!("127.99.{}.{index}:8261", self.net)
    }

    fn worker_addr(&self, index: usize) -> String {
        format!("127.99.{}.{}:8262", self.net, 10 + index)
    }

    fn master_args(&self, index: usize) -> Vec<String> {
        let ip = format!("127.99.{}.{index}", self.net);
        let initial_cluster: Vec<String> = (1..=self.cluster_size)
            .map(|i| format!("m{i}=http://127.99.{}.{i}:8291", self.net))
            .collect();
        let dir = self.dir.path().join(format!("m{index}"));
        vec![
            format!("--name=m{index}"),
            format!("--master-addr={ip}:8261"),
            format!("--advertise-addr={ip}:8261"),
            format!("--peer-urls=http://{ip}:8291"),
            format!("--advertise-peer-urls=http://{ip}:8291"),
            format!("--log-file={}", dir.join("log/dm-master.log").display()),
            format!("--data-dir={}", dir.join("data").display()),
            format!("--initial-cluster={}", initial_cluster.join(",")),
            "--config=conf/dm-master.toml".to_owned(),
        ]
    }

    fn worker_args(&self, index: usize) -> Vec<String> {
        let join: Vec<String> = (1..=self.cluster_size).map(|i| self.master_addr(i)).collect();
        let dir = self.dir.path().join(format!("w{index}"));
        // The space-separated spelling, which TiUP's scripts do not use but Go accepts.
        vec![
            "--name".to_owned(),
            format!("w{index}"),
            "--worker-addr".to_owned(),
            self.worker_addr(index),
            format!("--advertise-addr={}", self.worker_addr(index)),
            format!("--log-file={}", dir.join("log/dm-worker.log").display()),
            format!("--join={}", join.join(",")),
            "--config=conf/dm-worker.toml".to_owned(),
        ]
    }

    fn start_master(&mut self, index: usize, faults: &str) {
        let args = self.master_args(index);
        self.spawn(&format!("m{index}"), "dm-master", faults, &args);
    }

    fn start_worker(&mut self, index: usize, faults: &str) {
        let args = self.worker_args(index);
        self.spawn(&format!("w{index}"), "dm-worker", faults, &args);
    }

    /// Starts every master of the cluster and waits for them to agree on a leader.
    fn start_masters(&mut self) -> String {
        for index in 1..=self.cluster_size {
            self.start_master(index, "");
        }
        self.wait_for_leader(ELECTION_TIMEOUT)
    }

    fn spawn(&mut self, name: &str, role: &str, faults: &str, args: &[String]) {
        let stderr = fs::File::create(self.stderr_path(name)).expect("a stderr file");
        let child = Command::new(SIM)
            .args(args)
            .envs(&self.env)
            .env("DM_SIM_ROLE", role)
            .env("DM_SIM_FAULT", faults)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(stderr)
            .spawn()
            .expect("dm-sim starts");
        if let Some(mut previous) = self.processes.insert(name.to_owned(), child) {
            let _ = previous.kill();
            let _ = previous.wait();
        }
    }

    fn stderr_path(&self, name: &str) -> std::path::PathBuf {
        self.dir.path().join(format!("{name}.stderr"))
    }

    fn stderr(&self, name: &str) -> String {
        fs::read_to_string(self.stderr_path(name)).unwrap_or_default()
    }

    fn signal(&self, name: &str, signal: libc::c_int) {
        let pid = self.processes[name].id() as libc::pid_t;
        // SAFETY: kill(2) with a pid this test spawned and has not yet reaped.
        let sent = unsafe { libc::kill(pid, signal) };
        assert_eq!(sent, 0, "signal {signal} to {name}");
    }

    /// Sends SIGTERM and waits for a clean exit.
    fn stop(&mut self, name: &str) {
        self.signal(name, libc::SIGTERM);
        let status = self.wait_exit(name, Duration::from_secs(10));
        assert!(status.success(), "{name} exited {status} after SIGTERM");
    }

    /// SIGKILL, as a crash: no goodbye, no resignation.
    fn crash(&mut self, name: &str) {
        self.signal(name, libc::SIGKILL);
        self.wait_exit(name, Duration::from_secs(5));
    }

    fn wait_exit(&mut self, name: &str, timeout: Duration) -> ExitStatus {
        let child = self.processes.get_mut(name).expect("a started process");
        let status = wait::poll_for(&format!("{name} to exit"), timeout, || {
            child.try_wait().expect("try_wait")
        });
        let status = status.unwrap_or_else(|err| panic!("{err}"));
        self.processes.remove(name);
        status
    }

    /// `GET http://<addr><path>`: status and body; `None` when nothing answers.
    fn get(&self, addr: &str, path: &str) -> Option<(u16, String)> {
        let answer = self.http.get(format!("http://{addr}{path}")).send().ok()?;
        Some((answer.status().as_u16(), answer.text().ok()?))
    }

    fn put(&self, addr: &str, path: &str) -> (u16, String) {
        let answer = self.http.put(format!("http://{addr}{path}")).send().expect("PUT answered");
        (answer.status().as_u16(), answer.text().unwrap())
    }

    /// `DELETE /apis/v1alpha1/members/worker/{name}` through master 1.
    fn offline_worker(&self, name: &str) -> CommonResponse {
        let path = format!("/apis/v1alpha1/members/worker/{name}");
        let url = format!("http://{}{path}", self.master_addr(1));
        let answer = self.http.delete(url).send().expect("DELETE answered");
        assert_eq!(answer.status().as_u16(), 200, "HTTP 200 even when refused");
        answer.json().expect("a {result, msg} answer")
    }

    /// The members answer of master `index`, when it gives one with HTTP 200.
    fn members(&self, index: usize) -> Option<MembersResponse> {
        let (status, body) = self.get(&self.master_addr(index), "/apis/v1alpha1/members")?;
        (status == 200).then(|| serde_json::from_str(&body).expect("a members answer"))
    }

    /// The leader every running master names, once they all agree.
    fn wait_for_leader(&self, timeout: Duration) -> String {
        self.poll("the running masters to agree on a leader", timeout, || {
            let named: BTreeSet<Option<String>> = self
                .running_masters()
                .map(|index| Some(self.members(index)?.leader_name()?.to_owned()))
                .collect();
            match named.into_iter().collect::<Vec<_>>().as_slice() {
                [Some(leader)] => Some(leader.clone()),
                _ => None,
            }
        })
    }

    fn running_masters(&self) -> impl Iterator<Item = usize> + '_ {
        (1..=self.cluster_size).filter(|i| self.processes.contains_key(&format!("m{i}")))
    }

    /// Creates sources through master `via`, retrying while a new scheduler starts.
    fn create_sources(&self, via: usize, names: &[&str]) {
        for name in names {
            let body = CreateSourceRequest { source: SourceConfig::new(*name, "127.0.0.1", 3306) };
            let url = format!("http://{}/api/v1/sources", self.master_addr(via));
            self.poll(&format!("source {name} created"), SETTLE_TIMEOUT, || {
                let answer = self.http.post(&url).json(&body).send().ok()?;
                (answer.status().as_u16() == 201).then_some(())
            });
        }
    }

    /// `(stage, source)` of worker `name`, as master `via` (or its leader) sees it.
    fn worker_state(&self, via: usize, name: &str) -> Option<(WorkerStage, String)> {
        let members = self.members(via)?;
        let worker = members.worker(name)?;
        Some((worker.stage, worker.source.clone()))
    }

    fn wait_worker(&self, via: usize, name: &str, stage: WorkerStage, source: &str) {
        let what = format!("worker {name} {stage} with source {source:?}");
        let expected = (stage, source.to_owned());
        self.poll(&what, SETTLE_TIMEOUT, || {
            (self.worker_state(via, name)? == expected).then_some(())
        });
    }

    fn poll<T>(&self, what: &str, timeout: Duration, probe: impl FnMut() -> Option<T>) -> T {
        wait::poll_for(what, timeout, probe).unwrap_or_else(|err| {
            let logs: Vec<String> = fs::read_dir(self.dir.path())
                .into_iter()
                .flatten()
                .flatten()
                .map(|entry| entry.path().join("log"))
                .filter_map(|log| fs::read_dir(log).ok())
                .flatten()
                .flatten()
                .map(|entry| fs::read_to_string(entry.path()).unwrap_or_default())
                .collect();
            panic!("{err}\nevent logs:\n{}", logs.join("\n"))
        })
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        for child in self.processes.values_mut() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

fn version_output(faults: &str, version: &str, argv0_role: Option<&str>) -> String {
    let mut command = Command::new(SIM);
    command
        .arg("-V")
        .env("DM_SIM_ROLE", argv0_role.unwrap_or("dm-master"))
        .env("DM_SIM_FAULT", faults)
        .env("DM_SIM_VERSION", version);
    let output = command.output().expect("dm-sim -V runs");
    assert!(output.status.success(), "{output:?}");
    String::from_utf8(output.stdout).expect("UTF-8")
}

#[test]
fn dash_v_prints_the_version_block_and_exits() {
    let text = version_output("", "v8.5.2", None);
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines.len(), 6, "{text}");
    assert_eq!(lines[0], "Release Version: v8.5.2");
    let hash = lines[1].strip_prefix("Git Commit Hash: ").expect(lines[1]);
    assert_eq!(hash.len(), 40);
    assert!(hash.chars().all(|c| c.is_ascii_hexdigit()), "{hash}");
    assert_eq!(lines[2], "Git Branch: HEAD");
    assert!(lines[3].starts_with("UTC Build Time: "), "{}", lines[3]);
    assert!(lines[4].starts_with("Go Version: go version go"), "{}", lines[4]);
    assert_eq!(lines[5], "Failpoint Build: false");

    let other_version = version_output("", "v8.5.3", Some("dm-worker"));
    let with_fault = version_output("ignore-evict", "v8.5.2", None);
    let hash_of = |text: &str| VersionInfo::parse(text).unwrap().git_commit_hash;
    assert_ne!(hash_of(&text), hash_of(&other_version));
    assert_ne!(hash_of(&text), hash_of(&with_fault));
    assert_eq!(hash_of(&text), hash_of(&version_output("", "v8.5.2", None)));
}

#[test]
fn the_role_comes_from_the_binary_name_without_dm_sim_role() {
    let dir = tempfile::tempdir().unwrap();
    let link = dir.path().join("dm-worker");
    std::os::unix::fs::symlink(SIM, &link).unwrap();
    let output = Command::new(&link).arg("-V").env_remove("DM_SIM_ROLE").output().unwrap();
    assert!(output.status.success(), "{output:?}");
    let unknown = Command::new(SIM).arg("-V").env_remove("DM_SIM_ROLE").output().unwrap();
    assert_eq!(unknown.status.code(), Some(1), "dm-sim itself is no role");
    assert!(String::from_utf8_lossy(&unknown.stderr).contains("DM_SIM_ROLE"));
}

/// The keys of a JSON object, sorted.
fn keys(value: &Value) -> Vec<&str> {
    let mut keys: Vec<&str> = value
        .as_object()
        .unwrap_or_else(|| panic!("an object: {value}"))
        .keys()
        .map(String::as_str)
        .collect();
    keys.sort();
    keys
}

#[test]
fn members_answer_has_the_gateway_shape() {
    let mut cluster = Cluster::new(1, 3);
    let leader = cluster.start_masters();
    assert_eq!(leader, "m1", "the lowest name wins a fresh election");
    cluster.create_sources(1, &["mysql-replica-01"]);
    cluster.start_worker(1, "");
    cluster.wait_worker(1, "w1", WorkerStage::Bound, "mysql-replica-01");

    let (status, body) = cluster.get(&cluster.master_addr(1), "/apis/v1alpha1/members").unwrap();
    assert_eq!(status, 200);
    let value: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(keys(&value), ["members", "msg", "result"]);
    assert_eq!(value["result"], true);
    let sections = value["members"].as_array().unwrap();
    let section_keys: Vec<Vec<&str>> = sections.iter().map(keys).collect();
    assert_eq!(section_keys, [["leader"], ["master"], ["worker"]]);

    let leader = &sections[0]["leader"];
    assert_eq!(keys(leader), ["addr", "msg", "name"]);
    assert_eq!(leader["name"], "m1");
    assert_eq!(leader["addr"], "127.99.1.1:8261");

    let masters = sections[1]["master"]["masters"].as_array().unwrap();
    assert_eq!(keys(&sections[1]["master"]), ["masters", "msg"]);
    assert_eq!(masters.len(), 3);
    for (index, master) in masters.iter().enumerate() {
        let ip = format!("127.99.1.{}", index + 1);
        assert_eq!(keys(master), ["alive", "clientURLs", "memberID", "name", "peerURLs"]);
        assert_eq!(master["name"], format!("m{}", index + 1));
        let member_id = master["memberID"].as_str().expect("memberID is a string");
        member_id.parse::<u64>().expect("a uint64");
        assert_eq!(master["alive"], true);
        assert_eq!(master["peerURLs"], serde_json::json!([format!("http://{ip}:8291")]));
        assert_eq!(master["clientURLs"], serde_json::json!([format!("http://{ip}:8261")]));
    }

    let worker_section = &sections[2]["worker"];
    assert_eq!(keys(worker_section), ["msg", "workers"]);
    let workers = worker_section["workers"].as_array().unwrap();
    assert_eq!(keys(&workers[0]), ["addr", "name", "source", "stage"]);
    assert_eq!(workers[0]["stage"], "bound");
    assert_eq!(workers[0]["addr"], "127.99.1.11:8262");

    // Switches pick sections; names filter members in each of them.
    let (_, filtered) = cluster
        .get(&cluster.master_addr(1), "/apis/v1alpha1/members?master=true&names=m2&names=m3")
        .unwrap();
    let filtered: MembersResponse = serde_json::from_str(&filtered).unwrap();
    assert_eq!(filtered.members.len(), 1);
    let names: Vec<&str> = filtered.masters().iter().map(|m| m.name.as_str()).collect();
    assert_eq!(names, ["m2", "m3"]);
    let (_, leader_only) = cluster
        .get(&cluster.master_addr(1), "/apis/v1alpha1/members?leader=true&names=w1")
        .unwrap();
    let leader_only: MembersResponse = serde_json::from_str(&leader_only).unwrap();
    assert_eq!(leader_only.members.len(), 1);
    assert_eq!(leader_only.leader(), None, "the filter excludes the leader");

    let (status, health) = cluster.get(&cluster.master_addr(2), "/health").unwrap();
    assert_eq!((status, health.as_str()), (200, r#"{"health":"true","reason":""}"#));
    let (status, text) = cluster.get(&cluster.worker_addr(1), "/status").unwrap();
    assert_eq!(status, 200);
    assert_eq!(VersionInfo::parse(&text).unwrap().release_version, "v8.5.1");
    let (status, unknown) = cluster.get(&cluster.master_addr(1), "/apis/v1alpha1/nothing").unwrap();
    assert_eq!(status, 404);
    let unknown: Value = serde_json::from_str(&unknown).unwrap();
    assert_eq!(keys(&unknown), ["code", "details", "message"]);
}

#[test]
fn a_fresh_cluster_waits_for_its_lowest_name_that_comes_up_last() {
    let mut cluster = Cluster::new(17, 3);
    cluster.start_master(3, "");
    cluster.start_master(2, "");
    // m2 and m3 are a quorum long before m1 listens; a fresh cluster still waits for it.
    cluster.env.insert("DM_SIM_START_DELAY_MS".to_owned(), "600".to_owned());
    cluster.start_master(1, "");
    assert_eq!(cluster.wait_for_leader(ELECTION_TIMEOUT), "m1");
}

#[test]
fn three_masters_elect_one_leader_that_stays() {
    let mut cluster = Cluster::new(2, 3);
    // Started highest name first: the lowest name still wins once a quorum is up.
    for index in [3, 2, 1] {
        cluster.start_master(index, "");
    }
    let leader = cluster.wait_for_leader(ELECTION_TIMEOUT);
    let term_log = |name: &str| {
        let path = cluster.dir.path().join(name).join("log/dm-master.log");
        fs::read_to_string(path).unwrap_or_default()
    };
    // A stable leader: re-asking after a few polls gives the same answer everywhere.
    let again = cluster.wait_for_leader(ELECTION_TIMEOUT);
    assert_eq!(leader, again);
    let elections =
        (1..=3).map(|i| term_log(&format!("m{i}")).matches("became leader").count()).sum::<usize>();
    assert_eq!(elections, 1, "exactly one election");
    for index in 1..=3 {
        let members = cluster.members(index).unwrap();
        assert!(members.masters().iter().all(|m| m.alive), "{members:?}");
    }
}

#[test]
fn sigterm_on_the_leader_elects_another_within_two_seconds() {
    let mut cluster = Cluster::new(3, 3).env("DM_SIM_SCHEDULER_DELAY_MS", 1_000);
    let leader = cluster.start_masters();
    cluster.create_sources(2, &["mysql-replica-01"]);
    cluster.start_worker(1, "");
    cluster.wait_worker(2, "w1", WorkerStage::Bound, "mysql-replica-01");

    let stopped = Instant::now();
    cluster.stop(&leader);
    let successor = cluster.wait_for_leader(Duration::from_secs(2));
    assert_ne!(successor, leader);
    assert!(stopped.elapsed() < Duration::from_secs(2), "{:?}", stopped.elapsed());

    // The new leader's scheduler starts later: until then the worker section says so.
    let index: usize = successor[1..].parse().unwrap();
    let members = cluster.members(index).unwrap();
    let section = members.worker_section().unwrap();
    assert_eq!(section.msg, SCHEDULER_NOT_STARTED);
    assert!(section.workers.is_empty());
    // Then it carries on with the old leader's sources and workers.
    cluster.wait_worker(index, "w1", WorkerStage::Bound, "mysql-replica-01");
    let members = cluster.members(index).unwrap();
    let old = members.master(&leader).unwrap();
    assert!(!old.alive, "a stopped master is not alive");
}

#[test]
fn kill_9_on_the_leader_waits_out_the_master_lease() {
    let mut cluster = Cluster::new(4, 3);
    let leader = cluster.start_masters();
    assert_eq!(leader, "m1");
    let killed = Instant::now();
    cluster.crash("m1");

    // Within the lease the followers still wait for m1: no leader to forward to.
    let (status, body) = cluster.get(&cluster.master_addr(2), "/apis/v1alpha1/members").unwrap();
    assert_eq!(status, 500, "{body}");
    let successor = cluster.wait_for_leader(Duration::from_millis(MASTER_LEASE_MS) * 3);
    let waited = killed.elapsed();
    assert_eq!(successor, "m2");
    assert!(
        waited >= Duration::from_millis(MASTER_LEASE_MS - 100),
        "elected after {waited:?}, before the {MASTER_LEASE_MS} ms lease ran out"
    );
}

#[test]
fn eviction_moves_leadership_until_cancelled() {
    let mut cluster = Cluster::new(5, 3);
    assert_eq!(cluster.start_masters(), "m1");

    for (evicted, successor) in [(1, "m2"), (2, "m3")] {
        let asked = Instant::now();
        let (status, body) = cluster.put(&cluster.master_addr(evicted), "/apis/v1alpha1/leader/1");
        assert_eq!(status, 200);
        let answer: CommonResponse = serde_json::from_str(&body).unwrap();
        assert_eq!(answer, CommonResponse::ok());
        assert!(asked.elapsed() < Duration::from_millis(500), "answered at once");
        assert_eq!(cluster.wait_for_leader(ELECTION_TIMEOUT), successor);
    }

    // With every master evicted there is no one to lead; m1 leads again only once cancelled.
    let (status, _) = cluster.put(&cluster.master_addr(3), "/apis/v1alpha1/leader/EvictLeaderOp");
    assert_eq!(status, 200);
    cluster.poll("no leader left", ELECTION_TIMEOUT, || {
        let (status, _) = cluster.get(&cluster.master_addr(1), "/apis/v1alpha1/members")?;
        (status == 500).then_some(())
    });
    let (status, _) =
        cluster.put(&cluster.master_addr(1), "/apis/v1alpha1/leader/CancelEvictLeaderOp");
    assert_eq!(status, 200);
    assert_eq!(cluster.wait_for_leader(ELECTION_TIMEOUT), "m1");

    // The flag lives in memory only: m2, still evicted, is eligible again after a restart.
    cluster.stop("m2");
    cluster.start_master(2, "");
    cluster.put(&cluster.master_addr(1), "/apis/v1alpha1/leader/1");
    assert_eq!(cluster.wait_for_leader(ELECTION_TIMEOUT), "m2");
}

#[test]
fn followers_forward_to_the_leader_but_not_eviction() {
    let forward_delay = Duration::from_millis(300);
    let mut cluster = Cluster::new(6, 3).env("DM_SIM_FORWARD_DELAY_MS", forward_delay.as_millis());
    assert_eq!(cluster.start_masters(), "m1");

    let timed = |index: usize| {
        let asked = Instant::now();
        let members = cluster.members(index).unwrap();
        (asked.elapsed(), members)
    };
    let (direct, from_leader) = timed(1);
    let (forwarded, from_follower) = timed(3);
    assert_eq!(from_leader, from_follower, "the follower relays the leader's answer");
    assert!(forwarded >= forward_delay, "forwarded in {forwarded:?}");
    assert!(direct < forward_delay, "direct in {direct:?}");

    // Source creation goes through a follower too.
    cluster.create_sources(2, &["mysql-replica-01"]);
    cluster.start_worker(1, "");
    cluster.wait_worker(3, "w1", WorkerStage::Bound, "mysql-replica-01");

    // Eviction acts on the master it is sent to: a follower's flag leaves the leader alone.
    let (status, _) = cluster.put(&cluster.master_addr(2), "/apis/v1alpha1/leader/1");
    assert_eq!(status, 200);
    let (status, _) = cluster.put(&cluster.master_addr(2), "/apis/v1alpha1/leader/3");
    assert_eq!(status, 400, "an unknown op is the gateway's error");
    assert_eq!(cluster.wait_for_leader(ELECTION_TIMEOUT), "m1");
    // ...but it does keep m2 from leading next.
    cluster.stop("m1");
    assert_eq!(cluster.wait_for_leader(ELECTION_TIMEOUT), "m3");
}

#[test]
fn without_a_leader_calls_get_the_gateway_error_and_health_is_503() {
    let mut cluster = Cluster::new(7, 3);
    // One master of three is no quorum: it never elects itself.
    cluster.start_master(1, "");
    cluster
        .poll("m1 to listen", SETTLE_TIMEOUT, || cluster.get(&cluster.master_addr(1), "/status"));
    for path in ["/apis/v1alpha1/members", "/apis/v1alpha1/members?worker=true"] {
        let (status, body) = cluster.get(&cluster.master_addr(1), path).unwrap();
        assert_eq!(status, 500);
        let error: Value = serde_json::from_str(&body).unwrap();
        assert_eq!(keys(&error), ["code", "details", "message"]);
        assert_eq!(error["message"], NO_LEADER_MESSAGE);
        assert_eq!(error["details"], serde_json::json!([]));
    }
    let (status, _) = cluster.get(&cluster.master_addr(1), "/health").unwrap();
    assert_eq!(status, 503);

    // A second master makes a quorum of two.
    cluster.start_master(2, "");
    assert_eq!(cluster.wait_for_leader(ELECTION_TIMEOUT), "m1");
    // Losing it again loses the quorum, and with it the leader.
    cluster.stop("m2");
    cluster.poll("m1 to step down without a quorum", SETTLE_TIMEOUT, || {
        let (status, _) = cluster.get(&cluster.master_addr(1), "/health")?;
        (status == 503).then_some(())
    });
}

#[test]
fn workers_come_back_free_or_bound_and_a_stopped_workers_source_moves() {
    let mut cluster = Cluster::new(8, 1);
    cluster.start_masters();
    cluster.create_sources(1, &["mysql-replica-01"]);
    cluster.start_worker(1, "");
    cluster.wait_worker(1, "w1", WorkerStage::Bound, "mysql-replica-01");
    cluster.start_worker(2, "");
    cluster.wait_worker(1, "w2", WorkerStage::Free, "");

    // A graceful stop: offline at once (long before the lease), the source moves to w2.
    let stopped = Instant::now();
    cluster.stop("w1");
    cluster.wait_worker(1, "w1", WorkerStage::Offline, "");
    cluster.wait_worker(1, "w2", WorkerStage::Bound, "mysql-replica-01");
    assert!(stopped.elapsed() < Duration::from_millis(WORKER_LEASE_MS));

    // Back again it is free: the source does not move back.
    cluster.start_worker(1, "");
    cluster.wait_worker(1, "w1", WorkerStage::Free, "");

    // Only an offline worker can be offlined.
    let refused = cluster.offline_worker("w1");
    assert!(!refused.result && refused.msg.contains("w1"), "{refused:?}");

    // A crash: the worker stays as it was until its lease runs out.
    let crashed = Instant::now();
    cluster.crash("w2");
    cluster.wait_worker(1, "w1", WorkerStage::Bound, "mysql-replica-01");
    assert!(crashed.elapsed() >= Duration::from_millis(WORKER_LEASE_MS - 100));
    cluster.wait_worker(1, "w2", WorkerStage::Offline, "");
    assert_eq!(cluster.offline_worker("w2"), CommonResponse::ok());
    assert_eq!(cluster.worker_state(1, "w2"), None);
}

#[test]
fn sources_survive_a_restart_of_the_whole_cluster() {
    let mut cluster = Cluster::new(9, 1);
    cluster.start_masters();
    cluster.create_sources(1, &["mysql-replica-01", "mysql-replica-02"]);
    cluster.stop("m1");
    cluster.start_masters();
    // One after the other, so which worker takes which source is known.
    cluster.start_worker(1, "");
    cluster.wait_worker(1, "w1", WorkerStage::Bound, "mysql-replica-01");
    cluster.start_worker(2, "");
    cluster.wait_worker(1, "w2", WorkerStage::Bound, "mysql-replica-02");
}

#[test]
fn a_worker_that_finds_no_master_exits_2() {
    let mut cluster = Cluster::new(10, 1);
    cluster.start_worker(1, "");
    let status = cluster.wait_exit("w1", Duration::from_secs(15));
    assert_eq!(status.code(), Some(2), "{}", cluster.stderr("w1"));
}

#[test]
fn fault_exit_at_start_exits_1_before_listening() {
    let mut cluster = Cluster::new(11, 1);
    cluster.start_master(1, "exit-at-start");
    let status = cluster.wait_exit("m1", SETTLE_TIMEOUT);
    assert_eq!(status.code(), Some(1));
    assert!(cluster.stderr("m1").contains("exit-at-start"), "{}", cluster.stderr("m1"));
    assert_eq!(cluster.get(&cluster.master_addr(1), "/status"), None);
    // -V still works: the binary is there, it just does not run.
    assert!(version_output("exit-at-start", "v8.5.2", None).starts_with("Release Version: v8.5.2"));
}

#[test]
fn fault_never_healthy_master_and_worker() {
    let mut cluster = Cluster::new(12, 3);
    // m1 would win any election, but it is never healthy.
    cluster.start_master(1, "never-healthy");
    cluster.start_master(2, "");
    cluster.start_master(3, "");
    assert_eq!(cluster.wait_for_leader(ELECTION_TIMEOUT), "m2");
    let (status, _) = cluster.get(&cluster.master_addr(1), "/status").unwrap();
    assert_eq!(status, 200);
    let (status, _) = cluster.get(&cluster.master_addr(1), "/health").unwrap();
    assert_eq!(status, 503);
    let members = cluster.members(2).unwrap();
    assert!(!members.master("m1").unwrap().alive);
    assert!(members.master("m3").unwrap().alive);

    cluster.start_worker(1, "never-healthy");
    cluster.start_worker(2, "");
    cluster.wait_worker(2, "w2", WorkerStage::Free, "");
    let (status, _) = cluster.get(&cluster.worker_addr(1), "/status").unwrap();
    assert_eq!(status, 200);
    assert_eq!(cluster.worker_state(2, "w1"), None, "never registered");
}

#[test]
fn fault_wrong_version_serves_another_version_than_dash_v() {
    let mut cluster = Cluster::new(13, 1).env("DM_SIM_VERSION", "v8.5.2");
    cluster.start_master(1, "wrong-version");
    let (_, text) = cluster
        .poll("m1 /status", SETTLE_TIMEOUT, || cluster.get(&cluster.master_addr(1), "/status"));
    let running = VersionInfo::parse(&text).unwrap();
    let on_disk = VersionInfo::parse(&version_output("wrong-version", "v8.5.2", None)).unwrap();
    assert_eq!(on_disk.release_version, "v8.5.2");
    assert_ne!(running.release_version, on_disk.release_version);
    assert_ne!(running.git_commit_hash, on_disk.git_commit_hash);
}

#[test]
fn fault_ignore_evict_acknowledges_and_keeps_leading() {
    let mut cluster = Cluster::new(14, 3);
    cluster.start_master(1, "ignore-evict");
    cluster.start_master(2, "");
    cluster.start_master(3, "");
    assert_eq!(cluster.wait_for_leader(ELECTION_TIMEOUT), "m1");
    let (status, body) = cluster.put(&cluster.master_addr(1), "/apis/v1alpha1/leader/1");
    assert_eq!(status, 200);
    assert_eq!(serde_json::from_str::<CommonResponse>(&body).unwrap(), CommonResponse::ok());
    // Give a resignation ample time to happen; it must not.
    let deadline = Instant::now() + Duration::from_secs(1);
    while Instant::now() < deadline {
        assert_eq!(cluster.wait_for_leader(ELECTION_TIMEOUT), "m1");
    }
}

#[test]
fn start_delay_postpones_listening() {
    let delay = Duration::from_millis(800);
    let mut cluster = Cluster::new(15, 1).env("DM_SIM_START_DELAY_MS", delay.as_millis());
    let started = Instant::now();
    cluster.start_master(1, "");
    cluster
        .poll("m1 to listen", SETTLE_TIMEOUT, || cluster.get(&cluster.master_addr(1), "/status"));
    assert!(started.elapsed() >= delay, "listening after {:?}", started.elapsed());
}

#[test]
fn a_wildcard_listen_address_binds_the_advertised_ip() {
    let mut cluster = Cluster::new(16, 1);
    let mut args = cluster.master_args(1);
    for arg in &mut args {
        if arg.starts_with("--master-addr=") {
            *arg = "--master-addr=0.0.0.0:8261".to_owned();
        }
        if arg.starts_with("--peer-urls=") {
            *arg = "--peer-urls=http://0.0.0.0:8291".to_owned();
        }
    }
    cluster.spawn("m1", "dm-master", "", &args);
    assert_eq!(cluster.wait_for_leader(ELECTION_TIMEOUT), "m1");
}
