//! The fixed header and the segment table.
//!
//! A delta file is `header (128 bytes) | segment table (136 bytes per
//! segment) | table digest (32 bytes) | payloads`. The header and table are
//! fixed-size little-endian records so that a device can read them with two
//! bounded reads and decide, before writing anything, whether it can apply
//! the delta (sizes, source digest, memory). The table digest covers both,
//! so a damaged header is reported as such instead of as a confusing error
//! later. Payload offsets are not stored: they are the running sum of
//! `payload_len`, which leaves nothing to disagree with.

use crate::error::{Error, Result};

/// Magic bytes at offset 0 (PNG-style: a high byte, CR LF, ^Z and LF catch
/// transfers that mangle binary files).
pub const MAGIC: [u8; 8] = [0x89, b'D', b'L', b'T', b'\r', b'\n', 0x1a, b'\n'];
/// The newest format version this build reads and writes: a delta is
/// version 5 exactly when it has [`FLAG_DEFLATE_CHUNKS`], else version 4
/// exactly when it has [`FLAG_LZMA`], else version 3 exactly when it has
/// [`FLAG_SEGMENT_KINDS`], else version 2 (so deltas that need nothing new
/// stay readable by older appliers, and an older applier refuses a delta
/// it cannot apply before it writes anything).
pub const VERSION: u32 = 6;
/// The oldest format version this build reads.
pub const MIN_VERSION: u32 = 2;
/// Bytes of the fixed header.
pub const HEADER_LEN: usize = 128;
/// Bytes of one segment table entry.
pub const ENTRY_LEN: usize = 136;
/// Bytes of a blake3 digest.
pub const DIGEST_LEN: usize = 32;
/// Extra decompressed bytes a segment stream may hold beyond `2 * new_len`.
pub const STREAM_SLACK: u64 = 4096;

/// Most old-image bytes all segments together may reference (the sum of
/// their `ref_len`): the applier reads each segment's window, so without a
/// bound a delta of a few hundred bytes could make it read the same old
/// bytes thousands of times. The generator's defaults stay under a quarter
/// of this (windows of at most 8 MiB per segment of 4 MiB or more).
pub fn max_reference_total(old_len: u64, new_len: u64) -> u64 {
    old_len
        .saturating_add(new_len)
        .saturating_mul(REFERENCE_FACTOR)
        .saturating_add(REFERENCE_SLACK)
}

/// Factor of [`max_reference_total`] on `old_len + new_len`.
pub const REFERENCE_FACTOR: u64 = 4;

/// Constant part of [`max_reference_total`]: 64 MiB.
pub const REFERENCE_SLACK: u64 = 64 << 20;

/// A blake3 digest.
pub type Digest = [u8; DIGEST_LEN];

/// Header flag: the payload needs no old image (a full-image payload).
pub const FLAG_FULL: u32 = 1;
/// Header flag: the update is a 1.x → 2.x migration; the applier must run
/// the `/data` size preflight first.
pub const FLAG_MIGRATION: u32 = 2;
/// Header flag: segments may hold COPY_NEW ops, which copy bytes that
/// earlier segments produced; a segment then depends on the new image
/// before it as well as on the old image.
pub const FLAG_COPY_NEW: u32 = 4;
/// Header flag: every payload starts with a window list (see
/// [`window`](crate::window)), so a segment's reference prefix may be made
/// of several old-image ranges.
pub const FLAG_WINDOW_LIST: u32 = 8;
/// Header flag: a signature block (see [`signature`](crate::signature))
/// follows the table digest, before the first payload.
pub const FLAG_SIGNED: u32 = 16;
/// Header flag (version 3): every payload starts with a kind byte (see
/// [`kind`](crate::kind)), so a segment may be made other than by ops,
/// e.g. a deflate stream re-compressed from its inflated content.
pub const FLAG_SEGMENT_KINDS: u32 = 32;
/// Header flag (version 4, only with [`FLAG_SEGMENT_KINDS`]): segments of
/// kind [`LZMA`](crate::kind::LZMA) may occur.
pub const FLAG_LZMA: u32 = 64;
/// Header flag (version 5, only with [`FLAG_SEGMENT_KINDS`]): segments of
/// kind [`DEFLATE_CHUNKS`](crate::kind::DEFLATE_CHUNKS) may occur.
pub const FLAG_DEFLATE_CHUNKS: u32 = 128;
/// Header flag (version 6, only with [`FLAG_SEGMENT_KINDS`]): segments of
/// kind [`EXEC`](crate::kind::EXEC) may occur.
pub const FLAG_EXEC: u32 = 256;
const KNOWN_FLAGS: u32 = FLAG_FULL
    | FLAG_MIGRATION
    | FLAG_COPY_NEW
    | FLAG_WINDOW_LIST
    | FLAG_SIGNED
    | FLAG_SEGMENT_KINDS
    | FLAG_LZMA
    | FLAG_DEFLATE_CHUNKS
    | FLAG_EXEC;

