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
//! Problems GNU tar reports and carries on from become warnings: a file
//! that vanishes or cannot be opened is left out, a file that shrinks while
//! read is padded with zeros (its header already promised the old size), a
//! socket is skipped. Running out of descriptors or memory is an error
//! instead: a count that silently skipped files would understate the size.
//!
//! Descriptors held: one per directory on the current path (and one file),
//! so nesting deeper than the open-file limit (usually 1024) is an error.

use std::collections::HashMap;
use std::ffi::CString;
use std::fs::File;
use std::io::{self, Read};
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::path::{Path, PathBuf};

use rustix::fs::{AtFlags, Dir, FileType, Mode, OFlags, Stat};
use rustix::io::Errno;

use crate::error::Error;
use crate::gzip::Sink;
use crate::tar::{self, Header, Kind, Names};
use crate::Halt;

/// Warnings kept in full; further ones are only counted.
const MAX_WARNINGS: usize = 1000;
/// Read size for file contents.
const READ_BUF: usize = 256 * 1024;
const ZEROS: [u8; 8192] = [0; 8192];

/// A directory being archived: its descriptor, its member name (ending in
/// `/`) and the entries not yet archived, last first.
struct Frame {
    dir: Dir,
    prefix: Vec<u8>,
    pending: Vec<CString>,
}

/// The `stat` fields used, in the same types on every architecture.
#[derive(Debug, Clone, Copy)]
struct Meta {
    mode: u32,
    uid: u64,
    gid: u64,
    size: i64,
    mtime: i64,
    mtime_nsec: u64,
    ctime: i64,
    ctime_nsec: u64,
    nlink: u64,
    dev: u64,
    ino: u64,
    rdev: u64,
}

impl Meta {
    // `Stat`'s field types differ by architecture; on some these are no-ops.
    #[allow(clippy::useless_conversion)]
    fn new(st: &Stat) -> Meta {
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
    header: Vec<u8>,
    buf: Vec<u8>,
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
            header: Vec::with_capacity(3 * tar::BLOCK),
            buf: vec![0; READ_BUF],
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
        // The folder itself may be a symlink (`tar -C` follows it too).
        let flags = OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC;
        let fd = open_noatime(rustix::fs::CWD, root, flags)
            .map_err(|e| root_error("open directory", e))?;
        let st = rustix::fs::fstat(&fd).map_err(|e| root_error("stat", e))?;
        let mut dir = Dir::new(fd).map_err(|e| root_error("read directory", e))?;
        let pending = read_names(&mut dir).map_err(|e| root_error("read directory", e))?;
        let prefix = b"./".to_vec();
        self.header(&prefix, &Meta::new(&st), Kind::Directory, b"", 0)?;
        let mut stack = vec![Frame {
            dir,
            prefix,
            pending,
        }];

        while let Some(frame) = stack.last_mut() {
            let Some(name) = frame.pending.pop() else {
                stack.pop();
                continue;
            };
            let dirfd = frame.dir.fd().map_err(|e| Error::Io {
                op: "read directory",
                path: PathBuf::from(String::from_utf8_lossy(&frame.prefix).into_owned()),
                source: e.into(),
            })?;
            let mut path = frame.prefix.clone();
            path.extend_from_slice(name.to_bytes());
            if let Some(child) = self.entry(dirfd, &name, path)? {
                stack.push(child);
            }
        }

        let end = self.written.saturating_add(2 * tar::BLOCK as u64);
        let padded = end.div_ceil(tar::RECORD).saturating_mul(tar::RECORD);
        self.zeros(padded - self.written)
    }

