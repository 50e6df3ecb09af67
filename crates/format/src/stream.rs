//! The decompressed content of one segment: ops plus their data.
//!
//! ```text
//! varint op_count | varint lens_len | varint srcs_len | varint diff_len | varint literal_len
//! codes[op_count] | lens[lens_len] | srcs[srcs_len] | diff bytes[diff_len] | literal bytes[literal_len]
//! ```
//!
//! Ops are stored by column: one code byte per op, then every op's length
//! (varints), then the source deltas of the ops that read a source (zigzag
//! varints). Columns, diff bytes and literal bytes sit in separate sections
//! (as in bsdiff) because each compresses best next to its own kind: codes
//! repeat a few patterns, lengths and deltas are small numbers, diff bytes
//! are mostly zero, literals look like the old image. Sections are consumed
//! in order, so an applier walks five cursors forward and never looks back.

use crate::error::{Error, Result};
use crate::varint;

/// Op code: copy bytes of the old image.
pub const OP_COPY: u8 = 0;
/// Op code: a run of zero bytes.
pub const OP_ZERO: u8 = 1;
/// Op code: bytes from the literal section.
pub const OP_LITERAL: u8 = 2;
/// Op code: old bytes plus bytes of the diff section, byte-wise mod 256.
pub const OP_DIFF: u8 = 3;
/// Op code: copy bytes of the new image that earlier segments produced
/// (only with the header's `FLAG_COPY_NEW`).
pub const OP_COPY_NEW: u8 = 4;

/// One operation, with absolute old-image offsets.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Op {
    /// Copy `len` bytes of the old image from `src`.
    Copy {
        /// Offset in the old image.
        src: u64,
        /// Bytes to copy.
        len: u64,
    },
    /// Produce `len` zero bytes.
    Zero {
        /// Bytes to produce.
        len: u64,
    },
    /// Take the next `len` bytes of the literal section.
    Literal {
        /// Bytes to take.
        len: u64,
    },
    /// Add the next `len` bytes of the diff section to old bytes from `src`.
    Diff {
        /// Offset in the old image.
        src: u64,
        /// Bytes to produce.
        len: u64,
    },
    /// Copy `len` bytes of the new image from `src`, which earlier segments
    /// produced.
    CopyNew {
        /// Offset in the new image, below the segment's first byte.
        src: u64,
        /// Bytes to copy.
        len: u64,
    },
}

impl Op {
    /// Bytes of new image this op produces.
    pub fn len(&self) -> u64 {
        match *self {
            Op::Copy { len, .. }
            | Op::Zero { len }
            | Op::Literal { len }
            | Op::Diff { len, .. }
            | Op::CopyNew { len, .. } => len,
        }
    }

    /// True if the op produces nothing (never valid in a stream).
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// Encodes ops and their data sections into a segment stream.
///
/// `diff` and `literal` must hold exactly the bytes the ops consume.
pub fn encode(ops: &[Op], diff: &[u8], literal: &[u8]) -> Vec<u8> {
    let mut codes = Vec::with_capacity(ops.len());
    let mut lens = Vec::with_capacity(ops.len() * 3);
    let mut srcs = Vec::with_capacity(ops.len() * 3);
    let mut cursor = 0u64;
    let mut new_cursor = 0u64;
    for op in ops {
        let (code, src) = match *op {
            Op::Copy { src, len } => (OP_COPY, Some((src, len, &mut cursor))),
            Op::Diff { src, len } => (OP_DIFF, Some((src, len, &mut cursor))),
            Op::CopyNew { src, len } => (OP_COPY_NEW, Some((src, len, &mut new_cursor))),
            Op::Zero { .. } => (OP_ZERO, None),
            Op::Literal { .. } => (OP_LITERAL, None),
        };
        codes.push(code);
        varint::put(&mut lens, op.len());
        if let Some((src, len, cursor)) = src {
            varint::put(&mut srcs, varint::zigzag(src.wrapping_sub(*cursor) as i64));
            *cursor = src.wrapping_add(len);
        }
    }
    let mut out =
        Vec::with_capacity(50 + codes.len() + lens.len() + srcs.len() + diff.len() + literal.len());
    for n in [
        codes.len(),
        lens.len(),
        srcs.len(),
        diff.len(),
        literal.len(),
    ] {
        varint::put(&mut out, n as u64);
    }
    for section in [&codes[..], &lens, &srcs, diff, literal] {
        out.extend_from_slice(section);
    }
    out
}

/// One decoded instruction, borrowing its data from the stream.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Instruction<'a> {
    /// Copy `len` old bytes from `src`.
    Copy {
        /// Offset in the old image (checked to lie inside it).
        src: u64,
        /// Bytes to copy.
        len: u64,
    },
    /// `len` zero bytes.
    Zero {
        /// Bytes to produce.
        len: u64,
    },
    /// Literal bytes.
    Literal(&'a [u8]),
    /// Old bytes from `src` plus `delta`, byte-wise mod 256.
    Diff {
        /// Offset in the old image (checked to lie inside it).
        src: u64,
        /// Differences, one per produced byte.
        delta: &'a [u8],
    },
    /// Copy `len` bytes of the new image from `src`.
    CopyNew {
        /// Offset in the new image (checked to lie before the segment).
        src: u64,
        /// Bytes to copy.
        len: u64,
    },
}

/// Byte counts per kind of op, used to check a stream against its table
/// entry.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Totals {
    /// Bytes produced by copies, of the old image (COPY) or of the new
    /// image (COPY_NEW).
    pub copy: u64,
    /// Bytes produced by zero runs.
    pub zero: u64,
    /// Bytes produced by diffs.
    pub diff: u64,
    /// Bytes produced by literals.
    pub literal: u64,
}

