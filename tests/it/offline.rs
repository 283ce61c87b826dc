//! `--offline` end to end through real sshd: upload, verify, unpack, back up, swap, mark.
//!
//! The hosts are a hosts-only sandbox; the "deployed" binaries are small scripts that print a
//! DM version block, which is all an offline patch asks of them.

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::PathBuf;

use dm_patch::topology::meta::{InstanceSpec, Meta};
use dm_sandbox::Sandbox;
use serde_json::Value;

use crate::support::{Entry, Run, Store, dm_patch};

fn version_script(version: &str) -> String {
    let hash = format!("{:0>40}", version.replace(['v', '.'], ""));
    format!(
        "#!/bin/sh\nprintf 'Release Version: {version}\\nGit Commit Hash: {hash}\\nGit Branch: HEAD\\n'\n"
    )
}

/// Lays out a TiUP-like deploy dir for a dm-worker on `host` and returns its path.
fn deploy_worker(sandbox: &Sandbox, host: &str) -> PathBuf {
    let deploy = sandbox.host_dir(host).join("deploy/dm-worker-8262");
    let binary = deploy.join("bin/dm-worker/dm-worker");
    fs::create_dir_all(binary.parent().unwrap()).unwrap();
    fs::write(&binary, version_script("v8.5.1")).unwrap();
    fs::set_permissions(&binary, fs::Permissions::from_mode(0o755)).unwrap();
    deploy
}

fn add_workers(sandbox: &Sandbox, deploys: &[(String, PathBuf)]) {
    let path = sandbox
        .tiup_home()
        .join("storage/dm/clusters")
        .join(sandbox.cluster_name())
        .join("meta.yaml");
    let mut meta: Meta = yaml_serde::from_str(&fs::read_to_string(&path).unwrap()).unwrap();
    meta.topology.worker_servers = Some(
        deploys
            .iter()
            .map(|(host, deploy)| InstanceSpec {
                host: host.clone(),
                port: Some(8262),
                deploy_dir: Some(deploy.display().to_string()),
                ..InstanceSpec::default()
            })
            .collect(),
    );
    fs::write(&path, yaml_serde::to_string(&meta).unwrap()).unwrap();
}

fn patched_flags(sandbox: &Sandbox) -> Vec<bool> {
    let meta: Meta = yaml_serde::from_str(&sandbox.meta_yaml()).unwrap();
    meta.topology.worker_servers.unwrap().iter().map(|w| w.patched == Some(true)).collect()
}

/// `dm-patch patch <cluster> <package> -R dm-worker --offline --yes --format json`, expecting
/// exit code `code`; returns the JSON report.
#[track_caller]
fn patch_offline(sandbox: &Sandbox, package: &str, code: i32) -> Value {
    let args = ["patch", sandbox.cluster_name(), package, "-R", "dm-worker", "--offline"];
    let run = Run::of(dm_patch(sandbox.tiup_home()).args(args).args(["--yes", "--format", "json"]));
    run.code(code).json()
}

/// The files a patch stages next to `bin` in `deploy`, if any are left.
fn staged_leftovers(deploy: &std::path::Path) -> Vec<String> {
    fs::read_dir(deploy)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|name| name.starts_with("bin.patch-") || name.starts_with("dm-patch-"))
        .collect()
}

/// A hosts-only sandbox whose meta.yaml lists one dm-worker per host, deployed in the dir
/// `deploy_dir` lays out (or not) for that host.
fn sandbox_with_workers(deploy_dir: impl Fn(&Sandbox, &str) -> PathBuf) -> (Sandbox, Vec<PathBuf>) {
    let sandbox = Sandbox::builder()
        .hosts(2)
        .masters(0)
        .workers(0)
        .start()
        .expect("the sandbox hosts come up");
    let deploys: Vec<(String, PathBuf)> = sandbox
        .hosts()
        .into_iter()
        .map(|host| {
            let deploy = deploy_dir(&sandbox, &host);
            (host, deploy)
        })
        .collect();
    add_workers(&sandbox, &deploys);
    let dirs = deploys.into_iter().map(|(_, dir)| dir).collect();
    (sandbox, dirs)
}

#[test]
fn offline_patch_swaps_binaries_over_ssh() {
    let (sandbox, deploys) = sandbox_with_workers(deploy_worker);

    let packages = Store::new();
    let hotfix = version_script("v8.5.2");
    let package = packages.package(
        "dm-worker-hotfix.tar.gz",
        &[Entry::file("dm-worker/dm-worker", 0o755, hotfix.as_bytes())],
    );

    let report = patch_offline(&sandbox, &package, 0);
    assert_eq!(report["result"], "success");
    assert_eq!(report["package"]["version"]["release"], "v8.5.2");
    for instance in report["instances"].as_array().unwrap() {
        assert_eq!(instance["outcome"], "patched", "{instance}");
        assert_eq!(instance["old_version"]["release"], "v8.5.1");
        assert_eq!(instance["new_version"]["release"], "v8.5.2");
    }
    for deploy in &deploys {
        let installed = fs::read_to_string(deploy.join("bin/dm-worker/dm-worker")).unwrap();
        assert_eq!(installed, hotfix, "the new binary is in place");
        let mode = fs::metadata(deploy.join("bin/dm-worker/dm-worker")).unwrap().permissions();
        assert_eq!(mode.mode() & 0o777, 0o755);
        let backup = deploy.join(format!("bin.old.{}/dm-worker/dm-worker", sandbox.version()));
        assert_eq!(
            fs::read_to_string(&backup).unwrap(),
            version_script("v8.5.1"),
            "TiUP's backup holds the old binary"
        );
        assert_eq!(staged_leftovers(deploy), Vec::<String>::new());
    }
    assert_eq!(patched_flags(&sandbox), [true, true]);

    // Again: both already run the package, and are skipped.
    let report = patch_offline(&sandbox, &package, 0);
    let instances = report["instances"].as_array().unwrap();
    assert!(instances.iter().all(|i| i["outcome"] == "skipped"), "{report}");
}

#[test]
fn preflight_reports_every_missing_deploy_dir() {
    let (sandbox, _) =
        sandbox_with_workers(|sandbox, host| sandbox.host_dir(host).join("deploy/not-there"));
    let before = sandbox.meta_yaml();
    let packages = Store::new();
    let package = packages.good_package("dm-worker");

    let report = patch_offline(&sandbox, &package, 1);
    assert_eq!(report["result"], "preflight-failed");
    let problems = report["problems"].as_array().unwrap();
    assert_eq!(problems.len(), 2, "{problems:?}");
    assert!(problems.iter().all(|p| p.as_str().unwrap().contains("does not exist")));
    assert_eq!(sandbox.meta_yaml(), before);
}
