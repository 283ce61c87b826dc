//! [`Sandbox`]: hosts, store and cluster brought up together and torn down together.

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Output;
use std::sync::Mutex;
use std::time::Duration;

use anyhow::{Context, Result, bail};

use crate::bins::{self, Executables};
use crate::claim::Claim;
use crate::cluster::BringUp;
use crate::deploy::{DeploySpec, deploy_instances};
use crate::host::{self, HostSpec, SSH_PORT, Sshd};
use crate::package::{package_file_name, write_package};
use crate::state::{HostState, SandboxState};
use crate::sudo::{self, SHARED_STAND_IN_DIR};
use crate::topology::{self, Instance, MetaSpec};
use crate::units::ServiceManager;
use crate::wait;

/// Set to `1` to keep a sandbox's directory after teardown, for a look at logs.
pub const KEEP_VAR: &str = "DM_SANDBOX_KEEP";

/// Simulator tunables every sandbox cluster gets unless the builder overrides them: members
/// that vanish without saying goodbye (kill -9) are given up on after seconds, not a minute.
const DEFAULT_SIM_ENV: [(&str, &str); 2] = [
    ("DM_SIM_MASTER_LEASE_MS", "3000"),
    ("DM_SIM_WORKER_LEASE_MS", "3000"),
];

/// How a sandbox should look; [`SandboxBuilder::start`] brings it up.
#[derive(Clone, Debug)]
pub struct SandboxBuilder {
    hosts: usize,
    masters: usize,
    workers: usize,
    sources: usize,
    version: String,
    cluster_name: String,
    ssh_user: String,
    root: Option<PathBuf>,
    sim_env: Vec<(String, String)>,
}

impl Default for SandboxBuilder {
    fn default() -> Self {
        SandboxBuilder {
            hosts: 2,
            masters: 1,
            workers: 1,
            sources: 1,
            version: "v8.5.1".to_owned(),
            cluster_name: "dm-sandbox".to_owned(),
            ssh_user: "root".to_owned(),
            root: None,
            sim_env: DEFAULT_SIM_ENV
                .map(|(k, v)| (k.to_owned(), v.to_owned()))
                .to_vec(),
        }
    }
}

impl SandboxBuilder {
    /// Number of hosts (sshd instances), `127.<a>.<b>.1` upwards.
    pub fn hosts(mut self, count: usize) -> Self {
        self.hosts = count;
        self
    }

    /// dm-masters, one per host from the first host on. `masters(0).workers(0)` gives hosts
    /// and a store with empty server lists, and no DM processes.
    pub fn masters(mut self, count: usize) -> Self {
        self.masters = count;
        self
    }

    /// dm-workers, on the hosts after the masters' (wrapping around), one per host.
    pub fn workers(mut self, count: usize) -> Self {
        self.workers = count;
        self
    }

    /// Upstream sources (`mysql-replica-01`, ...) created before the workers start.
    pub fn sources(mut self, count: usize) -> Self {
        self.sources = count;
        self
    }

    /// The deployed DM version (`dm_version` in meta.yaml, Release Version of the binaries).
    pub fn version(mut self, version: &str) -> Self {
        self.version = version.to_owned();
        self
    }

    pub fn cluster_name(mut self, name: &str) -> Self {
        self.cluster_name = name.to_owned();
        self
    }

    /// Log in as `user` instead of root; a non-root user is set up as TiUP's deploy user (a
    /// system account with passwordless sudo), and services run as that user.
    pub fn ssh_user(mut self, user: &str) -> Self {
        self.ssh_user = user.to_owned();
        self
    }

    /// Build the sandbox in `dir` (created; must be empty if it exists) instead of a fresh
    /// temporary directory.
    pub fn root(mut self, dir: impl Into<PathBuf>) -> Self {
        self.root = Some(dir.into());
        self
    }

    /// Exports `name=value` in every run script: a simulator tunable such as
    /// `DM_SIM_SCHEDULER_DELAY_MS` (replaces an earlier value of the same name).
    pub fn sim_env(mut self, name: &str, value: &str) -> Self {
        self.sim_env.retain(|(existing, _)| existing != name);
        self.sim_env.push((name.to_owned(), value.to_owned()));
        self
    }

