//! Executable segments (kind [`EXEC`](crate::kind::EXEC), version 6, with
//! [`FLAG_EXEC`](crate::FLAG_EXEC)): one new file made from its old partner
//! after the partner's references are projected to where the new file has
//! them.
//!
//! A rebuilt library differs from its old version mostly in the offsets of
//! calls, jumps and PC-relative loads: code that moved by a few bytes
//! changes every reference that crosses the move. The applier reads the old
//! partner (wherever it lies in the old image), finds its references (the
//! same way the generator did: calls, jumps, PC-relative loads, and the
//! addresses of its dynamic relocations), and rewrites each one as if both
//! its place and its target had moved as the shift map says. The old file then looks
//! like the new one, and a plain op stream against it is small. Only the
//! old file is disassembled: the new bytes come out of the op stream as
//! they are.
//!
//! The payload after the kind byte is:
//!
//! ```text
//! u8 arch                            ExecArch: 0 none, 1 x86-64, 2 AArch64, 3 ARM Thumb-2
//! varint piece_count                 1..=MAX_EXEC_RANGES: the old file, in file order
//! piece_count × piece
//!
//! piece:
//! varint len << 1 | hole             hole 1: len zero bytes (a hole in the file)
//! varint zigzag(start - previous end)  only when hole is 0: len bytes of the old image
//! varint shift_count                 0..=MAX_SHIFTS
//! shift_count × (varint address - previous address, varint zigzag(shift - previous shift))
//! varint ops_len                     bytes of the op stream
//! varint ref_offset, varint ref_len  the zstd prefix: a range of the projected old file
//! zstd frame                         the op stream, against the prefix
//! ```
//!
//! Pieces lay the old file out as its program headers expect it: a sparse
//! file (AArch64 libraries align their segments to 64 KiB, and the padding
//! is a hole) has zero pieces where it has holes. Old-image ranges count
//! from the end of the range before (the first from 0).
//!
//! The shift map is a step function over the old file's virtual addresses:
//! an address from one point up to the next moves by that point's shift,
//! an address before the first point does not move. Addresses increase
//! strictly (the first one is counted from 0, its shift from 0).
//!
//! The op stream is a version 2 stream whose COPY and DIFF ops read the
//! projected old file (not the old image); COPY_NEW ops are not allowed.
//! The entry's `ref_offset` is 0, its `ref_len` the old file's length, and
//! its `stream_len` is [`exec_stream_len`]: the applier holds the old file,
//! the op stream and the shift map.

use crate::error::{Error, Result};
use crate::header::{SegmentEntry, STREAM_SLACK};
use crate::varint;
use std::ops::Range;

/// Most old-image ranges an executable segment's old file may have.
pub const MAX_EXEC_RANGES: u64 = 1 << 16;
/// Most points of one shift map.
pub const MAX_SHIFTS: u64 = 1 << 16;
/// Bytes the applier holds per shift map point.
pub const SHIFT_MEMORY: u64 = 16;

const WHAT: &str = "exec segment";

/// The machine code an executable segment's old file holds, which says how
/// its references are found.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ExecArch {
    /// None: the old file is used as it is (a partner found by name,
    /// wherever it lies).
    None = 0,
    /// x86-64: rel32 calls, jumps and conditional jumps, RIP-relative
    /// operands.
    X86_64 = 1,
    /// AArch64: B, BL, B.cond, CBZ/CBNZ, TBZ/TBNZ, LDR literal, ADR, and
    /// ADRP with the ADD or LDR after it.
    Aarch64 = 2,
    /// 32-bit ARM in Thumb-2 code: BL, BLX and B.W.
    Thumb = 3,
}

impl ExecArch {
    /// The architecture of byte `b`, if it names one.
    pub fn from_byte(b: u8) -> Option<ExecArch> {
        [Self::None, Self::X86_64, Self::Aarch64, Self::Thumb]
            .into_iter()
            .find(|a| *a as u8 == b)
    }

