//! Where the new image goes: a file written as `OUT.partial` and renamed
//! into place, or a block device written in place; and the checks, before
//! anything is written, that the target can never be the old image (see
//! [`storage`](crate::storage)) nor take more than it can hold. The bytes
//! themselves go through [`TargetWriter`](crate::writer::TargetWriter).

use crate::error::{Error, Result};
use crate::storage::{self, Storage, Sysfs};
use std::fs::{File, Metadata, OpenOptions, TryLockError};
use std::io::{self, Seek, SeekFrom};
use std::os::unix::fs::{FileTypeExt, MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

/// Where the new image goes.
#[derive(Debug, Clone)]
pub(crate) enum Target {
    /// A regular file: written as `<path>.partial`, renamed on commit.
    File {
        /// Final path.
        path: PathBuf,
        /// Path written until the commit.
        partial: PathBuf,
    },
    /// A block device, written in place (the inactive partition).
    Block {
        /// The device node.
        path: PathBuf,
        /// Its size in bytes.
        size: u64,
    },
}

/// The old image as opened: what a target must never write.
#[derive(Debug)]
pub(crate) struct OldImage {
    /// The path named by the caller.
    pub path: PathBuf,
    /// Metadata of the open file (device and inode).
    pub meta: Metadata,
    /// The storage beneath it.
    pub storage: Storage,
}

impl OldImage {
    /// Describes the old image open as `file`, `len` bytes long.
    pub(crate) fn of(path: &Path, file: &File, len: u64) -> Result<OldImage> {
        let meta = file.metadata().map_err(|source| Error::Io {
            op: "stat old image",
            path: path.to_owned(),
            source,
        })?;
        // An old image whose storage cannot be told (a loop device whose
        // backing file is gone) is still compared by its device number.
        let storage = Sysfs::default()
            .storage(&meta, len)
            .unwrap_or_else(|_| Storage {
                direct: vec![storage::Place::File {
                    dev: meta.dev(),
                    ino: meta.ino(),
                    start: 0,
                    end: u64::MAX,
                }],
                container: Vec::new(),
            });
        Ok(OldImage {
            path: path.to_owned(),
            meta,
            storage,
        })
    }

    /// True when `meta` is the old image's inode or device node, or a
    /// file its bytes live in (a loop device's backing file).
    fn is(&self, meta: &Metadata) -> bool {
        let same_inode = meta.dev() == self.meta.dev() && meta.ino() == self.meta.ino();
        let same_device = meta.file_type().is_block_device()
            && self.meta.file_type().is_block_device()
            && meta.rdev() == self.meta.rdev();
        let holds_it = self.storage.direct.iter().any(|place| {
            matches!(*place, storage::Place::File { dev, ino, .. }
                if dev == meta.dev() && ino == meta.ino())
        });
        same_inode || same_device || holds_it
    }
}

impl Target {
    /// Classifies `path` (following symlinks, so `/dev/disk/by-label/...`
    /// names its device): an existing block device, else a file to create.
    ///
    /// # Errors
    /// [`Error::UnsafeTarget`] for anything that is neither a regular file
    /// nor a block device (a folder, a character device, a FIFO...), before
    /// any work is done.
    pub(crate) fn new(path: &Path) -> Result<Target> {
        let refuse = |reason: String| Error::UnsafeTarget {
            target: path.to_owned(),
            reason,
        };
        match std::fs::metadata(path) {
            Ok(m) if m.file_type().is_block_device() => {
                let size = device_size(path)?;
                Ok(Target::Block {
                    path: path.to_owned(),
                    size,
                })
            }
            Ok(m) if !m.is_file() => Err(refuse(format!(
                "it is {}; the target must be a regular file or a block device",
                delta_image::describe_type(m.file_type())
            ))),
            Ok(_) => Ok(Target::file(path)),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(Target::file(path)),
            Err(source) => Err(Error::Io {
                op: "stat target",
                path: path.to_owned(),
                source,
            }),
        }
    }

    fn file(path: &Path) -> Target {
        Target::File {
            path: path.to_owned(),
            partial: suffixed(path, ".partial"),
        }
    }

    /// The path bytes are written to before the commit.
    pub(crate) fn write_path(&self) -> &Path {
        match self {
            Target::File { partial, .. } => partial,
            Target::Block { path, .. } => path,
        }
    }

    /// The path named by the user.
    pub(crate) fn path(&self) -> &Path {
        match self {
            Target::File { path, .. } | Target::Block { path, .. } => path,
        }
    }

    /// Refuses a new image that does not fit: larger than the block
    /// device, or than `max_file` bytes for a file target (zero runs cost
    /// a file nothing on disk, but every byte is still hashed). An empty
    /// image is never written over a block device.
    ///
    /// # Errors
    /// [`Error::ImageTooLarge`], or [`Error::UnsafeTarget`] for an empty
    /// image on a device.
    pub(crate) fn check_fits(&self, delta: &Path, new_len: u64, max_file: u64) -> Result<()> {
        let too_large = |limit: String| Error::ImageTooLarge {
            delta: delta.to_owned(),
            new_len,
            limit,
        };
        match self {
            Target::Block { size, path } if new_len > *size => Err(too_large(format!(
                "the target device {} holds {size} bytes",
                path.display()
            ))),
            Target::Block { .. } if new_len == 0 => Err(Error::UnsafeTarget {
                target: self.path().to_owned(),
                reason: "the delta's new image is empty (header new_len 0), and an empty \
                         image is never committed over a block device"
                    .into(),
            }),
            Target::File { .. } if new_len > max_file => Err(too_large(format!(
                "the limit for a file target is {max_file} bytes (--max-image-size)"
            ))),
            _ => Ok(()),
        }
    }

    /// Refuses, before anything is written, a target that would write the
    /// old image or the running system: compared by inode and by the
    /// storage beneath (see [`storage`]), for the target and for every
    /// name this run creates, replaces or removes (`partial`, the journal
    /// and its temporary file, given in `names`).
    ///
    /// # Errors
    /// [`Error::UnsafeTarget`] naming the reason.
    pub(crate) fn check_safe(&self, old: Option<&OldImage>, names: &[&Path]) -> Result<()> {
        let refuse = |reason: String| {
            Err(Error::UnsafeTarget {
                target: self.path().to_owned(),
                reason,
            })
        };
        if let Some(old) = old {
            for name in std::iter::once(self.path()).chain(names.iter().copied()) {
                // A symlink at one of these names is replaced or removed,
                // never written through, so the name itself is compared.
                if std::fs::symlink_metadata(name).is_ok_and(|m| old.is(&m)) {
                    return refuse(if name == self.path() {
                        format!("it is the old image {}", old.path.display())
                    } else {
                        format!(
                            "{} is the old image {}, and this run would replace or remove it",
                            name.display(),
                            old.path.display()
                        )
                    });
                }
            }
        }
        let sys = Sysfs::default();
        if let Target::Block { path, .. } = self {
            let meta = std::fs::metadata(path).map_err(|source| Error::Io {
                op: "stat target",
                path: path.clone(),
                source,
            })?;
            let storage = match sys.storage(&meta, u64::MAX) {
                Ok(storage) => storage,
                Err(reason) => return refuse(reason),
            };
            if let Some(old) = old {
                if storage.conflicts_with(&old.storage) {
                    return refuse(format!(
                        "its storage overlaps the old image {} (same disk range, a partition \
                         of it, a loop device over it or a device-mapper device on it)",
                        old.path.display()
                    ));
                }
            }
            let mountinfo = std::fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
            if let Some(point) = sys.mounted_in(&storage, &mountinfo) {
                return refuse(if point == "/" {
                    "it holds the running root filesystem".into()
                } else {
                    format!("it holds the file system mounted at {point}")
                });
            }
        }
        if let (Target::File { path, .. }, Some(old)) = (self, old) {
            let dir = parent_dir(path);
            if let Ok(meta) = std::fs::metadata(dir) {
                let folder = Storage {
                    direct: Vec::new(),
                    container: sys
                        .storage(&meta, 1)
                        .map(|s| s.container)
                        .unwrap_or_default(),
                };
                if folder.conflicts_with(&old.storage) {
                    return refuse(format!(
                        "its folder {} is on the file system of the old image {}, a block \
                         device that writing a file there would change",
                        dir.display(),
                        old.path.display()
                    ));
                }
            }
        }
        if let Target::File { path, .. } = self {
            if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
                if !dir.is_dir() {
                    return refuse(format!("folder {} does not exist", dir.display()));
                }
            }
        }
        Ok(())
    }

    /// Takes this run's hold on the target: an exclusive `flock` on the
    /// partial file's inode (made empty if there is none; a symlink planted
    /// there is removed, never followed) or on the device node. It is keyed
    /// by the inode, not by the path: another apply to the same target,
    /// whatever path or instance lock it names, is refused until this one
    /// ends, and the commit renames only the inode locked here.
    ///
    /// # Errors
    /// [`Error::TargetInUse`] when another run holds it, or I/O errors.
    pub(crate) fn lock(&self) -> Result<TargetLock> {
        let path = self.write_path();
        let io = |op, source| Error::Io {
            op,
            path: path.to_owned(),
            source,
        };
        // Each turn fails only when another run replaced the name between
        // the open and the lock: a few turns settle it.
        for _ in 0..16 {
            let existed = std::fs::symlink_metadata(path).is_ok();
            let file = match self {
                Target::File { .. } => {
                    let flags = rustix::fs::OFlags::NOFOLLOW | rustix::fs::OFlags::NONBLOCK;
                    let opened = OpenOptions::new()
                        .read(true)
                        .write(true)
                        .create(true)
                        .truncate(false)
                        .custom_flags(flags.bits() as i32)
                        .open(path);
                    match opened {
                        Err(e) if e.raw_os_error() == Some(libc_flags::ELOOP) => {
                            remove_stale(path)?;
                            continue;
                        }
                        opened => opened.map_err(|e| io("open target", e))?,
                    }
                }
                Target::Block { .. } => File::open(path).map_err(|e| io("open target", e))?,
            };
            let meta = file.metadata().map_err(|e| io("stat target", e))?;
            if matches!(self, Target::File { .. }) && !meta.is_file() {
                return Err(Error::UnsafeTarget {
                    target: path.to_owned(),
                    reason: format!(
                        "it is {}, expected a regular file",
                        delta_image::describe_type(meta.file_type())
                    ),
                });
            }
            match file.try_lock() {
                Ok(()) => {}
                Err(TryLockError::WouldBlock) => {
                    return Err(Error::TargetInUse {
                        target: self.path().to_owned(),
                        locked: path.to_owned(),
                    })
                }
                Err(TryLockError::Error(e)) => return Err(io("lock target", e)),
            }
            let lock = TargetLock {
                file,
                dev: meta.dev(),
                ino: meta.ino(),
                path: path.to_owned(),
                made: !existed,
            };
            if lock.names_it(path, matches!(self, Target::Block { .. })) {
                return Ok(lock);
            }
        }
        Err(io(
            "lock target",
            io::Error::other("another process keeps replacing it"),
        ))
    }

    /// Opens the write path that `lock` holds: `fresh` empties a file
    /// target's partial file, otherwise the partial file an earlier run
    /// wrote is opened again (never through a symlink, and only the inode
    /// locked); a block device is opened exclusively (the kernel refuses
    /// while it is mounted). The opened file is compared with the old image
    /// once more. `data_len` is the part of the new image that is not zero
    /// runs: a file target needs that much room, the rest becomes holes.
    ///
    /// # Errors
    /// I/O errors naming the path, a file system without room for
    /// `data_len` bytes, an opened file that is the old image, or one that
    /// is not the inode locked.
    pub(crate) fn open(
        &self,
        lock: &TargetLock,
        fresh: bool,
        old: Option<&OldImage>,
        data_len: u64,
    ) -> Result<File> {
        let path = self.write_path();
        let io = |op, source| Error::Io {
            op,
            path: path.to_owned(),
            source,
        };
        let refuse = |reason: String| Error::UnsafeTarget {
            target: path.to_owned(),
            reason,
        };
        let mut options = OpenOptions::new();
        options.read(true).write(true);
        match self {
            Target::File { .. } => {
                self.check_room(fresh, data_len)?;
                options.custom_flags(libc_flags::NOFOLLOW);
            }
            Target::Block { .. } => {
                options.custom_flags(libc_flags::EXCL);
            }
        }
        let file = options.open(path).map_err(|e| match e.raw_os_error() {
            Some(libc_flags::ELOOP) => {
                refuse("it is a symbolic link, planted where this run writes".into())
            }
            Some(libc_flags::EBUSY) => refuse(
                "the device is in use (mounted, or held by another device such as a \
                 device-mapper target)"
                    .into(),
            ),
            _ => io("open target", e),
        })?;
        let meta = file.metadata().map_err(|e| io("stat target", e))?;
        let expected = match self {
            Target::File { .. } => meta.is_file(),
            Target::Block { .. } => meta.file_type().is_block_device(),
        };
        if !expected {
            return Err(refuse(format!(
                "it is {}, expected {}",
                delta_image::describe_type(meta.file_type()),
                if matches!(self, Target::File { .. }) {
                    "a regular file"
                } else {
                    "a block device"
                }
            )));
        }
        if let Some(old) = old {
            if old.is(&meta) {
                return Err(refuse(format!(
                    "it is the old image {}",
                    old.path.display()
                )));
            }
        }
        if (meta.dev(), meta.ino()) != (lock.dev, lock.ino) {
            return Err(refuse(
                "another process replaced it while this run held its lock".into(),
            ));
        }
        if fresh && matches!(self, Target::File { .. }) {
            file.set_len(0).map_err(|e| io("empty target", e))?;
        }
        Ok(file)
    }

    /// The length of the partial file an earlier run left, if it is a
    /// regular file (not followed through a symlink).
    pub(crate) fn partial_len(&self) -> Option<u64> {
        match self {
            Target::File { partial, .. } => std::fs::symlink_metadata(partial)
                .ok()
                .filter(Metadata::is_file)
                .map(|m| m.len()),
            Target::Block { size, .. } => Some(*size),
        }
    }

    /// Whether the write path could hold a finished image of `len` bytes:
    /// a partial file of exactly that length, or a device.
    pub(crate) fn may_hold(&self, len: u64) -> bool {
        match self {
            Target::File { .. } => self.partial_len() == Some(len),
            Target::Block { size, .. } => *size >= len,
        }
    }

    /// Refuses, before anything is written, a file target whose file system
    /// cannot hold `data_len` bytes (counting what a resumed partial file
    /// already holds). A full disk half-way through would cost the device
    /// the whole download and write time for nothing.
    fn check_room(&self, fresh: bool, data_len: u64) -> Result<()> {
        let path = self.write_path();
        let dir = parent_dir(path);
        // Without statvfs (an unusual file system), the writes will tell.
        let Ok(vfs) = rustix::fs::statvfs(dir) else {
            return Ok(());
        };
        let free = vfs.f_bavail.saturating_mul(vfs.f_frsize);
        let held = match std::fs::symlink_metadata(path) {
            Ok(m) if !fresh && m.is_file() => m.blocks().saturating_mul(512),
            _ => 0,
        };
        let needed = data_len.saturating_sub(held);
        if needed > free {
            return Err(Error::UnsafeTarget {
                target: path.to_owned(),
                reason: format!(
                    "its file system has {free} bytes free, the new image needs {needed} more \
                     ({data_len} bytes that are not zero runs)"
                ),
            });
        }
        Ok(())
    }
}

