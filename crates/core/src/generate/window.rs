//! Which old bytes a segment's reference window holds.
//!
//! A plan names one span of the old image as its window (see
//! [`SegmentPlan::reference`]). Much of that span is often old content
//! that COPY ops take whole (the unchanged files around a changed one).
//! zstd indexes every window byte (at level 19, at about a third of the
//! cost of compressing a stream byte, and windows are larger than streams)
//! and finds little in those runs, since the segment's literal bytes are
//! by construction the ones that no block of the old image holds. With a
//! window list (format flag `WINDOW_LIST`), the window leaves out every
//! long copied run: on the os-minor corpus pair the windows shrink from
//! 77 MB to 16 MB in all and generation takes half the CPU, for a delta
//! 0.8% larger; on os-major they shrink by 13%, generation takes about 10%
//! less CPU and the delta is 0.08% smaller.

use crate::generate::plan::SegmentPlan;
use delta_format::Op;
use std::ops::Range;

/// Shortest run of copied old bytes a window leaves out. Shorter runs sit
/// between the changed parts of one file, whose literal bytes often match
/// them, and each left-out run costs a few bytes of list. Measured against
/// 16 KiB: from 4 KiB on, deltas were 0.03% (os-minor) and 0.05%
/// (os-major) larger for 10% and 9% fewer window bytes; from 64 KiB on,
/// 0.06% and 0.01% smaller for 30% and 6% more.
pub(crate) const MIN_SKIPPED_RUN: u64 = 16 << 10;

/// Bytes kept at each end of a skipped run: matches that start in the
/// bytes next to a run may run into it.
pub(crate) const SKIP_MARGIN: u64 = 64;

/// How a segment's window is laid out in its payload.
#[derive(Debug, Clone, Copy)]
pub enum WindowLayout<'a> {
    /// One contiguous old range (deltas without the `WINDOW_LIST` flag).
    Contiguous,
    /// A window list leaving out these copied runs.
    Gathered(&'a CopiedRuns),
}

impl WindowLayout<'_> {
    /// Bytes of the window of `span` laid out this way.
    pub(crate) fn window_len(&self, span: &Range<u64>) -> u64 {
        match self {
            WindowLayout::Contiguous => span.end.saturating_sub(span.start),
            WindowLayout::Gathered(copied) => copied
                .gather(span.clone())
                .iter()
                .map(|r| r.end - r.start)
                .sum(),
        }
    }
}

/// Old-image runs that a window leaves out: the sources of COPY ops, merged
/// where they touch, that are at least `MIN_SKIPPED_RUN` (16 KiB) long, less
/// `SKIP_MARGIN` (64 bytes) at each end.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CopiedRuns {
    runs: Vec<Range<u64>>,
}

impl CopiedRuns {
    /// The runs copied by the COPY ops of `plans`.
    pub fn from_plans<'a>(plans: impl IntoIterator<Item = &'a SegmentPlan>) -> CopiedRuns {
        let mut sources: Vec<Range<u64>> = plans
            .into_iter()
            .flat_map(|plan| &plan.ops)
            .filter_map(|op| match *op {
                Op::Copy { src, len } => Some(src..src.saturating_add(len)),
                _ => None,
            })
            .collect();
        sources.sort_unstable_by_key(|run| run.start);
        let mut merged: Vec<Range<u64>> = Vec::new();
        for run in sources {
            match merged.last_mut() {
                Some(last) if run.start <= last.end => last.end = last.end.max(run.end),
                _ => merged.push(run),
            }
        }
        let runs = merged
            .into_iter()
            .filter(|run| run.end - run.start >= MIN_SKIPPED_RUN)
            .map(|run| run.start + SKIP_MARGIN..run.end - SKIP_MARGIN)
            .collect();
        CopiedRuns { runs }
    }

    /// `span` without the runs: ascending, disjoint, non-empty ranges.
    pub(crate) fn gather(&self, span: Range<u64>) -> Vec<Range<u64>> {
        let first = self.runs.partition_point(|run| run.end <= span.start);
        let mut out = Vec::new();
        let mut at = span.start;
        for run in &self.runs[first..] {
            if run.start >= span.end {
                break;
            }
            if run.start > at {
                out.push(at..run.start);
            }
            at = at.max(run.end);
        }
        if at < span.end {
            out.push(at..span.end);
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn plan(copies: &[(u64, u64)]) -> SegmentPlan {
        SegmentPlan {
            ops: copies
                .iter()
                .map(|&(src, len)| Op::Copy { src, len })
                .chain([Op::Literal { len: 1 }])
                .collect(),
            literal: vec![0],
            ..SegmentPlan::default()
        }
    }

    #[test]
    fn windows_leave_out_long_copied_runs_only() {
        const K: u64 = 1 << 10;
        // 10..30 KiB copied in two touching pieces (by two segments), and
        // a 15 KiB copy at 100 KiB (too short to leave out).
        let plans = [
            plan(&[(10 * K, 12 * K)]),
            plan(&[(22 * K, 8 * K), (100 * K, 15 * K)]),
        ];
        let runs = CopiedRuns::from_plans(&plans);
        let skipped = 10 * K + SKIP_MARGIN..30 * K - SKIP_MARGIN;
        assert_eq!(runs.runs, vec![skipped.clone()]);
        assert_eq!(
            runs.gather(0..200 * K),
            vec![0..skipped.start, skipped.end..200 * K]
        );
        // Spans that start or end inside the run, or miss it.
        assert_eq!(runs.gather(20 * K..40 * K), vec![skipped.end..40 * K]);
        assert_eq!(runs.gather(0..20 * K), vec![0..skipped.start]);
        assert_eq!(runs.gather(12 * K..20 * K), vec![]);
        assert_eq!(runs.gather(40 * K..50 * K), vec![40 * K..50 * K]);
        assert_eq!(CopiedRuns::default().gather(5..9), vec![5..9]);
        let gathered = WindowLayout::Gathered(&runs);
        assert_eq!(
            gathered.window_len(&(0..40 * K)),
            40 * K - (skipped.end - skipped.start)
        );
        assert_eq!(WindowLayout::Contiguous.window_len(&(0..40 * K)), 40 * K);
    }
}
