//! Deflate segments (see [`delta_format::kind`]): a gzip or zlib file of
//! the new image, rebuilt from its inflated content.
//!
//! A one-line edit of a `gzip -9n` changelog reshuffles its whole deflate
//! stream, so the block matcher finds nothing of it in the old image; the
//! inflated texts differ by that line. [`encode`] inflates the new stream
//! with preflate, which also records the corrections that make a re-deflate
//! bit-exact whichever compressor made it, compresses the new text with zstd
//! against the old text, and proves that the applier's steps ([`inflate_exact`],
//! [`rebuild`]) give back the exact bytes before the segment is used; a
//! stream that does not round-trip stays on the byte path.
//!
//! The stream is cut into chunks at deflate block boundaries, about
//! [`CHUNK_STREAM`] of stream each, and rebuilt chunk after chunk
//! ([`Rebuilder`]): the re-deflater holds one chunk and a 32 KiB window of
//! the one before, so its memory does not grow with the content, and the
//! applier decodes the content as a stream within a zstd window of at most
//! 4 MiB (segment kind `DEFLATE_CHUNKS`, format version 5).
//!
//! Applier cost, measured on Debian changelogs (preflate-rs 0.7): rebuilding
//! runs at about 7 MB/s of gzip output here, and holds about twice the
//! chunk's text and stream plus 1 MiB ([`REBUILD_OVERHEAD`]).

use crate::apply::rebuild::{quietly, rebuild, Rebuilder, HISTORY, MAX_NEW_RAW, MAX_NEW_STREAM};
use crate::error::Result;
use delta_format::kind::{self, Chunk, Deflate, Rebuild};
use delta_format::{Digest, SegmentEntry};
use std::collections::HashMap;
use std::ops::Range;
use std::sync::{Arc, Mutex, PoisonError};

/// Most bytes an old version may inflate to (it becomes part of the zstd
/// prefix, which the entry's `stream_len` counts).
pub(crate) const MAX_RAW: usize = 4 << 20;
/// Longest stream the generator cuts into chunks: its content is held
/// whole while the delta is made (not by the applier).
const MAX_CHUNKED_STREAM: usize = 64 << 20;
/// Stream bytes handed to preflate at a time when cutting a stream into
/// chunks (about 256 KiB of text): a chunk ends at the last block that
/// ends within them, or, when none does, within twice as many.
pub(crate) const CHUNK_STREAM: usize = 64 << 10;
/// Most content of one chunk the generator makes: the first chunk may
/// hold this much (see [`cut_into_chunks`]), as a whole stream once did.
const CHUNK_RAW_LIMIT: usize = 2 << 20;
/// Most applier memory (the entry's `payload_len + stream_len + ref_len`)
/// a deflate segment may need: what any segment may
/// ([`SEGMENT_MEMORY`](crate::SEGMENT_MEMORY)).
pub(crate) const MAX_MEMORY: u64 = crate::segment::SEGMENT_MEMORY;
/// Smallest stream worth a deflate segment: below it the table entry costs
/// more than the block matcher does.
const MIN_STREAM: usize = 256;

/// Where the deflate stream sits in a gzip or zlib file: the bytes before
/// and after it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Wrapper {
    pub head: usize,
    pub tail: usize,
}

/// The wrapper of a one-member gzip file (RFC 1952) or a zlib stream
/// (RFC 1950), or `None` for anything else. Where the stream ends is known
/// only once it is inflated: the tail is the trailer's length.
pub(crate) fn wrapper(file: &[u8]) -> Option<Wrapper> {
    match file {
        [0x1f, 0x8b, 8, flags, ..] if flags & 0xe0 == 0 => {
            let mut at = 10usize;
            if flags & 4 != 0 {
                let len = u16::from_le_bytes([*file.get(at)?, *file.get(at + 1)?]);
                at += 2 + usize::from(len);
            }
            for bit in [8, 16] {
                if flags & bit != 0 {
                    at += file.get(at..)?.iter().position(|&b| b == 0)? + 1;
                }
            }
            if flags & 2 != 0 {
                at += 2;
            }
            Some(Wrapper { head: at, tail: 8 }).filter(|w| w.head + w.tail < file.len())
        }
        [cmf, flg, ..]
            if cmf & 0x0f == 8
                && cmf >> 4 <= 7
                && flg & 0x20 == 0
                && (u16::from(*cmf) << 8 | u16::from(*flg)) % 31 == 0 =>
        {
            Some(Wrapper { head: 2, tail: 4 }).filter(|w| w.head + w.tail < file.len())
        }
        _ => None,
    }
}

