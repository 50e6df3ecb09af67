//! `delta info`: the header and the share of each kind of op.

use delta_format::Limits;
use std::path::Path;

/// Errors of `delta info`, naming the file.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("{op} {path}: {source}")]
    Io {
        op: &'static str,
        path: String,
        source: std::io::Error,
    },
    #[error("delta {path} is {kind}, not a regular file")]
    NotRegular { path: String, kind: &'static str },
    #[error("delta {path}: {source}")]
    Format {
        path: String,
        source: delta_format::Error,
    },
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

pub fn run(path: &Path, json: bool) -> Result<(), Error> {
    let name = path.display().to_string();
    let io = |op, source| Error::Io {
        op,
        path: name.clone(),
        source,
    };
    let format = |source| Error::Format {
        path: name.clone(),
        source,
    };
    // A delta is a regular file. The stat names what else it is; the open
    // never blocks (a FIFO with no writer would hang a plain open) and the
    // opened file's type is checked again, in case of a swap in between.
    let not_regular = |kind| Error::NotRegular {
        path: name.clone(),
        kind: delta_core::describe_type(kind),
    };
    let kind = std::fs::metadata(path)
        .map_err(|e| io("open", e))?
        .file_type();
    if !kind.is_file() {
        return Err(not_regular(kind));
    }
    let (mut file, file_len) = delta_core::open_image(path).map_err(|e| io("open", e))?;
    let kind = file.metadata().map_err(|e| io("stat", e))?.file_type();
    if !kind.is_file() {
        return Err(not_regular(kind));
    }
    let index =
        delta_format::read_index(&mut std::io::BufReader::new(&mut file), &Limits::default())
            .map_err(format)?;
    index.check_file_len(file_len).map_err(format)?;
    let h = &index.header;
    let sum = |f: fn(&delta_format::SegmentEntry) -> u64| index.segments.iter().map(f).sum::<u64>();
    let (copy, zero, diff, literal) = (
        sum(|s| s.copy_len),
        sum(|s| s.zero_len),
        sum(|s| s.diff_len),
        sum(|s| s.literal_len),
    );
    let share = |n: u64| {
        if h.new_len == 0 {
            0.0
        } else {
            n as f64 / h.new_len as f64
        }
    };
    let value = serde_json::json!({
        "file": name,
        "file_len": file_len,
        "format_version": delta_format::VERSION,
        "kind": if h.is_full() { "full" } else { "delta" },
        "migration": h.is_migration(),
        "copy_new": h.has_copy_new(),
        "window_list": h.has_window_list(),
        "old_len": h.old_len,
        "new_len": h.new_len,
        "old_blake3": hex(&h.old_digest),
        "new_blake3": hex(&h.new_digest),
        "block_size": h.block_size,
        "zstd_level": h.zstd_level,
        "max_segment_len": h.max_segment_len,
        "apply_memory": h.apply_memory,
        "segments": h.segment_count,
        "bytes": { "copy": copy, "zero": zero, "diff": diff, "literal": literal },
        "share": { "copy": share(copy), "zero": share(zero), "diff": share(diff), "literal": share(literal) },
    });
    if json {
        out!("{value}");
        return Ok(());
    }
    out!("file           {name} ({file_len} bytes)");
    out!(
        "format         version {} ({})",
        delta_format::VERSION,
        value["kind"].as_str().unwrap_or("")
    );
    out!("migration      {}", h.is_migration());
    out!(
        "copy new       {}",
        if h.has_copy_new() {
            "yes (segments may copy what earlier segments wrote)"
        } else {
            "no (segments depend on the old image only)"
        }
    );
    out!(
        "window list    {}",
        if h.has_window_list() {
            "yes (windows may leave out old runs that copies take whole)"
        } else {
            "no (each window is one old range)"
        }
    );
    out!(
        "old image      {} bytes, blake3 {}",
        h.old_len,
        hex(&h.old_digest)
    );
    out!(
        "new image      {} bytes, blake3 {}",
        h.new_len,
        hex(&h.new_digest)
    );
    out!(
        "generator      block {} bytes, zstd level {}",
        h.block_size,
        h.zstd_level
    );
    out!(
        "segments       {} (largest {} bytes)",
        h.segment_count,
        h.max_segment_len
    );
    out!("apply memory   {} bytes of buffers", h.apply_memory);
    for (label, n) in [
        ("copied", copy),
        ("zero", zero),
        ("diffed", diff),
        ("literal", literal),
    ] {
        out!("{label:<14} {:>6.2}%  ({n} bytes)", share(n) * 100.0);
    }
    Ok(())
}
