//! Maps an image and prints what it found, with the time taken:
//! `cargo run --release -p delta-fsmap --example measure -- IMAGE [EVERY]`;
//! with `EVERY`, also prints the path and image range of every EVERY-th
//! contiguous `.gz` file, to compare with `debugfs -R "cat PATH"`.

use std::time::Instant;

fn main() {
    let Some(path) = std::env::args().nth(1) else {
        eprintln!("usage: measure IMAGE");
        std::process::exit(2);
    };
    let image = match std::fs::read(&path) {
        Ok(image) => image,
        Err(e) => {
            eprintln!("{path}: {e}");
            std::process::exit(1);
        }
    };
    let start = Instant::now();
    let map = match delta_fsmap::map_image(&image) {
        Ok(map) => map,
        Err(e) => {
            eprintln!("{path}: {e}");
            std::process::exit(1);
        }
    };
    let elapsed = start.elapsed();
    let with_extents = map.files.iter().filter(|f| !f.extents.is_empty()).count();
    let gz: Vec<_> = map
        .files
        .iter()
        .filter(|f| f.path.ends_with(".gz"))
        .collect();
    let gz_contiguous = gz.iter().filter(|f| f.contiguous().is_some()).count();
    let extents: usize = map.files.iter().map(|f| f.extents.len()).sum();
    println!(
        "{path}: {:?}, {} bytes, mapped in {:.1} ms: {} regular files, {} with extents ({} extents), \
         {} .gz files, {} of them contiguous",
        map.kind,
        image.len(),
        elapsed.as_secs_f64() * 1e3,
        map.files.len(),
        with_extents,
        extents,
        gz.len(),
        gz_contiguous,
    );
    if let Some(every) = std::env::args()
        .nth(2)
        .and_then(|n| n.parse::<usize>().ok())
    {
        for file in gz.iter().step_by(every.max(1)) {
            if let Some(range) = file.contiguous() {
                println!("sample {} {} {}", range.start, range.end, file.path);
            }
        }
    }
}
