//! The SSH layer against real OpenSSH servers (dm-sandbox hosts on loopback addresses):
//! commands and quoting here, then host keys and streamed input.

mod host_keys;
mod stream;

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use dm_patch::ssh::{
    HostKeyPolicy, HostSession, Privilege, SshError, SshTarget, Transport, shell_quote,
};
use dm_sandbox::{SSH_PORT, Sandbox};

pub fn hosts(count: usize) -> Sandbox {
    Sandbox::builder().hosts(count).masters(0).workers(0).start().expect("sandbox hosts start")
}

pub fn known_hosts(sb: &Sandbox) -> PathBuf {
    sb.ssh_key().with_file_name("known_hosts")
}

pub fn target(sb: &Sandbox, ip: &str) -> SshTarget {
    SshTarget {
        addr: ip.to_owned(),
        port: SSH_PORT,
        user: sb.ssh_user().to_owned(),
        key_path: sb.ssh_key().to_owned(),
        known_hosts: known_hosts(sb),
        host_key_policy: HostKeyPolicy::AcceptNew,
        connect_timeout: Duration::from_secs(10),
        privilege: if sb.ssh_user() == "root" { Privilege::Root } else { Privilege::Sudo },
        transport: Transport::Direct,
    }
}

pub fn with_policy(sb: &Sandbox, ip: &str, host_key_policy: HostKeyPolicy) -> SshTarget {
    SshTarget { host_key_policy, ..target(sb, ip) }
}

/// The error of a connection that must fail.
pub async fn refused(target: &SshTarget) -> SshError {
    HostSession::connect(target).await.err().expect("the connection should fail")
}

pub async fn exists(session: &HostSession, path: &str) -> bool {
    let test = session.exec(&format!("test -e {}", shell_quote(path))).await;
    test.unwrap().exit_status == 0
}

pub async fn connect(sb: &Sandbox) -> HostSession {
    HostSession::connect(&target(sb, &sb.hosts()[0])).await.expect("connect")
}

