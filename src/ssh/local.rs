//! `--ssh none` (TiUP's local executor): the cluster's hosts are this machine, and commands run
//! here with bash instead of over SSH.

use std::net::{ToSocketAddrs, UdpSocket};
use std::os::unix::fs::MetadataExt;

use tokio::process::Command;

use super::{Privilege, SshError, SshTarget};

/// The rights commands run with here. Root runs everything as it is; anyone else gets root
/// through `sudo -n`, as on a remote host. Services managed as systemd user units run as the
/// user running dm-patch, which must then be the deploy user.
pub(super) fn privilege(target: &SshTarget) -> Result<Privilege, SshError> {
    if !is_this_machine(&target.addr) {
        return Err(SshError::NotLocal { host: target.addr.clone() });
    }
    Ok(match target.privilege {
        Privilege::SystemdUser => Privilege::SystemdUser,
        Privilege::Root | Privilege::Sudo if running_as_root() => Privilege::Root,
        Privilege::Root | Privilege::Sudo => Privilege::Sudo,
    })
}

/// `bash -c <line>`, as TiUP's local executor runs commands.
pub(super) fn command(line: &str) -> Command {
    let mut command = Command::new("bash");
    command.arg("-c").arg(line);
    command
}

/// Whether `host` names an address of this machine: one a socket can be bound to.
pub fn is_this_machine(host: &str) -> bool {
    let Ok(addresses) = (host, 0).to_socket_addrs() else {
        return false;
    };
    addresses.into_iter().any(|address| UdpSocket::bind((address.ip(), 0)).is_ok())
}

/// `/proc/self` belongs to the process's effective user.
fn running_as_root() -> bool {
    std::fs::metadata("/proc/self").is_ok_and(|meta| meta.uid() == 0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn loopback_addresses_are_this_machine_and_documentation_addresses_are_not() {
        assert!(is_this_machine("127.0.0.1"));
        assert!(is_this_machine("127.0.9.7"));
        assert!(is_this_machine("localhost"));
        assert!(!is_this_machine("192.0.2.10"));
        assert!(!is_this_machine("no-such-host.invalid"));
    }
}