/// The version a header with `flags` is written as (see [`VERSION`]).
fn version_of(flags: u32) -> u32 {
    if flags & FLAG_EXEC != 0 {
        VERSION
    } else if flags & FLAG_DEFLATE_CHUNKS != 0 {
        5
    } else if flags & FLAG_LZMA != 0 {
        4
    } else if flags & FLAG_SEGMENT_KINDS != 0 {
        3
    } else {
        MIN_VERSION
    }
}

/// The fixed-size header at the start of every delta file.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Header {
    /// [`FLAG_FULL`], [`FLAG_MIGRATION`], [`FLAG_COPY_NEW`],
    /// [`FLAG_WINDOW_LIST`].
    pub flags: u32,
    /// Size of the old image in bytes (0 for a full payload).
    pub old_len: u64,
    /// Size of the new image in bytes.
    pub new_len: u64,
    /// blake3 of the whole old image.
    pub old_digest: Digest,
    /// blake3 of the whole new image.
    pub new_digest: Digest,
    /// Generator parameter: block size of the matcher, in bytes.
    pub block_size: u32,
    /// Generator parameter: zstd level used for payloads.
    pub zstd_level: i32,
    /// Largest `new_len` of any segment, in bytes.
    pub max_segment_len: u64,
    /// Largest `payload_len + stream_len + ref_len` of any segment: the
    /// buffer memory an applier needs, in bytes (its fixed overhead comes on
    /// top).
    pub apply_memory: u64,
    /// Number of entries in the segment table.
    pub segment_count: u64,
}

/// One entry of the segment table: how to produce one contiguous range of
/// the new image.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct SegmentEntry {
    /// Bytes of the new image this segment produces (at least 1).
    pub new_len: u64,
    /// Bytes of the compressed payload (one zstd frame).
    pub payload_len: u64,
    /// Bytes of the decompressed op stream.
    pub stream_len: u64,
    /// Start of the old-image range used as the zstd reference prefix.
    pub ref_offset: u64,
    /// Length of that range (0: no prefix).
    pub ref_len: u64,
    /// Bytes produced by copy ops.
    pub copy_len: u64,
    /// Bytes produced by zero ops.
    pub zero_len: u64,
    /// Bytes produced by diff ops.
    pub diff_len: u64,
    /// Bytes produced by literal ops.
    pub literal_len: u64,
    /// blake3 of the payload bytes.
    pub payload_digest: Digest,
    /// blake3 of the bytes this segment produces.
    pub output_digest: Digest,
}

impl SegmentEntry {
    /// Buffer memory needed to apply this segment: payload, decompressed
    /// stream and reference prefix are held at once.
    pub fn memory(&self) -> u64 {
        self.payload_len
            .saturating_add(self.stream_len)
            .saturating_add(self.ref_len)
    }
}

