//! Deflate segments on real ext4 images (`mkfs.ext4 -d`) and tar archives
//! holding gzip files made by GNU gzip at several levels and by zlib:
//! round trips, and the fallbacks to the byte path.
//!
//! Needs `mkfs.ext4` (e2fsprogs), `gzip` and `tar`: without them these
//! tests fail, they do not skip.

use delta_core::testing::{self, write_tree, Rng, Tree};
use delta_core::{apply_slice, generate, DeltaOptions, Serial};
use delta_format::{read_index, Limits, FLAG_DEFLATE_CHUNKS, FLAG_SEGMENT_KINDS};
use proptest::prelude::*;
use std::io::Write;
use std::path::Path;
use std::process::{Command, Stdio};

/// A changelog-like text of about `len` bytes.
fn text(rng: &mut Rng, len: usize) -> Vec<u8> {
    delta_core::testing::changelog(rng, len)
}

/// How a gzip file is made.
#[derive(Debug, Clone, Copy)]
enum Maker {
    Gnu(u32),
    Zlib(u32),
}

fn compress(data: &[u8], maker: Maker) -> Vec<u8> {
    match maker {
        Maker::Gnu(level) => {
            let mut child = Command::new("gzip")
                .arg(format!("-{level}n"))
                .stdin(Stdio::piped())
                .stdout(Stdio::piped())
                .spawn()
                .expect("GNU gzip is needed for these tests");
            let mut stdin = child.stdin.take().unwrap();
            let data = data.to_vec();
            let writer = std::thread::spawn(move || stdin.write_all(&data).unwrap());
            let out = child.wait_with_output().unwrap();
            writer.join().unwrap();
            assert!(out.status.success());
            out.stdout
        }
        Maker::Zlib(level) => {
            let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::new(level));
            e.write_all(data).unwrap();
            e.finish().unwrap()
        }
    }
}

fn ext4_image(tree: &Tree, dir: &Path, name: &str) -> Vec<u8> {
    let root = dir.join(format!("{name}-tree"));
    write_tree(&root, tree);
    let image = dir.join(format!("{name}.img"));
    let status = Command::new("mkfs.ext4")
        .args([
            "-q",
            "-F",
            "-b",
            "4096",
            "-E",
            "hash_seed=6d5b3f7c-1a2b-4c3d-8e9f-0a1b2c3d4e5f",
        ])
        .args(["-U", "6d5b3f7c-1a2b-4c3d-8e9f-0a1b2c3d4e5f", "-d"])
        .arg(&root)
        .arg(&image)
        .arg("16M")
        .env("E2FSPROGS_FAKE_TIME", "1700000000")
        .status()
        .expect("mkfs.ext4 (e2fsprogs) is needed for these tests");
    assert!(status.success());
    std::fs::read(image).unwrap()
}

fn tar_image(tree: &Tree, dir: &Path, name: &str) -> Vec<u8> {
    let image = dir.join(format!("{name}.tar"));
    testing::tar_image(tree, &dir.join(format!("{name}-tar")), &image);
    std::fs::read(image).unwrap()
}

/// Old and new trees: gzip files edited, renamed, moved, deleted and added,
/// plus plain files, made by the given makers.
fn trees(seed: u64, makers: &[Maker]) -> (Tree, Tree) {
    let mut rng = Rng::new(seed);
    let mut old = Tree::new();
    let mut new = Tree::new();
    for (i, &maker) in makers.iter().enumerate() {
        let n = 20_000 + rng.below(40_000) as usize;
        let body = text(&mut rng, n);
        let mut edited = text(&mut rng, 300);
        edited.extend_from_slice(&body);
        let kept = text(&mut rng, 5000);
        old.push((
            format!("usr/share/doc/pkg{i}/changelog.gz"),
            compress(&body, maker),
        ));
        new.push((
            format!("usr/share/doc/pkg{i}/changelog.gz"),
            compress(&edited, maker),
        ));
        // Renamed package: the folder changes, the content is edited.
        old.push((
            format!("usr/share/doc/libfoo{i}a/NEWS.gz"),
            compress(&kept, maker),
        ));
        let mut news = kept.clone();
        news.extend_from_slice(b"\nnew release\n");
        new.push((
            format!("usr/share/doc/libfoo{i}b/NEWS.gz"),
            compress(&news, maker),
        ));
        // Deleted, and added.
        let gone = text(&mut rng, 3000);
        let added = text(&mut rng, 9000);
        old.push((
            format!("usr/share/man/man1/gone{i}.1.gz"),
            compress(&gone, maker),
        ));
        new.push((
            format!("usr/share/man/man1/added{i}.1.gz"),
            compress(&added, maker),
        ));
        // Unchanged plain and gzip files, and a moved plain file.
        let plain = rng.bytes(10_000);
        old.push((format!("usr/bin/tool{i}"), plain.clone()));
        new.push((format!("usr/lib/tool{i}"), plain));
    }
    (old, new)
}

