//! Claiming a `/24` of the loopback range, so parallel sandboxes never share an address.
//!
//! A claim is a file `/tmp/dm-sandbox-claims/127.<a>.<b>` created exclusively and naming the
//! sandbox root that owns it. It outlives the process that made it (`sandbox up` exits while
//! its hosts keep running) and is removed by whoever tears that sandbox down. A claim whose
//! root no longer exists is stale (its owner died without cleaning up) and may be taken over.
//! Every look at the claims happens under one `flock`, so two processes never take the same
//! subnet, not even while both are taking over the same stale claim.

use std::fs::{self, File, OpenOptions};
use std::io::{ErrorKind, Write};
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};

const CLAIMS_DIR: &str = "/tmp/dm-sandbox-claims";
/// First octets handed out: 127.100.x.x up to 127.199.x.x.
const FIRST_OCTETS: std::ops::RangeInclusive<u8> = 100..=199;

/// A claimed subnet `127.<a>.<b>.0/24`.
#[derive(Debug)]
pub struct Claim {
    subnet: String,
    file: PathBuf,
}

impl Claim {
    /// Claims a free subnet for the sandbox at `root`.
    pub fn take(root: &Path) -> Result<Claim> {
        fs::create_dir_all(CLAIMS_DIR).with_context(|| format!("creating {CLAIMS_DIR}"))?;
        let _guard = ClaimsLock::acquire()?;
        // Start somewhere that depends on this process, so parallel test binaries do not
        // all probe the same first subnets.
        let slots = FIRST_OCTETS.len() * 256;
        let start = (std::process::id() as usize * 7919) % slots;
        for offset in 0..slots {
            let slot = (start + offset) % slots;
            let subnet = format!(
                "127.{}.{}",
                *FIRST_OCTETS.start() as usize + slot / 256,
                slot % 256
            );
            let file = Path::new(CLAIMS_DIR).join(&subnet);
            if try_create(&file, root)? {
                return Ok(Claim { subnet, file });
            }
            if is_stale(&file) {
                fs::remove_file(&file)
                    .with_context(|| format!("removing stale {}", file.display()))?;
                if try_create(&file, root)? {
                    return Ok(Claim { subnet, file });
                }
            }
        }
        bail!("every subnet 127.100.0.0 - 127.199.255.0 is claimed (see {CLAIMS_DIR})")
    }

    /// Rebuilds the handle of an existing claim (for `sandbox down`).
    pub fn existing(subnet: &str) -> Claim {
        Claim {
            subnet: subnet.to_owned(),
            file: Path::new(CLAIMS_DIR).join(subnet),
        }
    }

    /// `127.<a>.<b>`: append `.1`, `.2`, ... for host addresses.
    pub fn subnet(&self) -> &str {
        &self.subnet
    }

    /// Gives the subnet back.
    pub fn release(&self) -> Result<()> {
        match fs::remove_file(&self.file) {
            Err(err) if err.kind() != ErrorKind::NotFound => {
                Err(err).with_context(|| format!("removing {}", self.file.display()))
            }
            _ => Ok(()),
        }
    }
}

fn try_create(file: &Path, root: &Path) -> Result<bool> {
    match OpenOptions::new().write(true).create_new(true).open(file) {
        Ok(mut claim) => {
            writeln!(claim, "{}", root.display())?;
            Ok(true)
        }
        Err(err) if err.kind() == ErrorKind::AlreadyExists => Ok(false),
        Err(err) => Err(err).with_context(|| format!("creating {}", file.display())),
    }
}

/// A claim is stale when the root it names is gone. Claims are only written under the lock,
/// so an empty one is left by a crash between creating and writing it: stale too. An
/// unreadable one is left alone.
fn is_stale(file: &Path) -> bool {
    match fs::read_to_string(file) {
        Ok(text) => {
            let root = text.trim();
            root.is_empty() || !Path::new(root).exists()
        }
        Err(_) => false,
    }
}

/// The `flock` that serialises every look at the claims directory.
struct ClaimsLock {
    _file: File,
}

impl ClaimsLock {
    fn acquire() -> Result<ClaimsLock> {
        let path = Path::new(CLAIMS_DIR).join(".lock");
        let file = OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&path)
            .with_context(|| format!("opening {}", path.display()))?;
        // SAFETY: flock(2) on a descriptor we own; it is released when `file` is closed.
        if unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX) } != 0 {
            return Err(std::io::Error::last_os_error())
                .with_context(|| format!("locking {}", path.display()));
        }
        Ok(ClaimsLock { _file: file })
    }
}
