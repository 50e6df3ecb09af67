//! Folder builders and GNU tar runners shared by the integration tests.
#![allow(dead_code)] // each test binary uses a different part

use std::fs;
use std::io::Write;
use std::os::fd::{AsFd, OwnedFd};
use std::os::unix::fs::symlink;
use std::path::Path;
use std::process::{Command, Stdio};

use rustix::fs::{AtFlags, Mode, OFlags};

/// xorshift64*: seeded, fast, and incompressible as far as gzip can tell.
pub(crate) struct Rng(u64);

impl Rng {
    pub(crate) fn new(seed: u64) -> Rng {
        Rng(seed.max(1))
    }

    pub(crate) fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    pub(crate) fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }

    pub(crate) fn bytes(&mut self, len: usize) -> Vec<u8> {
        let mut out = Vec::with_capacity(len + 8);
        while out.len() < len {
            out.extend_from_slice(&self.next().to_le_bytes());
        }
        out.truncate(len);
        out
    }
}

const WORDS: &[&str] = &[
    "sensor",
    "reading",
    "temperature",
    "ok",
    "error",
    "retry",
    "device",
    "uptime",
    "balena",
    "supervisor",
    "container",
    "volume",
    "data",
    "sqlite",
    "journal",
    "timestamp",
    "value",
    "network",
    "wifi",
    "eth0",
];

/// Log-like text: compresses about 4:1, like real application data.
pub(crate) fn text(rng: &mut Rng, len: usize) -> Vec<u8> {
    let mut out = Vec::with_capacity(len + 100);
    while out.len() < len {
        let t = 1_600_000_000 + out.len() as u64;
        write!(out, "{t} [{}] ", rng.below(8)).unwrap();
        for _ in 0..1 + rng.below(8) {
            let w = WORDS[rng.below(WORDS.len() as u64) as usize];
            write!(out, "{w}={} ", rng.below(100_000)).unwrap();
        }
        out.push(b'\n');
    }
    out.truncate(len);
    out
}

/// Writes `len` incompressible bytes from `seed` in 1 MiB pieces.
pub(crate) fn write_noise(path: &Path, len: u64, seed: u64) {
    let mut rng = Rng::new(seed);
    let mut file = fs::File::create(path).unwrap();
    let mut left = len;
    while left > 0 {
        let n = left.min(1 << 20);
        file.write_all(&rng.bytes(n as usize)).unwrap();
        left -= n;
    }
}

/// A folder like an application's /data: many small files in nested
/// directories, a few large compressible ones, incompressible ones,
/// symlinks (to a file, to a directory, dangling, absolute), empty
/// directories, long names, a hard link, a fifo. About 11 MB.
pub(crate) fn mixed_tree(root: &Path, seed: u64) {
    let mut rng = Rng::new(seed);
    for i in 0..400u64 {
        let dir = root.join(format!("db/shard{}/part{}", i % 7, i % 3));
        fs::create_dir_all(&dir).unwrap();
        let len = rng.below(4096) as usize;
        let body = if i % 5 == 0 {
            rng.bytes(len)
        } else {
            text(&mut rng, len)
        };
        fs::write(dir.join(format!("rec{i:04}.log")), body).unwrap();
    }
    fs::create_dir_all(root.join("logs")).unwrap();
    for i in 0..3 {
        let len = (2 << 20) + rng.below(100_000) as usize;
        fs::write(root.join(format!("logs/app.{i}.log")), text(&mut rng, len)).unwrap();
    }
    fs::create_dir_all(root.join("blobs")).unwrap();
    for i in 0..3 {
        write_noise(
            &root.join(format!("blobs/image{i}.jpg")),
            (1 << 20) + 123 * i,
            seed + i,
        );
    }
    fs::write(root.join("empty-file"), b"").unwrap();
    fs::create_dir_all(root.join("empty/nested/too")).unwrap();
    fs::create_dir_all(root.join("cache")).unwrap();
    symlink("logs/app.0.log", root.join("latest.log")).unwrap();
    symlink("db/shard1", root.join("shard-link")).unwrap();
    symlink("does/not/exist", root.join("dangling")).unwrap();
    symlink("/etc/hostname", root.join("absolute")).unwrap();
    let long = format!("{}/{}", "a".repeat(80), "b".repeat(90));
    fs::create_dir_all(root.join(&long)).unwrap();
    fs::write(root.join(&long).join("c".repeat(120)), text(&mut rng, 5000)).unwrap();
    fs::hard_link(root.join("logs/app.1.log"), root.join("cache/app.1.log")).unwrap();
    let status = Command::new("mkfifo")
        .arg(root.join("cache/fifo"))
        .status()
        .unwrap();
    assert!(status.success(), "mkfifo");
}

