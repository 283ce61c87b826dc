//! A sandbox cluster as the patch tests use it: the sandbox itself, `patch` run as a script
//! would run it, and the few questions the tests keep asking of the cluster.

use std::collections::{BTreeMap, BTreeSet};
use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::sync::Arc;

use dm_patch::dm::client::MembersResponse;
use dm_patch::topology::meta::Meta;
use dm_sandbox::{Fault, Sandbox, SandboxBuilder};
use sha2::{Digest, Sha256};

use crate::support::{Entry, Run, dm_patch, write_package};

pub struct Cluster {
    pub sandbox: Arc<Sandbox>,
}

impl Cluster {
    pub fn start(builder: SandboxBuilder) -> Cluster {
        Cluster { sandbox: Arc::new(builder.start().expect("the sandbox comes up")) }
    }

    /// A package of `component` whose binary runs the simulator as `version` with `faults`.
    pub fn package(&self, component: &str, version: &str, faults: &[Fault]) -> String {
        let path = self.sandbox.package(component, version, faults);
        path.expect("the sandbox builds packages").display().to_string()
    }

    /// [`Cluster::package`] with `extra` entries beside the binary, as an operator adds config
    /// files to a hotfix package.
    pub fn package_with(
        &self,
        component: &str,
        version: &str,
        faults: &[Fault],
        extra: &[Entry],
    ) -> String {
        let plain = self.package(component, version, faults);
        let mut archive =
            tar::Archive::new(flate2::read::GzDecoder::new(std::fs::File::open(&plain).unwrap()));
        let mut entry = archive.entries().unwrap().next().unwrap().unwrap();
        let mut binary = Vec::new();
        std::io::Read::read_to_end(&mut entry, &mut binary).unwrap();
        let path =
            format!("{}-with-{}-more.tar.gz", plain.trim_end_matches(".tar.gz"), extra.len());
        let entries = [&[Entry::file(&format!("{component}/{component}"), 0o755, &binary)], extra];
        write_package(std::path::Path::new(&path), &entries.concat());
        path
    }

    /// `dm-patch` with the sandbox's TiUP home.
    pub fn dm_patch(&self) -> Command {
        dm_patch(self.sandbox.tiup_home())
    }

    /// `dm-patch patch <cluster> <package> <args> --yes --format json`, as a script runs it.
    pub fn patch(&self, package: &str, args: &[&str]) -> Run {
        Run::of(self.dm_patch().args(self.patch_args(package, args)))
    }

    /// Like [`Cluster::patch`], with SIGINT sent as soon as a line of stderr contains `when`.
    pub fn patch_interrupted(&self, package: &str, args: &[&str], when: &str) -> Run {
        self.patch_signalled(package, args, when, "INT")
    }

    /// Like [`Cluster::patch`], with `signal` (`INT`, `KILL`...) sent as soon as a line of
    /// stderr contains `when`.
    pub fn patch_signalled(&self, package: &str, args: &[&str], when: &str, signal: &str) -> Run {
        self.patch_when(package, args, when, |pid| {
            let signal = format!("-{signal}");
            let kill = Command::new("kill").args([&signal, &pid.to_string()]).status();
            assert!(kill.unwrap().success());
        })
    }

    /// Like [`Cluster::patch`], doing `action` (given dm-patch's pid) as soon as a line of
    /// stderr contains `when`.
    pub fn patch_when(
        &self,
        package: &str,
        args: &[&str],
        when: &str,
        action: impl FnOnce(u32),
    ) -> Run {
        let mut action = Some(action);
        self.patch_watching(package, args, |line, pid| {
            if line.contains(when)
                && let Some(action) = action.take()
            {
                action(pid);
            }
        })
    }

    /// Like [`Cluster::patch`], calling `watch` with each line of stderr as it comes (and
    /// dm-patch's pid).
    pub fn patch_watching(
        &self,
        package: &str,
        args: &[&str],
        watch: impl FnMut(&str, u32),
    ) -> Run {
        self.run_watching(&self.patch_args(package, args), watch)
    }

