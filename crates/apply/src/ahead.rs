//! Decoding segments ahead of the writer, on other threads.
//!
//! Segments are independent, except that a segment may read new-image
//! bytes earlier segments wrote (`COPY_NEW` ops, deflate sources in the new
//! image). The run reads payloads in order and hands each small segment
//! ([`AHEAD_SEGMENT`]) to a helper thread, which applies it into memory
//! ([`Recorded`]) with its own [`Patcher`] and re-deflater: its payload and
//! output digests are checked there. The run then writes the segments in
//! order, so the target, its journal and a resume see the same writes as
//! with one thread. A segment that copies new-image bytes waits for the
//! writer thread to put them (the run hands over what it buffered before
//! it waits for a helper), and a deflate segment takes the content of the
//! streams before it from the run's [`History`]. A segment whose helper
//! failed in any way (or waited past [`READ_BACK_PATIENCE`]) is applied
//! again by the run itself, in its turn, where a failure is reported as it
//! would be with one thread.
//!
//! Memory: the segments handed out and not yet written hold at most
//! [`WINDOW_PER_THREAD`] per helper of buffers and output, none more than
//! [`AHEAD_SEGMENT`]; each helper's patcher keeps buffers of at most that
//! size and a re-deflater worker. [`THREAD_MEMORY`] states the total per
//! helper.

use crate::costs::Costs;
use crate::history::History;
use crate::redeflate::Sandboxed;
use crate::source::FileSource;
use crate::writer::{PutView, SHORT_ZERO_RUN};
use delta_core::{Patcher, SegmentError, SegmentRef, Sink};
use delta_format::{Index, SegmentEntry};
use std::collections::{HashMap, VecDeque};
use std::io;
use std::sync::atomic::AtomicBool;
use std::sync::mpsc::{self, Receiver, Sender};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// Largest segment decoded ahead: its buffers (payload, stream, window)
/// and its output together.
pub(crate) const AHEAD_SEGMENT: u64 = 4 << 20;

/// Longest a helper waits for the new-image bytes a segment copies: the
/// run may be writing a large segment before them.
const READ_BACK_PATIENCE: Duration = Duration::from_secs(60);

/// Bytes of segments (their buffers and output) handed out and not yet
/// written, per helper: many small segments, so that helpers keep busy
/// while the run writes a large one itself.
const WINDOW_PER_THREAD: u64 = 6 << 20;

/// Bytes of rebuilt deflate content each helper adds to the run's shared
/// [`History`].
pub(crate) const HISTORY_PER_THREAD: u64 = 2 << 20;

/// Most memory each decoding thread adds (20 MiB): its share of the
/// segments in flight and of the shared deflate history, its patcher's
/// buffers, and its re-deflater's and kept deflate content
/// ([`delta_core::APPLY_OVERHEAD`]).
pub const THREAD_MEMORY: u64 =
    WINDOW_PER_THREAD + HISTORY_PER_THREAD + AHEAD_SEGMENT + delta_core::APPLY_OVERHEAD;

/// Threads used when the caller leaves it to the applier: one per core,
/// at most this many.
pub const MAX_DEFAULT_THREADS: usize = 4;

/// Most threads asked for that are started.
pub const MAX_THREADS: usize = 64;

/// The decoding threads to run for `asked` (0: one per core, at most
/// [`MAX_DEFAULT_THREADS`]; at most [`MAX_THREADS`]).
pub fn threads_for(asked: usize) -> usize {
    if asked > 0 {
        return asked.min(MAX_THREADS);
    }
    std::thread::available_parallelism()
        .map_or(1, |n| n.get())
        .min(MAX_DEFAULT_THREADS)
}

/// What decoding `entry` ahead holds: its buffers and its output.
fn weight(entry: &SegmentEntry) -> u64 {
    entry.memory().saturating_add(entry.new_len)
}

/// Whether segment `entry` is small enough to be decoded ahead.
pub(crate) fn fits(entry: &SegmentEntry) -> bool {
    weight(entry) <= AHEAD_SEGMENT
}

/// A segment's output kept in memory: its bytes, with long zero runs kept
/// as lengths, to be written later as the writer would have had them.
/// Its memory is bounded by the output's length whatever the ops: short
/// zero runs are bytes (as the writer makes them anyway), and pieces of
/// one kind in a row are one piece, so there is at most one piece per
/// [`SHORT_ZERO_RUN`] of output, plus one.
#[derive(Debug)]
pub(crate) struct Recorded {
    bytes: Vec<u8>,
    pieces: Vec<Piece>,
    /// The target, for the new-image bytes the segment copies.
    view: PutView,
}

