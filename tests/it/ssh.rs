//! The SSH layer against real OpenSSH servers (dm-sandbox hosts on loopback addresses).

use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use dm_patch::ssh::{HostKeyPolicy, HostSession, Privilege, SshError, SshTarget, shell_quote};
use dm_sandbox::{SSH_PORT, Sandbox};
use sha2::{Digest, Sha256};

fn hosts(count: usize) -> Sandbox {
    Sandbox::builder()
        .hosts(count)
        .masters(0)
        .workers(0)
        .start()
        .expect("sandbox hosts start")
}

fn known_hosts(sb: &Sandbox) -> PathBuf {
    sb.ssh_key().with_file_name("known_hosts")
}

fn target(sb: &Sandbox, ip: &str) -> SshTarget {
    SshTarget {
        addr: ip.to_owned(),
        port: SSH_PORT,
        user: sb.ssh_user().to_owned(),
        key_path: sb.ssh_key().to_owned(),
        known_hosts: known_hosts(sb),
        host_key_policy: HostKeyPolicy::AcceptNew,
        connect_timeout: Duration::from_secs(10),
        privilege: if sb.ssh_user() == "root" {
            Privilege::Root
        } else {
            Privilege::Sudo
        },
    }
}

async fn connect(sb: &Sandbox) -> HostSession {
    HostSession::connect(&target(sb, &sb.hosts()[0]))
        .await
        .expect("connect")
}

/// The host's own public host key, as a known_hosts key field (`type base64`).
fn host_public_key(sb: &Sandbox, ip: &str) -> String {
    let path = sb.host_dir(ip).join("sshd/ssh_host_ed25519_key.pub");
    let text = std::fs::read_to_string(path).unwrap();
    text.split_whitespace()
        .take(2)
        .collect::<Vec<_>>()
        .join(" ")
}

const NASTY: &[&str] = &[
    "",
    "plain",
    "two  spaces",
    "it's",
    "\"double\"",
    "$(touch /tmp/dm-patch-quote-escaped)",
    "`id`",
    "$HOME ${PATH}",
    "line\nbreak\n",
    "tab\tand\\backslash",
    "; rm -rf / #",
    "*?[glob]",
    "~root",
    "ünïcödé 名前",
    "'",
    "-n",
];

#[tokio::test]
async fn exec_separates_stdout_and_stderr_and_reports_the_exit_status() {
    let sb = hosts(1);
    let session = connect(&sb).await;

    let output = session
        .exec("echo out; echo err >&2; printf 'no newline'; exit 3")
        .await
        .unwrap();
    assert_eq!(output.stdout, "out\nno newline");
    assert_eq!(output.stderr, "err\n");
    assert_eq!(output.exit_status, 3);

    assert_eq!(session.run("echo ok").await.unwrap(), "ok\n");
    let err = session
        .run("echo partial; echo 'cannot frobnicate' >&2; exit 7")
        .await
        .unwrap_err();
    assert!(matches!(
        err,
        SshError::CommandFailed { exit_status: 7, .. }
    ));
    let message = err.to_string();
    assert!(
        message.contains(&format!("{}:{SSH_PORT}", sb.hosts()[0])),
        "{message}"
    );
    assert!(
        message.contains("exited with status 7: cannot frobnicate"),
        "{message}"
    );
    assert!(message.contains("`echo partial;"), "{message}");
    session.close().await;
}

#[tokio::test]
async fn a_command_that_dies_without_an_exit_status_is_an_error() {
    let sb = hosts(1);
    let session = connect(&sb).await;
    let err = session.exec("kill -KILL $$").await.unwrap_err();
    match &err {
        SshError::NoExitStatus { signal, .. } => assert_eq!(signal.as_deref(), Some("KILL")),
        other => panic!("expected NoExitStatus, got {other:?}"),
    }
    assert!(err.to_string().contains("killed by signal KILL"), "{err}");
}

#[tokio::test]
async fn quoted_words_reach_the_remote_program_byte_for_byte() {
    let sb = hosts(1);
    let session = connect(&sb).await;
    for word in NASTY {
        // Straight through the login shell...
        let direct = format!("printf %s {}", shell_quote(word));
        assert_eq!(session.run(&direct).await.unwrap(), *word, "{direct}");
        // ...and once more through `bash -c`, as sudo runs commands.
        let nested = format!("bash -c {}", shell_quote(&direct));
        assert_eq!(session.run(&nested).await.unwrap(), *word, "{nested}");
    }
    let escaped = session
        .exec("test -e /tmp/dm-patch-quote-escaped")
        .await
        .unwrap();
    assert_ne!(escaped.exit_status, 0, "a quoted $(...) was executed");
}

