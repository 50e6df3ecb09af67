//! Applier hot path: one segment decoded, patched and hashed, per kind of
//! content (mostly copies, edits, unrelated data, zeros).

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use delta_core::internal::NullSink;
use delta_core::testing::{mutate, Rng};
use delta_core::{apply_slice, diff_slices, DeltaOptions, EncodeOptions, Patcher, SegmentRef};
use delta_format::Limits;
use std::hint::black_box;

fn apply_segments(c: &mut Criterion) {
    let mut group = c.benchmark_group("apply");
    let len = 8 << 20;
    let mut rng = Rng::new(1);
    let mut old = rng.text(len / 2);
    old.extend(rng.bytes(len / 2));
    let edited = mutate(&old, &mut rng, 8);
    let unrelated = rng.text(len);
    let zeros = vec![0u8; len];
    let options = DeltaOptions {
        encode: EncodeOptions {
            level: 3,
            ..EncodeOptions::default()
        },
        ..DeltaOptions::default()
    };
    for (name, new) in [
        ("small-edit", edited),
        ("unrelated", unrelated),
        ("zeros", zeros),
    ] {
        let delta = diff_slices(&old, &new, &options).unwrap();
        assert_eq!(apply_slice(&old, &delta, &Limits::default()).unwrap(), new);
        let index = delta_format::read_index(&mut &delta[..], &Limits::default()).unwrap();
        group.throughput(Throughput::Bytes(new.len() as u64));
        group.bench_with_input(BenchmarkId::new(name, len), &delta, |b, delta| {
            let mut patcher = Patcher::new();
            b.iter(|| {
                for i in 0..index.segments.len() {
                    let seg = SegmentRef::of(&index, i);
                    let start = seg.payload_offset as usize;
                    let payload = &delta[start..start + seg.entry.payload_len as usize];
                    patcher
                        .apply_segment(&old[..], seg, black_box(payload), &mut NullSink)
                        .unwrap();
                }
            })
        });
    }
    group.finish();
}

criterion_group!(benches, apply_segments);
criterion_main!(benches);
