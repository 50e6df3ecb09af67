//! The output delta file: checked before any work, written where no name
//! can be planted, put in place only when complete.
//!
//! Why an unnamed file: the delta is written to an `O_TMPFILE` file in the
//! output's folder, which has no name until [`Target::commit`] links it as
//! `OUT.tmp` and renames that over `OUT`. A run that dies on the way (a
//! SIGBUS from an input truncated under its mapping, a kill) leaves
//! nothing behind, and no planted `OUT.tmp` symlink is ever opened. File
//! systems without `O_TMPFILE` get a named `OUT.tmp` created with
//! `O_CREAT | O_EXCL | O_NOFOLLOW` after a stale one is removed; there a
//! killed run can leave that `OUT.tmp`.
//!
//! `OUT` itself is only ever replaced by rename, never opened, so an
//! existing `OUT` must be a regular file (a symlink, such as `/dev/stdout`,
//! a device, FIFO or directory is refused, as it would otherwise be
//! replaced by a file) and
//! must not be an input (same device and inode after following symbolic
//! links, or the backing file of a loop device input).

use crate::error::{Error, Result};
use crate::mmap::Input;
use rustix::fs::{AtFlags, Mode, OFlags, CWD};
use rustix::io::Errno;
use std::fs::{File, Metadata};
use std::io;
use std::os::fd::AsRawFd;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

/// A file the output must not replace.
#[derive(Debug, Clone)]
struct Protected {
    /// Device and inode.
    id: (u64, u64),
    /// What it is, e.g. "new image new.img".
    what: String,
}

/// The inputs, and the backing files of loop device inputs.
fn protected(inputs: &[&Input]) -> Vec<Protected> {
    let mut list = Vec::new();
    for input in inputs {
        let name = format!("{} {}", input.role().name(), input.path().display());
        list.push(Protected {
            id: input.id(),
            what: name.clone(),
        });
        if let Some(rdev) = input.block_device() {
            if let Some(id) = loop_backing_file(rdev) {
                list.push(Protected {
                    id,
                    what: format!("backing file of the {name}"),
                });
            }
        }
    }
    list
}

/// Device and inode of the file behind a loop device (or a partition of
/// one), from sysfs; None for other block devices.
fn loop_backing_file(rdev: u64) -> Option<(u64, u64)> {
    let sys = format!(
        "/sys/dev/block/{}:{}",
        rustix::fs::major(rdev),
        rustix::fs::minor(rdev)
    );
    ["loop/backing_file", "../loop/backing_file"]
        .iter()
        .find_map(|rel| std::fs::read_to_string(format!("{sys}/{rel}")).ok())
        .and_then(|name| std::fs::metadata(name.trim_end_matches('\n')).ok())
        .map(|meta| (meta.dev(), meta.ino()))
}

/// Refuses an output that is a symbolic link: renaming the delta over it
/// would replace the link, whatever it points to.
fn refuse_symlink(out: &Path) -> Result<()> {
    if !out.is_symlink() {
        return Ok(());
    }
    let to = std::fs::read_link(out).map_or_else(
        |_| "an unreadable target".into(),
        |to| to.display().to_string(),
    );
    Err(Error::OutputIsSymlink {
        path: out.to_owned(),
        to,
    })
}

fn is_errno(e: &io::Error, errno: Errno) -> bool {
    e.raw_os_error() == Some(errno.raw_os_error())
}

/// The output file being written.
#[derive(Debug)]
pub(crate) struct Target {
    out: PathBuf,
    tmp: PathBuf,
    file: File,
    protected: Vec<Protected>,
    /// The file has the name `tmp` (always once linked).
    named: bool,
    /// Renamed to `out`.
    placed: bool,
}

