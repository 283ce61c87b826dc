//! `--dry-run`: the plan, as text and as JSON, with no host contacted and nothing written.

use std::io::{self, Read};

use crate::support::{META_V2, META_V3, Store};

fn stdout(output: &std::process::Output) -> String {
    String::from_utf8(output.stdout.clone()).unwrap()
}

#[test]
fn text_plan_for_workers() {
    let store = Store::new().cluster("demo", META_V3);
    let pkg = store.good_package("dm-worker");
    let output = store
        .dm_patch([
            "patch",
            "demo",
            pkg.to_str().unwrap(),
            "-R",
            "dm-worker",
            "--dry-run",
        ])
        .output()
        .unwrap();
    assert!(output.status.success(), "{output:?}");
    let text = store.redact(&stdout(&output));
    insta::with_settings!({filters => vec![(r"sha256 [0-9a-f]{64}", "sha256 [SHA256]")]}, {
        insta::assert_snapshot!(text);
    });
}

#[test]
fn json_plan_lists_instances_in_order() {
    let store = Store::new().cluster("demo", META_V3);
    let pkg = store.good_package("dm-master");
    let output = store
        .dm_patch([
            "patch",
            "demo",
            pkg.to_str().unwrap(),
            "-R",
            "dm-master",
            "--dry-run",
            "--format",
            "json",
            "--ssh-timeout",
            "1",
        ])
        .output()
        .unwrap();
    assert!(output.status.success(), "{output:?}");
    let plan: serde_json::Value = serde_json::from_str(&stdout(&output)).unwrap();
    assert_eq!(plan["cluster"], "demo");
    assert_eq!(plan["component"], "dm-master");
    assert_eq!(plan["package"]["path"], pkg.to_str().unwrap());
    assert_eq!(
        plan["package"]["size"],
        std::fs::metadata(&pkg).unwrap().len()
    );
    let sha = plan["package"]["sha256"].as_str().unwrap();
    assert_eq!(sha.len(), 64);
    // Nothing listens on 127.0.9.x: the leader is unknown and meta.yaml order is kept.
    assert_eq!(plan["leader"], serde_json::Value::Null);
    let instances = plan["instances"].as_array().unwrap();
    let ids: Vec<&str> = instances
        .iter()
        .map(|i| i["id"].as_str().unwrap())
        .collect();
    assert_eq!(ids, ["127.0.9.1:8261", "127.0.9.2:8261", "127.0.9.3:8261"]);
    for instance in instances {
        assert_eq!(instance["role"], "dm-master");
        assert_eq!(
            instance["deploy_dir"],
            "/home/tidb/dm/deploy/dm-master-8261"
        );
        assert!(instance["host"].as_str().unwrap().starts_with("127.0.9."));
        assert_eq!(
            instance["binary"],
            "/home/tidb/dm/deploy/dm-master-8261/bin/dm-master/dm-master"
        );
        assert_eq!(
            instance["backup_dir"],
            "/home/tidb/dm/deploy/dm-master-8261/bin.old.v8.5.1"
        );
    }
    assert_eq!(
        plan["hosts"][0]["remote_package"],
        format!(
            "/home/tidb/dm/deploy/dm-master-8261/dm-patch-dm-master-{}.tar.gz",
            &sha[..7]
        )
    );
}

#[test]
fn yaml_v2_store_with_relative_dirs() {
    let store = Store::new().cluster("old", META_V2);
    let pkg = store.good_package("dm-worker");
    let output = store
        .dm_patch([
            "patch",
            "old",
            pkg.to_str().unwrap(),
            "-N",
            "127.0.9.21:8262",
            "--dry-run",
            "--format",
            "json",
        ])
        .output()
        .unwrap();
    assert!(output.status.success(), "{output:?}");
    let plan: serde_json::Value = serde_json::from_str(&stdout(&output)).unwrap();
    let instance = &plan["instances"][0];
    assert_eq!(
        instance["deploy_dir"],
        "/home/tidb/dm/deploy/dm-worker-8262"
    );
    assert_eq!(instance["marked_patched"], true);
    assert_eq!(plan["cluster_version"], "v5.3.0");
}

/// A 1 GiB package (zeros, so it packs small) is checked in one streaming pass: the checker's
/// peak memory must stay far below the package's unpacked size.
#[test]
fn a_1_gib_entry_is_checked_with_bounded_memory() {
    const ONE_GIB: u64 = 1 << 30;
    let store = Store::new().cluster("demo", META_V3);
    let pkg = store.home().join("big.tar.gz");
    {
        let file = std::fs::File::create(&pkg).unwrap();
        let gz = flate2::write::GzEncoder::new(file, flate2::Compression::fast());
        let mut tar = tar::Builder::new(gz);
        let mut header = tar::Header::new_gnu();
        header.set_path("dm-worker/dm-worker").unwrap();
        header.set_mode(0o755);
        header.set_size(ONE_GIB);
        header.set_cksum();
        tar.append(&header, io::repeat(0).take(ONE_GIB)).unwrap();
        tar.into_inner().unwrap().finish().unwrap();
    }

    let mut child = std::process::Command::new(assert_cmd::cargo::cargo_bin("dm-patch"))
        .args([
            "patch",
            "demo",
            pkg.to_str().unwrap(),
            "-R",
            "dm-worker",
            "--dry-run",
            "-q",
        ])
        .env("TIUP_HOME", store.home())
        .stdout(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let (status, peak_rss_kib) = wait_with_peak_rss(&mut child);
    assert!(status.success(), "dm-patch failed on a valid 1 GiB package");
    let peak_mib = peak_rss_kib / 1024;
    eprintln!("peak RSS while checking a 1 GiB package: {peak_mib} MiB");
    assert!(
        peak_mib < 64,
        "peak RSS {peak_mib} MiB grows with the package"
    );
}

/// Waits for `child` and returns its exit status and peak resident memory (KiB), from the
/// kernel's own accounting (`wait4`), so nothing the test does is counted.
fn wait_with_peak_rss(child: &mut std::process::Child) -> (std::process::ExitStatus, i64) {
    use std::os::unix::process::ExitStatusExt;
    let mut status = 0;
    // SAFETY: rusage is plain data the kernel fills in; the pid is our own child, not yet reaped.
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    let pid = child.id() as libc::pid_t;
    let reaped = unsafe { libc::wait4(pid, &mut status, 0, &mut usage) };
    assert_eq!(reaped, pid, "wait4: {}", io::Error::last_os_error());
    (std::process::ExitStatus::from_raw(status), usage.ru_maxrss)
}