/// Caller-imposed limits checked while decoding the header and table.
#[derive(Debug, Clone)]
pub struct Limits {
    /// Most segments accepted.
    pub max_segments: u64,
    /// Most memory accepted, in bytes: the header's
    /// [`apply_memory`](Header::apply_memory) plus `memory_overhead`.
    pub max_memory: u64,
    /// Memory the caller needs besides a delta's buffers (an applier's
    /// fixed buffers), counted against `max_memory`.
    pub memory_overhead: u64,
    /// Largest new image accepted, in bytes: the work and (for in-memory
    /// appliers) the allocation a delta may ask for.
    pub max_output: u64,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_segments: 1 << 24,
            max_memory: 1 << 30,
            memory_overhead: 0,
            max_output: 1 << 40,
        }
    }
}

impl Header {
    /// True for a full-image payload.
    pub fn is_full(&self) -> bool {
        self.flags & FLAG_FULL != 0
    }

    /// True when segments may copy from the new image before them.
    pub fn has_copy_new(&self) -> bool {
        self.flags & FLAG_COPY_NEW != 0
    }

    /// True when every payload starts with a window list.
    pub fn has_window_list(&self) -> bool {
        self.flags & FLAG_WINDOW_LIST != 0
    }

    /// True when a signature block follows the table.
    pub fn is_signed(&self) -> bool {
        self.flags & FLAG_SIGNED != 0
    }

    /// True when every payload starts with a kind byte (version 3).
    pub fn has_segment_kinds(&self) -> bool {
        self.flags & FLAG_SEGMENT_KINDS != 0
    }

    /// True when segments of kind [`LZMA`](crate::kind::LZMA) may occur
    /// (version 4).
    pub fn has_lzma(&self) -> bool {
        self.flags & FLAG_LZMA != 0
    }

    /// True when segments of kind
    /// [`DEFLATE_CHUNKS`](crate::kind::DEFLATE_CHUNKS) may occur (version 5).
    pub fn has_deflate_chunks(&self) -> bool {
        self.flags & FLAG_DEFLATE_CHUNKS != 0
    }

    /// The format version this header is written as: 5 with
    /// [`FLAG_DEFLATE_CHUNKS`], 4 with [`FLAG_LZMA`], 3 with
    /// [`FLAG_SEGMENT_KINDS`] alone, else 2.
    pub fn version(&self) -> u32 {
        version_of(self.flags)
    }

    /// True when the update is marked as a 1.x → 2.x migration.
    pub fn is_migration(&self) -> bool {
        self.flags & FLAG_MIGRATION != 0
    }

    /// Bytes that follow the header before the first payload: the table and
    /// its digest.
    ///
    /// # Errors
    /// [`Error::OverLimit`] if the table would exceed `limits`.
    pub fn table_len(&self, limits: &Limits) -> Result<u64> {
        if self.segment_count > limits.max_segments {
            return Err(Error::OverLimit {
                what: "segment count".into(),
                found: self.segment_count,
                limit: limits.max_segments,
            });
        }
        // Cannot overflow: max_segments is far below u64::MAX / ENTRY_LEN in
        // any sane configuration, but stay checked anyway.
        self.segment_count
            .checked_mul(ENTRY_LEN as u64)
            .and_then(|n| n.checked_add(DIGEST_LEN as u64))
            .ok_or(Error::InvalidField {
                field: "segment_count".into(),
                found: self.segment_count,
                expected: "a table size that fits in 64 bits".into(),
            })
    }

    /// Encodes the header into its 128 bytes.
    pub fn encode(&self) -> [u8; HEADER_LEN] {
        let mut out = [0u8; HEADER_LEN];
        let mut w = Writer(&mut out, 0);
        w.bytes(&MAGIC);
        w.u32(self.version());
        w.u32(self.flags);
        w.u64(self.old_len);
        w.u64(self.new_len);
        w.bytes(&self.old_digest);
        w.bytes(&self.new_digest);
        w.u32(self.block_size);
        w.u32(self.zstd_level as u32);
        w.u64(self.max_segment_len);
        w.u64(self.apply_memory);
        w.u64(self.segment_count);
        debug_assert_eq!(w.1, HEADER_LEN);
        out
    }

