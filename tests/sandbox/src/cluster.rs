//! Bringing the DM cluster up the way an operator would after `tiup dm deploy`, and asking it
//! questions over the DM-master HTTP API.

use std::collections::BTreeSet;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::{Context, Result, anyhow, bail};
use serde_json::Value;

use crate::harness::Sandbox;
use crate::task_api::{QueryStatusResponse, TASK_STATE_METRIC, TaskStage};
use crate::topology::Instance;
use crate::wait;

/// A master that does not answer this fast is treated as down.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(2);
const CONNECT_TIMEOUT: Duration = Duration::from_millis(500);
/// From `systemctl start` of the masters to an elected leader.
const LEADER_TIMEOUT: Duration = Duration::from_secs(20);
/// From `systemctl start` of the workers to all of them free or bound.
const WORKERS_TIMEOUT: Duration = Duration::from_secs(20);

/// An HTTP client for loopback DM processes: short timeouts, no proxy; with `tls_dir`, the CA
/// and client certificate there (see [`crate::tls::https_client`]).
pub(crate) fn http_client(tls_dir: Option<PathBuf>) -> reqwest::blocking::Client {
    let mut builder = reqwest::blocking::Client::builder()
        .timeout(REQUEST_TIMEOUT)
        .connect_timeout(CONNECT_TIMEOUT)
        .no_proxy();
    if let Some(dir) = tls_dir {
        builder = crate::tls::https_client(builder, &dir)
            .unwrap_or_else(|err| panic!("the sandbox's TLS files: {err:#}"));
    }
    builder.build().expect("an HTTP client for the sandbox's instances")
}

/// `GET <url>` as text when the answer is 200.
pub(crate) fn get_text(client: &reqwest::blocking::Client, url: &str) -> Option<String> {
    let response = client.get(url).send().ok()?;
    response.status().is_success().then(|| response.text().ok()).flatten()
}

/// The members answer of the first master that gives one with `result: true`.
pub(crate) fn members_of(
    client: &reqwest::blocking::Client,
    masters: &[&Instance],
    tls: bool,
) -> Option<Value> {
    masters.iter().find_map(|master| {
        let url = format!("{}/apis/v1alpha1/members", master.url_for(tls));
        let text = get_text(client, &url)?;
        let value: Value = serde_json::from_str(&text).ok()?;
        (value["result"] == true).then_some(value)
    })
}

/// The leader's name, when the members answer names one.
pub(crate) fn leader_name(members: &Value) -> Option<String> {
    section(members, "leader")?["name"].as_str().filter(|name| !name.is_empty()).map(str::to_owned)
}

/// The `(name, stage)` of every worker the members answer lists.
pub(crate) fn worker_stages(members: &Value) -> Vec<(String, String)> {
    let workers = section(members, "worker").and_then(|worker| worker["workers"].as_array());
    workers
        .into_iter()
        .flatten()
        .map(|w| {
            let text = |key: &str| w[key].as_str().unwrap_or_default().to_owned();
            (text("name"), text("stage"))
        })
        .collect()
}

/// `members` is a list of one-key objects: `{"leader": ...}`, `{"master": ...}`, `{"worker": ...}`.
fn section<'a>(members: &'a Value, key: &str) -> Option<&'a Value> {
    members["members"].as_array()?.iter().find_map(|entry| entry.get(key))
}

/// Starts a deployed cluster: masters, a leader, sources, workers.
pub(crate) struct BringUp<'a> {
    sandbox: &'a Sandbox,
    sources: usize,
    tasks: usize,
    client: reqwest::blocking::Client,
}

