//! Helpers shared by the tests and benches of every crate: edge sizes and
//! reproducible data. Not part of the stable API: compiled for this crate's
//! tests and with the `testing` feature, which the other crates enable in
//! their dev-dependencies only.

/// Sizes that break off-by-one logic around a block of `block` bytes.
pub fn edge_sizes(block: usize) -> Vec<usize> {
    vec![
        0,
        1,
        2,
        block - 1,
        block,
        block + 1,
        2 * block - 1,
        2 * block + 1,
        3 * block + 7,
    ]
}

/// A small, fast, seeded generator (xorshift64*), so fixtures are the same
/// on every machine.
#[derive(Debug, Clone)]
pub struct Rng(u64);

impl Rng {
    /// A generator from `seed`.
    pub fn new(seed: u64) -> Rng {
        Rng(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1)
    }

    /// The next 64 random bits.
    pub fn next_u64(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    /// A value in `0..n` (`n > 0`).
    pub fn below(&mut self, n: u64) -> u64 {
        self.next_u64() % n
    }

    /// `len` random bytes.
    pub fn bytes(&mut self, len: usize) -> Vec<u8> {
        let mut out = Vec::with_capacity(len + 8);
        while out.len() < len {
            out.extend_from_slice(&self.next_u64().to_le_bytes());
        }
        out.truncate(len);
        out
    }

    /// `len` bytes that look like text or code: compressible, not trivial.
    pub fn text(&mut self, len: usize) -> Vec<u8> {
        const WORDS: &[&str] = &[
            "fn ", "let ", "mut ", "self", ".read", "(old", ", new)", ";\n", "    ", "if ",
            "return ", "error", "offset", "len", " + 1", "{\n", "}\n", "0x", "segment", "block",
        ];
        let mut out = Vec::with_capacity(len + 16);
        while out.len() < len {
            out.extend_from_slice(WORDS[self.below(WORDS.len() as u64) as usize].as_bytes());
        }
        out.truncate(len);
        out
    }
}

/// A Debian-changelog-like text of at least `len` bytes: entries of
/// varied length, as `gzip -9n` compresses them in OS images.
pub fn changelog(rng: &mut Rng, len: usize) -> Vec<u8> {
    let mut out = Vec::new();
    let mut entry = 0;
    while out.len() < len {
        entry += 1;
        let n = 40 + rng.below(200) as usize;
        let words = rng.text(n);
        let line = format!(
            "pkg ({entry}.{}) unstable; urgency=medium\n\n  * {}\n\n -- Maintainer <m@example.org>  Mon, 0{} Jan 2024\n\n",
            rng.below(10),
            String::from_utf8_lossy(&words),
            rng.below(9) + 1
        );
        out.extend_from_slice(line.as_bytes());
    }
    out
}

/// Derives a "new" image from `old` by `edits` random edits: insertions,
/// deletions, overwrites, block moves and unaligned shifts.
pub fn mutate(old: &[u8], rng: &mut Rng, edits: usize) -> Vec<u8> {
    let mut new = old.to_vec();
    for _ in 0..edits {
        let len = new.len() as u64;
        let at = if len == 0 {
            0
        } else {
            rng.below(len + 1) as usize
        };
        let size = rng.below(5000) as usize + 1;
        match rng.below(5) {
            0 => {
                let bytes = rng.bytes(size);
                new.splice(at..at, bytes);
            }
            1 => {
                let end = (at + size).min(new.len());
                new.drain(at..end);
            }
            2 => {
                let end = (at + size).min(new.len());
                let bytes = rng.bytes(end - at);
                new[at..end].copy_from_slice(&bytes);
            }
            3 if !new.is_empty() => {
                // Move a block elsewhere.
                let end = (at + size * 4).min(new.len());
                let moved: Vec<u8> = new.drain(at..end).collect();
                let to = rng.below(new.len() as u64 + 1) as usize;
                new.splice(to..to, moved);
            }
            _ => {
                // Unaligned shift: a few bytes inserted.
                let n = rng.below(7) as usize + 1;
                new.splice(at..at, rng.bytes(n));
            }
        }
    }
    new
}

/// A toy filesystem image of `blocks` 4 KiB blocks: text files, binary
/// files and free (zero) blocks, from `seed`.
fn toy_image(rng: &mut Rng, blocks: usize) -> Vec<u8> {
    let mut image = Vec::with_capacity(blocks * 4096);
    while image.len() < blocks * 4096 {
        let file_blocks = rng.below(24) as usize + 1;
        let len = file_blocks * 4096 - rng.below(4096) as usize;
        let mut file = match rng.below(4) {
            0 => vec![0u8; file_blocks * 4096],
            1 => rng.bytes(len),
            _ => rng.text(len),
        };
        file.resize(file.len().div_ceil(4096) * 4096, 0);
        image.extend_from_slice(&file);
    }
    image.truncate(blocks * 4096);
    image
}

/// The "minor release" of a toy image: files moved to other blocks, a few
/// edited in place, one shifted by an unaligned offset, new data added.
fn toy_release(old: &[u8], rng: &mut Rng) -> Vec<u8> {
    let blocks: Vec<&[u8]> = old.chunks(4096).collect();
    let mut new = Vec::with_capacity(old.len() + old.len() / 8);
    let mut i = 0;
    while i < blocks.len() {
        // Runs of blocks, some swapped with a run further on.
        let run = (rng.below(32) as usize + 1).min(blocks.len() - i);
        let chunk: Vec<u8> = blocks[i..i + run].concat();
        match rng.below(10) {
            0 => {
                // Edited in place: a few scattered bytes change.
                let mut chunk = chunk;
                for _ in 0..rng.below(8) + 1 {
                    let at = rng.below(chunk.len() as u64) as usize;
                    chunk[at] = chunk[at].wrapping_add(1 + rng.below(200) as u8);
                }
                new.extend_from_slice(&chunk);
            }
            1 => {
                // Shifted by an unaligned insertion.
                let len = rng.below(300) as usize + 1;
                new.extend_from_slice(&rng.text(len));
                new.extend_from_slice(&chunk);
            }
            2 => new.extend_from_slice(&rng.text(run * 4096)),
            3 => {
                // Moved: appears later, after its successor.
                let next = (rng.below(16) as usize + 1).min(blocks.len() - i - run);
                new.extend_from_slice(&blocks[i + run..i + run + next].concat());
                new.extend_from_slice(&chunk);
                i += next;
            }
            _ => new.extend_from_slice(&chunk),
        }
        i += run;
    }
    new
}

/// The committed fixtures of `testdata/`: a 2 MiB sample image pair for the
/// quick start, and small pairs that seed the fuzzers.
pub fn fixtures() -> Vec<(&'static str, Vec<u8>)> {
    let mut rng = Rng::new(2026);
    let old = toy_image(&mut rng, 512);
    let new = toy_release(&old, &mut rng);
    let mut rng = Rng::new(7);
    let small_old = rng.text(6000);
    let small_new = mutate(&small_old, &mut rng, 3);
    vec![
        ("sample/old.img", old),
        ("sample/new.img", new),
        ("small/old.bin", small_old),
        ("small/new.bin", small_new),
    ]
}

/// `data` as a gzip file made by flate2 at `level` (0 to 9).
pub fn gzip(data: &[u8], level: u32) -> Vec<u8> {
    use std::io::Write;
    let mut encoder = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::new(level));
    encoder.write_all(data).expect("writing to a vector");
    encoder.finish().expect("writing to a vector")
}

/// Files of a tree: path (relative) and bytes.
pub type Tree = Vec<(String, Vec<u8>)>;

/// Writes `tree` under `root`, making folders as needed.
pub fn write_tree(root: &std::path::Path, tree: &Tree) {
    for (path, bytes) in tree {
        let path = root.join(path);
        std::fs::create_dir_all(path.parent().expect("a path under root"))
            .expect("writing a test tree");
        std::fs::write(path, bytes).expect("writing a test tree");
    }
}

/// A tar archive `image` of `tree`, written first under `root`: GNU tar,
/// members sorted by path, fixed times and owners, so the same tree makes
/// the same bytes.
pub fn tar_image(tree: &Tree, root: &std::path::Path, image: &std::path::Path) {
    write_tree(root, tree);
    let mut names: Vec<&String> = tree.iter().map(|(p, _)| p).collect();
    names.sort();
    let status = std::process::Command::new("tar")
        .arg("-cf")
        .arg(image)
        .arg("-C")
        .arg(root)
        .args(["--mtime=@1700000000", "--owner=0", "--group=0"])
        .args(names)
        .status()
        .expect("GNU tar is needed for these tests");
    assert!(status.success(), "tar failed on {}", image.display());
}