    /// Its name in reports.
    pub fn name(self) -> &'static str {
        match self {
            ExecArch::None => "none",
            ExecArch::X86_64 => "x86-64",
            ExecArch::Aarch64 => "aarch64",
            ExecArch::Thumb => "arm-thumb",
        }
    }
}

/// The `stream_len` an executable segment's entry must state: the op
/// stream and the shift map.
pub fn exec_stream_len(ops_len: u64, shift_count: u64) -> u64 {
    ops_len.saturating_add(shift_count.saturating_mul(SHIFT_MEMORY))
}

/// A run of an executable segment's old file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Piece {
    /// Bytes of the old image.
    Old(Range<u64>),
    /// This many zero bytes (a hole of a sparse file).
    Zeros(u64),
}

impl Piece {
    /// Bytes of the file it makes.
    pub fn len(&self) -> u64 {
        match self {
            Piece::Old(range) => range.end - range.start,
            Piece::Zeros(len) => *len,
        }
    }

    /// True when it makes no bytes (never in a valid payload).
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// The parts of an executable segment's payload, after the kind byte.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Exec<'a> {
    /// How the old file's references are found.
    pub arch: ExecArch,
    /// The old file, in file order.
    pub pieces: Vec<Piece>,
    /// The shift map: `(address, shift)` points, addresses increasing.
    pub shifts: Vec<(u64, i64)>,
    /// Bytes of the op stream.
    pub ops_len: u64,
    /// The zstd prefix, a range of the projected old file.
    pub reference: Range<u64>,
    /// The zstd frame of the op stream.
    pub frame: &'a [u8],
}

impl<'a> Exec<'a> {
    /// Bytes of the old file.
    pub fn old_len(&self) -> u64 {
        self.pieces
            .iter()
            .map(Piece::len)
            .fold(0, u64::saturating_add)
    }

    /// Appends the payload, kind byte first.
    pub fn encode(&self, out: &mut Vec<u8>) {
        out.push(crate::kind::EXEC);
        out.push(self.arch as u8);
        varint::put(out, self.pieces.len() as u64);
        let mut at = 0u64;
        for piece in &self.pieces {
            match piece {
                Piece::Old(range) => {
                    varint::put(out, (range.end - range.start) << 1);
                    varint::put(out, varint::zigzag(range.start.wrapping_sub(at) as i64));
                    at = range.end;
                }
                Piece::Zeros(len) => varint::put(out, len << 1 | 1),
            }
        }
        varint::put(out, self.shifts.len() as u64);
        let (mut address, mut shift) = (0u64, 0i64);
        for &(a, s) in &self.shifts {
            varint::put(out, a - address);
            varint::put(out, varint::zigzag(s.wrapping_sub(shift)));
            (address, shift) = (a, s);
        }
        varint::put(out, self.ops_len);
        varint::put(out, self.reference.start);
        varint::put(out, self.reference.end - self.reference.start);
        out.extend_from_slice(self.frame);
    }

    /// The table entry of the segment whose payload is `payload` (these
    /// parts encoded) and whose op stream makes what `plain` (that op
    /// stream's entry as a plain segment) says: its length, totals and
    /// output digest.
    pub fn entry(&self, payload: &[u8], plain: &SegmentEntry) -> SegmentEntry {
        SegmentEntry {
            payload_len: payload.len() as u64,
            stream_len: exec_stream_len(self.ops_len, self.shifts.len() as u64),
            ref_offset: 0,
            ref_len: self.old_len(),
            payload_digest: *blake3::hash(payload).as_bytes(),
            ..plain.clone()
        }
    }