#[derive(Debug, Clone, Copy)]
enum Piece {
    /// The next this many bytes of `bytes`.
    Bytes(usize),
    /// This many zero bytes.
    Zeros(u64),
}

impl Sink for Recorded {
    type Error = io::Error;

    fn write_bytes(&mut self, bytes: &[u8]) -> io::Result<()> {
        self.bytes.extend_from_slice(bytes);
        self.count_bytes(bytes.len());
        Ok(())
    }

    fn write_zeros(&mut self, len: u64) -> io::Result<()> {
        if len < SHORT_ZERO_RUN {
            let len = len as usize;
            self.bytes.resize(self.bytes.len() + len, 0);
            self.count_bytes(len);
            return Ok(());
        }
        match self.pieces.last_mut() {
            Some(Piece::Zeros(n)) => *n += len,
            _ => self.pieces.push(Piece::Zeros(len)),
        }
        Ok(())
    }

    /// Reads new-image bytes from the target once the writer thread has
    /// put them (the run hands them over before it waits for this
    /// segment); past [`READ_BACK_PATIENCE`] the segment is applied again
    /// by the run, in its turn.
    fn read_back(&mut self, offset: u64, buf: &mut [u8]) -> io::Result<()> {
        self.view.read_at(offset, buf, READ_BACK_PATIENCE)
    }
}

impl Recorded {
    /// Counts `len` bytes just added to `bytes`.
    fn count_bytes(&mut self, len: usize) {
        match self.pieces.last_mut() {
            _ if len == 0 => {}
            Some(Piece::Bytes(n)) => *n += len,
            _ => self.pieces.push(Piece::Bytes(len)),
        }
    }

    /// Bytes of new image it holds.
    fn len(&self) -> u64 {
        self.pieces
            .iter()
            .map(|p| match *p {
                Piece::Bytes(n) => n as u64,
                Piece::Zeros(n) => n,
            })
            .sum()
    }

    /// Writes the recorded output into `sink`, the segment starting at
    /// `start` of the new image.
    ///
    /// # Errors
    /// The sink's, with the new-image offset of the write that failed.
    pub(crate) fn replay<K: Sink>(
        &self,
        start: u64,
        sink: &mut K,
    ) -> Result<(), SegmentError<K::Error>> {
        let mut at = 0usize;
        let mut offset = start;
        for piece in &self.pieces {
            let written = match *piece {
                Piece::Bytes(len) => {
                    let bytes = &self.bytes[at..at + len];
                    at += len;
                    sink.write_bytes(bytes).map(|()| len as u64)
                }
                Piece::Zeros(len) => sink.write_zeros(len).map(|()| len),
            };
            offset += written.map_err(|error| SegmentError::Write { offset, error })?;
        }
        Ok(())
    }
}

/// A segment handed to a helper.
struct Job {
    segment: usize,
    payload: Vec<u8>,
}

/// A helper's answer: the output, or None when the run must apply the
/// segment itself. The payload comes back for the run to apply it.
struct Done {
    segment: usize,
    payload: Vec<u8>,
    output: Option<Recorded>,
    /// Its kind, and how long the helper took.
    kind: Option<usize>,
    time: Duration,
}

/// What the run holds of a segment read ahead of the one it writes.
pub(crate) enum Ready {
    /// Decoded by a helper.
    Output(Recorded),
    /// For the run to apply, with this payload.
    Payload(Vec<u8>),
}

/// The helpers of one run, and the segments handed to them.
pub(crate) struct Ahead {
    jobs: Option<Sender<Job>>,
    done: Receiver<Done>,
    /// Segments handed out and not yet taken back, in order, with what
    /// each counts against `window`.
    pending: VecDeque<(usize, u64)>,
    /// Bytes [`fits`] counts of the segments in `pending`.
    in_flight: u64,
    /// Answers that came before the run asked for them.
    answered: HashMap<usize, Done>,
    /// Most bytes in flight.
    window: u64,
    sandboxes: Vec<Arc<Sandboxed>>,
    /// Segments decoded ahead, and those the run applied again.
    pub(crate) decoded: u64,
    pub(crate) again: u64,
    /// What the segments decoded ahead cost the helpers.
    pub(crate) costs: Costs,
}

