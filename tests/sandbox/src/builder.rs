//! [`SandboxBuilder`]: what a sandbox should look like, and bringing it up.

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use anyhow::{Context, Result, bail};

use crate::bins::{self, Executables};
use crate::claim::Claim;
use crate::cluster::BringUp;
use crate::deploy::{DeploySpec, deploy_instances};
use crate::harness::Sandbox;
use crate::host::{self, HostSpec, SSH_PORT, Sshd};
use crate::sudo;
use crate::tls::{ClusterCa, TLS_DIR};
use crate::topology::{self, MetaSpec};

/// Simulator tunables every sandbox cluster gets unless the builder overrides them: members
/// that vanish without saying goodbye (kill -9) are given up on after seconds, not a minute.
const DEFAULT_SIM_ENV: [(&str, &str); 2] =
    [("DM_SIM_MASTER_LEASE_MS", "3000"), ("DM_SIM_WORKER_LEASE_MS", "3000")];

/// How a sandbox should look; [`SandboxBuilder::start`] brings it up.
#[derive(Clone, Debug)]
pub struct SandboxBuilder {
    hosts: usize,
    masters: usize,
    workers: usize,
    sources: usize,
    tasks: usize,
    version: String,
    cluster_name: String,
    ssh_user: String,
    root: Option<PathBuf>,
    sim_env: Vec<(String, String)>,
    tls: bool,
    openapi: bool,
}