/// The host's own public host key, as a known_hosts key field (`type base64`).
pub fn host_public_key(sb: &Sandbox, ip: &str) -> String {
    let path = sb.host_dir(ip).join("sshd/ssh_host_ed25519_key.pub");
    let text = std::fs::read_to_string(path).unwrap();
    text.split_whitespace().take(2).collect::<Vec<_>>().join(" ")
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

    let output = session.exec("echo out; echo err >&2; printf 'no newline'; exit 3").await.unwrap();
    assert_eq!(output.stdout, "out\nno newline");
    assert_eq!(output.stderr, "err\n");
    assert_eq!(output.exit_status, 3);

    assert_eq!(session.run("echo ok").await.unwrap(), "ok\n");
    let err = session.run("echo partial; echo 'cannot frobnicate' >&2; exit 7").await.unwrap_err();
    assert!(matches!(err, SshError::CommandFailed { exit_status: 7, .. }));
    let message = err.to_string();
    assert!(message.contains(&format!("{}:{SSH_PORT}", sb.hosts()[0])), "{message}");
    assert!(message.contains("exited with status 7: cannot frobnicate"), "{message}");
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

/// A connection lost between commands (every session of the host's sshd killed, as an sshd
/// restart would) is made again by the next command, which runs. A command that was running
/// when it broke is an error, and is not run again.
#[tokio::test]
async fn a_connection_lost_between_commands_is_made_again() {
    let sb = hosts(1);
    let ip = sb.hosts()[0].clone();
    let session = connect(&sb).await;
    let client_port = |ssh_connection: String| ssh_connection.split(' ').nth(1).unwrap().to_owned();
    let before = client_port(session.run("echo $SSH_CONNECTION").await.unwrap());

    let runs = sb.root().join("runs");
    let command = format!("echo run >> {}; sleep 30", shell_quote(&runs.display().to_string()));
    let running = tokio::spawn({
        let session = session.clone();
        async move { session.exec(&command).await }
    });
    let started = Instant::now();
    while !runs.exists() {
        assert!(started.elapsed() < Duration::from_secs(10), "the command never started");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    sb.drop_ssh_connections(&ip);
    let broken = running.await.unwrap();
    assert!(broken.is_err(), "{broken:?}");

    let after = client_port(session.run("echo $SSH_CONNECTION").await.unwrap());
    assert_ne!(before, after, "a new connection");
    assert_eq!(std::fs::read_to_string(&runs).unwrap(), "run\n", "the broken command ran once");
    // And it stays usable: many commands at once share the new connection.
    let ports =
        futures_util::future::join_all((0..4).map(|_| session.run("echo $SSH_CONNECTION"))).await;
    for port in ports {
        assert_eq!(client_port(port.unwrap()), after);
    }
    session.close().await;
}

/// Through a jump host, a lost jump connection takes every connection it carries with it: the
/// next command makes the jump host's connection again, then its own through it.
#[tokio::test]
async fn a_lost_jump_host_connection_is_made_again_with_the_hosts_behind_it() {
    let sb = hosts(1);
    let jump_host = dm_sandbox::JumpHost::start(&sb).expect("the jump host starts");
    let jump = HostSession::connect(&SshTarget {
        addr: jump_host.ip().to_owned(),
        user: "root".to_owned(),
        key_path: jump_host.key().to_owned(),
        privilege: Privilege::Root,
        ..target(&sb, jump_host.ip())
    })
    .await
    .expect("the jump host lets us in");
    let behind =
        SshTarget { transport: Transport::Jump(jump.clone()), ..target(&sb, &sb.hosts()[0]) };
    let session = HostSession::connect(&behind).await.expect("the host behind it lets us in");
    assert_eq!(session.run("echo before").await.unwrap(), "before\n");

    jump_host.drop_ssh_connections();

    assert_eq!(session.run("echo after").await.unwrap(), "after\n");
    assert_eq!(jump_host.logins(), 2, "the jump host was logged in to again");
    session.close().await;
    jump.close().await;
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
    let escaped = exists(&session, "/tmp/dm-patch-quote-escaped").await;
    assert!(!escaped, "a quoted $(...) was executed");
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
            let out =
                session.run(&format!("sleep 0.0{}; echo $SSH_CONNECTION", i % 5)).await.unwrap();
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

    let as_user =
        HostSession::connect(&SshTarget { privilege: Privilege::SystemdUser, ..target(&sb, &ip) })
            .await
            .unwrap();
    assert_eq!(as_user.run("id -un").await.unwrap(), "tidb\n");

    // Streamed input reaches a command run through sudo, as a package reaches `tar`.
    let remote = sb.root().join("streamed by sudo").display().to_string();
    let write = format!("cat > {}", shell_quote(&remote));
    let mut input: &[u8] = b"staged through sudo";
    let output = session.exec_with_input(&write, &mut input, &|_| {}).await.unwrap();
    assert_eq!(output.exit_status, 0, "{output:?}");
    let look = format!("stat -c %U {0} && cat {0}", shell_quote(&remote));
    assert_eq!(session.run(&look).await.unwrap(), "root\nstaged through sudo");
}

/// A fresh RSA key that no host accepts.
fn throwaway_key(dir: &Path) -> PathBuf {
    let key = dir.join("id_throwaway");
    let keygen = std::process::Command::new("ssh-keygen")
        .args(["-q", "-t", "rsa", "-b", "2048", "-N", "", "-f"])
        .arg(&key)
        .status()
        .unwrap();
    assert!(keygen.success());
    key
}

#[tokio::test]
async fn unreachable_hosts_fail_fast_and_say_where() {
    let dir = tempfile::tempdir().unwrap();
    let key = throwaway_key(dir.path());
    let nowhere = |addr: &str, port: u16| SshTarget {
        addr: addr.to_owned(),
        port,
        user: "root".to_owned(),
        key_path: key.clone(),
        known_hosts: dir.path().join("known_hosts"),
        host_key_policy: HostKeyPolicy::AcceptNew,
        connect_timeout: Duration::from_millis(300),
        privilege: Privilege::Root,
        transport: Transport::Direct,
    };

    // Nothing listens there: refused at once.
    let err = refused(&nowhere("127.0.9.1", SSH_PORT)).await;
    assert!(matches!(err, SshError::Connect { .. }), "{err:?}");
    let expected = format!("cannot connect to 127.0.9.1:{SSH_PORT}: Connection refused");
    assert!(err.to_string().starts_with(&expected), "{err}");

    // Something accepts the connection and then says nothing, as a hung host would.
    let silent = tokio::net::TcpListener::bind("127.0.9.2:0").await.unwrap();
    let port = silent.local_addr().unwrap().port();
    let holder = tokio::spawn(async move {
        let (_stream, _) = silent.accept().await.unwrap();
        std::future::pending::<()>().await;
    });
    let started = Instant::now();
    let err = refused(&nowhere("127.0.9.2", port)).await;
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
    let wrong = throwaway_key(dir.path());

    let wrong_key = SshTarget { key_path: wrong.clone(), ..target(&sb, ip) };
    let err = refused(&wrong_key).await;
    assert!(matches!(err, SshError::AuthRejected { .. }), "{err:?}");
    assert_eq!(
        err.to_string(),
        format!(
            "{ip}:{SSH_PORT} rejected public-key login as user \"root\" with the key {}",
            wrong.display()
        )
    );

    let unreadable = dir.path().join("missing_key");
    let no_key = SshTarget { key_path: unreadable.clone(), ..target(&sb, ip) };
    let err = refused(&no_key).await;
    assert!(matches!(err, SshError::KeyUnreadable { .. }), "{err:?}");
    assert!(err.to_string().contains(&unreadable.display().to_string()), "{err}");
}

/// Output saved to a file that cannot take it (a full disk: /dev/full) is an error, with every
/// way to reach a host: dm-patch's own client, the system's ssh, and this machine.
#[tokio::test]
async fn output_that_cannot_be_saved_is_an_error_with_every_client() {
    let sb = hosts(1);
    let ip = sb.hosts()[0].clone();
    let openssh = dm_patch::ssh::OpenSsh::new(None, Duration::from_secs(30)).unwrap();
    let transports =
        [Transport::Direct, Transport::System(std::sync::Arc::new(openssh)), Transport::Local];
    for transport in transports {
        let name = format!("{transport:?}");
        let session = HostSession::connect(&SshTarget { transport, ..target(&sb, &ip) }).await;
        let session = session.unwrap_or_else(|err| panic!("{name}: {err}"));
        let mut full = std::fs::OpenOptions::new().write(true).open("/dev/full").unwrap();
        let saved = session.exec_to_file("head -c 1048576 /dev/zero", &mut full);
        let saved = tokio::time::timeout(Duration::from_secs(60), saved).await;
        let saved = saved.unwrap_or_else(|_| panic!("{name}: hung on output it could not save"));
        let err = saved.expect_err("output lost to a full disk is not a success");
        assert!(err.to_string().contains("saving the output of"), "{name}: {err}");
        session.close().await;
    }
}
