//! The cluster as TiUP describes it: the raw `meta.yaml` and the instances resolved from it with
//! TiUP's defaults.

pub mod layout;
mod marks;
pub mod meta;
mod monitors;
pub mod select;
pub mod store;
pub mod tls;
mod yaml_v3;

use std::fmt;
use std::path::{Path, PathBuf};

use serde::Serialize;

use self::layout::DeployLayout;
use self::meta::{Global, InstanceSpec, Meta};
pub use self::monitors::{Monitor, MonitorRole};
use self::tls::ClientTls;

/// The two DM components dm-patch patches.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
pub enum Role {
    #[serde(rename = "dm-master")]
    Master,
    #[serde(rename = "dm-worker")]
    Worker,
}

impl Role {
    pub const ALL: [Role; 2] = [Role::Master, Role::Worker];

    /// The component name, which is also the role name, the binary name and the unit prefix.
    pub fn component(self) -> &'static str {
        match self {
            Role::Master => "dm-master",
            Role::Worker => "dm-worker",
        }
    }

    pub fn from_component(name: &str) -> Option<Role> {
        Role::ALL.into_iter().find(|role| role.component() == name)
    }

    fn default_port(self) -> u16 {
        match self {
            Role::Master => 8261,
            Role::Worker => 8262,
        }
    }
}

impl fmt::Display for Role {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.component())
    }
}

/// CPU architecture of a host, as TiUP spells it in meta.yaml.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Arch {
    Amd64,
    Arm64,
}

impl Arch {
    /// TiUP accepts both Go's and the kernel's names.
    fn parse(name: &str) -> Option<Arch> {
        match name {
            "" | "amd64" | "x86_64" => Some(Arch::Amd64),
            "arm64" | "aarch64" => Some(Arch::Arm64),
            _ => None,
        }
    }

    /// The name `uname -m` and `tiup dm display` use.
    pub fn machine_name(self) -> &'static str {
        match self {
            Arch::Amd64 => "x86_64",
            Arch::Arm64 => "aarch64",
        }
    }
}

impl fmt::Display for Arch {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Arch::Amd64 => "amd64",
            Arch::Arm64 => "arm64",
        })
    }
}

/// Whether services are system units (managed through sudo) or the SSH user's own units.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum SystemdMode {
    System,
    User,
}

/// One DM instance with every TiUP default applied.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Instance {
    pub role: Role,
    /// Position in its list (`master_servers` or `worker_servers`) in meta.yaml.
    #[serde(skip)]
    pub index: usize,
    /// The member name DM registers: `name`, else `dm-<host>-<port>`.
    pub name: String,
    pub host: String,
    pub port: u16,
    /// dm-master's peer port; workers have none.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub peer_port: Option<u16>,
    /// Where SSH goes: `manage_host` when set, else `host`.
    pub ssh_host: String,
    pub ssh_port: u16,
    pub deploy_dir: String,
    pub data_dir: String,
    pub log_dir: String,
    pub os: String,
    pub arch: Arch,
    pub patched: bool,
}

impl Instance {
    /// TiUP's instance ID, `host:port`, used by `-N`.
    pub fn id(&self) -> String {
        format!("{}:{}", self.host, self.port)
    }

    /// The address of the instance's HTTP API.
    pub fn addr(&self) -> String {
        self.id()
    }

    /// TiUP's systemd unit, `<component>-<port>.service`.
    pub fn service(&self) -> String {
        format!("{}-{}.service", self.role.component(), self.port)
    }

    /// Where the running binary lives: `<deploy_dir>/bin/<comp>/<comp>`.
    pub fn binary_path(&self) -> String {
        self.layout().binary()
    }

    /// The paths of its deploy dir.
    pub fn layout(&self) -> DeployLayout {
        DeployLayout::new(&self.deploy_dir, self.role)
    }
}

