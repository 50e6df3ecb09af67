//! Executable segments: the projection of an old file's references (what
//! the applier runs on the device, and the generator on both files), on
//! this bench's own executable (x86-64 code, several MiB), masked and
//! projected; and making and applying one executable segment of the
//! `testdata/elf` fixtures (two builds of a program). Throughput in bytes
//! of the file.

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use delta_core::internal::{exec_file_segment, exec_rewrite};
use delta_core::{Patcher, SegmentRef};
use delta_format::exec::ExecArch;
use delta_format::kind::Kinds;
use std::hint::black_box;

fn fixture(name: &str) -> Vec<u8> {
    let path = format!("{}/../testdata/elf/out/{name}", env!("CARGO_MANIFEST_DIR"));
    std::fs::read(&path).unwrap_or_else(|e| panic!("{path}: {e}"))
}

fn bench(c: &mut Criterion) {
    let exe = std::fs::read(std::env::current_exe().unwrap()).unwrap();
    let points = [(0x1000, 0), (0x20000, 64), (0x80000, -128)];
    let mut group = c.benchmark_group("exec");
    group.throughput(Throughput::Bytes(exe.len() as u64));
    group.sample_size(10);
    let arch = ExecArch::X86_64 as u8;
    let mut file = exe.clone();
    println!(
        "exec/rewrite: {} references in {} bytes",
        exec_rewrite(arch, &mut file, None),
        exe.len()
    );
    group.bench_function("rewrite/mask", |b| {
        b.iter(|| {
            file.copy_from_slice(&exe);
            exec_rewrite(arch, black_box(&mut file), None)
        })
    });
    group.bench_function("rewrite/project", |b| {
        b.iter(|| {
            file.copy_from_slice(&exe);
            exec_rewrite(arch, black_box(&mut file), Some(&points))
        })
    });
    for (name, dir) in [("x86-64", "x86_64"), ("aarch64", "aarch64")] {
        let old = fixture(&format!("{dir}/calc-a"));
        let new = fixture(&format!("{dir}/calc-b"));
        group.throughput(Throughput::Bytes(new.len() as u64));
        group.bench_function(format!("make/{name}"), |b| {
            b.iter(|| exec_file_segment(black_box(&old), black_box(&new), true).unwrap())
        });
        let (entry, payload) = exec_file_segment(&old, &new, true).unwrap().unwrap();
        let seg = SegmentRef {
            index: 0,
            new_offset: 0,
            payload_offset: 0,
            entry: &entry,
            new_limit: 0,
            window_list: false,
            kinds: true,
            allowed: Kinds {
                exec: true,
                ..Kinds::default()
            },
        };
        let mut patcher = Patcher::new();
        let mut out = Vec::with_capacity(new.len());
        group.bench_function(format!("apply/{name}"), |b| {
            b.iter(|| {
                out.clear();
                patcher
                    .apply_segment(old.as_slice(), seg, black_box(&payload), &mut out)
                    .unwrap()
            })
        });
    }
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
