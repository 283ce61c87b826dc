//! Every kind of bad input ends with one clear line on stderr, exit code 2, and the store
//! exactly as it was.

use crate::support::{Entry, META_V3, Store};

/// Runs `args`, expects exit 2 and an unchanged meta.yaml, returns stderr with paths redacted.
fn refused(store: &Store, args: &[&str]) -> String {
    let before = store.meta("demo");
    let output = store.dm_patch(args).output().unwrap();
    assert_eq!(output.status.code(), Some(2), "{output:?}");
    assert!(output.stdout.is_empty(), "{output:?}");
    assert_eq!(store.meta("demo"), before, "meta.yaml changed");
    let stderr = String::from_utf8(output.stderr).unwrap();
    assert_eq!(stderr.lines().count(), 1, "one line expected: {stderr}");
    store.redact(&stderr)
}

fn path(p: &std::path::Path) -> &str {
    p.to_str().unwrap()
}

#[test]
fn store_errors() {
    let store = Store::new().cluster("demo", META_V3);
    let pkg = store.good_package("dm-worker");
    let pkg = path(&pkg);
    insta::assert_snapshot!(
        "unknown_cluster",
        refused(&store, &["patch", "nope", pkg, "-R", "dm-worker"])
    );
    insta::assert_snapshot!(
        "bad_cluster_name",
        refused(&store, &["patch", "../demo", pkg, "-R", "dm-worker"])
    );

    let broken = Store::new().cluster("demo", "user: tidb\ntopology: [unclosed\n");
    let pkg = broken.good_package("dm-worker");
    insta::assert_snapshot!(
        "invalid_meta",
        refused(&broken, &["patch", "demo", path(&pkg), "-R", "dm-worker"])
    );
    let bad_arch = Store::new().cluster(
        "demo",
        "topology:\n  worker_servers:\n  - host: 127.0.9.1\n    arch: sparc\n",
    );
    let pkg = bad_arch.good_package("dm-worker");
    insta::assert_snapshot!(
        "invalid_arch",
        refused(&bad_arch, &["patch", "demo", path(&pkg), "-R", "dm-worker"])
    );
}

#[test]
fn selection_errors() {
    let store = Store::new().cluster("demo", META_V3);
    let pkg = store.good_package("dm-worker");
    let pkg = path(&pkg);
    insta::assert_snapshot!("no_filter", refused(&store, &["patch", "demo", pkg]));
    insta::assert_snapshot!(
        "unknown_role",
        refused(&store, &["patch", "demo", pkg, "-R", "tikv"])
    );
    insta::assert_snapshot!(
        "tiup_only_role",
        refused(&store, &["patch", "demo", pkg, "-R", "grafana"])
    );
    insta::assert_snapshot!(
        "unknown_node",
        refused(&store, &["patch", "demo", pkg, "-N", "127.0.9.9:8262"])
    );
    insta::assert_snapshot!(
        "no_match",
        refused(
            &store,
            &[
                "patch",
                "demo",
                pkg,
                "-R",
                "dm-master",
                "-N",
                "127.0.9.1:8262"
            ]
        )
    );
    insta::assert_snapshot!(
        "two_components",
        refused(
            &store,
            &["patch", "demo", pkg, "-N", "127.0.9.1:8261,127.0.9.1:8262"]
        )
    );
}

#[test]
fn package_errors() {
    let store = Store::new().cluster("demo", META_V3);
    let worker = ["-R", "dm-worker", "--dry-run"];
    let check = |name: &str, pkg: &std::path::Path| {
        let mut args = vec!["patch", "demo", path(pkg)];
        args.extend(worker);
        insta::assert_snapshot!(name, refused(&store, &args));
    };

    check("missing_package", &store.home().join("absent.tar.gz"));

    let plain = store.home().join("plain.tar.gz");
    std::fs::write(&plain, "not a tarball at all").unwrap();
    check("not_gzip", &plain);

    let good = store.good_package("dm-worker");
    let bytes = std::fs::read(&good).unwrap();
    let truncated = store.home().join("truncated.tar.gz");
    std::fs::write(&truncated, &bytes[..bytes.len() / 2]).unwrap();
    check("truncated", &truncated);

    check(
        "entry_missing",
        &store.package("empty.tar.gz", &[Entry::file("README", 0o644, b"hi")]),
    );
    check(
        "entry_is_directory",
        &store.package("dir.tar.gz", &[Entry::dir("dm-worker/dm-worker")]),
    );
    check(
        "entry_not_executable",
        &store.package(
            "noexec.tar.gz",
            &[Entry::file("dm-worker/dm-worker", 0o644, b"#!/bin/sh\n")],
        ),
    );
    check("wrong_component", &store.good_package("dm-master"));
    check(
        "absolute_path",
        &store.package(
            "abs.tar.gz",
            &[
                Entry::file("dm-worker/dm-worker", 0o755, b"#!/bin/sh\n"),
                Entry::file("/etc/cron.d/evil", 0o644, b"* * * * * root sh\n"),
            ],
        ),
    );
    check(
        "parent_path",
        &store.package(
            "dotdot.tar.gz",
            &[
                Entry::file("dm-worker/dm-worker", 0o755, b"#!/bin/sh\n"),
                Entry::file("dm-worker/../../evil", 0o644, b"x"),
            ],
        ),
    );
    check(
        "link_outside",
        &store.package(
            "link.tar.gz",
            &[
                Entry::file("dm-worker/dm-worker", 0o755, b"#!/bin/sh\n"),
                Entry::symlink("dm-worker/conf", "../../../etc"),
            ],
        ),
    );
    check(
        "entry_is_link",
        &store.package(
            "entrylink.tar.gz",
            &[Entry::symlink("dm-worker/dm-worker", "other")],
        ),
    );
    check(
        "wrong_arch",
        &store.package("arm.tar.gz", &[Entry::elf("dm-worker/dm-worker", 183)]),
    );
}

#[test]
fn packages_that_pass() {
    let store = Store::new().cluster("demo", META_V3);
    let accepted = [
        store.package("elf.tar.gz", &[Entry::elf("dm-worker/dm-worker", 62)]),
        store.package(
            "dotted.tar.gz",
            &[
                Entry::dir("./dm-worker"),
                Entry::file("./dm-worker/dm-worker", 0o755, b"#!/bin/sh\n"),
                Entry::symlink("dm-worker/dm-worker.link", "dm-worker"),
            ],
        ),
    ];
    for pkg in accepted {
        store
            .dm_patch(["patch", "demo", path(&pkg), "-R", "dm-worker", "--dry-run"])
            .assert()
            .success();
    }
}

#[test]
fn a_locked_cluster_is_refused_at_once() {
    let store = Store::new().cluster("demo", META_V3);
    let pkg = store.good_package("dm-worker");
    let dir = std::fs::File::open(store.cluster_dir("demo")).unwrap();
    dir.try_lock().unwrap();
    insta::assert_snapshot!(
        "locked",
        refused(
            &store,
            &["patch", "demo", path(&pkg), "-R", "dm-worker", "--yes"]
        )
    );
    // A dry run reads only, so it is not held up by the lock.
    store
        .dm_patch(["patch", "demo", path(&pkg), "-R", "dm-worker", "--dry-run"])
        .assert()
        .success();
}

#[test]
fn no_terminal_and_no_yes_is_refused() {
    let store = Store::new().cluster("demo", META_V3);
    let pkg = store.good_package("dm-worker");
    insta::assert_snapshot!(
        "no_confirmation",
        refused(&store, &["patch", "demo", path(&pkg), "-R", "dm-worker"])
    );
}
