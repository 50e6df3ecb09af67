//! Rebuilding deflate streams on the applier's side (segment kinds `DEFLATE`
//! and `DEFLATE_CHUNKS`, see [`delta_format::kind`]): inflate a source
//! stream exactly ([`inflate_exact`]), and re-deflate new content with the
//! corrections preflate recorded, whole ([`rebuild`]) or chunk after chunk
//! ([`Rebuilder`]). A [`Redeflate`] says where that runs: [`InProcess`] for
//! trusted deltas, a bounded worker for untrusted ones (`delta_apply`).
//!
//! The generator's half (finding the streams, proving they round-trip,
//! encoding the segments) is `generate::deflate`.
//!
//! Applier cost, measured on Debian changelogs (preflate-rs 0.7): rebuilding
//! runs at about 7 MB/s of gzip output here, and holds about twice the
//! chunk's text and stream plus 1 MiB ([`REBUILD_OVERHEAD`]).

/// Most bytes the new content of a whole (kind `DEFLATE`, version 3)
/// segment may have, and most bytes of its stream: preflate's re-deflater
/// holds its own copy of the content and grows its output (to twice the
/// stream at worst) on top of the buffers the applier keeps, so these
/// bound [`REBUILD_OVERHEAD`]. Chunked segments have no such limit.
pub(crate) const MAX_NEW_RAW: usize = 2 << 20;
/// See [`MAX_NEW_RAW`].
pub(crate) const MAX_NEW_STREAM: usize = 1 << 20;
/// Memory of preflate's re-deflater on top of the buffers an applier
/// keeps: its copy of the content ([`MAX_NEW_RAW`]), its output (twice
/// [`MAX_NEW_STREAM`] at worst) and its hash chains and tables (measured
/// 1.0 MiB).
pub(crate) const REBUILD_OVERHEAD: u64 = (MAX_NEW_RAW + 2 * MAX_NEW_STREAM) as u64 + (1 << 20);
/// Most content of earlier new streams a deflate segment's prefix holds:
/// new files share much with the ones next to them (changelogs, translated
/// manual pages), and each prefix byte costs zstd time to load and the
/// applier a byte to inflate.
pub(crate) const HISTORY: u64 = 512 << 10;

/// Inflates the raw deflate stream `input` into `out`, which it must fill
/// exactly, consuming all of `input`.
///
/// # Errors
/// A message saying what did not hold.
pub fn inflate_exact(input: &[u8], out: &mut [u8]) -> Result<(), String> {
    let mut inflater = flate2::Decompress::new(false);
    let status = inflater
        .decompress(input, out, flate2::FlushDecompress::Finish)
        .map_err(|e| format!("a source stream does not inflate: {e}"))?;
    let (read, written) = (inflater.total_in(), inflater.total_out());
    match status {
        flate2::Status::StreamEnd if written == out.len() as u64 && read == input.len() as u64 => {
            Ok(())
        }
        flate2::Status::StreamEnd => Err(format!(
            "a source stream inflates to {written} bytes from {read} of its {} bytes, expected {} bytes from all of them",
            input.len(),
            out.len()
        )),
        _ => Err(format!(
            "a source stream inflates to more than the {} bytes stated, or is cut short",
            out.len()
        )),
    }
}

/// Re-deflates `raw` as `corrections` say (preflate's reconstruction data),
/// in this process and without bounds: for corrections this process made
/// (the generator's own proof). preflate-rs is not hardened against hostile
/// corrections: on some it loops while its memory grows, so an applier of
/// untrusted deltas gives its [`Patcher`](crate::Patcher) a [`Redeflate`]
/// that bounds it (`delta_apply`'s runs it in a child process with limits).
///
/// # Errors
/// A message when the corrections are damaged or do not fit `raw`.
pub fn rebuild(raw: &[u8], corrections: &[u8]) -> Result<Vec<u8>, String> {
    // A panic inside preflate is a damaged delta, not a crash of the caller.
    let rebuilt = quietly(|| preflate_rs::recreate_whole_deflate_stream(raw, corrections));
    match rebuilt {
        Ok(Ok(stream)) => Ok(stream),
        Ok(Err(e)) => Err(format!(
            "the corrections do not rebuild it: {}",
            first_line(e.message())
        )),
        Err(_) => Err("the corrections do not rebuild it (the re-deflater failed)".into()),
    }
}