/// A deflate file of the new image and its old version, if any.
#[derive(Debug, Clone)]
pub(crate) struct Pair {
    /// The new file's path.
    pub path: String,
    /// Its old version's path, if any.
    pub old_path: Option<String>,
    /// The new file's bytes in the new image (one run).
    pub new: Range<usize>,
    /// Its old version: the old file's bytes in the old image, in file
    /// order (empty: a new file).
    pub old: Vec<Range<u64>>,
}

/// A new deflate stream that rebuilds bit-exactly, ready to encode.
#[derive(Debug)]
pub(crate) struct Analysis {
    /// The new file's bytes in the new image.
    pub new: Range<usize>,
    /// Its stream's place in the file, its content and how it is rebuilt:
    /// what depends on the new file alone (shared through [`Streams`]).
    pub inflated: Arc<Inflated>,
    /// The old version's stream (old-image ranges) and its content.
    pub old: Option<(Vec<Range<u64>>, Vec<u8>)>,
    /// The old version is at another path (a file of the same name in a
    /// folder named alike: a renamed package, or only a namesake).
    pub renamed: bool,
}

/// How an analysed stream is rebuilt from its content.
#[derive(Debug)]
pub(crate) enum Rebuilt {
    /// At once, with these corrections (kind `DEFLATE`): streams of up to
    /// [`MAX_NEW_RAW`] of content, as version 3 appliers can.
    Whole(Vec<u8>),
    /// Chunk by chunk (kind `DEFLATE_CHUNKS`, version 5): larger ones.
    Chunks(Vec<ChunkData>),
}

/// One chunk of a stream: its share of the content, its bytes of stream
/// and the corrections that rebuild one from the other.
#[derive(Debug, Clone)]
pub struct ChunkData {
    /// Bytes of content.
    pub raw_len: usize,
    /// Bytes of stream.
    pub stream_len: usize,
    /// preflate's corrections.
    pub corrections: Vec<u8>,
}

/// Cuts the raw deflate stream `stream` into chunks at block boundaries
/// with preflate: its content and the chunks, or `None` when preflate
/// cannot take it or a chunk would pass the format's limits.
///
/// preflate-rs 0.7 estimates the compressor's parameters (its hash and
/// chain depth) from the first chunk alone, and a later chunk that needs
/// a deeper chain fails. A first chunk of `first` stream bytes is tried
/// first; the caller tries a larger one (up to [`CHUNK_RAW_LIMIT`] of
/// content) when that fails. Later chunks take [`CHUNK_STREAM`] each.
fn cut_into_chunks(stream: &[u8], first: usize) -> Option<(Vec<u8>, Vec<ChunkData>)> {
    let config = preflate_rs::PreflateConfig {
        plain_text_limit: CHUNK_RAW_LIMIT,
        // Proved by the caller with the applier's own steps.
        verify_compression: false,
        ..preflate_rs::PreflateConfig::default()
    };
    let mut processor = preflate_rs::PreflateStreamProcessor::new(&config);
    let (mut raw, mut chunks, mut at) = (Vec::new(), Vec::new(), 0usize);
    while !processor.is_done() {
        let mut slice = if chunks.is_empty() {
            first
        } else {
            CHUNK_STREAM
        };
        let chunk = loop {
            let end = at.saturating_add(slice).min(stream.len());
            let parsed = quietly(|| processor.decompress(&stream[at..end]));
            match parsed {
                Ok(Ok(chunk)) => break chunk,
                // No whole block within the slice yet: the processor is
                // back where it was, and takes a longer slice.
                Ok(Err(e))
                    if e.exit_code() == preflate_rs::ExitCode::ShortRead && end < stream.len() =>
                {
                    slice = slice.saturating_mul(2);
                }
                _ => return None,
            }
        };
        let text = processor.plain_text().text();
        let fits = chunk.compressed_size > 0
            && chunk.compressed_size as u64 <= kind::MAX_CHUNK_STREAM
            && text.len() as u64 <= kind::MAX_CHUNK_RAW
            && (chunks.len() as u64) < kind::MAX_CHUNKS;
        if !fits {
            return None;
        }
        raw.extend_from_slice(text);
        chunks.push(ChunkData {
            raw_len: text.len(),
            stream_len: chunk.compressed_size,
            corrections: chunk.corrections,
        });
        at += chunk.compressed_size;
        processor.shrink_to_dictionary();
    }
    (at == stream.len()).then_some((raw, chunks))
}

