//! Read-only mappings of the input images, and what identifies them.
//!
//! An input is opened with [`delta_image::open_image`]: without blocking (a
//! FIFO with no writer would hang a plain open), as a regular file or a
//! block device only, at its real size (a block device's metadata says 0).
//! Its identity and version ([`Stamp`]: device, inode, size, modification
//! and status-change times) are taken from the open descriptor, so that
//! the generator can tell, before it puts a delta in place, whether the
//! file it read changed under it.
#![allow(unsafe_code)]

use crate::error::{Error, Result};
use memmap2::{Mmap, MmapOptions};
use std::fs::File;
use std::io::{self, Seek, SeekFrom};
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::{Path, PathBuf};

/// Which input a file is, for messages.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Role {
    /// The image the delta starts from.
    Old,
    /// The image the delta rebuilds.
    New,
}

impl Role {
    /// "old image" or "new image".
    pub(crate) fn name(self) -> &'static str {
        match self {
            Role::Old => "old image",
            Role::New => "new image",
        }
    }
}

/// A file's identity and version, from `fstat` (and, for a block device,
/// its size measured by seeking).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Stamp {
    dev: u64,
    ino: u64,
    len: u64,
    mtime: (i64, i64),
    ctime: (i64, i64),
}

impl Stamp {
    fn of(file: &File, block_device: bool) -> io::Result<Stamp> {
        let meta = file.metadata()?;
        let len = if block_device {
            let mut file = file;
            file.seek(SeekFrom::End(0))?
        } else {
            meta.len()
        };
        Ok(Stamp {
            dev: meta.dev(),
            ino: meta.ino(),
            len,
            mtime: (meta.mtime(), meta.mtime_nsec()),
            ctime: (meta.ctime(), meta.ctime_nsec()),
        })
    }

    /// What differs between `self` (at open) and `now`, for messages.
    fn change(&self, now: &Stamp) -> Option<String> {
        let time = |(secs, nanos)| utc(secs, nanos);
        if (self.dev, self.ino) != (now.dev, now.ino) {
            Some("it is another file now".into())
        } else if self.len != now.len {
            Some(format!("size {} -> {} bytes", self.len, now.len))
        } else if self.mtime != now.mtime {
            Some(format!(
                "modified at {} -> {}",
                time(self.mtime),
                time(now.mtime)
            ))
        } else if self.ctime != now.ctime {
            Some(format!(
                "status changed at {} -> {}",
                time(self.ctime),
                time(now.ctime)
            ))
        } else {
            None
        }
    }
}

/// `secs` and `nanos` since the epoch as "YYYY-MM-DD hh:mm:ss.nnnnnnnnn UTC"
/// (civil-from-days, after Howard Hinnant's algorithm).
fn utc(secs: i64, nanos: i64) -> String {
    let (days, time) = (secs.div_euclid(86_400), secs.rem_euclid(86_400));
    let z = days + 719_468;
    let (era, doe) = (z.div_euclid(146_097), z.rem_euclid(146_097));
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02} {:02}:{:02}:{:02}.{nanos:09} UTC",
        time / 3600,
        time / 60 % 60,
        time % 60
    )
}

/// An input image, mapped read-only (or empty).
#[derive(Debug)]
pub(crate) struct Input {
    role: Role,
    path: PathBuf,
    file: File,
    block_device: bool,
    /// Major and minor device number of a block device (0 otherwise).
    rdev: u64,
    stamp: Stamp,
    map: Option<Mmap>,
}

impl Input {
    /// Opens and maps the image at `path`: a regular file or a block device.
    ///
    /// # Errors
    /// [`Error::NotAnImage`] for a FIFO, character device, socket or
    /// directory (refused before any read, without blocking), and
    /// [`Error::Input`] when the file cannot be opened, measured or mapped.
    pub(crate) fn open(path: &Path, role: Role) -> Result<Input> {
        let io = |op, source| Error::Input {
            op,
            role: role.name(),
            path: path.to_owned(),
            source,
        };
        // A stat first, to name what the file is; open_image checks the
        // type of what it opened again, so a swap in between is refused too.
        let kind = std::fs::metadata(path)
            .map_err(|e| io("open", e))?
            .file_type();
        if !kind.is_file() && !kind.is_block_device() {
            return Err(Error::NotAnImage {
                role: role.name(),
                path: path.to_owned(),
                kind: delta_image::describe_type(kind),
            });
        }
        let (file, _) = delta_image::open_image(path).map_err(|e| io("open", e))?;
        let meta = file.metadata().map_err(|e| io("stat", e))?;
        let block_device = meta.file_type().is_block_device();
        let stamp = Stamp::of(&file, block_device).map_err(|e| io("stat", e))?;
        let len = stamp.len;
        let map_len = usize::try_from(len).map_err(|_| {
            io(
                "map",
                io::Error::other(format!("{len} bytes do not fit in memory")),
            )
        })?;
        let map = if map_len == 0 {
            None
        } else {
            // SAFETY: what `Mmap` needs is that the mapped bytes do not
            // change or go away while the slice is borrowed. What holds: the
            // file was opened read-only by open_image as a regular file or a
            // block device and is mapped read-only at the size measured on
            // this same descriptor (explicitly, since a block device's
            // metadata length is 0). Nothing in this process writes it. Another
            // process writing or truncating an input during a run is outside
            // our contract and is not prevented: changed bytes are caught
            // before the delta is put in place (`check_unchanged` compares
            // size, mtime and ctime with the open-time stamp, and the
            // generator hashes both images again and compares with the
            // digests in the header), and a truncation makes an access past
            // the new end raise SIGBUS, which kills the process; the delta
            // is then an unnamed O_TMPFILE file that vanishes with it, so
            // nothing is left at OUT or OUT.tmp (on a file system without
            // O_TMPFILE, the named OUT.tmp it falls back to can be left).
            let map =
                unsafe { MmapOptions::new().len(map_len).map(&file) }.map_err(|e| io("map", e))?;
            Some(map)
        };
        Ok(Input {
            role,
            path: path.to_owned(),
            rdev: if block_device { meta.rdev() } else { 0 },
            file,
            block_device,
            stamp,
            map,
        })
    }

