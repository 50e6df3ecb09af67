//! Zero runs read ahead of the writer, on a device whose own zeroing is not
//! trusted (an SD card, `--compare-zero-runs`), so that the card reads them
//! while it writes the data before them.
//!
//! The delta's index says which segments make (nearly) nothing but zeros,
//! but not where inside them the few other bytes go. A thread of its own
//! reads those segments' ranges from the start of the run, in pieces, and
//! notes which 4 KiB blocks of each piece are not zero. When the writer
//! reaches a zero run there, it writes zeros over just those blocks,
//! without reading; whatever else comes there it puts as it always does.
//! This thread never writes: the target is written only by the writer, in
//! order.

use crate::writer::{skipped_in_place, BLOCK};
use std::collections::BTreeMap;
use std::fs::File;
use std::ops::Range;
use std::os::unix::fs::FileExt;
use std::sync::{Arc, Condvar, Mutex, MutexGuard};

/// Bytes read at a time (and the buffer's alignment, a block, on top).
pub(crate) const SCAN_BUFFER: usize = 256 << 10;

/// A piece: what one note of blocks covers (a bitmap of 128 bytes).
const PIECE: u64 = 4 << 20;

/// Pieces read but not yet passed by the writer, at most: 1 GiB ahead of
/// it, 32 KiB of notes.
const MAX_READ_AHEAD: usize = 256;

static ZEROS: [u8; BLOCK as usize] = [0u8; BLOCK as usize];

/// What a piece of the target held when it was read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Found {
    /// Zeros in every block.
    Zeros,
    /// Bit `i` is set when block `i` of the piece is not zero.
    Blocks(Box<[u64]>),
    /// It could not be read: the writer compares it itself.
    Unread,
}

impl Found {
    /// Whether block `i` of the piece has to be written with zeros.
    pub(crate) fn must_write(&self, i: u64) -> bool {
        match self {
            Found::Zeros => false,
            Found::Blocks(bits) => bits[(i / 64) as usize] >> (i % 64) & 1 == 1,
            Found::Unread => true,
        }
    }
}

/// The reading thread, and the pieces the writer has still to pass.
pub(crate) struct ZeroScan {
    shared: Arc<Shared>,
    thread: Option<std::thread::JoinHandle<()>>,
    /// The pieces to read, in order (the thread reads the same list).
    pieces: Arc<[Range<u64>]>,
    /// Pieces the writer has passed: those before this index.
    passed: usize,
}

struct Shared {
    state: Mutex<State>,
    /// A piece was read or passed, or the scan closed.
    changed: Condvar,
}

#[derive(Default)]
struct State {
    /// Pieces read and not yet passed, by start.
    found: BTreeMap<u64, Found>,
    /// Pieces passed by the writer so far.
    passed: usize,
    /// The writer is done: read no more.
    closed: bool,
    /// The thread has ended: nothing more will be found.
    ended: bool,
    /// Bytes read.
    read: u64,
    /// A block was let stand that does not hold zeros (only the test hook
    /// of [`crate::writer`] makes one): the digest must not match.
    wrong: bool,
}

impl ZeroScan {
    /// Starts reading `runs` (whole blocks, in order) through `file`,
    /// best opened with `O_DIRECT`: reads are of whole, aligned blocks.
    ///
    /// # Errors
    /// When no thread is to be had.
    pub(crate) fn start(file: File, runs: &[Range<u64>]) -> std::io::Result<ZeroScan> {
        let pieces: Arc<[Range<u64>]> = runs
            .iter()
            .flat_map(|run| {
                (run.start..run.end)
                    .step_by(PIECE as usize)
                    .map(move |at| at..(at + PIECE).min(run.end))
            })
            .collect();
        let shared = Arc::new(Shared {
            state: Mutex::new(State::default()),
            changed: Condvar::new(),
        });
        let thread = {
            let (shared, pieces) = (Arc::clone(&shared), Arc::clone(&pieces));
            std::thread::Builder::new()
                .name("delta-zero-scan".into())
                .spawn(move || shared.run(&file, &pieces))?
        };
        Ok(ZeroScan {
            shared,
            thread: Some(thread),
            pieces,
            passed: 0,
        })
    }

