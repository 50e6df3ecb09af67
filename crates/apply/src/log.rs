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
        let name = format!(
            "delta-apply.{}.log",
            chrono::Utc::now().format("%Y%m%d_%H%M%S")
        );
        let path = dir.join(name);
        let opened = std::fs::create_dir_all(dir)
            .and_then(|()| OpenOptions::new().create(true).append(true).open(&path));
        match opened {
            Ok(file) => (
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
