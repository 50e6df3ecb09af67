//! balenaOS update locks and the single-instance lock.
//!
//! An application holds `updates.lock` with an exclusive `flock` to delay
//! host OS reboots; a lock file that merely exists does not count: that is
//! the Supervisor's own lockfile mechanism, which gates app updates, not
//! the host OS (balena's update-locking documentation, and meta-balena's
//! `safe_reboot`, which probes `flock -nx` on each
//! `/tmp/balena-supervisor/services/*/*/updates.lock`). We probe each lock
//! the same way, with a non-blocking exclusive `flock` released at once;
//! no lock file is ever created or deleted under the lock root.

use crate::error::{Error, Result};
use crate::progress::{Reporter, Step};
use crate::ApplyOptions;
use std::fs::{File, OpenOptions, TryLockError};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

/// Lock files under `root` that some process holds: `root/*/*/updates.lock`.
pub(crate) fn held_locks(root: &Path) -> Vec<PathBuf> {
    let mut held = Vec::new();
    for app in read_dirs(root) {
        for service in read_dirs(&app) {
            let lock = service.join("updates.lock");
            if let Ok(file) = File::open(&lock) {
                match file.try_lock() {
                    Ok(()) => {
                        let _ = file.unlock();
                    }
                    Err(TryLockError::WouldBlock) => held.push(lock),
                    Err(TryLockError::Error(_)) => {}
                }
            }
        }
    }
    held.sort();
    held
}

/// Who holds `lock` under `root`: the application and service its folders
/// name (`<appId>/<service>`, as the Supervisor lays them out).
fn holder(root: &Path, lock: &Path) -> String {
    let folders = lock
        .parent()
        .and_then(|service| service.strip_prefix(root).ok());
    match folders {
        Some(names) if !names.as_os_str().is_empty() => {
            format!("application {}", names.display())
        }
        _ => "an application".into(),
    }
}

fn read_dirs(dir: &Path) -> Vec<PathBuf> {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return Vec::new();
    };
    let mut dirs: Vec<PathBuf> = entries
        .filter_map(|e| e.ok())
        .map(|e| e.path())
        .filter(|p| p.is_dir())
        .collect();
    dirs.sort();
    dirs
}

/// True when the supervisor's target-state config sets
/// `SUPERVISOR_OVERRIDE_LOCK` (or legacy `RESIN_OVERRIDE_LOCK`) to "true".
/// A missing or unreadable file means no override.
pub(crate) fn override_requested(config: &Path) -> bool {
    let Ok(text) = std::fs::read_to_string(config) else {
        return false;
    };
    let Ok(value) = serde_json::from_str::<serde_json::Value>(&text) else {
        return false;
    };
    ["SUPERVISOR_OVERRIDE_LOCK", "RESIN_OVERRIDE_LOCK"]
        .iter()
        .find_map(|key| value.get(key))
        .is_some_and(|v| v == "true" || v == true || v == "1")
}

/// The single-instance lock, held for the life of the value.
#[derive(Debug)]
pub(crate) struct InstanceLock {
    _file: File,
}

impl InstanceLock {
    /// Takes the lock at `path` without waiting.
    ///
    /// # Errors
    /// [`Error::AlreadyRunning`] if another process holds it, or an I/O
    /// error creating it.
    pub(crate) fn acquire(path: &Path) -> Result<InstanceLock> {
        let io = |op, source| Error::Io {
            op,
            path: path.to_owned(),
            source,
        };
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir).map_err(|e| io("create directory for", e))?;
        }
        // Never blocking on a FIFO planted there, never following a link.
        let flags = rustix::fs::OFlags::NOFOLLOW | rustix::fs::OFlags::NONBLOCK;
        let file = OpenOptions::new()
            .create(true)
            .truncate(false)
            .read(true)
            .write(true)
            .custom_flags(flags.bits() as i32)
            .open(path)
            .map_err(|e| io("open instance lock", e))?;
        let meta = file.metadata().map_err(|e| io("stat instance lock", e))?;
        if !meta.is_file() {
            return Err(io(
                "use instance lock",
                std::io::Error::new(
                    std::io::ErrorKind::InvalidInput,
                    format!(
                        "it is {}, expected a regular file",
                        delta_image::describe_type(meta.file_type())
                    ),
                ),
            ));
        }
        match file.try_lock() {
            Ok(()) => Ok(InstanceLock { _file: file }),
            Err(TryLockError::WouldBlock) => Err(Error::AlreadyRunning {
                path: path.to_owned(),
            }),
            Err(TryLockError::Error(e)) => Err(io("lock", e)),
        }
    }
}