    /// Decodes and checks a header.
    ///
    /// # Errors
    /// Truncation, wrong magic, unknown version or flags, or fields that
    /// break the format's rules or `limits`.
    pub fn decode(bytes: &[u8], limits: &Limits) -> Result<Header> {
        if bytes.len() < HEADER_LEN {
            // Report wrong magic first: a short non-delta file is "not a
            // delta", not "truncated".
            let mut found = [0u8; 8];
            let n = bytes.len().min(8);
            found[..n].copy_from_slice(&bytes[..n]);
            if found[..n] != MAGIC[..n] {
                return Err(Error::BadMagic {
                    found,
                    expected: MAGIC,
                });
            }
            return Err(Error::Truncated {
                what: "header",
                offset: 0,
                need: HEADER_LEN as u64,
                have: bytes.len() as u64,
            });
        }
        let mut r = Reader(bytes, 0);
        let magic: [u8; 8] = r.array();
        if magic != MAGIC {
            return Err(Error::BadMagic {
                found: magic,
                expected: MAGIC,
            });
        }
        let version = r.u32();
        if !(MIN_VERSION..=VERSION).contains(&version) {
            return Err(Error::UnsupportedVersion {
                found: version,
                supported: VERSION,
            });
        }
        let flags = r.u32();
        if flags & !KNOWN_FLAGS != 0 {
            return Err(Error::UnknownFlags {
                found: flags,
                known: KNOWN_FLAGS,
            });
        }
        for (flag, name) in [
            (FLAG_LZMA, "LZMA"),
            (FLAG_DEFLATE_CHUNKS, "DEFLATE_CHUNKS"),
            (FLAG_EXEC, "EXEC"),
        ] {
            if flags & flag != 0 && flags & FLAG_SEGMENT_KINDS == 0 {
                return Err(invalid(
                    "flags",
                    flags.into(),
                    format!("{name} ({flag:#x}) only with SEGMENT_KINDS ({FLAG_SEGMENT_KINDS:#x})"),
                ));
            }
        }
        if version != version_of(flags) {
            return Err(invalid(
                "version",
                version.into(),
                format!(
                    "{VERSION} exactly when flag EXEC ({FLAG_EXEC:#x}) is set, else 5 exactly \
                     when flag DEFLATE_CHUNKS ({FLAG_DEFLATE_CHUNKS:#x}) is set, else 4 exactly when flag LZMA ({FLAG_LZMA:#x}) is set, else 3 exactly when \
                     flag SEGMENT_KINDS ({FLAG_SEGMENT_KINDS:#x}) is set, else {MIN_VERSION}"
                ),
            ));
        }
        let header = Header {
            flags,
            old_len: r.u64(),
            new_len: r.u64(),
            old_digest: r.array(),
            new_digest: r.array(),
            block_size: r.u32(),
            zstd_level: r.u32() as i32,
            max_segment_len: r.u64(),
            apply_memory: r.u64(),
            segment_count: r.u64(),
        };
        header.check(limits)?;
        Ok(header)
    }

    fn check(&self, limits: &Limits) -> Result<()> {
        if self.is_full() && self.old_len != 0 {
            return Err(invalid("old_len", self.old_len, "0 in a full payload"));
        }
        if self.new_len == 0 {
            if self.segment_count != 0 {
                return Err(invalid(
                    "segment_count",
                    self.segment_count,
                    "0 when new_len is 0",
                ));
            }
        } else {
            if self.segment_count == 0 || self.segment_count > self.new_len {
                return Err(invalid(
                    "segment_count",
                    self.segment_count,
                    format!("1..={} (every segment produces bytes)", self.new_len),
                ));
            }
            if self.max_segment_len == 0 {
                return Err(invalid("max_segment_len", 0, "at least 1"));
            }
        }
        if self.new_len > limits.max_output {
            return Err(Error::OverLimit {
                what: "new image (header new_len)".into(),
                found: self.new_len,
                limit: limits.max_output,
            });
        }
        let needed = self.apply_memory.saturating_add(limits.memory_overhead);
        if needed > limits.max_memory {
            let what = if limits.memory_overhead == 0 {
                "memory needed to apply (header apply_memory)".into()
            } else {
                format!(
                    "memory needed to apply (header apply_memory {} + {} bytes the applier \
                     needs besides)",
                    self.apply_memory, limits.memory_overhead
                )
            };
            return Err(Error::OverLimit {
                what,
                found: needed,
                limit: limits.max_memory,
            });
        }
        self.table_len(limits)?;
        Ok(())
    }
}

