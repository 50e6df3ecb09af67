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
///
/// A sink has its own error type (as ripgrep's `Sink` does): an applier's
/// sink may stop a segment for its own reasons (a checkpoint that could not
/// be stored, a cancel), and its error reaches the caller as it was made,
/// in [`SegmentError::Write`](crate::SegmentError::Write), instead of
/// inside an `io::Error`. Plain outputs use `io::Error`.
pub trait Sink {
    /// The sink's failures; `From<io::Error>` for the default
    /// [`read_back`](Sink::read_back) (unsupported).
    type Error: From<io::Error>;

    /// Appends `bytes`.
    ///
    /// # Errors
    /// The sink's failure.
    fn write_bytes(&mut self, bytes: &[u8]) -> Result<(), Self::Error>;

    /// Appends `len` zero bytes.
    ///
    /// # Errors
    /// The sink's failure.
    fn write_zeros(&mut self, mut len: u64) -> Result<(), Self::Error> {
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
    /// The sink's failure; `Unsupported` for sinks that cannot read back
    /// (the default).
    fn read_back(&mut self, offset: u64, buf: &mut [u8]) -> Result<(), Self::Error> {
        let _ = (offset, buf);
        Err(io::Error::new(
            io::ErrorKind::Unsupported,
            "this output cannot be read back",
        )
        .into())
    }
}

impl Sink for Vec<u8> {
    type Error = io::Error;

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
    type Error = io::Error;

    fn write_bytes(&mut self, _: &[u8]) -> io::Result<()> {
        Ok(())
    }

    fn write_zeros(&mut self, _: u64) -> io::Result<()> {
        Ok(())
    }
}
