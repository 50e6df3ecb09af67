//! GNU tar headers, byte for byte as GNU tar 1.34 writes them by default.
//!
//! The size that matters is the size of `tar -z` output, and gzip's output
//! depends on every input byte, so headers copy GNU tar's `gnu` format
//! exactly (checked against GNU tar in the walker's tests): 512-byte
//! blocks, octal fields ending in NUL, base-256 for numbers too big for the
//! octal digits (files of 8 GiB and more), the `ustar  \0` magic, and a
//! `././@LongLink` entry (`L` for the name, `K` for the link target) before
//! any member whose name or target is longer than 100 bytes.

use std::collections::HashMap;

/// Size of a tar block.
pub(crate) const BLOCK: usize = 512;
/// GNU tar's default record (blocking factor 20): the archive is padded
/// with zeros to a multiple of this.
pub(crate) const RECORD: u64 = 10_240;
/// Longest name or link target that fits in the header itself.
const NAME_FIELD: usize = 100;

/// What a member is, as its header's type flag says.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Kind {
    /// `0`: a regular file; its contents follow.
    File,
    /// `1`: a hard link to an earlier member.
    HardLink,
    /// `2`: a symbolic link.
    Symlink,
    /// `3`: a character device.
    CharDevice,
    /// `4`: a block device.
    BlockDevice,
    /// `5`: a directory.
    Directory,
    /// `6`: a fifo.
    Fifo,
}

impl Kind {
    fn flag(self) -> u8 {
        match self {
            Kind::File => b'0',
            Kind::HardLink => b'1',
            Kind::Symlink => b'2',
            Kind::CharDevice => b'3',
            Kind::BlockDevice => b'4',
            Kind::Directory => b'5',
            Kind::Fifo => b'6',
        }
    }
}

/// One member's metadata.
#[derive(Debug, Clone)]
pub(crate) struct Header<'a> {
    /// Member name, e.g. `./etc/hosts` or `./etc/` for a directory.
    pub name: &'a [u8],
    /// Permission bits (`st_mode & 0o7777`).
    pub mode: u32,
    pub uid: u64,
    pub gid: u64,
    /// Bytes of contents that follow (0 for all but regular files).
    pub size: u64,
    /// Seconds since the epoch.
    pub mtime: i64,
    pub kind: Kind,
    /// Link target for symlinks and hard links, else empty.
    pub link: &'a [u8],
    pub uname: &'a [u8],
    pub gname: &'a [u8],
    /// `(major, minor)` for devices.
    pub device: Option<(u32, u32)>,
}

/// Appends the header blocks for `header` to `out`: the long-name entries
/// it needs, then the header block. Contents are not included.
pub(crate) fn encode(header: &Header<'_>, out: &mut Vec<u8>) {
    if header.link.len() > NAME_FIELD {
        long_entry(b'K', header.link, out);
    }
    if header.name.len() > NAME_FIELD {
        long_entry(b'L', header.name, out);
    }
    let mut block = [0u8; BLOCK];
    put_text(&mut block[0..100], header.name);
    put_octal(&mut block[100..108], u64::from(header.mode & 0o7777));
    put_number(&mut block[108..116], i128::from(header.uid));
    put_number(&mut block[116..124], i128::from(header.gid));
    put_number(&mut block[124..136], i128::from(header.size));
    put_number(&mut block[136..148], i128::from(header.mtime));
    block[156] = header.kind.flag();
    put_text(&mut block[157..257], header.link);
    block[257..265].copy_from_slice(b"ustar  \0");
    put_text(&mut block[265..296], header.uname);
    put_text(&mut block[297..328], header.gname);
    if let Some((major, minor)) = header.device {
        put_number(&mut block[329..337], i128::from(major));
        put_number(&mut block[337..345], i128::from(minor));
    }
    finish(&mut block);
    out.extend_from_slice(&block);
}

/// A `././@LongLink` entry carrying `text` (NUL-terminated) for the member
/// that follows; GNU tar fills it like this whoever owns the file.
fn long_entry(flag: u8, text: &[u8], out: &mut Vec<u8>) {
    let mut block = [0u8; BLOCK];
    put_text(&mut block[0..100], b"././@LongLink");
    put_octal(&mut block[100..108], 0o644);
    put_octal(&mut block[108..116], 0);
    put_octal(&mut block[116..124], 0);
    let len = u64::try_from(text.len()).map_or(u64::MAX, |n| n.saturating_add(1));
    put_number(&mut block[124..136], i128::from(len));
    put_octal(&mut block[136..148], 0);
    block[156] = flag;
    block[257..265].copy_from_slice(b"ustar  \0");
    put_text(&mut block[265..296], b"root");
    put_text(&mut block[297..328], b"root");
    finish(&mut block);
    out.extend_from_slice(&block);
    out.extend_from_slice(text);
    out.push(0);
    out.resize(out.len() + padding(text.len() + 1), 0);
}

/// Zero bytes needed after `len` bytes of contents to end on a block.
pub(crate) fn padding(len: usize) -> usize {
    (BLOCK - len % BLOCK) % BLOCK
}

/// Copies as much of `text` as fits; the rest of the field stays NUL.
fn put_text(field: &mut [u8], text: &[u8]) {
    let n = text.len().min(field.len());
    field[..n].copy_from_slice(&text[..n]);
}

/// Zero-padded octal using all but the last byte, which is NUL.
fn put_octal(field: &mut [u8], mut value: u64) {
    let digits = field.len() - 1;
    field[digits] = 0;
    for slot in field[..digits].iter_mut().rev() {
        *slot = b'0' + (value & 7) as u8;
        value >>= 3;
    }
}

