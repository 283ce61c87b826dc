//! Where the cluster's instances go, and the `meta.yaml` that `tiup dm deploy` writes for them.

use std::fmt::Write as _;
use std::path::Path;

use serde::{Deserialize, Serialize};

pub const DM_MASTER: &str = "dm-master";
pub const DM_WORKER: &str = "dm-worker";
pub const MASTER_PORT: u16 = 8261;
pub const MASTER_PEER_PORT: u16 = 8291;
pub const WORKER_PORT: u16 = 8262;

/// One deployed DM instance.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Instance {
    /// `host:port`, TiUP's instance ID.
    pub id: String,
    /// `dm-master` or `dm-worker`.
    pub role: String,
    pub host: String,
    pub port: u16,
    /// dm-master's etcd peer port.
    pub peer_port: Option<u16>,
    /// The member name DM registers it under: TiUP's default `dm-<host>-<port>`.
    pub name: String,
    pub deploy_dir: String,
    pub data_dir: String,
    pub log_dir: String,
    /// `<role>-<port>.service`.
    pub unit: String,
}

impl Instance {
    fn new(role: &str, host: &str, port: u16, peer_port: Option<u16>, root: &Path) -> Instance {
        let host_dir = root.join("hosts").join(host);
        let dir_name = format!("{role}-{port}");
        let deploy_dir = host_dir.join("deploy").join(&dir_name).display().to_string();
        Instance {
            id: format!("{host}:{port}"),
            role: role.to_owned(),
            host: host.to_owned(),
            port,
            peer_port,
            name: format!("dm-{host}-{port}"),
            data_dir: host_dir.join("data").join(&dir_name).display().to_string(),
            log_dir: format!("{deploy_dir}/log"),
            deploy_dir,
            unit: format!("{dir_name}.service"),
        }
    }

    pub fn is_master(&self) -> bool {
        self.role == DM_MASTER
    }

    /// `http://<host>:<port>` of its HTTP API on a plain cluster (see [`Instance::url_for`]).
    pub fn url(&self) -> String {
        self.url_for(false)
    }

    /// `http://` or, on a TLS cluster, `https://<host>:<port>` of its HTTP API.
    pub fn url_for(&self, tls: bool) -> String {
        let scheme = if tls { "https" } else { "http" };
        format!("{scheme}://{}:{}", self.host, self.port)
    }
}

/// Masters on the first hosts, one each; workers on the hosts after them, wrapping around.
/// Every host has its own address, so a master and a worker may share a host on their
/// default ports; two of a kind may not, hence at most one master and one worker per host.
pub fn place(hosts: &[String], masters: usize, workers: usize, root: &Path) -> Vec<Instance> {
    assert!(masters <= hosts.len() && workers <= hosts.len());
    let master_list = (0..masters).map(|index| {
        Instance::new(DM_MASTER, &hosts[index], MASTER_PORT, Some(MASTER_PEER_PORT), root)
    });
    let worker_list = (0..workers).map(|index| {
        let host = &hosts[(masters + index) % hosts.len()];
        Instance::new(DM_WORKER, host, WORKER_PORT, None, root)
    });
    master_list.chain(worker_list).collect()
}

/// `amd64` or `arm64`, as TiUP names this machine's architecture.
pub fn tiup_arch() -> &'static str {
    match std::env::consts::ARCH {
        "aarch64" => "arm64",
        _ => "amd64",
    }
}

/// What meta.yaml records beyond the instances.
pub struct MetaSpec<'a> {
    pub ssh_user: &'a str,
    pub version: &'a str,
    pub ssh_port: u16,
    /// `global.enable_tls`.
    pub enable_tls: bool,
    /// `server_configs: master: openapi: true`.
    pub openapi: bool,
}

