//! The directories from the data folder down to the one being archived:
//! descriptors and memory at any depth.
//!
//! Names are read into memory as each directory is entered (the walk never
//! reads a directory stream twice), so a directory's descriptor is only
//! needed to open its entries. It is closed as soon as its last entry is
//! taken, and at most [`MAX_OPEN_DIRS`] are held: past that, the one whose
//! loss costs least is closed (never the shallowest nor the deepest few;
//! the rest stay spread out along the path). A directory needed again is
//! re-opened by name from the nearest ancestor still open, checking device
//! and inode on every step; never through `..`, which a concurrent rename
//! could lead astray. At depth 10,000 with entries left at most levels
//! that is under 10,000 re-opens in all, a few milliseconds. A directory moved or replaced meanwhile is an
//! [`Error::Changed`] (GNU tar, holding one descriptor per level, would not
//! notice). So nesting is limited by memory, not by the open-file limit:
//! the path is kept once, in one buffer, and each level costs a small
//! [`Frame`] (about 100 bytes plus its pending names).

use std::ffi::CString;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::path::Path;

use rustix::fs::OFlags;
use rustix::io::Errno;

use crate::error::Error;
use crate::walk::{full_path, open_noatime, Meta};

/// Directory descriptors held at most, the root's included. One more is
/// open for a moment while a subdirectory is entered, or one file.
pub(crate) const MAX_OPEN_DIRS: usize = 64;
/// The deepest directories holding descriptors that are never closed for
/// another: they are the next ones needed.
const KEEP_DEEPEST: usize = 4;
/// How directories are opened, below the root.
pub(crate) const DIR_FLAGS: OFlags = OFlags::RDONLY
    .union(OFlags::DIRECTORY)
    .union(OFlags::NOFOLLOW)
    .union(OFlags::CLOEXEC);

/// A directory on the current path.
pub(crate) struct Frame {
    /// Its name in its parent (empty for the root), to open it again.
    pub(crate) name: CString,
    /// Length of its member name (`./a/b/`) at the start of the path buffer.
    pub(crate) path_len: usize,
    /// Device and inode, to check that a re-opened directory is this one.
    pub(crate) dev: u64,
    pub(crate) ino: u64,
    /// Its descriptor, if held.
    pub(crate) fd: Option<OwnedFd>,
    /// Entries not archived yet, last first.
    pub(crate) pending: Vec<CString>,
}

/// The directories from the root down to the one being archived, and which
/// of them hold descriptors.
pub(crate) struct Stack {
    pub(crate) frames: Vec<Frame>,
    /// Indices of the frames holding a descriptor, ascending. The first
    /// (the root's, until it has no entries left) is never evicted.
    pub(crate) open: Vec<usize>,
    /// Most descriptors held, at least 3.
    pub(crate) max_open: usize,
    /// Most held at once so far.
    pub(crate) peak_open: usize,
    /// Directories opened again after their descriptor was given up.
    pub(crate) reopened: u64,
}

impl Stack {
    pub(crate) fn new(max_open: usize) -> Stack {
        Stack {
            frames: Vec::new(),
            open: Vec::new(),
            max_open: max_open.max(3),
            peak_open: 0,
            reopened: 0,
        }
    }

    pub(crate) fn push(&mut self, frame: Frame) {
        let index = self.frames.len();
        let held = frame.fd.is_some();
        self.frames.push(frame);
        if held {
            self.hold(index);
        }
    }

    pub(crate) fn pop(&mut self) {
        let index = self.frames.len().wrapping_sub(1);
        if self.open.last() == Some(&index) {
            self.open.pop();
        }
        self.frames.pop();
    }

    /// Records that frame `index`, deeper than every other holding one, now
    /// holds a descriptor; gives one up if that makes too many.
    pub(crate) fn hold(&mut self, index: usize) {
        self.open.push(index);
        if self.open.len() > self.max_open {
            self.evict();
        }
        self.peak_open = self.peak_open.max(self.open.len());
    }

