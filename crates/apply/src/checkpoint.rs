//! Journal checkpoints taken while segments are written, between segments
//! and inside them, and the sink that skips what an interrupted run already
//! wrote.
//!
//! A checkpoint inside a segment records how many of its bytes are on the
//! target. A resumed run decodes that segment from its start again, without
//! writing the bytes that are already there, so the segment's output digest
//! is still checked over all of it; the whole-image digest, which re-reads
//! the target, covers what the earlier run wrote. A power cut therefore
//! costs at most one checkpoint interval of writes, however long a segment
//! is.

use crate::error::{Error, Result};
use crate::journal::{Journal, Record};
use crate::progress::Reporter;
use crate::writer::TargetWriter;
use delta_core::{SegmentError, Sink};
use std::io;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

/// When to store the next journal checkpoint, and how.
pub(crate) struct Checkpoints<'a> {
    journal: &'a Journal,
    /// The target's write path, for errors.
    path: &'a Path,
    identity: &'a Record,
    cancel: &'a AtomicBool,
    every: Every,
    /// Time and target position of the last checkpoint.
    last: (Instant, u64),
}

/// How often to checkpoint: whichever comes first.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Every {
    /// Bytes written.
    pub(crate) bytes: u64,
    /// Time passed.
    pub(crate) interval: Duration,
}

impl<'a> Checkpoints<'a> {
    /// Checkpoints of `identity`'s run into `journal`, the last one taken
    /// (or the run resumed) at `position` of the target at `path`.
    pub(crate) fn new(
        journal: &'a Journal,
        path: &'a Path,
        identity: &'a Record,
        cancel: &'a AtomicBool,
        every: Every,
        position: u64,
    ) -> Checkpoints<'a> {
        Checkpoints {
            journal,
            path,
            identity,
            cancel,
            every,
            last: (Instant::now(), position),
        }
    }

    /// Whether `position` is far enough, in bytes or time, from the last
    /// checkpoint.
    pub(crate) fn due(&self, position: u64) -> bool {
        position - self.last.1 >= self.every.bytes || self.last.0.elapsed() >= self.every.interval
    }

    /// Makes everything written durable, then records that segments
    /// `0..segments_done` and `segment_bytes` bytes of the next one are on
    /// the target.
    pub(crate) fn store(
        &mut self,
        writer: &mut TargetWriter,
        segments_done: u64,
        segment_bytes: u64,
    ) -> Result<()> {
        writer.sync().map_err(|source| Error::Io {
            op: "write",
            path: self.path.to_owned(),
            source,
        })?;
        self.journal.store(&Record {
            segments_done,
            segment_bytes,
            ..self.identity.clone()
        })?;
        self.last = (Instant::now(), writer.position());
        Ok(())
    }
}

/// Why a segment's sink failed: the target's I/O, or the run stopping the
/// segment (a checkpoint that could not be stored, a cancel). The stop
/// reaches the run as it was made, so it is never mistaken for the
/// target's I/O failing.
#[derive(Debug)]
pub(crate) enum SinkError {
    /// Writing or reading back the target failed.
    Io(io::Error),
    /// The run stops here, for this reason.
    Stop(Error),
}

impl From<io::Error> for SinkError {
    fn from(e: io::Error) -> Self {
        SinkError::Io(e)
    }
}

/// A failed segment: `Ok` with the run's error when its sink stopped it,
/// else `Err` with what failed, as the segment's error.
pub(crate) fn stopped(e: SegmentError<SinkError>) -> std::result::Result<Error, delta_core::Error> {
    match e {
        SegmentError::Segment(e) => Err(e),
        SegmentError::Write {
            error: SinkError::Stop(stop),
            ..
        }
        | SegmentError::ReadBack {
            error: SinkError::Stop(stop),
            ..
        } => Ok(stop),
        SegmentError::Write {
            offset,
            error: SinkError::Io(source),
        } => Err(delta_core::Error::Write { offset, source }),
        SegmentError::ReadBack {
            offset,
            len,
            error: SinkError::Io(source),
        } => Err(delta_core::Error::ReadBack {
            offset,
            len,
            source,
        }),
    }
}

/// The sink one segment writes through: drops the first `skip` bytes (an
/// interrupted run wrote them), then writes to the target, reports bytes,
/// storing a checkpoint whenever one is due and stopping at a cancel
/// request.
pub(crate) struct SegmentSink<'s, 'a, 'r> {
    writer: &'s mut TargetWriter,
    checkpoints: &'s mut Checkpoints<'a>,
    report: &'s mut Reporter<'r>,
    /// Index of the segment.
    segment: u64,
    /// Its first byte in the new image.
    start: u64,
    /// Bytes still to drop.
    skip: u64,
    /// Size of the new image, for progress.
    total: u64,
}

/// Where one segment goes, for [`SegmentSink::new`].
pub(crate) struct SegmentPlace {
    /// Index of the segment.
    pub(crate) segment: u64,
    /// Its first byte in the new image.
    pub(crate) start: u64,
    /// Bytes an interrupted run already wrote.
    pub(crate) skip: u64,
    /// Size of the new image.
    pub(crate) total: u64,
}

