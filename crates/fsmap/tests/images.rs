//! Real images: ext4 file systems made by `mkfs.ext4 -d` and archives made
//! by GNU `tar`, read back through the map and compared with the files they
//! were made from. The tools are required: a missing `mkfs.ext4` or `tar`
//! fails the tests rather than skipping them.

use delta_fsmap::{map_ext4, map_image, map_tar, ContainerKind, Error, FileMap, MappedFile};
use proptest::prelude::*;
use std::collections::BTreeMap;
use std::fs;
use std::io::{Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::process::Command;

/// Bytes from a fixed-seed xorshift, so that files do not compress or dedupe.
fn noise(seed: u64, len: usize) -> Vec<u8> {
    let mut state = seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1;
    (0..len)
        .map(|_| {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state.to_le_bytes()[3]
        })
        .collect()
}

/// The tree every ext4 and tar test maps: small, large, empty, sparse
/// (several extents), nested, a hard link, symlinks, a big directory
/// (htree), a long name and a non-UTF-8 name.
fn make_tree(root: &Path) {
    let write = |path: &str, data: &[u8]| {
        let path = root.join(path);
        fs::create_dir_all(path.parent().unwrap()).unwrap();
        fs::write(path, data).unwrap();
    };
    write("hello.txt", b"hello\n");
    write("empty", b"");
    write("usr/share/doc/pkg/changelog.gz", &noise(1, 12_345));
    write("large.bin", &noise(2, 5 << 20));
    write("a/b/c/d/e/f/g/deep", &noise(3, 4096));
    write("block", &noise(4, 4096 * 3));
    for i in 0..300 {
        write(
            &format!("many/file-{i:03}"),
            &noise(100 + i, (i as usize * 37) % 9000),
        );
    }
    write(&format!("long/{}", "n".repeat(200)), &noise(5, 777));
    // Sparse: data, a 1 MiB hole, data, a hole, data: several extents.
    let mut sparse = fs::File::create(root.join("sparse.bin")).unwrap();
    for (at, seed) in [(0u64, 6), (1 << 20, 7), (3 << 20, 8)] {
        sparse.seek(SeekFrom::Start(at)).unwrap();
        sparse.write_all(&noise(seed, 10_000)).unwrap();
    }
    drop(sparse);
    fs::hard_link(root.join("block"), root.join("a/block-link")).unwrap();
    std::os::unix::fs::symlink("hello.txt", root.join("short-link")).unwrap();
    std::os::unix::fs::symlink("x".repeat(300), root.join("long-link")).unwrap();
    {
        use std::os::unix::ffi::OsStrExt;
        let name = std::ffi::OsStr::from_bytes(b"latin1-\xe9t\xe9");
        fs::write(root.join(name), b"bytes").unwrap();
    }
}

/// Regular files under `root` as `/`-rooted paths (lossy UTF-8), with content.
fn regular_files(root: &Path) -> BTreeMap<String, Vec<u8>> {
    fn walk(dir: &Path, prefix: &str, out: &mut BTreeMap<String, Vec<u8>>) {
        for entry in fs::read_dir(dir).unwrap() {
            let entry = entry.unwrap();
            let name = entry.file_name();
            let path = format!("{prefix}/{}", name.to_string_lossy());
            let kind = entry.file_type().unwrap();
            if kind.is_dir() {
                walk(&entry.path(), &path, out);
            } else if kind.is_file() {
                out.insert(path, fs::read(entry.path()).unwrap());
            }
        }
    }
    let mut out = BTreeMap::new();
    walk(root, "", &mut out);
    out
}

/// Finds a system tool in PATH or the sbin directories; panics if missing.
fn tool(name: &str) -> PathBuf {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .chain(["/sbin", "/usr/sbin", "/usr/local/sbin"].map(PathBuf::from))
        .map(|dir| dir.join(name))
        .find(|p| p.is_file())
        .unwrap_or_else(|| {
            panic!("{name} not found: install it (e2fsprogs / tar) to run these tests")
        })
}

/// `mkfs.ext4 -q -d TREE -b BLOCK [extra] IMG SIZE`, returning the image.
fn mkfs(tree: &Path, dir: &Path, block: u32, size: &str, extra: &[&str]) -> Vec<u8> {
    let img = dir.join(format!(
        "fs-{block}-{}.img",
        extra.join("").replace([' ', ','], "")
    ));
    let _ = fs::remove_file(&img);
    let out = Command::new(tool("mkfs.ext4"))
        .args(["-q", "-F", "-d"])
        .arg(tree)
        .args(["-b", &block.to_string()])
        .args(extra)
        .arg(&img)
        .arg(size)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "mkfs.ext4 failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    fs::read(&img).unwrap()
}

/// The file's bytes as read through its extents (holes as zeros).
fn read_through(image: &[u8], file: &MappedFile) -> Vec<u8> {
    let mut data = vec![0u8; usize::try_from(file.size).unwrap()];
    let mut end = 0;
    for e in &file.extents {
        assert!(
            e.logical >= end,
            "{}: extents overlap or are out of order",
            file.path
        );
        end = e.logical + e.len;
        assert!(end <= file.size, "{}: extent past the file size", file.path);
        let (logical, physical, len) = (e.logical as usize, e.physical as usize, e.len as usize);
        data[logical..logical + len].copy_from_slice(&image[physical..physical + len]);
    }
    data
}

/// Every mapped file reads back as its source; returns the mapped paths.
fn check_contents(
    image: &[u8],
    map: &FileMap,
    expected: &BTreeMap<String, Vec<u8>>,
) -> Vec<String> {
    assert!(
        map.files.windows(2).all(|w| w[0].path <= w[1].path),
        "not sorted by path"
    );
    for file in &map.files {
        let want = expected
            .get(&file.path)
            .unwrap_or_else(|| panic!("unexpected path {}", file.path));
        assert_eq!(file.size, want.len() as u64, "{}: size", file.path);
        assert!(
            read_through(image, file) == *want,
            "{}: content differs",
            file.path
        );
        if let Some(range) = file.contiguous() {
            assert!(
                image[range.start as usize..range.end as usize] == *want,
                "{}",
                file.path
            );
        }
    }
    map.files.iter().map(|f| f.path.clone()).collect()
}

/// Maps `image` and checks that it lists exactly the regular files of
/// the tree with the right content.
fn check_ext4(image: &[u8], expected: &BTreeMap<String, Vec<u8>>) -> FileMap {
    let map = map_image(image).unwrap();
    assert_eq!(map.kind, ContainerKind::Ext4);
    let paths = check_contents(image, &map, expected);
    let want: Vec<&String> = expected.keys().collect();
    assert_eq!(paths.iter().collect::<Vec<_>>(), want);
    map
}

fn file<'a>(map: &'a FileMap, path: &str) -> &'a MappedFile {
    map.files
        .iter()
        .find(|f| f.path == path)
        .unwrap_or_else(|| panic!("{path} not mapped"))
}

