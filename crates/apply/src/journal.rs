//! The resume journal: how far a target has been written and verified.
//!
//! One small JSON record, replaced atomically (write a temporary file,
//! fsync it, rename it over the journal, fsync the folder), so that after a
//! power cut it holds either the previous checkpoint or the new one. It is
//! only advanced after the target's bytes up to the checkpoint have been
//! fsynced, so a checkpoint never claims bytes that could be lost.

use crate::error::{Error, Result};
use serde::{Deserialize, Serialize};
use std::fs::File;
use std::io::Write;
use std::path::{Path, PathBuf};

/// How far an apply got.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum State {
    /// Segments `0..segments_done`, and the first `segment_bytes` bytes of
    /// the next one, are written and fsynced.
    Applying,
    /// The whole image is written, fsynced and matches its digest; only the
    /// commit is left.
    Verified,
}

/// The journal record.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Record {
    /// Record layout version.
    pub version: u32,
    /// Digest of the delta's header and table (identifies the delta).
    pub delta_id: String,
    /// Old image path, or empty for a full payload.
    pub old: String,
    /// Target path.
    pub target: String,
    /// Segments written, verified and fsynced.
    pub segments_done: u64,
    /// Bytes of the next segment written and fsynced (not yet verified).
    pub segment_bytes: u64,
    /// Progress state.
    pub state: State,
}

/// A journal file.
#[derive(Debug)]
pub struct Journal {
    path: PathBuf,
}

impl Journal {
    /// The journal at `path`.
    pub fn new(path: PathBuf) -> Journal {
        Journal { path }
    }

    /// The journal's path.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Reads the record; a missing or unreadable one is `None` (start over).
    pub fn load(&self) -> Option<Record> {
        let text = std::fs::read_to_string(&self.path).ok()?;
        serde_json::from_str(&text).ok()
    }

    /// Atomically replaces the record.
    ///
    /// # Errors
    /// I/O errors naming the journal.
    pub fn store(&self, record: &Record) -> Result<()> {
        let tmp = self.path.with_extension("journal.tmp");
        let io = |op, path: &Path, source| Error::Io {
            op,
            path: path.to_owned(),
            source,
        };
        let text = serde_json::to_vec(record).expect("a record always serializes");
        let mut file = File::create(&tmp).map_err(|e| io("create", &tmp, e))?;
        file.write_all(&text).map_err(|e| io("write", &tmp, e))?;
        file.sync_all().map_err(|e| io("fsync", &tmp, e))?;
        std::fs::rename(&tmp, &self.path).map_err(|e| io("rename", &self.path, e))?;
        sync_parent(&self.path)
    }

    /// Removes the journal (after a commit, or when its target is gone).
    ///
    /// # Errors
    /// I/O errors other than "not found".
    pub fn remove(&self) -> Result<()> {
        match std::fs::remove_file(&self.path) {
            Ok(()) => sync_parent(&self.path),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(Error::Io {
                op: "remove",
                path: self.path.clone(),
                source: e,
            }),
        }
    }
}

/// fsyncs the folder holding `path`, making a rename or removal durable.
///
/// # Errors
/// I/O errors naming the folder.
pub fn sync_parent(path: &Path) -> Result<()> {
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => Path::new("."),
    };
    File::open(dir)
        .and_then(|f| f.sync_all())
        .map_err(|source| Error::Io {
            op: "fsync folder",
            path: dir.to_owned(),
            source,
        })
}
