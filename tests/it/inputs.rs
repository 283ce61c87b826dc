//! Every kind of bad input ends with one clear line on stderr, exit code 2, and the store
//! exactly as it was. One test per input; each snapshot is named after its test.

use sha2::{Digest, Sha256};

use crate::support::{Entry, Immutable, Store};

/// `patch demo <package> -R dm-worker --dry-run` with a package `file_name` made of
/// `entries`: refused.
fn refused_package(file_name: &str, entries: &[Entry]) -> String {
    let store = Store::demo();
    let pkg = store.package(file_name, entries);
    store.refused(&["patch", "demo", &pkg, "-R", "dm-worker", "--dry-run"])
}

fn worker_with(extra: Entry) -> [Entry; 2] {
    [Entry::file("dm-worker/dm-worker", 0o755, b"#!/bin/sh\n"), extra]
}

#[test]
fn unknown_cluster() {
    let store = Store::demo();
    let pkg = store.good_package("dm-worker");
    insta::assert_snapshot!(store.refused(&["patch", "nope", &pkg, "-R", "dm-worker"]));
}

#[test]
fn bad_cluster_name() {
    let store = Store::demo();
    let pkg = store.good_package("dm-worker");
    insta::assert_snapshot!(store.refused(&["patch", "../demo", &pkg, "-R", "dm-worker"]));
}

#[test]
fn invalid_meta() {
    let store = Store::new().cluster("demo", "user: tidb\ntopology: [unclosed\n");
    let pkg = store.good_package("dm-worker");
    insta::assert_snapshot!(store.refused(&["patch", "demo", &pkg, "-R", "dm-worker"]));
}

#[test]
fn invalid_arch() {
    let meta = "topology:\n  worker_servers:\n  - host: 127.0.9.1\n    arch: sparc\n";
    let store = Store::new().cluster("demo", meta);
    let pkg = store.good_package("dm-worker");
    insta::assert_snapshot!(store.refused(&["patch", "demo", &pkg, "-R", "dm-worker"]));
}

/// `patch demo <good worker package> <selection...>`: refused.
fn refused_selection(selection: &[&str]) -> String {
    let store = Store::demo();
    let pkg = store.good_package("dm-worker");
    let mut args = vec!["patch", "demo", &pkg];
    args.extend(selection);
    store.refused(&args)
}

#[test]
fn no_filter() {
    insta::assert_snapshot!(refused_selection(&[]));
}

#[test]
fn unknown_role() {
    insta::assert_snapshot!(refused_selection(&["-R", "tikv"]));
}

#[test]
fn tiup_only_role() {
    insta::assert_snapshot!(refused_selection(&["-R", "grafana"]));
}

#[test]
fn unknown_node() {
    insta::assert_snapshot!(refused_selection(&["-N", "127.0.9.9:8262"]));
}

#[test]
fn no_match() {
    insta::assert_snapshot!(refused_selection(&["-R", "dm-master", "-N", "127.0.9.1:8262"]));
}

#[test]
fn two_components() {
    insta::assert_snapshot!(refused_selection(&["-N", "127.0.9.1:8261,127.0.9.1:8262"]));
}

#[test]
fn missing_package() {
    let store = Store::demo();
    let pkg = store.home().join("absent.tar.gz").display().to_string();
    insta::assert_snapshot!(store.refused(&["patch", "demo", &pkg, "-R", "dm-worker"]));
}

#[test]
fn not_gzip() {
    let store = Store::demo();
    let pkg = store.file("plain.tar.gz", b"not a tarball at all");
    insta::assert_snapshot!(store.refused(&["patch", "demo", &pkg, "-R", "dm-worker"]));
}

#[test]
fn truncated() {
    let store = Store::demo();
    let bytes = std::fs::read(store.good_package("dm-worker")).unwrap();
    let pkg = store.file("truncated.tar.gz", &bytes[..bytes.len() / 2]);
    insta::assert_snapshot!(store.refused(&["patch", "demo", &pkg, "-R", "dm-worker"]));
}

#[test]
fn entry_missing() {
    insta::assert_snapshot!(refused_package(
        "empty.tar.gz",
        &[Entry::file("README", 0o644, b"hi")]
    ));
}

