//! Walking the data folder into a tar stream, as `tar -cf - -C DIR .` does.
//!
//! Order and naming follow GNU tar 1.34 so the stream is byte-identical
//! (the tests compare it with GNU tar's): members are named `./…`,
//! directories end in `/`, each directory's entries are read completely and
//! then archived in the order the file system returns them (GNU tar's
//! default `--sort=none`), depth first. A file or symlink seen again under
//! another name (same device and inode, link count > 1) becomes a hard-link
//! member; fifos and devices are archived under each name, as GNU tar does.
//!
//! Everything is opened relative to its parent's descriptor (`openat`), with
//! `O_NOFOLLOW` and `O_NOATIME`, retried without `O_NOATIME` on `EPERM`
//! (a file the caller does not own). So symlinks are never followed, paths
//! longer than `PATH_MAX` work, and reading leaves access times alone.
//! `readlink` is the exception: the kernel updates a symlink's access time
//! on every read and offers no flag against it.
//!
//! # Failures, as GNU tar classes them
//!
//! GNU tar carries on past every problem with an entry, but its exit
//! status tells the migration script whether the backup is whole. Checked
//! with GNU tar 1.34 (failures injected with `strace -e inject`):
//!
//! - exit 2, an [`Error::Unreadable`] here: an entry that cannot be
//!   stat'ed, opened or read for any reason but `ENOENT` ("Cannot open:
//!   Permission denied", "Cannot savedir", "Read error at byte …",
//!   "Cannot readlink"). The backup would be incomplete and the script
//!   stops half-way: exactly what the check must catch. Running out of
//!   descriptors or memory is an [`Error::Io`] instead: our problem, not
//!   the backup's.
//! - exit 1, a warning: an entry gone between listing and reading (`ENOENT`,
//!   "File removed before we read it"), a file that shrank (padded with
//!   zeros, its header already promised the old size) or changed while read.
//! - exit 0, a warning: a socket (not archived).
//!
//!
//! The directories on the current path, and which hold descriptors, are
//! kept by [`dirs`](crate::dirs): any depth walks with a bounded number of
//! descriptors.

use std::collections::HashMap;
use std::ffi::{CStr, CString, OsStr};
use std::fs::File;
use std::io::{self, Read};
use std::mem::MaybeUninit;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

use rustix::fs::{AtFlags, FileType, Mode, OFlags, RawDir, Stat};
use rustix::io::Errno;

use crate::dirs::{Frame, Stack, DIR_FLAGS, MAX_OPEN_DIRS};
use crate::error::Error;
use crate::gzip::Sink;
use crate::tar::{self, Header, Kind, Names};
use crate::Halt;

/// Warnings kept in full; further ones are only counted.
const MAX_WARNINGS: usize = 1000;
/// Read size for file contents.
const READ_BUF: usize = 256 * 1024;
/// Buffer for `getdents`, shared by all directories.
const DIR_BUF: usize = 32 * 1024;
const ZEROS: [u8; 8192] = [0; 8192];
/// The `stat` fields used, in the same types on every architecture.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Meta {
    pub(crate) mode: u32,
    pub(crate) uid: u64,
    pub(crate) gid: u64,
    pub(crate) size: i64,
    pub(crate) mtime: i64,
    pub(crate) mtime_nsec: u64,
    pub(crate) ctime: i64,
    pub(crate) ctime_nsec: u64,
    pub(crate) nlink: u64,
    pub(crate) dev: u64,
    pub(crate) ino: u64,
    pub(crate) rdev: u64,
}

impl Meta {
    // `Stat`'s field types differ by architecture; on some these are no-ops.
    #[allow(clippy::useless_conversion)]
    pub(crate) fn new(st: &Stat) -> Meta {
        Meta {
            mode: st.st_mode,
            uid: u64::from(st.st_uid),
            gid: u64::from(st.st_gid),
            size: i64::from(st.st_size),
            mtime: i64::from(st.st_mtime),
            mtime_nsec: u64::from(st.st_mtime_nsec),
            ctime: i64::from(st.st_ctime),
            ctime_nsec: u64::from(st.st_ctime_nsec),
            nlink: u64::from(st.st_nlink),
            dev: u64::from(st.st_dev),
            ino: u64::from(st.st_ino),
            rdev: u64::from(st.st_rdev),
        }
    }