#[tokio::test]
async fn many_tasks_share_one_connection() {
    let sb = hosts(1);
    let session = connect(&sb).await;
    let mut tasks = tokio::task::JoinSet::new();
    for i in 0..24 {
        let session = session.clone();
        // SSH_CONNECTION names the client port: one connection means one port for all.
        tasks.spawn(async move {
            let out = session
                .run(&format!("sleep 0.0{}; echo $SSH_CONNECTION", i % 5))
                .await
                .unwrap();
            out.split_whitespace().nth(1).unwrap().to_owned()
        });
    }
    let ports: std::collections::BTreeSet<String> = tasks.join_all().await.into_iter().collect();
    assert_eq!(ports.len(), 1, "{ports:?}");
}

#[tokio::test]
async fn sudo_runs_commands_as_root_with_quoting_intact() {
    let sb = Sandbox::builder()
        .hosts(1)
        .masters(0)
        .workers(0)
        .ssh_user("tidb")
        .start()
        .expect("sandbox with a sudo user");
    let ip = sb.hosts()[0].clone();
    let session = connect(&sb).await;
    assert_eq!(session.privilege(), Privilege::Sudo);
    assert_eq!(session.run("id -un").await.unwrap(), "root\n");
    for word in NASTY {
        let command = format!("printf %s {}", shell_quote(word));
        assert_eq!(session.run(&command).await.unwrap(), *word, "{command}");
    }

    let as_user = HostSession::connect(&SshTarget {
        privilege: Privilege::SystemdUser,
        ..target(&sb, &ip)
    })
    .await
    .unwrap();
    assert_eq!(as_user.run("id -un").await.unwrap(), "tidb\n");

    // Uploads run as the SSH user, into a directory it owns, whatever the privilege.
    let home = as_user.run("printf %s \"$HOME\"").await.unwrap();
    let local = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(local.path(), b"staged by the deploy user").unwrap();
    let remote = format!("{home}/staged.bin");
    session.upload(local.path(), &remote, |_| {}).await.unwrap();
    let owner = session
        .run(&format!("stat -c %U {}", shell_quote(&remote)))
        .await
        .unwrap();
    assert_eq!(owner, "tidb\n");
}

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
    hasher
        .finalize()
        .iter()
        .map(|byte| format!("{byte:02x}"))
        .collect()
}

/// Peak resident memory of this process since the last [`reset_peak_rss`], in bytes.
fn peak_rss() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    let line = status.lines().find(|l| l.starts_with("VmHWM:")).unwrap();
    let kib: u64 = line.split_whitespace().nth(1).unwrap().parse().unwrap();
    kib * 1024
}

