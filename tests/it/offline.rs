//! `--offline` end to end through real sshd: upload, verify, unpack, back up, swap, mark.
//!
//! The hosts are a hosts-only sandbox; the "deployed" binaries are small scripts that print a
//! DM version block, which is all an offline patch asks of them.

use std::fs;
use std::os::unix::fs::PermissionsExt;

use dm_patch::topology::meta::Meta;
use dm_sandbox::Sandbox;

use crate::hosts::{
    deploy_worker, hosts_with_workers, patch_offline, run_offline_with, version_script,
    worker_hotfix,
};
use crate::support::{Entry, Run, Store, dm_patch};

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
    let package = worker_hotfix(&packages, "v8.5.2");
    let hotfix = version_script("v8.5.2");

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

    // Again: both already run the package, and are skipped; nothing is uploaded.
    let report = patch_offline(&sandbox, &package, 0);
    let instances = report["instances"].as_array().unwrap();
    assert!(instances.iter().all(|i| i["outcome"] == "skipped"), "{report}");
    assert_eq!(phase_names(&report)[2], "Uploading the package to 0 host(s)");
}

fn phase_names(report: &serde_json::Value) -> Vec<&str> {
    report["phases"].as_array().unwrap().iter().map(|p| p["name"].as_str().unwrap()).collect()
}

