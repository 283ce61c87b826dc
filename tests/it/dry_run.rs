//! `--dry-run`: the plan, as text and as JSON, with no host contacted and nothing written.

use std::io::{self, Read};

use serde_json::Value;

use crate::support::{META_V2, Store, number_from_child_test, wait_with_peak_rss};

#[test]
fn text_plan_for_workers() {
    let store = Store::demo();
    let pkg = store.good_package("dm-worker");
    let run = store.run(["patch", "demo", &pkg, "-R", "dm-worker", "--dry-run"]).success();
    insta::with_settings!({filters => vec![(r"sha256 [0-9a-f]{64}", "sha256 [SHA256]")]}, {
        insta::assert_snapshot!(store.redact(&run.stdout));
    });
}

/// The JSON plan of the demo cluster's masters (nothing listens on 127.0.9.x, so the leader
/// is unknown and meta.yaml order is kept).
fn master_plan() -> (Value, String, Store) {
    let store = Store::demo();
    let pkg = store.good_package("dm-master");
    let args = ["patch", "demo", &pkg, "-R", "dm-master", "--dry-run", "--format", "json"];
    let plan = store.run(args.into_iter().chain(["--ssh-timeout", "1"])).success().json();
    crate::support::conforms("plan", &plan);
    (plan, pkg, store)
}

#[test]
fn json_plan_names_the_package() {
    let (plan, pkg, _store) = master_plan();
    assert_eq!(plan["cluster"], "demo");
    assert_eq!(plan["component"], "dm-master");
    assert_eq!(plan["package"]["path"], pkg);
    assert_eq!(plan["package"]["size"], std::fs::metadata(&pkg).unwrap().len());
    assert_eq!(plan["package"]["sha256"].as_str().unwrap().len(), 64);
    assert_eq!(plan["leader"], Value::Null);
}

#[test]
fn json_plan_lists_instances_in_order_with_their_paths() {
    let (plan, ..) = master_plan();
    let ids: Vec<&Value> = plan["instances"].as_array().unwrap().iter().map(|i| &i["id"]).collect();
    assert_eq!(ids, ["127.0.9.1:8261", "127.0.9.2:8261", "127.0.9.3:8261"]);
    let deploy = "/home/tidb/dm/deploy/dm-master-8261";
    for instance in plan["instances"].as_array().unwrap() {
        assert_eq!(instance["role"], "dm-master");
        assert_eq!(instance["deploy_dir"], deploy);
        assert_eq!(instance["binary"], format!("{deploy}/bin/dm-master/dm-master"));
        assert_eq!(instance["backup_dir"], format!("{deploy}/bin.old.v8.5.1"));
    }
    let sha7 = &plan["package"]["sha256"].as_str().unwrap()[..7];
    assert_eq!(plan["instances"][0]["staging_dir"], format!("{deploy}/bin.patch-{sha7}"));
    assert_eq!(plan["hosts"][0]["ssh_host"], "127.0.9.1");
}

#[test]
fn yaml_v2_store_with_relative_dirs() {
    let store = Store::new().cluster("old", META_V2);
    let pkg = store.good_package("dm-worker");
    let args = ["patch", "old", &pkg, "-N", "127.0.9.21:8262", "--dry-run", "--format", "json"];
    let plan = store.run(args).success().json();
    let instance = &plan["instances"][0];
    assert_eq!(instance["deploy_dir"], "/home/tidb/dm/deploy/dm-worker-8262");
    assert_eq!(instance["marked_patched"], true);
    assert_eq!(plan["cluster_version"], "v5.3.0");
}

/// A 1 GiB package (zeros, so it packs small) is checked in one streaming pass: the checker's
/// peak memory must stay far below the package's unpacked size.
///
/// The check runs from a test process of its own: the kernel counts the memory of whatever
/// process starts dm-patch in dm-patch's peak (it is carried over at exec), and this one
/// holds every other test running beside it.
#[test]
fn a_1_gib_entry_is_checked_with_bounded_memory() {
    let child = "dry_run::one_gib_check_in_this_process";
    let peak_mib = number_from_child_test(child, &[(CHILD, "1".as_ref())], "peak-rss-mib");
    eprintln!("peak RSS while checking a 1 GiB package: {peak_mib} MiB");
    assert!(peak_mib < 64, "peak RSS {peak_mib} MiB grows with the package");
}

/// Tells the child half of the 1 GiB test that it was started by the parent half.
const CHILD: &str = "DM_PATCH_TEST_ONE_GIB_CHILD";

#[test]
#[ignore = "run in a child process by a_1_gib_entry_is_checked_with_bounded_memory"]
fn one_gib_check_in_this_process() {
    if std::env::var_os(CHILD).is_none() {
        return eprintln!("only a_1_gib_entry_is_checked_with_bounded_memory runs this");
    }
    const ONE_GIB: u64 = 1 << 30;
    let store = Store::demo();
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
    let mut child = store
        .dm_patch(["patch", "demo"])
        .arg(&pkg)
        .args(["-R", "dm-worker", "--dry-run", "-q"])
        .stdout(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let (status, peak_rss_kib) = wait_with_peak_rss(&mut child);
    assert!(status.success(), "dm-patch failed on a valid 1 GiB package");
    println!("peak-rss-mib={}", peak_rss_kib / 1024);
}
