//! A new executable's segments on the device, zstd against LZMA2: applying
//! a delta whose new image adds 2 MiB of machine code (this bench's own
//! executable) to 1 MiB of text, made with LZMA segments (the default) and
//! without (`lzma: false`); throughput in bytes of new image. Also prints
//! both delta sizes.

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use delta_core::testing::Rng;
use delta_core::{apply_slice, diff_slices, DeltaOptions};
use delta_format::Limits;
use std::hint::black_box;

fn bench(c: &mut Criterion) {
    let exe = std::fs::read(std::env::current_exe().unwrap()).unwrap();
    let old = Rng::new(8).text(1 << 20);
    let mut new = old.clone();
    new.extend_from_slice(&exe[..exe.len().min(2 << 20)]);
    let mut group = c.benchmark_group("lzma");
    group.throughput(Throughput::Bytes(new.len() as u64));
    group.sample_size(10);
    for lzma in [true, false] {
        let options = DeltaOptions {
            lzma,
            ..DeltaOptions::default()
        };
        let delta = diff_slices(&old, &new, &options).unwrap();
        let name = if lzma { "apply/lzma" } else { "apply/zstd" };
        println!("{name}: delta of {} bytes", delta.len());
        group.bench_function(name, |b| {
            b.iter(|| apply_slice(black_box(&old), black_box(&delta), &Limits::default()).unwrap())
        });
    }
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