    /// Reads the payload `body` (after its kind byte) of segment `segment`
    /// and checks it against its table `entry` and the old image's
    /// `old_len` bytes.
    ///
    /// # Errors
    /// What [`Exec::parse`] refuses, and [`Error::InvalidField`] for lengths
    /// that disagree with the entry.
    pub fn decode(
        body: &'a [u8],
        segment: u64,
        entry: &SegmentEntry,
        old_len: u64,
    ) -> Result<Exec<'a>> {
        let parts = Exec::parse(body, segment, old_len)?;
        let invalid = |what: &str, found: u64, expected: String| Error::InvalidField {
            field: format!("segment[{segment}] exec {what}"),
            found,
            expected,
        };
        let stream_len = exec_stream_len(parts.ops_len, parts.shifts.len() as u64);
        let stream_max = entry.new_len.saturating_mul(2).saturating_add(STREAM_SLACK);
        if stream_len > stream_max {
            let expected = format!("with the shift map at most {stream_max}");
            return Err(invalid("ops_len", parts.ops_len, expected));
        }
        if entry.stream_len != stream_len {
            let expected = format!("the op stream and the shift map, {stream_len}");
            return Err(invalid("stream_len", entry.stream_len, expected));
        }
        let file_len = parts.old_len();
        if entry.ref_offset != 0 || entry.ref_len != file_len {
            let expected = format!("ref_offset 0 and ref_len the old file's {file_len} bytes");
            return Err(invalid("ref_len", entry.ref_len, expected));
        }
        Ok(parts)
    }

    /// Reads the payload `body` (after its kind byte) of segment `segment`:
    /// its fields, each within its own bounds and the old image's
    /// `old_len` bytes, but not checked against a table entry.
    ///
    /// # Errors
    /// [`Error::BadVarint`] for a damaged or missing number,
    /// [`Error::InvalidField`] for an unknown arch, an empty piece or one out
    /// of the old image, addresses that do not increase, a prefix outside
    /// the old file, or no frame.
    pub fn parse(body: &'a [u8], segment: u64, old_len: u64) -> Result<Exec<'a>> {
        let invalid = |what: &str, found: u64, expected: String| Error::InvalidField {
            field: format!("segment[{segment}] exec {what}"),
            found,
            expected,
        };
        let byte = *body.first().ok_or(Error::BadVarint {
            what: WHAT,
            offset: 0,
        })?;
        let arch = ExecArch::from_byte(byte).ok_or_else(|| {
            let expected = "0 (none), 1 (x86-64), 2 (aarch64) or 3 (arm-thumb)".into();
            invalid("arch", byte.into(), expected)
        })?;
        let mut pos = 1;
        let count = varint::get(body, &mut pos, WHAT)?;
        if count == 0 || count > MAX_EXEC_RANGES {
            let expected = format!("1..={MAX_EXEC_RANGES}");
            return Err(invalid("piece count", count, expected));
        }
        // Bounded: count ≤ MAX_EXEC_RANGES, and each piece takes a byte.
        let mut pieces = Vec::with_capacity(count.min(body.len() as u64) as usize);
        let mut at = 0u64;
        for i in 0..count {
            let head = varint::get(body, &mut pos, WHAT)?;
            let len = head >> 1;
            if len == 0 {
                let expected = "a piece of 1 byte or more".into();
                return Err(invalid(&format!("piece #{i} length"), 0, expected));
            }
            if head & 1 == 1 {
                pieces.push(Piece::Zeros(len));
                continue;
            }
            let shift = varint::unzigzag(varint::get(body, &mut pos, WHAT)?);
            let start = i128::from(at) + i128::from(shift);
            let end = start + i128::from(len);
            if start < 0 || end > i128::from(old_len) {
                let expected = format!("a range within the old image ({old_len} bytes)");
                let found = end.clamp(0, u64::MAX.into()) as u64;
                return Err(invalid(&format!("piece #{i} end"), found, expected));
            }
            pieces.push(Piece::Old(start as u64..end as u64));
            at = end as u64;
        }
        let count = varint::get(body, &mut pos, WHAT)?;
        if count > MAX_SHIFTS {
            let expected = format!("at most {MAX_SHIFTS}");
            return Err(invalid("shift count", count, expected));
        }
        let mut shifts = Vec::with_capacity(count.min(body.len() as u64 / 2) as usize);
        let (mut address, mut shift) = (0u64, 0i64);
        for i in 0..count {
            let step = varint::get(body, &mut pos, WHAT)?;
            let next = address.checked_add(step).filter(|_| i == 0 || step > 0);
            let Some(next) = next else {
                let expected = "an address above the one before".into();
                return Err(invalid(&format!("shift #{i} address step"), step, expected));
            };
            address = next;
            shift = shift.wrapping_add(varint::unzigzag(varint::get(body, &mut pos, WHAT)?));
            shifts.push((address, shift));
        }
        let ops_len = varint::get(body, &mut pos, WHAT)?;
        if ops_len == 0 {
            return Err(invalid("ops_len", 0, "1 or more".into()));
        }
        let file_len = pieces.iter().map(Piece::len).fold(0, u64::saturating_add);
        let ref_offset = varint::get(body, &mut pos, WHAT)?;
        let ref_len = varint::get(body, &mut pos, WHAT)?;
        let reference = match ref_offset.checked_add(ref_len) {
            Some(end) if end <= file_len => ref_offset..end,
            _ => {
                let expected = format!("a range within the old file ({file_len} bytes)");
                return Err(invalid(
                    "prefix end",
                    ref_offset.saturating_add(ref_len),
                    expected,
                ));
            }
        };
        let frame = &body[pos.min(body.len())..];
        if frame.is_empty() {
            return Err(invalid("frame length", 0, "at least 1".into()));
        }
        Ok(Exec {
            arch,
            pieces,
            shifts,
            ops_len,
            reference,
            frame,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> Exec<'static> {
        Exec {
            arch: ExecArch::X86_64,
            pieces: vec![
                Piece::Old(4096..8192),
                Piece::Zeros(50),
                Piece::Old(100..200),
            ],
            shifts: vec![(0x1000, 0), (0x2040, 16), (0x9000, -8)],
            ops_len: 40,
            reference: 10..4000,
            frame: b"frame",
        }
    }

    fn entry_of(exec: &Exec<'_>) -> (Vec<u8>, SegmentEntry) {
        let mut payload = Vec::new();
        exec.encode(&mut payload);
        let plain = SegmentEntry {
            new_len: 5000,
            copy_len: 100,
            literal_len: 4900,
            ..SegmentEntry::default()
        };
        let entry = exec.entry(&payload, &plain);
        (payload, entry)
    }

    #[test]
    fn round_trips() {
        let exec = sample();
        let (payload, entry) = entry_of(&exec);
        assert_eq!(payload[0], crate::kind::EXEC);
        let back = Exec::decode(&payload[1..], 3, &entry, 10_000).unwrap();
        assert_eq!(back, exec);
        assert_eq!(entry.ref_len, 4246);
        assert_eq!(entry.stream_len, 40 + 3 * SHIFT_MEMORY);
    }

    #[test]
    fn refuses_what_breaks_the_rules() {
        let (payload, entry) = entry_of(&sample());
        let body = &payload[1..];
        let message = |r: Result<Exec<'_>>| r.unwrap_err().to_string();
        // The old file passes the old image's end.
        assert!(message(Exec::decode(body, 3, &entry, 8000)).contains("piece #0 end"));
        // Unknown arch.
        let mut bad = body.to_vec();
        bad[0] = 9;
        assert!(message(Exec::decode(&bad, 3, &entry, 10_000)).contains("arch"));
        // An entry that does not state the old file's length.
        let mut wrong = entry.clone();
        wrong.ref_len -= 1;
        assert!(message(Exec::decode(body, 3, &wrong, 10_000)).contains("ref_len"));
        let mut wrong = entry.clone();
        wrong.stream_len += 1;
        assert!(message(Exec::decode(body, 3, &wrong, 10_000)).contains("stream_len"));
        // Every payload cut before its frame is refused, never a panic.
        for end in 0..body.len() - b"frame".len() {
            assert!(Exec::decode(&body[..end], 3, &entry, 10_000).is_err());
        }
    }

    #[test]
    fn addresses_must_increase() {
        let mut exec = sample();
        exec.shifts = vec![(0x1000, 0), (0x1000, 4)];
        let (payload, entry) = entry_of(&exec);
        let err = Exec::decode(&payload[1..], 0, &entry, 10_000).unwrap_err();
        assert!(err.to_string().contains("shift #1 address step"), "{err}");
    }
}