    /// Brings the sandbox up: hosts, store, deploy dirs, and (with masters) the running
    /// cluster, masters first, sources, then workers. Anything already started is torn down
    /// again when a step fails.
    pub fn start(self) -> Result<Sandbox> {
        if self.hosts == 0 || self.hosts > 254 {
            bail!("a sandbox has 1 to 254 hosts, not {}", self.hosts);
        }
        if self.masters > self.hosts || self.workers > self.hosts {
            bail!(
                "each host runs at most one master and one worker: {} hosts cannot hold {} masters and {} workers",
                self.hosts,
                self.masters,
                self.workers
            );
        }
        if self.workers > 0 && self.masters == 0 {
            bail!("workers need at least one master");
        }
        bins::require_system_tools(self.ssh_user != "root")?;
        let executables = Executables::locate()?;
        let root = prepare_root(self.root.as_deref())?;
        let claim = Claim::take(&root)?;
        let hosts: Vec<String> = (1..=self.hosts)
            .map(|n| format!("{}.{n}", claim.subnet()))
            .collect();
        let instances = topology::place(&hosts, self.masters, self.workers, &root);
        let mut sandbox = Sandbox {
            tiup_home: root.join("tiup"),
            key: root
                .join("tiup/storage/dm/clusters")
                .join(&self.cluster_name)
                .join("ssh/id_rsa"),
            root,
            claim,
            cluster_name: self.cluster_name.clone(),
            ssh_user: self.ssh_user.clone(),
            version: self.version.clone(),
            hosts,
            instances,
            sshds: Mutex::new(Vec::new()),
            tear_down_on_drop: true,
        };
        sandbox.install(&self, &executables)?;
        if self.masters > 0 {
            BringUp::new(&sandbox, self.sources).run()?;
        }
        sandbox.save_state()?;
        Ok(sandbox)
    }
}

/// A running sandbox. Dropping it tears everything down (also while a test panics): the
/// services and sshds it started, by pid; its subnet claim; its directory unless
/// `DM_SANDBOX_KEEP=1`.
pub struct Sandbox {
    pub(crate) root: PathBuf,
    tiup_home: PathBuf,
    key: PathBuf,
    claim: Claim,
    cluster_name: String,
    ssh_user: String,
    version: String,
    hosts: Vec<String>,
    instances: Vec<Instance>,
    /// Per host, in `hosts` order; `None` once that host was stopped.
    sshds: Mutex<Vec<Option<Sshd>>>,
    tear_down_on_drop: bool,
}

fn keep_requested() -> bool {
    std::env::var(KEEP_VAR).is_ok_and(|value| value == "1")
}

fn prepare_root(requested: Option<&Path>) -> Result<PathBuf> {
    let root = match requested {
        Some(dir) => {
            fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
            if fs::read_dir(dir)?.next().is_some() {
                bail!(
                    "{} is not empty; a sandbox needs a directory of its own",
                    dir.display()
                );
            }
            dir.canonicalize()?
        }
        None => tempfile::Builder::new()
            .prefix("dm-sandbox-")
            .tempdir()?
            .keep(),
    };
    // A non-root SSH user must reach its authorized keys and deploy dirs in here.
    fs::set_permissions(&root, fs::Permissions::from_mode(0o755))?;
    Ok(root)
}

impl Sandbox {
    pub fn builder() -> SandboxBuilder {
        SandboxBuilder::default()
    }