fn reset_peak_rss() {
    // "5" resets the peak RSS counter (Linux 4.0+).
    std::fs::write("/proc/self/clear_refs", "5").unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_large_upload_streams_in_bounded_memory_and_lands_whole() {
    const SIZE: u64 = 256 * 1024 * 1024;
    let sb = hosts(1);
    let session = connect(&sb).await;
    let dir = tempfile::tempdir().unwrap();
    let local = dir.path().join("big.bin");
    let expected = write_patterned_file(&local, SIZE);
    let remote = sb.root().join("uploaded big.bin").display().to_string();
    // An older file is replaced in one step.
    session
        .run(&format!("echo old > {}", shell_quote(&remote)))
        .await
        .unwrap();

    reset_peak_rss();
    let reports = Mutex::new(Vec::new());
    session
        .upload(&local, &remote, |sent| reports.lock().unwrap().push(sent))
        .await
        .unwrap();
    let peak = peak_rss();

    assert_eq!(session.sha256(&remote).await.unwrap(), expected);
    let reports = reports.into_inner().unwrap();
    assert!(
        reports.windows(2).all(|w| w[0] <= w[1]),
        "progress went backwards"
    );
    assert_eq!(reports.last(), Some(&SIZE));
    let part = session
        .exec(&format!(
            "test -e {}",
            shell_quote(&format!("{remote}.part"))
        ))
        .await
        .unwrap();
    assert_ne!(part.exit_status, 0, "the .part file was left behind");
    assert!(
        peak < 96 * 1024 * 1024,
        "peak RSS {} MiB while uploading {} MiB",
        peak >> 20,
        SIZE >> 20
    );
}

#[tokio::test]
async fn a_failed_upload_leaves_no_part_file_and_says_why() {
    let sb = hosts(1);
    let session = connect(&sb).await;
    let local = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(local.path(), b"payload").unwrap();

    // The destination is a directory: the write succeeds, the rename cannot.
    let remote = sb.root().join("occupied").display().to_string();
    session
        .run(&format!("mkdir -p {}/inside", shell_quote(&remote)))
        .await
        .unwrap();
    let err = session
        .upload(local.path(), &remote, |_| {})
        .await
        .unwrap_err();
    assert!(matches!(err, SshError::Upload { .. }), "{err:?}");
    assert!(err.to_string().contains(&remote), "{err}");
    let leftovers = session
        .exec(&format!("test -e {}.part", shell_quote(&remote)))
        .await
        .unwrap();
    assert_ne!(leftovers.exit_status, 0, "the .part file was left behind");

    let missing_dir = session
        .upload(local.path(), "/nonexistent-dir/x", |_| {})
        .await
        .unwrap_err();
    assert!(
        missing_dir.to_string().contains("/nonexistent-dir/x.part"),
        "{missing_dir}"
    );

    let no_local = session
        .upload(Path::new("/nonexistent/package.tar.gz"), "/tmp/x", |_| {})
        .await
        .unwrap_err();
    assert!(
        matches!(no_local, SshError::LocalFile { .. }),
        "{no_local:?}"
    );
}

#[tokio::test]
async fn strict_refuses_an_unknown_host() {
    let sb = hosts(1);
    let ip = &sb.hosts()[0];
    let strict = SshTarget {
        host_key_policy: HostKeyPolicy::Strict,
        ..target(&sb, ip)
    };
    let err = HostSession::connect(&strict).await.err().unwrap();
    assert!(matches!(err, SshError::HostKeyUnknown { .. }), "{err:?}");
    let message = err.to_string();
    assert!(message.contains(&format!("{ip}:{SSH_PORT}")) && message.contains("SHA256:"));
    assert!(
        message.contains(&known_hosts(&sb).display().to_string()),
        "{message}"
    );
    assert!(
        !known_hosts(&sb).exists(),
        "strict must not record anything"
    );
}

#[tokio::test]
async fn accept_new_records_keys_that_strict_and_openssh_then_trust() {
    let sb = hosts(2);
    let ips = sb.hosts();
    let mut connections = tokio::task::JoinSet::new();
    for ip in &ips {
        let target = target(&sb, ip);
        connections.spawn(async move { HostSession::connect(&target).await.map(drop) });
    }
    for connected in connections.join_all().await {
        connected.unwrap();
    }

    let recorded = std::fs::read_to_string(known_hosts(&sb)).unwrap();
    assert_eq!(recorded.lines().count(), 2, "{recorded}");
    for ip in &ips {
        let line = format!("[{ip}]:{SSH_PORT} {}", host_public_key(&sb, ip));
        assert!(
            recorded.lines().any(|l| l == line),
            "{line} not in\n{recorded}"
        );
    }

    // Now known: strict connects, and connecting again records nothing more.
    let strict = SshTarget {
        host_key_policy: HostKeyPolicy::Strict,
        ..target(&sb, &ips[0])
    };
    HostSession::connect(&strict).await.unwrap();
    HostSession::connect(&target(&sb, &ips[0])).await.unwrap();
    assert_eq!(std::fs::read_to_string(known_hosts(&sb)).unwrap(), recorded);

    // OpenSSH itself accepts the file as written.
    let openssh = std::process::Command::new("ssh")
        .args(["-i", &sb.ssh_key().display().to_string()])
        .args(["-o", "BatchMode=yes", "-o", "StrictHostKeyChecking=yes"])
        .arg("-o")
        .arg(format!("UserKnownHostsFile={}", known_hosts(&sb).display()))
        .args([
            "-p",
            &SSH_PORT.to_string(),
            &format!("root@{}", ips[1]),
            "true",
        ])
        .output()
        .unwrap();
    assert!(
        openssh.status.success(),
        "{}",
        String::from_utf8_lossy(&openssh.stderr)
    );
}

#[tokio::test]
async fn a_changed_host_key_is_refused_naming_the_line_to_remove() {
    let sb = hosts(2);
    let (ip, impostor) = (&sb.hosts()[0], &sb.hosts()[1]);
    // known_hosts says the first host has the second host's key.
    std::fs::write(
        known_hosts(&sb),
        format!(
            "# recorded earlier\n[{ip}]:{SSH_PORT} {}\n",
            host_public_key(&sb, impostor)
        ),
    )
    .unwrap();
    for policy in [HostKeyPolicy::Strict, HostKeyPolicy::AcceptNew] {
        let target = SshTarget {
            host_key_policy: policy,
            ..target(&sb, ip)
        };
        let err = HostSession::connect(&target).await.err().unwrap();
        assert!(
            matches!(err, SshError::HostKeyChanged { line: 2, .. }),
            "{err:?}"
        );
        let message = err.to_string();
        assert!(
            message.contains(&format!("{ip} port {SSH_PORT}")),
            "{message}"
        );
        assert_eq!(message.matches("SHA256:").count(), 2, "{message}");
        let file = known_hosts(&sb).display().to_string();
        assert!(
            message.contains(&format!("remove line 2 from {file}")),
            "{message}"
        );
    }

    let off = SshTarget {
        host_key_policy: HostKeyPolicy::Off,
        ..target(&sb, ip)
    };
    HostSession::connect(&off).await.unwrap();
}

#[tokio::test]
async fn nothing_listening_fails_fast_and_says_where() {
    let sb = hosts(1);
    let started = Instant::now();
    let err = HostSession::connect(&target(&sb, "127.0.9.1"))
        .await
        .err()
        .unwrap();
    assert!(matches!(err, SshError::Connect { .. }), "{err:?}");
    assert!(
        err.to_string()
            .starts_with(&format!("cannot connect to 127.0.9.1:{SSH_PORT}")),
        "{err}"
    );
    assert!(started.elapsed() < Duration::from_secs(2));
}

#[tokio::test]
async fn a_server_that_never_answers_times_out() {
    let sb = hosts(1);
    // Accepts TCP connections and then says nothing, as a hung host would.
    let silent = tokio::net::TcpListener::bind("127.0.9.2:0").await.unwrap();
    let port = silent.local_addr().unwrap().port();
    let holder = tokio::spawn(async move {
        let (_stream, _) = silent.accept().await.unwrap();
        std::future::pending::<()>().await;
    });
    let target = SshTarget {
        port,
        connect_timeout: Duration::from_millis(300),
        ..target(&sb, "127.0.9.2")
    };
    let started = Instant::now();
    let err = HostSession::connect(&target).await.err().unwrap();
    assert!(matches!(err, SshError::Timeout { .. }), "{err:?}");
    assert_eq!(
        err.to_string(),
        format!("127.0.9.2:{port} did not complete the SSH handshake and login within 300ms")
    );
    assert!(started.elapsed() < Duration::from_secs(2));
    holder.abort();
}

#[tokio::test]
async fn a_wrong_or_unreadable_key_is_reported_with_user_and_path() {
    let sb = hosts(1);
    let ip = &sb.hosts()[0];
    let dir = tempfile::tempdir().unwrap();
    let wrong = dir.path().join("id_wrong");
    let keygen = std::process::Command::new("ssh-keygen")
        .args(["-q", "-t", "rsa", "-b", "2048", "-N", "", "-f"])
        .arg(&wrong)
        .status()
        .unwrap();
    assert!(keygen.success());

    let err = HostSession::connect(&SshTarget {
        key_path: wrong.clone(),
        ..target(&sb, ip)
    })
    .await
    .err()
    .unwrap();
    assert!(matches!(err, SshError::AuthRejected { .. }), "{err:?}");
    assert_eq!(
        err.to_string(),
        format!(
            "{ip}:{SSH_PORT} rejected public-key login as user \"root\" with the key {}",
            wrong.display()
        )
    );

    let unreadable = dir.path().join("missing_key");
    let err = HostSession::connect(&SshTarget {
        key_path: unreadable.clone(),
        ..target(&sb, ip)
    })
    .await
    .err()
    .unwrap();
    assert!(matches!(err, SshError::KeyUnreadable { .. }), "{err:?}");
    assert!(
        err.to_string().contains(&unreadable.display().to_string()),
        "{err}"
    );
}
