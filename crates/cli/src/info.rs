//! `delta info`: the header and the share of each kind of op.

use crate::failure::Failure;
use delta_format::Limits;
use std::path::Path;

use delta_core::to_hex as hex;

/// Prints what the delta at `path` (or `-`, or a URL) holds, read as the
/// applier reads it.
pub(crate) fn run(path: &Path, json: bool) -> Result<(), Failure> {
    let name = path.display().to_string();
    let mut input = crate::apply::open_input(path)?;
    let (index, _) = delta_apply::read_index_from(input.as_mut(), &Limits::default())
        .map_err(|e| Failure::chain(&e, 1))?;
    let file_len = index.file_len;
    let h = &index.header;
    let delta_format::OutputTotals {
        copy,
        zero,
        diff,
        literal,
    } = index.totals();
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
        "format_version": h.version(),
        "segment_kinds": h.has_segment_kinds(),
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
        "signatures": index.signatures.iter().map(|s| serde_json::json!({ "key_id": hex(&s.key_id) })).collect::<Vec<_>>(),
        "bytes": { "copy": copy, "zero": zero, "diff": diff, "literal": literal },
        "share": { "copy": share(copy), "zero": share(zero), "diff": share(diff), "literal": share(literal) },
    });
    if json {
        out!("{value}");
        return Ok(());
    }
    out!("file           {name} ({file_len} bytes)");
    let kinds = if h.has_segment_kinds() {
        let mut kinds = vec!["deflate"];
        if h.has_lzma() {
            kinds.push("LZMA");
        }
        if h.flags & delta_format::FLAG_EXEC != 0 {
            kinds.push("executable");
        }
        format!(", segment kinds: {} segments", kinds.join(", "))
    } else {
        String::new()
    };
    out!(
        "format         version {} ({}{kinds})",
        h.version(),
        value["kind"].as_str().unwrap_or(""),
    );
    out!("migration      {}", h.is_migration());
    out!(
        "signatures     {}",
        if index.signatures.is_empty() {
            "none".to_string()
        } else {
            let ids: Vec<String> = index.signatures.iter().map(|s| hex(&s.key_id)).collect();
            format!("{} (key ids {})", ids.len(), ids.join(", "))
        }
    );
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
