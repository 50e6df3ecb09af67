//! One apply run: a value holding the delta, the old image, the target and
//! the journal, taken through its steps by [`Run::prepare`], [`Run::write`]
//! and [`Run::commit`]. Progress, log lines and warnings all go through
//! one [`Reporter`].

use crate::ahead::{self, Ahead, Ready};
use crate::checkpoint::{self, Checkpoints, Every, SegmentPlace, SegmentSink};
use crate::checks::{check_migration_data, open_source, verify_source};
use crate::costs::{self, Costs};
use crate::error::{Error, Result};
use crate::history::History;
use crate::input::DeltaInput;
use crate::journal::{self, Journal, Record, State};
use crate::progress::{Reporter, Step};
use crate::redeflate::{peak_memory_of_self, Sandboxed};
use crate::source::FileSource;
use crate::target::{self, OldImage, Target, TargetLock};
use crate::writer::{self, TargetWriter};
use crate::{locks, ApplyOptions, Outcome};
use delta_core::{to_hex as hex, Patcher, SegmentRef};
use delta_format::{Header, Index, Limits};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Instant;

/// The delta being applied: its checked index, and the stream its
/// payloads come from.
struct Delta {
    /// The input's name, for messages.
    path: PathBuf,
    index: Index,
    stream: DeltaStream,
}

/// The delta's input past its index, read front to back.
struct DeltaStream {
    path: PathBuf,
    input: Box<dyn DeltaInput>,
    /// Bytes of the delta read or skipped so far.
    at: u64,
    /// The delta's length, as its table gives it.
    len: u64,
}

/// Bytes read from the delta between progress reports of bytes received.
const READ_PIECE: usize = 256 << 10;

impl Delta {
    /// Reads the header, table and signatures of `input`, checked against
    /// `limits` and, when the input knows it, its length.
    fn open(mut input: Box<dyn DeltaInput>, limits: &Limits) -> Result<Delta> {
        let path = PathBuf::from(input.name());
        let (index, at) = crate::read_index_from(input.as_mut(), limits)?;
        let len = index.file_len;
        Ok(Delta {
            path: path.clone(),
            index,
            stream: DeltaStream {
                path,
                input,
                at,
                len,
            },
        })
    }

    fn header(&self) -> &Header {
        &self.index.header
    }

    /// Checks that a delta of unknown length ends after its last payload.
    fn check_end(&mut self) -> Result<()> {
        let stream = &mut self.stream;
        let extra = crate::input::bytes_past(stream.input.as_mut()).map_err(|e| stream.error(e))?;
        self.index
            .check_file_len(stream.at + extra)
            .map_err(|source| Error::Header {
                path: self.path.clone(),
                source,
            })
    }
}

impl DeltaStream {
    /// Reads the payload of `seg` into `payload`, skipping the payloads
    /// before it that a resumed run has written, and reporting the bytes
    /// received as they arrive.
    fn read_payload(
        &mut self,
        seg: &SegmentRef<'_>,
        payload: &mut Vec<u8>,
        report: &mut Reporter<'_>,
    ) -> Result<()> {
        if seg.payload_offset > self.at {
            let skipped = self.input.skip(seg.payload_offset - self.at);
            self.log_notes(report);
            skipped.map_err(|e| self.error(e))?;
            self.at = seg.payload_offset;
        }
        // Bounded: payload_len <= apply_memory <= memory_limit. A larger
        // segment's buffer is given back: what this one does not need
        // would sit beside its stream, its window or the re-deflater.
        let len = seg.entry.payload_len as usize;
        if payload.capacity() > len.saturating_add(1 << 20) {
            *payload = Vec::new();
        }
        payload.resize(len, 0);
        for piece in payload.chunks_mut(READ_PIECE) {
            let read = crate::input::read_full(&mut self.input, piece);
            self.log_notes(report);
            if let Err((got, e)) = read {
                // The error names the first byte not received.
                self.at += got as u64;
                return Err(self.error(e));
            }
            self.at += piece.len() as u64;
            report.received(self.at, self.len);
        }
        Ok(())
    }