impl<'s, 'a, 'r> SegmentSink<'s, 'a, 'r> {
    pub(crate) fn new(
        writer: &'s mut TargetWriter,
        checkpoints: &'s mut Checkpoints<'a>,
        report: &'s mut Reporter<'r>,
        place: SegmentPlace,
    ) -> SegmentSink<'s, 'a, 'r> {
        SegmentSink {
            writer,
            checkpoints,
            report,
            segment: place.segment,
            start: place.start,
            skip: place.skip,
            total: place.total,
        }
    }

    /// Bytes of `len` already on the target; the rest must be written.
    fn drop_written(&mut self, len: u64) -> u64 {
        let dropped = self.skip.min(len);
        self.skip -= dropped;
        dropped
    }

    fn after_write(&mut self) -> std::result::Result<(), SinkError> {
        let position = self.writer.position();
        self.report.bytes(position, self.total);
        let cancelled = self.checkpoints.cancel.load(Ordering::Relaxed);
        if !cancelled && !self.checkpoints.due(position) {
            return Ok(());
        }
        let stop = match self
            .checkpoints
            .store(self.writer, self.segment, position - self.start)
        {
            Err(e) => e,
            Ok(()) if cancelled => Error::Cancelled,
            Ok(()) => return Ok(()),
        };
        Err(SinkError::Stop(stop))
    }
}

impl Sink for SegmentSink<'_, '_, '_> {
    type Error = SinkError;

    fn write_bytes(&mut self, bytes: &[u8]) -> std::result::Result<(), SinkError> {
        let dropped = self.drop_written(bytes.len() as u64) as usize;
        if dropped == bytes.len() {
            return Ok(());
        }
        self.writer.write_bytes(&bytes[dropped..])?;
        self.after_write()
    }

    fn write_zeros(&mut self, len: u64) -> std::result::Result<(), SinkError> {
        let dropped = self.drop_written(len);
        if dropped == len {
            return Ok(());
        }
        self.writer.write_zeros(len - dropped)?;
        self.after_write()
    }

    fn read_back(&mut self, offset: u64, buf: &mut [u8]) -> std::result::Result<(), SinkError> {
        Ok(self.writer.read_back(offset, buf)?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::journal::State;
    use crate::writer::Mode;

    struct Fixture {
        dir: tempfile::TempDir,
        journal: Journal,
        identity: Record,
        cancel: AtomicBool,
    }

    impl Fixture {
        fn new() -> Fixture {
            let dir = tempfile::tempdir().unwrap();
            let journal = Journal::new(dir.path().join("t.journal"));
            let identity = Record {
                version: 2,
                delta_id: "d".into(),
                old: "old".into(),
                target: "t".into(),
                segments_done: 0,
                segment_bytes: 0,
                state: State::Applying,
            };
            Fixture {
                dir,
                journal,
                identity,
                cancel: AtomicBool::new(false),
            }
        }

        /// Writes `chunks` through a sink for segment 2, which starts at
        /// byte 100 of a target already holding 100 + `written` bytes,
        /// and returns the target's bytes and the sink's failure.
        fn write(
            &self,
            written: u64,
            every_bytes: u64,
            chunks: &[&[u8]],
        ) -> (Vec<u8>, Option<Error>) {
            let path = self.dir.path().join("t");
            std::fs::write(&path, vec![7u8; 100 + written as usize]).unwrap();
            let file = std::fs::OpenOptions::new()
                .read(true)
                .write(true)
                .open(&path)
                .unwrap();
            let mut callback = None;
            let mut report = Reporter::new(&mut callback, crate::log::UpdateLog::disabled());
            let start = 100 + written;
            let mut writer =
                TargetWriter::start(file, &path, start, Mode::Sparse, &mut report, 0).unwrap();
            let mut checkpoints = Checkpoints::new(
                &self.journal,
                &path,
                &self.identity,
                &self.cancel,
                Every {
                    bytes: every_bytes,
                    interval: Duration::from_secs(3600),
                },
                start,
            );
            let place = SegmentPlace {
                segment: 2,
                start: 100,
                skip: written,
                total: 0,
            };
            let mut sink = SegmentSink::new(&mut writer, &mut checkpoints, &mut report, place);
            let mut failure = None;
            for chunk in chunks {
                match sink.write_bytes(chunk) {
                    Ok(()) => {}
                    Err(SinkError::Stop(stop)) => {
                        failure = Some(stop);
                        break;
                    }
                    Err(SinkError::Io(e)) => panic!("the target failed: {e}"),
                }
            }
            writer.sync().unwrap();
            (std::fs::read(&path).unwrap(), failure)
        }
    }

    #[test]
    fn bytes_already_written_are_skipped_not_rewritten() {
        let f = Fixture::new();
        let (target, failure) = f.write(5, u64::MAX, &[b"abc", b"defgh"]);
        assert!(failure.is_none());
        assert_eq!(&target[100..], b"\x07\x07\x07\x07\x07fgh");
        assert!(
            f.journal.load().unwrap().0.is_none(),
            "no checkpoint was due"
        );
    }

    #[test]
    fn checkpoints_inside_a_segment_record_its_written_bytes() {
        let f = Fixture::new();
        let (_, failure) = f.write(0, 4, &[b"abc", b"defgh", b"ij"]);
        assert!(failure.is_none());
        let record = f.journal.load().unwrap().0.unwrap();
        assert_eq!((record.segments_done, record.segment_bytes), (2, 8));
    }

    #[test]
    fn cancel_stops_at_a_checkpoint_of_what_was_written() {
        let f = Fixture::new();
        f.cancel.store(true, Ordering::Relaxed);
        let (target, failure) = f.write(2, u64::MAX, &[b"abcd", b"ef"]);
        assert!(matches!(failure, Some(Error::Cancelled)), "{failure:?}");
        assert_eq!(&target[100..], b"\x07\x07cd");
        let record = f.journal.load().unwrap().0.unwrap();
        assert_eq!((record.segments_done, record.segment_bytes), (2, 4));
    }
}
