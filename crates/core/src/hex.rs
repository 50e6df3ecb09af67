//! Lower-case hex for digests and keys, in messages, journals and key files.

use zeroize::Zeroizing;

/// Lower-case hex of `bytes`.
pub fn to_hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// The `N` bytes written as `2 * N` hex digits (either case), or None. The
/// result is wiped when dropped, as it may be a secret key.
pub fn from_hex<const N: usize>(text: &str) -> Option<Zeroizing<[u8; N]>> {
    if text.len() != N * 2 || !text.is_ascii() {
        return None;
    }
    let mut out = Zeroizing::new([0u8; N]);
    for (i, byte) in out.iter_mut().enumerate() {
        *byte = u8::from_str_radix(&text[i * 2..i * 2 + 2], 16).ok()?;
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_and_refuses_other_lengths_and_digits() {
        assert_eq!(to_hex(&[0, 0xab, 0x10]), "00ab10");
        assert_eq!(*from_hex::<3>("00AB10").unwrap(), [0, 0xab, 0x10]);
        assert!(from_hex::<3>("00ab1").is_none());
        assert!(from_hex::<2>("0g00").is_none());
        assert!(from_hex::<2>("é0").is_none());
    }
}