    fn file_type(&self) -> FileType {
        FileType::from_raw_mode(self.mode)
    }
}

/// An earlier member that later names of the same inode link to.
struct LinkTarget {
    name: Vec<u8>,
    /// Names of this inode not seen yet; the entry is dropped at 0.
    remaining: u64,
}

/// Warnings in GNU tar's words, `./name: what: why`; at most
/// [`MAX_WARNINGS`] kept.
#[derive(Debug, Default)]
pub(crate) struct Warnings {
    kept: Vec<String>,
    dropped: u64,
}

impl Warnings {
    fn push(&mut self, name: &[u8], message: impl std::fmt::Display) {
        if self.kept.len() < MAX_WARNINGS {
            self.kept
                .push(format!("{}: {message}", String::from_utf8_lossy(name)));
        } else {
            self.dropped += 1;
        }
    }

    pub(crate) fn into_vec(mut self) -> Vec<String> {
        if self.dropped > 0 {
            self.kept
                .push(format!("... and {} more warnings", self.dropped));
        }
        self.kept
    }
}

/// Writes the tar stream of one folder into a [`Sink`].
pub(crate) struct Walker<'a, S: Sink> {
    sink: &'a mut S,
    names: Names,
    links: HashMap<(u64, u64), LinkTarget>,
    /// Members written, not counting long-name entries.
    pub(crate) members: u64,
    pub(crate) warnings: Warnings,
    /// Tar bytes written, for the final record padding.
    written: u64,
    /// The data folder, for messages.
    root: PathBuf,
    /// Member name of the entry being archived; each frame's name is a
    /// prefix of it.
    path: Vec<u8>,
    header: Vec<u8>,
    buf: Vec<u8>,
    dir_buf: Vec<MaybeUninit<u8>>,
    /// Directory descriptors held at most (see [`MAX_OPEN_DIRS`]).
    pub(crate) max_open_dirs: usize,
    /// Most directory descriptors held at once, and directories opened
    /// again, in the last walk.
    pub(crate) peak_open_dirs: usize,
    pub(crate) reopened_dirs: u64,
}

impl<'a, S: Sink> Walker<'a, S> {
    pub(crate) fn new(sink: &'a mut S) -> Self {
        Walker {
            sink,
            names: Names::load(),
            links: HashMap::new(),
            members: 0,
            warnings: Warnings::default(),
            written: 0,
            root: PathBuf::new(),
            path: Vec::new(),
            header: Vec::with_capacity(3 * tar::BLOCK),
            buf: vec![0; READ_BUF],
            dir_buf: vec![MaybeUninit::uninit(); DIR_BUF],
            max_open_dirs: MAX_OPEN_DIRS,
            peak_open_dirs: 0,
            reopened_dirs: 0,
        }
    }

    /// Archives `root` as `./` and everything under it, then the end of
    /// archive: two zero blocks, padded with zeros to a 10240-byte record.
    pub(crate) fn walk(&mut self, root: &Path) -> Result<(), Halt> {
        let root_error = |op: &'static str, e: Errno| Error::Io {
            op,
            path: root.to_path_buf(),
            source: e.into(),
        };
        match std::fs::metadata(root) {
            Ok(m) if m.is_dir() => {}
            Ok(_) => {
                return Err(Error::NotADirectory {
                    path: root.to_path_buf(),
                }
                .into())
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                return Err(Error::NotFound {
                    path: root.to_path_buf(),
                }
                .into())
            }
            Err(source) => {
                return Err(Error::Io {
                    op: "stat",
                    path: root.to_path_buf(),
                    source,
                }
                .into())
            }
        }
        self.root = root.to_path_buf();
        // The folder itself may be a symlink (`tar -C` follows it too).
        let flags = OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC;
        let fd = open_noatime(rustix::fs::CWD, root, flags)
            .map_err(|e| root_error("open directory", e))?;
        let st = rustix::fs::fstat(&fd).map_err(|e| root_error("stat", e))?;
        let st = Meta::new(&st);
        let pending = read_names(fd.as_fd(), &mut self.dir_buf)
            .map_err(|e| root_error("read directory", e))?;
        self.header(b"./", &st, Kind::Directory, b"", 0)?;
        self.path.clear();
        self.path.extend_from_slice(b"./");
        let mut stack = Stack::new(self.max_open_dirs);
        stack.push(Frame {
            name: CString::default(),
            path_len: self.path.len(),
            dev: st.dev,
            ino: st.ino,
            fd: Some(fd),
            pending,
        });

