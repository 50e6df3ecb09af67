//! The applier's steps of a deflate segment, on a changelog-like text of
//! 1 MiB compressed with zlib at level 9: inflating a source stream
//! (`inflate_exact`) and re-deflating the content bit-exactly from its
//! preflate corrections (`rebuild`); throughput in bytes of stream.

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use delta_core::testing::Rng;
use std::hint::black_box;
use std::io::Write;

fn bench(c: &mut Criterion) {
    let mut rng = Rng::new(7);
    let mut text = Vec::new();
    let mut entry = 0u64;
    while text.len() < 1 << 20 {
        entry += 1;
        let line = rng.text(200);
        text.extend_from_slice(
            format!("pkg (1.{entry}) unstable; urgency=medium\n\n  * ").as_bytes(),
        );
        text.extend_from_slice(&line);
        text.extend_from_slice(b"\n\n -- Maintainer <m@example.org>  Mon, 01 Jan 2024\n\n");
    }
    let mut deflater = flate2::write::DeflateEncoder::new(Vec::new(), flate2::Compression::best());
    deflater.write_all(&text).unwrap();
    let stream = deflater.finish().unwrap();
    let (chunk, _) =
        preflate_rs::preflate_whole_deflate_stream(&stream, &Default::default()).unwrap();
    let corrections = chunk.corrections;
    assert_eq!(delta_core::rebuild(&text, &corrections).unwrap(), stream);

    let mut group = c.benchmark_group("deflate");
    group.throughput(Throughput::Bytes(stream.len() as u64));
    group.sample_size(20);
    let mut out = vec![0; text.len()];
    group.bench_function("inflate_exact", |b| {
        b.iter(|| delta_core::inflate_exact(black_box(&stream), &mut out).unwrap())
    });
    group.bench_function("rebuild", |b| {
        b.iter(|| delta_core::rebuild(black_box(&text), black_box(&corrections)).unwrap())
    });
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
