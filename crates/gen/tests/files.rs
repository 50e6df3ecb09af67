//! The generator as a library user calls it: image files in, a delta file
//! out (`generate`), or the same bytes into any writer (`generate_to`).

use delta_core::signature::SecretKey;
use delta_core::testing::fixtures;
use delta_format::Limits;
use delta_gen::{generate, generate_to, sign_file, DeltaOptions, Error, GenOptions};
use std::path::{Path, PathBuf};

/// An old and a new image (the first two fixtures) in a temporary folder.
struct Images {
    dir: tempfile::TempDir,
    old: Vec<u8>,
    new: Vec<u8>,
}

impl Images {
    fn new() -> Images {
        let mut all = fixtures().into_iter().map(|(_, bytes)| bytes);
        let (old, new) = (all.next().unwrap(), all.next().unwrap());
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("old.img"), &old).unwrap();
        std::fs::write(dir.path().join("new.img"), &new).unwrap();
        Images { dir, old, new }
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }
}

/// Small segments, so that the fixtures make several.
fn options() -> GenOptions {
    GenOptions {
        delta: DeltaOptions {
            segment_len: 64 << 10,
            ..DeltaOptions::default()
        },
        ..GenOptions::default()
    }
}

fn apply(old: &[u8], delta: &Path) -> Vec<u8> {
    let delta = std::fs::read(delta).unwrap();
    delta_core::apply_slice(old, &delta, &Limits::default()).unwrap()
}

#[test]
fn a_delta_file_applies_and_its_summary_tells_its_size() {
    let images = Images::new();
    let out = images.path("u.delta");
    let summary = generate(
        Some(&images.path("old.img")),
        &images.path("new.img"),
        &out,
        &options(),
    )
    .unwrap();
    assert_eq!(apply(&images.old, &out), images.new);
    assert_eq!(summary.delta_len, std::fs::metadata(&out).unwrap().len());
    assert_eq!(
        (summary.old_len, summary.new_len),
        (images.old.len() as u64, images.new.len() as u64)
    );
    assert!(summary.segments > 1, "{summary:?}");
}

#[test]
fn a_writer_gets_the_bytes_of_the_file() {
    let images = Images::new();
    let (old, new) = (images.path("old.img"), images.path("new.img"));
    let out = images.path("u.delta");
    generate(Some(&old), &new, &out, &options()).unwrap();
    let mut written = Vec::new();
    generate_to(Some(&old), &new, &mut written, &options()).unwrap();
    assert_eq!(written, std::fs::read(&out).unwrap());
}

#[test]
fn an_existing_output_is_kept_unless_replace_is_set() {
    let images = Images::new();
    let out = images.path("u.delta");
    std::fs::write(&out, b"keep me").unwrap();
    let run = |options: &GenOptions| {
        generate(
            Some(&images.path("old.img")),
            &images.path("new.img"),
            &out,
            options,
        )
    };
    // The default, as `delta gen` without --force and the C API.
    let err = run(&options()).unwrap_err();
    assert!(matches!(err, Error::OutputExists { .. }), "{err}");
    assert!(err.to_string().contains("u.delta"), "{err}");
    assert_eq!(std::fs::read(&out).unwrap(), b"keep me");
    let replace = GenOptions {
        replace: true,
        ..options()
    };
    run(&replace).unwrap();
    assert_eq!(apply(&images.old, &out), images.new);
}

#[test]
fn a_full_payload_needs_no_old_image() {
    let images = Images::new();
    let out = images.path("full.delta");
    let summary = generate(None, &images.path("new.img"), &out, &options()).unwrap();
    assert_eq!(summary.old_len, 0);
    assert_eq!(apply(&[], &out), images.new);
}

#[test]
fn a_missing_input_is_named() {
    let images = Images::new();
    let missing = images.path("gone.img");
    let out = images.path("u.delta");
    let err = generate(Some(&missing), &images.path("new.img"), &out, &options()).unwrap_err();
    assert!(err.to_string().contains("gone.img"), "{err}");
    assert!(!out.exists(), "nothing is written");
}

#[test]
fn signing_at_generation_or_after_gives_the_same_file() {
    let images = Images::new();
    let key = || SecretKey::from_seed(&[7; 32]);
    let (old, new) = (images.path("old.img"), images.path("new.img"));
    let signed = images.path("signed.delta");
    let options_signed = GenOptions {
        signing_keys: vec![key()],
        ..options()
    };
    generate(Some(&old), &new, &signed, &options_signed).unwrap();
    let later = images.path("later.delta");
    generate(Some(&old), &new, &later, &options()).unwrap();
    let unsigned = std::fs::read(&later).unwrap();
    assert_eq!(sign_file(&later, &[key()]).unwrap(), 1);
    let (signed, later) = (
        std::fs::read(&signed).unwrap(),
        std::fs::read(&later).unwrap(),
    );
    assert_eq!(signed, later, "Ed25519 signatures are deterministic");
    assert_ne!(signed, unsigned);
    assert_eq!(apply(&images.old, &images.path("signed.delta")), images.new);
}