        let walked = self.walk_stack(&mut stack);
        self.peak_open_dirs = stack.peak_open;
        self.reopened_dirs = stack.reopened;
        walked?;

        let end = self.written.saturating_add(2 * tar::BLOCK as u64);
        let padded = end.div_ceil(tar::RECORD).saturating_mul(tar::RECORD);
        self.zeros(padded - self.written)
    }

    /// Archives the entries of the directories on `stack`, depth first,
    /// until it is empty.
    fn walk_stack(&mut self, stack: &mut Stack) -> Result<(), Halt> {
        while let Some(frame) = stack.frames.last_mut() {
            let Some(name) = frame.pending.pop() else {
                stack.pop();
                continue;
            };
            let last = frame.pending.is_empty();
            let path_len = frame.path_len;
            stack.reopen_top(&self.path, &self.root)?;
            // The last entry needs the directory's descriptor for the last
            // time: close it once that entry is archived.
            let taken = if last { stack.take_top_fd() } else { None };
            let dirfd = match &taken {
                Some(fd) => fd.as_fd(),
                None => stack.top_fd().expect("re-opened above"),
            };
            let mut path = std::mem::take(&mut self.path);
            path.truncate(path_len);
            path.extend_from_slice(name.to_bytes());
            let child = self.entry(dirfd, name, &mut path);
            self.path = path;
            drop(taken);
            if let Some(child) = child? {
                stack.push(child);
            }
        }
        Ok(())
    }

    /// Archives one directory entry; returns the frame to descend into for
    /// a directory. `path` is its member name (`./a/b`).
    fn entry(
        &mut self,
        dirfd: BorrowedFd<'_>,
        name: CString,
        path: &mut Vec<u8>,
    ) -> Result<Option<Frame>, Halt> {
        let st = match rustix::fs::statat(dirfd, &name, AtFlags::SYMLINK_NOFOLLOW) {
            Ok(st) => Meta::new(&st),
            Err(e) => {
                self.failed(path, "stat", e)?;
                return Ok(None);
            }
        };
        let file_type = st.file_type();
        if file_type == FileType::Directory {
            return self.directory(dirfd, name, path, &st);
        }
        if file_type == FileType::Socket {
            self.warnings.push(path, "socket ignored");
            return Ok(None);
        }
        // GNU tar links regular files and symlinks only; fifos and devices
        // with several names are archived under each.
        let linkable =
            st.nlink > 1 && matches!(file_type, FileType::RegularFile | FileType::Symlink);
        let key = (st.dev, st.ino);
        if linkable {
            if let Some(target) = self.links.get_mut(&key) {
                target.remaining = target.remaining.saturating_sub(1);
                let link = if target.remaining == 0 {
                    self.links.remove(&key).map(|t| t.name).unwrap_or_default()
                } else {
                    target.name.clone()
                };
                self.header(path, &st, Kind::HardLink, &link, 0)?;
                return Ok(None);
            }
        }
        let archived = match file_type {
            FileType::RegularFile => self.file(dirfd, &name, path)?,
            FileType::Symlink => match rustix::fs::readlinkat(dirfd, &name, Vec::new()) {
                Ok(target) => {
                    self.header(path, &st, Kind::Symlink, target.as_bytes(), 0)?;
                    true
                }
                Err(e) => {
                    self.failed(path, "readlink", e)?;
                    false
                }
            },
            FileType::Fifo => {
                self.header(path, &st, Kind::Fifo, b"", 0)?;
                true
            }
            FileType::CharacterDevice | FileType::BlockDevice => {
                let kind = if file_type == FileType::CharacterDevice {
                    Kind::CharDevice
                } else {
                    Kind::BlockDevice
                };
                let mut device_st = st;
                device_st.size = 0;
                self.device(path, &device_st, kind)?;
                true
            }
            _ => {
                self.warnings.push(path, "Unknown file type; file ignored");
                false
            }
        };
        if archived && linkable {
            self.links.insert(
                key,
                LinkTarget {
                    name: path.clone(),
                    remaining: st.nlink - 1,
                },
            );
        }
        Ok(None)
    }

    /// Reads the directory's entries, then writes its header (as GNU tar:
    /// a directory removed before it is read leaves no member at all).
    fn directory(
        &mut self,
        parent: BorrowedFd<'_>,
        name: CString,
        path: &mut Vec<u8>,
        st: &Meta,
    ) -> Result<Option<Frame>, Halt> {
        let fd = match open_noatime(parent, name.as_c_str(), DIR_FLAGS) {
            Ok(fd) => fd,
            Err(e) => {
                self.failed(path, "open", e)?;
                return Ok(None);
            }
        };
        let pending = match read_names(fd.as_fd(), &mut self.dir_buf) {
            Ok(pending) => pending,
            Err(e) => {
                self.failed(path, "read directory", e)?;
                return Ok(None);
            }
        };
        path.push(b'/');
        self.header(path, st, Kind::Directory, b"", 0)?;
        Ok(Some(Frame {
            name,
            path_len: path.len(),
            dev: st.dev,
            ino: st.ino,
            fd: Some(fd),
            pending,
        }))
    }

    /// Archives a regular file: header from `fstat` of the open file, then
    /// exactly that many bytes. Returns whether a member was written.
    fn file(&mut self, dirfd: BorrowedFd<'_>, name: &CStr, path: &[u8]) -> Result<bool, Halt> {
        // O_NONBLOCK: should a fifo replace the file after the stat, the open
        // must not wait for a writer.
        let flags =
            OFlags::RDONLY | OFlags::NOFOLLOW | OFlags::NONBLOCK | OFlags::NOCTTY | OFlags::CLOEXEC;
        let file = match open_noatime(dirfd, name, flags) {
            Ok(fd) => File::from(fd),
            Err(e) => {
                self.failed(path, "open", e)?;
                return Ok(false);
            }
        };
        let before = match rustix::fs::fstat(&file) {
            Ok(st) => Meta::new(&st),
            Err(e) => {
                self.failed(path, "stat", e)?;
                return Ok(false);
            }
        };
        if before.file_type() != FileType::RegularFile {
            self.warnings
                .push(path, "File changed type as we read it; not dumped");
            return Ok(false);
        }
        let size = u64::try_from(before.size).unwrap_or(0);
        self.header(path, &before, Kind::File, b"", size)?;
        self.contents(&file, path, size)?;
        let after = rustix::fs::fstat(&file).map(|st| Meta::new(&st));
        if let Ok(after) = after {
            let changed = (
                after.mtime,
                after.mtime_nsec,
                after.ctime,
                after.ctime_nsec,
                after.size,
            ) != (
                before.mtime,
                before.mtime_nsec,
                before.ctime,
                before.ctime_nsec,
                before.size,
            );
            if changed {
                self.warnings.push(path, "file changed as we read it");
            }
        }
        Ok(true)
    }

    /// Streams `size` bytes of `file`, zero-padded if it ends early, then
    /// pads to the block. A read error stops the check: GNU tar would exit 2.
    fn contents(&mut self, mut file: &File, path: &[u8], size: u64) -> Result<(), Halt> {
        let mut done: u64 = 0;
        while done < size {
            let want =
                usize::try_from(size - done).map_or(self.buf.len(), |n| n.min(self.buf.len()));
            match file.read(&mut self.buf[..want]) {
                Ok(0) => {
                    self.warnings.push(
                        path,
                        format_args!("File shrank by {} bytes; padding with zeros", size - done),
                    );
                    break;
                }
                Ok(n) => {
                    self.sink.write(&self.buf[..n])?;
                    let n = u64::try_from(n).unwrap_or(u64::MAX);
                    self.written = self.written.saturating_add(n);
                    done = done.saturating_add(n);
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(self.error("read", path, e).into()),
            }
        }
        let pad =
            u64::try_from(tar::padding(usize::try_from(size % 512).unwrap_or(0))).unwrap_or(0);
        self.zeros(size - done + pad)
    }

    fn device(&mut self, path: &[u8], st: &Meta, kind: Kind) -> Result<(), Halt> {
        let device = (rustix::fs::major(st.rdev), rustix::fs::minor(st.rdev));
        self.write_header(path, st, kind, b"", 0, Some(device))
    }

    fn header(
        &mut self,
        path: &[u8],
        st: &Meta,
        kind: Kind,
        link: &[u8],
        size: u64,
    ) -> Result<(), Halt> {
        self.write_header(path, st, kind, link, size, None)
    }

    fn write_header(
        &mut self,
        path: &[u8],
        st: &Meta,
        kind: Kind,
        link: &[u8],
        size: u64,
        device: Option<(u32, u32)>,
    ) -> Result<(), Halt> {
        self.header.clear();
        let header = Header {
            name: path,
            mode: st.mode,
            uid: st.uid,
            gid: st.gid,
            size,
            mtime: st.mtime,
            kind,
            link,
            uname: self.names.user(st.uid),
            gname: self.names.group(st.gid),
            device,
        };
        tar::encode(&header, &mut self.header);
        self.members += 1;
        self.written = self
            .written
            .saturating_add(u64::try_from(self.header.len()).unwrap_or(u64::MAX));
        self.sink.write(&self.header)
    }

    fn zeros(&mut self, mut len: u64) -> Result<(), Halt> {
        self.written = self.written.saturating_add(len);
        while len > 0 {
            let n = usize::try_from(len).map_or(ZEROS.len(), |n| n.min(ZEROS.len()));
            self.sink.write(&ZEROS[..n])?;
            len -= u64::try_from(n).unwrap_or(len);
        }
        Ok(())
    }

    /// A per-entry failure, classed as GNU tar classes it (see the module
    /// docs): an entry gone since its directory was listed is a warning,
    /// anything else stops the check.
    fn failed(&mut self, path: &[u8], op: &'static str, e: Errno) -> Result<(), Halt> {
        if e == Errno::NOENT {
            self.warnings.push(path, "File removed before we read it");
            return Ok(());
        }
        Err(self.error(op, path, e.into()).into())
    }

    /// The error for a failed `op` on member `path`: [`Error::Io`] when the
    /// machine is out of descriptors or memory, else [`Error::Unreadable`].
    fn error(&self, op: &'static str, path: &[u8], source: io::Error) -> Error {
        let path = full_path(&self.root, path);
        if is_exhaustion(&source) {
            Error::Io { op, path, source }
        } else {
            Error::Unreadable { op, path, source }
        }
    }
}