impl<'a> BringUp<'a> {
    pub(crate) fn new(sandbox: &'a Sandbox, sources: usize, tasks: usize) -> BringUp<'a> {
        BringUp { sandbox, sources, tasks, client: sandbox.http_client() }
    }

    pub(crate) fn run(&self) -> Result<()> {
        let instances = self.sandbox.instances();
        let (masters, workers): (Vec<&Instance>, Vec<&Instance>) =
            instances.iter().partition(|i| i.is_master());
        self.start_all(&masters)?;
        let tls = self.sandbox.tls;
        self.wait_for("a dm-master leader", LEADER_TIMEOUT, &masters, || {
            members_of(&self.client, &masters, tls).as_ref().and_then(leader_name)
        })?;
        if self.sources > 0 {
            crate::sources::create(&self.client, &masters, tls, self.sources)?;
            crate::sources::create_tasks(&self.client, &masters, tls, self.tasks, self.sources)?;
        }
        self.start_all(&workers)?;
        let expected: BTreeSet<&str> = workers.iter().map(|w| w.name.as_str()).collect();
        self.wait_for("every dm-worker free or bound", WORKERS_TIMEOUT, &workers, || {
            let members = members_of(&self.client, &masters, tls)?;
            let ready: BTreeSet<String> = worker_stages(&members)
                .into_iter()
                .filter(|(_, stage)| stage == "free" || stage == "bound")
                .map(|(name, _)| name)
                .collect();
            expected.iter().all(|name| ready.contains(*name)).then_some(())
        })
    }

    /// Polls `probe` until it yields, failing early once one of `instances` has exited; an
    /// error carries the end of their stderr logs.
    fn wait_for<T>(
        &self,
        what: &str,
        timeout: Duration,
        instances: &[&Instance],
        mut probe: impl FnMut() -> Option<T>,
    ) -> Result<T> {
        let outcome = wait::poll_for(what, timeout, || {
            if let Some(value) = probe() {
                return Some(Ok(value));
            }
            let exited = instances.iter().find(|i| self.sandbox.pid(&i.id).is_none())?;
            Some(Err(anyhow!("{} {} exited while waiting for {what}", exited.role, exited.id)))
        });
        outcome.and_then(|result| result).map_err(|err| {
            let logs: Vec<String> = instances.iter().map(|i| stderr_tail(i)).collect();
            anyhow!("{err:#}\n{}", logs.join("\n"))
        })
    }

    /// `systemctl start` over SSH on every instance's host, all at once.
    fn start_all(&self, instances: &[&Instance]) -> Result<()> {
        let outcomes: Vec<Result<()>> = std::thread::scope(|scope| {
            let handles: Vec<_> = instances
                .iter()
                .map(|instance| scope.spawn(move || self.start(instance)))
                .collect();
            handles.into_iter().map(|h| h.join().expect("start thread")).collect()
        });
        outcomes.into_iter().collect()
    }

    fn start(&self, instance: &Instance) -> Result<()> {
        let command = self.sandbox.as_root(&format!("systemctl start {}", instance.unit));
        let output = crate::host::ssh(
            self.sandbox.ssh_key(),
            self.sandbox.ssh_user(),
            &instance.host,
            &command,
        )
        .context("running ssh")?;
        if !output.status.success() {
            bail!(
                "systemctl start {} on {} failed: {}",
                instance.unit,
                instance.host,
                String::from_utf8_lossy(&output.stderr)
            );
        }
        Ok(())
    }
}

/// The last lines of an instance's stderr log, for error messages.
fn stderr_tail(instance: &Instance) -> String {
    const LINES: usize = 5;
    let path = format!("{}/{}_stderr.log", instance.log_dir, instance.role);
    let text = std::fs::read_to_string(&path).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    let tail = lines[lines.len().saturating_sub(LINES)..].join("\n    ");
    format!("{} {} ({path}):\n    {tail}", instance.role, instance.id)
}

impl Sandbox {
    fn masters(&self) -> Vec<&Instance> {
        self.instances.iter().filter(|i| i.is_master()).collect()
    }

    /// The members answer (`GET /apis/v1alpha1/members`, all sections) of the first master
    /// that gives one with `result: true`, as raw JSON; `None` when none does.
    pub fn members_json(&self) -> Option<Value> {
        members_of(&self.http_client(), &self.masters(), self.tls)
    }

