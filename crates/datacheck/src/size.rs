//! Sizes as people write them: `170000000`, `170MB`, `162MiB`.
//!
//! The 1.x docs say "about 170MB (compressed)"; MB is read as 10^6 bytes,
//! so the default limit is 170,000,000 bytes. A bare `M`, `K` or `G` is
//! refused rather than guessed: tools disagree on whether it means 10^6 or
//! 2^20, and the difference (4.9%) matters for a limit that is already
//! empirical. Only whole numbers are taken: `1.5GB` is refused, `1500MB` is
//! fine.

use crate::error::{Error, Result};

/// Units accepted after the number, lower-cased, with their size in bytes.
const UNITS: &[(&str, u64)] = &[
    ("", 1),
    ("b", 1),
    ("kb", 1_000),
    ("kib", 1 << 10),
    ("mb", 1_000_000),
    ("mib", 1 << 20),
    ("gb", 1_000_000_000),
    ("gib", 1 << 30),
    ("tb", 1_000_000_000_000),
    ("tib", 1 << 40),
];

/// Parses a byte count: digits, optionally followed by a unit.
///
/// Units (case-insensitive, optionally after spaces): `B`; decimal `kB`,
/// `MB`, `GB`, `TB` (powers of 1000); binary `KiB`, `MiB`, `GiB`, `TiB`
/// (powers of 1024). `_` may separate digits (`170_000_000`).
///
/// ```
/// use delta_datacheck::parse_size;
/// assert_eq!(parse_size("170MB").unwrap(), 170_000_000);
/// assert_eq!(parse_size("162 MiB").unwrap(), 162 * 1024 * 1024);
/// assert!(parse_size("170M").is_err()); // ambiguous: MB or MiB?
/// ```
///
/// # Errors
/// [`Error::InvalidSize`] for empty text, no digits, a fraction or sign, an
/// unknown or ambiguous unit, or a value above `u64::MAX` bytes.
pub fn parse_size(text: &str) -> Result<u64> {
    let invalid = |reason: &'static str| Error::InvalidSize {
        text: text.to_owned(),
        reason,
    };
    let trimmed = text.trim();
    if trimmed.is_empty() {
        return Err(invalid("empty"));
    }
    let unit_start = trimmed
        .find(|c: char| !(c.is_ascii_digit() || c == '_'))
        .unwrap_or(trimmed.len());
    let (digits, rest) = trimmed.split_at(unit_start);
    if rest.starts_with(['.', ',']) {
        return Err(invalid(
            "only whole numbers are accepted (write 1500MB, not 1.5GB)",
        ));
    }
    if digits.is_empty() {
        return Err(invalid(if rest.starts_with(['-', '+']) {
            "a size has no sign"
        } else {
            "expected a number, e.g. 170MB"
        }));
    }
    let mut number: u64 = 0;
    let mut any_digit = false;
    for c in digits.chars() {
        if let Some(d) = c.to_digit(10) {
            any_digit = true;
            number = number
                .checked_mul(10)
                .and_then(|n| n.checked_add(u64::from(d)))
                .ok_or_else(|| invalid("too large"))?;
        }
    }
    if !any_digit {
        return Err(invalid("expected a number, e.g. 170MB"));
    }
    let unit = rest.trim_start().to_ascii_lowercase();
    let Some(&(_, scale)) = UNITS.iter().find(|(name, _)| *name == unit) else {
        return Err(invalid(match unit.as_str() {
            "k" | "m" | "g" | "t" => "ambiguous unit: write kB/MB/GB/TB (powers of 1000) or KiB/MiB/GiB/TiB (powers of 1024)",
            _ => "unknown unit: use B, kB, MB, GB, TB, KiB, MiB, GiB or TiB",
        }));
    };
    number
        .checked_mul(scale)
        .ok_or_else(|| invalid("too large"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn units_scale() {
        assert_eq!(parse_size("0").unwrap(), 0);
        assert_eq!(parse_size("1b").unwrap(), 1);
        assert_eq!(parse_size("1TiB").unwrap(), 1 << 40);
        assert_eq!(parse_size("1tb").unwrap(), 1_000_000_000_000);
        assert_eq!(parse_size(" 7 kib ").unwrap(), 7168);
    }

    #[test]
    fn overflow_is_an_error() {
        assert_eq!(parse_size("18446744073709551615").unwrap(), u64::MAX);
        assert!(parse_size("18446744073709551616").is_err());
        assert!(parse_size("17179869184GiB").is_err());
    }
}