    /// Archives one directory entry; returns the frame to descend into for
    /// a directory.
    fn entry(
        &mut self,
        dirfd: BorrowedFd<'_>,
        name: &CString,
        path: Vec<u8>,
    ) -> Result<Option<Frame>, Halt> {
        let st = match rustix::fs::statat(dirfd, name, AtFlags::SYMLINK_NOFOLLOW) {
            Ok(st) => Meta::new(&st),
            Err(e) => {
                self.soft(&path, "Cannot stat", "stat", e)?;
                return Ok(None);
            }
        };
        let file_type = st.file_type();
        if file_type == FileType::Directory {
            return self.directory(dirfd, name, path, &st);
        }
        if file_type == FileType::Socket {
            self.warnings.push(&path, "socket ignored");
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
                self.header(&path, &st, Kind::HardLink, &link, 0)?;
                return Ok(None);
            }
        }
        let archived = match file_type {
            FileType::RegularFile => self.file(dirfd, name, &path)?,
            FileType::Symlink => match rustix::fs::readlinkat(dirfd, name, Vec::new()) {
                Ok(target) => {
                    self.header(&path, &st, Kind::Symlink, target.as_bytes(), 0)?;
                    true
                }
                Err(e) => {
                    self.soft(&path, "Cannot readlink", "readlink", e)?;
                    false
                }
            },
            FileType::Fifo => {
                self.header(&path, &st, Kind::Fifo, b"", 0)?;
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
                self.device(&path, &device_st, kind)?;
                true
            }
            _ => {
                self.warnings.push(&path, "Unknown file type; file ignored");
                false
            }
        };
        if archived && linkable {
            self.links.insert(
                key,
                LinkTarget {
                    name: path,
                    remaining: st.nlink - 1,
                },
            );
        }
        Ok(None)
    }

    /// Reads the directory's entries, then writes its header (as GNU tar:
    /// an unreadable directory leaves no member at all).
    fn directory(
        &mut self,
        parent: BorrowedFd<'_>,
        name: &CString,
        mut path: Vec<u8>,
        st: &Meta,
    ) -> Result<Option<Frame>, Halt> {
        let flags = OFlags::RDONLY | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC;
        let opened = open_noatime(parent, name, flags).and_then(Dir::new);
        let mut dir = match opened {
            Ok(dir) => dir,
            Err(e) => {
                self.soft(&path, "Cannot open", "open directory", e)?;
                return Ok(None);
            }
        };
        let pending = match read_names(&mut dir) {
            Ok(pending) => pending,
            Err(e) => {
                self.soft(&path, "Cannot savedir", "read directory", e)?;
                return Ok(None);
            }
        };
        path.push(b'/');
        self.header(&path, st, Kind::Directory, b"", 0)?;
        Ok(Some(Frame {
            dir,
            prefix: path,
            pending,
        }))
    }

    /// Archives a regular file: header from `fstat` of the open file, then
    /// exactly that many bytes. Returns whether a member was written.
    fn file(&mut self, dirfd: BorrowedFd<'_>, name: &CString, path: &[u8]) -> Result<bool, Halt> {
        // O_NONBLOCK: should a fifo replace the file after the stat, the open
        // must not wait for a writer.
        let flags =
            OFlags::RDONLY | OFlags::NOFOLLOW | OFlags::NONBLOCK | OFlags::NOCTTY | OFlags::CLOEXEC;
        let file = match open_noatime(dirfd, name, flags) {
            Ok(fd) => File::from(fd),
            Err(Errno::NOENT) => {
                self.warnings.push(path, "File removed before we read it");
                return Ok(false);
            }
            Err(e) => {
                self.soft(path, "Cannot open", "open", e)?;
                return Ok(false);
            }
        };
        let before = match rustix::fs::fstat(&file) {
            Ok(st) => Meta::new(&st),
            Err(e) => {
                self.soft(path, "Cannot stat", "stat", e)?;
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

    /// Streams `size` bytes of `file`, zero-padded if it ends early or a
    /// read fails, then pads to the block.
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
                Err(e) => {
                    if is_exhaustion(&e) {
                        return Err(Error::Io {
                            op: "read",
                            path: lossy_path(path),
                            source: e,
                        }
                        .into());
                    }
                    self.warnings.push(
                        path,
                        format_args!("Read error at byte {done}, while reading {want} bytes: {e}"),
                    );
                    break;
                }
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

    /// A per-entry failure: a warning, as in GNU tar, unless the machine is
    /// out of descriptors or memory, which stops the check.
    fn soft(&mut self, path: &[u8], what: &str, op: &'static str, e: Errno) -> Result<(), Halt> {
        let e = io::Error::from(e);
        if is_exhaustion(&e) {
            return Err(Error::Io {
                op,
                path: lossy_path(path),
                source: e,
            }
            .into());
        }
        self.warnings.push(path, format_args!("{what}: {e}"));
        Ok(())
    }
}

/// Opens with `O_NOATIME`, or without it where that is refused (`EPERM`:
/// only the owner or a privileged process may use it).
fn open_noatime<P: rustix::path::Arg + Copy>(
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
/// directory order.
fn read_names(dir: &mut Dir) -> rustix::io::Result<Vec<CString>> {
    let mut names = Vec::new();
    while let Some(entry) = dir.read() {
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

fn lossy_path(name: &[u8]) -> PathBuf {
    PathBuf::from(String::from_utf8_lossy(name).into_owned())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::{symlink, PermissionsExt};
    use std::process::Command;

    fn tar_of(dir: &Path) -> Vec<u8> {
        let mut out = Vec::new();
        let mut walker = Walker::new(&mut out);
        walker.walk(dir).map_err(|_| "walk failed").unwrap();
        out
    }

    fn gnu_tar_of(dir: &Path) -> Vec<u8> {
        let out = Command::new("tar")
            .arg("-cf")
            .arg("-")
            .arg("-C")
            .arg(dir)
            .arg(".")
            .output()
            .expect("GNU tar runs");
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        out.stdout
    }

    /// First differing 512-byte block, for a readable failure.
    fn first_difference(ours: &[u8], theirs: &[u8]) -> String {
        let at = ours
            .iter()
            .zip(theirs)
            .position(|(a, b)| a != b)
            .unwrap_or(ours.len().min(theirs.len()));
        let block = at / 512 * 512;
        let show = |b: &[u8]| {
            String::from_utf8_lossy(b.get(block..(block + 512).min(b.len())).unwrap_or_default())
                .into_owned()
        };
        format!(
            "lengths {} / {}; first difference at byte {at}\nours:   {:?}\ntheirs: {:?}",
            ours.len(),
            theirs.len(),
            show(ours),
            show(theirs)
        )
    }

    #[test]
    fn byte_identical_to_gnu_tar() {
        let tmp = tempfile::tempdir().unwrap();
        let root = tmp.path();
        std::fs::write(root.join("empty"), b"").unwrap();
        std::fs::write(root.join("block"), [7u8; 512]).unwrap();
        std::fs::write(root.join("odd"), b"hello\n").unwrap();
        std::fs::create_dir_all(root.join("a/b/c")).unwrap();
        std::fs::create_dir(root.join("empty-dir")).unwrap();
        std::fs::write(root.join("a/b/c/deep"), vec![1u8; 70_000]).unwrap();
        let long = "n".repeat(99);
        std::fs::write(root.join(&long), b"x").unwrap(); // "./" + 99 = 101 bytes
        std::fs::write(root.join("n".repeat(98)), b"x").unwrap(); // exactly 100
        std::fs::create_dir(root.join("d".repeat(97))).unwrap(); // "./" + 97 + "/" = 100
        let long_dir = "L".repeat(150);
        std::fs::create_dir(root.join(&long_dir)).unwrap();
        std::fs::write(root.join(&long_dir).join("f"), b"in a long dir").unwrap();
        symlink("odd", root.join("link")).unwrap();
        symlink("t".repeat(120), root.join("long-target")).unwrap();
        symlink("missing", root.join("dangling")).unwrap();
        symlink("a/b", root.join("dir-link")).unwrap();
        std::fs::hard_link(root.join("odd"), root.join("odd-again")).unwrap();
        std::fs::hard_link(root.join(&long), root.join("h".repeat(130))).unwrap();
        let fifo = Command::new("mkfifo")
            .arg(root.join("fifo"))
            .status()
            .unwrap();
        assert!(fifo.success());
        std::fs::set_permissions(root.join("odd"), std::fs::Permissions::from_mode(0o4751))
            .unwrap();
        // Hard links to a symlink are links; to a fifo or device they are not.
        std::fs::hard_link(root.join("link"), root.join("link-again")).unwrap();
        std::fs::hard_link(root.join("fifo"), root.join("fifo-again")).unwrap();
        // Device nodes need root and a sandbox that allows them.
        for (name, kind, major, minor) in [("null", "c", "1", "3"), ("loop", "b", "7", "200")] {
            let made = Command::new("mknod")
                .arg(root.join(name))
                .args([kind, major, minor])
                .output();
            if made.is_ok_and(|out| out.status.success()) {
                std::fs::hard_link(root.join(name), root.join(format!("{name}-again"))).unwrap();
            } else {
                eprintln!("no device node {name}: mknod not permitted here");
            }
        }
        let ours = tar_of(root);
        let theirs = gnu_tar_of(root);
        assert!(ours == theirs, "{}", first_difference(&ours, &theirs));
    }

    #[test]
    fn empty_folder_is_one_record() {
        let tmp = tempfile::tempdir().unwrap();
        let ours = tar_of(tmp.path());
        assert_eq!(ours.len(), 10_240);
        assert_eq!(ours, gnu_tar_of(tmp.path()));
    }

    #[test]
    fn deep_nesting_beyond_path_max() {
        let tmp = tempfile::tempdir().unwrap();
        let mut dir = tmp.path().to_path_buf();
        let part = "p".repeat(200);
        // 30 levels of 201 bytes: 6 KB of path, over PATH_MAX (4096).
        for _ in 0..30 {
            dir.push(&part);
        }
        // std cannot create it by path; go down with relative paths.
        let mut fd = rustix::fs::open(
            tmp.path(),
            OFlags::RDONLY | OFlags::DIRECTORY,
            Mode::empty(),
        )
        .unwrap();
        for _ in 0..30 {
            rustix::fs::mkdirat(&fd, part.as_str(), Mode::from_raw_mode(0o755)).unwrap();
            fd = rustix::fs::openat(
                &fd,
                part.as_str(),
                OFlags::RDONLY | OFlags::DIRECTORY,
                Mode::empty(),
            )
            .unwrap();
        }
        let mut out = Vec::new();
        let mut walker = Walker::new(&mut out);
        assert!(walker.walk(tmp.path()).is_ok());
        assert_eq!(walker.members, 31);
        assert!(
            walker.warnings.kept.is_empty(),
            "{:?}",
            walker.warnings.kept
        );
    }

    #[test]
    fn warnings_are_capped() {
        let mut warnings = Warnings::default();
        for i in 0..MAX_WARNINGS + 5 {
            warnings.push(format!("./f{i}").as_bytes(), "socket ignored");
        }
        let list = warnings.into_vec();
        assert_eq!(list.len(), MAX_WARNINGS + 1);
        assert_eq!(
            list.last().map(String::as_str),
            Some("... and 5 more warnings")
        );
    }
}