impl Target {
    /// Checks `out` against the inputs (and, unless `replace`, that it
    /// does not exist) and creates the file the delta is written to, in
    /// `out`'s folder.
    ///
    /// # Errors
    /// [`Error::OutputNotRegular`], [`Error::OutputIsInput`],
    /// [`Error::OutputExists`], or an I/O error naming the output, its
    /// folder or its temporary name.
    pub(crate) fn prepare(out: &Path, inputs: &[&Input], replace: bool) -> Result<Target> {
        let protected = protected(inputs);
        match std::fs::metadata(out) {
            Ok(meta) => {
                check(&protected, out, &meta)?;
                refuse_symlink(out)?;
                if !meta.is_file() {
                    return Err(Error::OutputNotRegular {
                        path: out.to_owned(),
                        kind: delta_image::describe_type(meta.file_type()),
                    });
                }
                if !replace {
                    return Err(Error::OutputExists {
                        path: out.to_owned(),
                    });
                }
            }
            // A dangling symlink.
            Err(e) if e.kind() == io::ErrorKind::NotFound => refuse_symlink(out)?,
            Err(e) => return Err(io_error("stat", out, e)),
        }
        let tmp = temp_path(out);
        // Its own inode: a symlink planted there is removed, not followed.
        if let Ok(meta) = std::fs::symlink_metadata(&tmp) {
            check(&protected, &tmp, &meta)?;
        }
        let dir = match out.parent() {
            Some(dir) if !dir.as_os_str().is_empty() => dir,
            _ => Path::new("."),
        };
        let (file, named) = match create_unnamed(dir) {
            Ok(file) => (file, false),
            Err(e)
                if [Errno::OPNOTSUPP, Errno::ISDIR, Errno::INVAL]
                    .iter()
                    .any(|&n| is_errno(&e, n)) =>
            {
                (create_named(&tmp, &protected)?, true)
            }
            Err(e) => return Err(io_error("create a temporary file in", dir, e)),
        };
        let target = Target {
            out: out.to_owned(),
            tmp,
            file,
            protected,
            named,
            placed: false,
        };
        let meta = target
            .file
            .metadata()
            .map_err(|e| io_error("stat", &target.tmp, e))?;
        check(&target.protected, &target.tmp, &meta)?;
        Ok(target)
    }

    /// The file to write the delta to.
    pub(crate) fn file(&self) -> &File {
        &self.file
    }

    /// Puts the written (and synced) delta in place: links it as `OUT.tmp`
    /// (replacing a stale one) and renames that over `OUT`.
    ///
    /// # Errors
    /// An I/O error naming the file; `OUT.tmp` is removed again.
    pub(crate) fn commit(mut self) -> Result<()> {
        if !self.named {
            remove_stale(&self.tmp, &self.protected)?;
            link(&self.file, &self.tmp).map_err(|e| io_error("link", &self.tmp, e))?;
            self.named = true;
        }
        std::fs::rename(&self.tmp, &self.out)
            .map_err(|e| io_error("rename into place", &self.out, e))?;
        self.placed = true;
        Ok(())
    }
}

impl Drop for Target {
    fn drop(&mut self) {
        if self.named && !self.placed {
            let _ = std::fs::remove_file(&self.tmp);
        }
    }
}

fn io_error(op: &'static str, path: &Path, source: io::Error) -> Error {
    Error::Io {
        op,
        path: path.to_owned(),
        source,
    }
}

/// Refuses `path` when it is one of the protected files.
fn check(protected: &[Protected], path: &Path, meta: &Metadata) -> Result<()> {
    match protected.iter().find(|p| p.id == (meta.dev(), meta.ino())) {
        Some(p) => Err(Error::OutputIsInput {
            path: path.to_owned(),
            input: p.what.clone(),
        }),
        None => Ok(()),
    }
}

fn temp_path(out: &Path) -> PathBuf {
    let mut name = out.file_name().unwrap_or_default().to_os_string();
    name.push(".tmp");
    out.with_file_name(name)
}

fn mode() -> Mode {
    Mode::from_bits_truncate(0o666)
}

/// An unnamed file in `dir` (`O_TMPFILE`), linkable later.
fn create_unnamed(dir: &Path) -> io::Result<File> {
    let flags = OFlags::WRONLY | OFlags::TMPFILE | OFlags::CLOEXEC;
    Ok(File::from(rustix::fs::open(dir, flags, mode())?))
}

/// A new file at `tmp`, never through a name planted there.
fn create_named(tmp: &Path, protected: &[Protected]) -> Result<File> {
    remove_stale(tmp, protected)?;
    let flags = OFlags::WRONLY | OFlags::CREATE | OFlags::EXCL | OFlags::NOFOLLOW | OFlags::CLOEXEC;
    rustix::fs::open(tmp, flags, mode())
        .map(File::from)
        .map_err(|e| io_error("create", tmp, e.into()))
}