    /// The piece that holds `pos`, or where the next one starts, after
    /// dropping those the writer has passed.
    pub(crate) fn piece_at(&mut self, pos: u64) -> Option<Range<u64>> {
        let passed = self.passed;
        let behind = self.pieces[passed..]
            .iter()
            .take_while(|piece| piece.end <= pos);
        self.passed += behind.count();
        if self.passed > passed {
            let mut state = self.shared.lock();
            for piece in &self.pieces[passed..self.passed] {
                state.found.remove(&piece.start);
            }
            state.passed = self.passed;
            self.shared.changed.notify_all();
        }
        self.pieces.get(self.passed).cloned()
    }

    /// What the piece starting at `start` held, once it is read.
    pub(crate) fn found(&self, start: u64) -> Found {
        let mut state = self.shared.lock();
        loop {
            if let Some(found) = state.found.get(&start) {
                return found.clone();
            }
            if state.ended {
                return Found::Unread;
            }
            state = self.shared.wait(state);
        }
    }

    /// Stops reading and returns the bytes read, and whether a block not
    /// holding zeros was let stand.
    pub(crate) fn finish(mut self) -> (u64, bool) {
        self.close();
        let state = self.shared.lock();
        (state.read, state.wrong)
    }

    fn close(&mut self) {
        self.shared.lock().closed = true;
        self.shared.changed.notify_all();
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

impl Drop for ZeroScan {
    fn drop(&mut self) {
        self.close();
    }
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn wait<'a>(&self, state: MutexGuard<'a, State>) -> MutexGuard<'a, State> {
        self.changed.wait(state).unwrap_or_else(|e| e.into_inner())
    }

    /// Reads `pieces` in order, at most [`MAX_READ_AHEAD`] ahead of the
    /// writer, until all are read or the writer is done.
    fn run(&self, file: &File, pieces: &[Range<u64>]) {
        // However this thread ends, nobody waits for it to read more.
        struct End<'a>(&'a Shared);
        impl Drop for End<'_> {
            fn drop(&mut self) {
                self.0.lock().ended = true;
                self.0.changed.notify_all();
            }
        }
        let _end = End(self);
        // Aligned for `O_DIRECT` reads.
        let mut buf = vec![0u8; SCAN_BUFFER + BLOCK as usize];
        let align = buf.as_ptr().align_offset(BLOCK as usize);
        let buf = &mut buf[align..align + SCAN_BUFFER];
        for (n, piece) in pieces.iter().enumerate() {
            {
                let mut state = self.lock();
                while !state.closed && n >= state.passed + MAX_READ_AHEAD {
                    state = self.wait(state);
                }
                if state.closed {
                    break;
                }
            }
            let (found, wrong) = read_piece(file, piece.clone(), buf);
            let mut state = self.lock();
            if found != Found::Unread {
                state.read += piece.end - piece.start;
            }
            state.wrong |= wrong;
            state.found.insert(piece.start, found);
            self.changed.notify_all();
        }
    }
}

/// Reads `piece` and notes its blocks that are not zero; also whether one
/// was let stand (the test hook).
fn read_piece(file: &File, piece: Range<u64>, buf: &mut [u8]) -> (Found, bool) {
    let blocks = (piece.end - piece.start).div_ceil(BLOCK);
    let mut bits = vec![0u64; blocks.div_ceil(64) as usize].into_boxed_slice();
    let mut any = false;
    let mut wrong = false;
    let mut pos = piece.start;
    while pos < piece.end {
        let n = (piece.end - pos).min(buf.len() as u64) as usize;
        if file.read_exact_at(&mut buf[..n], pos).is_err() {
            return (Found::Unread, false);
        }
        for (i, block) in buf[..n].chunks(BLOCK as usize).enumerate() {
            let at = pos + i as u64 * BLOCK;
            if skipped_in_place(block, &ZEROS[..block.len()], at) {
                wrong |= cfg!(debug_assertions) && block.iter().any(|&b| b != 0);
            } else {
                let index = (at - piece.start) / BLOCK;
                bits[(index / 64) as usize] |= 1 << (index % 64);
                any = true;
            }
        }
        pos += n as u64;
    }
    match any {
        true => (Found::Blocks(bits), wrong),
        false => (Found::Zeros, wrong),
    }
}
