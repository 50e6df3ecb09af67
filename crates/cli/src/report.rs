//! `delta gen --report FILE.json`, and the costliest files printed after
//! every generation: where the delta's bytes go.

use crate::failure::Failure;
use delta_core::Report;
use std::path::Path;

/// Prints the `n` files that cost the most payload bytes.
pub(crate) fn print_costliest(report: &Report, n: usize) {
    let files: Vec<_> = report
        .files
        .iter()
        .filter(|f| !f.path.is_empty())
        .take(n)
        .collect();
    if files.is_empty() {
        return;
    }
    say!("costliest files (delta bytes, how, new size, path):");
    for f in files {
        say!(
            "{:>12}  {:<7}  {:>12}  {}",
            f.delta_bytes,
            f.how.name(),
            f.new_len,
            f.path
        );
    }
    if let Some(rest) = report.files.iter().find(|f| f.path.is_empty()) {
        say!(
            "{:>12}  outside files (file-system metadata, free space, unmapped bytes, copy ops)",
            rest.delta_bytes
        );
    }
}

/// The report as JSON (fields documented in the README).
pub(crate) fn to_json(report: &Report, delta_len: u64) -> serde_json::Value {
    let outside = report.files.iter().find(|f| f.path.is_empty());
    serde_json::json!({
        "container": report.container,
        "delta_bytes": delta_len,
        "payload_bytes": report.payload_bytes,
        "table_bytes": report.table_bytes,
        "outside_files": {
            "new_len": outside.map_or(0, |f| f.new_len),
            "delta_bytes": outside.map_or(0, |f| f.delta_bytes),
        },
        "files": report.files.iter().filter(|f| !f.path.is_empty()).map(|f| serde_json::json!({
            "path": f.path,
            "new_len": f.new_len,
            "partner": f.partner,
            "encoding": f.how.name(),
            "delta_bytes": f.delta_bytes,
        })).collect::<Vec<_>>(),
    })
}

/// Writes [`to_json`] to `path`.
pub(crate) fn write_json(path: &Path, report: &Report, delta_len: u64) -> Result<(), Failure> {
    let text = format!("{:#}\n", to_json(report, delta_len));
    std::fs::write(path, text)
        .map_err(|e| Failure::from(format!("write report {}: {e}", path.display())))
}
