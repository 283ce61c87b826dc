//! `--offline` end to end through real sshd: upload, verify, unpack, back up, swap, mark.
//!
//! The hosts are a hosts-only sandbox; the "deployed" binaries are small scripts that print a
//! DM version block, which is all an offline patch asks of them.

use std::fs;
use std::os::unix::fs::PermissionsExt;

use dm_patch::topology::meta::Meta;
use dm_sandbox::Sandbox;

use crate::hosts::{deploy_worker, hosts_with_workers, patch_offline, version_script};
use crate::support::{Entry, Store};

fn patched_flags(sandbox: &Sandbox) -> Vec<bool> {
    let meta: Meta = yaml_serde::from_str(&sandbox.meta_yaml()).unwrap();
    meta.topology.worker_servers.unwrap().iter().map(|w| w.patched == Some(true)).collect()
}

/// The files a patch stages next to `bin` in `deploy`, if any are left.
fn staged_leftovers(deploy: &std::path::Path) -> Vec<String> {
    fs::read_dir(deploy)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|name| name.starts_with("bin.patch-") || name.starts_with("dm-patch-"))
        .collect()
}

#[test]
fn offline_patch_swaps_binaries_over_ssh() {
    let (sandbox, deploys) = hosts_with_workers(2, deploy_worker);

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
        hosts_with_workers(2, |sandbox, host| sandbox.host_dir(host).join("deploy/not-there"));
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