/// A topology that names no usable instance.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TopologyError {
    #[error("{instance} has no host")]
    NoHost { instance: String },
    #[error("{instance} has arch '{arch}'; expected amd64 or arm64")]
    UnknownArch { instance: String, arch: String },
    #[error("instance {id} is listed twice; remove one of its entries")]
    Duplicate { id: String },
}

/// A loaded cluster: its name, its raw meta and the instances resolved from it.
#[derive(Debug, Clone)]
pub struct Cluster {
    pub name: String,
    pub dir: PathBuf,
    pub meta: Meta,
    pub instances: Vec<Instance>,
    /// The monitoring instances (prometheus, grafana, alertmanager): shown, never patched.
    pub monitors: Vec<Monitor>,
    /// The client identity for DM's API; set by [`store::Store::load`] when meta.yaml enables
    /// TLS.
    tls: Option<ClientTls>,
    /// The instances whose `patched` mark this process set: each must still be in meta.yaml
    /// when it is saved (see [`store::save`]).
    marked: Vec<(Role, usize)>,
}

impl Cluster {
    /// Resolves every instance of `meta` with TiUP's defaults.
    pub fn new(name: &str, dir: &Path, meta: Meta) -> Result<Cluster, TopologyError> {
        let mut instances = Vec::new();
        let topology = &meta.topology;
        let lists =
            [(Role::Master, &topology.master_servers), (Role::Worker, &topology.worker_servers)];
        for (role, list) in lists {
            for (index, spec) in list.iter().flatten().enumerate() {
                let instance = resolve(&meta, role, index, spec)?;
                if instances.iter().any(|i: &Instance| i.id() == instance.id()) {
                    return Err(TopologyError::Duplicate { id: instance.id() });
                }
                instances.push(instance);
            }
        }
        let monitors = monitors::monitors(&meta);
        Ok(Cluster {
            name: name.to_owned(),
            dir: dir.to_owned(),
            meta,
            instances,
            monitors,
            tls: None,
            marked: Vec::new(),
        })
    }

    /// The cluster's DM version, e.g. `v8.5.1` (TiUP's `dm_version`).
    pub fn version(&self) -> &str {
        self.meta.dm_version.as_deref().unwrap_or("")
    }

    /// The SSH user (meta's top-level `user`, else `global.user`, else TiUP's `tidb`).
    pub fn ssh_user(&self) -> &str {
        let global_user = self.meta.topology.global.as_ref().and_then(|g| g.user.as_deref());
        self.meta.user.as_deref().or(global_user).unwrap_or("tidb")
    }

    pub fn systemd_mode(&self) -> SystemdMode {
        let global = self.meta.topology.global.as_ref();
        match global.and_then(|g| g.systemd_mode.as_deref()) {
            Some("user") => SystemdMode::User,
            _ => SystemdMode::System,
        }
    }

    /// Whether meta.yaml sets `global.enable_tls`: DM then serves its API over mutual TLS.
    pub fn enables_tls(&self) -> bool {
        let global = self.meta.topology.global.as_ref();
        global.and_then(|g| g.enable_tls).unwrap_or(false)
    }

    /// The CA and client certificate DM's API is reached with: `Some` for a TLS cluster loaded
    /// by [`store::Store::load`] (which reads and checks the store's `tls/` files), `None` for
    /// a plain one.
    pub fn tls(&self) -> Option<&ClientTls> {
        self.tls.as_ref()
    }

    /// Reads the store's TLS files when meta.yaml enables TLS.
    pub(crate) fn load_tls(&mut self) -> Result<(), tls::TlsFileError> {
        self.tls = if self.enables_tls() { Some(ClientTls::load(&self.dir)?) } else { None };
        Ok(())
    }

    pub fn ssh_key(&self) -> PathBuf {
        self.dir.join("ssh").join("id_rsa")
    }

    pub fn known_hosts(&self) -> PathBuf {
        self.dir.join("ssh").join("known_hosts")
    }

    pub fn patch_dir(&self) -> PathBuf {
        self.dir.join("patch")
    }

