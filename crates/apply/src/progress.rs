//! Progress reports: steps, each with bytes done and total.

use serde::Serialize;

/// The steps of an apply, in order.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Step {
    /// Checks: delta header, memory, source, target, locks, migration data.
    Preparing,
    /// Producing the new image.
    Applying,
    /// Checking the whole new image's digest.
    Verifying,
    /// An application holds its update lock; retrying.
    WaitingForLock,
    /// Running the commit hook and switching the target into place.
    Committing,
    /// Finished.
    Done,
}

impl Step {
    /// Human-readable name.
    pub fn label(self) -> &'static str {
        match self {
            Step::Preparing => "preparing",
            Step::Applying => "applying",
            Step::Verifying => "verifying",
            Step::WaitingForLock => "waiting for application lock",
            Step::Committing => "committing",
            Step::Done => "done",
        }
    }
}

/// One progress report.
#[derive(Debug, Clone, Serialize)]
pub struct Progress {
    /// Current step.
    pub step: Step,
    /// Bytes done in this step.
    pub bytes_done: u64,
    /// Bytes this step handles in total.
    pub bytes_total: u64,
    /// Detail, e.g. the lock being waited on.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
}

/// Receives progress reports (at least once a second during long steps).
pub type ProgressFn = Box<dyn FnMut(&Progress) + Send>;