fn options() -> DeltaOptions {
    DeltaOptions {
        segment_len: 1 << 20,
        ..DeltaOptions::default()
    }
}

/// Generates, checks the header's kinds flag against `expect_deflate`, and
/// applies.
fn round_trip(old: &[u8], new: &[u8], expect_deflate: bool) -> delta_core::Delta {
    let delta = generate(old, new, &options(), &Serial).unwrap();
    let bytes = delta.to_vec();
    let index = read_index(&mut &bytes[..], &Limits::default()).unwrap();
    let kinds = index.header.flags & FLAG_SEGMENT_KINDS != 0;
    assert_eq!(kinds, expect_deflate, "{:?}", delta.content);
    // Chunked deflate segments (version 5) only where a whole one cannot
    // be: version 3 appliers take the rest.
    let chunked = index.header.flags & FLAG_DEFLATE_CHUNKS != 0;
    let version = match (kinds, chunked) {
        (_, true) => 5,
        (true, false) => 3,
        (false, false) => 2,
    };
    assert_eq!(index.header.version(), version);
    let out = apply_slice(old, &bytes, &Limits::default()).unwrap();
    assert!(out == new, "the delta does not rebuild the new image");
    delta
}

#[test]
fn ext4_images_rebuild_their_gzip_files_from_content() {
    let dir = tempfile::tempdir().unwrap();
    let makers = [
        Maker::Gnu(9),
        Maker::Gnu(6),
        Maker::Gnu(1),
        Maker::Zlib(9),
        Maker::Zlib(6),
    ];
    let (old_tree, new_tree) = trees(1, &makers);
    let old = ext4_image(&old_tree, dir.path(), "old");
    let new = ext4_image(&new_tree, dir.path(), "new");
    let with = round_trip(&old, &new, true);
    assert_eq!(with.content.container, "ext4");
    // Small streams are rebuilt whole: a version 3 delta.
    assert_eq!(with.header.flags & FLAG_DEFLATE_CHUNKS, 0);
    // Edited, renamed and added files; at least the edits of every maker.
    assert!(
        with.content.deflate_segments >= makers.len() as u64 * 2,
        "{:?}",
        with.content
    );
    let plain = generate(
        &old,
        &new,
        &DeltaOptions {
            deflate: false,
            ..options()
        },
        &Serial,
    )
    .unwrap()
    .to_vec();
    let bytes = with.to_vec();
    assert!(
        bytes.len() < plain.len(),
        "deflate segments: {} bytes, without: {}",
        bytes.len(),
        plain.len()
    );
}

#[test]
fn the_report_shares_every_payload_byte_out_over_the_files() {
    let dir = tempfile::tempdir().unwrap();
    let (old_tree, new_tree) = trees(5, &[Maker::Gnu(9), Maker::Zlib(6)]);
    let old = ext4_image(&old_tree, dir.path(), "old");
    let new = ext4_image(&new_tree, dir.path(), "new");
    let options = DeltaOptions {
        report: true,
        ..options()
    };
    let delta = generate(&old, &new, &options, &Serial).unwrap();
    let report = delta.report.clone().unwrap();
    let payload: u64 = delta.segments.iter().map(|s| s.payload_len).sum();
    assert_eq!(report.payload_bytes, payload);
    assert_eq!(
        report.files.iter().map(|f| f.delta_bytes).sum::<u64>(),
        payload
    );
    assert_eq!(report.table_bytes + payload, delta.to_vec().len() as u64);
    let get = |path: &str| report.files.iter().find(|f| f.path == path);
    let edited = get("/usr/share/doc/pkg0/changelog.gz").unwrap();
    assert_eq!(edited.how, delta_core::How::Deflate);
    assert_eq!(
        edited.partner.as_deref(),
        Some("/usr/share/doc/pkg0/changelog.gz")
    );
    let renamed = get("/usr/share/doc/libfoo0b/NEWS.gz").unwrap();
    assert_eq!(
        renamed.partner.as_deref(),
        Some("/usr/share/doc/libfoo0a/NEWS.gz")
    );
    // Costliest first; the moved plain file costs next to nothing.
    assert!(report
        .files
        .windows(2)
        .all(|w| w[0].delta_bytes >= w[1].delta_bytes));
    assert!(
        get("/usr/lib/tool0").is_none_or(|f| f.delta_bytes < 200),
        "{report:?}"
    );
}