/// Removes a leftover `tmp` (a symlink itself, never its target), unless
/// it is an input.
fn remove_stale(tmp: &Path, protected: &[Protected]) -> Result<()> {
    match std::fs::symlink_metadata(tmp) {
        Ok(meta) => check(protected, tmp, &meta)?,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(io_error("stat", tmp, e)),
    }
    match std::fs::remove_file(tmp) {
        Err(e) if e.kind() != io::ErrorKind::NotFound => Err(io_error("remove stale", tmp, e)),
        _ => Ok(()),
    }
}

/// Gives the unnamed `file` the name `path` (which must not exist).
fn link(file: &File, path: &Path) -> io::Result<()> {
    let proc = format!("/proc/self/fd/{}", file.as_raw_fd());
    match rustix::fs::linkat(CWD, &proc, CWD, path, AtFlags::SYMLINK_FOLLOW) {
        Ok(()) => Ok(()),
        // Without /proc, linking by descriptor needs CAP_DAC_READ_SEARCH.
        Err(Errno::NOENT) if !Path::new("/proc/self/fd").exists() => Ok(rustix::fs::linkat(
            file,
            "",
            CWD,
            path,
            AtFlags::EMPTY_PATH,
        )?),
        Err(e) => Err(e.into()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn named_fallback_replaces_a_planted_symlink_without_following_it() {
        let dir = tempfile::tempdir().unwrap();
        let victim = dir.path().join("victim");
        std::fs::write(&victim, b"keep").unwrap();
        let tmp = dir.path().join("d.delta.tmp");
        std::os::unix::fs::symlink(&victim, &tmp).unwrap();
        let file = create_named(&tmp, &[]).unwrap();
        drop(file);
        assert_eq!(std::fs::read(&victim).unwrap(), b"keep");
        assert!(std::fs::symlink_metadata(&tmp).unwrap().is_file());
    }

    #[test]
    fn unnamed_file_is_linked_and_renamed_into_place() {
        let dir = tempfile::tempdir().unwrap();
        let out = dir.path().join("d.delta");
        std::fs::write(&out, b"old delta").unwrap();
        std::fs::write(temp_path(&out), b"stale").unwrap();
        let target = Target::prepare(&out, &[], true).unwrap();
        assert!(!target.named, "this file system has O_TMPFILE");
        use std::io::Write;
        target.file().write_all(b"new delta").unwrap();
        target.commit().unwrap();
        assert_eq!(std::fs::read(&out).unwrap(), b"new delta");
        assert!(!temp_path(&out).exists());
    }

    #[test]
    fn an_existing_output_is_kept_unless_replacing() {
        let dir = tempfile::tempdir().unwrap();
        let out = dir.path().join("d.delta");
        std::fs::write(&out, b"old delta").unwrap();
        let err = Target::prepare(&out, &[], false).unwrap_err();
        assert!(matches!(err, Error::OutputExists { .. }), "{err}");
        assert_eq!(std::fs::read(&out).unwrap(), b"old delta");
    }

    /// A symlink is never replaced, `--force` or not, dangling or not:
    /// `/dev/stdout` is one.
    #[test]
    fn a_symlink_output_is_refused_even_when_replacing() {
        let dir = tempfile::tempdir().unwrap();
        let out = dir.path().join("d.delta");
        std::fs::write(&out, b"old delta").unwrap();
        std::os::unix::fs::symlink(&out, dir.path().join("link")).unwrap();
        std::os::unix::fs::symlink("nowhere", dir.path().join("dangling")).unwrap();
        for name in ["link", "dangling"] {
            for replace in [false, true] {
                let err = Target::prepare(&dir.path().join(name), &[], replace).unwrap_err();
                assert!(matches!(err, Error::OutputIsSymlink { .. }), "{err}");
            }
        }
        assert!(dir.path().join("link").is_symlink());
        assert_eq!(std::fs::read(&out).unwrap(), b"old delta");
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 3);
    }

    #[test]
    fn dropped_target_leaves_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let out = dir.path().join("d.delta");
        drop(Target::prepare(&out, &[], true).unwrap());
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0);
    }
}