impl Ahead {
    /// Starts `helpers` threads in `scope`, applying segments of `index`
    /// from `source`.
    pub(crate) fn start<'scope, 'env>(
        scope: &'scope std::thread::Scope<'scope, 'env>,
        helpers: usize,
        index: &'env Index,
        source: &'env FileSource,
        view: &PutView,
        history: &Arc<History>,
        cancel: &Arc<AtomicBool>,
    ) -> Ahead {
        let (jobs, queue) = mpsc::channel::<Job>();
        let (answers, done) = mpsc::channel::<Done>();
        let queue = Arc::new(Mutex::new(queue));
        let mut sandboxes = Vec::new();
        for n in 0..helpers {
            let sandbox = Arc::new(Sandboxed::with_cancel(Arc::clone(cancel)));
            let queue = Arc::clone(&queue);
            let answers = answers.clone();
            let view = view.clone();
            let patcher = Patcher::new()
                .with_redeflate(sandbox.clone())
                .with_shared(history.clone());
            let history = Arc::clone(history);
            let body = move || helper(index, source, patcher, view, &history, &queue, &answers);
            let spawned = std::thread::Builder::new()
                .name(format!("delta-decode-{n}"))
                .spawn_scoped(scope, body);
            if spawned.is_err() {
                break;
            }
            sandboxes.push(sandbox);
        }
        let started = sandboxes.len();
        Ahead {
            jobs: Some(jobs),
            done,
            pending: VecDeque::new(),
            in_flight: 0,
            answered: HashMap::new(),
            window: started as u64 * WINDOW_PER_THREAD,
            sandboxes,
            decoded: 0,
            again: 0,
            costs: Costs::default(),
        }
    }

    /// Whether segment `entry` may be handed out now.
    pub(crate) fn has_room(&self, entry: &SegmentEntry) -> bool {
        self.jobs.is_some()
            && fits(entry)
            && self.in_flight.saturating_add(weight(entry)) <= self.window
    }

    /// Hands `segment`, whose payload is `payload`, to a helper; gives
    /// the payload back when no helper is left to take it.
    pub(crate) fn hand_out(
        &mut self,
        segment: usize,
        entry: &SegmentEntry,
        payload: Vec<u8>,
    ) -> Result<(), Vec<u8>> {
        let Some(jobs) = &self.jobs else {
            return Err(payload);
        };
        match jobs.send(Job { segment, payload }) {
            Ok(()) => {
                let weight = weight(entry);
                self.pending.push_back((segment, weight));
                self.in_flight += weight;
                Ok(())
            }
            Err(mpsc::SendError(job)) => {
                self.jobs = None;
                Err(job.payload)
            }
        }
    }

    /// Whether `segment` is the next segment handed out.
    pub(crate) fn holds(&self, segment: usize) -> bool {
        self.pending.front().is_some_and(|&(s, _)| s == segment)
    }

    /// Whether the answer for `segment` has come.
    pub(crate) fn answered(&mut self, segment: usize) -> bool {
        while let Ok(done) = self.done.try_recv() {
            self.answered.insert(done.segment, done);
        }
        self.answered.contains_key(&segment)
    }

    /// Waits for `segment`, the first handed out not yet taken; None if
    /// every helper ended without answering (a helper panicked).
    pub(crate) fn take(&mut self, segment: usize) -> Option<Ready> {
        let (first, weight) = self.pending.pop_front()?;
        debug_assert_eq!(first, segment);
        self.in_flight -= weight;
        let done = loop {
            if let Some(done) = self.answered.remove(&segment) {
                break done;
            }
            let done = self.done.recv().ok()?;
            self.answered.insert(done.segment, done);
        };
        Some(match done.output {
            Some(output) => {
                self.decoded += 1;
                let bytes = output.len();
                self.costs.add(done.kind, bytes, done.time);
                Ready::Output(output)
            }
            None => {
                self.again += 1;
                Ready::Payload(done.payload)
            }
        })
    }

    /// Stops the helpers once they finish what they hold; their
    /// re-deflater workers end.
    pub(crate) fn stop(&mut self) {
        self.jobs = None;
        for sandbox in &self.sandboxes {
            sandbox.end_worker();
        }
    }

    /// The most memory the helpers' re-deflater workers had of their own,
    /// added up (counted high: their peaks may not have come together).
    pub(crate) fn workers_peak_memory(&self) -> u64 {
        self.sandboxes
            .iter()
            .map(|s| s.worker_peak_memory())
            .fold(0, u64::saturating_add)
    }
}

impl Drop for Ahead {
    fn drop(&mut self) {
        self.stop();
    }
}