/// Rebuilds a stream cut into chunks, chunk after chunk: preflate's
/// re-deflater, which keeps the last 32 KiB of content and its predictor's
/// state between chunks. A failed chunk ends the stream: the next chunk
/// starts a new one.
#[derive(Debug, Default)]
pub struct Rebuilder {
    processor: Option<preflate_rs::RecreateStreamProcessor>,
}

impl Rebuilder {
    /// A rebuilder for a new stream.
    pub fn new() -> Rebuilder {
        Rebuilder::default()
    }

    /// The next chunk of the stream: what `corrections` rebuild from
    /// `raw`, the chunk's share of the content. Unbounded: for
    /// corrections this process made, or inside a bounded worker.
    ///
    /// # Errors
    /// One line (preflate's, without its source paths) when the
    /// corrections are damaged or do not fit `raw`.
    pub fn chunk(&mut self, raw: &[u8], corrections: &[u8]) -> Result<Vec<u8>, String> {
        let processor = self
            .processor
            .get_or_insert_with(preflate_rs::RecreateStreamProcessor::new);
        let rebuilt = quietly(|| processor.recompress(&mut std::io::Cursor::new(raw), corrections));
        match rebuilt {
            Ok(Ok((stream, _blocks))) => Ok(stream),
            Ok(Err(e)) => {
                self.processor = None;
                Err(first_line(e.message()).to_string())
            }
            Err(_) => {
                self.processor = None;
                Err("the re-deflater failed a check".into())
            }
        }
    }
}

thread_local! {
    /// A panic on this thread is preflate's, expected and caught.
    static QUIET: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
}

/// Runs preflate's `f`, catching its panics without printing them:
/// preflate-rs panics on some streams and corrections (an unwritten branch in one
/// of its hash chains, failed checks), which here are a stream that stays
/// bytes or damaged corrections, not a crash to report on stderr. Panics
/// elsewhere still go to the hook installed before.
pub(crate) fn quietly<T>(f: impl FnOnce() -> T) -> std::thread::Result<T> {
    static HOOK: std::sync::Once = std::sync::Once::new();
    HOOK.call_once(|| {
        let before = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            if !QUIET.with(std::cell::Cell::get) {
                before(info);
            }
        }));
    });
    let was = QUIET.with(|q| q.replace(true));
    let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(f));
    QUIET.with(|q| q.set(was));
    result
}

/// The first line of a dependency's message: preflate appends the source
/// paths of its build machine on the lines after it.
pub fn first_line(message: &str) -> &str {
    message.lines().next().unwrap_or("").trim_end()
}

/// The content of deflate streams rebuilt by patchers applying segments
/// at once, on other threads: a deflate segment reads the content of the
/// streams before it (its history), and with this it gets it from the
/// patcher that rebuilt it instead of reading the stream back and
/// inflating it again.
pub trait SharedContent: std::fmt::Debug + Send + Sync {
    /// Offers the content of the stream at `range` of the new image, as
    /// soon as it is decoded (before the stream is re-deflated).
    fn publish(&self, range: std::ops::Range<u64>, content: &[u8]);

    /// Fills `into` with the content of the stream at `range`, waiting
    /// while the segment that writes it is being applied; false when it
    /// is not at hand (the caller reads the stream back).
    fn content(&self, range: &std::ops::Range<u64>, into: &mut [u8]) -> bool;
}

