//! The fine matcher: the suffix sort of an old file and `fine_plan` of a
//! new version against it, on inputs users meet: a small edit, an append,
//! unrelated data and long repeats.

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use delta_core::internal::{fine_plan, suffix_array};
use delta_core::testing::{mutate, Rng};
use std::hint::black_box;

const SIZES: [usize; 2] = [256 << 10, 2 << 20];

fn file(len: usize, seed: u64) -> Vec<u8> {
    let mut rng = Rng::new(seed);
    let mut out = rng.text(len / 2);
    out.extend(rng.bytes(len - len / 2));
    out
}

fn pairs(len: usize) -> Vec<(&'static str, Vec<u8>, Vec<u8>)> {
    let old = file(len, 1);
    let mut rng = Rng::new(2);
    let small_edit = mutate(&old, &mut rng, 4);
    let mut append = old.clone();
    append.extend(rng.text(len / 16));
    let unrelated = file(len, 3);
    let repeats = b"0123456789abcdef".repeat(len / 16);
    vec![
        ("small-edit", old.clone(), small_edit),
        ("append", old.clone(), append),
        ("unrelated", old, unrelated),
        ("repeats", repeats.clone(), repeats),
    ]
}

fn suffix_sort(c: &mut Criterion) {
    let mut group = c.benchmark_group("suffix_sort");
    group.sample_size(10);
    for len in SIZES {
        let old = file(len, 1);
        group.throughput(Throughput::Bytes(len as u64));
        group.bench_with_input(BenchmarkId::new("mixed", len), &old, |b, old| {
            b.iter(|| suffix_array(black_box(old)))
        });
    }
    group.finish();
}

fn fine_planning(c: &mut Criterion) {
    let mut group = c.benchmark_group("fine_plan");
    group.sample_size(10);
    for len in SIZES {
        for (name, old, new) in pairs(len) {
            group.throughput(Throughput::Bytes(new.len() as u64));
            group.bench_with_input(BenchmarkId::new(name, len), &(old, new), |b, (old, new)| {
                b.iter(|| fine_plan(black_box(old), black_box(new)))
            });
        }
    }
    group.finish();
}

criterion_group!(benches, suffix_sort, fine_planning);
criterion_main!(benches);