#[test]
fn ext4_images_map_every_regular_file() {
    let dir = tempfile::tempdir().unwrap();
    let tree = dir.path().join("tree");
    make_tree(&tree);
    let expected = regular_files(&tree);
    assert!(expected.len() > 300);

    let image = mkfs(&tree, dir.path(), 4096, "64M", &[]);
    let map = check_ext4(&image, &expected);
    // A hard link is listed at both paths with the same extents.
    assert_eq!(
        file(&map, "/block").extents,
        file(&map, "/a/block-link").extents
    );
    assert!(file(&map, "/block").contiguous().is_some());
    assert!(file(&map, "/usr/share/doc/pkg/changelog.gz")
        .contiguous()
        .is_some());
    // The sparse file has three extents and is not one run.
    let sparse = file(&map, "/sparse.bin");
    assert_eq!(sparse.extents.len(), 3, "{:?}", sparse.extents);
    assert_eq!(sparse.contiguous(), None);
    assert!(file(&map, "/empty").extents.is_empty());
    assert_eq!(map_ext4(&image).unwrap(), map);

    // 1 KiB blocks (first data block 1, many groups), meta_bg without
    // resize_inode, and 32-bit group descriptors.
    check_ext4(&mkfs(&tree, dir.path(), 1024, "64M", &[]), &expected);
    check_ext4(
        &mkfs(
            &tree,
            dir.path(),
            1024,
            "64M",
            &["-O", "meta_bg,^resize_inode", "-g", "1024", "-N", "700"],
        ),
        &expected,
    );
    check_ext4(
        &mkfs(
            &tree,
            dir.path(),
            4096,
            "64M",
            &["-O", "^64bit,^metadata_csum"],
        ),
        &expected,
    );
    check_ext4(
        &mkfs(&tree, dir.path(), 2048, "64M", &["-O", "sparse_super2"]),
        &expected,
    );
}

