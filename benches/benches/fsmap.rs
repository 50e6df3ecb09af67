//! Mapping the files of an ext4 image made by `mkfs.ext4 -d` (the tool must
//! be installed): a tree of 2000 files over 100 directories, sizes from a
//! fixed seed, one of them sparse.

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use std::hint::black_box;
use std::path::{Path, PathBuf};
use std::process::Command;

/// Fixed-seed xorshift.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
}

fn mkfs_ext4() -> PathBuf {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .chain(["/sbin", "/usr/sbin"].map(PathBuf::from))
        .map(|dir| dir.join("mkfs.ext4"))
        .find(|p| p.is_file())
        .expect("mkfs.ext4 (e2fsprogs) is needed to build the bench image")
}

/// Builds the tree under `root` and returns an image of `size` of it.
fn image(root: &Path, size: &str) -> Vec<u8> {
    let tree = root.join("tree");
    let mut rng = Rng(0x5eed);
    for i in 0..2000u64 {
        let dir = tree.join(format!("d{:02}", i % 100));
        std::fs::create_dir_all(&dir).unwrap();
        let len = usize::try_from(rng.next() % 40_000).unwrap();
        let data: Vec<u8> = (0..len).map(|_| rng.next() as u8).collect();
        let name = if i % 3 == 0 {
            format!("f{i}.gz")
        } else {
            format!("f{i}")
        };
        std::fs::write(dir.join(name), data).unwrap();
    }
    let sparse = std::fs::File::create(tree.join("sparse")).unwrap();
    sparse.set_len(8 << 20).unwrap();
    let img = root.join("fs.img");
    let status = Command::new(mkfs_ext4())
        .args(["-q", "-F", "-b", "4096", "-d"])
        .arg(&tree)
        .arg(&img)
        .arg(size)
        .status()
        .unwrap();
    assert!(status.success(), "mkfs.ext4 failed");
    std::fs::read(&img).unwrap()
}

fn ext4(c: &mut Criterion) {
    let dir = tempfile::tempdir().unwrap();
    let mut group = c.benchmark_group("map_ext4");
    let image = image(dir.path(), "128M");
    let files = delta_fsmap::map_ext4(&image).unwrap().files.len();
    assert!(files >= 2000, "{files} files mapped");
    group.throughput(Throughput::Bytes(image.len() as u64));
    group.bench_with_input(BenchmarkId::from_parameter("128M"), &image, |b, image| {
        b.iter(|| delta_fsmap::map_image(black_box(image)).unwrap())
    });
    group.finish();
}

criterion_group!(benches, ext4);
criterion_main!(benches);