    /// The mapped bytes.
    pub(crate) fn bytes(&self) -> &[u8] {
        self.map.as_deref().unwrap_or(&[])
    }

    /// Which input this is.
    pub(crate) fn role(&self) -> Role {
        self.role
    }

    /// The path the caller named.
    pub(crate) fn path(&self) -> &Path {
        &self.path
    }

    /// Device and inode of the opened file.
    pub(crate) fn id(&self) -> (u64, u64) {
        (self.stamp.dev, self.stamp.ino)
    }

    /// Major and minor number of a block device input.
    pub(crate) fn block_device(&self) -> Option<u64> {
        self.block_device.then_some(self.rdev)
    }

    /// Checks that the file is still the one opened, at the same size and
    /// times. Touches no mapped byte, so a shrunk file is reported here
    /// instead of faulting.
    ///
    /// # Errors
    /// [`Error::Changed`] saying what changed, or [`Error::Input`] when the
    /// file cannot be measured.
    pub(crate) fn check_unchanged(&self) -> Result<()> {
        let now = Stamp::of(&self.file, self.block_device).map_err(|source| Error::Input {
            op: "stat",
            role: self.role.name(),
            path: self.path.clone(),
            source,
        })?;
        match self.stamp.change(&now) {
            None => Ok(()),
            Some(what) => Err(self.changed(what)),
        }
    }

    /// The error for this input having changed during the run.
    pub(crate) fn changed(&self, what: String) -> Error {
        Error::Changed {
            role: self.role.name(),
            path: self.path.clone(),
            what,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::FileExt;

    #[test]
    fn times_read_as_utc_dates() {
        assert_eq!(utc(0, 0), "1970-01-01 00:00:00.000000000 UTC");
        assert_eq!(utc(1_796_155_772, 5), "2026-12-01 20:09:32.000000005 UTC");
        assert_eq!(utc(951_868_799, 0), "2000-02-29 23:59:59.000000000 UTC");
        assert_eq!(utc(-1, 0), "1969-12-31 23:59:59.000000000 UTC");
        // Any stamp formats without overflow.
        let _ = utc(i64::MAX, 999_999_999);
        let _ = utc(i64::MIN, 0);
    }

    #[test]
    fn shrinking_or_rewriting_an_input_is_noticed_without_reading_it() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("img");
        std::fs::write(&path, vec![7u8; 8192]).unwrap();
        let input = Input::open(&path, Role::New).unwrap();
        assert_eq!(input.bytes().len(), 8192);
        input.check_unchanged().unwrap();
        let writer = std::fs::OpenOptions::new().write(true).open(&path).unwrap();
        writer.set_len(4096).unwrap();
        let err = input.check_unchanged().unwrap_err().to_string();
        assert!(err.contains("size 8192 -> 4096 bytes"), "{err}");

        std::fs::write(&path, vec![7u8; 8192]).unwrap();
        let input = Input::open(&path, Role::Old).unwrap();
        std::thread::sleep(std::time::Duration::from_millis(20));
        writer.write_all_at(b"x", 100).unwrap();
        let err = input.check_unchanged().unwrap_err().to_string();
        assert!(
            err.starts_with("old image ")
                && err.contains(" changed while the delta was being generated (modified at "),
            "{err}"
        );
    }

    #[test]
    fn empty_files_map_to_no_bytes() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("empty");
        std::fs::write(&path, b"").unwrap();
        let input = Input::open(&path, Role::New).unwrap();
        assert!(input.bytes().is_empty());
        input.check_unchanged().unwrap();
    }
}