    /// `dm-patch <args>`, calling `watch` with each line of stderr as it comes (and
    /// dm-patch's pid).
    pub fn run_watching(&self, args: &[&str], mut watch: impl FnMut(&str, u32)) -> Run {
        let mut child = self
            .dm_patch()
            .args(args)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let mut stderr = String::new();
        let lines = BufReader::new(child.stderr.take().unwrap()).lines();
        for line in lines.map_while(Result::ok) {
            watch(&line, child.id());
            stderr.push_str(&line);
            stderr.push('\n');
        }
        let output = child.wait_with_output().unwrap();
        let stdout = String::from_utf8(output.stdout).unwrap();
        Run { code: output.status.code(), stdout, stderr }
    }

    fn patch_args<'a>(&'a self, package: &'a str, args: &[&'a str]) -> Vec<&'a str> {
        let mut all = vec!["patch", self.sandbox.cluster_name(), package];
        all.extend(args);
        all.extend(["--yes", "--format", "json"]);
        all
    }

    /// IDs (`host:port`) of the instances of `component`, in meta.yaml order.
    pub fn ids(&self, component: &str) -> Vec<String> {
        let instances = self.sandbox.instances();
        instances.into_iter().filter(|i| i.role == component).map(|i| i.id).collect()
    }

    /// Every instance's current pid (`None` when its service is not running).
    pub fn pids(&self) -> BTreeMap<String, Option<u32>> {
        self.sandbox.instances().iter().map(|i| (i.id.clone(), self.sandbox.pid(&i.id))).collect()
    }

    /// Asserts that none of `ids` was restarted since `pids` was taken.
    #[track_caller]
    pub fn assert_untouched<'a>(
        &self,
        pids: &BTreeMap<String, Option<u32>>,
        ids: impl IntoIterator<Item = &'a String>,
    ) {
        for id in ids {
            assert_eq!(self.sandbox.pid(id), pids[id], "{id} was touched");
        }
    }

    /// What the running instance `id` reports on `/status` (`None` when it does not answer).
    pub fn version(&self, id: &str) -> Option<String> {
        self.sandbox.status_version(id)
    }

    pub fn deploy_dir(&self, id: &str) -> PathBuf {
        PathBuf::from(&self.instance(id).deploy_dir)
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
        let json =
            self.sandbox.members_json().unwrap_or_else(|| serde_json::json!({"result": false}));
        serde_json::from_value(json).expect("the members answer has DM's shape")
    }

    /// The ID of the dm-master that leads now.
    pub fn leader_id(&self) -> String {
        self.members().leader().expect("the cluster has a leader").addr.clone()
    }

    pub fn cluster_dir(&self) -> PathBuf {
        self.sandbox.tiup_home().join("storage/dm/clusters").join(self.sandbox.cluster_name())
    }

    /// IDs of the instances meta.yaml marks `patched: true`.
    pub fn patched_ids(&self) -> BTreeSet<String> {
        let text = std::fs::read_to_string(self.cluster_dir().join("meta.yaml")).unwrap();
        let topology = yaml_serde::from_str::<Meta>(&text).unwrap().topology;
        let lists = [(topology.master_servers, 8261), (topology.worker_servers, 8262)];
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

    fn instance(&self, id: &str) -> dm_sandbox::Instance {
        let instances = self.sandbox.instances();
        instances.into_iter().find(|i| i.id == id).unwrap_or_else(|| panic!("no instance {id}"))
    }
}

/// The first 7 hex digits of a file's sha256, as dm-patch names what it stages.
pub fn sha7(path: &str) -> String {
    let digest = Sha256::digest(std::fs::read(path).unwrap());
    digest.iter().map(|b| format!("{b:02x}")).collect::<String>()[..7].to_owned()
}

/// The first 7 hex digits of a file's sha1, as TiUP (and so dm-patch) names a package kept
/// with `--overwrite`.
pub fn sha1_7(path: &str) -> String {
    let digest = sha1::Sha1::digest(std::fs::read(path).unwrap());
    digest.iter().map(|b| format!("{b:02x}")).collect::<String>()[..7].to_owned()
}

/// A set of IDs, for comparing with [`Cluster::patched_ids`].
pub fn id_set<'a>(ids: impl IntoIterator<Item = &'a String>) -> BTreeSet<String> {
    ids.into_iter().cloned().collect()
}