/// Octal when it fits in the field's digits, else GNU base-256: the first
/// byte's top bit set (0x80 positive, 0xff negative), the value in two's
/// complement big-endian in the rest.
fn put_number(field: &mut [u8], value: i128) {
    let digits = u32::try_from(field.len() - 1).unwrap_or(0);
    if let Ok(v) = u64::try_from(value) {
        if digits * 3 >= 64 || v < (1u64 << (3 * digits)) {
            put_octal(field, v);
            return;
        }
    }
    let mut rest = value;
    for slot in field.iter_mut().rev() {
        *slot = (rest & 0xff) as u8;
        rest >>= 8;
    }
    field[0] = if value < 0 { 0xff } else { 0x80 };
}

/// Writes the checksum: the sum of all bytes with the checksum field read
/// as spaces, as six octal digits, NUL, space.
fn finish(block: &mut [u8; BLOCK]) {
    block[148..156].copy_from_slice(b"        ");
    let sum: u64 = block.iter().map(|&b| u64::from(b)).sum();
    put_octal(&mut block[148..155], sum);
    block[155] = b' ';
}

/// User and group names by id, read from `/etc/passwd` and `/etc/group`
/// once, as `getpwuid`/`getgrgid` would find them on a device that only has
/// the files (balenaOS). An id without a name gets an empty field, as in
/// GNU tar.
#[derive(Debug, Default)]
pub(crate) struct Names {
    users: HashMap<u64, Vec<u8>>,
    groups: HashMap<u64, Vec<u8>>,
}

impl Names {
    /// Reads the two files; a missing or unreadable one means no names.
    pub(crate) fn load() -> Names {
        Names {
            users: parse_id_file(&std::fs::read("/etc/passwd").unwrap_or_default()),
            groups: parse_id_file(&std::fs::read("/etc/group").unwrap_or_default()),
        }
    }

    pub(crate) fn user(&self, uid: u64) -> &[u8] {
        self.users.get(&uid).map_or(&[], Vec::as_slice)
    }

    pub(crate) fn group(&self, gid: u64) -> &[u8] {
        self.groups.get(&gid).map_or(&[], Vec::as_slice)
    }
}

/// `name:x:id:...` lines; the first line for an id wins, as with getpwuid.
fn parse_id_file(text: &[u8]) -> HashMap<u64, Vec<u8>> {
    let mut map = HashMap::new();
    for line in text.split(|&b| b == b'\n') {
        let mut fields = line.split(|&b| b == b':');
        let (Some(name), Some(_), Some(id)) = (fields.next(), fields.next(), fields.next()) else {
            continue;
        };
        let Some(id) = std::str::from_utf8(id)
            .ok()
            .and_then(|s| s.parse::<u64>().ok())
        else {
            continue;
        };
        if !name.is_empty() {
            map.entry(id).or_insert_with(|| name.to_vec());
        }
    }
    map
}

#[cfg(test)]
mod tests {
    use super::*;

    fn file(name: &[u8], size: u64) -> Header<'_> {
        Header {
            name,
            mode: 0o644,
            uid: 0,
            gid: 0,
            size,
            mtime: 1_700_000_000,
            kind: Kind::File,
            link: b"",
            uname: b"root",
            gname: b"root",
            device: None,
        }
    }

    #[test]
    fn octal_fields_end_in_nul() {
        let mut out = Vec::new();
        encode(&file(b"./a", 3), &mut out);
        assert_eq!(out.len(), BLOCK);
        assert_eq!(&out[100..108], b"0000644\0");
        assert_eq!(&out[124..136], b"00000000003\0");
        assert_eq!(&out[136..148], b"14524770400\0");
        assert_eq!(&out[257..265], b"ustar  \0");
        assert_eq!(out[155], b' ');
        assert_eq!(out[154], 0);
    }

    #[test]
    fn sizes_from_8_gib_use_base_256() {
        let mut out = Vec::new();
        encode(&file(b"./big", (1 << 33) - 1), &mut out);
        assert_eq!(&out[124..136], b"77777777777\0");
        out.clear();
        encode(&file(b"./big", 1 << 33), &mut out);
        assert_eq!(&out[124..136], &[0x80, 0, 0, 0, 0, 0, 0, 2, 0, 0, 0, 0]);
    }

    #[test]
    fn negative_mtime_uses_base_256() {
        let mut header = file(b"./old", 0);
        header.mtime = -1;
        let mut out = Vec::new();
        encode(&header, &mut out);
        assert_eq!(&out[136..148], &[0xff; 12]);
    }

    #[test]
    fn names_over_100_bytes_get_a_long_link_entry() {
        let name = [b'x'; 100];
        let mut out = Vec::new();
        encode(&file(&name, 0), &mut out);
        assert_eq!(out.len(), BLOCK, "100 bytes still fit");
        let name = [b'x'; 101];
        out.clear();
        encode(&file(&name, 0), &mut out);
        assert_eq!(out.len(), 3 * BLOCK);
        assert_eq!(&out[0..13], b"././@LongLink");
        assert_eq!(out[156], b'L');
        assert_eq!(&out[124..136], b"00000000146\0");
        assert_eq!(&out[BLOCK..BLOCK + 101], &name);
        assert_eq!(out[BLOCK + 101], 0);
        assert_eq!(&out[2 * BLOCK..2 * BLOCK + 100], &name[..100]);
    }

    #[test]
    fn passwd_first_entry_wins() {
        let map = parse_id_file(
            b"root:x:0:0::/root:/bin/sh\ntoor:x:0:0\nbad\n:x:5\nnobody:x:65534:65534",
        );
        assert_eq!(map.get(&0).map(Vec::as_slice), Some(&b"root"[..]));
        assert_eq!(map.get(&65534).map(Vec::as_slice), Some(&b"nobody"[..]));
        assert_eq!(map.len(), 2);
    }
}