impl Default for SandboxBuilder {
    fn default() -> Self {
        SandboxBuilder {
            hosts: 2,
            masters: 1,
            workers: 1,
            sources: 1,
            tasks: 0,
            version: "v8.5.1".to_owned(),
            cluster_name: "dm-sandbox".to_owned(),
            ssh_user: "root".to_owned(),
            root: None,
            sim_env: DEFAULT_SIM_ENV.map(|(k, v)| (k.to_owned(), v.to_owned())).to_vec(),
            tls: false,
            openapi: false,
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

    /// Migration tasks (`task-1`, ...), each replicating from every source, created with the
    /// sources; every subtask runs on the worker its source is bound to.
    pub fn tasks(mut self, count: usize) -> Self {
        self.tasks = count;
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

    /// Masters that serve DM's OpenAPI (`server_configs: master: openapi: true`, rendered into
    /// each master's `conf/dm-master.toml` as TiUP does), which can move a source on purpose.
    pub fn openapi(mut self, enabled: bool) -> Self {
        self.openapi = enabled;
        self
    }

    /// A TLS cluster (`global.enable_tls: true`): a CA, per-instance certificates and a client
    /// certificate are made at start-up and written where TiUP keeps them (see [`crate::tls`]);
    /// every instance serves its API (and the masters their peer port) over HTTPS and wants a
    /// client certificate signed by that CA.
    pub fn tls(mut self, enabled: bool) -> Self {
        self.tls = enabled;
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
        let claim = match Claim::take(&root, &self.ssh_user) {
            Ok(claim) => claim,
            Err(err) => {
                // Nothing was started yet: the directory is all there is to undo.
                let _ = fs::remove_dir(&root);
                return Err(err);
            }
        };
        let hosts: Vec<String> =
            (1..=self.hosts).map(|n| format!("{}.{n}", claim.subnet())).collect();
        let instances = topology::place(&hosts, self.masters, self.workers, &root);
        let mut sandbox = Sandbox {
            tiup_home: root.join("tiup"),
            key: root.join("tiup/storage/dm/clusters").join(&self.cluster_name).join("ssh/id_rsa"),
            root,
            claim,
            cluster_name: self.cluster_name.clone(),
            ssh_user: self.ssh_user.clone(),
            version: self.version.clone(),
            tls: self.tls,
            hosts,
            instances,
            sshds: Mutex::new(Vec::new()),
            tear_down_on_drop: true,
        };
        sandbox.install(&self, &executables)?;
        if self.masters > 0 {
            BringUp::new(&sandbox, self.sources, self.tasks).run()?;
        }
        sandbox.save_state()?;
        Ok(sandbox)
    }
}

fn prepare_root(requested: Option<&Path>) -> Result<PathBuf> {
    let root = match requested {
        Some(dir) => {
            fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
            if fs::read_dir(dir)?.next().is_some() {
                bail!("{} is not empty; a sandbox needs a directory of its own", dir.display());
            }
            dir.canonicalize()?
        }
        None => tempfile::Builder::new().prefix("dm-sandbox-").tempdir()?.keep().canonicalize()?,
    };
    // A non-root SSH user must reach its authorized keys and deploy dirs in here.
    fs::set_permissions(&root, fs::Permissions::from_mode(0o755))?;
    Ok(root)
}

impl Sandbox {
    /// Installs binaries, keys and hosts, writes the store and deploy dirs.
    fn install(&mut self, spec: &SandboxBuilder, executables: &Executables) -> Result<()> {
        let bin = self.root.join("bin");
        let stand_in_dir = self.stand_in_dir();
        fs::create_dir_all(&stand_in_dir)?;
        let dm_sim = bin.join("dm-sim");
        fs::copy(&executables.dm_sim, &dm_sim).context("copying dm-sim")?;
        fs::copy(&executables.systemctl, stand_in_dir.join("systemctl"))
            .context("copying systemctl")?;
        if self.ssh_user != "root" {
            sudo::prepare_deploy_user(&self.ssh_user, &executables.systemctl)?;
        }

        let cluster_dir =
            self.key.parent().and_then(Path::parent).context("cluster dir")?.to_path_buf();
        fs::create_dir_all(cluster_dir.join("ssh"))?;
        // PKCS#1 PEM, the format TiUP itself writes its cluster keys in.
        host::keygen(
            &["-t", "rsa", "-b", "2048", "-m", "PEM", "-N", "", "-C", &self.cluster_name],
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
                enable_tls: self.tls,
                openapi: spec.openapi,
            },
            &self.instances,
        );
        fs::write(cluster_dir.join("meta.yaml"), meta)?;
        let ca = if self.tls { Some(self.make_certificates(&cluster_dir)?) } else { None };
        deploy_instances(
            &DeploySpec {
                instances: &self.instances,
                version: &self.version,
                service_user: &self.ssh_user,
                dm_sim: &dm_sim,
                sim_env: &spec.sim_env,
                tls: ca.as_ref(),
                openapi: spec.openapi,
            },
            &self.root.join("hosts"),
        )?;
        if self.ssh_user != "root" {
            self.give_hosts_to(&self.ssh_user)?;
        }
        Ok(())
    }

    /// The cluster's CA and client certificate, in the store's `tls/` (as TiUP keeps them) and
    /// in `<root>/tls/`, the sandbox's own copy for its helpers.
    fn make_certificates(&self, cluster_dir: &Path) -> Result<ClusterCa> {
        let ca = ClusterCa::new().context("making the cluster CA")?;
        let client =
            ca.client_identity(&self.cluster_name).context("making the client certificate")?;
        ca.write_store_files(&cluster_dir.join(TLS_DIR), &client)?;
        ca.write_store_files(&self.root.join(TLS_DIR), &client)?;
        Ok(ca)
    }

    /// Starts every host's sshd at once; those that did start are kept for teardown even when
    /// another fails, and recorded in `sandbox.json` at once, so that even a crash of this
    /// process leaves them to be found (see [`crate::machine::sweep`]).
    fn start_sshds(&self, configs: &[PathBuf]) -> Result<()> {
        let results: Vec<Result<Sshd>> = std::thread::scope(|scope| {
            let handles: Vec<_> = self
                .hosts
                .iter()
                .zip(configs)
                .map(|(ip, config)| scope.spawn(move || Sshd::start(ip, config)))
                .collect();
            handles.into_iter().map(|h| h.join().expect("sshd start thread")).collect()
        });
        let mut first_error = None;
        {
            let mut sshds = self.sshds.lock().unwrap();
            for result in results {
                match result {
                    Ok(sshd) => sshds.push(Some(sshd)),
                    Err(err) => {
                        sshds.push(None);
                        first_error.get_or_insert(err);
                    }
                }
            }
        }
        let saved = self.save_state();
        first_error.map_or(saved, Err)
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
            bail!("chown to {user} failed: {}", String::from_utf8_lossy(&output.stderr));
        }
        Ok(())
    }
}
