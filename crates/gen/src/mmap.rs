//! Read-only mappings of the input images.
#![allow(unsafe_code)]

use crate::error::{Error, Result};
use memmap2::Mmap;
use std::fs::File;
use std::path::Path;

/// An input image, mapped read-only (or empty).
#[derive(Debug)]
pub struct Input {
    map: Option<Mmap>,
}

impl Input {
    /// Maps the file at `path`.
    ///
    /// # Errors
    /// [`Error::Io`] when the file cannot be opened or mapped.
    pub fn open(path: &Path) -> Result<Input> {
        let io = |op, source| Error::Io {
            op,
            path: path.to_owned(),
            source,
        };
        let file = File::open(path).map_err(|e| io("open", e))?;
        let len = file.metadata().map_err(|e| io("stat", e))?.len();
        if len == 0 {
            return Ok(Input { map: None });
        }
        // SAFETY: the mapping is read-only and private to this process. The
        // build server owns its input images for the length of a run; another
        // process rewriting them is outside our contract, a truncation could
        // only raise SIGBUS, and any changed byte is caught because every
        // segment is re-applied and compared, and both images' digests are
        // computed from this same mapping.
        let map = unsafe { Mmap::map(&file) }.map_err(|e| io("map", e))?;
        Ok(Input { map: Some(map) })
    }

    /// The mapped bytes.
    pub fn bytes(&self) -> &[u8] {
        self.map.as_deref().unwrap_or(&[])
    }
}