    fn log_notes(&mut self, report: &mut Reporter<'_>) {
        for note in self.input.take_notes() {
            report.log.line_at(note.at, note.text);
        }
    }

    /// The error for a failed read at `at`; an early end says how long the
    /// delta should be.
    fn error(&self, e: std::io::Error) -> Error {
        let source = if e.kind() == std::io::ErrorKind::UnexpectedEof {
            std::io::Error::new(
                e.kind(),
                format!(
                    "the delta ended there: its table says it is {} bytes",
                    self.len
                ),
            )
        } else {
            e
        };
        Error::Input {
            path: self.path.clone(),
            offset: self.at,
            source,
        }
    }
}

/// Where an interrupted run left off, from its journal.
#[derive(Debug, Clone, Copy)]
struct Resume {
    /// Segments `0..segments_done` are written.
    segments_done: u64,
    /// Bytes of the next segment already written.
    segment_bytes: u64,
    /// The first byte of the new image still to write.
    offset: u64,
    /// The whole image was written and verified; only the commit is left.
    verified: bool,
}

impl Resume {
    fn of(index: &Index, record: &Record) -> Resume {
        let offset = index
            .new_offsets
            .get(record.segments_done as usize)
            .map_or(index.header.new_len, |start| start + record.segment_bytes);
        Resume {
            segments_done: record.segments_done,
            segment_bytes: record.segment_bytes,
            offset,
            verified: record.state == State::Verified,
        }
    }
}

/// One run of the applier, between its preparation and its commit.
pub(crate) struct Run<'o, 'r, 'c> {
    options: &'o ApplyOptions,
    cancel: &'o Arc<AtomicBool>,
    report: &'r mut Reporter<'c>,
    delta: Delta,
    source: FileSource,
    /// The run's hold on its target, from before the journal is read to
    /// the end of the commit.
    lock: TargetLock,
    /// Re-deflates deflate segments in bounded child processes.
    sandbox: Arc<Sandboxed>,
    old: Option<OldImage>,
    target: Target,
    journal: Journal,
    /// What the journal records for this run.
    identity: Record,
    resume: Option<Resume>,
    /// What this run's writes did on the target.
    stats: writer::WriteStats,
    /// The most memory the helpers' re-deflater workers had of their own,
    /// added up; 0 without helpers.
    helpers_peak: u64,
}

/// The paths a run is given.
pub(crate) struct Paths<'p> {
    /// The old image (None for a full-image payload).
    pub(crate) old: Option<&'p Path>,
    /// The delta.
    pub(crate) delta: Box<dyn DeltaInput>,
    /// The target.
    pub(crate) target: &'p Path,
}