/// Bytes of the new image by how they are made (see [`Index::totals`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct OutputTotals {
    /// Copied from the old image, or from earlier new bytes.
    pub copy: u64,
    /// Zero runs.
    pub zero: u64,
    /// Diffed against the old image.
    pub diff: u64,
    /// Literal bytes.
    pub literal: u64,
}

/// A checked header and segment table, with the positions derived from them.
#[derive(Debug, Clone)]
pub struct Index {
    /// The header.
    pub header: Header,
    /// The segments, in new-image order.
    pub segments: Vec<SegmentEntry>,
    /// Offset in the new image where each segment starts.
    pub new_offsets: Vec<u64>,
    /// Offset in the delta file where each segment's payload starts.
    pub payload_offsets: Vec<u64>,
    /// Total size of a well-formed delta file with this index.
    pub file_len: u64,
    /// The table's digest, which commits to the header, the table and so
    /// to every payload and output digest: identifies the delta.
    pub table_digest: Digest,
    /// The signatures of the table digest (with [`FLAG_SIGNED`]).
    pub signatures: Vec<crate::signature::Signature>,
}

impl Index {
    /// Encodes header, table and table digest.
    pub fn encode(header: &Header, segments: &[SegmentEntry]) -> Vec<u8> {
        let mut out = Vec::with_capacity(HEADER_LEN + segments.len() * ENTRY_LEN + DIGEST_LEN);
        out.extend_from_slice(&header.encode());
        for entry in segments {
            let mut buf = [0u8; ENTRY_LEN];
            let mut w = Writer(&mut buf, 0);
            for value in [
                entry.new_len,
                entry.payload_len,
                entry.stream_len,
                entry.ref_offset,
                entry.ref_len,
                entry.copy_len,
                entry.zero_len,
                entry.diff_len,
                entry.literal_len,
            ] {
                w.u64(value);
            }
            w.bytes(&entry.payload_digest);
            w.bytes(&entry.output_digest);
            debug_assert_eq!(w.1, ENTRY_LEN);
            out.extend_from_slice(&buf);
        }
        let digest = blake3::hash(&out);
        out.extend_from_slice(digest.as_bytes());
        out
    }

    /// [`Index::encode`], with the table digest it ends with (what
    /// signatures sign).
    pub fn encode_with_digest(header: &Header, segments: &[SegmentEntry]) -> (Vec<u8>, Digest) {
        let bytes = Index::encode(header, segments);
        let mut digest = [0u8; DIGEST_LEN];
        digest.copy_from_slice(&bytes[bytes.len() - DIGEST_LEN..]);
        (bytes, digest)
    }