/// The content of `stream` and the corrections that rebuild it at once
/// with the applier's steps ([`rebuild`]), if it has at most
/// [`MAX_NEW_RAW`] of content.
fn whole(stream: &[u8]) -> Option<(Vec<u8>, Vec<u8>)> {
    if stream.len() > MAX_NEW_STREAM {
        return None;
    }
    let config = preflate_rs::PreflateConfig {
        plain_text_limit: MAX_NEW_RAW,
        // Proved below with the applier's own steps.
        verify_compression: false,
        ..preflate_rs::PreflateConfig::default()
    };
    let analysed = quietly(|| preflate_rs::preflate_whole_deflate_stream(stream, &config));
    let Ok(Ok((chunk, text))) = analysed else {
        return None;
    };
    let raw = text.text();
    if chunk.compressed_size != stream.len() || raw.len() > MAX_NEW_RAW {
        return None;
    }
    (rebuild(raw, &chunk.corrections).ok().as_deref() == Some(stream))
        .then(|| (raw.to_vec(), chunk.corrections))
}

/// The content and chunks of `stream` that the applier's steps rebuild it
/// from: small first chunks first (less applier memory), then a first
/// chunk of up to [`CHUNK_RAW_LIMIT`] (a whole stream, for most).
pub fn chunks_of(stream: &[u8]) -> Option<(Vec<u8>, Vec<ChunkData>)> {
    [CHUNK_STREAM, usize::MAX]
        .into_iter()
        .filter_map(|first| cut_into_chunks(stream, first))
        .find(|(raw, chunks)| rebuilds(stream, raw, chunks))
}

/// True when `chunks` rebuild `stream` from `raw` with the applier's steps
/// (a [`Rebuilder`], chunk after chunk).
fn rebuilds(stream: &[u8], raw: &[u8], chunks: &[ChunkData]) -> bool {
    let mut rebuilder = Rebuilder::new();
    let (mut at_raw, mut at) = (0, 0);
    for chunk in chunks {
        let content = &raw[at_raw..at_raw + chunk.raw_len];
        let expected = &stream[at..at + chunk.stream_len];
        if rebuilder.chunk(content, &chunk.corrections).as_deref() != Ok(expected) {
            return false;
        }
        at_raw += chunk.raw_len;
        at += chunk.stream_len;
    }
    at_raw == raw.len() && at == stream.len()
}

impl Analysis {
    /// The new stream's bytes in the new image.
    fn stream(&self) -> Range<u64> {
        let wrap = self.inflated.wrap;
        (self.new.start + wrap.head) as u64..(self.new.end - wrap.tail) as u64
    }
}

/// What [`analyse`] finds of a new file that depends on its bytes alone:
/// where its stream sits, its content and how the applier's steps rebuild
/// it. The costly part of a deflate segment (preflate runs at a few MB/s).
#[derive(Debug)]
pub(crate) struct Inflated {
    /// The stream's place in the file.
    pub wrap: Wrapper,
    /// The stream's content.
    pub raw: Vec<u8>,
    /// How the stream is rebuilt from `raw`.
    pub rebuilt: Rebuilt,
}