    /// Installs binaries, keys and hosts, writes the store and deploy dirs.
    fn install(&mut self, spec: &SandboxBuilder, executables: &Executables) -> Result<()> {
        let bin = self.root.join("bin");
        let stand_in_dir = bin.join("path");
        fs::create_dir_all(&stand_in_dir)?;
        let dm_sim = bin.join("dm-sim");
        fs::copy(&executables.dm_sim, &dm_sim).context("copying dm-sim")?;
        fs::copy(&executables.systemctl, stand_in_dir.join("systemctl"))
            .context("copying systemctl")?;
        if self.ssh_user != "root" {
            sudo::prepare_deploy_user(&self.ssh_user, &executables.systemctl)?;
        }

        let cluster_dir = self
            .key
            .parent()
            .and_then(Path::parent)
            .context("cluster dir")?
            .to_path_buf();
        fs::create_dir_all(cluster_dir.join("ssh"))?;
        // PKCS#1 PEM, the format TiUP itself writes its cluster keys in.
        host::keygen(
            &[
                "-t",
                "rsa",
                "-b",
                "2048",
                "-m",
                "PEM",
                "-N",
                "",
                "-C",
                &self.cluster_name,
            ],
            &self.key,
        )?;
        let authorized_key = fs::read_to_string(self.key.with_extension("pub"))?;

        let configs = self
            .hosts
            .iter()
            .map(|ip| {
                host::prepare(&HostSpec {
                    ip,
                    dir: &self.host_dir(ip),
                    ssh_user: &self.ssh_user,
                    authorized_key: &authorized_key,
                    stand_in_dir: &stand_in_dir,
                })
            })
            .collect::<Result<Vec<_>>>()?;
        self.start_sshds(&configs)?;

        let meta = topology::render_meta(
            &MetaSpec {
                ssh_user: &self.ssh_user,
                version: &self.version,
                ssh_port: SSH_PORT,
            },
            &self.instances,
        );
        fs::write(cluster_dir.join("meta.yaml"), meta)?;
        deploy_instances(
            &DeploySpec {
                instances: &self.instances,
                version: &self.version,
                service_user: &self.ssh_user,
                dm_sim: &dm_sim,
                sim_env: &spec.sim_env,
            },
            &self.root.join("hosts"),
        )?;
        if self.ssh_user != "root" {
            self.give_hosts_to(&self.ssh_user)?;
        }
        Ok(())
    }

    /// Starts every host's sshd at once; those that did start are kept for teardown even when
    /// another fails.
    fn start_sshds(&self, configs: &[PathBuf]) -> Result<()> {
        let results: Vec<Result<Sshd>> = std::thread::scope(|scope| {
            let handles: Vec<_> = self
                .hosts
                .iter()
                .zip(configs)
                .map(|(ip, config)| scope.spawn(move || Sshd::start(ip, config)))
                .collect();
            handles
                .into_iter()
                .map(|h| h.join().expect("sshd start thread"))
                .collect()
        });
        let mut sshds = self.sshds.lock().unwrap();
        let mut first_error = None;
        for result in results {
            match result {
                Ok(sshd) => sshds.push(Some(sshd)),
                Err(err) => {
                    sshds.push(None);
                    first_error.get_or_insert(err);
                }
            }
        }
        first_error.map_or(Ok(()), Err)
    }

    /// TiUP deploys as the deploy user: its deploy, data and home dirs are its own.
    fn give_hosts_to(&self, user: &str) -> Result<()> {
        let output = std::process::Command::new("chown")
            .arg("-R")
            .arg(format!("{user}:"))
            .args(
                self.hosts
                    .iter()
                    .flat_map(|ip| {
                        let dir = self.host_dir(ip);
                        ["deploy", "data", "home"].map(|sub| dir.join(sub))
                    })
                    .filter(|dir| dir.exists()),
            )
            .output()?;
        if !output.status.success() {
            bail!(
                "chown to {user} failed: {}",
                String::from_utf8_lossy(&output.stderr)
            );
        }
        Ok(())
    }

    fn save_state(&self) -> Result<()> {
        self.state().save(&self.root)
    }

    fn state(&self) -> SandboxState {
        let sshds = self.sshds.lock().unwrap();
        SandboxState {
            cluster_name: self.cluster_name.clone(),
            subnet: self.claim.subnet().to_owned(),
            ssh_user: self.ssh_user.clone(),
            version: self.version.clone(),
            hosts: self
                .hosts
                .iter()
                .enumerate()
                .map(|(index, ip)| HostState {
                    ip: ip.clone(),
                    sshd: sshds.get(index).and_then(|s| s.as_ref()).map(|s| s.record),
                })
                .collect(),
            instances: self.instances.clone(),
        }
    }