/// Walks a segment stream, checking each op against the old image size and
/// the stream's sections.
#[derive(Debug)]
pub struct Decoder<'a> {
    codes: &'a [u8],
    lens: &'a [u8],
    srcs: &'a [u8],
    diff: &'a [u8],
    literal: &'a [u8],
    /// Ops read so far (the next code's index in `codes`).
    index: usize,
    /// Bytes read from `lens` and from `srcs`.
    lens_pos: usize,
    srcs_pos: usize,
    cursor: u64,
    new_cursor: u64,
    old_len: u64,
    new_limit: u64,
    totals: Totals,
}

impl<'a> Decoder<'a> {
    /// Splits `stream` into its sections.
    ///
    /// # Errors
    /// A malformed section header or sections longer than the stream.
    pub fn new(stream: &'a [u8], old_len: u64) -> Result<Decoder<'a>> {
        let mut pos = 0;
        let mut lens = [0u64; 5];
        for len in &mut lens {
            *len = varint::get(stream, &mut pos, "stream header")?;
        }
        let rest = &stream[pos..];
        let total = lens.iter().try_fold(0u64, |a, &b| a.checked_add(b));
        if total != Some(rest.len() as u64) {
            return Err(Error::StreamMismatch {
                what: "section lengths vs stream length",
                stated: total.unwrap_or(u64::MAX),
                actual: rest.len() as u64,
            });
        }
        // All five fit in `rest`, so they fit in usize.
        let [codes_len, lens_len, srcs_len, diff_len, _] = lens.map(|n| n as usize);
        let (codes, rest) = rest.split_at(codes_len);
        let (lens, rest) = rest.split_at(lens_len);
        let (srcs, rest) = rest.split_at(srcs_len);
        let (diff, literal) = rest.split_at(diff_len);
        Ok(Decoder {
            codes,
            lens,
            srcs,
            diff,
            literal,
            index: 0,
            lens_pos: 0,
            srcs_pos: 0,
            cursor: 0,
            new_cursor: 0,
            old_len,
            new_limit: 0,
            totals: Totals::default(),
        })
    }

    /// Lets COPY_NEW ops read the first `limit` bytes of the new image: the
    /// segment's offset when the header has `FLAG_COPY_NEW`. Without this,
    /// every COPY_NEW op is out of range.
    pub fn with_new_limit(mut self, limit: u64) -> Decoder<'a> {
        self.new_limit = limit;
        self
    }