/// Inflates the deflate file `file` with preflate and proves the applier's
/// steps rebuild it bit-exactly, at once or chunk by chunk; `None` when it
/// is not one deflate stream that round-trips.
fn inflate_new(file: &[u8]) -> Option<Inflated> {
    let wrap = wrapper(file)?;
    let stream = &file[wrap.head..file.len() - wrap.tail];
    if stream.len() < MIN_STREAM || stream.len() > MAX_CHUNKED_STREAM {
        return None;
    }
    // Whole when it can be (older appliers take it), else in chunks.
    let (raw, rebuilt) = whole(stream)
        .map(|(raw, corrections)| (raw, Rebuilt::Whole(corrections)))
        .or_else(|| chunks_of(stream).map(|(raw, chunks)| (raw, Rebuilt::Chunks(chunks))))?;
    Some(Inflated { wrap, raw, rebuilt })
}

/// The [`Inflated`] new files of one new image, by their range in it, as
/// far as generations to that image have needed them: a generation from
/// another old image to the same new one analyses each file once.
#[derive(Debug, Default)]
pub(crate) struct Streams {
    done: Mutex<HashMap<Range<usize>, Option<Arc<Inflated>>>>,
}

impl Streams {
    /// [`inflate_new`] of `new[range]`, from the cache when it was done.
    /// Two threads asking for one range at once may both work it out (a
    /// generation asks for each range once).
    fn get(&self, new: &[u8], range: Range<usize>) -> Option<Arc<Inflated>> {
        let lock = || self.done.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(found) = lock().get(&range) {
            return found.clone();
        }
        let made = inflate_new(&new[range.clone()]).map(Arc::new);
        lock().entry(range).or_insert(made).clone()
    }
}

/// Inflates the new file of `pair` with preflate and proves the applier's
/// steps rebuild it bit-exactly, at once or chunk by chunk (or takes that
/// from `streams`); inflates its old version.
/// `None` when the new file is not one deflate stream that round-trips;
/// an old version that does not inflate is left out.
pub(crate) fn analyse(old: &[u8], new: &[u8], pair: Pair, streams: &Streams) -> Option<Analysis> {
    let inflated = streams.get(new, pair.new.clone())?;
    let old_version = (!pair.old.is_empty()).then(|| {
        let bytes: Vec<u8> = pair
            .old
            .iter()
            .flat_map(|r| &old[r.start as usize..r.end as usize])
            .copied()
            .collect();
        let old_wrap = wrapper(&bytes)?;
        let part = old_wrap.head as u64..(bytes.len() - old_wrap.tail) as u64;
        let old_raw = inflate_old(&bytes[part.start as usize..part.end as usize])?;
        Some((sub_ranges(&pair.old, part), old_raw))
    });
    Some(Analysis {
        new: pair.new,
        inflated,
        old: old_version.flatten(),
        renamed: pair.old_path.as_ref().is_some_and(|old| *old != pair.path),
    })
}

/// Highest zstd level of deflate frames. Above 12 zstd's binary-tree
/// parsers load a prefix at about 5 MB/s: on the gzip files of os-minor
/// (600 files, 256 KiB prefixes) level 19 took 33 s for frames 7% smaller
/// than level 12's in 2.4 s.
const MAX_LEVEL: i32 = 12;

/// Encodes `analyses[i]` as a deflate segment, with zstd at `level`: its
/// table entry and payload (kind byte first), or `None` when it would need
/// more than [`MAX_MEMORY`] or would not be smaller than the file. The
/// prefix is the old version's content; a new file's is, with `history`,
/// the content of the streams before it (new-image sources: the delta
/// needs `COPY_NEW`).
pub(crate) fn encode(
    new: &[u8],
    analyses: &[Analysis],
    i: usize,
    history: bool,
    output_digest: Digest,
    level: i32,
) -> Result<Option<(SegmentEntry, Vec<u8>)>> {
    let this = &analyses[i];
    let encode = |history, old| {
        let prefix = PrefixOf { history, old };
        encode_with(new, this, &analyses[..i], prefix, output_digest, level)
    };
    match &this.old {
        None => encode(history, false),
        // A file with an old version is best diffed against it alone, at
        // the full level: on os-major, alt-minor and alt-major a history
        // prefix made deltas 0.2-1.1% larger (frames at level 12, not 19).
        Some(_) if !(history && this.renamed) => encode(false, true),
        // But an old version found by its name alone may be a namesake
        // only (`libsmartcols1/changelog.gz` for `libssl3/changelog.gz`):
        // the history alone is tried too, and the smaller kept.
        Some(_) => Ok(match (encode(false, true)?, encode(true, false)?) {
            (Some(a), Some(b)) => Some(if b.1.len() < a.1.len() { b } else { a }),
            (a, b) => a.or(b),
        }),
    }
}