    /// Reattaches to the sandbox at `root` that another process brought up (`sandbox down`,
    /// `sandbox status`). Dropping the handle leaves the sandbox running; see [`Sandbox::down`].
    pub fn open(root: &Path) -> Result<Sandbox> {
        let root = root
            .canonicalize()
            .with_context(|| format!("no sandbox at {}", root.display()))?;
        let state = SandboxState::load(&root)?;
        Ok(Sandbox {
            tiup_home: root.join("tiup"),
            key: root
                .join("tiup/storage/dm/clusters")
                .join(&state.cluster_name)
                .join("ssh/id_rsa"),
            claim: Claim::existing(&state.subnet),
            cluster_name: state.cluster_name,
            ssh_user: state.ssh_user,
            version: state.version,
            hosts: state.hosts.iter().map(|h| h.ip.clone()).collect(),
            instances: state.instances,
            sshds: Mutex::new(
                state
                    .hosts
                    .iter()
                    .map(|h| h.sshd.map(Sshd::adopt))
                    .collect(),
            ),
            root,
            tear_down_on_drop: false,
        })
    }

    /// Leaves the sandbox running after this handle is gone (`sandbox up`); returns its root.
    pub fn detach(mut self) -> Result<PathBuf> {
        self.save_state()?;
        self.tear_down_on_drop = false;
        Ok(self.root.clone())
    }

    /// Tears the sandbox down now, reporting what could not be cleaned up. Its directory is
    /// removed unless `DM_SANDBOX_KEEP=1`.
    pub fn down(mut self) -> Result<()> {
        self.tear_down_on_drop = false;
        self.tear_down(keep_requested())
    }

    /// Like [`Sandbox::down`], but keeps the directory (logs, store) in any case.
    pub fn down_keeping_files(mut self) -> Result<()> {
        self.tear_down_on_drop = false;
        self.tear_down(true)
    }

