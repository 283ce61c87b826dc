//! `dm-patch history`: the runs against a cluster, from its audit records, newest first.

use crate::support::Store;

#[test]
fn history_lists_a_clusters_runs_newest_first_and_shows_one_in_full() {
    let store = Store::demo();
    let pkg = store.good_package("dm-worker");
    store.refused(&["patch", "demo", &pkg, "-R", "tikv", "--yes"]);
    store.refused(&[
        "patch",
        "demo",
        &pkg,
        "-R",
        "dm-worker",
        "--yes",
        "--ssh",
        "none",
        "-N",
        "nowhere:1",
    ]);

    let list = store.run(["history", "demo", "--format", "json"]).success().json();
    crate::support::conforms("history", &list);
    assert_eq!(
        (list["schema_version"].as_u64(), list["cluster"].as_str()),
        (Some(1), Some("demo"))
    );
    let runs = list["runs"].as_array().unwrap();
    assert_eq!(runs.len(), 2, "{list}");
    assert!(runs[0]["command"].as_str().unwrap().contains("nowhere:1"), "newest first: {list}");
    assert!(runs[1]["command"].as_str().unwrap().contains("-R tikv"), "{list}");
    assert_eq!(runs[1]["result"], "refused");
    assert!(runs[0]["by"].as_str().unwrap().contains('@'), "{list}");

    let newest = store.run(["history", "demo", "-n", "1", "--format", "json"]).success().json();
    assert_eq!(newest["runs"].as_array().unwrap().len(), 1);

    let text = store.run(["history", "demo"]).success();
    let header = text.stdout.lines().next().unwrap();
    for column in ["ID", "Started", "By", "Package", "Result", "Instances"] {
        assert!(header.contains(column), "{}", text.stdout);
    }

    let id = runs[1]["id"].as_str().unwrap();
    let one = store.run(["history", "demo", id]).success();
    assert!(one.stdout.contains(&format!("Run:             {id}")), "{}", one.stdout);
    assert!(one.stdout.contains("Result:          refused"), "{}", one.stdout);
    let one = store.run(["history", "demo", id, "--format", "json"]).success().json();
    crate::support::conforms("history-run", &one);
    assert_eq!((one["schema_version"].as_u64(), one["id"].as_str()), (Some(1), Some(id)));

    let unknown = store.refused(&["history", "demo", "nosuchrun"]);
    assert!(unknown.contains("no run nosuchrun against cluster 'demo'"), "{unknown}");
    let nothing = store.run(["history", "demo", "--format", "json"]);
    assert!(nothing.stderr.is_empty(), "{}", nothing.stderr);
}

/// Something that is not a record in the audit dir (a FIFO, a link to /dev/zero) is passed
/// over: `history` neither blocks nor reads forever.
#[test]
fn a_fifo_or_an_endless_file_in_the_audit_dir_is_passed_over() {
    let store = Store::demo();
    let pkg = store.good_package("dm-worker");
    store.refused(&["patch", "demo", &pkg, "-R", "tikv", "--yes"]);
    let audit = store.home().join("storage/dm/audit");
    let fifo = audit.join("fQ9xzzzzzz_dm-patch");
    let made = std::process::Command::new("mkfifo").arg(&fifo).status().unwrap();
    assert!(made.success());
    std::os::unix::fs::symlink("/dev/zero", audit.join("fQ9yzzzzzz_dm-patch")).unwrap();

    let list = store.run(["history", "demo", "--format", "json"]).success().json();

    assert_eq!(list["runs"].as_array().unwrap().len(), 1, "the one real record: {list}");
}
