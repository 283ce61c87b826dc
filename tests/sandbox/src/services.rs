//! Controlling a sandbox's services and hosts the way an operator (or a failure) would.

use crate::harness::Sandbox;
use crate::units::ServiceManager;

impl Sandbox {
    /// The pid of `id`'s service while it runs (per the stand-in's record, checked alive).
    pub fn pid(&self, id: &str) -> Option<u32> {
        let instance = self.instance(id);
        let manager = ServiceManager::for_host(&self.host_dir(&instance.host), false);
        manager.running(&instance.unit).map(|record| record.pid)
    }

    /// `systemctl start` of `id`'s unit over SSH (with sudo for a non-root user).
    pub fn start_service(&self, id: &str) {
        self.systemctl(id, "start");
    }

    /// `systemctl stop` of `id`'s unit over SSH: graceful, returns once the process is gone.
    pub fn stop_service(&self, id: &str) {
        self.systemctl(id, "stop");
    }

    /// SIGKILL to `id`'s service, as a crash would (its unit then reads `failed`).
    pub fn kill_service(&self, id: &str) {
        let instance = self.instance(id);
        let manager = ServiceManager::for_host(&self.host_dir(&instance.host), false);
        if let Some(record) = manager.running(&instance.unit) {
            record.kill();
        }
    }

    /// Drops every SSH connection to host `ip` while its sshd goes on accepting new ones, as
    /// an sshd restart or a network blip would; its services keep running.
    pub fn drop_ssh_connections(&self, ip: &str) {
        let index =
            self.hosts.iter().position(|h| h == ip).unwrap_or_else(|| panic!("no host {ip}"));
        if let Some(sshd) = &self.sshds.lock().unwrap()[index] {
            for session in sshd.record.descendants() {
                session.kill();
            }
        }
    }

    /// Takes host `ip` down: its services (SIGKILL) and its sshd with every session.
    pub fn stop_host(&self, ip: &str) {
        let index =
            self.hosts.iter().position(|h| h == ip).unwrap_or_else(|| panic!("no host {ip}"));
        for user_scope in [false, true] {
            let manager = ServiceManager::for_host(&self.host_dir(ip), user_scope);
            manager.kill_all().unwrap_or_else(|err| panic!("stopping services of {ip}: {err:#}"));
        }
        if let Some(mut sshd) = self.sshds.lock().unwrap()[index].take() {
            sshd.stop();
        }
    }

    fn systemctl(&self, id: &str, verb: &str) {
        let instance = self.instance(id);
        let command = self.as_root(&format!("systemctl {verb} {}", instance.unit));
        let output = self.ssh(&instance.host, &command);
        assert!(
            output.status.success(),
            "systemctl {verb} {} on {}: {}",
            instance.unit,
            instance.host,
            String::from_utf8_lossy(&output.stderr)
        );
    }

    /// `command` as TiUP runs privileged commands: plain as root, else `sudo -H bash -c`.
    pub fn as_root(&self, command: &str) -> String {
        if self.ssh_user == "root" {
            command.to_owned()
        } else {
            format!("sudo -H bash -c '{}'", command.replace('\'', r"'\''"))
        }
    }
}