    /// TiUP's scale-out lock (`<cluster dir>/.scale-out.yaml`), when a `scale-out --stage1`
    /// left it: the new instances are in it, not yet in meta.yaml, until `--stage2`.
    pub fn scale_out_lock(&self) -> Option<PathBuf> {
        let lock = self.dir.join(".scale-out.yaml");
        lock.symlink_metadata().is_ok().then_some(lock)
    }

    /// TiUP's cache of packages for this cluster (`<cluster dir>/cache/`).
    pub fn cache_dir(&self) -> PathBuf {
        self.dir.join("cache")
    }

    /// Whether this process set the `patched` mark of `instance`.
    pub fn marked(&self, instance: &Instance) -> bool {
        self.marked.contains(&(instance.role, instance.index))
    }

    /// The meta.yaml entry an instance was resolved from.
    pub fn spec_of(&self, instance: &Instance) -> Option<&InstanceSpec> {
        let topology = &self.meta.topology;
        let list = match instance.role {
            Role::Master => &topology.master_servers,
            Role::Worker => &topology.worker_servers,
        };
        list.as_ref().and_then(|list| list.get(instance.index))
    }

    /// Marks one instance `patched: true` in the raw meta, as TiUP does after a patch.
    pub fn mark_patched(&mut self, role: Role, index: usize) {
        self.set_patched(role, index, true);
    }

    /// Sets meta.yaml's `patched` of an instance (TiUP writes it only when true).
    pub fn set_patched(&mut self, role: Role, index: usize, patched: bool) {
        let topology = &mut self.meta.topology;
        let list = match role {
            Role::Master => &mut topology.master_servers,
            Role::Worker => &mut topology.worker_servers,
        };
        if let Some(spec) = list.as_mut().and_then(|list| list.get_mut(index)) {
            spec.patched = patched.then_some(true);
        }
        if let Some(instance) =
            self.instances.iter_mut().find(|i| i.role == role && i.index == index)
        {
            instance.patched = patched;
        }
        if !self.marked.contains(&(role, index)) {
            self.marked.push((role, index));
        }
    }
}

fn resolve(
    meta: &Meta,
    role: Role,
    index: usize,
    spec: &InstanceSpec,
) -> Result<Instance, TopologyError> {
    let global = meta.topology.global.clone().unwrap_or_default();
    let comp = role.component();
    let port = spec.port.unwrap_or(role.default_port());
    let what = format!("{comp} #{} ({}:{port})", index + 1, spec.host);
    if spec.host.is_empty() {
        return Err(TopologyError::NoHost { instance: what });
    }
    let dirs =
        Dirs::resolve(&global, comp, port, [&spec.deploy_dir, &spec.data_dir, &spec.log_dir]);
    let Dirs { deploy_dir, data_dir, log_dir } = dirs;

    let arch_name = non_empty(&spec.arch).or(non_empty(&global.arch)).unwrap_or("");
    let arch = Arch::parse(arch_name).ok_or_else(|| TopologyError::UnknownArch {
        instance: what.clone(),
        arch: arch_name.to_owned(),
    })?;
    let os = non_empty(&spec.os).or(non_empty(&global.os)).unwrap_or("linux");

    Ok(Instance {
        role,
        index,
        name: non_empty(&spec.name)
            .map(str::to_owned)
            .unwrap_or_else(|| format!("dm-{}-{port}", spec.host)),
        host: spec.host.clone(),
        port,
        peer_port: (role == Role::Master).then(|| spec.peer_port.unwrap_or(8291)),
        ssh_host: non_empty(&spec.manage_host).unwrap_or(&spec.host).to_owned(),
        ssh_port: spec.ssh_port.or(global.ssh_port).unwrap_or(22),
        data_dir,
        log_dir,
        deploy_dir,
        os: os.to_owned(),
        arch,
        patched: spec.patched.unwrap_or(false),
    })
}