    /// Returns the next instruction, or `None` once `op_count` ops were read.
    ///
    /// # Errors
    /// Unknown op codes, zero lengths, ranges outside the old image or data
    /// sections that run short.
    pub fn next_instruction(&mut self) -> Result<Option<Instruction<'a>>> {
        let Some(&code) = self.codes.get(self.index) else {
            return Ok(None);
        };
        let at = self.index as u64;
        let len = varint::get(self.lens, &mut self.lens_pos, "length section")?;
        if len == 0 {
            return Err(Error::EmptyOp { index: at });
        }
        let instruction = match code {
            OP_COPY | OP_DIFF => {
                let delta = self.next_delta()?;
                let src = step(&mut self.cursor, delta, len, self.old_len).map_err(|src| {
                    Error::SourceOutOfRange {
                        index: at,
                        src,
                        len,
                        old_len: self.old_len,
                    }
                })?;
                if code == OP_COPY {
                    self.totals.copy = add(self.totals.copy, len)?;
                    Instruction::Copy { src, len }
                } else {
                    self.totals.diff = add(self.totals.diff, len)?;
                    Instruction::Diff {
                        src,
                        delta: take(&mut self.diff, len, "diff section")?,
                    }
                }
            }
            OP_ZERO => {
                self.totals.zero = add(self.totals.zero, len)?;
                Instruction::Zero { len }
            }
            OP_LITERAL => {
                self.totals.literal = add(self.totals.literal, len)?;
                Instruction::Literal(take(&mut self.literal, len, "literal section")?)
            }
            OP_COPY_NEW => {
                let delta = self.next_delta()?;
                let src =
                    step(&mut self.new_cursor, delta, len, self.new_limit).map_err(|src| {
                        Error::NewSourceOutOfRange {
                            index: at,
                            src,
                            len,
                            limit: self.new_limit,
                        }
                    })?;
                self.totals.copy = add(self.totals.copy, len)?;
                Instruction::CopyNew { src, len }
            }
            code => return Err(Error::UnknownOp { code, offset: at }),
        };
        self.index += 1;
        Ok(Some(instruction))
    }

    /// Checks that every section was consumed exactly and returns the byte
    /// counts per kind.
    ///
    /// # Errors
    /// [`Error::StreamMismatch`] if bytes are left over.
    pub fn finish(self) -> Result<Totals> {
        let checks = [
            ("ops read", self.codes.len() as u64, self.index as u64),
            (
                "length section bytes",
                self.lens.len() as u64,
                self.lens_pos as u64,
            ),
            (
                "source section bytes",
                self.srcs.len() as u64,
                self.srcs_pos as u64,
            ),
            ("diff bytes left", 0, self.diff.len() as u64),
            ("literal bytes left", 0, self.literal.len() as u64),
        ];
        for (what, stated, actual) in checks {
            if stated != actual {
                return Err(Error::StreamMismatch {
                    what,
                    stated,
                    actual,
                });
            }
        }
        Ok(self.totals)
    }

    /// The next source delta of the source section.
    fn next_delta(&mut self) -> Result<i64> {
        let raw = varint::get(self.srcs, &mut self.srcs_pos, "source section")?;
        Ok(varint::unzigzag(raw))
    }
}

/// Moves a source `cursor` by `delta` to the start of an op's `len` bytes,
/// which must end by `limit`, and past them. Returns the start, or (when out
/// of range) the signed offset the delta pointed at.
fn step(cursor: &mut u64, delta: i64, len: u64, limit: u64) -> std::result::Result<u64, i128> {
    let src = i128::from(*cursor) + i128::from(delta);
    let range = u64::try_from(src)
        .ok()
        .and_then(|start| Some((start, start.checked_add(len)?)));
    match range {
        Some((start, end)) if end <= limit => {
            *cursor = end;
            Ok(start)
        }
        _ => Err(src),
    }
}

fn add(a: u64, b: u64) -> Result<u64> {
    a.checked_add(b).ok_or(Error::StreamMismatch {
        what: "op length total",
        stated: a,
        actual: u64::MAX,
    })
}

