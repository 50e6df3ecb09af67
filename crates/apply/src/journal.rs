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
pub(crate) enum State {
    /// Segments `0..segments_done`, and the first `segment_bytes` bytes of
    /// the next one, are written and fsynced.
    Applying,
    /// The whole image is written, fsynced and matches its digest; only the
    /// commit is left.
    Verified,
}

/// The journal record.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct Record {
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
pub(crate) struct Journal {
    path: PathBuf,
    /// Written first, then renamed over `path`.
    temp: PathBuf,
}

/// Largest journal read: a record is about 300 bytes.
const MAX_RECORD: u64 = 64 << 10;

impl Journal {
    /// The journal at `path`.
    pub(crate) fn new(path: PathBuf) -> Journal {
        let temp = crate::target::suffixed(&path, ".tmp");
        Journal { path, temp }
    }

    /// The journal's path.
    pub(crate) fn path(&self) -> &Path {
        &self.path
    }

    /// The temporary file each store writes before renaming it into place.
    pub(crate) fn temp_path(&self) -> &Path {
        &self.temp
    }

    /// Reads the record. A missing journal is `None`; one that cannot be
    /// a journal of ours (unreadable, not JSON, a symlink, a FIFO, an empty
    /// folder) is removed and `None` comes with a warning saying so: the
    /// run starts over rather than failing the same way forever.
    ///
    /// # Errors
    /// A folder at the journal path that holds files (never removed), or
    /// a stale journal that cannot be removed.
    pub(crate) fn load(&self) -> Result<(Option<Record>, Option<String>)> {
        let meta = match std::fs::symlink_metadata(&self.path) {
            Ok(meta) => meta,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok((None, None)),
            Err(e) => return Err(self.io("stat", e)),
        };
        let problem = if meta.is_file() {
            match self.read() {
                Ok(record) => return Ok((Some(record), None)),
                Err(problem) => problem,
            }
        } else {
            format!("it is {}", delta_image::describe_type(meta.file_type()))
        };
        if meta.is_dir() {
            std::fs::remove_dir(&self.path)
                .map_err(|e| self.io("remove stale journal folder", e))?;
        } else {
            std::fs::remove_file(&self.path).map_err(|e| self.io("remove stale journal", e))?;
        }
        Ok((
            None,
            Some(format!(
                "journal {} cannot be used ({problem}); removed it, starting over",
                self.path.display()
            )),
        ))
    }

    /// Reads and parses a regular-file journal, never following a symlink
    /// or blocking, and never reading more than [`MAX_RECORD`] bytes.
    fn read(&self) -> Result<Record, String> {
        use std::io::Read;
        use std::os::unix::fs::OpenOptionsExt;
        let flags = (rustix::fs::OFlags::NOFOLLOW | rustix::fs::OFlags::NONBLOCK).bits();
        let file = std::fs::OpenOptions::new()
            .read(true)
            .custom_flags(flags as i32)
            .open(&self.path)
            .map_err(|e| e.to_string())?;
        let mut text = Vec::new();
        file.take(MAX_RECORD + 1)
            .read_to_end(&mut text)
            .map_err(|e| e.to_string())?;
        if text.len() as u64 > MAX_RECORD {
            return Err(format!("over {MAX_RECORD} bytes"));
        }
        serde_json::from_slice(&text).map_err(|e| format!("not a journal record: {e}"))
    }

    fn io(&self, op: &'static str, source: std::io::Error) -> Error {
        Error::Io {
            op,
            path: self.path.clone(),
            source,
        }
    }

    /// Atomically replaces the record.
    ///
    /// # Errors
    /// I/O errors naming the journal.
    pub(crate) fn store(&self, record: &Record) -> Result<()> {
        use std::os::unix::fs::OpenOptionsExt;
        let tmp = &self.temp;
        let io = |op, path: &Path, source| Error::Io {
            op,
            path: path.to_owned(),
            source,
        };
        let text = serde_json::to_vec(record).expect("a record always serializes");
        // A stale temporary file, or a symlink planted there, is removed
        // (the link, not what it points to), and a new file created.
        let dir = crate::target::parent_dir(tmp);
        std::fs::create_dir_all(dir).map_err(|e| io("create folder", dir, e))?;
        crate::target::remove_stale(tmp)?;
        let mut file = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .custom_flags(rustix::fs::OFlags::NOFOLLOW.bits() as i32)
            .open(tmp)
            .map_err(|e| io("create", tmp, e))?;
        file.write_all(&text).map_err(|e| io("write", tmp, e))?;
        file.sync_all().map_err(|e| io("fsync", tmp, e))?;
        std::fs::rename(tmp, &self.path).map_err(|e| io("rename", &self.path, e))?;
        sync_parent(&self.path)
    }

    /// Removes the journal (after a commit, or when its target is gone).
    ///
    /// # Errors
    /// I/O errors other than "not found".
    pub(crate) fn remove(&self) -> Result<()> {
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
pub(crate) fn sync_parent(path: &Path) -> Result<()> {
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