    /// Closes the descriptor whose loss leaves the smallest gap between two
    /// held ones, so that those kept thin out towards the root: going back
    /// up then costs few re-opens at each level. The shallowest and the
    /// deepest [`KEEP_DEEPEST`] are kept.
    pub(crate) fn evict(&mut self) {
        let keep = KEEP_DEEPEST.min(self.max_open - 2).max(1);
        let candidates = 1..self.open.len().saturating_sub(keep);
        let gap = |p: usize| self.open[p + 1] - self.open[p - 1];
        if let Some(p) = candidates.min_by_key(|&p| gap(p)) {
            let index = self.open.remove(p);
            self.frames[index].fd = None;
        }
    }

    /// The innermost directory's descriptor, taken out of the stack; for
    /// the directory's last entry, which no later one needs.
    pub(crate) fn take_top_fd(&mut self) -> Option<OwnedFd> {
        let index = self.frames.len().checked_sub(1)?;
        let fd = self.frames.get_mut(index)?.fd.take()?;
        if self.open.last() == Some(&index) {
            self.open.pop();
        }
        Some(fd)
    }

    pub(crate) fn top_fd(&self) -> Option<BorrowedFd<'_>> {
        self.frames.last()?.fd.as_ref().map(AsFd::as_fd)
    }

    /// Gives the innermost directory a descriptor again if it gave its up:
    /// opens it by name, one level at a time, from the nearest ancestor
    /// holding one, and checks device and inode at every level. Levels on
    /// the way that still have entries to archive keep their descriptors
    /// (as far as [`Stack::hold`] allows). `path` starts with the member
    /// names of the frames (the path buffer); `root` is the data folder,
    /// for messages.
    pub(crate) fn reopen_top(&mut self, path: &[u8], root: &Path) -> Result<(), Error> {
        let Some(top) = self.frames.len().checked_sub(1) else {
            return Ok(());
        };
        if self.frames[top].fd.is_some() {
            return Ok(());
        }
        // The shallowest holder is never evicted, and only gives its
        // descriptor up as the innermost directory: it is above `top`.
        let start = *self.open.last().expect("an ancestor holds a descriptor");
        let mut cursor: Option<(usize, OwnedFd)> = None;
        for index in start + 1..=top {
            let frame = &self.frames[index];
            let member = path.get(..frame.path_len).unwrap_or(path);
            let parent = match &cursor {
                Some((_, fd)) => fd.as_fd(),
                None => self.frames[start]
                    .fd
                    .as_ref()
                    .expect("the nearest ancestor holding a descriptor")
                    .as_fd(),
            };
            let fd = match open_noatime(parent, frame.name.as_c_str(), DIR_FLAGS) {
                Ok(fd) => fd,
                // Gone, or something else (a file, a symlink) in its place.
                Err(Errno::NOENT | Errno::NOTDIR | Errno::LOOP) => {
                    return Err(Error::Changed {
                        path: full_path(root, member),
                    })
                }
                Err(e) => {
                    return Err(Error::Io {
                        op: "open directory again",
                        path: full_path(root, member),
                        source: e.into(),
                    })
                }
            };
            let st = rustix::fs::fstat(&fd).map_err(|e| Error::Io {
                op: "stat",
                path: full_path(root, member),
                source: e.into(),
            })?;
            let st = Meta::new(&st);
            if (st.dev, st.ino) != (frame.dev, frame.ino) {
                return Err(Error::Changed {
                    path: full_path(root, member),
                });
            }
            self.reopened += 1;
            if let Some((above, above_fd)) = cursor.take() {
                if !self.frames[above].pending.is_empty() {
                    self.frames[above].fd = Some(above_fd);
                    self.hold(above);
                }
            }
            cursor = Some((index, fd));
        }
        if let Some((index, fd)) = cursor {
            self.frames[index].fd = Some(fd);
            self.hold(index);
        }
        Ok(())
    }
}
