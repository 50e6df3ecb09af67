//! The content of rebuilt deflate streams, shared between the threads of a
//! run.
//!
//! A deflate segment decodes its content against the content of the
//! streams before it (the generator's history of gzip files). With one
//! thread the patcher keeps that content; with helpers the segment before
//! may be applied on another thread, and reading its stream back from the
//! target and inflating it again cost more CPU than helpers saved
//! (os-minor: four times the inflating). So each patcher publishes a
//! stream's content here as soon as it is decoded, before the slow
//! re-deflate, and a segment that reads it waits for it while the segment
//! that writes it is being applied.

use delta_core::SharedContent;
use std::collections::VecDeque;
use std::ops::Range;
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::{Duration, Instant};

/// Longest a segment waits for the content of a stream: past it, it reads
/// the stream back.
const PATIENCE: Duration = Duration::from_secs(60);

/// The newest contents published, within a budget of bytes.
#[derive(Debug)]
pub(crate) struct History {
    state: Mutex<State>,
    moved: Condvar,
    /// The first new-image byte of each segment.
    offsets: Vec<u64>,
    /// Most bytes of content kept.
    budget: u64,
}

#[derive(Debug)]
struct State {
    /// Newest last.
    streams: VecDeque<(Range<u64>, Arc<[u8]>)>,
    /// Bytes of content in `streams`.
    kept: u64,
    /// Segments applied (or given up): nothing more comes from them.
    finished: Vec<bool>,
    /// The run is over: nobody waits.
    closed: bool,
}

impl History {
    /// A history for segments starting at `offsets`, keeping at most
    /// `budget` bytes; the segments before `first` are finished (an
    /// earlier run wrote them).
    pub(crate) fn new(offsets: &[u64], first: usize, budget: u64) -> History {
        let finished = (0..offsets.len()).map(|s| s < first).collect();
        History {
            state: Mutex::new(State {
                streams: VecDeque::new(),
                kept: 0,
                finished,
                closed: false,
            }),
            moved: Condvar::new(),
            offsets: offsets.to_vec(),
            budget,
        }
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Segment `segment` is applied, or failed: nothing more comes from it.
    pub(crate) fn finish(&self, segment: usize) {
        if let Some(done) = self.lock().finished.get_mut(segment) {
            *done = true;
        }
        self.moved.notify_all();
    }

    /// The run stops: waiters stop waiting.
    pub(crate) fn close(&self) {
        self.lock().closed = true;
        self.moved.notify_all();
    }
}

impl SharedContent for History {
    fn publish(&self, range: Range<u64>, content: &[u8]) {
        let len = content.len() as u64;
        if len > self.budget {
            return;
        }
        let mut state = self.lock();
        state.streams.push_back((range, Arc::from(content)));
        state.kept += len;
        while state.kept > self.budget {
            match state.streams.pop_front() {
                Some((_, oldest)) => state.kept -= oldest.len() as u64,
                None => break,
            }
        }
        drop(state);
        self.moved.notify_all();
    }

    fn content(&self, range: &Range<u64>, into: &mut [u8]) -> bool {
        // The segment that writes the stream's first byte.
        let writer = self
            .offsets
            .partition_point(|&offset| offset <= range.start)
            .checked_sub(1);
        let deadline = Instant::now() + PATIENCE;
        let mut state = self.lock();
        loop {
            let found = state
                .streams
                .iter()
                .rev()
                .find(|(r, content)| r == range && content.len() == into.len());
            if let Some((_, content)) = found {
                into.copy_from_slice(content);
                return true;
            }
            let coming = writer.is_some_and(|s| state.finished.get(s) == Some(&false));
            let now = Instant::now();
            if !coming || state.closed || now >= deadline {
                return false;
            }
            state = match self.moved.wait_timeout(state, deadline - now) {
                Ok((state, _)) => state,
                Err(e) => e.into_inner().0,
            };
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_reader_waits_for_content_being_decoded_and_not_for_finished_segments() {
        // Segments at 0, 100 and 200; the second is still being applied.
        let history = Arc::new(History::new(&[0, 100, 200], 1, 1 << 20));
        let mut buf = [0u8; 3];
        // The first segment is finished and published nothing: read back.
        assert!(!history.content(&(10..20), &mut buf));
        let reader = {
            let history = Arc::clone(&history);
            std::thread::spawn(move || {
                let mut buf = [0u8; 3];
                history.content(&(110..120), &mut buf).then_some(buf)
            })
        };
        std::thread::sleep(Duration::from_millis(50));
        assert!(!reader.is_finished(), "the reader waits for segment 1");
        history.publish(110..120, b"abc");
        assert_eq!(reader.join().unwrap(), Some(*b"abc"));
        // Once segment 1 is finished without another stream, nobody waits.
        history.finish(1);
        assert!(!history.content(&(150..160), &mut buf));
    }

    #[test]
    fn the_oldest_content_goes_past_the_budget() {
        let history = History::new(&[0], 0, 8);
        history.publish(0..10, b"aaaa");
        history.publish(10..20, b"bbbb");
        history.publish(20..30, b"cccc");
        history.finish(0);
        let mut buf = [0u8; 4];
        assert!(!history.content(&(0..10), &mut buf));
        assert!(history.content(&(20..30), &mut buf));
        assert_eq!(&buf, b"cccc");
    }
}
