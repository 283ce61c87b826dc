//! [`Sandbox`]: hosts, store and cluster brought up together and torn down together.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Output;
use std::sync::Mutex;
use std::time::Duration;

use anyhow::{Context, Result, bail};

use crate::builder::SandboxBuilder;
use crate::claim::Claim;
use crate::fault::Fault;
use crate::host::{self, Sshd};
use crate::machine::{STAND_IN_DIR, Sweep};
use crate::package::{package_file_name, write_package};
use crate::state::{HostState, STATE_FILE, SandboxState};
use crate::topology::Instance;
use crate::units::ServiceManager;
use crate::wait;

/// Set to `1` to keep a sandbox's directory after teardown, for a look at logs.
pub const KEEP_VAR: &str = "DM_SANDBOX_KEEP";

/// A running sandbox. Dropping it tears everything down (also while a test panics): the
/// services and sshds it started, by pid; its subnet claim, and with the last sandbox on the
/// machine all machine-wide state (see [`crate::machine`]); its directory unless
/// `DM_SANDBOX_KEEP=1`.
pub struct Sandbox {
    pub(crate) root: PathBuf,
    pub(crate) tiup_home: PathBuf,
    pub(crate) key: PathBuf,
    pub(crate) claim: Claim,
    pub(crate) cluster_name: String,
    pub(crate) ssh_user: String,
    pub(crate) version: String,
    /// Mutual TLS on every instance's API (`global.enable_tls`).
    pub(crate) tls: bool,
    pub(crate) hosts: Vec<String>,
    pub(crate) instances: Vec<Instance>,
    /// Per host, in `hosts` order; `None` once that host was stopped.
    pub(crate) sshds: Mutex<Vec<Option<Sshd>>>,
    pub(crate) tear_down_on_drop: bool,
}

fn keep_requested() -> bool {
    std::env::var(KEEP_VAR).is_ok_and(|value| value == "1")
}

impl Sandbox {
    pub fn builder() -> SandboxBuilder {
        SandboxBuilder::default()
    }

    pub(crate) fn save_state(&self) -> Result<()> {
        self.state().save(&self.root)
    }

