//! What can go wrong, and the single mapping from it to an exit code.

use std::process::ExitCode;

use crate::package::PackageError;
use crate::topology::select::SelectError;
use crate::topology::store::StoreError;

/// How the process ends. Scripts branch on these, so they are part of the interface and are
/// documented in README.md.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ExitStatus {
    /// Everything asked for was done (or, with `--dry-run`, would be done).
    Success,
    /// The cluster refused: an instance failed and was rolled back, a host was unreachable, a
    /// preflight check found a problem. The cluster is left running.
    Failure,
    /// Bad input: usage, the TiUP store, the selection or the package. Nothing was changed.
    BadInput,
    /// Failed, and something needs a person: an instance that could not be put back, or
    /// meta.yaml's marks that could not be recorded. The report says what and how.
    NeedsAttention,
    /// Interrupted by Ctrl-C or SIGTERM after finishing or undoing the instance in flight.
    Interrupted,
}

impl ExitStatus {
    pub fn code(self) -> u8 {
        match self {
            ExitStatus::Success => 0,
            ExitStatus::Failure => 1,
            ExitStatus::BadInput => 2,
            ExitStatus::NeedsAttention => 3,
            ExitStatus::Interrupted => 130,
        }
    }

    /// The word for it in JSON documents: `success`, `failed`, `bad-input`, `interrupted`.
    pub fn kind(self) -> &'static str {
        match self {
            ExitStatus::Success => "success",
            ExitStatus::Failure => "failed",
            ExitStatus::BadInput => "bad-input",
            ExitStatus::NeedsAttention => "needs-attention",
            ExitStatus::Interrupted => "interrupted",
        }
    }
}

impl From<ExitStatus> for ExitCode {
    fn from(status: ExitStatus) -> ExitCode {
        ExitCode::from(status.code())
    }
}

/// A command line that makes sense to clap but not to dm-patch (e.g. no `--yes` where no one
/// can be asked). Nothing was changed.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct UsageError(pub String);

/// The exit status an error should end the process with: bad input is recognised by type
/// anywhere in the chain, everything else means the cluster (or the machine) refused.
pub fn exit_status_of(err: &anyhow::Error) -> ExitStatus {
    if err.chain().any(|cause| {
        cause.is::<UsageError>()
            || cause.is::<StoreError>()
            || cause.is::<SelectError>()
            || cause.is::<PackageError>()
    }) {
        ExitStatus::BadInput
    } else {
        ExitStatus::Failure
    }
}