impl<'o, 'r, 'c> Run<'o, 'r, 'c> {
    /// The preparing step: opens and checks the delta, the migration data,
    /// the old image and the target, and reads the journal, all before
    /// anything is written.
    ///
    /// # Errors
    /// Anything that makes the apply unsafe or impossible.
    pub(crate) fn prepare(
        options: &'o ApplyOptions,
        cancel: &'o Arc<AtomicBool>,
        report: &'r mut Reporter<'c>,
        paths: Paths<'_>,
    ) -> Result<Run<'o, 'r, 'c>> {
        report.report(Step::Preparing, 0, 0, None);
        // The table is held in memory too: about 170 bytes per segment, so
        // cap the count by the memory limit (24 MiB allows 24 Ki segments,
        // enough for images of 96 GiB even at 4 MiB per segment, unmerged).
        let limits = Limits {
            max_memory: options.memory_limit,
            memory_overhead: crate::FIXED_MEMORY,
            max_segments: (options.memory_limit / 1024).max(1024),
            ..Limits::default()
        };
        let delta = Delta::open(paths.delta, &limits).map_err(|e| or_cancelled(cancel, e))?;
        check_authentic(options, report, &delta)?;
        let header = delta.header().clone();
        let target = Target::new(paths.target)?;
        report.log.line(format!(
            "delta: {} -> {} bytes, {} segments, needs {} bytes of buffers, full={} migration={}",
            header.old_len,
            header.new_len,
            header.segment_count,
            header.apply_memory,
            header.is_full(),
            header.is_migration()
        ));
        if header.is_migration() || options.migration {
            check_migration_data(options, report)?;
        }
        let old_path = if header.is_full() { None } else { paths.old };
        let (source, old) = match old_path {
            Some(path) => {
                let (source, image) = open_source(path, &header)?;
                (source, Some(image))
            }
            None if header.is_full() => (FileSource::empty(), None),
            None => {
                return Err(Error::NeedsSource {
                    path: delta.path.clone(),
                })
            }
        };
        let journal = Journal::new(journal_path(options, &target));
        let written_names = [target.write_path(), journal.path(), journal.temp_path()];
        target.check_safe(old.as_ref(), &written_names)?;
        target.check_fits(&delta.path, header.new_len, options.max_image_size)?;
        if let (true, Some(path)) = (options.verify_source, old_path) {
            verify_source(report, &source, path, &header)?;
        }
        let identity = Record {
            version: 2,
            delta_id: hex(&delta.index.table_digest),
            old: old_path
                .map(|p| p.display().to_string())
                .unwrap_or_default(),
            target: target.path().display().to_string(),
            segments_done: 0,
            segment_bytes: 0,
            state: State::Applying,
        };
        let lock = target.lock()?;
        let mut run = Run {
            options,
            cancel,
            report,
            delta,
            source,
            old,
            target,
            lock,
            sandbox: Arc::new(Sandboxed::with_cancel(Arc::clone(cancel))),
            journal,
            identity,
            resume: None,
            stats: writer::WriteStats::default(),
            helpers_peak: 0,
        };
        run.resume = run.load_resume()?;
        Ok(run)
    }

    /// Reads the journal: where an interrupted run of this same delta, old
    /// image and target left off, if it still agrees with the target.
    fn load_resume(&mut self) -> Result<Option<Resume>> {
        let (loaded, warning) = self.journal.load()?;
        if let Some(warning) = warning {
            self.report.warn(warning);
        }
        let index = &self.delta.index;
        let identity = &self.identity;
        let record = loaded.filter(|r| {
            r.version == identity.version
                && r.delta_id == identity.delta_id
                && r.old == identity.old
                && r.target == identity.target
                && r.segments_done <= index.header.segment_count
                && r.segment_bytes
                    <= index
                        .segments
                        .get(r.segments_done as usize)
                        .map_or(0, |s| s.new_len)
                && self.target.partial_len().is_some()
        });
        let Some(resume) = record.map(|r| Resume::of(index, &r)) else {
            return Ok(None);
        };
        let new_len = index.header.new_len;
        if resume.verified && !self.target.may_hold(new_len) {
            self.report.warn(format!(
                "journal {} says the target is verified, but {} holds {} bytes, not the new \
                 image's {new_len}; discarding the journal and starting over",
                self.journal.path().display(),
                self.target.write_path().display(),
                self.target.partial_len().unwrap_or(0),
            ));
            return Ok(None);
        }
        if resume.verified {
            self.report
                .log
                .line("journal: target already verified; checking it again before the commit");
            if !self.holds_new_image()? {
                self.report.warn(format!(
                    "journal {} says the target is verified, but {} does not match the new \
                     image's digest; discarding the journal and starting over",
                    self.journal.path().display(),
                    self.target.write_path().display()
                ));
                return Ok(None);
            }
        }
        Ok(Some(resume))
    }

    /// Whether the target holds the whole new image: its digest is
    /// computed again.
    fn holds_new_image(&mut self) -> Result<bool> {
        let header = self.delta.header();
        let new_len = header.new_len;
        let file = self.target.open(&self.lock, false, self.old.as_ref(), 0)?;
        self.report.report(Step::Verifying, 0, new_len, None);
        let hasher = writer::hash_prefix(
            &file,
            self.target.write_path(),
            new_len,
            self.report,
            new_len,
        )?;
        Ok(hasher.finalize().as_bytes() == &header.new_digest)
    }

    /// The applying and verifying steps: writes the new image (what is
    /// missing of it, when resuming), checks its digest and records it
    /// verified in the journal. Nothing to do when a journal says it is
    /// verified and its digest was checked again.
    ///
    /// # Errors
    /// I/O, damaged segments, a wrong old image, a digest mismatch, or a
    /// cancel request. After data errors (nothing useful to resume) the
    /// partial file and the journal are removed.
    pub(crate) fn write(&mut self) -> Result<()> {
        if self.resume.is_some_and(|r| r.verified) {
            return Ok(());
        }
        let result = self.write_image();
        if let Err(e) = &result {
            if is_data_error(e) {
                if let Target::File { partial, .. } = &self.target {
                    let _ = std::fs::remove_file(partial);
                }
                let _ = self.journal.remove();
            }
        }
        result
    }

    fn write_image(&mut self) -> Result<()> {
        let header = self.delta.header().clone();
        let new_len = header.new_len;
        let zero_len: u64 = self.delta.index.segments.iter().map(|s| s.zero_len).sum();
        let file = self.target.open(
            &self.lock,
            self.resume.is_none(),
            self.old.as_ref(),
            new_len.saturating_sub(zero_len),
        )?;
        let start = self.resume.map_or(0, |r| r.offset);
        match self.resume {
            Some(r) if start > 0 => self.report.log.line(format!(
                "journal: resuming at segment {}, {} bytes into it (byte {start}); \
                 re-reading the written part",
                r.segments_done, r.segment_bytes
            )),
            _ => self.journal.store(&self.identity)?,
        }
        self.report.report(
            Step::Applying,
            0,
            new_len,
            (start > 0).then(|| "re-reading written part".into()),
        );
        let mode = match self.target {
            Target::File { .. } => writer::Mode::Sparse,
            Target::Block { .. } => {
                let zeroing = match file.metadata() {
                    Ok(meta) if !self.options.compare_zero_runs => {
                        crate::storage::Sysfs::default().zeroing(&meta)
                    }
                    _ => crate::storage::Zeroing::Compare,
                };
                self.report.log.line(format!(
                    "target {} is a block device: blocks compared before writing, zero \
                     runs {}",
                    self.target.write_path().display(),
                    match zeroing {
                        crate::storage::Zeroing::Discard => "discarded (a loop device)",
                        crate::storage::Zeroing::WriteZeroes => "zeroed by the device",
                        crate::storage::Zeroing::Compare => "compared",
                    }
                ));
                writer::Mode::Device(zeroing)
            }
        };
        let mut writer = TargetWriter::start(
            file,
            self.target.write_path(),
            start,
            mode,
            self.report,
            new_len,
        )?;
        if mode == writer::Mode::Device(crate::storage::Zeroing::Compare) {
            let runs = zero_segments(&self.delta.index.segments);
            self.report.log.line(format!(
                "zero runs read ahead of the writer: {} bytes in {} runs",
                runs.iter().map(|r| r.end - r.start).sum::<u64>(),
                runs.len()
            ));
            writer.scan_ahead(runs).map_err(|source| Error::Io {
                op: "write",
                path: self.target.write_path().to_owned(),
                source,
            })?;
        }
        let digest = self.apply_segments(writer)?;
        self.report.report(Step::Verifying, new_len, new_len, None);
        if digest.as_bytes() != &header.new_digest {
            return Err(Error::NewDigest {
                path: self.target.write_path().to_owned(),
            });
        }
        self.journal.store(&Record {
            segments_done: header.segment_count,
            state: State::Verified,
            ..self.identity.clone()
        })
    }

    /// Applies the segments still to do, in order, through `writer`, and
    /// returns the digest of the whole image. With more than one thread,
    /// small segments are decoded ahead by helpers ([`crate::ahead`]).
    fn apply_segments(&mut self, writer: TargetWriter) -> Result<blake3::Hash> {
        let helpers = match ahead::threads_for(self.options.threads) {
            1 => 0,
            n => n,
        };
        let Run {
            options,
            cancel,
            report,
            delta,
            source,
            sandbox,
            target,
            journal,
            identity,
            resume,
            ..
        } = self;
        let Delta {
            path: delta_path,
            index,
            stream,
        } = delta;
        let mut order = InOrder {
            options,
            cancel,
            report,
            delta_path,
            index,
            stream,
            source,
            sandbox,
            write_path: target.write_path(),
            journal,
            identity,
            resume: *resume,
            history: None,
        };
        let (digest, stats) = if helpers == 0 {
            order.write(writer, None)?
        } else {
            let index: &Index = index;
            let source: &FileSource = source;
            let view = writer.view();
            let first = resume.map_or(0, |r| r.segments_done as usize);
            let budget = helpers as u64 * ahead::HISTORY_PER_THREAD;
            let history = Arc::new(History::new(&index.new_offsets, first, budget));
            order.history = Some(Arc::clone(&history));
            std::thread::scope(|scope| {
                let mut ahead =
                    Ahead::start(scope, helpers, index, source, &view, &history, cancel);
                let written = order.write(writer, Some(&mut ahead));
                history.close();
                ahead.stop();
                order.report.log.line(format!(
                    "{helpers} threads decoding: {} segments decoded ahead, {} applied again in \
                     turn",
                    ahead.decoded, ahead.again
                ));
                written.map(|w| (w, ahead.workers_peak_memory()))
            })
            .map(|(written, peak)| {
                self.helpers_peak = peak;
                written
            })?
        };
        self.delta.check_end()?;
        self.stats = stats;
        Ok(digest)
    }

    /// The waiting and committing steps: waits for the application locks,
    /// runs the commit hook, renames a file target into place and removes
    /// the journal.
    ///
    /// # Errors
    /// A lock held past the timeout, a failed hook, a cancel request, or
    /// I/O errors.
    pub(crate) fn commit(self) -> Result<Outcome> {
        let header = self.delta.header();
        let new_len = header.new_len;
        locks::wait_for_locks(self.options, self.cancel, self.report)?;
        self.report.report(Step::Committing, 0, new_len, None);
        if let Some(command) = &self.options.commit_hook {
            run_hook(command, self.target.path())?;
            self.report
                .log
                .line(format!("commit hook `{command}` succeeded"));
        }
        if let Target::File { path, partial } = &self.target {
            self.lock.check_commit(path, partial)?;
            std::fs::rename(partial, path).map_err(|source| Error::Io {
                op: "rename into place",
                path: path.clone(),
                source,
            })?;
            journal::sync_parent(path)?;
        }
        self.journal.remove()?;
        self.report.report(Step::Done, new_len, new_len, None);
        Ok(Outcome {
            new_len,
            segments: header.segment_count,
            resumed_segments: self.resume.map_or(0, |r| r.segments_done),
            resumed_bytes: self.resume.map_or(0, |r| r.offset),
            writes: self.stats,
            new_digest: hex(&header.new_digest),
            warnings: Vec::new(),
            log_path: None,
            peak_memory: if self.helpers_peak == 0 {
                peak_memory_of_self().max(self.sandbox.peak_memory())
            } else {
                // Every worker's own memory on top of this process's peak.
                peak_memory_of_self()
                    .saturating_add(self.sandbox.worker_peak_memory())
                    .saturating_add(self.helpers_peak)
            },
        })
    }
}

