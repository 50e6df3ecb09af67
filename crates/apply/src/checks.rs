//! The checks of the preparing step that read the device: the 1.x -> 2.x
//! migration's data folder, the old image's size and digest.

use crate::error::{Error, Result};
use crate::progress::{Reporter, Step};
use crate::source::FileSource;
use crate::target::OldImage;
use crate::ApplyOptions;
use delta_core::to_hex as hex;
use delta_core::Source;
use delta_format::Header;
use std::path::Path;

/// Refuses a migration whose data folder compresses over the limit.
pub(crate) fn check_migration_data(
    options: &ApplyOptions,
    report: &mut Reporter<'_>,
) -> Result<()> {
    let dir = &options.data_dir;
    report.report(
        Step::Preparing,
        0,
        0,
        Some(format!("1.x to 2.x migration: measuring {}", dir.display())),
    );
    let measured = delta_datacheck::check_data(
        dir,
        &delta_datacheck::CheckOptions {
            limit: options.data_limit,
            ..Default::default()
        },
    )?;
    report.log.line(format!(
        "migration data check: {} compresses to {}{} bytes (limit {})",
        dir.display(),
        if measured.over_limit { "at least " } else { "" },
        measured.compressed_bytes,
        options.data_limit
    ));
    if measured.over_limit {
        return Err(Error::DataTooLarge {
            dir: dir.clone(),
            size: measured.compressed_bytes,
            limit: options.data_limit,
        });
    }
    Ok(())
}

/// Opens the old image (a regular file or a block device, never blocking
/// on a FIFO) and checks its size.
pub(crate) fn open_source(path: &Path, header: &Header) -> Result<(FileSource, OldImage)> {
    let (file, len) = delta_image::open_image(path).map_err(|source| Error::Io {
        op: "open old image",
        path: path.to_owned(),
        source,
    })?;
    if len != header.old_len {
        return Err(Error::SourceMismatch {
            path: path.to_owned(),
            what: format!(
                "size is {len} bytes, the delta was made for an old image of {} bytes",
                header.old_len
            ),
        });
    }
    let image = OldImage::of(path, &file, len)?;
    Ok((FileSource::new(file, len), image))
}

pub(crate) fn verify_source(
    report: &mut Reporter<'_>,
    source: &FileSource,
    path: &Path,
    header: &Header,
) -> Result<()> {
    let len = source.len();
    let mut hasher = blake3::Hasher::new();
    let mut buf = vec![0u8; 1 << 20];
    let mut done = 0u64;
    report.report(Step::Preparing, 0, len, Some("verifying old image".into()));
    while done < len {
        let n = (len - done).min(buf.len() as u64) as usize;
        source
            .read_at(done, &mut buf[..n])
            .map_err(|source| Error::Io {
                op: "read old image",
                path: path.to_owned(),
                source,
            })?;
        hasher.update(&buf[..n]);
        done += n as u64;
        report.bytes(done, len);
    }
    let found = hasher.finalize();
    if found.as_bytes() != &header.old_digest {
        return Err(Error::SourceMismatch {
            path: path.to_owned(),
            what: format!(
                "blake3 is {}, the delta was made for {}",
                found.to_hex(),
                hex(&header.old_digest)
            ),
        });
    }
    report.log.line("old image digest verified");
    Ok(())
}
