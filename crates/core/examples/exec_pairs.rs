//! Executable segments of file pairs: `cargo run --release -p delta-core
//! --example exec_pairs -- DIR`, where DIR holds `NAME.old` and `NAME.new`
//! files. Prints each pair's segment with and without the projection, and
//! checks that each rebuilds the new file.

use delta_core::internal::{apply_one_segment, exec_file_segment};

fn main() {
    let dir = std::env::args().nth(1).expect("usage: exec_pairs DIR");
    let mut names: Vec<_> = std::fs::read_dir(&dir)
        .expect("read DIR")
        .filter_map(|e| {
            let name = e.ok()?.file_name().into_string().ok()?;
            Some(name.strip_suffix(".old")?.to_string())
        })
        .collect();
    names.sort();
    let mut totals = [0u64; 2];
    for name in names {
        let old = std::fs::read(format!("{dir}/{name}.old")).expect("old file");
        let new = std::fs::read(format!("{dir}/{name}.new")).expect("new file");
        let mut sizes = [0u64; 2];
        for (i, transform) in [false, true].into_iter().enumerate() {
            let start = std::time::Instant::now();
            let (entry, payload) = exec_file_segment(&old, &new, transform)
                .expect("encode")
                .expect("within memory");
            let took = start.elapsed();
            let start = std::time::Instant::now();
            let out = apply_one_segment(&old, &entry, &payload).expect("apply");
            assert!(out == new, "{name}: rebuilt bytes differ");
            sizes[i] = payload.len() as u64;
            eprintln!(
                "{name} transform={transform}: {} B, encode {:?}, apply {:?}",
                payload.len(),
                took,
                start.elapsed()
            );
        }
        totals[0] += sizes[0];
        totals[1] += sizes[1];
        println!("{name:40} {:>10} {:>10}", sizes[0], sizes[1]);
    }
    println!("{:40} {:>10} {:>10}", "total", totals[0], totals[1]);
}
