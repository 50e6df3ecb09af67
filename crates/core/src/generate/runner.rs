//! How the pipeline's independent work runs: the one thing its callers
//! choose (see [`crate::generate::pipeline`]).

use crate::error::Error;
use crate::segment::SegmentRef;
use delta_format::Digest;
use std::ops::Range;

/// How the pipeline's independent work runs, and what the caller checks.
///
/// Implementations decide only *how*: every method must give the result
/// its serial default gives (the output does not depend on the runner).
pub trait Runner: Sync {
    /// What [`check`](Runner::check) fails with; the pipeline's own errors
    /// convert into it.
    type Error: From<Error> + Send;

    /// `work` on every item, results in item order. Each item comes with
    /// an estimate of its work (larger is slower, no unit), so that a
    /// runner may start the slow items first.
    fn map<T: Send, U: Send>(&self, items: Vec<(u64, T)>, work: impl Fn(T) -> U + Sync) -> Vec<U>;

    /// Runs `a` and `b`, maybe at once.
    fn join<A: Send, B: Send>(
        &self,
        a: impl FnOnce() -> A + Send,
        b: impl FnOnce() -> B + Send,
    ) -> (A, B) {
        (a(), b())
    }

    /// The BLAKE3 digest of `bytes`.
    fn digest(&self, bytes: &[u8]) -> Digest {
        *blake3::hash(bytes).as_bytes()
    }

    /// Told how far the pipeline has got: called when each phase starts and
    /// ends and after each item of a long one (a unit, a segment, a gzip
    /// file), from any worker thread. Keep it cheap; the output does not
    /// depend on it.
    fn progress(&self, _progress: &Progress) {}

    /// Told the digests of both images as soon as they are known, before
    /// any step that can fail (the generator compares them with the inputs
    /// again to tell a changed input from a bug).
    fn hashed(&self, _old: &Digest, _new: &Digest) {}

    /// Checks a freshly encoded segment, on the thread that encoded it:
    /// `payload` must produce `new[segment.new_offset..]` for
    /// `segment.entry.new_len` bytes.
    ///
    /// # Errors
    /// Whatever the runner finds wrong; the generation stops with it.
    fn check(
        &self,
        _old: &[u8],
        _new: &[u8],
        _segment: SegmentRef<'_>,
        _payload: &[u8],
    ) -> Result<(), Self::Error> {
        Ok(())
    }
}

/// A phase of generation, in the order they run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Phase {
    /// Hashing both images, indexing the old one's blocks, mapping their
    /// files (bytes: old and new image).
    Indexing,
    /// Rebuilding changed gzip and zlib files from their content, each
    /// re-applied (bytes: the candidate files of the new image).
    Deflating,
    /// Making changed ELF files from their old partners, each re-applied
    /// (bytes: the candidate files of the new image).
    Executables,
    /// Finding copies, zero runs, diffs and literals for every unit (bytes:
    /// new image).
    Planning,
    /// Compressing every segment and re-applying it against the new image
    /// (bytes: new image).
    Encoding,
    /// Writing the delta file (bytes: the delta); the generator's own phase.
    Writing,
    /// Checking that the inputs did not change during the run (bytes:
    /// inputs hashed again); the generator's own phase.
    Checking,
}

impl Phase {
    /// The name used in progress output: `indexing`, `deflating`,
    /// `executables`, `planning`, `encoding`, `writing`, `checking`.
    pub fn name(self) -> &'static str {
        match self {
            Phase::Indexing => "indexing",
            Phase::Deflating => "deflating",
            Phase::Executables => "executables",
            Phase::Planning => "planning",
            Phase::Encoding => "encoding",
            Phase::Writing => "writing",
            Phase::Checking => "checking",
        }
    }
}

/// One progress report of generation (see [`Runner::progress`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Progress {
    /// The phase running.
    pub phase: Phase,
    /// Bytes of this phase done.
    pub bytes_done: u64,
    /// Bytes this phase handles in all.
    pub bytes_total: u64,
}

/// Counts the bytes of one phase done by many workers and tells the runner.
pub(crate) struct Tally<'r, R: Runner + ?Sized> {
    runner: &'r R,
    phase: Phase,
    total: u64,
    done: std::sync::atomic::AtomicU64,
}

impl<'r, R: Runner + ?Sized> Tally<'r, R> {
    /// Starts `phase` of `total` bytes (reports 0 done).
    pub(crate) fn start(runner: &'r R, phase: Phase, total: u64) -> Tally<'r, R> {
        runner.progress(&Progress {
            phase,
            bytes_done: 0,
            bytes_total: total,
        });
        Tally {
            runner,
            phase,
            total,
            done: 0.into(),
        }
    }

    /// Adds `bytes` done and reports the sum.
    pub(crate) fn add(&self, bytes: u64) {
        let done = self
            .done
            .fetch_add(bytes, std::sync::atomic::Ordering::Relaxed)
            + bytes;
        self.runner.progress(&Progress {
            phase: self.phase,
            bytes_done: done.min(self.total),
            bytes_total: self.total,
        });
    }

    /// Ends the phase: reports all bytes done (once more if they were).
    pub(crate) fn finish(self) {
        self.runner.progress(&Progress {
            phase: self.phase,
            bytes_done: self.total,
            bytes_total: self.total,
        });
    }
}

/// A [`Runner`] that does everything on the calling thread and checks
/// nothing: the reference generator of the tests and fuzz targets.
#[derive(Debug, Clone, Copy, Default)]
pub struct Serial;

impl Runner for Serial {
    type Error = Error;

    fn map<T: Send, U: Send>(&self, items: Vec<(u64, T)>, work: impl Fn(T) -> U + Sync) -> Vec<U> {
        items.into_iter().map(|(_, item)| work(item)).collect()
    }
}

/// Splits `0..len` into ranges of `step` bytes (the last one shorter): the
/// units of the new image, the pieces of the old one.
pub(crate) fn split(len: usize, step: usize) -> Vec<Range<usize>> {
    let step = step.max(1);
    (0..len)
        .step_by(step)
        .map(|start| start..(start + step).min(len))
        .collect()
}

/// `items` for [`Runner::map`], each of the same cost.
pub(crate) fn alike<T>(items: impl IntoIterator<Item = T>) -> Vec<(u64, T)> {
    items.into_iter().map(|item| (1, item)).collect()
}
