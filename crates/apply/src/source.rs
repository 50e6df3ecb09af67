//! The old image as the applier reads it: positional reads (`pread`) of a
//! file or a partition, no mapping pinned in memory.

use delta_core::Source;
use std::fs::File;
use std::io;
use std::os::unix::fs::FileExt;

/// An open file (or block device) read with `pread`, with its size taken
/// once at open.
#[derive(Debug)]
pub(crate) struct FileSource {
    /// None for the empty source of a full-image payload.
    file: Option<File>,
    len: u64,
}

impl FileSource {
    /// Wraps `file`, whose size is `len` bytes (block devices report 0 in
    /// metadata, so the caller measures it).
    pub(crate) fn new(file: File, len: u64) -> FileSource {
        FileSource {
            file: Some(file),
            len,
        }
    }

    /// A source of no bytes, for a full-image payload.
    pub(crate) fn empty() -> FileSource {
        FileSource { file: None, len: 0 }
    }
}

impl Source for FileSource {
    fn len(&self) -> u64 {
        self.len
    }

    fn read_at(&self, offset: u64, buf: &mut [u8]) -> io::Result<()> {
        match (offset.checked_add(buf.len() as u64), &self.file) {
            (Some(end), Some(file)) if end <= self.len => file.read_exact_at(buf, offset),
            (Some(0), None) => Ok(()),
            _ => Err(io::ErrorKind::UnexpectedEof.into()),
        }
    }
}