#[test]
fn entry_is_directory() {
    insta::assert_snapshot!(refused_package("dir.tar.gz", &[Entry::dir("dm-worker/dm-worker")]));
}

#[test]
fn entry_not_executable() {
    let entry = Entry::file("dm-worker/dm-worker", 0o644, b"#!/bin/sh\n");
    insta::assert_snapshot!(refused_package("noexec.tar.gz", &[entry]));
}

#[test]
fn entry_is_link() {
    insta::assert_snapshot!(refused_package(
        "entrylink.tar.gz",
        &[Entry::symlink("dm-worker/dm-worker", "other")]
    ));
}

#[test]
fn wrong_component() {
    let store = Store::demo();
    let pkg = store.good_package("dm-master");
    insta::assert_snapshot!(store.refused(&["patch", "demo", &pkg, "-R", "dm-worker"]));
}

#[test]
fn absolute_path() {
    let evil = Entry::file("/etc/cron.d/evil", 0o644, b"* * * * * root sh\n");
    insta::assert_snapshot!(refused_package("abs.tar.gz", &worker_with(evil)));
}

#[test]
fn parent_path() {
    let evil = Entry::file("dm-worker/../../evil", 0o644, b"x");
    insta::assert_snapshot!(refused_package("dotdot.tar.gz", &worker_with(evil)));
}

#[test]
fn link_outside() {
    let evil = Entry::symlink("dm-worker/conf", "../../../etc");
    insta::assert_snapshot!(refused_package("link.tar.gz", &worker_with(evil)));
}

#[test]
fn wrong_arch() {
    insta::assert_snapshot!(refused_package(
        "arm.tar.gz",
        &[Entry::elf("dm-worker/dm-worker", 183)]
    ));
}

#[test]
fn packages_that_pass() {
    let store = Store::demo();
    let elf = store.package("elf.tar.gz", &[Entry::elf("dm-worker/dm-worker", 62)]);
    let dotted = store.package(
        "dotted.tar.gz",
        &[
            Entry::dir("./dm-worker"),
            Entry::file("./dm-worker/dm-worker", 0o755, b"#!/bin/sh\n"),
            Entry::symlink("dm-worker/dm-worker.link", "dm-worker"),
        ],
    );
    for pkg in [elf, dotted] {
        store.run(["patch", "demo", &pkg, "-R", "dm-worker", "--dry-run"]).success();
    }
}

#[test]
fn locked() {
    let store = Store::demo();
    let pkg = store.good_package("dm-worker");
    let dir = std::fs::File::open(store.cluster_dir("demo")).unwrap();
    dir.try_lock().unwrap();
    insta::assert_snapshot!(store.refused(&["patch", "demo", &pkg, "-R", "dm-worker", "--yes"]));
    // A dry run reads only, so it is not held up by the lock.
    store.run(["patch", "demo", &pkg, "-R", "dm-worker", "--dry-run"]).success();
}

#[test]
fn no_confirmation() {
    let store = Store::demo();
    let pkg = store.good_package("dm-worker");
    insta::assert_snapshot!(store.refused(&["patch", "demo", &pkg, "-R", "dm-worker"]));
}

/// `patch demo <good worker package> -R dm-worker` on a store whose meta.yaml is `meta`.
fn refused_meta(meta: &str) -> String {
    let store = Store::new().cluster("demo", meta);
    let pkg = store.good_package("dm-worker");
    store.refused(&["patch", "demo", &pkg, "-R", "dm-worker", "--dry-run"])
}

#[test]
fn empty_meta() {
    insta::assert_snapshot!(refused_meta(""));
}

#[test]
fn meta_without_topology() {
    insta::assert_snapshot!(refused_meta("user: tidb\ndm_version: v8.5.1\n"));
}

#[test]
fn an_instance_listed_twice() {
    let worker = "  - host: 127.0.9.1\n    port: 8262\n";
    insta::assert_snapshot!(refused_meta(&format!(
        "topology:\n  worker_servers:\n{worker}{worker}"
    )));
}

