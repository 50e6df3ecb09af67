//! The update log: one timestamped file per run, like balenahup's
//! `/mnt/data/balenahup/<script>.<YYYYmmdd_HHMMSS>.log`, with the process
//! id added so that two runs in the same second never share a file.

use std::fs::{File, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// An append-only log file; when it cannot be written the run carries on
/// and the problem is reported once as a warning.
#[derive(Debug)]
pub struct UpdateLog {
    file: Option<File>,
    path: Option<PathBuf>,
}

impl UpdateLog {
    /// Opens `dir/delta-apply.YYYYmmdd_HHMMSS.PID.log` (UTC), always a new
    /// file (`O_EXCL`, `.1`, `.2`... added when the name is taken), and
    /// removes the oldest update logs there past the newest `keep` (this
    /// one counted); on failure returns a log that drops lines and the
    /// warning to show.
    pub fn open(dir: &Path, keep: usize) -> (UpdateLog, Option<String>) {
        let stamp = chrono::Utc::now().format("%Y%m%d_%H%M%S").to_string();
        let opened = std::fs::create_dir_all(dir).and_then(|()| create_fresh(dir, &stamp));
        match opened {
            Ok((file, path)) => (
                UpdateLog {
                    file: Some(file),
                    path: Some(path),
                },
                remove_old_logs(dir, keep.max(1))
                    .err()
                    .map(|e| format!("cannot remove old update logs in {}: {e}", dir.display())),
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
        self.line_at(std::time::SystemTime::now(), text);
    }

    /// Appends a line stamped with `at`, when what it tells happened.
    pub fn line_at(&mut self, at: std::time::SystemTime, text: impl AsRef<str>) {
        if let Some(file) = &mut self.file {
            let at: chrono::DateTime<chrono::Utc> = at.into();
            let stamp = at.format("%Y-%m-%dT%H:%M:%S%.3fZ");
            // A log write failing must not fail the update.
            if writeln!(file, "{stamp} {}", text.as_ref()).is_err() {
                self.file = None;
            }
        }
    }
}

/// Creates `dir/delta-apply.STAMP.PID.log`, or `delta-apply.STAMP.PID.1.log`,
/// `.2.log`... when that name is taken (a run of this process in the same
/// second, or a reused pid): always a new file (`O_EXCL`), never one
/// planted there (a symlink or a hard link to another file is never
/// appended to).
fn create_fresh(dir: &Path, stamp: &str) -> std::io::Result<(File, PathBuf)> {
    use std::os::unix::fs::OpenOptionsExt;
    let pid = std::process::id();
    let mut last = None;
    for n in 0..100 {
        let path = match n {
            0 => dir.join(format!("delta-apply.{stamp}.{pid}.log")),
            n => dir.join(format!("delta-apply.{stamp}.{pid}.{n}.log")),
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

/// Removes the update logs of `dir` (regular files named
/// `delta-apply.*.log`; nothing else is touched) but the newest `keep`:
/// their names start with the time they were made, so they sort by age.
fn remove_old_logs(dir: &Path, keep: usize) -> std::io::Result<()> {
    let mut logs: Vec<PathBuf> = std::fs::read_dir(dir)?
        .filter_map(|entry| entry.ok())
        .filter(|entry| {
            let name = entry.file_name().to_string_lossy().into_owned();
            name.starts_with("delta-apply.")
                && name.ends_with(".log")
                && entry.file_type().is_ok_and(|t| t.is_file())
        })
        .map(|entry| entry.path())
        .collect();
    logs.sort();
    let old = logs.len().saturating_sub(keep);
    for path in &logs[..old] {
        std::fs::remove_file(path)?;
    }
    Ok(())
}

/// A duration as people read it: "850 ms", "2.0 s", "1 min 3 s",
/// "2 h 5 min"; the one format of durations in logs, errors and the CLI.
pub fn duration(d: Duration) -> String {
    let secs = d.as_secs();
    if d < Duration::from_secs(1) {
        format!("{} ms", d.as_millis())
    } else if secs < 60 {
        format!("{:.1} s", d.as_secs_f64())
    } else if secs < 3600 {
        format!("{} min {} s", secs / 60, secs % 60)
    } else {
        format!("{} h {} min", secs / 3600, secs % 3600 / 60)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_read_as_people_write_them() {
        let ms = Duration::from_millis;
        assert_eq!(duration(ms(0)), "0 ms");
        assert_eq!(duration(ms(850)), "850 ms");
        assert_eq!(duration(Duration::from_nanos(2_000_231_593)), "2.0 s");
        assert_eq!(duration(ms(59_940)), "59.9 s");
        assert_eq!(duration(ms(63_400)), "1 min 3 s");
        assert_eq!(duration(Duration::from_secs(7500)), "2 h 5 min");
    }

    /// balenahup keeps its logs; we keep the newest few: 180 piled up in
    /// one folder before.
    #[test]
    fn old_update_logs_past_the_newest_kept_are_removed_and_nothing_else() {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        for day in 10..25 {
            std::fs::write(
                d.join(format!("delta-apply.202601{day}_000000.7.log")),
                b"x",
            )
            .unwrap();
        }
        std::fs::write(d.join("notes.log"), b"mine").unwrap();
        std::fs::create_dir(d.join("delta-apply.20250101_000000.1.log")).unwrap();
        std::os::unix::fs::symlink("notes.log", d.join("delta-apply.20250102_000000.1.log"))
            .unwrap();
        let (log, warning) = UpdateLog::open(d, 5);
        assert_eq!(warning, None);
        let mut logs: Vec<String> = std::fs::read_dir(d)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        logs.sort();
        let mut expected: Vec<String> = (21..25)
            .map(|day| format!("delta-apply.202601{day}_000000.7.log"))
            .collect();
        expected.extend([
            "delta-apply.20250101_000000.1.log".into(),
            "delta-apply.20250102_000000.1.log".into(),
            log.path()
                .unwrap()
                .file_name()
                .unwrap()
                .to_string_lossy()
                .into_owned(),
            "notes.log".into(),
        ]);
        expected.sort();
        assert_eq!(logs, expected);
    }

    #[test]
    fn two_logs_in_the_same_second_are_two_files() {
        let dir = tempfile::tempdir().unwrap();
        let (a, _) = create_fresh(dir.path(), "20260101_000000").unwrap();
        let (b, _) = create_fresh(dir.path(), "20260101_000000").unwrap();
        drop((a, b));
        let mut names: Vec<String> = std::fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        names.sort();
        let pid = std::process::id();
        assert_eq!(
            names,
            [
                format!("delta-apply.20260101_000000.{pid}.1.log"),
                format!("delta-apply.20260101_000000.{pid}.log"),
            ]
        );
    }
}
