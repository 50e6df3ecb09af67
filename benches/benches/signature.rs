//! What signatures add to an apply: reading a signed table and verifying
//! it against a keyring (goal: under 1 ms), and signing at the end of gen.

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion};
use delta_core::signature::{verify, SecretKey};
use delta_format::signature::encode_block;
use delta_format::{read_index, Header, Index, Limits, SegmentEntry, FLAG_SIGNED};
use std::hint::black_box;

/// A signed delta's header, table and signature block (no payloads): 256
/// segments, as a 1 GiB image in 4 MiB segments has.
fn signed_table(keys: &[SecretKey]) -> Vec<u8> {
    let count = 256u64;
    let entry = SegmentEntry {
        new_len: 4 << 20,
        payload_len: 100,
        stream_len: 100,
        literal_len: 4 << 20,
        ..SegmentEntry::default()
    };
    let header = Header {
        flags: FLAG_SIGNED,
        old_len: 1 << 30,
        new_len: count * (4 << 20),
        block_size: 4096,
        zstd_level: 19,
        max_segment_len: 4 << 20,
        apply_memory: 200,
        segment_count: count,
        ..Header::default()
    };
    let (mut bytes, digest) = Index::encode_with_digest(&header, &vec![entry; count as usize]);
    let signatures: Vec<_> = keys.iter().map(|k| k.sign(&digest)).collect();
    bytes.extend_from_slice(&encode_block(&signatures));
    bytes
}

fn verify_signed(c: &mut Criterion) {
    let mut group = c.benchmark_group("read_and_verify_signed_table");
    for signers in [1u8, 2] {
        let keys: Vec<SecretKey> = (1..=signers)
            .map(|n| SecretKey::from_seed(&[n; 32]))
            .collect();
        // Only the last key is trusted: rotation, the costlier case.
        let trusted = vec![keys.last().unwrap().public()];
        let bytes = signed_table(&keys);
        group.bench_with_input(
            BenchmarkId::new("signatures", signers),
            &bytes,
            |b, bytes| {
                b.iter(|| {
                    let index = read_index(&mut &black_box(bytes)[..], &Limits::default()).unwrap();
                    verify(&index, &trusted).unwrap()
                })
            },
        );
    }
    group.finish();
    let key = SecretKey::from_seed(&[9; 32]);
    c.bench_function("sign_table_digest", |b| {
        b.iter(|| key.sign(black_box(&[7u8; 32])))
    });
}

criterion_group!(benches, verify_signed);
criterion_main!(benches);