    /// Decodes the table that follows `header`. `header_bytes` are the 128
    /// bytes the header was decoded from, `table` the
    /// [`Header::table_len`] bytes after them.
    ///
    /// # Errors
    /// Truncation, a digest mismatch, or entries that break the rules in
    /// `FORMAT.md` (sizes that do not add up, ranges outside the old image,
    /// memory over the header's statement).
    pub fn decode(
        header: Header,
        header_bytes: &[u8],
        table: &[u8],
        limits: &Limits,
    ) -> Result<Index> {
        let table_len = header.table_len(limits)?;
        if (table.len() as u64) < table_len {
            return Err(Error::Truncated {
                what: "segment table",
                offset: HEADER_LEN as u64,
                need: table_len,
                have: table.len() as u64,
            });
        }
        let entries_len = usize::try_from(table_len).map_err(|_| {
            invalid(
                "segment_count",
                header.segment_count,
                "a table that fits in memory",
            )
        })? - DIGEST_LEN;
        let mut hasher = blake3::Hasher::new();
        hasher.update(header_bytes.get(..HEADER_LEN).unwrap_or(header_bytes));
        hasher.update(&table[..entries_len]);
        if hasher.finalize().as_bytes()[..] != table[entries_len..entries_len + DIGEST_LEN] {
            return Err(Error::HeaderDigest {
                offset: (HEADER_LEN + entries_len) as u64,
            });
        }

        let count = entries_len / ENTRY_LEN;
        let mut segments = Vec::with_capacity(count);
        let mut new_offsets = Vec::with_capacity(count);
        let mut payload_offsets = Vec::with_capacity(count);
        let mut new_offset = 0u64;
        let mut reference_total = 0u64;
        let reference_limit = max_reference_total(header.old_len, header.new_len);
        let mut payload_offset = (HEADER_LEN + entries_len + DIGEST_LEN) as u64;
        for (i, raw) in table[..entries_len].chunks_exact(ENTRY_LEN).enumerate() {
            let mut r = Reader(raw, 0);
            let entry = SegmentEntry {
                new_len: r.u64(),
                payload_len: r.u64(),
                stream_len: r.u64(),
                ref_offset: r.u64(),
                ref_len: r.u64(),
                copy_len: r.u64(),
                zero_len: r.u64(),
                diff_len: r.u64(),
                literal_len: r.u64(),
                payload_digest: r.array(),
                output_digest: r.array(),
            };
            check_entry(&header, i, &entry)?;
            reference_total = reference_total.saturating_add(entry.ref_len);
            if reference_total > reference_limit {
                return Err(invalid(
                    format!("sum of segment ref_len up to segment[{i}]"),
                    reference_total,
                    format!(
                        "at most {REFERENCE_FACTOR}*(old_len+new_len)+{REFERENCE_SLACK} = \
                         {reference_limit} bytes of old image read in all"
                    ),
                ));
            }
            new_offsets.push(new_offset);
            payload_offsets.push(payload_offset);
            new_offset = new_offset.saturating_add(entry.new_len);
            payload_offset = payload_offset
                .checked_add(entry.payload_len)
                .ok_or_else(|| {
                    invalid(
                        format!("segment[{i}].payload_len"),
                        entry.payload_len,
                        "a file size that fits in 64 bits",
                    )
                })?;
            segments.push(entry);
        }
        if new_offset != header.new_len {
            return Err(invalid(
                "sum of segment new_len",
                new_offset,
                format!("new_len from the header, {}", header.new_len),
            ));
        }
        let mut table_digest = [0u8; DIGEST_LEN];
        table_digest.copy_from_slice(&table[entries_len..entries_len + DIGEST_LEN]);
        Ok(Index {
            header,
            segments,
            new_offsets,
            payload_offsets,
            file_len: payload_offset,
            table_digest,
            signatures: Vec::new(),
        })
    }

    /// Takes the signature block that follows the table (its `len` bytes
    /// were measured with [`signature::block_len`](crate::signature::block_len)):
    /// payloads start after it.
    ///
    /// # Errors
    /// A malformed block, or a file length that overflows.
    pub fn attach_signatures(&mut self, block: &[u8]) -> Result<()> {
        self.signatures = crate::signature::decode_block(block, self.table_end())?;
        let len = block.len() as u64;
        let shift = |n: u64| {
            n.checked_add(len)
                .ok_or_else(|| invalid("signature block", len, "a file size that fits in 64 bits"))
        };
        for p in &mut self.payload_offsets {
            *p = shift(*p)?;
        }
        self.file_len = shift(self.file_len)?;
        Ok(())
    }

    /// Offset where the signature block (if any) starts: right after the
    /// table digest.
    pub fn table_end(&self) -> u64 {
        (HEADER_LEN + self.segments.len() * ENTRY_LEN + DIGEST_LEN) as u64
    }

    /// Bytes of the new image each kind of op produces, over all segments.
    pub fn totals(&self) -> OutputTotals {
        let sum = |f: fn(&SegmentEntry) -> u64| {
            self.segments
                .iter()
                .fold(0u64, |total, s| total.saturating_add(f(s)))
        };
        OutputTotals {
            copy: sum(|s| s.copy_len),
            zero: sum(|s| s.zero_len),
            diff: sum(|s| s.diff_len),
            literal: sum(|s| s.literal_len),
        }
    }