/// Waits until no application holds its update lock (or the override is
/// set), reporting the lock waited on; the waiting step of a run.
///
/// # Errors
/// [`Error::LockTimeout`] after `options.lock_timeout`, or
/// [`Error::Cancelled`].
pub(crate) fn wait_for_locks(
    options: &ApplyOptions,
    cancel: &AtomicBool,
    report: &mut Reporter<'_>,
) -> Result<()> {
    if options.override_lock {
        report.log.line("update locks overridden by option");
        return Ok(());
    }
    if override_requested(&options.supervisor_config) {
        report.log.line(format!(
            "update locks overridden by {}",
            options.supervisor_config.display()
        ));
        return Ok(());
    }
    let started = Instant::now();
    loop {
        let held = held_locks(&options.lock_root);
        let Some(lock) = held.first() else {
            return Ok(());
        };
        let message = format!(
            "{} holds its update lock ({})",
            holder(&options.lock_root, lock),
            lock.display()
        );
        if report.current() != Step::WaitingForLock {
            report.log.line(&message);
        }
        let waited = started.elapsed();
        if options.lock_timeout.is_some_and(|t| waited >= t) {
            return Err(Error::LockTimeout {
                lock: lock.clone(),
                waited,
            });
        }
        // Sleep in slices of at most a second so progress keeps flowing and
        // cancellation is prompt.
        let poll_end = Instant::now() + options.lock_poll;
        loop {
            report.report(Step::WaitingForLock, 0, 0, Some(message.clone()));
            if cancel.load(Ordering::Relaxed) {
                return Err(Error::Cancelled);
            }
            let now = Instant::now();
            let deadline = options
                .lock_timeout
                .map_or(poll_end, |t| poll_end.min(started + t));
            if now >= deadline {
                break;
            }
            std::thread::sleep((deadline - now).min(Duration::from_secs(1)));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn override_keys() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("config");
        assert!(!override_requested(&path));
        std::fs::write(&path, r#"{"SUPERVISOR_OVERRIDE_LOCK":"true"}"#).unwrap();
        assert!(override_requested(&path));
        std::fs::write(&path, r#"{"RESIN_OVERRIDE_LOCK":"true"}"#).unwrap();
        assert!(override_requested(&path));
        std::fs::write(&path, r#"{"SUPERVISOR_OVERRIDE_LOCK":"false"}"#).unwrap();
        assert!(!override_requested(&path));
        std::fs::write(&path, "not json").unwrap();
        assert!(!override_requested(&path));
    }

    #[test]
    fn existing_unlocked_file_is_not_held() {
        let dir = tempfile::tempdir().unwrap();
        let svc = dir.path().join("1").join("main");
        std::fs::create_dir_all(&svc).unwrap();
        std::fs::write(svc.join("updates.lock"), "").unwrap();
        assert!(held_locks(dir.path()).is_empty());
        let holder = File::open(svc.join("updates.lock")).unwrap();
        holder.lock().unwrap();
        // flock locks belong to the open file description, so a second open
        // in this process conflicts just as another process would.
        assert_eq!(held_locks(dir.path()), vec![svc.join("updates.lock")]);
        drop(holder);
        assert!(held_locks(dir.path()).is_empty());
        assert!(svc.join("updates.lock").exists(), "a lock is never deleted");
    }
}
