//! Finding the sandbox's own executables (`dm-sim`, `systemctl`) and the system tools it
//! drives (`sshd`, `ssh`, `ssh-keygen`, `sudo`).

use std::env;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};

/// Overrides where `dm-sim` and `systemctl` are looked for.
pub const BIN_DIR_VAR: &str = "DM_SANDBOX_BIN_DIR";

pub const SSHD: &str = "/usr/sbin/sshd";

/// The workspace executables a sandbox copies into its root.
#[derive(Clone, Debug)]
pub struct Executables {
    pub dm_sim: PathBuf,
    pub systemctl: PathBuf,
}

impl Executables {
    /// Looks in `$DM_SANDBOX_BIN_DIR`, else in the cargo target dir of the running executable
    /// (`target/<profile>/`, also when running from `target/<profile>/deps/`).
    pub fn locate() -> Result<Executables> {
        let dir = match env::var_os(BIN_DIR_VAR) {
            Some(dir) => PathBuf::from(dir),
            None => target_profile_dir()?,
        };
        let find = |name: &str| -> Result<PathBuf> {
            let path = dir.join(name);
            if path.is_file() {
                Ok(path)
            } else {
                bail!(
                    "{} is missing: build the sandbox's executables first \
                     (`cargo build --workspace`, or `cargo test --workspace` which builds them), \
                     or point {BIN_DIR_VAR} at the directory that holds dm-sim and systemctl",
                    path.display()
                )
            }
        };
        Ok(Executables { dm_sim: find("dm-sim")?, systemctl: find("systemctl")? })
    }
}

fn target_profile_dir() -> Result<PathBuf> {
    let exe = env::current_exe().context("locating the running executable")?;
    let mut dir = exe.parent().context("the running executable has no directory")?;
    if dir.file_name().is_some_and(|name| name == "deps" || name == "examples") {
        dir = dir.parent().unwrap_or(dir);
    }
    Ok(dir.to_path_buf())
}

/// Fails with the install command when a system tool the sandbox needs is missing.
pub fn require_system_tools(with_sudo: bool) -> Result<()> {
    let mut missing = Vec::new();
    if !Path::new(SSHD).is_file() {
        missing.push(("sshd", "openssh-server"));
    }
    for (tool, package) in [("ssh", "openssh-client"), ("ssh-keygen", "openssh-client")] {
        if which(tool).is_none() {
            missing.push((tool, package));
        }
    }
    if with_sudo && which("sudo").is_none() {
        missing.push(("sudo", "sudo"));
    }
    if missing.is_empty() {
        return Ok(());
    }
    let tools: Vec<&str> = missing.iter().map(|(tool, _)| *tool).collect();
    let mut packages: Vec<&str> = missing.iter().map(|(_, package)| *package).collect();
    packages.dedup();
    bail!(
        "the sandbox needs {} which {} not installed: apt-get install -y {}",
        tools.join(", "),
        if tools.len() == 1 { "is" } else { "are" },
        packages.join(" ")
    )
}

/// The first `name` on `$PATH` (or in the sbin dirs, which are not on every user's PATH).
pub fn which(name: &str) -> Option<PathBuf> {
    let path = env::var_os("PATH").unwrap_or_default();
    env::split_paths(&path)
        .chain(["/usr/sbin", "/sbin"].map(PathBuf::from))
        .map(|dir| dir.join(name))
        .find(|candidate| candidate.is_file())
}