    fn state(&self) -> SandboxState {
        let sshds = self.sshds.lock().unwrap();
        SandboxState {
            cluster_name: self.cluster_name.clone(),
            subnet: self.claim.subnet().to_owned(),
            ssh_user: self.ssh_user.clone(),
            version: self.version.clone(),
            tls: self.tls,
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
        let root =
            root.canonicalize().with_context(|| format!("no sandbox at {}", root.display()))?;
        let state = SandboxState::load(&root)?;
        Ok(Sandbox {
            tiup_home: root.join("tiup"),
            key: root.join("tiup/storage/dm/clusters").join(&state.cluster_name).join("ssh/id_rsa"),
            claim: Claim::existing(&state.subnet, &root),
            cluster_name: state.cluster_name,
            ssh_user: state.ssh_user,
            version: state.version,
            tls: state.tls,
            hosts: state.hosts.iter().map(|h| h.ip.clone()).collect(),
            instances: state.instances,
            sshds: Mutex::new(state.hosts.iter().map(|h| h.sshd.map(Sshd::adopt)).collect()),
            root,
            tear_down_on_drop: false,
        })
    }

    /// Leaves the sandbox running after this handle is gone (`sandbox up`); returns its root.
    /// From now on its sshds keep its claim (see [`crate::claim`]).
    pub fn detach(mut self) -> Result<PathBuf> {
        self.save_state()?;
        let sshds: Vec<_> =
            self.sshds.lock().unwrap().iter().flatten().map(|sshd| sshd.record).collect();
        self.claim.set_keepers(&sshds)?;
        self.tear_down_on_drop = false;
        Ok(self.root.clone())
    }

    /// Tears the sandbox down now, reporting what could not be cleaned up. Its directory is
    /// removed unless `DM_SANDBOX_KEEP=1`.
    pub fn down(mut self) -> Result<()> {
        self.tear_down_on_drop = false;
        // Kept by this process while it tears down, so no sweep takes it for a crashed one.
        let adopted = self.claim.keep_by_this_process();
        let result = self.tear_down(keep_requested());
        adopted.and(result)
    }

    /// Like [`Sandbox::down`], but keeps the directory (logs, store) in any case.
    pub fn down_keeping_files(mut self) -> Result<()> {
        self.tear_down_on_drop = false;
        let adopted = self.claim.keep_by_this_process();
        let result = self.tear_down(true);
        adopted.and(result)
    }

    fn tear_down(&mut self, keep_files: bool) -> Result<()> {
        let mut problems = self.stop_processes();
        match self.claim.release() {
            Ok(sweep) => problems.extend(sweep.problems),
            Err(err) => problems.push(format!("{err:#}")),
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

    /// SIGKILLs every unit process recorded on every host, and stops every sshd with the
    /// sessions it forked; returns what failed.
    fn stop_processes(&self) -> Vec<String> {
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
        problems
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

    /// Whether the instances serve their API over mutual TLS (meta.yaml's `global.enable_tls`).
    pub fn tls(&self) -> bool {
        self.tls
    }

    /// The store's `tls/` directory (`ca.crt`, `ca.pem`, `client.crt`, `client.pem` on a TLS
    /// cluster), as TiUP keeps it. The sandbox's own helpers use a copy of their own in
    /// `<root>/tls/`, so a test may damage these.
    pub fn store_tls_dir(&self) -> PathBuf {
        self.cluster_dir().join(crate::tls::TLS_DIR)
    }

    /// `<tiup home>/storage/dm/clusters/<name>`.
    pub(crate) fn cluster_dir(&self) -> PathBuf {
        self.tiup_home.join("storage/dm/clusters").join(&self.cluster_name)
    }

    /// `http(s)://<host>:<port>` of the instance `id`'s HTTP API.
    pub fn url(&self, id: &str) -> String {
        self.instance(id).url_for(self.tls)
    }

    /// A blocking client of the instances' API: short timeouts, no proxy and, on a TLS
    /// cluster, the cluster's CA and client certificate (the sandbox's own copy).
    pub fn http_client(&self) -> reqwest::blocking::Client {
        crate::cluster::http_client(self.tls.then(|| self.root.join(crate::tls::TLS_DIR)))
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
        let path = self.key.parent().and_then(Path::parent).map(|dir| dir.join("meta.yaml"));
        path.and_then(|path| fs::read_to_string(path).ok()).unwrap_or_default()
    }

    /// Runs `command` on host `ip` over SSH, as the cluster's user with the cluster key.
    pub fn ssh(&self, ip: &str, command: &str) -> Output {
        host::ssh(&self.key, &self.ssh_user, ip, command)
            .unwrap_or_else(|err| panic!("running ssh to {ip}: {err}"))
    }

    /// Builds a hotfix package of `component` (`dm-master`/`dm-worker`) whose binary reports
    /// `version` and has the simulator's `faults`, under `<root>/packages/`.
    pub fn package(&self, component: &str, version: &str, faults: &[Fault]) -> Result<PathBuf> {
        let dir = self.root.join("packages");
        fs::create_dir_all(&dir)?;
        let path = dir.join(package_file_name(component, version, faults));
        write_package(&path, component, version, faults, &self.root.join("bin/dm-sim"))?;
        Ok(path)
    }

    pub(crate) fn instance(&self, id: &str) -> &Instance {
        self.instances
            .iter()
            .find(|i| i.id == id)
            .unwrap_or_else(|| panic!("the sandbox has no instance {id}"))
    }

    /// Polls `condition` (short first interval, backing off) until it holds; panics naming
    /// `what` after `timeout`.
    pub fn wait_until(&self, what: &str, timeout: Duration, condition: impl FnMut() -> bool) {
        if let Err(err) = wait::poll(what, timeout, condition) {
            panic!("{err}");
        }
    }

    /// The first entry of `PATH` in the hosts' SSH sessions: this sandbox's `systemctl`
    /// stand-in.
    pub fn stand_in_dir(&self) -> PathBuf {
        self.root.join("bin").join("path")
    }

    /// Where sudo finds the stand-in for every sandbox (see [`crate::sudo`]).
    pub fn shared_stand_in_dir() -> &'static Path {
        Path::new(STAND_IN_DIR)
    }
}

/// Ends the sandbox at `root` whose claim went stale (its owner crashed): stops every process
/// it recorded (by pid and start time) and removes `root` unless `DM_SANDBOX_KEEP=1`. Only a
/// root that is root's own directory is trusted: anything else is left alone.
pub(crate) fn reap(root: &Path, sweep: &mut Sweep) {
    let meta = match fs::symlink_metadata(root) {
        Ok(meta) => meta,
        Err(_) => return,
    };
    if root.as_os_str().is_empty()
        || meta.file_type().is_symlink()
        || !meta.is_dir()
        || std::os::unix::fs::MetadataExt::uid(&meta) != 0
    {
        sweep
            .kept
            .push(format!("{}: not a sandbox directory of root's, left alone", root.display()));
        return;
    }
    if root.join(STATE_FILE).is_file() {
        match Sandbox::open(root) {
            Ok(crashed) => {
                let problems = crashed.stop_processes();
                if problems.is_empty() {
                    sweep.removed.push(format!(
                        "stopped the processes of the crashed sandbox at {}",
                        root.display()
                    ));
                }
                sweep.problems.extend(problems);
            }
            Err(err) => sweep.problems.push(format!("{err:#}")),
        }
    }
    if keep_requested() {
        sweep.kept.push(format!("{}: kept ({KEEP_VAR}=1)", root.display()));
    } else {
        match fs::remove_dir_all(root) {
            Ok(()) => sweep.removed.push(format!("removed {}", root.display())),
            Err(err) => sweep.problems.push(format!("removing {}: {err}", root.display())),
        }
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