/// How a [`Patcher`](crate::Patcher) turns a deflate segment's content and
/// corrections back into the deflate stream.
pub trait Redeflate: std::fmt::Debug + Send + Sync {
    /// The stream `corrections` rebuild from `raw`; it must be exactly
    /// `stream_len` bytes (an implementation may stop as soon as it is
    /// longer).
    ///
    /// # Errors
    /// One line saying what failed.
    fn redeflate(
        &self,
        raw: &[u8],
        corrections: &[u8],
        stream_len: usize,
    ) -> Result<Vec<u8>, String>;

    /// Starts rebuilding a stream of `raw_len` bytes of content in chunks
    /// (kind `DEFLATE_CHUNKS`).
    fn chunks(&self, raw_len: u64) -> Box<dyn RedeflateChunks + '_>;

    /// Called when the patcher applies a segment of another kind, whose
    /// buffers take `memory` bytes: a rebuilder that keeps a helper
    /// process between deflate segments may end it, so that it holds no
    /// memory beside the larger segments.
    fn idle(&self, memory: u64) {
        let _ = memory;
    }
}

/// Rebuilds one stream in chunks, for a [`Redeflate`].
pub trait RedeflateChunks {
    /// The next chunk: what `corrections` rebuild from `raw`, the chunk's
    /// content, after the chunks before it. It must be exactly
    /// `stream_len` bytes (an implementation may stop as soon as it is
    /// longer).
    ///
    /// # Errors
    /// One line saying what failed.
    fn next(
        &mut self,
        raw: &[u8],
        corrections: &[u8],
        stream_len: usize,
    ) -> Result<Vec<u8>, String>;
}

impl RedeflateChunks for Rebuilder {
    fn next(
        &mut self,
        raw: &[u8],
        corrections: &[u8],
        _stream_len: usize,
    ) -> Result<Vec<u8>, String> {
        self.chunk(raw, corrections)
            .map_err(|e| format!("the corrections do not rebuild it: {e}"))
    }
}

/// [`rebuild`] and a [`Rebuilder`] in this process: unbounded, for
/// trusted deltas only.
#[derive(Debug, Clone, Copy, Default)]
pub struct InProcess;

impl Redeflate for InProcess {
    fn redeflate(
        &self,
        raw: &[u8],
        corrections: &[u8],
        _stream_len: usize,
    ) -> Result<Vec<u8>, String> {
        rebuild(raw, corrections)
    }

    fn chunks(&self, _raw_len: u64) -> Box<dyn RedeflateChunks + '_> {
        Box::new(Rebuilder::new())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::gzip;

    #[test]
    fn inflate_exact_wants_the_stated_length() {
        let gz = gzip(&b"abc".repeat(1000), 6);
        let stream = &gz[10..gz.len() - 8];
        let mut out = vec![0; 3000];
        inflate_exact(stream, &mut out).unwrap();
        assert_eq!(out, b"abc".repeat(1000));
        for len in [2999, 3001] {
            assert!(inflate_exact(stream, &mut vec![0; len]).is_err(), "{len}");
        }
        assert!(inflate_exact(&stream[..stream.len() - 1], &mut out).is_err());
        let mut longer = stream.to_vec();
        longer.push(0);
        assert!(inflate_exact(&longer, &mut out).is_err());
    }

    #[test]
    fn damaged_corrections_are_errors() {
        let text = b"the quick brown fox jumps over the lazy dog ".repeat(200);
        let gz = gzip(&text, 9);
        let stream = &gz[10..gz.len() - 8];
        let config = preflate_rs::PreflateConfig::default();
        let (chunk, _) = preflate_rs::preflate_whole_deflate_stream(stream, &config).unwrap();
        assert_eq!(rebuild(&text, &chunk.corrections).unwrap(), stream);
        let mut rng = crate::testing::Rng::new(3);
        for _ in 0..200 {
            let mut bad = chunk.corrections.clone();
            let at = rng.below(bad.len() as u64) as usize;
            bad[at] ^= 1 << rng.below(8);
            // Either an error or some other stream: never a panic.
            let _ = rebuild(&text, &bad);
            let cut = rng.below(bad.len() as u64) as usize;
            let _ = rebuild(&text, &bad[..cut]);
        }
    }
}
