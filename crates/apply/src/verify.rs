//! `delta verify`: the checks of an apply that write nothing, like
//! `zstd -t`: the signatures, every payload's digest and, given the old
//! image, its size and digest.

use crate::error::{Error, Result};
use crate::input::DeltaInput;
use delta_core::signature::{self, PublicKey};
use delta_format::Limits;
use std::path::{Path, PathBuf};

/// What a verification found.
#[derive(Debug, Clone)]
pub struct Verified {
    /// The trusted key that signed, hex (None when no keys were given).
    pub signed_by: Option<String>,
    /// Payloads whose digests were checked.
    pub payloads: u64,
    /// The old image was checked too.
    pub old_checked: bool,
}

/// Verifies the delta at `path`: signatures against `trusted` (when not
/// empty), each payload against its digest in the table, and with `old`,
/// the old image's size and BLAKE3. Memory: the largest payload.
///
/// # Errors
/// The first check that fails, naming the delta (or old image), the
/// segment and the bytes.
pub fn verify(path: &Path, old: Option<&Path>, trusted: &[PublicKey]) -> Result<Verified> {
    verify_from(crate::open_file(path)?, old, trusted)
}

/// As [`verify`], with the delta read front to back from `input` (a pipe,
/// a download).
///
/// # Errors
/// As [`verify`]; a delta cut short is [`Error::Input`].
pub fn verify_from(
    mut input: Box<dyn DeltaInput>,
    old: Option<&Path>,
    trusted: &[PublicKey],
) -> Result<Verified> {
    let path = PathBuf::from(input.name());
    let (index, mut at) = crate::read_index_from(input.as_mut(), &Limits::default())?;
    let signed_by = if trusted.is_empty() {
        None
    } else {
        let id = signature::verify(&index, trusted).map_err(|source| Error::Signature {
            path: path.clone(),
            source,
        })?;
        Some(delta_core::to_hex(&id))
    };
    let read_error = |at: u64, source| Error::Input {
        path: path.clone(),
        offset: at,
        source,
    };
    let mut payload = Vec::new();
    for (i, (entry, &offset)) in index
        .segments
        .iter()
        .zip(&index.payload_offsets)
        .enumerate()
    {
        // Payloads follow one another: the input is at `offset`.
        debug_assert_eq!(at, offset);
        // Bounded: payload_len <= apply_memory, checked against the limit.
        payload.resize(entry.payload_len as usize, 0);
        crate::input::read_full(&mut input, &mut payload)
            .map_err(|(got, source)| read_error(at + got as u64, source))?;
        at += entry.payload_len;
        if blake3::hash(&payload).as_bytes() != &entry.payload_digest {
            return Err(Error::Segment {
                path: path.clone(),
                source: delta_core::Error::PayloadDigest {
                    segment: i as u64,
                    offset,
                    end: offset + entry.payload_len,
                },
            });
        }
    }
    let extra =
        crate::input::bytes_past(input.as_mut()).map_err(|source| read_error(at, source))?;
    index
        .check_file_len(at + extra)
        .map_err(|source| Error::Header {
            path: path.clone(),
            source,
        })?;
    let old_checked = match old {
        Some(old) if !index.header.is_full() => {
            let (source, _) = crate::checks::open_source(old, &index.header)?;
            let mut report_to = None;
            let mut report =
                crate::progress::Reporter::new(&mut report_to, crate::log::UpdateLog::disabled());
            crate::checks::verify_source(&mut report, &source, old, &index.header)?;
            true
        }
        _ => false,
    };
    Ok(Verified {
        signed_by,
        payloads: index.segments.len() as u64,
        old_checked,
    })
}