#[test]
fn meta_that_is_not_a_regular_file() {
    let store = Store::demo();
    let meta = store.cluster_dir("demo").join("meta.yaml");
    std::fs::remove_file(&meta).unwrap();
    std::os::unix::fs::symlink("/dev/zero", &meta).unwrap();
    let pkg = store.good_package("dm-worker");
    let line = store.run(["display", "demo"]).code(2).stderr;
    assert!(line.contains("not a regular file"), "{line}");
    let line = store.run(["patch", "demo", &pkg, "-R", "dm-worker", "--dry-run"]).code(2).stderr;
    assert_eq!(line.lines().count(), 1, "{line}");
}

#[test]
fn a_wait_timeout_of_zero() {
    insta::assert_snapshot!(refused_selection(&["-R", "dm-worker", "--wait-timeout", "0"]));
}

#[test]
fn a_wait_timeout_that_overflows() {
    let huge = "18446744073709551615";
    insta::assert_snapshot!(refused_selection(&["-R", "dm-worker", "--wait-timeout", huge]));
}

#[test]
fn an_ssh_timeout_of_zero() {
    insta::assert_snapshot!(refused_selection(&["-R", "dm-worker", "--ssh-timeout", "0"]));
}

// Packages that read one way to a check that stops early and another way to `tar` on the hosts,
// and packages that pass a lenient check only to fail on every host.

/// `patch demo <package> -R dm-worker --dry-run` with a package file of exactly `bytes`:
/// refused.
fn refused_bytes(file_name: &str, bytes: &[u8]) -> String {
    let store = Store::demo();
    let pkg = store.file(file_name, bytes);
    store.refused(&["patch", "demo", &pkg, "-R", "dm-worker", "--dry-run"])
}

/// The tar stream of `entries`, without its end-of-archive blocks, so that another stream can
/// carry on where it stops.
fn tar_stream(entries: &[Entry]) -> Vec<u8> {
    use std::io::Read;
    let store = Store::new();
    let pkg = store.package("part.tar.gz", entries);
    let mut tar = Vec::new();
    let file = std::fs::File::open(pkg).unwrap();
    flate2::read::GzDecoder::new(file).read_to_end(&mut tar).unwrap();
    assert!(tar.ends_with(&END_OF_TAR));
    tar.truncate(tar.len() - END_OF_TAR.len());
    tar
}

/// The two zero blocks that end a tar archive.
const END_OF_TAR: [u8; 1024] = [0; 1024];

/// One gzip member holding `bytes`.
fn gzip(bytes: &[u8]) -> Vec<u8> {
    use std::io::Write;
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    gz.write_all(bytes).unwrap();
    gz.finish().unwrap()
}

/// `first` and then `second` (ended) as two gzip members of one file: `gzip -d`, and so `tar`
/// on the hosts, reads them as one tar stream.
fn two_members(first: &[Entry], second: &[Entry]) -> Vec<u8> {
    let mut rest = tar_stream(second);
    rest.extend(END_OF_TAR);
    [gzip(&tar_stream(first)), gzip(&rest)].concat()
}

#[test]
fn a_second_gzip_member_with_a_link() {
    let worker = Entry::file("dm-worker/dm-worker", 0o755, b"#!/bin/sh\n");
    let link = Entry::symlink("dm-worker/dm-worker", "/usr/local/bin/outside");
    insta::assert_snapshot!(refused_bytes("members.tar.gz", &two_members(&[worker], &[link])));
}

#[test]
fn a_second_gzip_member_with_the_entry_again() {
    let (amd64, arm64) =
        (Entry::elf("dm-worker/dm-worker", 62), Entry::elf("dm-worker/dm-worker", 183));
    insta::assert_snapshot!(refused_bytes("members.tar.gz", &two_members(&[amd64], &[arm64])));
}

#[test]
fn the_entry_again_as_dot_slash() {
    insta::assert_snapshot!(refused_package(
        "twice.tar.gz",
        &[Entry::elf("dm-worker/dm-worker", 183), Entry::elf("./dm-worker/dm-worker", 62)]
    ));
}

#[test]
fn the_entry_again_with_a_double_slash() {
    insta::assert_snapshot!(refused_package(
        "twice.tar.gz",
        &[Entry::elf("dm-worker/dm-worker", 183), Entry::elf("dm-worker//dm-worker", 62)]
    ));
}

