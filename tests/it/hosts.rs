//! Hosts-only sandboxes (real sshd, no DM processes) whose meta.yaml lists dm-workers deployed
//! as TiUP lays them out, with binaries that are small scripts printing a DM version block:
//! all that an `--offline` patch asks of an instance.

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use dm_patch::topology::meta::{InstanceSpec, Meta};
use dm_sandbox::Sandbox;
use serde_json::Value;

use crate::support::{Entry, Run, Store, dm_patch};

/// A script that prints the version block of `version`, as `dm-worker -V` does.
pub fn version_script(version: &str) -> String {
    let hash = format!("{:0>40}", version.replace(['v', '.'], ""));
    format!(
        "#!/bin/sh\nprintf 'Release Version: {version}\\nGit Commit Hash: {hash}\\nGit Branch: HEAD\\n'\n"
    )
}

/// A dm-worker package whose binary is [`version_script`] of `version`.
pub fn worker_hotfix(packages: &Store, version: &str) -> String {
    let binary = version_script(version);
    packages.package(
        "dm-worker-hotfix.tar.gz",
        &[Entry::file("dm-worker/dm-worker", 0o755, binary.as_bytes())],
    )
}

/// Lays out a TiUP-like deploy dir for a dm-worker on `host`, running v8.5.1; returns its path.
pub fn deploy_worker(sandbox: &Sandbox, host: &str) -> PathBuf {
    deploy_worker_on_port(sandbox, host, 8262)
}

/// [`deploy_worker`] for a dm-worker on `port`.
pub fn deploy_worker_on_port(sandbox: &Sandbox, host: &str, port: u16) -> PathBuf {
    let deploy = sandbox.host_dir(host).join(format!("deploy/dm-worker-{port}"));
    let binary = deploy.join("bin/dm-worker/dm-worker");
    fs::create_dir_all(binary.parent().unwrap()).unwrap();
    fs::write(&binary, version_script("v8.5.1")).unwrap();
    fs::set_permissions(&binary, fs::Permissions::from_mode(0o755)).unwrap();
    deploy
}

/// A hosts-only sandbox of `hosts` hosts whose meta.yaml lists one dm-worker per host, deployed
/// in the dir `deploy_dir` lays out (or not) for that host. Returns the deploy dirs too.
pub fn hosts_with_workers(
    hosts: usize,
    deploy_dir: impl Fn(&Sandbox, &str) -> PathBuf,
) -> (Sandbox, Vec<PathBuf>) {
    workers_on(Sandbox::builder().hosts(hosts).masters(0).workers(0), deploy_dir)
}

/// [`hosts_with_workers`] on the hosts `builder` makes (no instances of its own).
pub fn workers_on(
    builder: dm_sandbox::SandboxBuilder,
    deploy_dir: impl Fn(&Sandbox, &str) -> PathBuf,
) -> (Sandbox, Vec<PathBuf>) {
    let sandbox = builder.start().expect("the sandbox hosts come up");
    let deploys: Vec<(String, PathBuf)> = sandbox
        .hosts()
        .into_iter()
        .map(|host| {
            let deploy = deploy_dir(&sandbox, &host);
            (host, deploy)
        })
        .collect();
    let workers: Vec<(&str, u16, &Path)> =
        deploys.iter().map(|(host, deploy)| (host.as_str(), 8262, deploy.as_path())).collect();
    list_workers(&sandbox, &workers);
    (sandbox, deploys.into_iter().map(|(_, dir)| dir).collect())
}

/// Makes meta.yaml list exactly these dm-workers: `(host, port, deploy dir)`.
pub fn list_workers(sandbox: &Sandbox, workers: &[(&str, u16, &Path)]) {
    let specs = workers.iter().map(|(host, port, deploy)| InstanceSpec {
        host: (*host).to_owned(),
        port: Some(*port),
        deploy_dir: Some(deploy.display().to_string()),
        ..InstanceSpec::default()
    });
    let path = sandbox
        .tiup_home()
        .join("storage/dm/clusters")
        .join(sandbox.cluster_name())
        .join("meta.yaml");
    let mut meta: Meta = yaml_serde::from_str(&fs::read_to_string(&path).unwrap()).unwrap();
    meta.topology.worker_servers = Some(specs.collect());
    fs::write(&path, yaml_serde::to_string(&meta).unwrap()).unwrap();
}

/// `dm-patch patch <cluster> <package> -R dm-worker --offline --yes --format json`.
pub fn run_offline(sandbox: &Sandbox, package: &str) -> Run {
    run_offline_with(sandbox, package, &[])
}

/// [`run_offline`] with `extra` arguments.
pub fn run_offline_with(sandbox: &Sandbox, package: &str, extra: &[&str]) -> Run {
    let args = ["patch", sandbox.cluster_name(), package, "-R", "dm-worker", "--offline"];
    let mut command = dm_patch(sandbox.tiup_home());
    Run::of(command.args(args).args(extra).args(["--yes", "--format", "json"]))
}

/// [`run_offline`], expecting exit code `code`; returns the JSON report.
#[track_caller]
pub fn patch_offline(sandbox: &Sandbox, package: &str, code: i32) -> Value {
    run_offline(sandbox, package).code(code).json()
}