/// What writing the segments in order needs of a [`Run`].
struct InOrder<'a, 'c> {
    options: &'a ApplyOptions,
    cancel: &'a Arc<AtomicBool>,
    report: &'a mut Reporter<'c>,
    delta_path: &'a Path,
    index: &'a Index,
    stream: &'a mut DeltaStream,
    source: &'a FileSource,
    sandbox: &'a Arc<Sandboxed>,
    write_path: &'a Path,
    journal: &'a Journal,
    identity: &'a Record,
    resume: Option<Resume>,
    /// The deflate content shared with the helpers, when there are any.
    history: Option<Arc<History>>,
}

impl InOrder<'_, '_> {
    /// Writes the segments still to do, in order, through `writer`,
    /// taking those `ahead` decoded from it; returns the digest of the
    /// whole image and what the writes did.
    fn write(
        &mut self,
        mut writer: TargetWriter,
        mut ahead: Option<&mut Ahead>,
    ) -> Result<(blake3::Hash, writer::WriteStats)> {
        let index = self.index;
        let new_len = index.header.new_len;
        let count = index.segments.len();
        let first = self.resume.map_or(0, |r| r.segments_done as usize);
        let mut skip = self.resume.map_or(0, |r| r.segment_bytes);
        let mut checkpoints = Checkpoints::new(
            self.journal,
            self.write_path,
            self.identity,
            self.cancel,
            Every {
                bytes: self.options.checkpoint_bytes,
                interval: self.options.checkpoint_interval,
            },
            writer.position(),
        );
        let mut patcher = Patcher::new().with_redeflate(self.sandbox.clone());
        if let Some(history) = &self.history {
            patcher = patcher.with_shared(history.clone());
        }
        let mut payload = Vec::new();
        let mut costs = Costs::default();
        // The failure to read payload `next`, once the segments before it
        // are written.
        let mut unread = None;
        // Segments `i..next` have had their payloads read: handed to a
        // helper, or (segment `i` only) held in `payload`.
        let mut next = first;
        for i in first..count {
            if self.cancel.load(Ordering::Relaxed) {
                // Segments before `i` are written: record them, unless
                // none was written in this run (the journal says so).
                if i > first {
                    checkpoints.store(&mut writer, i as u64, 0)?;
                }
                return Err(Error::Cancelled);
            }
            while next < count && unread.is_none() {
                let entry = &index.segments[next];
                let helper = ahead.as_deref_mut().filter(|a| a.has_room(entry));
                if helper.is_none() && next > i {
                    break;
                }
                let seg = SegmentRef::of(index, next);
                let read = match helper {
                    Some(helper) => {
                        let mut own = Vec::new();
                        let read = self.read_payload(&seg, &mut own);
                        if read.is_ok() {
                            match helper.hand_out(next, entry, own) {
                                Ok(()) => {}
                                // No helper left to take it: the run
                                // applies it, if it is the one it is at.
                                Err(back) if next == i => payload = back,
                                Err(_) => return Err(self.helper_ended(next)),
                            }
                        }
                        read
                    }
                    None => self.read_payload(&seg, &mut payload),
                };
                match read {
                    Ok(()) => next += 1,
                    // Segments before it are written first (and
                    // checkpointed), as without reading ahead.
                    Err(e) if next > i => unread = Some(e),
                    Err(e) => return Err(e),
                }
            }
            if next == i {
                if let Some(e) = unread.take() {
                    return Err(e);
                }
            }
            let seg = SegmentRef::of(index, i);
            let ready = match ahead.as_deref_mut().filter(|a| a.holds(i)) {
                Some(helper) => Some(self.wait_for(helper, &mut writer, i)?),
                None => None,
            };
            let decoded = match ready {
                Some(Ready::Output(output)) => Some(output),
                Some(Ready::Payload(back)) => {
                    payload = back;
                    None
                }
                None => None,
            };
            let place = SegmentPlace {
                segment: seg.index,
                start: seg.new_offset,
                skip: std::mem::take(&mut skip),
                total: new_len,
            };
            let mut sink = SegmentSink::new(&mut writer, &mut checkpoints, self.report, place);
            let applied = match &decoded {
                Some(output) => output.replay(seg.new_offset, &mut sink),
                None => {
                    let started = Instant::now();
                    let applied = patcher.apply_segment(self.source, seg, &payload, &mut sink);
                    if let Some(history) = &self.history {
                        history.finish(i);
                    }
                    let kind = costs::kind_of(&seg, &payload);
                    costs.add(kind, seg.entry.new_len, started.elapsed());
                    applied.map(|_| ())
                }
            };
            match applied.map_err(checkpoint::stopped) {
                Ok(()) => {}
                Err(Ok(stopped)) => return Err(stopped),
                Err(Err(_)) if self.cancel.load(Ordering::Relaxed) => {
                    // Stopped by the cancel (a re-deflater is killed at
                    // once): the run that resumes does this segment again.
                    if i > first {
                        checkpoints.store(&mut writer, i as u64, 0)?;
                    }
                    return Err(Error::Cancelled);
                }
                Err(Err(source)) => {
                    return Err(Error::Segment {
                        path: self.delta_path.to_owned(),
                        source,
                    })
                }
            }
            let last = i + 1 == count;
            if !last && checkpoints.due(writer.position()) {
                checkpoints.store(&mut writer, i as u64 + 1, 0)?;
            }
        }
        // The re-deflater's worker, if the last segments were deflate
        // segments, is not needed past them.
        self.sandbox.end_worker();
        if let Some(helpers) = &ahead {
            costs.merge(&helpers.costs);
        }
        self.report.log.line(costs.line());
        let io = |op, source| Error::Io {
            op,
            path: self.write_path.to_owned(),
            source,
        };
        let (digest, stats) = writer.finish().map_err(|e| io("write", e))?;
        self.report.log.line(format!(
            "target {}: {new_len} bytes of image; {} written, {} found in place, {} zeroed \
             by the device, {} read to compare",
            self.write_path.display(),
            stats.written,
            stats.skipped,
            stats.zeroed,
            stats.compared
        ));
        Ok((digest, stats))
    }