#[test]
fn trailing_garbage() {
    let store = Store::new();
    let mut bytes = std::fs::read(store.good_package("dm-worker")).unwrap();
    bytes.extend(b"garbage\n");
    insta::assert_snapshot!(refused_bytes("trailing.tar.gz", &bytes));
}

/// `gzip -d` ignores zero bytes after the last member (tape padding), so they pass.
#[test]
fn trailing_zeros_pass() {
    let store = Store::demo();
    let mut bytes = std::fs::read(store.good_package("dm-worker")).unwrap();
    bytes.extend([0; 4096]);
    let pkg = store.file("padded.tar.gz", &bytes);
    store.run(["patch", "demo", &pkg, "-R", "dm-worker", "--dry-run"]).success();
}

#[test]
fn only_the_current_dir() {
    insta::assert_snapshot!(refused_package("dot.tar.gz", &[Entry::dir("./")]));
}

#[test]
fn gzip_of_text() {
    let text: String = (0..40).map(|i| format!("line {i} of a text that is not a tar\n")).collect();
    insta::assert_snapshot!(refused_bytes("text.tar.gz", &gzip(text.as_bytes())));
}

#[test]
fn an_entry_name_with_a_line_break() {
    let evil = Entry::file("/etc/cron.d/evil\nline two", 0o644, b"x");
    insta::assert_snapshot!(refused_package("newline.tar.gz", &worker_with(evil)));
}

/// Inside the package too: a line break or a tab in a name is refused before any host (the
/// hosts' listings could not be verified; it used to fail on the host, after its backup).
#[test]
fn an_entry_name_with_a_tab_or_line_break_inside_the_package() {
    for name in ["dm-worker/conf\nx.toml", "dm-worker/conf\tx.toml"] {
        let odd = Entry::file(name, 0o644, b"x");
        let refused = refused_package("odd.tar.gz", &worker_with(odd));
        assert!(refused.contains("a name with a control character"), "{refused}");
    }
}

/// A package of one gzip member whose `dm-worker/dm-worker` holds `chunks` times 64 MiB of
/// zeros, written in well under a second: a deflate chunk of zeros is made once (a full flush
/// makes it stand alone) and repeated, and the CRCs are combined.
fn gzip_bomb(chunks: u64) -> Vec<u8> {
    const CHUNK: usize = 64 << 20;
    fn deflate(data: &[u8], flush: flate2::FlushCompress) -> Vec<u8> {
        let mut compress = flate2::Compress::new(flate2::Compression::fast(), false);
        let mut out = Vec::new();
        loop {
            out.reserve(1 << 20);
            let consumed = compress.total_in() as usize;
            compress.compress_vec(&data[consumed..], &mut out, flush).unwrap();
            if compress.total_in() as usize == data.len() && out.len() < out.capacity() {
                return out;
            }
        }
    }
    let mut header = tar::Header::new_gnu();
    header.set_path("dm-worker/dm-worker").unwrap();
    header.set_mode(0o755);
    header.set_size(chunks * CHUNK as u64);
    header.set_cksum();
    let zeros = vec![0u8; CHUNK];
    let zeros_deflated = deflate(&zeros, flate2::FlushCompress::Full);
    let mut zeros_crc = flate2::Crc::new();
    zeros_crc.update(&zeros);

    let mut crc = flate2::Crc::new();
    crc.update(header.as_bytes());
    let mut bytes = vec![0x1f, 0x8b, 8, 0, 0, 0, 0, 0, 0, 0xff];
    bytes.extend(deflate(header.as_bytes(), flate2::FlushCompress::Full));
    for _ in 0..chunks {
        bytes.extend(&zeros_deflated);
        crc.combine(&zeros_crc);
    }
    bytes.extend(deflate(&END_OF_TAR, flate2::FlushCompress::Finish));
    crc.update(&END_OF_TAR);
    bytes.extend(crc.sum().to_le_bytes());
    bytes.extend(crc.amount().to_le_bytes());
    bytes
}

#[test]
fn a_gzip_bomb() {
    // 65 x 64 MiB: just over the 4 GiB a package may unpack to.
    insta::assert_snapshot!(refused_bytes("bomb.tar.gz", &gzip_bomb(65)));
}