/// GNU tar's archive of `dir` as `tar -cf - -C dir .` (with `-z` if `gzip`),
/// allowing exit status 2 (some files could not be read).
pub(crate) fn gnu_tar(dir: &Path, gzip: bool) -> Vec<u8> {
    let out = Command::new("tar")
        .arg(if gzip { "-czf" } else { "-cf" })
        .arg("-")
        .arg("-C")
        .arg(dir)
        .arg(".")
        .stderr(Stdio::piped())
        .output()
        .expect("GNU tar runs");
    assert!(
        matches!(out.status.code(), Some(0 | 2)),
        "tar failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    out.stdout
}

/// Number of members in a tar archive, as `tar -tf -` lists them.
pub(crate) fn gnu_tar_members(archive: &[u8]) -> u64 {
    let mut child = Command::new("tar")
        .arg("-tf")
        .arg("-")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .expect("GNU tar runs");
    let mut stdin = child.stdin.take().unwrap();
    let data = archive.to_vec();
    let feeder = std::thread::spawn(move || stdin.write_all(&data));
    let out = child.wait_with_output().unwrap();
    feeder.join().unwrap().unwrap();
    out.stdout
        .split(|&b| b == b'\n')
        .filter(|l| !l.is_empty())
        .count() as u64
}

/// `|ours - theirs| / theirs`.
pub(crate) fn relative_difference(ours: u64, theirs: u64) -> f64 {
    ours.abs_diff(theirs) as f64 / theirs as f64
}

/// A chain of `depth` directories named `d` in a temporary folder, built
/// by descriptors (its paths outgrow `PATH_MAX`), and removed the same way
/// when dropped: std's `remove_dir_all` would hold a descriptor per level.
pub(crate) struct DeepTree {
    tmp: tempfile::TempDir,
    depth: usize,
}

impl DeepTree {
    /// Every `files_every` levels, from the top, the directory also holds
    /// files `a{level}` and `z{level}` (a few bytes each), made before and
    /// after its `d`: in creation order, in reverse and in most hash
    /// orders, some file comes after `d`, so the walk has to come back to
    /// that level after the levels below it.
    pub(crate) fn new(depth: usize, files_every: usize) -> DeepTree {
        let tmp = tempfile::tempdir().unwrap();
        let mut dir = open_dir(rustix::fs::CWD, tmp.path());
        for level in 0..depth {
            let files = level % files_every == 0;
            if files {
                make_file(&dir, &format!("a{level}"), level);
            }
            rustix::fs::mkdirat(&dir, "d", Mode::from_raw_mode(0o755)).unwrap();
            if files {
                make_file(&dir, &format!("z{level}"), level + 3);
            }
            dir = open_dir(&dir, "d");
        }
        DeepTree { tmp, depth }
    }

    pub(crate) fn path(&self) -> &Path {
        self.tmp.path()
    }
}

impl Drop for DeepTree {
    /// Moves each level's `d` up to the top in turn and empties the one
    /// above it: two descriptors, one pass.
    fn drop(&mut self) {
        let Ok(top) = rustix::fs::open(self.tmp.path(), dir_flags(), Mode::empty()) else {
            return;
        };
        for level in 1..=self.depth {
            let Ok(dir) = rustix::fs::openat(&top, "d", dir_flags(), Mode::empty()) else {
                return;
            };
            for name in [format!("a{level}"), format!("z{level}")] {
                let _ = rustix::fs::unlinkat(&dir, name.as_str(), AtFlags::empty());
            }
            let below = rustix::fs::renameat(&dir, "d", &top, "d.below").is_ok();
            drop(dir);
            let _ = rustix::fs::unlinkat(&top, "d", AtFlags::REMOVEDIR);
            if !below || rustix::fs::renameat(&top, "d.below", &top, "d").is_err() {
                return;
            }
        }
    }
}

fn dir_flags() -> OFlags {
    OFlags::RDONLY | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC
}

fn open_dir(parent: impl AsFd, name: impl rustix::path::Arg) -> OwnedFd {
    rustix::fs::openat(parent, name, dir_flags(), Mode::empty()).unwrap()
}

fn make_file(dir: &OwnedFd, name: &str, len: usize) {
    let flags = OFlags::WRONLY | OFlags::CREATE | OFlags::EXCL | OFlags::CLOEXEC;
    let fd = rustix::fs::openat(dir, name, flags, Mode::from_raw_mode(0o644)).unwrap();
    fs::File::from(fd)
        .write_all(&b"0123456789".repeat(len / 10 + 1)[..len])
        .unwrap();
}

/// Length of `tar -cf - -C dir .`, counted as it streams by.
pub(crate) fn gnu_tar_len(dir: &Path) -> u64 {
    let mut child = Command::new("tar")
        .args(["-cf", "-", "-C"])
        .arg(dir)
        .arg(".")
        .stdout(Stdio::piped())
        .spawn()
        .expect("GNU tar runs");
    let len = std::io::copy(&mut child.stdout.take().unwrap(), &mut std::io::sink()).unwrap();
    let status = child.wait().unwrap();
    assert!(status.success(), "tar failed: {status}");
    len
}

/// Runs test `test` of this test binary alone in a child process, with
/// `env` set to `dir`, and checks that it passed; returns its output.
pub(crate) fn run_child(test: &str, env: &str, dir: &Path) -> String {
    let out = Command::new(std::env::current_exe().unwrap())
        .args(["--exact", test, "--nocapture", "--test-threads=1"])
        .env(env, dir)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "child failed:\n{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stdout.contains("1 passed"), "child ran no test:\n{stdout}");
    stdout
}
