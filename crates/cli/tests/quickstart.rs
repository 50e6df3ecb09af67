//! The README's quick start, run as written: the commands between
//! `<!-- quickstart` and `<!-- /quickstart -->` in README.md, so that this
//! test fails when the README drifts from what works.
//!
//! They run with `sh -e` in a temp copy of what they use (`scripts/sample-ext4.sh`
//! and `testdata/ext4`), as a user who is not root (as root, as `nobody` through
//! `setpriv`) with `HOME=/nonexistent`, as `nobody` has. A `cargo` line is left
//! out: `target/release/delta` is this build's `delta`.
//! Needs `mkfs.ext4` and `debugfs` (e2fsprogs), `gzip` and `awk`.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

const DELTA: &str = env!("CARGO_BIN_EXE_delta");

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// The shell lines of the README's quick-start block: the fenced block between
/// the markers, without `cargo` lines.
fn quickstart() -> String {
    let readme = std::fs::read_to_string(root().join("README.md")).unwrap();
    let start = readme
        .find("<!-- quickstart")
        .expect("README.md has no <!-- quickstart ... --> marker");
    let end = readme[start..]
        .find("<!-- /quickstart -->")
        .expect("README.md has no <!-- /quickstart --> marker")
        + start;
    let block: Vec<&str> = readme[start..end].lines().collect();
    let fences: Vec<usize> = (0..block.len())
        .filter(|&i| block[i].starts_with("```"))
        .collect();
    assert_eq!(fences.len(), 2, "one fenced block between the markers");
    let lines: Vec<&str> = block[fences[0] + 1..fences[1]]
        .iter()
        .copied()
        .filter(|line| !line.trim_start().starts_with("cargo "))
        .collect();
    assert!(
        lines.iter().any(|l| l.contains("delta gen")),
        "the quick start runs delta gen:\n{}",
        lines.join("\n")
    );
    lines.join("\n")
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        let path = entry.path();
        if entry.file_type().unwrap().is_dir() {
            copy_dir(&path, &to.join(entry.file_name()));
        } else {
            std::fs::copy(&path, to.join(entry.file_name())).unwrap();
        }
    }
}

#[test]
fn the_readme_quick_start_works_as_written() {
    let script = quickstart();
    let dir = tempfile::tempdir().unwrap();
    let tree = dir.path();
    copy_dir(&root().join("scripts"), &tree.join("scripts"));
    copy_dir(&root().join("testdata/ext4"), &tree.join("testdata/ext4"));
    std::fs::create_dir_all(tree.join("target/release")).unwrap();
    std::fs::copy(DELTA, tree.join("target/release/delta")).unwrap();

    let mut sh = if rustix::process::geteuid().is_root() {
        assert!(
            Command::new("setpriv").arg("--version").output().is_ok(),
            "running as root and setpriv is missing: install util-linux"
        );
        // nobody writes the copy, as a user writes their clone.
        let chown = Command::new("chown")
            .args(["-R", "65534:65534"])
            .arg(tree)
            .status()
            .unwrap();
        assert!(chown.success());
        let mut sh = Command::new("setpriv");
        sh.args(["--reuid=65534", "--regid=65534", "--clear-groups", "--"]);
        sh.arg("sh");
        sh
    } else {
        Command::new("sh")
    };
    let out: Output = sh
        .args(["-e", "-c", &script])
        .current_dir(tree)
        .env_clear()
        .env(
            "PATH",
            "/usr/local/bin:/usr/bin:/bin:/usr/local/sbin:/usr/sbin:/sbin",
        )
        .env("HOME", "/nonexistent")
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "the quick start failed:\n{script}\n--- stdout\n{stdout}\n--- stderr\n{stderr}"
    );

    let sample = tree.join("target/sample-ext4");
    let new = std::fs::read(sample.join("new.img")).unwrap();
    let applied = std::fs::read(sample.join("out.img")).unwrap();
    assert!(new == applied, "out.img differs from new.img");
    assert!(
        stdout.contains("gzip/zlib files rebuilt from their content")
            && stdout.contains("costliest files"),
        "gen names deflate segments and the costliest files:\n{stdout}"
    );
    let deflate = stdout
        .lines()
        .find(|l| l.contains(" deflate ") && l.ends_with("/changelog.Debian.gz"));
    assert!(
        deflate.is_some(),
        "a changelog sent as a deflate segment:\n{stdout}"
    );
}
