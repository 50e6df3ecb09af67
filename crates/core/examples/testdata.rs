//! Writes the committed fixtures of `testdata/` from fixed seeds.
//!
//! Usage: `cargo run -p delta-core --example testdata -- DIR` (what
//! `testdata/generate.sh` runs). A test regenerates them and fails on drift.

use delta_core::testing::fixtures;
use std::path::PathBuf;

fn main() -> std::io::Result<()> {
    let dir = PathBuf::from(std::env::args().nth(1).unwrap_or_else(|| "testdata".into()));
    for (name, bytes) in fixtures() {
        let path = dir.join(name);
        std::fs::create_dir_all(path.parent().expect("fixture paths have a folder"))?;
        std::fs::write(&path, bytes)?;
        println!("wrote {} ({} bytes)", path.display(), bytes_len(&path));
    }
    Ok(())
}

fn bytes_len(path: &std::path::Path) -> u64 {
    std::fs::metadata(path).map(|m| m.len()).unwrap_or(0)
}
