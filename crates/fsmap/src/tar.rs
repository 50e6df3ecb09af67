//! Tar archives: a walk over 512-byte headers.
//!
//! Why by hand rather than the `tar` crate: the map needs the offset of
//! each member's data in the archive, and the walk is short. Read: ustar
//! (with `prefix`), GNU (`L`/`K` long names, base-256 sizes) and pax (`x`
//! records `path`, `linkpath`, `size`). Members whose data is not one run
//! (GNU `S` sparse members, pax `GNU.sparse.*` members) are left out.

use crate::read::{slice, Fields};
use crate::{push_extent, Budget, ContainerKind, Error, Extent, FileMap, MappedFile, Result};
use std::collections::HashMap;

const BLOCK: u64 = 512;

/// Whether `image` starts with a valid ustar or GNU header.
pub(crate) fn has_header(image: &[u8]) -> bool {
    Fields::at(image, 0, BLOCK, "tar header").is_ok_and(|h| check(&h).is_ok())
}

/// What extended headers (`L`, `K`, `x`) say about the next member.
#[derive(Debug, Default)]
struct Pending {
    path: Option<String>,
    link: Option<String>,
    size: Option<u64>,
    sparse: bool,
}

pub(crate) fn map(image: &[u8]) -> Result<FileMap> {
    let image_len = u64::try_from(image.len()).unwrap_or(u64::MAX);
    let mut budget = Budget::new(image.len());
    let mut files: Vec<MappedFile> = Vec::new();
    // Path of each regular member -> its index in `files`, for hard links.
    let mut by_path: HashMap<String, usize> = HashMap::new();
    let mut pending = Pending::default();
    let mut offset = 0u64;
    while offset < image_len {
        let header = Fields::at(image, offset, BLOCK, "tar header")?;
        if header.bytes.iter().all(|&b| b == 0) {
            break;
        }
        budget.step(1)?;
        check(&header)?;
        let kind = header.u8(156)?;
        let size = match pending.size {
            Some(size) if !matches!(kind, b'x' | b'g' | b'L' | b'K') => size,
            _ => number(&header, 124, 12, "size")?,
        };
        let data_offset = offset + BLOCK;
        let data = slice(image, data_offset, size, "tar member data")?;
        let next = data_offset
            .checked_add(size.div_ceil(BLOCK) * BLOCK)
            .expect("the data lies within the image");
        match kind {
            b'L' => pending.path = Some(long_name(data)),
            b'K' => pending.link = Some(long_name(data)),
            b'x' => pax(data, offset, &mut pending, &mut budget)?,
            b'g' => {}
            b'0' | 0 | b'7' | b'1' => {
                let path = normalize(&match pending.path.take() {
                    Some(path) => path,
                    None => header_name(&header)?,
                });
                let member = if kind == b'1' {
                    let target = match pending.link.take() {
                        Some(link) => link,
                        None => field_str(header.bytes(157, 100)?),
                    };
                    by_path
                        .get(&normalize(&target))
                        .and_then(|&i| files.get(i))
                        .map(|target| (target.size, target.extents.clone()))
                } else if pending.sparse {
                    None
                } else {
                    let mut extents = Vec::new();
                    if size > 0 {
                        push_extent(
                            &mut extents,
                            Extent {
                                logical: 0,
                                physical: data_offset,
                                len: size,
                            },
                        );
                    }
                    Some((size, extents))
                };
                if let Some((size, extents)) = member {
                    // The path is kept twice: in the file and in `by_path`.
                    budget.spend_file(path.len().saturating_mul(2), extents.len())?;
                    by_path.insert(path.clone(), files.len());
                    files.push(MappedFile {
                        path,
                        size,
                        extents,
                    });
                }
                pending = Pending::default();
            }
            _ => pending = Pending::default(),
        }
        offset = next;
    }
    files.sort_by(|a, b| a.path.cmp(&b.path));
    Ok(FileMap {
        kind: ContainerKind::Tar,
        files,
    })
}

/// Checks a header's magic and checksum.
fn check(header: &Fields) -> Result<()> {
    let magic = header.bytes(257, 8)?;
    if magic != b"ustar\x0000" && magic != b"ustar  \0" {
        return Err(Error::TarField {
            offset: header.offset,
            field: "magic",
            reason: "neither ustar nor GNU",
        });
    }
    let stored = number(header, 148, 8, "chksum")?;
    let (mut unsigned, mut signed) = (0u64, 0i64);
    for (i, &b) in header.bytes.iter().enumerate() {
        let b = if (148..156).contains(&i) { b' ' } else { b };
        unsigned += u64::from(b);
        signed += i64::from(i8::from_le_bytes([b]));
    }
    if stored != unsigned && i64::try_from(stored) != Ok(signed) {
        return Err(Error::TarChecksum {
            offset: header.offset,
            stored,
            computed: unsigned,
        });
    }
    Ok(())
}