    /// Waits for the helper's answer for `segment`, handing over the bytes
    /// buffered in `writer` first if the helper may be waiting for them.
    fn wait_for(
        &self,
        helper: &mut Ahead,
        writer: &mut TargetWriter,
        segment: usize,
    ) -> Result<Ready> {
        if !helper.answered(segment) {
            writer.hand_over().map_err(|source| Error::Io {
                op: "write",
                path: self.write_path.to_owned(),
                source,
            })?;
        }
        helper
            .take(segment)
            .ok_or_else(|| self.helper_ended(segment))
    }

    /// The error of the helpers having ended (panicked) while holding or
    /// about to take `segment`.
    fn helper_ended(&self, segment: usize) -> Error {
        Error::HelperEnded {
            path: self.delta_path.to_owned(),
            segment: segment as u64,
        }
    }

    fn read_payload(&mut self, seg: &SegmentRef<'_>, payload: &mut Vec<u8>) -> Result<()> {
        self.stream
            .read_payload(seg, payload, self.report)
            .map_err(|e| or_cancelled(self.cancel, e))
    }
}

/// Refuses, before anything is written, a delta without a valid signature
/// by a trusted key (when keys are trusted) or for another image than the
/// caller expects.
fn check_authentic(options: &ApplyOptions, report: &mut Reporter<'_>, delta: &Delta) -> Result<()> {
    let trusted = crate::keys::required_keys(&options.trusted_keys, options.keyring.as_deref())?;
    if !trusted.is_empty() {
        let by = delta_core::signature::verify(&delta.index, &trusted).map_err(|source| {
            Error::Signature {
                path: delta.path.clone(),
                source,
            }
        })?;
        report
            .log
            .line(format!("signature by trusted key id {} verified", hex(&by)));
    }
    if let Some(expected) = options.expect_new {
        let found = delta.header().new_digest;
        if found != expected {
            return Err(Error::UnexpectedImage {
                path: delta.path.clone(),
                expected: hex(&expected),
                found: hex(&found),
            });
        }
    }
    Ok(())
}

