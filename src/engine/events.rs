//! The engine reports what it is doing as events; `output::progress` turns them into bars,
//! lines or nothing. The engine itself never prints.

use super::report::Outcome;

#[derive(Debug, Clone, Copy)]
pub enum Event<'a> {
    /// A new phase of the run begins ("Connecting to 5 hosts").
    Phase(&'a str),
    /// The run is over: whatever shows progress can go away before the summary.
    Done,
    UploadStarted {
        host: &'a str,
        total: u64,
    },
    UploadProgress {
        host: &'a str,
        sent: u64,
    },
    UploadFinished {
        host: &'a str,
    },
    /// An instance enters a step of its roll ("stopping", "starting", ...).
    Step {
        id: &'a str,
        step: &'a str,
    },
    InstanceFinished {
        id: &'a str,
        outcome: Outcome,
        detail: Option<&'a str>,
    },
    /// Something the operator should know that is not an error.
    Note(&'a str),
}

/// Where events go. Implementations must be cheap: the engine calls them inline.
pub trait Progress: Send + Sync {
    fn event(&self, event: Event<'_>);
}
