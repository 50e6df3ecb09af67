//! Checked little-endian reads from image bytes.
//!
//! Every read of the image goes through [`slice`] or a [`Fields`] view, so
//! that an offset from the image can only fail with [`Error::Truncated`].

use crate::{Error, Result};

/// `len` bytes of `image` at `offset`, or [`Error::Truncated`] naming `what`.
pub(crate) fn slice<'a>(
    image: &'a [u8],
    offset: u64,
    len: u64,
    what: &'static str,
) -> Result<&'a [u8]> {
    let truncated = || Error::Truncated {
        what,
        offset,
        need: len,
        have: u64::try_from(image.len())
            .unwrap_or(u64::MAX)
            .saturating_sub(offset),
    };
    let start = usize::try_from(offset).map_err(|_| truncated())?;
    let len_usize = usize::try_from(len).map_err(|_| truncated())?;
    let end = start.checked_add(len_usize).ok_or_else(truncated)?;
    image.get(start..end).ok_or_else(truncated)
}

/// A structure read from the image: its bytes and where they start, for
/// error messages.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Fields<'a> {
    pub(crate) bytes: &'a [u8],
    pub(crate) offset: u64,
    pub(crate) what: &'static str,
}

impl<'a> Fields<'a> {
    /// The `len` bytes of `image` at `offset`.
    pub(crate) fn at(image: &'a [u8], offset: u64, len: u64, what: &'static str) -> Result<Self> {
        Ok(Self {
            bytes: slice(image, offset, len, what)?,
            offset,
            what,
        })
    }

    /// `len` bytes at `at` within the structure.
    pub(crate) fn bytes(&self, at: usize, len: usize) -> Result<&'a [u8]> {
        at.checked_add(len)
            .and_then(|end| self.bytes.get(at..end))
            .ok_or(Error::Truncated {
                what: self.what,
                offset: self
                    .offset
                    .saturating_add(u64::try_from(at).unwrap_or(u64::MAX)),
                need: u64::try_from(len).unwrap_or(u64::MAX),
                have: u64::try_from(self.bytes.len().saturating_sub(at)).unwrap_or(u64::MAX),
            })
    }

    pub(crate) fn u8(&self, at: usize) -> Result<u8> {
        Ok(self.array::<1>(at)?[0])
    }

    pub(crate) fn u16(&self, at: usize) -> Result<u16> {
        Ok(u16::from_le_bytes(self.array(at)?))
    }

    pub(crate) fn u32(&self, at: usize) -> Result<u32> {
        Ok(u32::from_le_bytes(self.array(at)?))
    }

    fn array<const N: usize>(&self, at: usize) -> Result<[u8; N]> {
        let bytes = self.bytes(at, N)?;
        Ok(bytes.try_into().expect("bytes() returned N bytes"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_are_checked() {
        let image = [1u8, 2, 3, 4, 5];
        assert_eq!(slice(&image, 1, 3, "x").unwrap(), &[2, 3, 4]);
        assert_eq!(
            slice(&image, 4, 2, "x"),
            Err(Error::Truncated {
                what: "x",
                offset: 4,
                need: 2,
                have: 1
            })
        );
        assert!(slice(&image, u64::MAX, 2, "x").is_err());
        assert!(slice(&image, 1, u64::MAX, "x").is_err());
        let fields = Fields::at(&image, 1, 4, "y").unwrap();
        assert_eq!(fields.u16(0).unwrap(), 0x0302);
        assert_eq!(fields.u32(0).unwrap(), 0x0504_0302);
        assert_eq!(fields.u8(3).unwrap(), 5);
        assert_eq!(
            fields.u32(2),
            Err(Error::Truncated {
                what: "y",
                offset: 3,
                need: 4,
                have: 2
            })
        );
        assert!(fields.u8(usize::MAX).is_err());
    }
}
