//! `generate_many`: several old images to one new image, each delta byte
//! for byte what `generate` makes of its old image alone.

use delta_core::testing::{self, changelog, gzip, Rng, Tree};
use delta_format::Limits;
use delta_gen::{generate, generate_many, many_outputs, DeltaOptions, Error, GenOptions};
use std::path::{Path, PathBuf};

/// A tar archive of `tree` (GNU tar, fixed times and owners), as a file
/// `name` in `dir`.
fn tar_image(tree: &Tree, dir: &Path, name: &str) -> PathBuf {
    let image = dir.join(format!("{name}.img"));
    testing::tar_image(tree, &dir.join(format!("{name}-tree")), &image);
    image
}

/// The new tree: changelogs (gzip -9), a zlib-less plain file and random
/// bytes; `version` 0 is the new one, others old ones with edits of their
/// own, a file missing and one more.
fn tree(version: u64) -> Tree {
    let mut rng = Rng::new(7);
    let texts: Vec<Vec<u8>> = (0..6)
        .map(|i| changelog(&mut rng, 20_000 + i * 9_000))
        .collect();
    let blob = rng.bytes(150_000);
    let mut edit = Rng::new(100 + version);
    let mut files = Vec::new();
    for (i, text) in texts.iter().enumerate() {
        if version > 0 && i as u64 == version {
            continue;
        }
        let mut text = text.clone();
        if version > 0 {
            // Each old version lacks some lines the new one has.
            for _ in 0..3 {
                let at = edit.below(text.len() as u64 - 500) as usize;
                text.drain(at..at + 200);
            }
        }
        files.push((format!("usr/share/doc/pkg{i}/changelog.gz"), gzip(&text, 9)));
    }
    let mut blob = blob;
    if version > 0 {
        let at = edit.below(100_000) as usize;
        blob[at..at + 3000].copy_from_slice(&edit.bytes(3000));
        // Of a size of its own: what follows lies elsewhere in each image.
        let len = 5000 + 1500 * version as usize;
        files.push((format!("etc/only-in-{version}"), edit.text(len)));
    }
    files.push(("usr/lib/blob.bin".into(), blob));
    // Rebuilt executables (testdata/elf: the same C sources built with two
    // compilers), each at another place in each old image, which the
    // files before them push about.
    let build = if version == 0 { "b" } else { "a" };
    for (path, fixture) in [
        ("usr/bin/calc", "calc"),
        ("usr/lib/libtally.so.1", "libtally.so"),
    ] {
        files.push((path.into(), elf(&format!("{fixture}-{build}"))));
    }
    files
}

/// An x86-64 fixture of `testdata/elf/out`.
fn elf(name: &str) -> Vec<u8> {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../testdata/elf/out/x86_64")
        .join(name);
    std::fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

fn options() -> GenOptions {
    GenOptions {
        delta: DeltaOptions {
            segment_len: 64 << 10,
            ..DeltaOptions::default()
        },
        ..GenOptions::default()
    }
}

#[test]
fn many_deltas_to_one_image_are_those_made_one_by_one() {
    let dir = tempfile::tempdir().unwrap();
    let new = tar_image(&tree(0), dir.path(), "new");
    let olds: Vec<PathBuf> = (1..=3)
        .map(|v| tar_image(&tree(v), dir.path(), &format!("old{v}")))
        .collect();
    let olds: Vec<&Path> = olds.iter().map(PathBuf::as_path).collect();
    let out_dir = dir.path().join("out");
    std::fs::create_dir(&out_dir).unwrap();
    let summaries = generate_many(&olds, &new, &out_dir, &options()).unwrap();
    assert_eq!(summaries.len(), 3);
    let outs = many_outputs(&olds, &out_dir).unwrap();
    let new_bytes = std::fs::read(&new).unwrap();
    for ((old, out), summary) in olds.iter().zip(&outs).zip(&summaries) {
        assert_eq!(out.parent(), Some(out_dir.as_path()));
        let alone = dir.path().join("alone.delta");
        let expected = GenOptions {
            replace: true,
            ..options()
        };
        generate(Some(old), &new, &alone, &expected).unwrap();
        let many = std::fs::read(out).unwrap();
        assert_eq!(many, std::fs::read(&alone).unwrap(), "{}", old.display());
        assert_eq!(summary.delta_len, many.len() as u64);
        // The shared work was used: gzip files were rebuilt from content,
        // and executables made from their partners (planned once, for
        // the first old image: the later ones hold the same old files
        // elsewhere, and their deltas are the same as made alone).
        assert!(summary.content.deflate_segments > 0, "{summary:?}");
        assert!(summary.content.exec_segments > 0, "{summary:?}");
        let old_bytes = std::fs::read(old).unwrap();
        let applied = delta_core::apply_slice(&old_bytes, &many, &Limits::default()).unwrap();
        assert_eq!(applied, new_bytes);
    }
}

#[test]
fn outputs_are_named_after_the_old_images_and_never_twice() {
    let dir = Path::new("/out");
    let outs = many_outputs(&[Path::new("/a/v1.img"), Path::new("b/v2")], dir).unwrap();
    assert_eq!(outs, [dir.join("v1.delta"), dir.join("v2.delta")]);
    let err = many_outputs(&[Path::new("/a/old.img"), Path::new("/b/old.img")], dir)
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("would both be written to /out/old.delta"),
        "{err}"
    );
    assert!(matches!(many_outputs(&[], dir), Err(Error::Option { .. })));
}

#[test]
fn existing_outputs_are_refused_before_any_work() {
    let dir = tempfile::tempdir().unwrap();
    let new = tar_image(&tree(0), dir.path(), "new");
    let a = tar_image(&tree(1), dir.path(), "a");
    let b = tar_image(&tree(2), dir.path(), "b");
    std::fs::write(dir.path().join("b.delta"), b"keep").unwrap();
    let err = generate_many(&[&a, &b], &new, dir.path(), &options()).unwrap_err();
    assert!(matches!(err, Error::OutputExists { .. }), "{err}");
    // Nothing was made, not even the first delta.
    assert!(!dir.path().join("a.delta").exists());
    assert_eq!(std::fs::read(dir.path().join("b.delta")).unwrap(), b"keep");
}