/// What a deflate segment's prefix holds: the contents of the streams
/// before it (up to [`HISTORY`]), its file's old version, or both.
#[derive(Debug, Clone, Copy)]
struct PrefixOf {
    history: bool,
    old: bool,
}

/// [`encode`] with a prefix of the contents of the streams of `before` and
/// of `this`'s old version, as `prefix_of` says.
fn encode_with(
    new: &[u8],
    this: &Analysis,
    before: &[Analysis],
    prefix_of: PrefixOf,
    output_digest: Digest,
    level: i32,
) -> Result<Option<(SegmentEntry, Vec<u8>)>> {
    let PrefixOf {
        history,
        old: with_old,
    } = prefix_of;
    let file = &new[this.new.clone()];
    let Inflated { wrap, raw, rebuilt } = &*this.inflated;
    let mut earlier = Vec::new();
    let mut held = 0u64;
    for before in before.iter().rev() {
        if !history || held >= HISTORY {
            break;
        }
        held += before.inflated.raw.len() as u64;
        earlier.push(before);
    }
    earlier.reverse();
    let mut sources: Vec<kind::Source> = earlier
        .iter()
        .map(|a| kind::Source {
            new_image: true,
            ranges: std::iter::once(a.stream()).collect(),
            raw_len: a.inflated.raw.len() as u64,
        })
        .collect();
    let mut prefix: Vec<u8> = earlier
        .iter()
        .flat_map(|a| a.inflated.raw.iter())
        .copied()
        .collect();
    // The old version last: nearest the frame, where matches cost least.
    if let Some((ranges, old_raw)) = this.old.as_ref().filter(|_| with_old) {
        sources.push(kind::Source {
            new_image: false,
            ranges: ranges.clone(),
            raw_len: old_raw.len() as u64,
        });
        prefix.extend_from_slice(old_raw);
    }
    // zstd's time goes to loading the prefix at high levels: large contents
    // (changelogs of hundreds of KiB) are worth the slow parser.
    let level = if raw.len() * 2 >= prefix.len() {
        level
    } else {
        level.min(MAX_LEVEL)
    };
    let (rebuild, frame) = match rebuilt {
        Rebuilt::Whole(corrections) => {
            let frame = crate::frame::compress(raw, &prefix, level, Vec::new())?;
            (Rebuild::Whole(corrections), frame)
        }
        Rebuilt::Chunks(chunks) => {
            // The window reaches back over the whole prefix when it can;
            // the applier holds it (or the whole content, if smaller).
            let span = (prefix.len() + raw.len()) as u64;
            let window_log = (64 - span.saturating_sub(1).leading_zeros() as u8)
                .clamp(kind::MIN_WINDOW_LOG, kind::MAX_WINDOW_LOG);
            let frame =
                crate::frame::compress_in_window(raw, &prefix, level, window_log, Vec::new())?;
            let chunks = chunks.iter().map(|c| Chunk {
                raw_len: c.raw_len as u64,
                stream_len: c.stream_len as u64,
                corrections: &c.corrections,
            });
            let chunks = chunks.collect();
            (Rebuild::Chunks { window_log, chunks }, frame)
        }
    };
    let parts = Deflate {
        sources,
        new_raw_len: raw.len() as u64,
        head: &file[..wrap.head],
        tail: &file[file.len() - wrap.tail..],
        rebuild,
        frame: &frame,
    };
    let mut payload = Vec::new();
    parts.encode(&mut payload);
    let entry = parts.entry(&payload, file.len() as u64, output_digest);
    let worth = payload.len() + delta_format::ENTRY_LEN < file.len();
    Ok(Some((entry, payload)).filter(|(entry, _)| worth && entry.memory() <= MAX_MEMORY))
}

