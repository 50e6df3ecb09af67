//! `apply(old, gen(old, new)) == new` on random and edge-case pairs.

use delta_core::testing::{edge_sizes, mutate, Rng};
use delta_core::{apply_slice, diff_slices, DeltaOptions, DiffOptions, EncodeOptions};
use proptest::prelude::*;

fn options(block_size: usize, segment_len: usize) -> DeltaOptions {
    DeltaOptions {
        diff: DiffOptions {
            block_size,
            max_reference: 64 * 1024,
        },
        encode: EncodeOptions {
            level: 3,
            ..EncodeOptions::default()
        },
        segment_len,
        full: false,
        migration: false,
        // Merging on (up to 4 units) or off depending on the unit size.
        merge_len: if segment_len < 4096 {
            segment_len
        } else {
            segment_len * 4
        },
        copy_new: true,
        window_list: true,
        deflate: true,
        lzma: true,
        exec: true,
        report: true,
    }
}

fn round_trip(old: &[u8], new: &[u8], opts: &DeltaOptions) {
    let delta = diff_slices(old, new, opts).expect("diff");
    let out = apply_slice(old, &delta, &Default::default()).expect("apply");
    assert!(
        out == new,
        "round trip differs: old {} new {}",
        old.len(),
        new.len()
    );
    let full = DeltaOptions {
        full: true,
        ..opts.clone()
    };
    let delta = diff_slices(old, new, &full).expect("full diff");
    assert!(apply_slice(&[], &delta, &Default::default()).expect("full apply") == new);
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    #[test]
    fn random_edits_round_trip(
        seed: u64,
        len in 0usize..200_000,
        edits in 0usize..12,
        block in prop::sample::select(vec![64usize, 512, 4096]),
        segment in prop::sample::select(vec![1000usize, 65536, 4 << 20]),
        window_list: bool,
    ) {
        let mut rng = Rng::new(seed);
        let mut old = rng.text(len / 2);
        old.extend(rng.bytes(len - len / 2));
        let new = mutate(&old, &mut rng, edits);
        let opts = DeltaOptions {
            window_list,
            ..options(block, segment)
        };
        round_trip(&old, &new, &opts);
    }
}

#[test]
fn edge_cases_round_trip() {
    let block = 4096;
    let opts = options(block, 4 << 20);
    let mut rng = Rng::new(7);
    let sizes = edge_sizes(block);
    for &a in &sizes {
        for &b in &sizes {
            let old = rng.bytes(a);
            let unrelated = rng.bytes(b);
            round_trip(&old, &unrelated, &opts);
            let zeros = vec![0u8; b];
            round_trip(&old, &zeros, &opts);
        }
        let old = rng.bytes(a);
        round_trip(&old, &old, &opts);
        round_trip(&[], &old, &opts);
        round_trip(&old, &[], &opts);
    }
}

#[test]
fn shifted_data_becomes_copies() {
    let mut rng = Rng::new(11);
    let old = rng.bytes(1 << 20);
    let mut new = rng.bytes(333);
    new.extend_from_slice(&old);
    let delta = diff_slices(&old, &new, &options(4096, 4 << 20)).unwrap();
    assert!(
        delta.len() < 2000,
        "delta of a shifted image is {} bytes",
        delta.len()
    );
}

#[test]
fn new_content_repeated_in_later_segments_is_copied_not_resent() {
    // A new 48 KiB "file" (in no old image) at 4 KiB-aligned offsets of
    // three 256 KiB segments.
    let mut rng = Rng::new(12);
    let old = rng.bytes(1 << 20);
    let mut new = old.clone();
    let file = rng.bytes(48 << 10);
    for at in [8192, (256 << 10) + 40960, (768 << 10) + 4096] {
        new[at..at + file.len()].copy_from_slice(&file);
    }
    let with = DeltaOptions {
        merge_len: 256 << 10,
        ..options(4096, 256 << 10)
    };
    let without = DeltaOptions {
        copy_new: false,
        ..with.clone()
    };
    let small = diff_slices(&old, &new, &with).unwrap();
    let large = diff_slices(&old, &new, &without).unwrap();
    // Random bytes do not compress: two of the three copies are not sent.
    assert!(
        small.len() + 2 * file.len() - 2048 < large.len(),
        "with COPY_NEW {} bytes, without {}",
        small.len(),
        large.len()
    );
    assert_eq!(apply_slice(&old, &small, &Default::default()).unwrap(), new);
    assert_eq!(apply_slice(&old, &large, &Default::default()).unwrap(), new);
}