/// A failure to read the delta under a cancel is the cancel: a download
/// waiting to retry gives up when the cancel flag is set.
fn or_cancelled(cancel: &AtomicBool, e: Error) -> Error {
    if cancel.load(Ordering::Relaxed) {
        Error::Cancelled
    } else {
        e
    }
}

/// Errors after which the partial target is worth nothing: damaged or
/// wrong data, not I/O that a re-run could get past.
fn is_data_error(e: &Error) -> bool {
    match e {
        Error::Segment { source, .. } => !matches!(
            source,
            delta_core::Error::Write { .. }
                | delta_core::Error::ReadSource { .. }
                | delta_core::Error::ReadBack { .. }
        ),
        Error::NewDigest { .. } | Error::SourceMismatch { .. } => true,
        _ => false,
    }
}

fn run_hook(command: &str, target: &Path) -> Result<()> {
    let status = std::process::Command::new("/bin/sh")
        .arg("-c")
        .arg(command)
        .env("DELTA_TARGET", target)
        .status();
    match status {
        Ok(s) if s.success() => Ok(()),
        Ok(s) => Err(Error::HookFailed {
            command: command.to_owned(),
            status: s.to_string(),
        }),
        Err(e) => Err(Error::HookFailed {
            command: command.to_owned(),
            status: format!("cannot start: {e}"),
        }),
    }
}

