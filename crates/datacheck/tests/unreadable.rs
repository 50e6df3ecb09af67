//! Entries the caller may not read are left out with GNU tar's warning.
//!
//! Root reads everything, so when the tests run as root this test re-runs
//! itself as `nobody` through `setpriv` (skipping, with a note, where
//! `setpriv` is missing). As `nobody` the files are owned by someone else,
//! so it also exercises the retry without `O_NOATIME` after `EPERM`.

mod common;

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::Command;

use common::{gnu_tar, gnu_tar_members, mixed_tree, relative_difference};
use delta_datacheck::{check_data, CheckOptions};

const CHILD_ENV: &str = "DATACHECK_UNREADABLE_DIR";
const TEST_NAME: &str = "unreadable_entries_are_left_out_with_a_warning";

#[test]
fn unreadable_entries_are_left_out_with_a_warning() {
    if let Ok(dir) = std::env::var(CHILD_ENV) {
        check_as_unprivileged(Path::new(&dir));
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path();
    mixed_tree(root, 11);
    fs::write(root.join("secret"), b"top secret").unwrap();
    fs::create_dir(root.join("private")).unwrap();
    fs::write(root.join("private/inside"), b"hidden").unwrap();
    fs::set_permissions(root.join("secret"), fs::Permissions::from_mode(0o000)).unwrap();
    fs::set_permissions(root.join("private"), fs::Permissions::from_mode(0o000)).unwrap();

    if !rustix::process::geteuid().is_root() {
        check_as_unprivileged(root);
        return;
    }
    if Command::new("setpriv").arg("--version").output().is_err() {
        eprintln!("skipped: running as root (everything is readable) and setpriv is missing");
        return;
    }
    // tempdir makes the folder 0700; nobody must be able to enter it.
    fs::set_permissions(root, fs::Permissions::from_mode(0o755)).unwrap();
    let me = std::env::current_exe().unwrap();
    let out = Command::new("setpriv")
        .args(["--reuid=65534", "--regid=65534", "--clear-groups", "--"])
        .arg(&me)
        .args(["--exact", TEST_NAME, "--nocapture", "--test-threads=1"])
        .env(CHILD_ENV, root)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "child run as nobody failed:\n{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stdout.contains("1 passed"), "child ran no test:\n{stdout}");
}

fn check_as_unprivileged(root: &Path) {
    let report = check_data(root, &CheckOptions::default()).unwrap();
    let mut warnings = report.warnings.clone();
    warnings.sort();
    assert_eq!(
        warnings,
        vec![
            "./private: Cannot open: Permission denied (os error 13)".to_string(),
            "./secret: Cannot open: Permission denied (os error 13)".to_string(),
        ]
    );
    // GNU tar, run as the same user, leaves the same two out (exit 2).
    let tar = gnu_tar(root, false);
    let tgz = gnu_tar(root, true);
    assert_eq!(report.tar_bytes, tar.len() as u64);
    assert_eq!(report.files, gnu_tar_members(&tar));
    let diff = relative_difference(report.compressed_bytes, tgz.len() as u64);
    assert!(
        diff < 0.01,
        "ours {} vs tar -cz {}",
        report.compressed_bytes,
        tgz.len()
    );
}