    /// The member name of the current dm-master leader, asked of any master that answers.
    pub fn leader_name(&self) -> Option<String> {
        self.members_json().as_ref().and_then(leader_name)
    }

    /// The instance that leads now.
    pub fn leader(&self) -> Option<Instance> {
        let name = self.leader_name()?;
        self.instances.iter().find(|i| i.name == name).cloned()
    }

    /// The Release Version `id` reports on its own `GET /status`; `None` when it does not
    /// answer.
    pub fn status_version(&self, id: &str) -> Option<String> {
        let text = get_text(&self.http_client(), &format!("{}/status", self.url(id)))?;
        text.lines()
            .find_map(|line| line.strip_prefix("Release Version:"))
            .map(|version| version.trim().to_owned())
    }

    /// Every subtask the running workers report on `/metrics`: `(task, source, worker, stage)`,
    /// sorted.
    pub fn subtasks(&self) -> Vec<(String, String, String, TaskStage)> {
        let client = self.http_client();
        let mut subtasks: Vec<_> = self
            .instances
            .iter()
            .filter(|i| !i.is_master())
            .filter_map(|worker| get_text(&client, &format!("{}/metrics", self.url(&worker.id))))
            .flat_map(|text| parse_task_metrics(&text))
            .collect();
        subtasks.sort();
        subtasks
    }

    /// Each source and the worker (member name) it is bound to now, from the members answer;
    /// an unbound source is missing.
    pub fn bindings(&self) -> std::collections::BTreeMap<String, String> {
        let Some(members) = self.members_json() else { return Default::default() };
        let workers = section(&members, "worker").and_then(|worker| worker["workers"].as_array());
        workers
            .into_iter()
            .flatten()
            .filter_map(|w| {
                let source = w["source"].as_str().filter(|s| !s.is_empty())?;
                Some((source.to_owned(), w["name"].as_str()?.to_owned()))
            })
            .collect()
    }

    /// What the masters did (their event logs: each logs what it did while it led), in time
    /// order, without the time and the master's name.
    pub fn master_events(&self) -> Vec<String> {
        let mut events: Vec<(String, String)> = Vec::new();
        for master in self.masters() {
            let log = std::fs::read_to_string(format!("{}/dm-master.log", master.log_dir));
            for line in log.unwrap_or_default().lines() {
                let Some((stamp, rest)) = line.split_once("] [") else { continue };
                let Some((_, what)) = rest.split_once("] ") else { continue };
                events.push((stamp.to_owned(), what.to_owned()));
            }
        }
        events.sort();
        events.into_iter().map(|(_, what)| what).collect()
    }

    /// Every `(source, worker)` binding the masters' schedulers made, in time order: how often
    /// each source moved.
    pub fn bind_events(&self) -> Vec<(String, String)> {
        let events = self.master_events();
        let bindings = events.iter().filter_map(|what| {
            let (source, worker) = what.strip_prefix("source ")?.split_once(" bound to worker ")?;
            Some((source.to_owned(), worker.to_owned()))
        });
        bindings.collect()
    }

    /// The masters that will not run for leader now (evicted, and not restarted since), as
    /// each says of itself on its peer port (`GET /sim/peer/state`).
    pub fn ineligible_masters(&self) -> Vec<String> {
        let client = self.http_client();
        let scheme = if self.tls { "https" } else { "http" };
        let masters = self.masters();
        let ineligible = masters.iter().filter(|master| {
            let url = format!(
                "{scheme}://{}:{}/sim/peer/state",
                master.host,
                master.peer_port.unwrap_or_default()
            );
            let state =
                get_text(&client, &url).and_then(|text| serde_json::from_str::<Value>(&text).ok());
            state.is_some_and(|state| state["eligible"] == false)
        });
        ineligible.map(|master| master.name.clone()).collect()
    }