/// A numeric header field: octal digits (leading spaces, ended by a space
/// or NUL) or GNU base-256.
fn number(header: &Fields, at: usize, len: usize, field: &'static str) -> Result<u64> {
    let bad = |reason| Error::TarField {
        offset: header.offset,
        field,
        reason,
    };
    let bytes = header.bytes(at, len)?;
    if let Some((&first, rest)) = bytes.split_first() {
        if first & 0x80 != 0 {
            if first != 0x80 {
                return Err(bad("negative or oversized base-256 number"));
            }
            return rest.iter().try_fold(0u64, |n, &b| {
                n.checked_mul(256)
                    .map(|n| n | u64::from(b))
                    .ok_or(bad("base-256 number over 64 bits"))
            });
        }
    }
    let digits = bytes.iter().skip_while(|&&b| b == b' ');
    let mut n = 0u64;
    for &b in digits.take_while(|&&b| b != b' ' && b != 0) {
        if !(b'0'..=b'7').contains(&b) {
            return Err(bad("not an octal number"));
        }
        n = n * 8 + u64::from(b - b'0');
    }
    Ok(n)
}

/// `prefix/name` of a ustar header, `name` of a GNU one.
fn header_name(header: &Fields) -> Result<String> {
    let name = field_str(header.bytes(0, 100)?);
    if header.bytes(257, 6)? == b"ustar\0" {
        let prefix = field_str(header.bytes(345, 155)?);
        if !prefix.is_empty() {
            return Ok(format!("{prefix}/{name}"));
        }
    }
    Ok(name)
}

/// A NUL-terminated (or full) text field.
fn field_str(bytes: &[u8]) -> String {
    let end = bytes.iter().position(|&b| b == 0).unwrap_or(bytes.len());
    String::from_utf8_lossy(bytes.get(..end).unwrap_or_default()).into_owned()
}

/// The name in a GNU `L` or `K` member's data.
fn long_name(data: &[u8]) -> String {
    field_str(data)
}

/// `/`-rooted path without `.` and empty components: `./usr//bin/` is `/usr/bin`.
fn normalize(name: &str) -> String {
    let mut path = String::with_capacity(name.len() + 1);
    for part in name.split('/').filter(|p| !p.is_empty() && *p != ".") {
        path.push('/');
        path.push_str(part);
    }
    if path.is_empty() {
        path.push('/');
    }
    path
}