fn take<'a>(section: &mut &'a [u8], len: u64, what: &'static str) -> Result<&'a [u8]> {
    match usize::try_from(len) {
        Ok(n) if n <= section.len() => {
            let (head, tail) = section.split_at(n);
            *section = tail;
            Ok(head)
        }
        _ => Err(Error::Truncated {
            what,
            offset: 0,
            need: len,
            have: section.len() as u64,
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// New-image bytes before the segment in these tests.
    const NEW_LIMIT: u64 = 2000;

    fn decode(stream: &[u8], old_len: u64) -> Result<(Vec<Op>, Vec<u8>, Vec<u8>)> {
        let mut d = Decoder::new(stream, old_len)?.with_new_limit(NEW_LIMIT);
        let (mut ops, mut diff, mut lit) = (vec![], vec![], vec![]);
        while let Some(ins) = d.next_instruction()? {
            ops.push(match ins {
                Instruction::Copy { src, len } => Op::Copy { src, len },
                Instruction::Zero { len } => Op::Zero { len },
                Instruction::Literal(b) => {
                    lit.extend_from_slice(b);
                    Op::Literal {
                        len: b.len() as u64,
                    }
                }
                Instruction::Diff { src, delta } => {
                    diff.extend_from_slice(delta);
                    Op::Diff {
                        src,
                        len: delta.len() as u64,
                    }
                }
                Instruction::CopyNew { src, len } => Op::CopyNew { src, len },
            });
        }
        d.finish()?;
        Ok((ops, diff, lit))
    }

    fn op_strategy() -> impl Strategy<Value = Op> {
        prop_oneof![
            (0u64..1000, 1u64..100).prop_map(|(src, len)| Op::Copy { src, len }),
            (1u64..1 << 40).prop_map(|len| Op::Zero { len }),
            (1u64..50).prop_map(|len| Op::Literal { len }),
            (0u64..1000, 1u64..50).prop_map(|(src, len)| Op::Diff { src, len }),
            (0u64..1900, 1u64..100).prop_map(|(src, len)| Op::CopyNew { src, len }),
        ]
    }

    proptest! {
        #[test]
        fn round_trips(ops in prop::collection::vec(op_strategy(), 0..40)) {
            let diff_len: u64 = ops.iter().filter(|o| matches!(o, Op::Diff { .. })).map(Op::len).sum();
            let lit_len: u64 = ops.iter().filter(|o| matches!(o, Op::Literal { .. })).map(Op::len).sum();
            let diff: Vec<u8> = (0..diff_len).map(|i| i as u8).collect();
            let lit: Vec<u8> = (0..lit_len).map(|i| (i * 7) as u8).collect();
            let stream = encode(&ops, &diff, &lit);
            let (ops2, diff2, lit2) = decode(&stream, 1100).unwrap();
            prop_assert_eq!(ops2, ops);
            prop_assert_eq!(diff2, diff);
            prop_assert_eq!(lit2, lit);
        }

        #[test]
        fn arbitrary_bytes_never_panic(bytes in prop::collection::vec(any::<u8>(), 0..200)) {
            let _ = decode(&bytes, 500);
        }
    }

    #[test]
    fn rejects_reads_outside_old() {
        let stream = encode(&[Op::Copy { src: 90, len: 20 }], &[], &[]);
        let err = decode(&stream, 100).unwrap_err();
        assert!(
            matches!(
                err,
                Error::SourceOutOfRange {
                    src: 90,
                    len: 20,
                    ..
                }
            ),
            "{err}"
        );
    }

    #[test]
    fn copies_of_the_new_image_stay_before_the_segment() {
        let stream = encode(&[Op::CopyNew { src: 1990, len: 20 }], &[], &[]);
        let err = decode(&stream, 100).unwrap_err();
        assert!(
            matches!(
                err,
                Error::NewSourceOutOfRange {
                    src: 1990,
                    len: 20,
                    limit: NEW_LIMIT,
                    ..
                }
            ),
            "{err}"
        );
        // Without the flag (limit 0), even the first byte is out of reach.
        let stream = encode(&[Op::CopyNew { src: 0, len: 1 }], &[], &[]);
        let mut d = Decoder::new(&stream, 100).unwrap();
        assert!(matches!(
            d.next_instruction(),
            Err(Error::NewSourceOutOfRange { limit: 0, .. })
        ));
        // In reach: counted with the copies.
        let stream = encode(&[Op::CopyNew { src: 1980, len: 20 }], &[], &[]);
        let mut d = Decoder::new(&stream, 100)
            .unwrap()
            .with_new_limit(NEW_LIMIT);
        assert_eq!(
            d.next_instruction().unwrap(),
            Some(Instruction::CopyNew { src: 1980, len: 20 })
        );
        assert_eq!(d.finish().unwrap().copy, 20);
    }

    #[test]
    fn rejects_leftover_and_missing_data() {
        let stream = encode(&[Op::Literal { len: 3 }], &[], b"abcd");
        assert!(matches!(
            decode(&stream, 0),
            Err(Error::StreamMismatch { .. })
        ));
        let stream = encode(&[Op::Literal { len: 5 }], &[], b"abcd");
        assert!(matches!(decode(&stream, 0), Err(Error::Truncated { .. })));
    }
}