/// Opens with `O_NOATIME`, or without it where that is refused (`EPERM`:
/// only the owner or a privileged process may use it).
pub(crate) fn open_noatime<P: rustix::path::Arg + Copy>(
    dirfd: impl AsFd,
    name: P,
    flags: OFlags,
) -> rustix::io::Result<OwnedFd> {
    match rustix::fs::openat(&dirfd, name, flags | OFlags::NOATIME, Mode::empty()) {
        Err(Errno::PERM) => rustix::fs::openat(&dirfd, name, flags, Mode::empty()),
        other => other,
    }
}

/// All entry names but `.` and `..`, reversed so `pop` yields them in
/// directory order. `buf` is scratch space for `getdents`.
fn read_names(
    dir: BorrowedFd<'_>,
    buf: &mut [MaybeUninit<u8>],
) -> rustix::io::Result<Vec<CString>> {
    let mut names = Vec::new();
    let mut entries = RawDir::new(dir, buf);
    while let Some(entry) = entries.next() {
        let entry = entry?;
        let name = entry.file_name();
        if name.to_bytes() != b"." && name.to_bytes() != b".." {
            names.push(name.to_owned());
        }
    }
    names.reverse();
    Ok(names)
}

fn is_exhaustion(e: &io::Error) -> bool {
    [Errno::MFILE, Errno::NFILE, Errno::NOMEM, Errno::NOBUFS]
        .iter()
        .any(|errno| e.raw_os_error() == Some(errno.raw_os_error()))
}

/// The data folder joined with a member name: `./a/b/` becomes `ROOT/a/b`.
pub(crate) fn full_path(root: &Path, member: &[u8]) -> PathBuf {
    let inside = member.strip_prefix(b"./").unwrap_or(member);
    let inside = inside.strip_suffix(b"/").unwrap_or(inside);
    if inside.is_empty() {
        root.to_path_buf()
    } else {
        root.join(OsStr::from_bytes(inside))
    }
}

#[cfg(test)]
#[path = "walk_tests.rs"]
mod tests;