/// A changelog of megabytes (strace's is 3.3 MB inflated) is a deflate
/// segment rebuilt in chunks: the applier holds one chunk of it and a
/// window of its content at a time, not the whole content.
#[test]
fn a_changelog_of_megabytes_is_rebuilt_in_chunks() {
    use delta_format::kind::{self, Deflate, Rebuild};
    let dir = tempfile::tempdir().unwrap();
    let mut rng = Rng::new(21);
    let body = text(&mut rng, 3_300_000);
    let mut edited = text(&mut rng, 2_000);
    edited.extend_from_slice(&body);
    let path = "usr/share/doc/strace/changelog.gz".to_string();
    let old_tree = vec![(path.clone(), compress(&body, Maker::Gnu(9)))];
    let new_tree = vec![(path, compress(&edited, Maker::Gnu(9)))];
    let gz_len = new_tree[0].1.len();
    let old = ext4_image(&old_tree, dir.path(), "old");
    let new = ext4_image(&new_tree, dir.path(), "new");
    let delta = round_trip(&old, &new, true);
    assert_eq!(delta.content.deflate_segments, 1, "{:?}", delta.content);
    assert_eq!(delta.header.version(), 5);
    let (entry, payload) = (delta.segments.iter().zip(&delta.payloads))
        .find(|(_, p)| p[0] == kind::DEFLATE_CHUNKS)
        .expect("a chunked deflate segment");
    let parts = Deflate::decode(payload[0], &payload[1..], 0, entry, old.len() as u64, 0).unwrap();
    let Rebuild::Chunks { chunks, .. } = &parts.rebuild else {
        unreachable!()
    };
    assert!(chunks.len() >= 2, "{} chunks", chunks.len());
    assert_eq!(parts.new_raw_len, edited.len() as u64);
    // The old content (the prefix), a window and the largest chunk: within
    // what any segment may take.
    assert!(
        entry.memory() <= delta_core::SEGMENT_MEMORY,
        "{} bytes of memory",
        entry.memory()
    );
    let bytes = delta.to_vec().len();
    assert!(
        bytes < gz_len / 20,
        "{bytes} bytes for a {gz_len}-byte file"
    );
}

#[test]
fn tar_archives_with_members_reordered() {
    let dir = tempfile::tempdir().unwrap();
    let (old_tree, mut new_tree) = trees(2, &[Maker::Gnu(9), Maker::Zlib(9)]);
    new_tree.reverse();
    let old = tar_image(&old_tree, dir.path(), "old");
    let new = tar_image(&new_tree, dir.path(), "new");
    let delta = round_trip(&old, &new, true);
    assert_eq!(delta.content.container, "tar");
}

#[test]
fn damaged_and_unknown_images_fall_back_to_bytes() {
    let dir = tempfile::tempdir().unwrap();
    let (old_tree, new_tree) = trees(3, &[Maker::Gnu(9)]);
    let old = ext4_image(&old_tree, dir.path(), "old");
    let new = ext4_image(&new_tree, dir.path(), "new");
    // A corrupted superblock (its magic) in the old image.
    let mut bad = old.clone();
    bad[1080] ^= 0xff;
    let delta = round_trip(&bad, &new, false);
    assert!(
        delta.content.container.starts_with("none: old image"),
        "{:?}",
        delta.content
    );
    // A truncated new image.
    let cut = &new[..new.len() / 3];
    let delta = round_trip(&old, cut, false);
    assert!(
        delta.content.container.starts_with("none: new image"),
        "{:?}",
        delta.content
    );
    // Not a file system at all.
    let mut rng = Rng::new(9);
    let (a, b) = (rng.bytes(300_000), rng.bytes(300_000));
    let delta = round_trip(&a, &b, false);
    assert!(
        delta.content.container.starts_with("none"),
        "{:?}",
        delta.content
    );
}

#[test]
fn gzip_files_that_do_not_round_trip_stay_bytes() {
    let dir = tempfile::tempdir().unwrap();
    let mut rng = Rng::new(4);
    let body = text(&mut rng, 30_000);
    let mut edited = b"one more line\n".to_vec();
    edited.extend_from_slice(&body);
    // Two gzip members in one file: the first stream ends before the
    // file's trailer, so it is not one deflate stream.
    let twice = |data: &[u8]| {
        let mut out = compress(data, Maker::Gnu(9));
        out.extend(compress(b"second member", Maker::Gnu(9)));
        out
    };
    let old_tree = vec![("a/changelog.gz".to_string(), twice(&body))];
    let new_tree = vec![("a/changelog.gz".to_string(), twice(&edited))];
    let old = ext4_image(&old_tree, dir.path(), "old");
    let new = ext4_image(&new_tree, dir.path(), "new");
    let delta = round_trip(&old, &new, false);
    assert_eq!(delta.content.deflate_candidates, 1, "{:?}", delta.content);
    assert_eq!(delta.content.deflate_segments, 0);
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 4, ..ProptestConfig::default() })]

    /// Random makers and seeds: every delta rebuilds the new image.
    #[test]
    fn random_ext4_trees_round_trip(seed in 10u64..10_000, picks in proptest::collection::vec(0usize..4, 1..4)) {
        let all = [Maker::Gnu(9), Maker::Gnu(4), Maker::Zlib(9), Maker::Zlib(1)];
        let makers: Vec<_> = picks.iter().map(|&i| all[i]).collect();
        let dir = tempfile::tempdir().unwrap();
        let (old_tree, new_tree) = trees(seed, &makers);
        let old = ext4_image(&old_tree, dir.path(), "old");
        let new = ext4_image(&new_tree, dir.path(), "new");
        round_trip(&old, &new, true);
    }
}
