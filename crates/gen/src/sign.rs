//! `delta sign`: adding signatures to a delta that exists, for a signing
//! host that is not the build server. The payloads are copied unchanged;
//! the delta is replaced by rename, never written in place.

use crate::error::{Error, Result};
use crate::output;
use delta_core::signature::SecretKey;
use delta_format::signature::{encode_block, MAX_SIGNATURES};
use delta_format::{Index, Limits, FLAG_SIGNED};
use std::io::{BufReader, BufWriter, Read, Seek, SeekFrom, Write};
use std::path::Path;

/// Signs the delta at `path` with each of `keys`, keeping the signatures
/// it has (a key that signed before signs again). An unsigned delta gets
/// the signed flag, which changes its table digest (and so its identity in
/// an applier's journal), but not a byte of its payloads. Returns the
/// number of signatures the delta now holds.
///
/// # Errors
/// The delta unreadable or malformed, more than 16 signatures, or an I/O
/// error writing the signed copy.
pub fn sign_file(path: &Path, keys: &[SecretKey]) -> Result<usize> {
    let io = |op, source| Error::Io {
        op,
        path: path.to_owned(),
        source,
    };
    let bad = |source| Error::Delta {
        path: path.to_owned(),
        source,
    };
    let (mut file, file_len) = delta_image::open_image(path).map_err(|e| io("open", e))?;
    let index =
        delta_format::read_index(&mut BufReader::new(&file), &Limits::default()).map_err(bad)?;
    index.check_file_len(file_len).map_err(bad)?;
    let mut header = index.header.clone();
    header.flags |= FLAG_SIGNED;
    let (table, digest) = Index::encode_with_digest(&header, &index.segments);
    let mut signatures = if index.header.is_signed() {
        index.signatures.clone()
    } else {
        Vec::new()
    };
    for key in keys {
        signatures.retain(|s| s.key_id != key.public().id());
        signatures.push(key.sign(&digest));
    }
    if signatures.len() > MAX_SIGNATURES as usize {
        return Err(Error::Option {
            name: "key",
            reason: format!(
                "a delta holds at most {MAX_SIGNATURES} signatures, this one would hold {}",
                signatures.len()
            ),
        });
    }
    let payloads_start = index.payload_offsets.first().copied().unwrap_or(file_len);
    let target = output::Target::prepare(path, &[], true)?;
    let mut out = BufWriter::with_capacity(1 << 20, target.file());
    let write = |e| io("write signed copy of", e);
    out.write_all(&table).map_err(write)?;
    out.write_all(&encode_block(&signatures)).map_err(write)?;
    file.seek(SeekFrom::Start(payloads_start))
        .map_err(|e| io("seek", e))?;
    let copied =
        std::io::copy(&mut (&mut file).take(file_len - payloads_start), &mut out).map_err(write)?;
    if copied != file_len - payloads_start {
        return Err(io(
            "copy payloads of",
            std::io::ErrorKind::UnexpectedEof.into(),
        ));
    }
    let out = out.into_inner().map_err(|e| write(e.into_error()))?;
    out.sync_all().map_err(|e| io("fsync signed copy of", e))?;
    target.commit()?;
    Ok(signatures.len())
}