/// A run's exclusive hold on its target (see [`Target::lock`]), released
/// when dropped.
#[derive(Debug)]
pub(crate) struct TargetLock {
    /// The open file whose `flock` is held.
    file: File,
    dev: u64,
    ino: u64,
    path: PathBuf,
    /// The lock made the (empty) partial file.
    made: bool,
}

impl TargetLock {
    /// Whether `path` names the inode locked (for a file target, the name
    /// itself, not what a symlink there points to).
    fn names_it(&self, path: &Path, follow: bool) -> bool {
        let meta = if follow {
            std::fs::metadata(path)
        } else {
            std::fs::symlink_metadata(path)
        };
        meta.is_ok_and(|m| (m.dev(), m.ino()) == (self.dev, self.ino))
    }

    /// Refuses a commit of anything but the inode locked (and verified).
    ///
    /// # Errors
    /// [`Error::UnsafeTarget`] when `partial` names another file.
    pub(crate) fn check_commit(&self, target: &Path, partial: &Path) -> Result<()> {
        if self.names_it(partial, false) {
            return Ok(());
        }
        Err(Error::UnsafeTarget {
            target: target.to_owned(),
            reason: format!(
                "{} is no longer the file this run wrote and verified; nothing was committed",
                partial.display()
            ),
        })
    }
}