#[test]
fn ext4_inline_data_files_are_left_out() {
    let dir = tempfile::tempdir().unwrap();
    let tree = dir.path().join("tree");
    make_tree(&tree);
    // A small directory (inline) with a large file in it.
    fs::create_dir(tree.join("tiny")).unwrap();
    fs::write(tree.join("tiny/big"), noise(9, 50_000)).unwrap();
    let expected = regular_files(&tree);
    let image = mkfs(
        &tree,
        dir.path(),
        4096,
        "64M",
        &["-O", "inline_data", "-I", "256"],
    );
    let map = map_image(&image).unwrap();
    let paths = check_contents(&image, &map, &expected);
    // Small files are inline and left out; everything over 4 KiB is there,
    // including the file in the inline directory.
    assert!(
        !paths.contains(&"/hello.txt".to_string()),
        "inline file listed"
    );
    for (path, data) in &expected {
        if data.len() >= 4096 {
            assert!(paths.contains(path), "{path} missing");
        }
    }
    assert!(paths.contains(&"/tiny/big".to_string()));
}

#[test]
fn gnu_tar_with_reordered_members() {
    let dir = tempfile::tempdir().unwrap();
    let tree = dir.path().join("tree");
    make_tree(&tree);
    let expected = regular_files(&tree);
    for format in ["gnu", "pax", "ustar"] {
        let archive = dir.path().join(format!("{format}.tar"));
        // Members out of order: files before their directories, reversed.
        let mut args: Vec<String> = vec![
            "./sparse.bin".into(),
            "./long".into(),
            "./usr".into(),
            "./many".into(),
        ];
        args.extend(
            [
                "./large.bin",
                "./hello.txt",
                "./empty",
                "./block",
                "./a",
                "./short-link",
                "./long-link",
            ]
            .map(String::from),
        );
        let out = Command::new(tool("tar"))
            .arg(format!("--format={format}"))
            .arg("-cf")
            .arg(&archive)
            .arg("-C")
            .arg(&tree)
            .args(&args)
            .output()
            .unwrap();
        if format == "ustar" {
            // ustar cannot store the 205-byte name or the 300-byte link.
            assert!(!out.status.success());
        } else {
            assert!(
                out.status.success(),
                "tar: {}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
        let image = fs::read(&archive).unwrap();
        let map = map_image(&image).unwrap();
        assert_eq!(map.kind, ContainerKind::Tar);
        let paths = check_contents(&image, &map, &expected);
        assert_eq!(map_tar(&image).unwrap(), map);
        if format == "ustar" {
            continue;
        }
        let want: Vec<&String> = expected
            .keys()
            .filter(|p| !p.starts_with("/latin1"))
            .collect();
        assert_eq!(paths.iter().collect::<Vec<_>>(), want, "{format}");
        assert_eq!(
            file(&map, "/block").extents,
            file(&map, "/a/block-link").extents
        );
        assert!(file(&map, "/large.bin").contiguous().is_some());
    }
}

#[test]
fn damaged_ext4_images_are_errors() {
    let dir = tempfile::tempdir().unwrap();
    let tree = dir.path().join("tree");
    make_tree(&tree);
    let image = mkfs(&tree, dir.path(), 4096, "64M", &[]);

    // Truncated: the file system is longer than the image.
    let err = map_image(&image[..image.len() / 2]).unwrap_err();
    assert!(matches!(err, Error::Truncated { offset: 0, .. }), "{err}");
    assert!(map_image(&image[..1100]).is_err());

    // Superblock fields.
    let field = |at: usize, value: u32| {
        let mut bad = image.clone();
        bad[1024 + at..1024 + at + 4].copy_from_slice(&value.to_le_bytes());
        map_image(&bad).unwrap_err()
    };
    assert!(matches!(
        field(0x18, 9),
        Error::Superblock {
            field: "s_log_block_size",
            ..
        }
    ));
    assert!(matches!(
        field(0x28, 0),
        Error::Superblock {
            field: "s_inodes_per_group",
            ..
        }
    ));
    assert!(matches!(field(0x04, u32::MAX), Error::Truncated { .. }));
    let err = field(0x60, 0x2 | 0x40 | 0x80 | 0x4);
    assert_eq!(
        err.to_string(),
        "ext4 superblock: s_feature_incompat has unsupported features 0x4 (needs_recovery)"
    );

    // The first group descriptor's inode table points past the end.
    let mut bad = image.clone();
    bad[4096 + 8..4096 + 12].copy_from_slice(&u32::MAX.to_le_bytes());
    assert!(matches!(
        map_image(&bad),
        Err(Error::GroupDescriptor { group: 0, .. })
    ));

    // Random bytes over the superblock (keeping the magic), and flipped
    // bytes anywhere in the metadata, never panic.
    let noise = noise(42, 1 << 16);
    for round in 0..64usize {
        let mut bad = image.clone();
        let at = 1024 + (round * 97) % 1000;
        bad[at..at + 24].copy_from_slice(&noise[round * 24..round * 24 + 24]);
        bad[1024 + 0x38..1024 + 0x3A].copy_from_slice(&0xEF53u16.to_le_bytes());
        let _ = map_image(&bad);
    }
    let metadata = first_data_offset(&image);
    for round in 0..400usize {
        let mut bad = image.clone();
        for k in 0..8 {
            let r = u64::from_le_bytes(
                noise[(round * 8 + k) * 8 % 65_000..][..8]
                    .try_into()
                    .unwrap(),
            );
            let at = usize::try_from(r % metadata as u64).unwrap();
            bad[at] ^= (r >> 56) as u8 | 1;
        }
        let _ = map_image(&bad);
    }
}

/// Offset of the lowest file data block: everything before it is metadata.
fn first_data_offset(image: &[u8]) -> usize {
    let map = map_image(image).unwrap();
    map.files
        .iter()
        .flat_map(|f| &f.extents)
        .map(|e| e.physical as usize)
        .min()
        .unwrap()
}

#[test]
fn random_bytes_are_unknown() {
    assert_eq!(map_image(&noise(7, 1 << 20)), Err(Error::Unknown));
    assert_eq!(map_image(&[0u8; 4096]), Err(Error::Unknown));
    assert_eq!(map_image(b"ustar"), Err(Error::Unknown));
}

/// A random tree: nested directories, files of edge sizes around blocks.
fn tree_strategy() -> impl Strategy<Value = Vec<(Vec<u8>, usize)>> {
    let sizes = prop_oneof![
        Just(0usize),
        Just(1),
        Just(4095),
        Just(4096),
        Just(4097),
        0usize..70_000,
    ];
    let path = prop::collection::vec(prop::sample::select(vec![b'a', b'b', b'c']), 1..4);
    prop::collection::vec((path, sizes), 1..24)
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 12, ..ProptestConfig::default() })]

    #[test]
    fn random_trees_map_back(entries in tree_strategy(), block in prop::sample::select(vec![1024u32, 4096])) {
        let dir = tempfile::tempdir().unwrap();
        let tree = dir.path().join("tree");
        fs::create_dir(&tree).unwrap();
        for (i, (parts, size)) in entries.iter().enumerate() {
            // Each letter is a directory level; the file name is unique.
            let mut path = tree.clone();
            for &p in parts {
                path.push(format!("d{}", p as char));
            }
            fs::create_dir_all(&path).unwrap();
            fs::write(path.join(format!("f{i}")), noise(i as u64, *size)).unwrap();
        }
        let expected = regular_files(&tree);
        let image = mkfs(&tree, dir.path(), block, "8M", &[]);
        check_ext4(&image, &expected);
    }
}

