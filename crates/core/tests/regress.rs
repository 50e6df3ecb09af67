//! Replays the fuzz regression corpus: every file under
//! `testdata/regress/<target>/` goes through the same checks as the fuzz
//! target of that name (`fuzz/src/checks.rs`, compiled here as a module).
//!
//! A missing or empty folder passes. To add a case, copy a minimized input
//! there (see `fuzz/README.md`); a failure names the file to replay with
//! `cargo fuzz run <target> <file>`.

#[path = "../../../fuzz/src/checks.rs"]
mod checks;

use std::path::{Path, PathBuf};

/// Runs `check` on every file of `testdata/regress/<target>/` and returns
/// how many there were.
fn replay(target: &str, check: fn(&[u8])) -> usize {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../testdata/regress")
        .join(target);
    let Ok(entries) = std::fs::read_dir(&dir) else {
        return 0;
    };
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
    files.len()
}

#[test]
fn decode_header() {
    replay("decode_header", checks::decode_header);
}

#[test]
fn decode_ops() {
    replay("decode_ops", checks::decode_ops);
}

#[test]
fn apply() {
    replay("apply", checks::apply);
}

#[test]
fn roundtrip() {
    replay("roundtrip", checks::roundtrip);
}

#[test]
fn missing_folder_passes() {
    assert_eq!(replay("no-such-target", |_| unreachable!()), 0);
}
