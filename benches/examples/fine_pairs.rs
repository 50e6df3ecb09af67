//! Compressed size of one new file against its old version, per matcher:
//! today's block and anchor matcher (`plan_segment` over the whole file),
//! the fine suffix-array matcher (`fine_plan`), both through
//! `encode_segment` (contiguous window, zstd level 19, no LZMA), and the
//! `bsdiff` crate's patch compressed with zstd -19, as a peer.
//!
//! ```text
//! cargo run --release -p delta-benches --example fine_pairs -- OLD NEW [OLD NEW ...]
//! ```
//!
//! `FINE_GAIN`, `FINE_APPROX`, `FINE_PENALTY`, `FINE_MIN_COPY` and `FINE_MIN_ZERO` set the
//! fine matcher's options; `NO_BSDIFF=1` skips the (slow) peer.

use delta_core::internal::{
    encode_segment, fine_plan_with, plan_segment, BlockIndex, FineOptions, Produced, SegmentPlan,
    WindowLayout,
};
use delta_core::{DiffOptions, EncodeOptions, Serial};
use std::time::Instant;

fn env_or<T: std::str::FromStr>(name: &str, default: T) -> T {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn encoded(old: &[u8], new: &[u8], plan: &SegmentPlan) -> usize {
    let produced = Produced {
        bytes: new,
        digest: [0; 32],
    };
    let options = EncodeOptions::default();
    encode_segment(
        old,
        produced,
        plan,
        WindowLayout::Contiguous,
        &options,
        None,
    )
    .expect("zstd compresses")
    .payload
    .len()
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    assert!(
        !args.is_empty() && args.len().is_multiple_of(2),
        "usage: fine_pairs OLD NEW [OLD NEW ...]"
    );
    let defaults = FineOptions::default();
    let fine_options = FineOptions {
        min_gain: env_or("FINE_GAIN", defaults.min_gain),
        min_approx_gain: env_or("FINE_APPROX", defaults.min_approx_gain),
        mismatch_penalty: env_or("FINE_PENALTY", defaults.mismatch_penalty),
        min_copy: env_or("FINE_MIN_COPY", defaults.min_copy),
        min_zero: env_or("FINE_MIN_ZERO", defaults.min_zero),
        max_reference: defaults.max_reference,
    };
    let bsdiff_too = std::env::var_os("NO_BSDIFF").is_none();
    println!("fine options: {fine_options:?}");
    println!("| new file | old | new | zstd -19 of new | today | fine | fine, penalty 1 | best of the three | bsdiff+zstd-19 | today s | fine s | bsdiff s |");
    println!("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|");
    let mut totals = [0usize; 6];
    for pair in args.chunks(2) {
        let old = std::fs::read(&pair[0]).expect("old file");
        let new = std::fs::read(&pair[1]).expect("new file");
        let plain = zstd::bulk::compress(&new, 19).expect("zstd").len();

        let t = Instant::now();
        let diff_options = DiffOptions::default();
        let index = BlockIndex::build(&old, diff_options.block_size, &Serial);
        let plan = plan_segment(&old, &new, 0..new.len(), &index, &diff_options);
        let today = encoded(&old, &new, &plan);
        let today_s = t.elapsed().as_secs_f64();

        let t = Instant::now();
        let plan = fine_plan_with(&old, &new, &fine_options);
        let fine = encoded(&old, &new, &plan);
        let fine_s = t.elapsed().as_secs_f64();
        let loose = FineOptions {
            mismatch_penalty: 1,
            ..fine_options.clone()
        };
        let fine1 = encoded(&old, &new, &fine_plan_with(&old, &new, &loose));
        let best = today.min(fine).min(fine1);

        let (bs, bs_s) = if bsdiff_too {
            let t = Instant::now();
            let mut patch = Vec::new();
            bsdiff::diff(&old, &new, &mut patch).expect("bsdiff writes to memory");
            let z = zstd::bulk::compress(&patch, 19).expect("zstd").len();
            (z, t.elapsed().as_secs_f64())
        } else {
            (0, 0.0)
        };
        for (total, n) in totals.iter_mut().zip([plain, today, fine, fine1, best, bs]) {
            *total += n;
        }
        let name = std::path::Path::new(&pair[1])
            .file_name()
            .map_or_else(|| pair[1].clone(), |n| n.to_string_lossy().into_owned());
        println!(
            "| {name} | {} | {} | {plain} | {today} | {fine} | {fine1} | {best} | {bs} | {today_s:.2} | {fine_s:.2} | {bs_s:.2} |",
            old.len(),
            new.len(),
        );
    }
    let [plain, today, fine, fine1, best, bs] = totals;
    println!("| **total** | | | {plain} | {today} | {fine} | {fine1} | {best} | {bs} | | | |");
}