    /// Evicts the leader (`PUT /apis/v1alpha1/leader/1` on the leader itself), as a run cut
    /// short after that step leaves it.
    pub fn evict_leader(&self) {
        let leader = self.leader().expect("a leader to evict");
        let url = format!("{}/apis/v1alpha1/leader/1", leader.url_for(self.tls));
        let answer = self.http_client().put(url).send();
        assert!(answer.is_ok_and(|a| a.status().is_success()), "the leader took the eviction");
    }

    /// Holds a shard DDL lock of `task` on `source` (`locked`), or resolves it, through the
    /// leader (any master forwards the call).
    pub fn shard_ddl_lock(&self, task: &str, source: &str, locked: bool) {
        let client = self.http_client();
        let path = format!("/sim/v1/shard-ddl/{task}/{source}");
        let done = self.masters().iter().any(|master| {
            let url = format!("{}{path}", master.url_for(self.tls));
            let request = if locked { client.post(url) } else { client.delete(url) };
            request.send().is_ok_and(|answer| answer.status().is_success())
        });
        assert!(done, "no master took {path}");
    }

    /// Each subtask's checkpoint, `(task, source) -> (file, pos)`, from the running workers'
    /// `/metrics` (`dm_syncer_binlog_*{node="syncer"}`).
    pub fn checkpoints(&self) -> std::collections::BTreeMap<(String, String), (u64, u64)> {
        let client = self.http_client();
        let mut checkpoints = std::collections::BTreeMap::new();
        for worker in self.instances.iter().filter(|i| !i.is_master()) {
            let Some(text) = get_text(&client, &format!("{}/metrics", self.url(&worker.id))) else {
                continue;
            };
            for line in text.lines().filter(|line| line.contains("node=\"syncer\"")) {
                let Some((name, rest)) = line.split_once('{') else { continue };
                let Some((labels, value)) = rest.split_once("} ") else { continue };
                let label = |key: &str| {
                    labels.split(',').find_map(|pair| {
                        let (k, v) = pair.split_once('=')?;
                        (k == key).then(|| v.trim_matches('"').to_owned())
                    })
                };
                let (Some(task), Some(source)) = (label("task"), label("source_id")) else {
                    continue;
                };
                let value: u64 = value.trim().parse().unwrap_or_default();
                let entry = checkpoints.entry((task, source)).or_insert((0, 0));
                match name {
                    crate::task_api::BINLOG_FILE_METRIC => entry.0 = value,
                    crate::task_api::BINLOG_POS_METRIC => entry.1 = value,
                    _ => {}
                }
            }
        }
        checkpoints
    }

    /// query-status of `task` (`GET /apis/v1alpha1/status/{task}`) from the first master that
    /// answers it.
    pub fn query_status(&self, task: &str) -> Option<QueryStatusResponse> {
        let client = self.http_client();
        self.masters().iter().find_map(|master| {
            let url = format!("{}/apis/v1alpha1/status/{task}", master.url_for(self.tls));
            serde_json::from_str(&get_text(&client, &url)?).ok()
        })
    }
}

/// The `dm_worker_task_state` samples of a worker's Prometheus text.
fn parse_task_metrics(text: &str) -> Vec<(String, String, String, TaskStage)> {
    text.lines()
        .filter_map(|line| line.strip_prefix(TASK_STATE_METRIC)?.strip_prefix('{'))
        .filter_map(|rest| {
            let (labels, value) = rest.split_once("} ")?;
            let label = |key: &str| {
                labels.split(',').find_map(|pair| {
                    let (k, v) = pair.split_once('=')?;
                    (k == key).then(|| v.trim_matches('"').to_owned())
                })
            };
            let stage = TaskStage::from_metric_value(value.trim().parse().ok()?)?;
            Some((label("task")?, label("source_id")?, label("worker")?, stage))
        })
        .collect()
}
