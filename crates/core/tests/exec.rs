//! Executable segments on real ELF files: the fixtures of `testdata/elf`
//! (two builds of small C programs and a library, for x86-64, AArch64 and
//! ARM; see its README), each pair made with and without the projection
//! and re-applied; random edits of them; and files that are not what their
//! header says.

use delta_core::internal::{apply_one_segment, exec_file_segment};
use delta_format::SegmentEntry;
use proptest::prelude::*;
use std::path::PathBuf;

fn fixtures() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../testdata/elf/out")
}

fn read(path: &str) -> Vec<u8> {
    let path = fixtures().join(path);
    std::fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// Applies one executable segment to `old`, as a delta's first segment.
fn apply(old: &[u8], entry: &SegmentEntry, payload: &[u8]) -> Result<Vec<u8>, String> {
    apply_one_segment(old, entry, payload).map_err(|e| e.to_string())
}

/// The payload size of `old` -> `new`, with and without the projection,
/// each checked to rebuild `new` exactly.
fn sizes(old: &[u8], new: &[u8]) -> [usize; 2] {
    [false, true].map(|transform| {
        let (entry, payload) = exec_file_segment(old, new, transform)
            .expect("encode")
            .expect("small files fit a segment's memory");
        let out = apply(old, &entry, &payload).expect("apply");
        assert!(out == new, "transform={transform}: rebuilt bytes differ");
        payload.len()
    })
}

/// Every fixture pair of `arch`: `(name, a, b)`.
fn pairs(arch: &str) -> Vec<(String, Vec<u8>, Vec<u8>)> {
    let mut names: Vec<String> = std::fs::read_dir(fixtures().join(arch))
        .expect("fixtures")
        .filter_map(|e| {
            let name = e.ok()?.file_name().into_string().ok()?;
            let stem = name
                .strip_suffix("-a-stripped")
                .or(name.strip_suffix("-a"))?;
            let suffix = if name.ends_with("-stripped") {
                "-stripped"
            } else {
                ""
            };
            Some(format!("{stem}|{suffix}"))
        })
        .collect();
    names.sort();
    names
        .into_iter()
        .map(|key| {
            let (stem, suffix) = key.split_once('|').unwrap();
            let a = read(&format!("{arch}/{stem}-a{suffix}"));
            let b = read(&format!("{arch}/{stem}-b{suffix}"));
            (format!("{arch}/{stem}{suffix}"), a, b)
        })
        .collect()
}

#[test]
fn projection_shrinks_rebuilt_code() {
    for arch in ["x86_64", "aarch64", "armhf"] {
        let (mut plain, mut projected) = (0, 0);
        for (name, a, b) in pairs(arch) {
            let [without, with] = sizes(&a, &b);
            eprintln!("{name}: {without} -> {with}");
            plain += without;
            projected += with;
        }
        // Every pair rebuilds either way; together the projection must save
        // bytes (1-5% on these small programs, whose second build changes
        // much of their code; a third on os-minor's rebuilt libraries).
        assert!(
            projected < plain,
            "{arch}: {projected} bytes projected against {plain} without"
        );
    }
}

#[test]
fn files_that_are_not_what_their_header_says_rebuild() {
    let good = read("x86_64/calc-b-stripped");
    for bad in [
        "elf-header-garbage",
        "elf-truncated",
        "aarch64-says-x86-code",
    ] {
        let bad = read(&format!("bad/{bad}"));
        // As the old partner, as the new file, and against itself.
        sizes(&bad, &good);
        sizes(&good, &bad);
        sizes(&bad, &bad);
    }
}

#[test]
fn a_damaged_payload_is_refused() {
    let a = read("x86_64/libtally.so-a-stripped");
    let b = read("x86_64/libtally.so-b-stripped");
    let (entry, payload) = exec_file_segment(&a, &b, true).unwrap().unwrap();
    let mut flipped = payload.clone();
    let last = flipped.len() - 1;
    flipped[last] ^= 1;
    let err = apply(&a, &entry, &flipped).unwrap_err();
    assert!(err.contains("payload"), "{err}");
    // Another old file: the rebuilt bytes fail their digest.
    let err = apply(&b, &entry, &payload).unwrap_err();
    assert!(err.contains("digest") || err.contains("segment"), "{err}");
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(24))]

    /// Random edits of a fixture (overwrites, insertions, deletions) still
    /// rebuild exactly, whatever they do to its code and headers.
    #[test]
    fn random_edits_round_trip(
        pick in 0usize..4,
        edits in prop::collection::vec((any::<u16>(), 0u8..3, any::<u8>(), 1usize..64), 1..12),
    ) {
        let name = [
            "x86_64/calc-a-stripped",
            "aarch64/tally-a-stripped",
            "x86_64/libtally.so-a",
            "armhf/calc-a-stripped",
        ][pick];
        let old = read(name);
        let mut new = old.clone();
        for (at, how, byte, len) in edits {
            let at = usize::from(at) % new.len();
            let end = (at + len).min(new.len());
            match how {
                0 => new[at..end].fill(byte),
                1 => { new.splice(at..at, std::iter::repeat_n(byte, len)); }
                _ => { new.drain(at..end); }
            }
        }
        sizes(&old, &new);
    }
}