    /// Checks that a delta file of `found` bytes is as long as this index
    /// implies.
    ///
    /// # Errors
    /// [`Error::DeltaLength`] when it is shorter or longer.
    pub fn check_file_len(&self, found: u64) -> Result<()> {
        if found != self.file_len {
            return Err(Error::DeltaLength {
                expected: self.file_len,
                found,
            });
        }
        Ok(())
    }
}

fn check_entry(header: &Header, i: usize, e: &SegmentEntry) -> Result<()> {
    let field = |name: &str| format!("segment[{i}].{name}");
    if e.new_len == 0 || e.new_len > header.max_segment_len {
        return Err(invalid(
            field("new_len"),
            e.new_len,
            format!("1..={} (max_segment_len)", header.max_segment_len),
        ));
    }
    let parts = [e.copy_len, e.zero_len, e.diff_len, e.literal_len]
        .iter()
        .try_fold(0u64, |sum, &n| sum.checked_add(n));
    if parts != Some(e.new_len) {
        return Err(invalid(
            field("copy_len+zero_len+diff_len+literal_len"),
            parts.unwrap_or(u64::MAX),
            format!("new_len, {}", e.new_len),
        ));
    }
    // With segment kinds the rule depends on the kind, which the payload
    // holds: its reader checks it (see `kind`).
    let stream_max = e.new_len.saturating_mul(2).saturating_add(STREAM_SLACK);
    if e.stream_len > stream_max && !header.has_segment_kinds() {
        return Err(invalid(
            field("stream_len"),
            e.stream_len,
            format!("at most 2*new_len+{STREAM_SLACK} = {stream_max}"),
        ));
    }
    if e.payload_len == 0 {
        return Err(invalid(field("payload_len"), 0, "at least 1"));
    }
    match e.ref_offset.checked_add(e.ref_len) {
        Some(end) if end <= header.old_len => {}
        _ => {
            return Err(invalid(
                field("ref_offset+ref_len"),
                e.ref_offset.saturating_add(e.ref_len),
                format!("at most old_len, {}", header.old_len),
            ))
        }
    }
    if header.is_full() && (e.copy_len != 0 || e.diff_len != 0) {
        return Err(invalid(
            field("copy_len+diff_len"),
            e.copy_len.saturating_add(e.diff_len),
            "0 in a full payload",
        ));
    }
    if e.memory() > header.apply_memory {
        return Err(invalid(
            field("payload_len+stream_len+ref_len"),
            e.memory(),
            format!("at most apply_memory, {}", header.apply_memory),
        ));
    }
    Ok(())
}

fn invalid(field: impl Into<String>, found: u64, expected: impl Into<String>) -> Error {
    Error::InvalidField {
        field: field.into(),
        found,
        expected: expected.into(),
    }
}

/// Little-endian writer into a fixed buffer whose size the caller computed.
struct Writer<'a>(&'a mut [u8], usize);

impl Writer<'_> {
    fn bytes(&mut self, bytes: &[u8]) {
        self.0[self.1..self.1 + bytes.len()].copy_from_slice(bytes);
        self.1 += bytes.len();
    }
    fn u32(&mut self, v: u32) {
        self.bytes(&v.to_le_bytes());
    }
    fn u64(&mut self, v: u64) {
        self.bytes(&v.to_le_bytes());
    }
}

/// Little-endian reader over a buffer whose length the caller checked.
struct Reader<'a>(&'a [u8], usize);

impl Reader<'_> {
    fn array<const N: usize>(&mut self) -> [u8; N] {
        let mut out = [0u8; N];
        out.copy_from_slice(&self.0[self.1..self.1 + N]);
        self.1 += N;
        out
    }
    fn u32(&mut self) -> u32 {
        u32::from_le_bytes(self.array())
    }
    fn u64(&mut self) -> u64 {
        u64::from_le_bytes(self.array())
    }
}

#[cfg(test)]
#[path = "header_tests.rs"]
mod tests;
