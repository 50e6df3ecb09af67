//! Format hot paths: decoding a segment table and walking an op stream.

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use delta_format::{stream, Header, Index, Limits, Op, SegmentEntry, HEADER_LEN};
use std::hint::black_box;

fn table(c: &mut Criterion) {
    let mut group = c.benchmark_group("decode_table");
    for count in [16u64, 4096] {
        let entry = SegmentEntry {
            new_len: 1 << 20,
            payload_len: 100,
            stream_len: 100,
            literal_len: 1 << 20,
            ..SegmentEntry::default()
        };
        let header = Header {
            flags: 0,
            old_len: 1 << 40,
            new_len: count << 20,
            old_digest: [0; 32],
            new_digest: [0; 32],
            block_size: 4096,
            zstd_level: 19,
            max_segment_len: 1 << 20,
            apply_memory: 200,
            segment_count: count,
        };
        let bytes = Index::encode(&header, &vec![entry; count as usize]);
        group.throughput(Throughput::Bytes(bytes.len() as u64));
        group.bench_with_input(BenchmarkId::from_parameter(count), &bytes, |b, bytes| {
            b.iter(|| {
                let limits = Limits::default();
                let header = Header::decode(black_box(bytes), &limits).unwrap();
                Index::decode(header, &bytes[..HEADER_LEN], &bytes[HEADER_LEN..], &limits).unwrap()
            })
        });
    }
    group.finish();
}

fn ops(c: &mut Criterion) {
    let mut group = c.benchmark_group("decode_ops");
    let ops: Vec<Op> = (0..100_000u64)
        .map(|i| match i % 3 {
            0 => Op::Copy {
                src: i * 4096,
                len: 4096,
            },
            1 => Op::Literal { len: 16 },
            _ => Op::Zero { len: 4096 },
        })
        .collect();
    let literal = vec![7u8; 16 * 33_334];
    let bytes = stream::encode(&ops, &[], &literal);
    group.throughput(Throughput::Bytes(bytes.len() as u64));
    group.bench_function(BenchmarkId::from_parameter(ops.len()), |b| {
        b.iter(|| {
            let mut decoder = stream::Decoder::new(black_box(&bytes), 1 << 40).unwrap();
            while decoder.next_instruction().unwrap().is_some() {}
            decoder.finish().unwrap()
        })
    });
    group.finish();
}

criterion_group!(benches, table, ops);
criterion_main!(benches);
