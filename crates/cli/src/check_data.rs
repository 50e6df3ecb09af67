//! `delta check-data`: the 1.x to 2.x `/data` size check.

use crate::failure::Failure;
use crate::output::{took, warn};
use std::path::Path;
use std::time::Instant;

pub(crate) fn check_data(dir: &Path, limit: u64, json: bool) -> Result<(), Failure> {
    let started = Instant::now();
    let report = delta_datacheck::check_data(
        dir,
        &delta_datacheck::CheckOptions {
            limit,
            ..Default::default()
        },
    )?;
    for warning in &report.warnings {
        warn(warning);
    }
    let elapsed = started.elapsed();
    let seconds = elapsed.as_secs_f64();
    if json {
        let value = serde_json::json!({
            "dir": dir.display().to_string(),
            "compressed_bytes": report.compressed_bytes,
            "tar_bytes": report.tar_bytes,
            "files": report.files,
            "limit": report.limit,
            "over_limit": report.over_limit,
            "seconds": seconds,
        });
        out!("{value}");
    } else if !report.over_limit {
        say!(
            "{}: compresses to {} bytes (tar {} bytes, {} files), under the limit of {} bytes ({})",
            dir.display(),
            report.compressed_bytes,
            report.tar_bytes,
            report.files,
            report.limit,
            took(elapsed)
        );
    }
    // Over the limit: said once, on stderr, as every failure is.
    if report.over_limit {
        return Err(Failure::new(
            format!(
                "{} compresses to at least {} bytes, over the limit of {} bytes; nothing was modified",
                dir.display(),
                report.compressed_bytes,
                report.limit
            ),
            3,
        ));
    }
    Ok(())
}