/// Offset of the only match of `pattern` at an offset where `filter` holds.
fn find_one(image: &[u8], pattern: &[u8], filter: impl Fn(usize) -> bool) -> usize {
    let hits: Vec<usize> = image
        .windows(pattern.len())
        .enumerate()
        .filter(|&(at, w)| w == pattern && filter(at))
        .map(|(at, _)| at)
        .collect();
    assert_eq!(hits.len(), 1, "pattern found {} times", hits.len());
    hits[0]
}

#[test]
fn damaged_extent_trees_and_directories_are_errors() {
    let dir = tempfile::tempdir().unwrap();
    let tree = dir.path().join("tree");
    make_tree(&tree);
    let image = mkfs(&tree, dir.path(), 4096, "64M", &[]);
    let map = map_image(&image).unwrap();

    // The inode of /block: one extent of 3 blocks in i_block, right after
    // the extent header (magic, 1 entry, max 4, depth 0, generation).
    let block = file(&map, "/block").contiguous().unwrap().start / 4096;
    let mut leaf = vec![0, 0, 0, 0, 3, 0, 0, 0];
    leaf.extend(u32::try_from(block).unwrap().to_le_bytes());
    let at = find_one(&image, &leaf, |at| {
        image[at - 12..at - 6] == [0x0A, 0xF3, 1, 0, 4, 0]
    });
    let patched = |offset: usize, bytes: &[u8]| {
        let mut bad = image.clone();
        bad[offset..offset + bytes.len()].copy_from_slice(bytes);
        map_image(&bad).unwrap_err()
    };
    let err = patched(at + 8, &u32::MAX.to_le_bytes());
    assert!(
        matches!(
            err,
            Error::ExtentOutOfRange {
                logical: 0,
                start: 0xFFFF_FFFF,
                len: 3,
                ..
            }
        ),
        "{err}"
    );
    let err = patched(at - 12, &[0x0B]);
    assert!(
        matches!(
            err,
            Error::ExtentNode {
                reason: "header magic is not 0xF30A",
                ..
            }
        ),
        "{err}"
    );
    let err = patched(at - 6, &[6, 0]);
    assert!(
        matches!(
            err,
            Error::ExtentNode {
                reason: "tree deeper than 5",
                ..
            }
        ),
        "{err}"
    );
    let err = patched(at - 10, &[5, 0]);
    assert!(
        matches!(
            err,
            Error::ExtentNode {
                reason: "more entries than the node holds",
                ..
            }
        ),
        "{err}"
    );
    let err = patched(at + 4, &[0, 0]);
    assert!(
        matches!(
            err,
            Error::ExtentNode {
                reason: "extent of zero blocks",
                ..
            }
        ),
        "{err}"
    );
    // An index node one level down that points at itself is refused by depth.
    let err = patched(at - 6, &[1, 0]);
    assert!(matches!(err, Error::ExtentNode { .. }), "{err}");
    // An unwritten extent is a hole: the file maps with no extents.
    let mut unwritten = image.clone();
    unwritten[at + 4..at + 6].copy_from_slice(&(32_768u16 + 3).to_le_bytes());
    let map2 = map_image(&unwritten).unwrap();
    assert!(file(&map2, "/block").extents.is_empty());

    // Directory /a/b/c/d/e/f: ".", "..", then "g" (a directory).
    let f = (0..image.len() / 4096)
        .map(|b| b * 4096)
        .filter(|&b| {
            image[b + 4..b + 12] == [12, 0, 1, 2, b'.', 0, 0, 0]
                && image[b + 30..b + 33] == [1, 2, b'g']
        })
        .collect::<Vec<_>>();
    assert_eq!(f.len(), 1);
    let f = f[0];
    let err = patched(f + 24, &2u32.to_le_bytes());
    assert_eq!(
        err,
        Error::DirectoryCycle {
            inode: 2,
            path: "/a/b/c/d/e/f/g".into()
        }
    );
    let err = patched(f + 28, &[13, 0]);
    assert!(
        matches!(err, Error::DirEntry { offset, .. } if offset == f as u64 + 24),
        "{err}"
    );
    let err = patched(f + 32, b"/");
    assert!(
        matches!(
            err,
            Error::DirEntry {
                reason: "name empty or holding '/' or NUL",
                ..
            }
        ),
        "{err}"
    );
    // An entry with inode 0 is skipped: the subtree is gone, no error.
    let mut gone = image.clone();
    gone[f + 24..f + 28].copy_from_slice(&0u32.to_le_bytes());
    let map3 = map_image(&gone).unwrap();
    assert!(!map3
        .files
        .iter()
        .any(|x| x.path.starts_with("/a/b/c/d/e/f/g")));
    assert_eq!(map3.files.len(), map.files.len() - 1);
}