/// An instance's directories, absolute, with TiUP's defaults.
pub(super) struct Dirs {
    pub(super) deploy_dir: String,
    pub(super) data_dir: String,
    pub(super) log_dir: String,
}

impl Dirs {
    /// `spec` holds the instance's own `deploy_dir`, `data_dir` and `log_dir`.
    pub(super) fn resolve(
        global: &Global,
        comp: &str,
        port: u16,
        spec: [&Option<String>; 3],
    ) -> Dirs {
        let [deploy, data, log] = spec;
        let home = format!("/home/{}", global.user.as_deref().unwrap_or("tidb"));
        let instance_dir = format!("{comp}-{port}");

        // TiUP: an empty instance deploy_dir is `<global.deploy_dir>/<comp>-<port>`, and a
        // relative deploy dir lives in the deploy user's home.
        let deploy_dir = match non_empty(deploy) {
            Some(dir) => dir.to_owned(),
            None => join(non_empty(&global.deploy_dir).unwrap_or("deploy"), &instance_dir),
        };
        let deploy_dir = absolute_under(&home, &deploy_dir);

        // An empty data_dir is `<global.data_dir>/<comp>-<port>` when global is absolute, else
        // the global (relative) value; relative data and log dirs live inside the deploy dir.
        let inherited =
            |own: &Option<String>, global: &Option<String>, default: &str| match non_empty(own) {
                Some(dir) => dir.to_owned(),
                None => match non_empty(global).unwrap_or(default) {
                    dir if dir.starts_with('/') => join(dir, &instance_dir),
                    dir => dir.to_owned(),
                },
            };
        let data_dir = inherited(data, &global.data_dir, "data");
        let log_dir = inherited(log, &global.log_dir, "log");
        Dirs {
            data_dir: absolute_under(&deploy_dir, &data_dir),
            log_dir: absolute_under(&deploy_dir, &log_dir),
            deploy_dir,
        }
    }
}

pub(super) fn non_empty(value: &Option<String>) -> Option<&str> {
    value.as_deref().filter(|v| !v.is_empty())
}

fn join(parent: &str, child: &str) -> String {
    format!("{}/{child}", parent.trim_end_matches('/'))
}