/// A store that cannot be written is found before any host is contacted.
#[test]
fn an_unwritable_store() {
    let store = Store::demo();
    let pkg = store.good_package("dm-worker");
    let _frozen = Immutable::new(store.cluster_dir("demo"));
    insta::assert_snapshot!(store.refused(&["patch", "demo", &pkg, "-R", "dm-worker", "--yes"]));
}

/// The same for `rollback`: refused as bad input (exit 2) before any host is surveyed.
#[test]
fn an_unwritable_store_refuses_a_rollback() {
    let store = Store::demo();
    let _frozen = Immutable::new(store.cluster_dir("demo"));
    let refused = store.refused(&["rollback", "demo", "-R", "dm-worker", "--yes"]);
    assert!(refused.starts_with("error: cannot write"), "{refused}");
}

/// TiUP's scale-out lock (`.scale-out.yaml`, left by `scale-out --stage1`) refuses an online
/// patch and rollback, a dry run included, naming the file and --offline; --offline goes on.
#[test]
fn tiups_scale_out_lock_refuses_an_online_change() {
    let store = Store::demo();
    let pkg = store.good_package("dm-worker");
    let lock = store.cluster_dir("demo").join(".scale-out.yaml");
    std::fs::write(&lock, "worker_servers:\n- host: 127.0.9.9\n").unwrap();
    for args in [
        &["patch", "demo", &pkg, "-R", "dm-worker", "--yes"][..],
        &["patch", "demo", &pkg, "-R", "dm-worker", "--dry-run"],
        &["rollback", "demo", "-R", "dm-worker", "--yes"],
    ] {
        let refused = store.refused(args);
        assert!(refused.contains("locked by TiUP's scale-out"), "{args:?}: {refused}");
        assert!(refused.contains(".scale-out.yaml") && refused.contains("--offline"), "{refused}");
    }
    let offline = ["patch", "demo", &pkg, "-R", "dm-worker", "--offline", "--dry-run"];
    store.run(offline).success();
    // For a script: the same refusal as one JSON line on stderr, stdout empty.
    let json = ["patch", "demo", &pkg, "-R", "dm-worker", "--yes", "--format", "json"];
    let run = store.run(json).code(2);
    assert_eq!(run.stdout, "");
    let error: serde_json::Value = serde_json::from_str(run.stderr.trim()).expect(&run.stderr);
    crate::support::conforms("error", &error);
    assert_eq!(error["kind"], "bad-input");
}

/// A cause is said once, not once by the error and again by the chain it belongs to.
#[test]
fn package_is_a_directory() {
    let store = Store::demo();
    let dir = store.home().join("pkg.tar.gz");
    std::fs::create_dir(&dir).unwrap();
    let line = store.refused(&["patch", "demo", dir.to_str().unwrap(), "-R", "dm-worker"]);
    assert_eq!(line.matches("it is a directory").count(), 1, "{line}");
}

/// A cluster whose `global.ssh_type` names an executor TiUP does not have is refused, not
/// reached some other way; `--ssh builtin` says which to use instead.
#[test]
fn a_cluster_set_to_an_unknown_ssh_type() {
    let meta =
        "topology:\n  global:\n    ssh_type: telnet\n  worker_servers:\n  - host: 127.0.9.1\n";
    let store = Store::new().cluster("demo", meta);
    let pkg = store.good_package("dm-worker");
    insta::assert_snapshot!(store.refused(&[
        "patch",
        "demo",
        &pkg,
        "-R",
        "dm-worker",
        "--dry-run"
    ]));
    let builtin = ["patch", "demo", &pkg, "-R", "dm-worker", "--dry-run", "--ssh", "builtin"];
    store.run(builtin).success();
}

#[test]
fn canary_without_soak() {
    let store = Store::demo();
    let pkg = store.good_package("dm-worker");
    let refused = store.refused(&["patch", "demo", &pkg, "-R", "dm-worker", "--canary", "1"]);
    assert!(refused.contains("--soak"), "{refused}");
}

