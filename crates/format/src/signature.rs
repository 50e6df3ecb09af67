//! The signature block: with [`FLAG_SIGNED`](crate::FLAG_SIGNED), between
//! the table digest and the first payload.
//!
//! ```text
//! u32 LE   count                 1 ..= MAX_SIGNATURES
//! count ×  key_id [8] ‖ signature [64]
//! ```
//!
//! Each signature is an Ed25519 signature of [`signed_message`]: a fixed
//! context string followed by the table digest, which commits to the
//! header, the table, and through them to every payload and output digest.
//! So the signatures can be checked as soon as the table is read, before
//! any payload, and a stream never needs the end of the file first. The
//! block itself is not covered by the table digest: signatures can be added
//! to a delta without changing it. This crate only lays the bytes out; the
//! keys and the arithmetic are in `delta-core`.

use crate::{Digest, Error, Result};

/// Bytes of a key id: the first 8 bytes of the BLAKE3 of the public key.
pub const KEY_ID_LEN: usize = 8;

/// Bytes of an Ed25519 signature.
pub const SIGNATURE_LEN: usize = 64;

/// Bytes of one block entry.
pub const ENTRY_LEN: usize = KEY_ID_LEN + SIGNATURE_LEN;

/// Most signatures a block may hold (key rotation needs two or three).
pub const MAX_SIGNATURES: u32 = 16;

/// What is signed, before the table digest: a domain separator, so that
/// no other message signed by the same key can pass for a delta's.
pub const CONTEXT: &[u8] = b"delta-engine signed table digest v1\0";

/// One signature of the table digest.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Signature {
    /// Which key signed (see [`KEY_ID_LEN`]).
    pub key_id: [u8; KEY_ID_LEN],
    /// The Ed25519 signature of [`signed_message`].
    pub signature: [u8; SIGNATURE_LEN],
}

/// The bytes each signature signs: [`CONTEXT`] ‖ the table digest.
pub fn signed_message(table_digest: &Digest) -> Vec<u8> {
    [CONTEXT, &table_digest[..]].concat()
}

/// Encodes a block of `signatures` (the caller keeps the count within
/// `1..=MAX_SIGNATURES`).
pub fn encode_block(signatures: &[Signature]) -> Vec<u8> {
    let mut out = Vec::with_capacity(4 + signatures.len() * ENTRY_LEN);
    out.extend_from_slice(&(signatures.len() as u32).to_le_bytes());
    for s in signatures {
        out.extend_from_slice(&s.key_id);
        out.extend_from_slice(&s.signature);
    }
    out
}

/// Length of the block whose first 4 bytes (the count) are `head`, at
/// `offset` in the delta.
///
/// # Errors
/// A count of 0 or over [`MAX_SIGNATURES`], or fewer than 4 bytes.
pub fn block_len(head: &[u8], offset: u64) -> Result<u64> {
    let count = count_of(head, offset)?;
    Ok(4 + u64::from(count) * ENTRY_LEN as u64)
}

fn count_of(bytes: &[u8], offset: u64) -> Result<u32> {
    let Some(count) = bytes.get(..4) else {
        return Err(Error::Truncated {
            what: "signature block",
            offset,
            need: 4,
            have: bytes.len() as u64,
        });
    };
    let count = u32::from_le_bytes([count[0], count[1], count[2], count[3]]);
    if count == 0 || count > MAX_SIGNATURES {
        return Err(Error::InvalidField {
            field: "signature count".into(),
            found: u64::from(count),
            expected: format!("1..={MAX_SIGNATURES}"),
        });
    }
    Ok(count)
}

/// Decodes a whole signature block found at `offset` in the delta.
///
/// # Errors
/// A bad count, or a block shorter or longer than its count implies.
pub fn decode_block(bytes: &[u8], offset: u64) -> Result<Vec<Signature>> {
    let count = count_of(bytes, offset)?;
    let need = 4 + count as usize * ENTRY_LEN;
    if bytes.len() != need {
        return Err(Error::Truncated {
            what: "signature block",
            offset,
            need: need as u64,
            have: bytes.len() as u64,
        });
    }
    Ok(bytes[4..]
        .chunks_exact(ENTRY_LEN)
        .map(|entry| {
            let mut key_id = [0u8; KEY_ID_LEN];
            let mut signature = [0u8; SIGNATURE_LEN];
            key_id.copy_from_slice(&entry[..KEY_ID_LEN]);
            signature.copy_from_slice(&entry[KEY_ID_LEN..]);
            Signature { key_id, signature }
        })
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn blocks_round_trip_and_bad_counts_are_named() {
        let sigs = vec![
            Signature {
                key_id: [1; 8],
                signature: [2; 64],
            },
            Signature {
                key_id: [3; 8],
                signature: [4; 64],
            },
        ];
        let block = encode_block(&sigs);
        assert_eq!(block_len(&block, 0).unwrap(), block.len() as u64);
        assert_eq!(decode_block(&block, 0).unwrap(), sigs);
        let err = decode_block(&block[..block.len() - 1], 500).unwrap_err();
        assert!(
            err.to_string().contains("signature block at offset 500"),
            "{err}"
        );
        for count in [0u32, MAX_SIGNATURES + 1] {
            let err = block_len(&count.to_le_bytes(), 0).unwrap_err().to_string();
            assert!(err.contains("invalid signature count"), "{err}");
        }
    }
}
