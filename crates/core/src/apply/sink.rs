//! Where produced bytes go.

use crate::apply::source::Source;
use std::io;

/// Zero bytes used to feed hashers and writers for zero runs.
pub(crate) static ZEROS: [u8; 64 * 1024] = [0; 64 * 1024];

/// Destination of the new image's bytes, written strictly in order.
///
/// `write_zeros` exists so that a file target can leave holes instead of
/// writing zero blocks; `read_back` serves COPY_NEW ops, which copy what
/// earlier segments wrote.
pub trait Sink {
    /// Appends `bytes`.
    ///
    /// # Errors
    /// The underlying I/O error.
    fn write_bytes(&mut self, bytes: &[u8]) -> io::Result<()>;

    /// Appends `len` zero bytes.
    ///
    /// # Errors
    /// The underlying I/O error.
    fn write_zeros(&mut self, mut len: u64) -> io::Result<()> {
        while len > 0 {
            let n = len.min(ZEROS.len() as u64) as usize;
            self.write_bytes(&ZEROS[..n])?;
            len -= n as u64;
        }
        Ok(())
    }

    /// Fills `buf` with the new-image bytes at `offset`, which were written
    /// before (by an earlier segment).
    ///
    /// # Errors
    /// The underlying I/O error; `Unsupported` for sinks that cannot read
    /// back (the default).
    fn read_back(&mut self, offset: u64, buf: &mut [u8]) -> io::Result<()> {
        let _ = (offset, buf);
        Err(io::Error::new(
            io::ErrorKind::Unsupported,
            "this output cannot be read back",
        ))
    }
}

impl Sink for Vec<u8> {
    fn write_bytes(&mut self, bytes: &[u8]) -> io::Result<()> {
        self.try_reserve(bytes.len())
            .map_err(|_| io::Error::from(io::ErrorKind::OutOfMemory))?;
        self.extend_from_slice(bytes);
        Ok(())
    }

    fn write_zeros(&mut self, len: u64) -> io::Result<()> {
        let len = usize::try_from(len).map_err(|_| io::ErrorKind::OutOfMemory)?;
        self.try_reserve(len)
            .map_err(|_| io::Error::from(io::ErrorKind::OutOfMemory))?;
        self.resize(self.len() + len, 0);
        Ok(())
    }

    /// The vector holds the new image from its first byte.
    fn read_back(&mut self, offset: u64, buf: &mut [u8]) -> io::Result<()> {
        self.as_slice().read_at(offset, buf)
    }
}

/// Discards bytes (used to verify without writing).
#[derive(Debug, Default)]
pub struct NullSink;

impl Sink for NullSink {
    fn write_bytes(&mut self, _: &[u8]) -> io::Result<()> {
        Ok(())
    }

    fn write_zeros(&mut self, _: u64) -> io::Result<()> {
        Ok(())
    }
}
