//! How the pipeline's independent work runs: the one thing its callers
//! choose (see [`crate::pipeline`]).

use crate::error::Error;
use crate::patch::SegmentRef;
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