fn absolute_under(base: &str, path: &str) -> String {
    if path.starts_with('/') { path.to_owned() } else { join(base, path) }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cluster(yaml: &str) -> Cluster {
        let meta: Meta = yaml_serde::from_str(yaml).unwrap();
        Cluster::new("t", Path::new("/store/t"), meta).unwrap()
    }

    #[test]
    fn sparse_topology_gets_tiup_defaults() {
        let c = cluster(
            "user: tidb\ndm_version: v8.5.1\ntopology:\n  master_servers:\n  - host: 127.0.9.1\n  worker_servers:\n  - host: 127.0.9.2\n",
        );
        let master = &c.instances[0];
        assert_eq!(master.id(), "127.0.9.1:8261");
        assert_eq!(master.name, "dm-127.0.9.1-8261");
        assert_eq!(master.peer_port, Some(8291));
        assert_eq!(master.ssh_port, 22);
        assert_eq!(master.deploy_dir, "/home/tidb/deploy/dm-master-8261");
        assert_eq!(master.data_dir, "/home/tidb/deploy/dm-master-8261/data");
        assert_eq!(master.log_dir, "/home/tidb/deploy/dm-master-8261/log");
        assert_eq!(master.service(), "dm-master-8261.service");
        assert_eq!(
            master.binary_path(),
            "/home/tidb/deploy/dm-master-8261/bin/dm-master/dm-master"
        );
        let worker = &c.instances[1];
        assert_eq!(worker.id(), "127.0.9.2:8262");
        assert_eq!(worker.peer_port, None);
        assert_eq!(worker.arch, Arch::Amd64);
    }

    #[test]
    fn global_settings_and_manage_host_apply() {
        let c = cluster(
            "topology:\n  global:\n    user: dm\n    ssh_port: 2222\n    deploy_dir: dm/deploy\n    data_dir: /data/dm\n    log_dir: /logs\n    arch: aarch64\n  worker_servers:\n  - host: 127.0.9.3\n    manage_host: 127.0.9.30\n    port: 18262\n",
        );
        let worker = &c.instances[0];
        assert_eq!(worker.ssh_host, "127.0.9.30");
        assert_eq!(worker.ssh_port, 2222);
        assert_eq!(worker.deploy_dir, "/home/dm/dm/deploy/dm-worker-18262");
        assert_eq!(worker.data_dir, "/data/dm/dm-worker-18262");
        assert_eq!(worker.log_dir, "/logs/dm-worker-18262");
        assert_eq!(worker.arch, Arch::Arm64);
        assert_eq!(c.ssh_user(), "dm");
    }

    #[test]
    fn unknown_arch_is_refused() {
        let meta: Meta =
            yaml_serde::from_str("topology:\n  worker_servers:\n  - host: h\n    arch: mips\n")
                .unwrap();
        let err = Cluster::new("t", Path::new("/s"), meta).unwrap_err();
        assert!(err.to_string().contains("arch 'mips'"), "{err}");
    }

    #[test]
    fn monitoring_components_get_tiup_defaults() {
        let c = cluster(
            "topology:\n  global:\n    deploy_dir: dm/deploy\n    data_dir: /data\n    arch: aarch64\n  worker_servers:\n  - host: h\n  monitoring_servers:\n  - host: m\n  grafana_servers:\n  - host: g\n    manage_host: gm\n    port: 3001\n  alertmanager_servers:\n  - host: a\n    cluster_port: 19094\n    patched: true\n",
        );
        let [prometheus, grafana, alertmanager] = &c.monitors[..] else { panic!("{c:?}") };
        assert_eq!(prometheus.role, MonitorRole::Prometheus);
        assert_eq!(prometheus.id(), "m:9090");
        // No `monitored` section and no ng_port: the port alone.
        assert_eq!(prometheus.ports, [9090]);
        assert_eq!(prometheus.deploy_dir, "/home/tidb/dm/deploy/prometheus-9090");
        assert_eq!(prometheus.data_dir.as_deref(), Some("/data/prometheus-9090"));
        assert_eq!(prometheus.arch, "arm64");
        assert_eq!(grafana.id(), "g:3001");
        assert_eq!(grafana.status_addr(), "gm:3001");
        assert_eq!(grafana.data_dir, None);
        assert_eq!(grafana.deploy_dir, "/home/tidb/dm/deploy/grafana-3001");
        assert_eq!(alertmanager.id(), "a:9093");
        assert_eq!(alertmanager.ports, [9093, 19094]);
        assert_eq!(alertmanager.deploy_dir, "/home/tidb/dm/deploy/alertmanager-9093");
        assert!(alertmanager.patched);
        // Never patched by dm-patch: not among the instances.
        assert_eq!(c.instances.len(), 1);
    }

    #[test]
    fn prometheus_lists_the_exporter_ports_when_monitored() {
        let c = cluster(
            "topology:\n  monitored:\n    node_exporter_port: 19100\n  worker_servers:\n  - host: h\n  monitoring_servers:\n  - host: m\n    ng_port: 12020\n",
        );
        assert_eq!(c.monitors[0].ports, [9090, 9115, 19100, 12020]);
    }

    #[test]
    fn mark_patched_touches_one_entry() {
        let mut c = cluster(
            "topology:\n  worker_servers:\n  - host: a\n  - host: b\n    future_key: kept\n",
        );
        c.mark_patched(Role::Worker, 1);
        let workers = c.meta.topology.worker_servers.as_ref().unwrap();
        assert_eq!(workers[0].patched, None);
        assert_eq!(workers[1].patched, Some(true));
        assert!(c.instances[1].patched);
        assert_eq!(workers[1].extra.len(), 1);
    }
}
