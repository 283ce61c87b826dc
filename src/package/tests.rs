//! The package check on packages built in memory.

use super::*;

#[test]
fn reads_elf_machine() {
    let mut head = [0u8; 20];
    head[..4].copy_from_slice(b"\x7fELF");
    head[5] = 1;
    head[18] = 62;
    assert_eq!(elf_machine(&head), Some(ElfMachine::X86_64));
    head[18] = 183;
    assert_eq!(elf_machine(&head), Some(ElfMachine::Aarch64));
    assert_eq!(elf_machine(b"#!/bin/sh\nexec true\n"), None);
}

#[test]
fn normalizes_and_refuses_escapes() {
    assert_eq!(normalize(Path::new("./dm-master/dm-master")).unwrap(), "dm-master/dm-master");
    assert!(normalize(Path::new("/etc/passwd")).is_err());
    assert!(normalize(Path::new("../x")).is_err());
    assert!(normalize(Path::new("a/../b")).is_err());
}

/// A tar stream of `(name, data)` regular files (mode 0755), ended when `end`.
fn tar_of(files: &[(&str, &[u8])], end: bool) -> Vec<u8> {
    let mut tar = tar::Builder::new(Vec::new());
    for (name, data) in files {
        let mut header = tar::Header::new_gnu();
        header.as_old_mut().name[..name.len()].copy_from_slice(name.as_bytes());
        header.set_mode(0o755);
        header.set_size(data.len() as u64);
        header.set_cksum();
        tar.append(&header, *data).unwrap();
    }
    let mut bytes = tar.into_inner().unwrap();
    if !end {
        bytes.truncate(bytes.len() - 1024);
    }
    bytes
}

fn gzip(bytes: &[u8]) -> Vec<u8> {
    use std::io::Write;
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    gz.write_all(bytes).unwrap();
    gz.finish().unwrap()
}

/// Inspects a package file of `bytes` for dm-worker instances on amd64, unpacking at most
/// `limit`.
fn inspect_bytes(bytes: &[u8], limit: u64) -> Result<Package, PackageError> {
    let file = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(file.path(), bytes).unwrap();
    let hosts = [("h".to_owned(), "h:8262".to_owned(), Arch::Amd64)];
    inspect_up_to(file.path(), Role::Worker, &hosts, limit, None)
}

const SCRIPT: &[u8] = b"#!/bin/sh\necho hotfix\n";

#[test]
fn records_what_the_hosts_must_unpack() {
    let tar = tar_of(&[("./dm-worker/dm-worker", SCRIPT), ("dm-worker/README", b"hi")], true);
    let package = inspect_bytes(&gzip(&tar), MAX_UNPACKED).unwrap();
    assert_eq!(package.entry(), "dm-worker/dm-worker");
    assert_eq!(package.entry_in_package, "./dm-worker/dm-worker");
    assert_eq!(package.entry_sha256, hex(&Sha256::digest(SCRIPT)));
    assert_eq!(package.entry_size, SCRIPT.len() as u64);
    assert_eq!(package.unpacked_size, SCRIPT.len() as u64 + 2);
}

#[test]
fn reads_every_gzip_member() {
    let first = gzip(&tar_of(&[("dm-worker/README", b"hi")], false));
    let second = gzip(&tar_of(&[("dm-worker/dm-worker", SCRIPT)], true));
    let package = inspect_bytes(&[first.clone(), second].concat(), MAX_UNPACKED).unwrap();
    assert_eq!(package.entry_sha256, hex(&Sha256::digest(SCRIPT)));

    let again = gzip(&tar_of(&[("dm-worker//dm-worker", SCRIPT)], true));
    let first = gzip(&tar_of(&[("dm-worker/dm-worker", SCRIPT)], false));
    let err = inspect_bytes(&[first, again].concat(), MAX_UNPACKED).unwrap_err();
    assert!(matches!(err, PackageError::Duplicate { .. }), "{err}");
    assert!(err.to_string().contains("(as 'dm-worker/dm-worker' and 'dm-worker//dm-worker')"));
}

#[test]
fn only_zero_padding_may_follow_the_last_member() {
    let good = gzip(&tar_of(&[("dm-worker/dm-worker", SCRIPT)], true));
    assert!(inspect_bytes(&[good.clone(), vec![0; 70_000]].concat(), MAX_UNPACKED).is_ok());
    for tail in [&b"x"[..], b"\0\0\0x", b"\x1f"] {
        let err = inspect_bytes(&[good.clone(), tail.to_vec()].concat(), MAX_UNPACKED);
        let err = err.unwrap_err();
        let expected = if tail == b"\x1f" { "damaged" } else { "has bytes after its gzip data" };
        assert!(err.to_string().contains(expected), "{tail:?}: {err}");
    }
    // After padding, not even another member.
    let padded_member = [good.clone(), vec![0; 8], good].concat();
    let err = inspect_bytes(&padded_member, MAX_UNPACKED).unwrap_err();
    assert!(matches!(err, PackageError::TrailingData(_)), "{err}");
}

#[test]
fn refuses_more_than_the_limit_as_soon_as_it_is_passed() {
    let big = vec![0u8; 100_000];
    let tar = tar_of(&[("dm-worker/dm-worker", SCRIPT), ("dm-worker/big", &big)], true);
    let err = inspect_bytes(&gzip(&tar), 50_000).unwrap_err();
    assert!(matches!(err, PackageError::TooBig { limit: 50_000, .. }), "{err}");
    assert!(inspect_bytes(&gzip(&tar), 200_000).is_ok());

    // Zeros after the tar archive count too: they are unpacked all the same.
    let mut tar = tar_of(&[("dm-worker/dm-worker", SCRIPT)], true);
    tar.extend(vec![0u8; 100_000]);
    let err = inspect_bytes(&gzip(&tar), 50_000).unwrap_err();
    assert!(matches!(err, PackageError::TooBig { .. }), "{err}");
}

#[test]
fn never_quotes_what_it_could_not_read() {
    let text: Vec<u8> = b"not a tar\n".repeat(200);
    let err = inspect_bytes(&gzip(&text), MAX_UNPACKED).unwrap_err();
    assert!(matches!(err, PackageError::NotTar(_)), "{err}");

    let mut tar = tar_of(&[("dm-worker/dm-worker", SCRIPT)], false);
    tar.extend(b"garbage\n".repeat(100));
    let err = inspect_bytes(&gzip(&tar), MAX_UNPACKED).unwrap_err();
    assert!(err.to_string().contains("(its tar data is damaged)"), "{err}");
    assert!(!err.to_string().contains("garbage"), "{err}");
}

#[test]
fn a_regular_entry_named_as_a_directory_is_not_regular() {
    let tar = tar_of(&[("dm-worker/dm-worker/", SCRIPT)], true);
    let err = inspect_bytes(&gzip(&tar), MAX_UNPACKED).unwrap_err();
    assert!(matches!(err, PackageError::NotRegular { .. }), "{err}");
}

#[test]
fn names_in_messages_are_one_short_line() {
    assert_eq!(shown_name("a\nb\tc"), "a\\nb\\tc");
    assert_eq!(shown_name(&"x".repeat(500)).len(), 203);
    assert_eq!(shown_name("ünïcödé"), "ünïcödé");
}

#[test]
fn link_targets_must_stay_inside() {
    assert!(resolves_inside(Path::new("dm-master"), "../common/lib"));
    assert!(resolves_inside(Path::new("dm-master"), "lib"));
    assert!(!resolves_inside(Path::new("dm-master"), "../../etc/passwd"));
    assert!(!resolves_inside(Path::new(""), "/bin/sh"));
}
