//! `delta roundtrip`: generate, apply and verify in a temporary folder.

use crate::args::Tuning;
use crate::failure::Failure;
use crate::gen::print_gen_summary;
use crate::output::{percent, took};
use delta_apply::{Applier, ApplyOptions};
use std::path::Path;
use std::time::Instant;

pub(crate) fn roundtrip(old: &Path, new: &Path, tuning: &Tuning) -> Result<(), Failure> {
    let dir = tempfile::tempdir()?;
    let delta = dir.path().join("update.delta");
    let out = dir.path().join("new.img");
    let options = tuning.options().map_err(|e| Failure::new(e, 2))?;
    let started = Instant::now();
    let summary = delta_gen::generate(Some(old), new, &delta, &options)?;
    let gen_time = started.elapsed();
    print_gen_summary(&delta.display().to_string(), &summary, gen_time);

    let started = Instant::now();
    let mut applier = Applier::new(ApplyOptions {
        log_dir: None,
        instance_lock: dir.path().join("apply.lock"),
        lock_root: dir.path().join("no-locks"),
        supervisor_config: dir.path().join("no-config"),
        ..ApplyOptions::default()
    });
    let outcome = applier
        .apply(Some(old), &delta, &out)
        .map_err(|e| Failure::chain(&e, u8::try_from(e.exit_code()).unwrap_or(1)))?;
    let apply_time = started.elapsed();
    // Both images hashed as streams: an image is never held in memory.
    let digest = |path: &Path| -> std::io::Result<String> {
        let mut hasher = blake3::Hasher::new();
        hasher.update_reader(std::fs::File::open(path)?)?;
        Ok(hasher.finalize().to_hex().to_string())
    };
    if digest(&out)? != digest(new)? {
        return Err(Failure::new("round trip produced a different image", 1));
    }
    say!(
        "applied and verified: {} bytes, byte-exact with {} (blake3 {}) in {}",
        outcome.new_len,
        new.display(),
        outcome.new_digest,
        took(apply_time)
    );
    say!(
        "ratio: delta is {:.3}% of the new image ({:.1}x smaller); gen {}, apply {}",
        percent(summary.delta_len, summary.new_len),
        summary.new_len as f64 / summary.delta_len.max(1) as f64,
        took(gen_time),
        took(apply_time)
    );
    Ok(())
}
