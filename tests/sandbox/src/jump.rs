//! A jump host for a sandbox, and a place from which it is the only way in.
//!
//! The jump host is one more sshd, on an address of the sandbox's subnet that no cluster host
//! uses, with its own login key. The place is a network namespace of this process's making
//! ([`JumpHost::isolate`] puts a command there): inside it, only the jump host's SSH port
//! answers (bridged to the real one); the cluster's hosts, their sshd and their DM APIs are
//! unreachable except through the jump host. The namespace lives as long as this handle (it is
//! held by a file descriptor, never mounted), so nothing of it outlives the test.

use std::fs::{self, File};
use std::io;
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::os::fd::{AsRawFd, RawFd};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::thread::JoinHandle;

use anyhow::{Context, Result};

use crate::harness::Sandbox;
use crate::host::{self, HostSpec, SSH_PORT, Sshd};

/// The last byte of the jump host's address in the sandbox's subnet.
const JUMP_HOST_BYTE: u8 = 250;

pub struct JumpHost {
    ip: String,
    key: PathBuf,
    sshd: Sshd,
    isolated: IsolatedNet,
}

impl JumpHost {
    /// Starts the jump host's sshd (root may log in with a key of its own) and the namespace
    /// that only it bridges into.
    pub fn start(sandbox: &Sandbox) -> Result<JumpHost> {
        let ip = format!("{}.{JUMP_HOST_BYTE}", sandbox.claim.subnet());
        let dir = sandbox.root().join("jump-host");
        fs::create_dir_all(&dir)?;
        let key = dir.join("id_ed25519");
        host::keygen(&["-t", "ed25519", "-N", "", "-C", "jump"], &key)?;
        let public_key = fs::read_to_string(key.with_extension("pub"))?;
        let config = host::prepare(&HostSpec {
            ip: &ip,
            dir: &dir,
            ssh_user: "root",
            authorized_key: &public_key,
            stand_in_dir: Sandbox::shared_stand_in_dir(),
        })?;
        let sshd = Sshd::start(&ip, &config)?;
        let address: SocketAddr = format!("{ip}:{SSH_PORT}").parse()?;
        let isolated = IsolatedNet::bridging(address).context("isolating a network namespace")?;
        Ok(JumpHost { ip, key, sshd, isolated })
    }

    pub fn ip(&self) -> &str {
        &self.ip
    }

    /// The private key root logs in to the jump host with.
    pub fn key(&self) -> &Path {
        &self.key
    }

    /// Makes `command` run in the isolated namespace.
    pub fn isolate(&self, command: &mut Command) {
        let namespace = self.isolated.namespace.as_raw_fd();
        // SAFETY: setns(2) is async-signal-safe and touches only the child being spawned.
        unsafe {
            command.pre_exec(move || enter(namespace));
        }
    }

    /// Drops every SSH connection to the jump host (and so every connection it carries) while
    /// its sshd goes on accepting new ones, as an sshd restart or a network blip would.
    pub fn drop_ssh_connections(&self) {
        for session in self.sshd.record.descendants() {
            session.kill();
        }
    }

    /// `Accepted publickey` lines in the jump host's sshd log: one per login.
    pub fn logins(&self) -> usize {
        let log = self.sshd_log();
        fs::read_to_string(log).unwrap_or_default().matches("Accepted publickey").count()
    }

    fn sshd_log(&self) -> PathBuf {
        self.key.with_file_name("sshd").join("sshd.log")
    }
}

impl Drop for JumpHost {
    fn drop(&mut self) {
        self.isolated.stop();
        self.sshd.stop();
    }
}

/// A network namespace with loopback up and one TCP port bridged to the same address outside.
struct IsolatedNet {
    namespace: File,
    listener: TcpListener,
    accepting: Option<JoinHandle<()>>,
}

impl IsolatedNet {
    fn bridging(address: SocketAddr) -> io::Result<IsolatedNet> {
        // Namespaces are per thread: this thread enters the new one to make the listener there,
        // and comes back (the guard) before anything else runs on it.
        let home = File::open("/proc/thread-self/ns/net")?;
        let (namespace, listener) = {
            // SAFETY: unshare(2) changes only this thread's namespace, restored by the guard.
            if unsafe { libc::unshare(libc::CLONE_NEWNET) } != 0 {
                return Err(io::Error::last_os_error());
            }
            let _back_home = ReturnTo(home.as_raw_fd());
            let namespace = File::open("/proc/thread-self/ns/net")?;
            loopback_up()?;
            (namespace, TcpListener::bind(address)?)
        };
        let accepting = listener.try_clone()?;
        let accepting = std::thread::spawn(move || {
            // Each connection made in the namespace is carried to the real address outside it.
            while let Ok((inside, _)) = accepting.accept() {
                let Ok(outside) = TcpStream::connect(address) else { continue };
                for (mut from, mut to) in [
                    (inside.try_clone(), outside.try_clone()),
                    (outside.try_clone(), inside.try_clone()),
                ]
                .into_iter()
                .filter_map(|(from, to)| Some((from.ok()?, to.ok()?)))
                {
                    std::thread::spawn(move || {
                        let _ = io::copy(&mut from, &mut to);
                        let _ = to.shutdown(Shutdown::Write);
                    });
                }
            }
        });
        Ok(IsolatedNet { namespace, listener, accepting: Some(accepting) })
    }

    fn stop(&mut self) {
        // SAFETY: shutting down our own listening socket wakes the blocked accept(2).
        unsafe { libc::shutdown(self.listener.as_raw_fd(), libc::SHUT_RDWR) };
        if let Some(accepting) = self.accepting.take() {
            let _ = accepting.join();
        }
    }
}

/// Puts the calling thread back in the namespace `fd` when dropped.
struct ReturnTo(RawFd);

impl Drop for ReturnTo {
    fn drop(&mut self) {
        enter(self.0).expect("returning to the original network namespace");
    }
}

fn enter(namespace: RawFd) -> io::Result<()> {
    // SAFETY: setns(2) on a namespace file descriptor we hold open.
    if unsafe { libc::setns(namespace, libc::CLONE_NEWNET) } == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

/// `ip link set lo up` in the calling thread's namespace (a new one has loopback down).
fn loopback_up() -> io::Result<()> {
    // SAFETY: a plain socket and two ioctls on a zeroed, NUL-terminated ifreq.
    unsafe {
        let socket = libc::socket(libc::AF_INET, libc::SOCK_DGRAM, 0);
        if socket < 0 {
            return Err(io::Error::last_os_error());
        }
        let mut request: libc::ifreq = std::mem::zeroed();
        for (slot, byte) in request.ifr_name.iter_mut().zip(b"lo\0") {
            *slot = *byte as libc::c_char;
        }
        let mut result = libc::ioctl(socket, libc::SIOCGIFFLAGS, &mut request);
        if result == 0 {
            request.ifr_ifru.ifru_flags |= libc::IFF_UP as libc::c_short;
            result = libc::ioctl(socket, libc::SIOCSIFFLAGS, &request);
        }
        let error = io::Error::last_os_error();
        libc::close(socket);
        if result == 0 { Ok(()) } else { Err(error) }
    }
}
