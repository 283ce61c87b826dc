//! What a change to a cluster is asked to do, as plain values: `patch` builds it from its
//! command line, `rollback` from the target it found, and both hand it to
//! [`super::patch::execute`]. Nothing here is parsed again, and nothing reaches the engine
//! through clap.

use std::path::PathBuf;

use crate::cli::{ChangeArgs, ConnectionArgs, PatchArgs, ProvingArgs};
use crate::plan::Action;
use crate::topology::select::Filter;

/// One patch (or rollback) run, as it was asked for.
#[derive(Debug, Clone)]
pub struct PatchSettings {
    pub cluster: String,
    pub package: PathBuf,
    pub filter: Filter,
    pub overwrite: bool,
    pub offline: bool,
    pub allow_version_change: bool,
    pub change: ChangeArgs,
    pub proving: ProvingArgs,
    /// The package's sha256 as its provider gave it (`--expect-sha256`).
    pub expect_sha256: Option<String>,
    pub dry_run: bool,
    pub connection: ConnectionArgs,
    /// Forward to a package, or back to a rollback target fetched from a host.
    pub action: Action,
    /// What the patch a rollback takes back added to `bin/` (deleted on each instance).
    pub remove: Vec<String>,
    /// A finished instance runs the cluster's original binary again (`rollback
    /// --to-original`): its mark is cleared, not set.
    pub unpatches: bool,
}

impl From<PatchArgs> for PatchSettings {
    fn from(args: PatchArgs) -> PatchSettings {
        PatchSettings {
            cluster: args.cluster,
            package: args.package,
            filter: Filter { roles: args.filter.roles, nodes: args.filter.nodes },
            overwrite: args.overwrite,
            offline: args.offline,
            allow_version_change: args.allow_version_change,
            change: args.change,
            proving: args.proving,
            expect_sha256: args.expect_sha256,
            dry_run: args.dry_run,
            connection: args.connection,
            action: Action::Patch,
            remove: Vec::new(),
            unpatches: false,
        }
    }
}
