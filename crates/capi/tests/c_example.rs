//! Builds `examples/c/apply.c` with the system C compiler against the
//! library this test run built (static, and shared through its soname)
//! and runs it on a small delta: required, it fails without `cc`.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

/// The folder of the library built for this test run: `target/<profile>/deps`,
/// beside the test binary (cargo writes `libdelta.a` and `libdelta.so`
/// there; `cargo build` also copies them one folder up).
fn library_dir() -> PathBuf {
    let exe = std::env::current_exe().expect("the test binary's path");
    let deps = exe.parent().expect("the test binary's folder");
    for dir in [deps, deps.parent().unwrap_or(deps)] {
        if dir.join("libdelta.a").exists() && dir.join("libdelta.so").exists() {
            return dir.to_owned();
        }
    }
    panic!(
        "libdelta.a / libdelta.so not found beside {} (cargo builds them with the tests)",
        exe.display()
    );
}

fn cc() -> String {
    std::env::var("CC").unwrap_or_else(|_| "cc".into())
}

/// Compiles the example with `link` (the library and what it needs).
fn compile(out: &Path, link: &[&str]) {
    let crate_dir = Path::new(env!("CARGO_MANIFEST_DIR"));
    let status = Command::new(cc())
        .args(["-std=c99", "-Wall", "-Wextra", "-Werror", "-I"])
        .arg(crate_dir.join("include"))
        .arg(crate_dir.join("examples/c/apply.c"))
        .args(link)
        .arg("-o")
        .arg(out)
        .status()
        .unwrap_or_else(|e| panic!("cannot run the C compiler `{}` (required): {e}", cc()));
    assert!(status.success(), "compiling examples/c/apply.c failed");
}

/// Two small images: the new one is the old one edited and extended.
fn images(dir: &Path) -> (PathBuf, PathBuf, Vec<u8>) {
    let mut state = 0x2545_f491_4f6c_dd1du64;
    let old: Vec<u8> = (0..300_000)
        .map(|i| {
            if i % 4096 < 2048 {
                state ^= state << 13;
                state ^= state >> 7;
                state ^= state << 17;
                state as u8
            } else {
                (i / 4096) as u8
            }
        })
        .collect();
    let mut new = old.clone();
    new[70_000..70_100].fill(0xAB);
    new.extend_from_slice(&old[..50_000]);
    let (old_path, new_path) = (dir.join("old.img"), dir.join("new.img"));
    std::fs::write(&old_path, &old).unwrap();
    std::fs::write(&new_path, &new).unwrap();
    (old_path, new_path, new)
}

fn run(example: &Path, dir: &Path, args: &[&Path]) -> (Output, String, String) {
    let output = Command::new(example)
        .args(args)
        .env("TMPDIR", dir)
        .output()
        .expect("run the example");
    let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
    let stderr = String::from_utf8_lossy(&output.stderr).into_owned();
    (output, stdout, stderr)
}

fn check_applied(stdout: &str, out: &Path, new: &[u8]) {
    let digest = blake3::hash(new).to_hex().to_string();
    assert_eq!(
        std::fs::read(out).unwrap(),
        new,
        "target differs from the new image"
    );
    let last = stdout.lines().last().unwrap_or("");
    assert!(
        last.starts_with(&format!("applied {}: {} bytes", out.display(), new.len()))
            && last.ends_with(&format!("blake3 {digest}")),
        "{stdout}"
    );
    for step in ["progress 0 ", "progress 1 ", "progress 2 ", "progress 5 "] {
        assert!(stdout.contains(step), "no `{step}` line:\n{stdout}");
    }
    let applying = stdout
        .lines()
        .rfind(|l| l.starts_with("progress 1 "))
        .expect("an applying line");
    assert!(
        applying.ends_with(&format!("/{}", new.len())),
        "the applying step counts the new image's bytes: {applying}"
    );
}

#[test]
fn the_c_example_applies_a_delta_and_reports_errors() {
    let lib = library_dir();
    let dir = tempfile::tempdir().unwrap();
    let (old, new_path, new) = images(dir.path());
    let delta = dir.path().join("update.delta");
    let options = delta_gen::GenOptions {
        threads: 1,
        ..Default::default()
    };
    delta_gen::generate(Some(&old), &new_path, &delta, &options).unwrap();

    let example = dir.path().join("apply-static");
    compile(
        &example,
        &[
            lib.join("libdelta.a").to_str().unwrap(),
            "-lpthread",
            "-ldl",
            "-lm",
        ],
    );
    let out = dir.path().join("out.img");
    let (output, stdout, stderr) = run(&example, dir.path(), &[&old, &delta, &out]);
    assert!(output.status.success(), "{stdout}\n{stderr}");
    check_applied(&stdout, &out, &new);

    // A damaged payload: exit 1, the message names the delta, no target.
    let mut bytes = std::fs::read(&delta).unwrap();
    let last = bytes.len() - 1;
    bytes[last] ^= 0x55;
    let bad = dir.path().join("bad.delta");
    std::fs::write(&bad, &bytes).unwrap();
    let bad_out = dir.path().join("bad-out.img");
    let (output, stdout, stderr) = run(&example, dir.path(), &[&old, &bad, &bad_out]);
    assert_eq!(output.status.code(), Some(1), "{stdout}\n{stderr}");
    assert!(
        stderr.starts_with("error: delta ") && stderr.contains("bad.delta"),
        "{stderr}"
    );
    assert!(!bad_out.exists());

    // A full-image payload through the shared library, found by its
    // soname libdelta.so.ABI (the ABI version, which build.rs gives it),
    // zero runs compared.
    let full = dir.path().join("full.delta");
    delta_gen::generate(None, &new_path, &full, &options).unwrap();
    let soname = format!("libdelta.so.{}", delta::DELTA_ABI_VERSION);
    let linked = dir.path().join("lib");
    std::fs::create_dir(&linked).unwrap();
    std::os::unix::fs::symlink(lib.join("libdelta.so"), linked.join(&soname)).unwrap();
    let example = dir.path().join("apply-shared");
    compile(
        &example,
        &[
            lib.join("libdelta.so").to_str().unwrap(),
            &format!("-Wl,-rpath,{}", linked.display()),
        ],
    );
    let out = dir.path().join("full-out.img");
    let args = [
        Path::new("--compare-zero-runs"),
        Path::new("-"),
        &full,
        &out,
    ];
    let (output, stdout, stderr) = run(&example, dir.path(), &args);
    assert!(output.status.success(), "{stdout}\n{stderr}");
    check_applied(&stdout, &out, &new);
}
