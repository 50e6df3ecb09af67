//! Replays the fuzz regression corpus of the `map_image` target: every file
//! under `testdata/regress/map_image/` goes through the same checks as the
//! fuzz target (`fuzz/src/map_image.rs`, compiled here as a module). To add
//! a case, copy a minimized input there (see `fuzz/README.md`).

// The fuzz crate's module: its items are `pub` there, for the fuzz targets.
#[path = "../../../fuzz/src/map_image.rs"]
#[allow(unreachable_pub)]
mod checks;

use std::path::{Path, PathBuf};

#[test]
fn map_image() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../testdata/regress/map_image");
    let entries = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("regression inputs {}: {e}", dir.display()));
    let mut files: Vec<PathBuf> = entries
        .map(|entry| entry.expect("list testdata/regress").path())
        .filter(|path| path.is_file())
        .collect();
    files.sort();
    for path in &files {
        let bytes = std::fs::read(path).expect("read a regression input");
        eprintln!("replaying {}", path.display());
        checks::map_image(&bytes);
    }
    // The inputs committed today: a moved or emptied folder fails.
    assert!(
        files.len() >= 2,
        "{} holds {} inputs, expected at least 2",
        dir.display(),
        files.len()
    );
}
