//! Generator hot paths: index build, matching (planning), the search for
//! new content repeated across segments, and residual encoding (with whole
//! and with gathered windows), on inputs
//! users meet: a small edit, an append, unrelated data, long repeats, and a
//! shifted image.

use criterion::{criterion_group, criterion_main, BatchSize, BenchmarkId, Criterion, Throughput};
use delta_core::internal::{
    copy_repeats, encode_segment, plan_segment, BlockIndex, CopiedRuns, Produced, SegmentPlan,
    WindowLayout,
};
use delta_core::testing::{mutate, Rng};
use delta_core::{DiffOptions, EncodeOptions, Serial};
use delta_format::Op;
use std::hint::black_box;

const SIZES: [usize; 2] = [1 << 20, 8 << 20];

fn image(len: usize, seed: u64) -> Vec<u8> {
    let mut rng = Rng::new(seed);
    let mut out = rng.text(len / 2);
    out.extend(rng.bytes(len - len / 2));
    out
}

fn pairs(len: usize) -> Vec<(&'static str, Vec<u8>, Vec<u8>)> {
    let old = image(len, 1);
    let mut rng = Rng::new(2);
    let small_edit = mutate(&old, &mut rng, 4);
    let mut append = old.clone();
    append.extend(rng.text(len / 8));
    let unrelated = image(len, 3);
    let repeats = b"0123456789abcdef".repeat(len / 16);
    let mut shifted = rng.bytes(1237);
    shifted.extend_from_slice(&old[..len - 1237]);
    vec![
        ("small-edit", old.clone(), small_edit),
        ("append", old.clone(), append),
        ("unrelated", old.clone(), unrelated),
        ("long-repeats", repeats.clone(), repeats),
        ("shifted", old, shifted),
    ]
}

fn index_build(c: &mut Criterion) {
    let mut group = c.benchmark_group("index_build");
    for len in SIZES {
        let old = image(len, 1);
        group.throughput(Throughput::Bytes(len as u64));
        group.bench_with_input(BenchmarkId::from_parameter(len), &old, |b, old| {
            b.iter(|| BlockIndex::build(black_box(old), 4096, &Serial))
        });
    }
    group.finish();
}

fn matching(c: &mut Criterion) {
    let mut group = c.benchmark_group("matching");
    let options = DiffOptions::default();
    for len in SIZES {
        for (name, old, new) in pairs(len) {
            let index = BlockIndex::build(&old, options.block_size, &Serial);
            group.throughput(Throughput::Bytes(new.len() as u64));
            group.bench_with_input(BenchmarkId::new(name, len), &new, |b, new| {
                b.iter(|| plan_segment(&old, black_box(new), 0..new.len(), &index, &options))
            });
        }
    }
    group.finish();
}

/// New content in 1 MiB literal segments, a 64 KiB file repeated once in
/// every segment at an odd offset: the rolling search runs over every
/// literal byte.
fn repeat_copies(c: &mut Criterion) {
    let mut group = c.benchmark_group("repeat_copies");
    for len in SIZES {
        let mut rng = Rng::new(4);
        let mut new = rng.bytes(len);
        let file = rng.bytes(64 << 10);
        let unit = 1 << 20;
        for start in (0..len).step_by(unit) {
            let at = start + 12_345;
            new[at..at + file.len()].copy_from_slice(&file);
        }
        let segments: Vec<_> = (0..len)
            .step_by(unit)
            .map(|start| {
                let plan = SegmentPlan {
                    ops: vec![Op::Literal { len: unit as u64 }],
                    literal: new[start..start + unit].to_vec(),
                    ..SegmentPlan::default()
                };
                (start..start + unit, plan)
            })
            .collect();
        group.throughput(Throughput::Bytes(len as u64));
        group.bench_with_input(
            BenchmarkId::from_parameter(len),
            &segments,
            |b, segments| {
                b.iter_batched(
                    || segments.clone(),
                    |segments| copy_repeats(segments, black_box(&new), &[], &Serial),
                    BatchSize::LargeInput,
                )
            },
        );
    }
    group.finish();
}

fn residual_encoding(c: &mut Criterion) {
    let mut group = c.benchmark_group("residual_encoding");
    group.sample_size(10);
    let options = DiffOptions::default();
    let len = 1 << 20;
    for (name, old, new) in pairs(len) {
        let index = BlockIndex::build(&old, options.block_size, &Serial);
        let plan = plan_segment(&old, &new, 0..new.len(), &index, &options);
        let copied = CopiedRuns::from_plans([&plan]);
        // Stored in the entry only: any value times the same.
        let digest = [0; 32];
        for (level, layout) in [
            (3, WindowLayout::Contiguous),
            (19, WindowLayout::Contiguous),
            (19, WindowLayout::Gathered(&copied)),
        ] {
            let windows = match layout {
                WindowLayout::Contiguous => "",
                WindowLayout::Gathered(_) => "-gathered",
            };
            group.throughput(Throughput::Bytes(new.len() as u64));
            group.bench_with_input(
                BenchmarkId::new(format!("{name}/level-{level}{windows}"), len),
                &plan,
                |b, plan| {
                    b.iter(|| {
                        let options = EncodeOptions {
                            level,
                            ..EncodeOptions::default()
                        };
                        let produced = Produced {
                            bytes: &new,
                            digest,
                        };
                        encode_segment(&old, produced, black_box(plan), layout, &options, None)
                            .unwrap()
                    })
                },
            );
        }
    }
    group.finish();
}

criterion_group!(
    benches,
    index_build,
    matching,
    repeat_copies,
    residual_encoding
);
criterion_main!(benches);