/// meta.yaml as current TiUP writes it after a deploy: yaml.v3 with 4-space indents, list
/// items indented under their key, defaults filled in, empty fields left out.
pub fn render_meta(spec: &MetaSpec, instances: &[Instance]) -> String {
    let arch = tiup_arch();
    let mut yaml = format!(
        "user: {user}
dm_version: {version}
topology:
    global:
        user: {user}
        ssh_port: {ssh_port}
        ssh_type: builtin
{tls}        deploy_dir: deploy
        data_dir: data
        os: linux
        arch: {arch}
        systemd_mode: system
    server_configs:
        master:
            log-level: info
{openapi}        worker:
            log-level: info
        grafana: {{}}
",
        user = spec.ssh_user,
        version = spec.version,
        ssh_port = spec.ssh_port,
        tls = if spec.enable_tls { "        enable_tls: true\n" } else { "" },
        openapi = if spec.openapi { "            openapi: true\n" } else { "" },
    );
    for (key, role) in [("master_servers", DM_MASTER), ("worker_servers", DM_WORKER)] {
        let of_role: Vec<&Instance> = instances.iter().filter(|i| i.role == role).collect();
        if of_role.is_empty() {
            let _ = writeln!(yaml, "    {key}: []");
            continue;
        }
        let _ = writeln!(yaml, "    {key}:");
        for instance in of_role {
            let _ = writeln!(yaml, "        - host: {}", instance.host);
            let _ = writeln!(yaml, "          ssh_port: {}", spec.ssh_port);
            let _ = writeln!(yaml, "          port: {}", instance.port);
            if let Some(peer_port) = instance.peer_port {
                let _ = writeln!(yaml, "          peer_port: {peer_port}");
            }
            let _ = writeln!(yaml, "          deploy_dir: {}", instance.deploy_dir);
            let _ = writeln!(yaml, "          data_dir: {}", instance.data_dir);
            let _ = writeln!(yaml, "          log_dir: {}", instance.log_dir);
            let _ = writeln!(yaml, "          arch: {arch}");
            let _ = writeln!(yaml, "          os: linux");
        }
    }
    yaml.push_str("    monitoring_servers: []\n");
    yaml
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hosts(n: usize) -> Vec<String> {
        (1..=n).map(|i| format!("127.100.0.{i}")).collect()
    }

    #[test]
    fn workers_follow_the_masters_and_wrap_around() {
        let placed = place(&hosts(5), 3, 3, Path::new("/r"));
        let ids: Vec<&str> = placed.iter().map(|i| i.id.as_str()).collect();
        assert_eq!(
            ids,
            [
                "127.100.0.1:8261",
                "127.100.0.2:8261",
                "127.100.0.3:8261",
                "127.100.0.4:8262",
                "127.100.0.5:8262",
                "127.100.0.1:8262"
            ]
        );
        assert_eq!(placed[3].deploy_dir, "/r/hosts/127.100.0.4/deploy/dm-worker-8262");
        assert_eq!(placed[3].unit, "dm-worker-8262.service");
        assert_eq!(placed[0].name, "dm-127.100.0.1-8261");
    }

    #[test]
    fn meta_yaml_has_tiups_shape() {
        let placed = place(&hosts(2), 1, 1, Path::new("/r"));
        let spec = MetaSpec {
            ssh_user: "tidb",
            version: "v8.5.1",
            ssh_port: 2222,
            enable_tls: false,
            openapi: false,
        };
        let yaml = render_meta(&spec, &placed);
        let parsed: yaml_serde::Value = yaml_serde::from_str(&yaml).unwrap();
        let topology = &parsed["topology"];
        assert_eq!(parsed["user"].as_str(), Some("tidb"));
        assert_eq!(topology["global"]["ssh_port"].as_u64(), Some(2222));
        assert_eq!(topology["master_servers"][0]["peer_port"].as_u64(), Some(8291));
        assert_eq!(topology["worker_servers"][0]["host"].as_str(), Some("127.100.0.2"));
        assert!(yaml.contains(
            "\n    master_servers:\n        - host: 127.100.0.1\n          ssh_port: 2222\n"
        ));
        let empty = render_meta(&spec, &[]);
        assert!(empty.contains("    master_servers: []\n    worker_servers: []\n"));
        assert!(!yaml.contains("enable_tls"));
        let tls = render_meta(&MetaSpec { enable_tls: true, ..spec }, &placed);
        let parsed: yaml_serde::Value = yaml_serde::from_str(&tls).unwrap();
        assert_eq!(parsed["topology"]["global"]["enable_tls"].as_bool(), Some(true));
    }
}
