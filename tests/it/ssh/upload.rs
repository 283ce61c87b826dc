//! Uploads: whole files or nothing at the destination, in bounded memory.

use std::collections::BTreeSet;
use std::io::Write;
use std::path::Path;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use dm_patch::ssh::{HostKeyPolicy, HostSession, Privilege, SshError, SshTarget, shell_quote};
use dm_sandbox::SSH_PORT;
use sha2::{Digest, Sha256};

use super::{connect, exists, hosts};

/// Fills `path` with `size` bytes where every 4 KiB block carries its own index, so a write
/// landing at the wrong offset changes the hash.
fn write_patterned_file(path: &Path, size: u64) -> String {
    let mut file = std::io::BufWriter::new(std::fs::File::create(path).unwrap());
    let mut hasher = Sha256::new();
    let mut block = [0u8; 4096];
    for index in 0..size / 4096 {
        for (i, word) in block.chunks_exact_mut(8).enumerate() {
            word.copy_from_slice(&(index * 512 + i as u64).to_le_bytes());
        }
        file.write_all(&block).unwrap();
        hasher.update(block);
    }
    file.flush().unwrap();
    hasher.finalize().iter().map(|byte| format!("{byte:02x}")).collect()
}

const LARGE: u64 = 256 * 1024 * 1024;
/// Tell the child process of the large-upload test where to upload, and with which key.
const CHILD_HOST: &str = "DM_PATCH_TEST_UPLOAD_HOST";
const CHILD_KEY: &str = "DM_PATCH_TEST_UPLOAD_KEY";
const CHILD_DIR: &str = "DM_PATCH_TEST_UPLOAD_DIR";

#[tokio::test]
async fn a_large_upload_streams_in_bounded_memory_and_lands_whole() {
    let sb = hosts(1);
    // The upload runs in a process of its own, so its peak memory is not mixed with that of
    // the tests running beside it in this one.
    let child = std::process::Command::new(std::env::current_exe().unwrap())
        .args(["--ignored", "--exact", "ssh::upload::large_upload_in_this_process"])
        .args(["--nocapture", "--test-threads=1"])
        .env(CHILD_HOST, &sb.hosts()[0])
        .env(CHILD_KEY, sb.ssh_key())
        .env(CHILD_DIR, sb.root())
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&child.stdout);
    let stderr = String::from_utf8_lossy(&child.stderr);
    assert!(child.status.success(), "{stdout}\n{stderr}");
    let peak: u64 = stdout
        .lines()
        .find_map(|line| line.split("peak-rss-bytes=").nth(1))
        .unwrap_or_else(|| panic!("the child ran no upload:\n{stdout}\n{stderr}"))
        .parse()
        .unwrap();
    // A few MiB of writes in flight; holding the file would take all of it.
    let (peak_mib, size_mib) = (peak >> 20, LARGE >> 20);
    assert!(peak < LARGE / 4, "peak RSS {peak_mib} MiB uploading {size_mib} MiB");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "run in a child process by a_large_upload_streams_in_bounded_memory_and_lands_whole"]
async fn large_upload_in_this_process() {
    let (Ok(ip), Some(key), Some(root)) =
        (std::env::var(CHILD_HOST), std::env::var_os(CHILD_KEY), std::env::var_os(CHILD_DIR))
    else {
        return eprintln!(
            "only a_large_upload_streams_in_bounded_memory_and_lands_whole runs this"
        );
    };
    let root = Path::new(&root);
    let session = HostSession::connect(&SshTarget {
        addr: ip,
        port: SSH_PORT,
        user: "root".to_owned(),
        key_path: key.into(),
        known_hosts: root.join("known_hosts"),
        host_key_policy: HostKeyPolicy::AcceptNew,
        connect_timeout: Duration::from_secs(10),
        privilege: Privilege::Root,
    })
    .await
    .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let local = dir.path().join("big.bin");
    let expected = write_patterned_file(&local, LARGE);
    let remote = root.join("uploaded big.bin").display().to_string();
    let old = format!("echo old > {}", shell_quote(&remote));
    session.run(&old).await.unwrap();

    // Meanwhile a reader keeps looking at the destination, over the same connection.
    let uploading = AtomicBool::new(true);
    let watch = async {
        let look = format!("stat -c %s {}", shell_quote(&remote));
        let mut sizes = BTreeSet::new();
        while uploading.load(Ordering::Relaxed) {
            sizes.insert(session.run(&look).await.unwrap().trim().to_owned());
        }
        sizes
    };
    let reports = Mutex::new(Vec::new());
    let upload = async {
        let progress = |sent| reports.lock().unwrap().push(sent);
        let result = session.upload(&local, &remote, progress).await;
        uploading.store(false, Ordering::Relaxed);
        result
    };
    let (uploaded, seen) = tokio::join!(upload, watch);
    uploaded.unwrap();
    let peak = std::fs::read_to_string("/proc/self/status")
        .unwrap()
        .lines()
        .find_map(|line| line.strip_prefix("VmHWM:"))
        .and_then(|kib| kib.trim().trim_end_matches(" kB").parse::<u64>().ok())
        .unwrap();

    // The old file until the new one is whole, nothing in between.
    assert!(seen.contains("4"), "the reader never looked during the upload");
    let whole = LARGE.to_string();
    assert!(seen.iter().all(|size| size == "4" || *size == whole), "{seen:?}");
    assert_eq!(session.sha256(&remote).await.unwrap(), expected);
    let reports = reports.into_inner().unwrap();
    assert!(reports.is_sorted(), "progress went backwards");
    assert_eq!(reports.last(), Some(&LARGE));
    let part = format!("{remote}.part");
    assert!(!exists(&session, &part).await, "the .part file was left");
    println!("peak-rss-bytes={}", peak * 1024);
}

#[tokio::test]
async fn a_failed_upload_leaves_no_part_file_and_says_why() {
    let sb = hosts(1);
    let session = connect(&sb).await;
    let local = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(local.path(), b"payload").unwrap();

    // The destination is a directory: the write succeeds, the rename cannot.
    let remote = sb.root().join("occupied").display().to_string();
    session.run(&format!("mkdir -p {}/inside", shell_quote(&remote))).await.unwrap();
    let err = session.upload(local.path(), &remote, |_| {}).await.unwrap_err();
    assert!(matches!(err, SshError::Upload { .. }), "{err:?}");
    assert!(err.to_string().contains(&remote), "{err}");
    assert!(!exists(&session, &format!("{remote}.part")).await, "a .part file was left");

    let missing_dir = session.upload(local.path(), "/nonexistent-dir/x", |_| {}).await.unwrap_err();
    assert!(missing_dir.to_string().contains("/nonexistent-dir/x.part"), "{missing_dir}");

    let no_local = session
        .upload(Path::new("/nonexistent/package.tar.gz"), "/tmp/x", |_| {})
        .await
        .unwrap_err();
    assert!(matches!(no_local, SshError::LocalFile { .. }), "{no_local:?}");
}
