//! Image digests in requests: 64 lowercase hex digits of a BLAKE3 hash.

use std::fmt;

/// A BLAKE3 digest named by a request; only 64 hex digits are accepted,
/// so a digest can never name a path.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Digest([u8; 32]);

impl Digest {
    /// Parses 64 hex digits (either case).
    ///
    /// # Errors
    /// Anything else, with what was expected.
    pub fn parse(text: &str) -> Result<Digest, String> {
        if text.len() != 64 {
            return Err(format!(
                "a digest is 64 hex digits (BLAKE3), got {} characters",
                text.len()
            ));
        }
        let mut out = [0u8; 32];
        for (i, pair) in text.as_bytes().chunks(2).enumerate() {
            let digit = |c: u8| match c {
                b'0'..=b'9' => Some(c - b'0'),
                b'a'..=b'f' => Some(c - b'a' + 10),
                b'A'..=b'F' => Some(c - b'A' + 10),
                _ => None,
            };
            match (digit(pair[0]), digit(pair[1])) {
                (Some(h), Some(l)) => out[i] = h << 4 | l,
                _ => {
                    return Err(format!(
                        "a digest is 64 hex digits (BLAKE3), got a non-hex character at {}",
                        2 * i
                    ))
                }
            }
        }
        Ok(Digest(out))
    }

    /// The digest of `bytes`' hash.
    pub fn of(hash: blake3::Hash) -> Digest {
        Digest(*hash.as_bytes())
    }

    /// Its 32 bytes.
    pub fn bytes(&self) -> &[u8; 32] {
        &self.0
    }
}

impl fmt::Display for Digest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&delta_core::to_hex(&self.0))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_64_hex_digits_parse() {
        let hash = blake3::hash(b"x");
        let text = hash.to_hex().to_string();
        assert_eq!(Digest::parse(&text).unwrap().to_string(), text);
        assert_eq!(
            Digest::parse(&text.to_uppercase()).unwrap(),
            Digest::of(hash)
        );
        for bad in [
            "",
            &text[..63],
            &format!("{text}0"),
            &format!("..{}", &text[2..]),
            &format!("{}/a", &text[..62]),
            &format!("{}é", &text[..62]),
        ] {
            assert!(Digest::parse(bad).is_err(), "{bad:?} parsed");
        }
    }
}