/// The old stream's content, inflated as the applier will ([`inflate_exact`]:
/// to its stream end, consuming every byte), or `None`.
fn inflate_old(stream: &[u8]) -> Option<Vec<u8>> {
    let mut raw = Vec::new();
    let mut inflater = flate2::Decompress::new(false);
    raw.reserve(stream.len().saturating_mul(4).clamp(4096, MAX_RAW + 1));
    loop {
        if raw.len() == raw.capacity() {
            raw.reserve(raw.len().min(MAX_RAW));
        }
        let before = (inflater.total_in(), inflater.total_out());
        let status = inflater
            .decompress_vec(
                &stream[inflater.total_in() as usize..],
                &mut raw,
                // Not Finish: with it, miniz_oxide fails every call after
                // one that filled the buffer (old versions inflating to
                // more than 4 times their stream were dropped).
                flate2::FlushDecompress::None,
            )
            .ok()?;
        match status {
            flate2::Status::StreamEnd => break,
            _ if raw.len() > MAX_RAW => return None,
            // The inflater may stop short of a full buffer and go on at
            // the next call; a call that moves nothing means the stream
            // is cut short.
            _ if (inflater.total_in(), inflater.total_out()) == before => return None,
            _ => {}
        }
    }
    if raw.len() > MAX_RAW {
        return None;
    }
    // What inflate_exact (the applier) also requires: the stream ends at
    // its last byte.
    if inflater.total_in() != stream.len() as u64 {
        return None;
    }
    Some(raw)
}

/// The image ranges that hold bytes `part` of a file laid out as `extents`
/// (the file's bytes, in order).
fn sub_ranges(extents: &[Range<u64>], part: Range<u64>) -> Vec<Range<u64>> {
    let mut out = Vec::new();
    let mut at = 0u64;
    for extent in extents {
        let len = extent.end - extent.start;
        let (start, end) = (part.start.max(at), part.end.min(at + len));
        if start < end {
            out.push(extent.start + (start - at)..extent.start + (end - at));
        }
        at += len;
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::gzip;
    use std::io::Write;

    #[test]
    fn finds_the_stream_in_gzip_and_zlib_files() {
        let gz = gzip(b"hello hello hello", 9);
        assert_eq!(wrapper(&gz), Some(Wrapper { head: 10, tail: 8 }));
        let mut named = gz[..10].to_vec();
        named[3] |= 8;
        named.extend_from_slice(b"name\0");
        named.extend_from_slice(&gz[10..]);
        assert_eq!(wrapper(&named), Some(Wrapper { head: 15, tail: 8 }));
        let mut z = flate2::write::ZlibEncoder::new(Vec::new(), flate2::Compression::best());
        z.write_all(b"some text").unwrap();
        assert_eq!(
            wrapper(&z.finish().unwrap()),
            Some(Wrapper { head: 2, tail: 4 })
        );
        assert_eq!(wrapper(b"plain text file"), None);
        assert_eq!(wrapper(&gz[..12]), None);
    }

    #[test]
    fn sub_ranges_follow_the_extents() {
        let extents = [100..110, 50..60, 200..205];
        assert_eq!(
            sub_ranges(&extents, 5..22),
            vec![105..110, 50..60, 200..202]
        );
        assert_eq!(sub_ranges(&extents, 0..25), extents.to_vec());
    }

    #[test]
    fn old_versions_inflate_whatever_their_ratio() {
        // 100 times smaller compressed: more than the first buffer holds.
        let text = b"the same line again and again\n".repeat(100_000);
        let gz = gzip(&text, 9);
        let stream = &gz[10..gz.len() - 8];
        assert!(inflate_old(stream).as_deref() == Some(&text[..]));
        assert!(inflate_old(&stream[..stream.len() - 1]).is_none());
        let too_long = b"x".repeat(MAX_RAW + 1);
        let gz = gzip(&too_long, 9);
        assert!(inflate_old(&gz[10..gz.len() - 8]).is_none());
    }
}
