//! The applier's steps of a deflate segment, on changelog-like texts of
//! 1 MiB and 16 KiB (most Debian changelogs are smaller) compressed with
//! zlib at level 9: inflating a source stream (`inflate_exact`) and
//! re-deflating the content bit-exactly from its preflate corrections, in
//! this process (`rebuild`, what the generator does) and in the applier's
//! bounded worker process (`rebuild_sandboxed`: the kernel limits set for
//! each rebuild, the text and the stream through a socket; the worker is
//! forked once); throughput in bytes of stream. A 3 MiB text, more than a
//! deflate stream is rebuilt at once, is rebuilt in chunks
//! (`rebuild_chunks`, `rebuild_chunks_sandboxed`), as version 5 segments
//! are (GNU gzip's stream of it).

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use delta_apply::redeflate::Sandboxed;
use delta_core::testing::Rng;
use delta_core::Redeflate;
use std::hint::black_box;
use std::io::Write;

fn bench(c: &mut Criterion) {
    for (name, len) in [("1MiB", 1 << 20), ("16KiB", 16 << 10)] {
        bench_text(c, name, &changelog(len));
    }
    bench_chunks(c, &entries(3 << 20));
}

/// A changelog-like text of at least `len` bytes with entries of varied
/// length (as `crates/core/tests/deflate.rs` makes them).
fn entries(len: usize) -> Vec<u8> {
    let mut rng = Rng::new(21);
    let mut text = Vec::new();
    let mut entry = 0u64;
    while text.len() < len {
        entry += 1;
        let n = 40 + rng.below(200) as usize;
        let words = rng.text(n);
        text.extend_from_slice(
            format!(
                "pkg ({entry}.{}) unstable; urgency=medium\n\n  * ",
                rng.below(10)
            )
            .as_bytes(),
        );
        text.extend_from_slice(&words);
        let day = rng.below(9) + 1;
        text.extend_from_slice(
            format!("\n\n -- Maintainer <m@example.org>  Mon, 0{day} Jan 2024\n\n").as_bytes(),
        );
    }
    text
}

/// GNU gzip's raw stream of `text` (`gzip -9n`, as Debian compresses its
/// changelogs): preflate-rs cuts it into chunks, where it fails on
/// miniz_oxide's streams of this text.
fn gnu_gzip(text: &[u8]) -> Vec<u8> {
    use std::process::{Command, Stdio};
    let mut child = Command::new("gzip")
        .arg("-9n")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .expect("GNU gzip is needed for this bench");
    let mut stdin = child.stdin.take().unwrap();
    let data = text.to_vec();
    let writer = std::thread::spawn(move || stdin.write_all(&data).unwrap());
    let out = child.wait_with_output().unwrap();
    writer.join().unwrap();
    out.stdout[10..out.stdout.len() - 8].to_vec()
}

fn bench_chunks(c: &mut Criterion, text: &[u8]) {
    let stream = gnu_gzip(text);
    let (raw, chunks) =
        delta_core::internal::chunks_of(&stream).expect("the text cuts into chunks");
    assert!(raw == text && chunks.len() > 1);
    let sandbox = Sandboxed::default();
    let rebuild = |redeflate: &dyn Redeflate| {
        let mut rebuilder = redeflate.chunks(raw.len() as u64);
        let (mut at, mut out) = (0, 0);
        for chunk in &chunks {
            let content = &raw[at..at + chunk.raw_len];
            let stream = rebuilder
                .next(content, &chunk.corrections, chunk.stream_len)
                .unwrap();
            at += chunk.raw_len;
            out += stream.len();
        }
        out
    };
    assert_eq!(rebuild(&delta_core::InProcess), stream.len());
    let mut group = c.benchmark_group("deflate/3MiB");
    group.throughput(Throughput::Bytes(stream.len() as u64));
    group.sample_size(10);
    group.bench_function("rebuild_chunks", |b| {
        b.iter(|| rebuild(black_box(&delta_core::InProcess)))
    });
    group.bench_function("rebuild_chunks_sandboxed", |b| {
        b.iter(|| rebuild(black_box(&sandbox)))
    });
    group.finish();
}

/// A changelog-like text of at least `len` bytes.
fn changelog(len: usize) -> Vec<u8> {
    let mut rng = Rng::new(7);
    let mut text = Vec::new();
    let mut entry = 0u64;
    while text.len() < len {
        entry += 1;
        let line = rng.text(200);
        text.extend_from_slice(
            format!("pkg (1.{entry}) unstable; urgency=medium\n\n  * ").as_bytes(),
        );
        text.extend_from_slice(&line);
        text.extend_from_slice(b"\n\n -- Maintainer <m@example.org>  Mon, 01 Jan 2024\n\n");
    }
    text
}

fn bench_text(c: &mut Criterion, name: &str, text: &[u8]) {
    let mut deflater = flate2::write::DeflateEncoder::new(Vec::new(), flate2::Compression::best());
    deflater.write_all(text).unwrap();
    let stream = deflater.finish().unwrap();
    let (chunk, _) =
        preflate_rs::preflate_whole_deflate_stream(&stream, &Default::default()).unwrap();
    let corrections = chunk.corrections;
    assert_eq!(delta_core::rebuild(text, &corrections).unwrap(), stream);
    let sandbox = Sandboxed::default();

    let mut group = c.benchmark_group(format!("deflate/{name}"));
    group.throughput(Throughput::Bytes(stream.len() as u64));
    group.sample_size(20);
    let mut out = vec![0; text.len()];
    group.bench_function("inflate_exact", |b| {
        b.iter(|| delta_core::internal::inflate_exact(black_box(&stream), &mut out).unwrap())
    });
    group.bench_function("rebuild", |b| {
        b.iter(|| delta_core::rebuild(black_box(text), black_box(&corrections)).unwrap())
    });
    group.bench_function("rebuild_sandboxed", |b| {
        b.iter(|| {
            sandbox
                .redeflate(black_box(text), black_box(&corrections), stream.len())
                .unwrap()
        })
    });
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
