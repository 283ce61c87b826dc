//! The only place with side effects on hosts.

use crate::commands::patch::PatchConfig;
use crate::error::ExitStatus;
use crate::output::Printer;
use crate::topology::store::ClusterLock;

pub async fn run(
    config: PatchConfig,
    _lock: ClusterLock,
    printer: &Printer,
) -> anyhow::Result<ExitStatus> {
    if !crate::commands::patch::confirm(&config, printer)? {
        return Ok(ExitStatus::Failure);
    }
    anyhow::bail!("patching hosts is not available in this build; use --dry-run")
}
