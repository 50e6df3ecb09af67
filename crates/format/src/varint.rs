//! LEB128 varints and zigzag encoding for signed deltas.
//!
//! Offsets in the op section are stored as zigzag-encoded differences from
//! the previous position in the old image, so that runs of nearby copies
//! produce small, repetitive bytes that zstd compresses well.

use crate::error::{Error, Result};

/// Longest LEB128 encoding of a `u64`.
pub const MAX_VARINT_LEN: usize = 10;

/// Appends `value` as LEB128 (7 bits per byte, low bits first).
pub fn put(out: &mut Vec<u8>, mut value: u64) {
    while value >= 0x80 {
        out.push((value as u8 & 0x7f) | 0x80);
        value >>= 7;
    }
    out.push(value as u8);
}

/// Reads one LEB128 value from `bytes` at `*pos`, advancing `*pos`.
///
/// # Errors
/// [`Error::BadVarint`] when the input ends inside the value or the value
/// does not fit in 64 bits.
pub fn get(bytes: &[u8], pos: &mut usize, what: &'static str) -> Result<u64> {
    let start = *pos;
    let bad = || Error::BadVarint {
        what,
        offset: start as u64,
    };
    let mut value = 0u64;
    for i in 0..MAX_VARINT_LEN {
        let byte = *bytes.get(start + i).ok_or_else(bad)?;
        let bits = u64::from(byte & 0x7f);
        // The tenth byte may only carry the top bit of a u64.
        if i == MAX_VARINT_LEN - 1 && bits > 1 {
            return Err(bad());
        }
        value |= bits << (7 * i);
        if byte & 0x80 == 0 {
            *pos = start + i + 1;
            return Ok(value);
        }
    }
    Err(bad())
}

/// Maps a signed value to unsigned so that small magnitudes stay small.
pub fn zigzag(value: i64) -> u64 {
    ((value << 1) ^ (value >> 63)) as u64
}

/// Inverse of [`zigzag`].
pub fn unzigzag(value: u64) -> i64 {
    ((value >> 1) as i64) ^ -((value & 1) as i64)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        #[test]
        fn varint_round_trips(value: u64) {
            let mut out = Vec::new();
            put(&mut out, value);
            let mut pos = 0;
            prop_assert_eq!(get(&out, &mut pos, "test").unwrap(), value);
            prop_assert_eq!(pos, out.len());
        }

        #[test]
        fn zigzag_round_trips(value: i64) {
            prop_assert_eq!(unzigzag(zigzag(value)), value);
        }
    }

    #[test]
    fn rejects_overflow_and_truncation() {
        let mut pos = 0;
        assert!(get(&[0xff; 10], &mut pos, "test").is_err());
        assert!(get(&[0x80, 0x80], &mut pos, "test").is_err());
        let mut too_big = vec![0xff; 9];
        too_big.push(0x02);
        assert!(get(&too_big, &mut pos, "test").is_err());
        let mut max = vec![0xff; 9];
        max.push(0x01);
        assert_eq!(get(&max, &mut pos, "test").unwrap(), u64::MAX);
    }
}