fn journal_path(options: &ApplyOptions, target: &Target) -> PathBuf {
    match target {
        Target::File { path, .. } => target::suffixed(path, ".journal"),
        Target::Block { path, .. } => {
            let name = path.file_name().unwrap_or_default().to_string_lossy();
            options
                .state_dir
                .join(format!("delta-apply-{name}.journal"))
        }
    }
}

/// The new-image ranges of the segments that make nearly nothing but zeros
/// (at least 7/8 of their bytes, as the index says), adjacent ones joined,
/// in order. Reading them ahead wastes at most 1/8 of the reads on bytes
/// that are not zero runs.
fn zero_segments(segments: &[delta_format::SegmentEntry]) -> Vec<std::ops::Range<u64>> {
    let mut runs: Vec<std::ops::Range<u64>> = Vec::new();
    let mut at = 0u64;
    for segment in segments {
        let end = at.saturating_add(segment.new_len);
        if segment.new_len > 0 && segment.zero_len >= segment.new_len / 8 * 7 {
            match runs.last_mut() {
                Some(last) if last.end == at => last.end = end,
                _ => runs.push(at..end),
            }
        }
        at = end;
    }
    runs
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reading_back_the_target_failing_is_not_damaged_data() {
        let io = || std::io::Error::other("EIO");
        let segment = |source| Error::Segment {
            path: "d".into(),
            source,
        };
        for kept in [
            delta_core::Error::ReadBack {
                offset: 0,
                len: 1,
                source: io(),
            },
            delta_core::Error::Write {
                offset: 0,
                source: io(),
            },
            delta_core::Error::ReadSource {
                offset: 0,
                len: 1,
                source: io(),
            },
        ] {
            let e = segment(kept);
            assert!(!is_data_error(&e), "{e} would delete the partial target");
        }
        assert!(is_data_error(&segment(delta_core::Error::NewDigest)));
        assert!(is_data_error(&Error::NewDigest { path: "t".into() }));
    }
}
