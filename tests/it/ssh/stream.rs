//! Streaming a command's stdin: what staging sends a package through. Every byte arrives, in
//! bounded memory, and a command that stops reading is answered at once.

use std::ffi::OsStr;
use std::io::Write;
use std::path::Path;
use std::sync::Mutex;
use std::time::Duration;

use dm_patch::ssh::{HostKeyPolicy, HostSession, Privilege, SshTarget, Transport};
use dm_sandbox::{SSH_PORT, Sandbox};
use sha2::{Digest, Sha256};

use super::{connect, hosts};
use crate::support::number_from_child_test;

/// Fills `path` with `size` bytes where every 4 KiB block carries its own index, so a chunk
/// sent twice, lost or out of order changes the hash.
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
/// Tell a memory test's child process where to stream, and as whom.
const CHILD_HOST: &str = "DM_PATCH_TEST_STREAM_HOST";
const CHILD_KEY: &str = "DM_PATCH_TEST_STREAM_KEY";
const CHILD_DIR: &str = "DM_PATCH_TEST_STREAM_DIR";
const CHILD_SSH_USER: &str = "DM_PATCH_TEST_STREAM_USER";

/// The environment that tells a child test process how to reach `host` of `sb`.
fn child_env<'a>(sb: &'a Sandbox, host: &'a str) -> [(&'static str, &'a OsStr); 4] {
    [
        (CHILD_HOST, host.as_ref()),
        (CHILD_KEY, sb.ssh_key().as_os_str()),
        (CHILD_DIR, sb.root().as_os_str()),
        (CHILD_SSH_USER, sb.ssh_user().as_ref()),
    ]
}

/// In a child test process: the host its parent said, or `None` when run on its own.
fn target_from_parent() -> Option<SshTarget> {
    let (Ok(ip), Some(key), Some(root), Ok(user)) = (
        std::env::var(CHILD_HOST),
        std::env::var_os(CHILD_KEY),
        std::env::var_os(CHILD_DIR),
        std::env::var(CHILD_SSH_USER),
    ) else {
        return None;
    };
    Some(SshTarget {
        addr: ip,
        port: SSH_PORT,
        privilege: if user == "root" { Privilege::Root } else { Privilege::Sudo },
        user,
        key_path: key.into(),
        known_hosts: Path::new(&root).join("known_hosts"),
        host_key_policy: HostKeyPolicy::AcceptNew,
        connect_timeout: Duration::from_secs(10),
        transport: Transport::Direct,
    })
}

#[tokio::test]
async fn a_large_stream_arrives_whole_in_bounded_memory() {
    let sb = hosts(1);
    let host = sb.hosts()[0].clone();
    let child = "ssh::stream::large_stream_in_this_process";
    let peak = number_from_child_test(child, &child_env(&sb, &host), "peak-rss-bytes");
    // A chunk or two in flight; holding the file would take all of it.
    let (peak_mib, size_mib) = (peak >> 20, LARGE >> 20);
    assert!(peak < LARGE / 8, "peak RSS {peak_mib} MiB streaming {size_mib} MiB");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "run in a child process by a_large_stream_arrives_whole_in_bounded_memory"]
async fn large_stream_in_this_process() {
    let Some(target) = target_from_parent() else {
        return eprintln!("only a_large_stream_arrives_whole_in_bounded_memory runs this");
    };
    let session = HostSession::connect(&target).await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let local = dir.path().join("big.bin");
    let expected = write_patterned_file(&local, LARGE);
    let mut input = tokio::fs::File::open(&local).await.unwrap();
    let reports = Mutex::new(Vec::new());
    let progress = |sent| reports.lock().unwrap().push(sent);
    let output = session.exec_with_input("sha256sum", &mut input, &progress).await.unwrap();
    let peak = memory_status("VmHWM:");
    assert_eq!(output.exit_status, 0, "{output:?}");
    assert_eq!(output.stdout.split_whitespace().next(), Some(expected.as_str()));
    let reports = reports.into_inner().unwrap();
    assert!(reports.is_sorted(), "progress went backwards");
    assert_eq!(reports.last(), Some(&LARGE));
    println!("peak-rss-bytes={peak}");
}

/// Connections a stream went through, and what each streams (8 at a time).
const CONNECTIONS: usize = 32;
const PER_CONNECTION: u64 = 4 * 1024 * 1024;

/// A connection does not keep the memory a stream went through: with one connection per host,
/// what each keeps after its upload is what memory grows by with the number of hosts.
#[tokio::test]
async fn connections_keep_little_memory_after_a_stream() {
    let sb = hosts(1);
    let host = sb.hosts()[0].clone();
    let child = "ssh::stream::streams_over_many_connections_in_this_process";
    let grown = number_from_child_test(child, &child_env(&sb, &host), "grown-bytes");
    // russh's write buffer never shrinks: unpaced, each connection kept about 480 KiB of it
    // (15 MiB here); paced, the whole run grows by about 6 MiB (channels, buffers in flight).
    let per_connection_kib = (grown / CONNECTIONS as u64) >> 10;
    eprintln!("memory grew by {grown} bytes over {CONNECTIONS} connections");
    assert!(
        grown < 10 << 20,
        "memory grew by {} MiB over {CONNECTIONS} connections ({per_connection_kib} KiB each)",
        grown >> 20
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "run in a child process by connections_keep_little_memory_after_a_stream"]
async fn streams_over_many_connections_in_this_process() {
    let Some(target) = target_from_parent() else {
        return eprintln!("only connections_keep_little_memory_after_a_stream runs this");
    };
    let mut sessions = Vec::new();
    for _ in 0..CONNECTIONS {
        sessions.push(HostSession::connect(&target).await.unwrap());
    }
    let dir = tempfile::tempdir().unwrap();
    let local = dir.path().join("input.bin");
    let expected = write_patterned_file(&local, PER_CONNECTION);
    let before = memory_status("VmRSS:");
    for batch in sessions.chunks(8) {
        let streams = batch.iter().map(|session| {
            let local = local.clone();
            async move {
                let mut input = tokio::fs::File::open(&local).await.unwrap();
                session.exec_with_input("sha256sum", &mut input, &|_| {}).await.unwrap()
            }
        });
        for output in futures_util::future::join_all(streams).await {
            assert_eq!(output.stdout.split_whitespace().next(), Some(expected.as_str()));
        }
    }
    let after = memory_status("VmRSS:");
    println!("grown-bytes={}", after.saturating_sub(before));
    drop(sessions);
}

/// A line of /proc/self/status, in bytes.
fn memory_status(field: &str) -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .unwrap()
        .lines()
        .find_map(|line| line.strip_prefix(field))
        .and_then(|kib| kib.trim().trim_end_matches(" kB").parse::<u64>().ok())
        .unwrap()
        * 1024
}

/// A command that fails before reading its input is answered at once: the rest of the input
/// is not sent, and nothing waits for a window that will never open.
#[tokio::test]
async fn a_command_that_stops_reading_is_answered_at_once() {
    let sb = hosts(1);
    let session = connect(&sb).await;
    let dir = tempfile::tempdir().unwrap();
    let local = dir.path().join("input.bin");
    write_patterned_file(&local, 64 * 1024 * 1024);
    let mut input = tokio::fs::File::open(&local).await.unwrap();
    let command = "echo refused >&2; exit 3";
    let run = session.exec_with_input(command, &mut input, &|_| {});
    let output = tokio::time::timeout(Duration::from_secs(20), run).await.expect("no hang");
    let output = output.unwrap();
    assert_eq!((output.exit_status, output.stderr.as_str()), (3, "refused\n"));
}