#[test]
fn soak_with_offline() {
    let store = Store::demo();
    let pkg = store.good_package("dm-worker");
    let args = ["patch", "demo", &pkg, "-R", "dm-worker", "--offline", "--soak", "5m"];
    let refused = store.refused(&args);
    assert!(refused.contains("--offline"), "{refused}");
}

#[test]
fn soak_that_is_not_a_duration() {
    let store = Store::demo();
    let pkg = store.good_package("dm-worker");
    let refused = store.refused(&["patch", "demo", &pkg, "-R", "dm-worker", "--soak", "soon"]);
    assert!(refused.contains("--soak"), "{refused}");
}

/// clap says which argument is missing; the one line keeps it.
#[test]
fn patch_without_a_package_names_it() {
    let store = Store::demo();
    let refused = store.refused(&["patch", "demo"]);
    assert!(refused.contains("not provided: <PACKAGE>"), "{refused}");
}

/// A store on a full file system: refused before any host is contacted (a write of what the
/// run will write is tried, not only the right to write), with nothing changed.
#[test]
fn a_store_on_a_full_file_system() {
    let demo = Store::demo();
    let pkg = demo.good_package("dm-worker");
    let small = crate::support::SmallFileSystem::mount("512k");
    let copy = std::process::Command::new("cp")
        .arg("-a")
        .arg(demo.home().join("storage"))
        .arg(small.path())
        .status();
    assert!(copy.unwrap().success());
    let meta = small.path().join("storage/dm/clusters/demo/meta.yaml");
    let before = std::fs::read_to_string(&meta).unwrap();
    small.fill();

    let run = crate::support::Run::of(crate::support::dm_patch(small.path()).args([
        "patch",
        "demo",
        &pkg,
        "-R",
        "dm-worker",
        "--yes",
    ]));

    let run = run.code(2);
    assert!(run.stderr.contains("No space left on device"), "{}", run.stderr);
    assert_eq!(std::fs::read_to_string(&meta).unwrap(), before);
}

/// An empty `--ssh-proxy-host` is no jump host, as TiUP reads it.
#[test]
fn an_empty_jump_host_is_none() {
    let store = Store::demo();
    let pkg = store.good_package("dm-worker");
    let args = ["patch", "demo", &pkg, "-R", "dm-worker", "--dry-run", "--ssh-proxy-host", ""];
    let run = store.run(args).success();
    assert!(run.stdout.contains("Dry run"), "{}", run.stdout);
}

/// `rollback` while another run holds the cluster's lock says so, before surveying anything.
#[test]
fn rollback_of_a_locked_cluster() {
    use dm_patch::topology::store::Store as TiupStore;
    let store = Store::demo();
    let tiup = TiupStore::locate(Some(store.home().to_owned())).unwrap();
    let _held = tiup.lock("demo").unwrap();
    let refused = store.refused(&["rollback", "demo", "-R", "dm-worker", "--yes"]);
    assert!(refused.contains("is locked by another dm-patch run"), "{refused}");
}

/// `--expect-sha256`: a package whose sha256 differs is refused, both sums shown; the one
/// that matches goes on, and its plan says it was checked.
#[test]
fn a_package_that_is_not_the_one_vouched_for_is_refused() {
    let store = Store::demo();
    let pkg = store.good_package("dm-worker");
    let digest = Sha256::digest(std::fs::read(&pkg).unwrap());
    let actual: String = digest.iter().map(|byte| format!("{byte:02x}")).collect();
    let other = "0".repeat(64);
    let refused = store.refused(&[
        "patch",
        "demo",
        &pkg,
        "-R",
        "dm-worker",
        "--yes",
        "--expect-sha256",
        &other,
    ]);
    assert!(refused.contains(&actual) && refused.contains(&other), "{refused}");
    assert!(refused.contains("--expect-sha256"), "{refused}");
    let bad = store.refused(&["patch", "demo", &pkg, "--expect-sha256", "abc"]);
    assert!(bad.contains("64 hex digits"), "{bad}");

    let upper = actual.to_uppercase();
    let args = ["patch", "demo", &pkg, "-R", "dm-worker", "--dry-run", "--expect-sha256", &upper];
    let plan = store.run(args.iter().chain(&["--format", "json"])).success().json();
    assert_eq!(plan["package"]["sha256_checked"], true, "{plan}");
}
