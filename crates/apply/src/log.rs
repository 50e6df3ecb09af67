//! The update log: one timestamped file per run, like balenahup's
//! `/mnt/data/balenahup/<script>.<YYYYmmdd_HHMMSS>.log`.

use std::fs::{File, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};

/// An append-only log file; when it cannot be written the run carries on
/// and the problem is reported once as a warning.
#[derive(Debug)]
pub struct UpdateLog {
    file: Option<File>,
    path: Option<PathBuf>,
}

impl UpdateLog {
    /// Opens `dir/delta-apply.YYYYmmdd_HHMMSS.log` (UTC); on failure
    /// returns a log that drops lines and the warning to show.
    pub fn open(dir: &Path) -> (UpdateLog, Option<String>) {
        let stamp = chrono::Utc::now().format("%Y%m%d_%H%M%S").to_string();
        let opened = std::fs::create_dir_all(dir).and_then(|()| create_fresh(dir, &stamp));
        match opened {
            Ok((file, path)) => (
                UpdateLog {
                    file: Some(file),
                    path: Some(path),
                },
                None,
            ),
            Err(e) => (
                UpdateLog::disabled(),
                Some(format!(
                    "cannot write the update log in {}: {e}; carrying on without it",
                    dir.display()
                )),
            ),
        }
    }

    /// A log that writes nothing.
    pub fn disabled() -> UpdateLog {
        UpdateLog {
            file: None,
            path: None,
        }
    }

    /// The log file's path, if one is open.
    pub fn path(&self) -> Option<&Path> {
        self.path.as_deref()
    }

    /// Appends one timestamped line.
    pub fn line(&mut self, text: impl AsRef<str>) {
        if let Some(file) = &mut self.file {
            let stamp = chrono::Utc::now().format("%Y-%m-%dT%H:%M:%S%.3fZ");
            // A log write failing must not fail the update.
            if writeln!(file, "{stamp} {}", text.as_ref()).is_err() {
                self.file = None;
            }
        }
    }
}

/// Creates `dir/delta-apply.STAMP.log`, or `delta-apply.STAMP.1.log`,
/// `.2.log`... when a run in the same
/// second took it: always a new file, never one planted there (a symlink
/// or a hard link to another file is never appended to).
fn create_fresh(dir: &Path, stamp: &str) -> std::io::Result<(File, PathBuf)> {
    use std::os::unix::fs::OpenOptionsExt;
    let mut last = None;
    for n in 0..100 {
        let path = match n {
            0 => dir.join(format!("delta-apply.{stamp}.log")),
            n => dir.join(format!("delta-apply.{stamp}.{n}.log")),
        };
        let opened = OpenOptions::new()
            .append(true)
            .create_new(true)
            .custom_flags(rustix::fs::OFlags::NOFOLLOW.bits() as i32)
            .open(&path);
        match opened {
            Ok(file) => return Ok((file, path)),
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => last = Some(e),
            Err(e) => return Err(e),
        }
    }
    Err(last.unwrap_or_else(|| std::io::ErrorKind::AlreadyExists.into()))
}