    fn tear_down(&mut self, keep_files: bool) -> Result<()> {
        let mut problems = Vec::new();
        for ip in &self.hosts {
            for user_scope in [false, true] {
                if let Err(err) =
                    ServiceManager::for_host(&self.host_dir(ip), user_scope).kill_all()
                {
                    problems.push(format!("{ip}: {err:#}"));
                }
            }
        }
        for sshd in self.sshds.lock().unwrap().iter_mut().flatten() {
            sshd.stop();
        }
        if let Err(err) = self.claim.release() {
            problems.push(format!("{err:#}"));
        }
        if keep_files {
            eprintln!("dm-sandbox: keeping {}", self.root.display());
        } else if let Err(err) = fs::remove_dir_all(&self.root) {
            problems.push(format!("removing {}: {err}", self.root.display()));
        }
        if problems.is_empty() {
            Ok(())
        } else {
            bail!("teardown left things behind: {}", problems.join("; "))
        }
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    /// TIUP_HOME for dm-patch: `<root>/tiup`.
    pub fn tiup_home(&self) -> &Path {
        &self.tiup_home
    }

    pub fn cluster_name(&self) -> &str {
        &self.cluster_name
    }

    /// The user SSH logs in as (meta.yaml's `user`).
    pub fn ssh_user(&self) -> &str {
        &self.ssh_user
    }

    /// The version the cluster was deployed with.
    pub fn version(&self) -> &str {
        &self.version
    }

    /// The cluster's private key (`ssh/id_rsa` in the store).
    pub fn ssh_key(&self) -> &Path {
        &self.key
    }

    /// Host addresses, `127.<a>.<b>.1` upwards.
    pub fn hosts(&self) -> Vec<String> {
        self.hosts.clone()
    }

    /// The deployed instances, masters first, as meta.yaml lists them.
    pub fn instances(&self) -> Vec<Instance> {
        self.instances.clone()
    }

    /// `<root>/hosts/<ip>`: the host's sshd, units, deploy and data dirs.
    pub fn host_dir(&self, ip: &str) -> PathBuf {
        self.root.join("hosts").join(ip)
    }

    pub fn meta_yaml(&self) -> String {
        let path = self
            .key
            .parent()
            .and_then(Path::parent)
            .map(|dir| dir.join("meta.yaml"));
        path.and_then(|path| fs::read_to_string(path).ok())
            .unwrap_or_default()
    }

    /// Runs `command` on host `ip` over SSH, as the cluster's user with the cluster key.
    pub fn ssh(&self, ip: &str, command: &str) -> Output {
        host::ssh(&self.key, &self.ssh_user, ip, command)
            .unwrap_or_else(|err| panic!("running ssh to {ip}: {err}"))
    }

    /// Builds a hotfix package of `component` (`dm-master`/`dm-worker`) whose binary reports
    /// `version` and has the simulator's `faults`, under `<root>/packages/`.
    pub fn package(&self, component: &str, version: &str, faults: &[&str]) -> Result<PathBuf> {
        let dir = self.root.join("packages");
        fs::create_dir_all(&dir)?;
        let path = dir.join(package_file_name(component, version, faults));
        write_package(
            &path,
            component,
            version,
            faults,
            &self.root.join("bin/dm-sim"),
        )?;
        Ok(path)
    }

    pub(crate) fn instance(&self, id: &str) -> &Instance {
        self.instances
            .iter()
            .find(|i| i.id == id)
            .unwrap_or_else(|| panic!("the sandbox has no instance {id}"))
    }

    /// The pid of `id`'s service while it runs (per the stand-in's record, checked alive).
    pub fn pid(&self, id: &str) -> Option<u32> {
        let instance = self.instance(id);
        let manager = ServiceManager::for_host(&self.host_dir(&instance.host), false);
        manager.running(&instance.unit).map(|record| record.pid)
    }

    /// `systemctl start` of `id`'s unit over SSH (with sudo for a non-root user).
    pub fn start_service(&self, id: &str) {
        self.systemctl(id, "start");
    }

    /// `systemctl stop` of `id`'s unit over SSH: graceful, returns once the process is gone.
    pub fn stop_service(&self, id: &str) {
        self.systemctl(id, "stop");
    }

    /// SIGKILL to `id`'s service, as a crash would (its unit then reads `failed`).
    pub fn kill_service(&self, id: &str) {
        let instance = self.instance(id);
        let manager = ServiceManager::for_host(&self.host_dir(&instance.host), false);
        if let Some(record) = manager.running(&instance.unit) {
            record.kill();
        }
    }

    /// Takes host `ip` down: its services (SIGKILL) and its sshd with every session.
    pub fn stop_host(&self, ip: &str) {
        let index = self
            .hosts
            .iter()
            .position(|h| h == ip)
            .unwrap_or_else(|| panic!("no host {ip}"));
        for user_scope in [false, true] {
            let manager = ServiceManager::for_host(&self.host_dir(ip), user_scope);
            manager
                .kill_all()
                .unwrap_or_else(|err| panic!("stopping services of {ip}: {err:#}"));
        }
        if let Some(mut sshd) = self.sshds.lock().unwrap()[index].take() {
            sshd.stop();
        }
    }

    fn systemctl(&self, id: &str, verb: &str) {
        let instance = self.instance(id);
        let command = self.as_root(&format!("systemctl {verb} {}", instance.unit));
        let output = self.ssh(&instance.host, &command);
        assert!(
            output.status.success(),
            "systemctl {verb} {} on {}: {}",
            instance.unit,
            instance.host,
            String::from_utf8_lossy(&output.stderr)
        );
    }

    /// `command` as TiUP runs privileged commands: plain as root, else `sudo -H bash -c`.
    pub fn as_root(&self, command: &str) -> String {
        if self.ssh_user == "root" {
            command.to_owned()
        } else {
            format!("sudo -H bash -c '{}'", command.replace('\'', r"'\''"))
        }
    }

    /// Polls `condition` (short first interval, backing off) until it holds; panics naming
    /// `what` after `timeout`.
    pub fn wait_until(&self, what: &str, timeout: Duration, condition: impl FnMut() -> bool) {
        if let Err(err) = wait::poll(what, timeout, condition) {
            panic!("{err}");
        }
    }

    /// Where sudo finds the stand-in for every sandbox (see [`crate::sudo`]).
    pub fn shared_stand_in_dir() -> &'static Path {
        Path::new(SHARED_STAND_IN_DIR)
    }
}

impl Drop for Sandbox {
    fn drop(&mut self) {
        if self.tear_down_on_drop
            && let Err(err) = self.tear_down(keep_requested())
        {
            eprintln!("dm-sandbox: {err:#}");
        }
    }
}