/// A re-run after a partial one uploads only to the hosts still to do.
#[test]
fn a_rerun_uploads_only_to_hosts_not_on_the_package() {
    let (sandbox, deploys) = hosts_with_workers(2, deploy_worker);
    let packages = Store::new();
    let package = worker_hotfix(&packages, "v8.5.2");
    let hotfix = version_script("v8.5.2");
    let first = format!("{}:8262", sandbox.hosts()[0]);
    let args = ["patch", sandbox.cluster_name(), &package, "-N", &first, "--offline", "--yes"];
    Run::of(dm_patch(sandbox.tiup_home()).args(args).args(["--format", "json"])).code(0);

    // `-v`: stderr shows each remote command.
    let run = run_offline_with(&sandbox, &package, &["-v"]).code(0);
    let report = run.json();
    assert_eq!(phase_names(&report)[2], "Uploading the package to 1 host(s)");
    assert_eq!(run.stderr.matches("dm-patch-unpack ").count(), 1, "{}", run.stderr);
    let outcomes: Vec<(&str, &str)> = report["instances"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| (i["id"].as_str().unwrap(), i["outcome"].as_str().unwrap()))
        .collect();
    let second = format!("{}:8262", sandbox.hosts()[1]);
    assert_eq!(outcomes, [(first.as_str(), "skipped"), (second.as_str(), "patched")]);
    for deploy in &deploys {
        let installed = fs::read_to_string(deploy.join("bin/dm-worker/dm-worker")).unwrap();
        assert_eq!(installed, hotfix);
    }
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

/// How many unpacks a verbose run logged with tar's `flags` (`-v` logs each script by name and
/// arguments: the unpack's last one is tar's flags).
fn unpacks(run: &Run, flags: &str) -> usize {
    let flags = format!(" {flags} ");
    let logged = |line: &&str| line.contains("dm-patch-unpack ") && line.contains(&flags);
    run.stderr.lines().filter(logged).count()
}

/// Bytes gzip cannot shrink (xorshift noise).
fn noise(len: usize) -> Vec<u8> {
    let mut state = 0x2545_f491_4f6c_dd1du64;
    (0..len)
        .map(|_| {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state as u8
        })
        .collect()
}

/// A dm-worker package goes to the hosts as the tar stream inside it (no `gzip -d` on the
/// host), whether gzip shrinks it or not, and is verified and installed like any other; with
/// `--wire gzip` it goes as the gzip file, and the host inflates it.
#[test]
fn a_dm_worker_package_travels_as_plain_tar_unless_gzip_is_asked_for() {
    let (sandbox, deploys) = hosts_with_workers(2, deploy_worker);
    let packages = Store::new();
    let installs = [
        ("v8.5.2", noise(3 << 20), None, "-xf"),
        ("v8.5.3", b"a file that compresses well\n".repeat(100_000), None, "-xf"),
        ("v8.5.4", b"another file that compresses well\n".repeat(100_000), Some("gzip"), "-xzf"),
    ];
    for (version, payload, wire, flags) in installs {
        let hotfix = version_script(version);
        let package = packages.package(
            &format!("dm-worker-{version}.tar.gz"),
            &[
                Entry::file("dm-worker/dm-worker", 0o755, hotfix.as_bytes()),
                Entry::file("dm-worker/payload.bin", 0o644, &payload),
            ],
        );
        let mut extra: Vec<&str> = wire.iter().flat_map(|wire| ["--wire", *wire]).collect();
        extra.push("-v");
        let run = run_offline_with(&sandbox, &package, &extra).code(0);
        assert_eq!(unpacks(&run, flags), 2, "{version}: {}", run.stderr);
        let report = run.json();
        assert!(report["instances"].as_array().unwrap().iter().all(|i| i["outcome"] == "patched"));
        for deploy in &deploys {
            assert_eq!(fs::read(deploy.join("bin/dm-worker/payload.bin")).unwrap(), payload);
            assert_eq!(fs::read_to_string(deploy.join("bin/dm-worker/dm-worker")).unwrap(), hotfix);
        }
    }
}

/// An instance's staging dirs go with the keeping of its rollback point, in one command; when
/// the point cannot be kept (here `bin.rollback` is a file, not a dir), the instance is patched
/// all the same, the operator is told, and the run's cleanup removes what that command did not.
/// An offline swap and its rollback point are one command: a swap that fails there (a directory
/// where the package has a file) is told apart from a point that is not kept: the instance
/// needs the operator, with bin/ as it was, no point kept and what is staged left in place;
/// the other host is patched, with its point.
#[test]
fn a_swap_that_fails_before_its_rollback_point_is_not_taken_for_patched() {
    let (sandbox, deploys) = hosts_with_workers(2, deploy_worker);
    fs::create_dir_all(deploys[0].join("bin/dm-worker/conf.toml")).unwrap();
    let packages = Store::new();
    let binary = version_script("v8.5.2");
    let package = packages.package(
        "dm-worker-hotfix.tar.gz",
        &[
            Entry::file("dm-worker/dm-worker", 0o755, binary.as_bytes()),
            Entry::file("dm-worker/conf.toml", 0o644, b"x = 1\n"),
        ],
    );

    let run = run_offline_with(&sandbox, &package, &["-c", "1", "-v"]).code(3);

    let report = run.json();
    let instances = report["instances"].as_array().unwrap();
    assert_eq!(instances[0]["outcome"], "needs-attention", "{report}");
    let detail = instances[0]["detail"].as_str().unwrap();
    assert!(detail.contains("is a directory"), "{detail}");
    assert!(detail.contains("dm-patch-swap"), "the swap is named: {detail}");
    assert!(!detail.contains("dm-patch-keep_point"), "{detail}");
    assert!(detail.contains("what it replaced in bin/ is kept in"), "{detail}");
    let old = fs::read_to_string(deploys[0].join("bin/dm-worker/dm-worker")).unwrap();
    assert!(old.contains("v8.5.1"), "{old}");
    assert!(!deploys[0].join("bin.rollback").exists(), "no point for a swap that failed");
    assert_eq!(staged_leftovers(&deploys[0]).len(), 1, "kept for the operator");
    assert_eq!(instances[1]["outcome"], "patched", "{report}");
    assert!(deploys[1].join("bin.rollback").is_dir());
    assert_eq!(staged_leftovers(&deploys[1]), Vec::<String>::new());
    // One command per instance swaps and keeps the point.
    let both = run.stderr.lines().filter(|line| line.contains("$ dm-patch-swap"));
    assert!(both.clone().count() == 2, "{}", run.stderr);
    assert!(both.into_iter().all(|line| line.contains("&& dm-patch-keep_point")), "{}", run.stderr);
}

#[test]
fn a_rollback_point_that_cannot_be_kept_still_leaves_no_staging_dir() {
    let (sandbox, deploys) = hosts_with_workers(2, deploy_worker);
    fs::write(deploys[0].join("bin.rollback"), "not a dir").unwrap();
    let packages = Store::new();
    let package = worker_hotfix(&packages, "v8.5.2");

    let run = run_offline_with(&sandbox, &package, &["-c", "1"]).code(0);

    let report = run.json();
    assert!(report["instances"].as_array().unwrap().iter().all(|i| i["outcome"] == "patched"));
    assert!(run.stderr.contains("could not be kept for `dm-patch rollback`"), "{}", run.stderr);
    for deploy in &deploys {
        let binary = fs::read_to_string(deploy.join("bin/dm-worker/dm-worker")).unwrap();
        assert!(binary.contains("v8.5.2"), "{}: {binary}", deploy.display());
        assert_eq!(staged_leftovers(deploy), Vec::<String>::new(), "{}", deploy.display());
    }
    assert!(deploys[1].join("bin.rollback").is_dir(), "the other instance kept its point");
}