impl Drop for TargetLock {
    /// A partial file the lock made and nothing was written to is removed.
    fn drop(&mut self) {
        let empty = self.file.metadata().is_ok_and(|m| m.len() == 0);
        if self.made && empty && self.names_it(&self.path, false) {
            let _ = std::fs::remove_file(&self.path);
        }
    }
}

/// Open flags and error numbers, from rustix (no `unsafe`).
mod libc_flags {
    pub(super) const NOFOLLOW: i32 = rustix::fs::OFlags::NOFOLLOW.bits() as i32;
    pub(super) const EXCL: i32 = rustix::fs::OFlags::EXCL.bits() as i32;
    pub(super) const ELOOP: i32 = rustix::io::Errno::LOOP.raw_os_error();
    pub(super) const EBUSY: i32 = rustix::io::Errno::BUSY.raw_os_error();
}

/// Removes what a stale name holds (a file or a planted symlink; the link
/// itself, never what it points to). A folder there is an error.
pub(crate) fn remove_stale(path: &Path) -> Result<()> {
    match std::fs::remove_file(path) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        Err(source) => Err(Error::Io {
            op: "remove stale",
            path: path.to_owned(),
            source,
        }),
    }
}

/// `path` with `suffix` appended to its last component.
pub(crate) fn suffixed(path: &Path, suffix: &str) -> PathBuf {
    let mut name = path.as_os_str().to_owned();
    name.push(suffix);
    PathBuf::from(name)
}

/// The folder holding `path` (`.` for a bare name).
pub(crate) fn parent_dir(path: &Path) -> &Path {
    match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => Path::new("."),
    }
}

/// Size of the block device at `path`, measured by seeking to its end.
fn device_size(path: &Path) -> Result<u64> {
    let io = |op, source| Error::Io {
        op,
        path: path.to_owned(),
        source,
    };
    let mut file = File::open(path).map_err(|e| io("open target", e))?;
    file.seek(SeekFrom::End(0)).map_err(|e| io("measure", e))
}
