//! Progress reports: steps, each with bytes done and total.

use crate::log::UpdateLog;
use serde::Serialize;
use std::time::{Duration, Instant};

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

/// What a progress report marks in its step.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum StepEvent {
    /// The step begins (its first report).
    Start,
    /// Bytes moved within the step.
    Progress,
    /// The step is over (its last report, with its final counts); a run
    /// that fails ends no more steps.
    End,
}

/// One progress report.
#[derive(Debug, Clone, Serialize)]
pub struct Progress {
    /// Current step.
    pub step: Step,
    /// Whether the step starts, moves or ends with this report: every
    /// step a run enters starts and, unless the run fails in it, ends.
    pub event: StepEvent,
    /// Bytes done in this step.
    pub bytes_done: u64,
    /// Bytes this step handles in total.
    pub bytes_total: u64,
    /// Detail, e.g. the lock being waited on.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
    /// Bytes of the delta received (read, downloaded) so far, once its
    /// table is read: with a delta from a pipe or a URL, how far the
    /// download has got.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub delta_received: Option<u64>,
    /// The delta's length, with `delta_received`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub delta_len: Option<u64>,
}

/// Receives progress reports (at least once a second during long steps).
pub type ProgressFn = Box<dyn FnMut(&Progress) + Send>;

/// How often long loops report progress.
pub(crate) const PROGRESS_EVERY: Duration = Duration::from_millis(250);

/// The one path of progress: every step change, byte count and warning of
/// a run goes through here, to the caller's callback and the update log.
pub(crate) struct Reporter<'a> {
    callback: &'a mut Option<ProgressFn>,
    pub(crate) log: UpdateLog,
    step: Step,
    step_started: Instant,
    /// When bytes were last reported.
    last_bytes: Instant,
    /// The current step's bytes done and total, as last told (reported
    /// or not): a report of received bytes carries them.
    last: (u64, u64),
    /// Bytes of the delta received and its length.
    received: Option<(u64, u64)>,
    /// Non-fatal problems met so far, for the outcome.
    pub(crate) warnings: Vec<String>,
    /// The current step's start was reported.
    started: bool,
}

impl<'a> Reporter<'a> {
    pub(crate) fn new(callback: &'a mut Option<ProgressFn>, log: UpdateLog) -> Reporter<'a> {
        Reporter {
            callback,
            log,
            step: Step::Preparing,
            step_started: Instant::now(),
            last_bytes: Instant::now(),
            last: (0, 0),
            received: None,
            warnings: Vec::new(),
            started: false,
        }
    }

    /// The step being reported.
    pub(crate) fn current(&self) -> Step {
        self.step
    }

    /// Reports `step` (logging when it starts and the previous one ends),
    /// with bytes done and total and an optional detail.
    pub(crate) fn report(&mut self, step: Step, done: u64, total: u64, message: Option<String>) {
        let changed = step != self.step;
        if changed {
            self.log.line(format!(
                "step {} finished in {}",
                self.step.label(),
                crate::log::duration(self.step_started.elapsed())
            ));
            if step != Step::Done {
                self.log.line(format!("step {} started", step.label()));
            }
            if self.started {
                // A step that gives way to the next has done all of it.
                let total = self.last.1;
                self.emit(self.step, StepEvent::End, total, total, None);
            }
            self.step = step;
            self.step_started = Instant::now();
            self.started = false;
        }
        self.last_bytes = Instant::now();
        self.last = (done, total);
        let event = if self.started {
            StepEvent::Progress
        } else {
            StepEvent::Start
        };
        self.started = true;
        self.emit(step, event, done, total, message);
        if step == Step::Done && event == StepEvent::Start {
            // Done is a moment: it starts and ends at once.
            self.emit(step, StepEvent::End, done, total, None);
        }
    }

    fn emit(
        &mut self,
        step: Step,
        event: StepEvent,
        done: u64,
        total: u64,
        message: Option<String>,
    ) {
        if let Some(f) = self.callback.as_mut() {
            f(&Progress {
                step,
                event,
                bytes_done: done,
                bytes_total: total,
                message,
                delta_received: self.received.map(|r| r.0),
                delta_len: self.received.map(|r| r.1),
            });
        }
    }

    /// Records `received` bytes of a delta of `len` bytes, reported with
    /// the current step's bytes at most every [`PROGRESS_EVERY`].
    pub(crate) fn received(&mut self, received: u64, len: u64) {
        self.received = Some((received, len));
        let (done, total) = self.last;
        self.bytes(done, total);
    }

    /// Reports bytes done in the current step, at most every
    /// [`PROGRESS_EVERY`].
    pub(crate) fn bytes(&mut self, done: u64, total: u64) {
        self.last = (done, total);
        if self.last_bytes.elapsed() >= PROGRESS_EVERY {
            self.report(self.step, done, total, None);
        }
    }

    /// Records a non-fatal problem in the log and the outcome.
    pub(crate) fn warn(&mut self, message: String) {
        self.log.line(format!("warning: {message}"));
        self.warnings.push(message);
    }
}
