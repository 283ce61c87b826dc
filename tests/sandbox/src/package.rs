//! Hotfix packages in TiUP's format: a gzip tarball holding `<component>/<component>`.

use std::fs::File;
use std::path::Path;

use anyhow::{Context, Result, bail};
use flate2::Compression;
use flate2::write::GzEncoder;

use crate::deploy::binary_wrapper;
use crate::fault::Fault;
use crate::topology::{DM_MASTER, DM_WORKER};

/// Writes to `output` a package of `component` whose binary runs the simulator as `version`
/// with `faults`.
pub fn write_package(
    output: &Path,
    component: &str,
    version: &str,
    faults: &[Fault],
    dm_sim: &Path,
) -> Result<()> {
    if component != DM_MASTER && component != DM_WORKER {
        bail!("a package is of dm-master or dm-worker, not {component:?}");
    }
    let binary = binary_wrapper(component, version, faults, dm_sim);
    let file = File::create(output).with_context(|| format!("creating {}", output.display()))?;
    let mut tar = tar::Builder::new(GzEncoder::new(file, Compression::default()));
    let mut header = tar::Header::new_gnu();
    header.set_size(binary.len() as u64);
    header.set_mode(0o755);
    // A fixed mtime: the same inputs give byte-identical packages (and the same sha256).
    header.set_mtime(0);
    header.set_entry_type(tar::EntryType::Regular);
    tar.append_data(&mut header, format!("{component}/{component}"), binary.as_bytes())?;
    tar.into_inner()?.finish()?;
    Ok(())
}

/// A file name saying what the package is: `dm-worker-v8.5.2[-fault,...].tar.gz`.
pub fn package_file_name(component: &str, version: &str, faults: &[Fault]) -> String {
    let mut name = format!("{component}-{version}");
    for fault in faults {
        name.push('-');
        name.push_str(fault.name());
    }
    name + ".tar.gz"
}
