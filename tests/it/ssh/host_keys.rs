//! Host keys checked against the cluster's known_hosts, by policy.

use dm_patch::ssh::{HostKeyPolicy, HostSession, SshError};
use dm_sandbox::SSH_PORT;

use super::{host_public_key, hosts, known_hosts, refused, target, with_policy};

#[tokio::test]
async fn unknown_hosts_are_refused_by_strict_and_recorded_by_accept_new() {
    let sb = hosts(2);
    let ips = sb.hosts();
    let err = refused(&with_policy(&sb, &ips[0], HostKeyPolicy::Strict)).await;
    assert!(matches!(err, SshError::HostKeyUnknown { .. }), "{err:?}");
    let message = err.to_string();
    let file = known_hosts(&sb).display().to_string();
    assert!(message.contains(&format!("{}:{SSH_PORT} (SHA256:", ips[0])), "{message}");
    assert!(message.contains(&file), "{message}");
    assert!(!known_hosts(&sb).exists(), "strict recorded a key");

    // accept-new, both hosts at once: the parallel appends must both land whole.
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
        assert!(recorded.lines().any(|l| l == line), "{line} not in\n{recorded}");
    }

    // Now known: strict connects, and connecting again records nothing more.
    let strict = with_policy(&sb, &ips[0], HostKeyPolicy::Strict);
    HostSession::connect(&strict).await.unwrap();
    HostSession::connect(&target(&sb, &ips[0])).await.unwrap();
    assert_eq!(std::fs::read_to_string(known_hosts(&sb)).unwrap(), recorded);

    // OpenSSH itself accepts the file as written.
    let openssh = std::process::Command::new("ssh")
        .args(["-i", &sb.ssh_key().display().to_string()])
        .args(["-o", "BatchMode=yes", "-o", "StrictHostKeyChecking=yes"])
        .arg("-o")
        .arg(format!("UserKnownHostsFile={}", known_hosts(&sb).display()))
        .args(["-p", &SSH_PORT.to_string(), &format!("root@{}", ips[1]), "true"])
        .output()
        .unwrap();
    assert!(openssh.status.success(), "{}", String::from_utf8_lossy(&openssh.stderr));
}

#[tokio::test]
async fn a_changed_host_key_is_refused_naming_the_line_to_remove() {
    let sb = hosts(2);
    let (ip, impostor) = (&sb.hosts()[0], &sb.hosts()[1]);
    // known_hosts says the first host has the second host's key.
    std::fs::write(
        known_hosts(&sb),
        format!("# recorded earlier\n[{ip}]:{SSH_PORT} {}\n", host_public_key(&sb, impostor)),
    )
    .unwrap();
    for policy in [HostKeyPolicy::Strict, HostKeyPolicy::AcceptNew] {
        let err = refused(&with_policy(&sb, ip, policy)).await;
        assert!(matches!(err, SshError::HostKeyChanged { line: 2, .. }), "{err:?}");
        let message = err.to_string();
        assert!(message.contains(&format!("{ip} port {SSH_PORT}")), "{message}");
        assert_eq!(message.matches("SHA256:").count(), 2, "{message}");
        let file = known_hosts(&sb).display().to_string();
        assert!(message.contains(&format!("remove line 2 from {file}")), "{message}");
    }

    let off = with_policy(&sb, ip, HostKeyPolicy::Off);
    HostSession::connect(&off).await.unwrap();
}

/// A known_hosts file as `ssh-keyscan -H` writes it (hashed names) is read as OpenSSH reads
/// it: strict connects, and accept-new records no second, plain line.
#[tokio::test]
async fn hashed_entries_are_known_hosts() {
    let sb = hosts(1);
    let ip = &sb.hosts()[0];
    let file = known_hosts(&sb);
    std::fs::write(&file, format!("[{ip}]:{SSH_PORT} {}\n", host_public_key(&sb, ip))).unwrap();
    let hashed = std::process::Command::new("ssh-keygen").arg("-H").arg("-f").arg(&file).output();
    assert!(hashed.unwrap().status.success());
    let text = std::fs::read_to_string(&file).unwrap();
    assert!(text.starts_with("|1|") && !text.contains(ip.as_str()), "{text}");

    HostSession::connect(&with_policy(&sb, ip, HostKeyPolicy::Strict)).await.unwrap();
    HostSession::connect(&target(&sb, ip)).await.unwrap();
    assert_eq!(std::fs::read_to_string(&file).unwrap(), text, "nothing more recorded");
}

/// `@revoked` refuses the host's key under every checking policy, even where another line
/// trusts it.
#[tokio::test]
async fn a_revoked_host_key_is_refused() {
    let sb = hosts(1);
    let ip = &sb.hosts()[0];
    let key = host_public_key(&sb, ip);
    let entry = format!("[{ip}]:{SSH_PORT}");
    std::fs::write(known_hosts(&sb), format!("{entry} {key}\n@revoked {entry} {key}\n")).unwrap();
    for policy in [HostKeyPolicy::Strict, HostKeyPolicy::AcceptNew] {
        let err = refused(&with_policy(&sb, ip, policy)).await;
        assert!(matches!(err, SshError::HostKeyRevoked { line: 2, .. }), "{err:?}");
        assert!(err.to_string().contains("is REVOKED by"), "{err}");
    }
}
