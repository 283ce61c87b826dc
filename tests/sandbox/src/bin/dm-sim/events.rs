//! One line per notable event (became leader, resigned, worker bound, ...) appended to
//! `--log-file`, for whoever debugs a test. Not DM's log format: just enough to follow a story.

use std::io::Write;
use std::path::PathBuf;
use std::time::{SystemTime, UNIX_EPOCH};

#[derive(Debug, Clone)]
pub struct EventLog {
    path: Option<PathBuf>,
    who: String,
}

impl EventLog {
    /// Events of `who` (the instance name) go to `path`; without a path they are dropped.
    pub fn new(path: Option<PathBuf>, who: &str) -> EventLog {
        if let Some(parent) = path.as_deref().and_then(std::path::Path::parent) {
            // A failure shows up as the open below failing, which is not worth dying for.
            let _ = std::fs::create_dir_all(parent);
        }
        EventLog { path, who: who.to_owned() }
    }

    pub fn event(&self, what: impl AsRef<str>) {
        let Some(path) = &self.path else { return };
        let since_epoch = SystemTime::now().duration_since(UNIX_EPOCH).unwrap_or_default();
        let line = format!(
            "[{}.{:03}] [{}] {}\n",
            since_epoch.as_secs(),
            since_epoch.subsec_millis(),
            self.who,
            what.as_ref()
        );
        // One write per line, in append mode, so concurrent writers never interleave a line.
        let file = std::fs::OpenOptions::new().create(true).append(true).open(path);
        if let Ok(mut file) = file {
            let _ = file.write_all(line.as_bytes());
        }
    }
}
