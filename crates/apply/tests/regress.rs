//! Replays the fuzz regression corpus: every file under
//! `testdata/regress/<target>/` goes through the same checks as the fuzz
//! target of that name (`fuzz/src/checks.rs`, compiled here as a module).
//!
//! Each target's folder must hold at least the inputs committed today: a
//! moved or emptied folder fails instead of passing with nothing replayed.
//! To add a case, copy a minimized input there (see `fuzz/README.md`); a
//! failure names the file to replay with `cargo fuzz run <target> <file>`.

// The fuzz crate's module: its items are `pub` there, for the fuzz targets.
#[path = "../../../fuzz/src/checks.rs"]
#[allow(unreachable_pub)]
mod checks;

use std::path::{Path, PathBuf};

/// Runs `check` on every file of `testdata/regress/<target>/`, which must
/// hold at least `at_least` of them.
fn replay(target: &str, at_least: usize, check: fn(&[u8])) {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../testdata/regress")
        .join(target);
    let entries = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("regression inputs {}: {e}", dir.display()));
    let mut files: Vec<PathBuf> = entries
        .map(|entry| entry.expect("list testdata/regress").path())
        .filter(|path| path.is_file())
        .filter(|path| {
            !path
                .file_name()
                .is_some_and(|n| n.to_string_lossy().starts_with('.'))
        })
        .collect();
    files.sort();
    for path in &files {
        let bytes = std::fs::read(path).expect("read a regression input");
        // Printed before the check so that a panic or abort names the file.
        eprintln!("replaying {}", path.display());
        check(&bytes);
    }
    assert!(
        files.len() >= at_least,
        "{} holds {} inputs, expected at least {at_least}",
        dir.display(),
        files.len()
    );
}

#[test]
fn decode_header() {
    replay("decode_header", 4, checks::decode_header);
}

#[test]
fn decode_ops() {
    replay("decode_ops", 2, checks::decode_ops);
}

#[test]
fn apply() {
    replay("apply", 5, checks::apply);
}

#[test]
fn roundtrip() {
    replay("roundtrip", 1, checks::roundtrip);
}

#[test]
#[should_panic(expected = "regression inputs")]
fn missing_folder_fails() {
    replay("no-such-target", 0, |_| unreachable!());
}

#[test]
#[should_panic(expected = "expected at least 6")]
fn fewer_inputs_than_committed_fail() {
    replay("apply", 6, |_| {});
}

#[test]
fn decode_signatures() {
    replay("decode_signatures", 2, checks::decode_signatures);
}

#[test]
fn deflate_segment() {
    replay("deflate_segment", 3, checks::deflate_segment);
}

#[test]
fn lzma_segment() {
    replay("lzma_segment", 4, checks::lzma_segment);
}

#[test]
fn exec_segment() {
    replay("exec_segment", 4, checks::exec_segment);
}