/// A helper's loop: applies the segments it is handed, until the run
/// stops handing them out.
fn helper(
    index: &Index,
    source: &FileSource,
    mut patcher: Patcher,
    view: PutView,
    history: &History,
    queue: &Mutex<Receiver<Job>>,
    answers: &Sender<Done>,
) {
    loop {
        let job = match queue.lock() {
            Ok(queue) => queue.recv(),
            Err(_) => return,
        };
        let Ok(Job { segment, payload }) = job else {
            return;
        };
        let seg = SegmentRef::of(index, segment);
        let started = Instant::now();
        let mut output = Recorded {
            // At most AHEAD_SEGMENT (checked by `fits` before it was handed
            // out), and counted in the window.
            bytes: Vec::with_capacity(seg.entry.new_len as usize),
            pieces: Vec::new(),
            view: view.clone(),
        };
        let applied = patcher.apply_segment(source, seg, &payload, &mut output);
        history.finish(segment);
        let done = Done {
            segment,
            kind: crate::costs::kind_of(&seg, &payload),
            time: started.elapsed(),
            payload,
            output: applied.is_ok().then_some(output),
        };
        if answers.send(done).is_err() {
            return;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A sink that records what it is given, failing past `fail_at` bytes.
    #[derive(Default)]
    struct Seen {
        calls: Vec<(bool, u64)>,
        len: u64,
        fail_at: Option<u64>,
    }

    impl Sink for Seen {
        type Error = io::Error;

        fn write_bytes(&mut self, bytes: &[u8]) -> io::Result<()> {
            self.calls.push((false, bytes.len() as u64));
            self.grow(bytes.len() as u64)
        }

        fn write_zeros(&mut self, len: u64) -> io::Result<()> {
            self.calls.push((true, len));
            self.grow(len)
        }
    }

    impl Seen {
        fn grow(&mut self, len: u64) -> io::Result<()> {
            self.len += len;
            match self.fail_at {
                Some(at) if self.len > at => Err(io::Error::other("full")),
                _ => Ok(()),
            }
        }
    }

    fn recorded() -> Recorded {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("t");
        let file = std::fs::File::create_new(&path).unwrap();
        let mut callback = None;
        let mut report =
            crate::progress::Reporter::new(&mut callback, crate::log::UpdateLog::disabled());
        let writer = crate::writer::TargetWriter::start(
            file,
            &path,
            0,
            crate::writer::Mode::Sparse,
            &mut report,
            0,
        )
        .unwrap();
        let mut out = Recorded {
            bytes: Vec::new(),
            pieces: Vec::new(),
            view: writer.view(),
        };
        out.write_bytes(b"abc").unwrap();
        out.write_zeros(1 << 20).unwrap();
        out.write_bytes(b"de").unwrap();
        out
    }

    #[test]
    fn a_recorded_segment_is_replayed_in_its_pieces_zero_runs_included() {
        let out = recorded();
        assert_eq!(out.len(), 5 + (1 << 20));
        let mut seen = Seen::default();
        out.replay(1000, &mut seen).unwrap();
        assert_eq!(seen.calls, [(false, 3), (true, 1 << 20), (false, 2)]);
        // A failed write names its new-image offset.
        let mut full = Seen {
            fail_at: Some(4),
            ..Seen::default()
        };
        match out.replay(1000, &mut full) {
            Err(SegmentError::Write { offset, .. }) => assert_eq!(offset, 1003),
            other => panic!("{other:?}"),
        }
    }

    /// Ops a hostile segment may hold, one byte and one zero at a time,
    /// cost no more than the output: short zero runs are bytes, and
    /// pieces in a row are merged.
    #[test]
    fn many_tiny_writes_make_few_pieces() {
        let mut out = recorded();
        let before = out.pieces.len();
        for _ in 0..100_000 {
            out.write_bytes(b"x").unwrap();
            out.write_zeros(1).unwrap();
            out.write_bytes(&[]).unwrap();
        }
        // All of it joins the bytes piece `recorded` ended with.
        assert_eq!(out.pieces.len(), before, "{:?}", out.pieces);
        out.write_zeros(SHORT_ZERO_RUN).unwrap();
        out.write_zeros(SHORT_ZERO_RUN).unwrap();
        assert_eq!(out.pieces.len(), before + 1);
        let mut seen = Seen::default();
        out.replay(0, &mut seen).unwrap();
        assert_eq!(seen.len, out.len());
        assert_eq!(seen.calls.last(), Some(&(true, 2 * SHORT_ZERO_RUN)));
    }

    #[test]
    fn threads_asked_for_are_capped_and_zero_is_the_cores() {
        assert_eq!(threads_for(3), 3);
        assert_eq!(threads_for(10_000), MAX_THREADS);
        let cores = threads_for(0);
        assert!((1..=MAX_DEFAULT_THREADS).contains(&cores));
    }
}
