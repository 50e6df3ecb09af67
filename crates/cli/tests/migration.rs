//! `delta check-data` and the 1.x -> 2.x migration preflight of `delta apply`.

mod common;

use common::{delta_in, APPLY_DEFAULTS};
use delta_core::testing::Rng;
use std::path::Path;
use std::process::Output;

/// `delta ARGS` in `dir`; an `apply` with the device's paths inside it.
fn run(dir: &Path, args: &[&str]) -> Output {
    delta_in(dir, args, &APPLY_DEFAULTS).output().unwrap()
}

/// A data folder of about `random` incompressible bytes plus some text.
fn data_dir(root: &Path, random: usize) -> std::path::PathBuf {
    let dir = root.join("resin-data");
    std::fs::create_dir_all(dir.join("app/db")).unwrap();
    let mut rng = Rng::new(3);
    std::fs::write(dir.join("app/db/blob.bin"), rng.bytes(random)).unwrap();
    std::fs::write(dir.join("app/config.txt"), rng.text(100_000)).unwrap();
    std::os::unix::fs::symlink("config.txt", dir.join("app/link")).unwrap();
    dir
}

#[test]
fn check_data_exit_codes_around_the_limit() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = data_dir(tmp.path(), 1 << 20);
    let out = run(
        tmp.path(),
        &["check-data", "resin-data", "--limit", "2MB", "--json"],
    );
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let size = report["compressed_bytes"].as_u64().unwrap();
    assert!(size > 1 << 20 && size < (1 << 20) + 200_000, "{size}");

    // Just under and just over the measured size.
    let under = format!("{}", size + 1);
    let out = run(tmp.path(), &["check-data", "resin-data", "--limit", &under]);
    assert_eq!(out.status.code(), Some(0));
    let over = format!("{}", size - 1000);
    let out = run(tmp.path(), &["check-data", "resin-data", "--limit", &over]);
    assert_eq!(out.status.code(), Some(3));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("over the limit") && err.contains("nothing was modified"),
        "{err}"
    );
    assert!(
        out.stdout.is_empty(),
        "the refusal is said once, on stderr; stdout has: {}",
        String::from_utf8_lossy(&out.stdout)
    );
    assert!(dir.join("app/db/blob.bin").exists());
}

#[test]
fn migration_apply_refuses_before_writing_anything() {
    let tmp = tempfile::tempdir().unwrap();
    data_dir(tmp.path(), 2 << 20);
    let mut rng = Rng::new(4);
    let old = rng.bytes(100_000);
    let mut new = old.clone();
    new[500..600].copy_from_slice(&rng.bytes(100));
    std::fs::write(tmp.path().join("old.img"), &old).unwrap();
    std::fs::write(tmp.path().join("new.img"), &new).unwrap();
    let out = run(
        tmp.path(),
        &["gen", "--migration", "old.img", "new.img", "-o", "m.delta"],
    );
    assert!(out.status.success());
    let info = run(tmp.path(), &["info", "--json", "m.delta"]);
    let info: serde_json::Value = serde_json::from_slice(&info.stdout).unwrap();
    assert_eq!(info["migration"], true);

    let apply = |limit: &str| {
        run(
            tmp.path(),
            &[
                "apply",
                "old.img",
                "m.delta",
                "-o",
                "out.img",
                "--no-log",
                "--data-dir",
                "resin-data",
                "--data-limit",
                limit,
            ],
        )
    };
    let out = apply("1MB");
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(
        err.contains("migration refused") && err.contains("nothing was modified"),
        "{err}"
    );
    for name in ["out.img", "out.img.partial", "out.img.journal"] {
        assert!(!tmp.path().join(name).exists(), "{name} written");
    }
    let out = apply("170MB");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(std::fs::read(tmp.path().join("out.img")).unwrap(), new);
}
