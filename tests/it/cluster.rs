//! A sandbox cluster as the patch tests use it: the sandbox itself plus the few questions the
//! tests keep asking of it.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use assert_cmd::Command;
use dm_patch::dm::client::MembersResponse;
use dm_patch::topology::meta::Meta;
use dm_sandbox::{Sandbox, SandboxBuilder};
use sha2::{Digest, Sha256};

pub struct Cluster {
    pub sandbox: Arc<Sandbox>,
}

impl Cluster {
    pub fn start(builder: SandboxBuilder) -> Cluster {
        Cluster {
            sandbox: Arc::new(builder.start().expect("the sandbox comes up")),
        }
    }

    pub fn package(&self, component: &str, version: &str, faults: &[&str]) -> PathBuf {
        self.sandbox
            .package(component, version, faults)
            .expect("the sandbox builds packages")
    }

    /// IDs (`host:port`) of the instances of `component`, in meta.yaml order.
    pub fn ids(&self, component: &str) -> Vec<String> {
        self.sandbox
            .instances()
            .iter()
            .filter(|i| i.role == component)
            .map(|i| i.id.clone())
            .collect()
    }

    /// Every instance's current pid (`None` when its service is not running).
    pub fn pids(&self) -> BTreeMap<String, Option<u32>> {
        self.sandbox
            .instances()
            .iter()
            .map(|i| (i.id.clone(), self.sandbox.pid(&i.id)))
            .collect()
    }

    pub fn deploy_dir(&self, id: &str) -> PathBuf {
        let instance = self.instance(id);
        PathBuf::from(&instance.deploy_dir)
    }

    /// What the installed binary of `id` says of itself, asked over SSH as an operator would.
    pub fn installed_version(&self, id: &str) -> String {
        let instance = self.instance(id);
        let binary = format!("{0}/bin/{1}/{1}", instance.deploy_dir, instance.role);
        let output = self.sandbox.ssh(&instance.host, &format!("{binary} -V"));
        assert!(output.status.success(), "{output:?}");
        let block = String::from_utf8(output.stdout).unwrap();
        dm_patch::dm::version::VersionInfo::parse(&block).release
    }

    /// The members answer of the first master that gives one (empty when none does).
    pub fn members(&self) -> MembersResponse {
        let json = self
            .sandbox
            .members_json()
            .unwrap_or_else(|| serde_json::json!({"result": false}));
        serde_json::from_value(json).expect("the members answer has DM's shape")
    }

    /// The ID of the dm-master that leads now.
    pub fn leader_id(&self) -> String {
        let members = self.members();
        let leader = members.leader().expect("the cluster has a leader");
        leader.addr.clone()
    }

    pub fn cluster_dir(&self) -> PathBuf {
        self.sandbox
            .tiup_home()
            .join("storage/dm/clusters")
            .join(self.sandbox.cluster_name())
    }

    pub fn sha7(&self, package: &Path) -> String {
        let digest = Sha256::digest(std::fs::read(package).unwrap());
        digest
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect::<String>()[..7]
            .to_owned()
    }

    /// `patch <cluster> <package> rest...`: the cluster and package go where they belong.
    pub fn args<'a>(&self, args: impl IntoIterator<Item = &'a str>, package: &Path) -> Vec<String> {
        let mut args = args.into_iter().map(str::to_owned);
        let command = args.next().expect("a subcommand");
        let mut all = vec![command, self.sandbox.cluster_name().to_owned()];
        all.push(package.display().to_string());
        all.extend(args);
        all
    }

    pub fn dm_patch<'a>(&self, args: impl IntoIterator<Item = &'a str>, package: &Path) -> Command {
        let mut cmd = Command::cargo_bin("dm-patch").unwrap();
        cmd.env("TIUP_HOME", self.sandbox.tiup_home())
            .env("NO_COLOR", "1")
            .args(self.args(args, package));
        cmd
    }

    fn instance(&self, id: &str) -> dm_sandbox::Instance {
        self.sandbox
            .instances()
            .into_iter()
            .find(|i| i.id == id)
            .unwrap_or_else(|| panic!("no instance {id}"))
    }
}

/// IDs of the instances meta.yaml marks `patched: true`.
pub fn patched_ids(cluster: &Cluster) -> BTreeSet<String> {
    let text = std::fs::read_to_string(cluster.cluster_dir().join("meta.yaml")).unwrap();
    let meta: Meta = yaml_serde::from_str(&text).unwrap();
    let topology = meta.topology;
    let lists = [
        (topology.master_servers, 8261),
        (topology.worker_servers, 8262),
    ];
    lists
        .into_iter()
        .flat_map(|(list, default_port)| {
            list.unwrap_or_default()
                .into_iter()
                .filter(|spec| spec.patched == Some(true))
                .map(move |spec| format!("{}:{}", spec.host, spec.port.unwrap_or(default_port)))
        })
        .collect()
}
