//! Opening an image by path, the one place the generator and the applier
//! do it: a regular file or a block device, opened without blocking, with
//! its size; anything else is refused with a message naming what it is.
//!
//! Kept out of `delta-core`, which works on bytes and positions and opens
//! no files.
#![forbid(unsafe_code)]
#![deny(missing_docs)]

use std::fs::File;
use std::io::{self, Seek, SeekFrom};
use std::os::unix::fs::FileTypeExt;

/// Opens an image for reading: a regular file or a block device, with its
/// size (a block device's real size, which its metadata reports as 0),
/// positioned at its start.
///
/// The open never blocks: a FIFO with no writer would hang a plain open, so
/// the file is opened with `O_NONBLOCK` and its type checked before any
/// read. Anything that is not a regular file or a block device (FIFO,
/// character device such as `/dev/zero`, socket, directory) is refused with
/// an [`io::ErrorKind::InvalidInput`] error saying what it is; the caller
/// adds the path.
///
/// # Errors
/// The open or measure failing, or a file of another type.
pub fn open_image(path: &std::path::Path) -> io::Result<(File, u64)> {
    use rustix::fs::{Mode, OFlags};
    let flags = OFlags::RDONLY | OFlags::NONBLOCK | OFlags::CLOEXEC;
    let mut file = File::from(rustix::fs::open(path, flags, Mode::empty())?);
    let meta = file.metadata()?;
    let kind = meta.file_type();
    let len = if kind.is_file() {
        meta.len()
    } else if kind.is_block_device() {
        let len = file.seek(SeekFrom::End(0))?;
        file.seek(SeekFrom::Start(0))?;
        len
    } else {
        return Err(not_an_image(kind));
    };
    // Reads of regular files and block devices ignore O_NONBLOCK, but a
    // child process inheriting the descriptor should not see it.
    let flags = rustix::fs::fcntl_getfl(&file)?;
    rustix::fs::fcntl_setfl(&file, flags - OFlags::NONBLOCK)?;
    Ok((file, len))
}

/// The error for a file that is neither a regular file nor a block device.
pub fn not_an_image(kind: std::fs::FileType) -> io::Error {
    io::Error::new(
        io::ErrorKind::InvalidInput,
        format!(
            "is {}, not a regular file or a block device",
            describe_type(kind)
        ),
    )
}

/// "a FIFO", "a character device", ...: what a file type is, for messages.
pub fn describe_type(kind: std::fs::FileType) -> &'static str {
    if kind.is_fifo() {
        "a FIFO (named pipe)"
    } else if kind.is_char_device() {
        "a character device"
    } else if kind.is_socket() {
        "a socket"
    } else if kind.is_dir() {
        "a directory"
    } else if kind.is_symlink() {
        "a symbolic link"
    } else if kind.is_block_device() {
        "a block device"
    } else if kind.is_file() {
        "a regular file"
    } else {
        "an unknown kind of file"
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::Path;

    #[test]
    fn regular_files_open_with_their_size() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("img");
        std::fs::write(&path, b"12345").unwrap();
        let (_, len) = open_image(&path).unwrap();
        assert_eq!(len, 5);
    }

    #[test]
    fn fifos_directories_and_char_devices_are_refused_without_blocking() {
        let dir = tempfile::tempdir().unwrap();
        let fifo = dir.path().join("fifo");
        rustix::fs::mkfifoat(
            rustix::fs::CWD,
            &fifo,
            rustix::fs::Mode::RUSR | rustix::fs::Mode::WUSR,
        )
        .unwrap();
        for (path, what) in [
            (fifo.as_path(), "a FIFO"),
            (dir.path(), "a directory"),
            (Path::new("/dev/zero"), "a character device"),
        ] {
            let err = open_image(path).unwrap_err();
            assert_eq!(err.kind(), io::ErrorKind::InvalidInput, "{path:?}");
            assert!(err.to_string().contains(what), "{path:?}: {err}");
        }
    }
}