/// Reads the records `LEN KEY=VALUE\n` of a pax `x` member at `offset`.
fn pax(data: &[u8], offset: u64, pending: &mut Pending, budget: &mut Budget) -> Result<()> {
    let bad = |reason| Error::TarField {
        offset,
        field: "pax record",
        reason,
    };
    let mut rest = data;
    while !rest.is_empty() {
        budget.step(1)?;
        let space = rest
            .iter()
            .position(|&b| b == b' ')
            .ok_or(bad("no length"))?;
        let len: usize = std::str::from_utf8(rest.get(..space).unwrap_or_default())
            .ok()
            .and_then(|s| s.parse().ok())
            .ok_or(bad("length is not a decimal number"))?;
        let record = rest
            .get(space + 1..len)
            .and_then(|r| r.strip_suffix(b"\n"))
            .ok_or(bad("length too short, past the data, or no newline"))?;
        rest = rest.get(len..).unwrap_or_default();
        let eq = record
            .iter()
            .position(|&b| b == b'=')
            .ok_or(bad("no '='"))?;
        let (key, value) = (
            record.get(..eq).unwrap_or_default(),
            record.get(eq + 1..).unwrap_or_default(),
        );
        let text = || String::from_utf8_lossy(value).into_owned();
        match key {
            b"path" => pending.path = Some(text()),
            b"linkpath" => pending.link = Some(text()),
            b"size" => {
                let size = std::str::from_utf8(value)
                    .ok()
                    .and_then(|s| s.parse().ok())
                    .ok_or(bad("size is not a decimal number"))?;
                pending.size = Some(size);
            }
            key if key.starts_with(b"GNU.sparse.") => pending.sparse = true,
            _ => {}
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A ustar header for `name` of `kind` with `size` bytes of data.
    fn header(name: &str, kind: u8, size: u64) -> Vec<u8> {
        linked(name, kind, size, "")
    }

    /// A ustar header with a link name.
    fn linked(name: &str, kind: u8, size: u64, link: &str) -> Vec<u8> {
        let mut h = vec![0u8; 512];
        h[..name.len()].copy_from_slice(name.as_bytes());
        h[157..157 + link.len()].copy_from_slice(link.as_bytes());
        h[100..107].copy_from_slice(b"0000644");
        h[124..135].copy_from_slice(format!("{size:011o}").as_bytes());
        h[156] = kind;
        h[257..265].copy_from_slice(b"ustar\x0000");
        h[148..156].copy_from_slice(b"        ");
        let sum: u32 = h.iter().map(|&b| u32::from(b)).sum();
        h[148..155].copy_from_slice(format!("{sum:06o}\0").as_bytes());
        h
    }

    fn member(out: &mut Vec<u8>, name: &str, kind: u8, data: &[u8]) {
        out.extend(header(name, kind, data.len() as u64));
        out.extend(data);
        out.resize(out.len().div_ceil(512) * 512, 0);
    }

    #[test]
    fn members_long_names_pax_and_links() {
        let mut tar = Vec::new();
        member(&mut tar, "./dir/", b'5', b"");
        member(&mut tar, "./dir/a", b'0', b"alpha");
        let long = format!("dir/{}", "n".repeat(150));
        member(
            &mut tar,
            "././@LongLink",
            b'L',
            format!("{long}\0").as_bytes(),
        );
        member(&mut tar, "short", b'0', b"long named");
        member(&mut tar, "PaxHeaders/x", b'x', b"19 path=dir/pax.gz\n");
        member(&mut tar, "ignored", b'0', b"pax");
        tar.extend(linked("dir/link", b'1', 0, "./dir/a"));
        member(&mut tar, "dir/sym", b'2', b"");
        tar.extend([0u8; 1024]);

        let map = map(&tar).unwrap();
        let paths: Vec<&str> = map.files.iter().map(|f| f.path.as_str()).collect();
        let long_path = format!("/{long}");
        assert_eq!(paths, ["/dir/a", "/dir/link", &long_path, "/dir/pax.gz"]);
        let a = &map.files[0];
        assert_eq!(a.contiguous(), Some(1024..1029));
        assert_eq!(&tar[1024..1029], b"alpha");
        assert_eq!(map.files[1].extents, a.extents);
        assert_eq!(map.files[2].size, 10);
        let pax = &map.files[3];
        let range = pax.contiguous().unwrap();
        assert_eq!(&tar[range.start as usize..range.end as usize], b"pax");
    }

    #[test]
    fn bad_input_is_an_error() {
        let mut tar = Vec::new();
        member(&mut tar, "a", b'0', b"data");
        // Truncated data.
        assert!(matches!(
            map(&tar[..514]),
            Err(Error::Truncated {
                what: "tar member data",
                offset: 512,
                need: 4,
                have: 2
            })
        ));
        // Truncated header.
        let mut two = tar.clone();
        two.extend(&header("b", b'0', 0)[..100]);
        assert!(matches!(
            map(&two),
            Err(Error::Truncated {
                what: "tar header",
                offset: 1024,
                ..
            })
        ));
        // Bad checksum.
        let mut bad = tar.clone();
        bad[0] = b'b';
        assert!(matches!(
            map(&bad),
            Err(Error::TarChecksum { offset: 0, .. })
        ));
        assert!(!has_header(&bad));
        // A size that is not octal.
        let mut bad = header("a", b'0', 0);
        bad[130] = b'9';
        assert!(matches!(
            check(&Fields::at(&bad, 0, 512, "t").unwrap()),
            Err(Error::TarChecksum { .. })
        ));
        // A bad pax record.
        let mut bad = Vec::new();
        member(&mut bad, "x", b'x', b"99 path=a\n");
        assert!(matches!(
            map(&bad),
            Err(Error::TarField {
                field: "pax record",
                ..
            })
        ));
        let mut bad = Vec::new();
        member(&mut bad, "x", b'x', b"3 p\n");
        assert!(map(&bad).is_err());
    }

    #[test]
    fn numbers() {
        let mut h = header("a", b'0', 0);
        let f = |h: &[u8]| number(&Fields::at(h, 0, 512, "t").unwrap(), 124, 12, "size");
        h[124..136].copy_from_slice(b"  17 \0\0\0\0\0\0\0");
        assert_eq!(f(&h), Ok(15));
        h[124] = 0x80;
        h[125..136].copy_from_slice(&[0, 0, 0, 0, 0, 0, 0, 0, 0, 1, 2]);
        assert_eq!(f(&h), Ok(258));
        h[125] = 1;
        assert!(f(&h).is_err());
        h[124] = 0xFF;
        assert!(f(&h).is_err());
    }

    #[test]
    fn normalized_paths() {
        assert_eq!(normalize("./usr//bin/"), "/usr/bin");
        assert_eq!(normalize("/etc/x"), "/etc/x");
        assert_eq!(normalize("."), "/");
    }
}
