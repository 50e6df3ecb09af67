//! An entry the caller may not read stops the check with an error: GNU tar
//! would leave it out and exit 2, and the migration script, which stops on
//! that, would be left half-way.
//!
//! Root reads everything, so when the tests run as root each one re-runs
//! itself as `nobody` through `setpriv` (failing where
//! `setpriv` is missing). As `nobody` the files are owned by someone else,
//! so this also exercises the retry without `O_NOATIME` after `EPERM`.

mod common;

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::{Command, Stdio};

use common::mixed_tree;
use delta_datacheck::{check_data, CheckOptions, Error};

const CHILD_ENV: &str = "DATACHECK_UNREADABLE_DIR";

/// Runs `check` on a copy of the mixed tree with `deny` applied, as
/// `nobody` if we are root. `test` is the calling test's name, which the
/// child re-runs alone.
fn as_unprivileged(test: &str, deny: fn(&Path), check: fn(&Path)) {
    if let Ok(dir) = std::env::var(CHILD_ENV) {
        check(Path::new(&dir));
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path();
    mixed_tree(root, 11);
    deny(root);
    if !rustix::process::geteuid().is_root() {
        check(root);
        return;
    }
    // Root reads everything, so the check runs again as `nobody`; without
    // setpriv (util-linux, which .ci/run installs) the test cannot run,
    // and says so by failing.
    assert!(
        Command::new("setpriv").arg("--version").output().is_ok(),
        "running as root (everything is readable) and setpriv is missing: install util-linux"
    );
    // tempdir makes the folder 0700; nobody must be able to enter it.
    fs::set_permissions(root, fs::Permissions::from_mode(0o755)).unwrap();
    let me = std::env::current_exe().unwrap();
    let out = Command::new("setpriv")
        .args(["--reuid=65534", "--regid=65534", "--clear-groups", "--"])
        .arg(&me)
        .args(["--exact", test, "--nocapture", "--test-threads=1"])
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

/// GNU tar's exit status and messages for `tar -cf - -C root .`, run as
/// the same user. Its output goes to a pipe: writing to `/dev/null`, GNU
/// tar does not even open the files.
fn gnu_tar_status(root: &Path) -> (Option<i32>, String) {
    let out = Command::new("tar")
        .args(["-cf", "-", "-C"])
        .arg(root)
        .arg(".")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .output()
        .expect("GNU tar runs");
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// `check_data` fails on `root` naming `inside` (relative to `root`) and the
/// errno, in one line, and GNU tar fails there too, with exit status 2.
fn assert_refused(root: &Path, op: &str, inside: &str, tar_says: &str) {
    let err = check_data(root, &CheckOptions::default()).unwrap_err();
    let path = root.join(inside);
    match &err {
        Error::Unreadable {
            op: got_op,
            path: got_path,
            source,
        } => {
            assert_eq!(*got_op, op, "{err}");
            assert_eq!(*got_path, path, "{err}");
            assert_eq!(source.raw_os_error(), Some(13), "{err}");
        }
        other => panic!("expected Error::Unreadable, got {other:?}"),
    }
    assert_eq!(
        err.to_string(),
        format!(
            "backup would fail: cannot {op} {}: Permission denied (os error 13); tar would exit 2",
            path.display()
        )
    );
    let (status, stderr) = gnu_tar_status(root);
    assert_eq!(status, Some(2), "GNU tar: {stderr}");
    let expected = format!("tar: ./{inside}: {tar_says}: Permission denied");
    assert!(stderr.contains(&expected), "GNU tar said: {stderr}");
}

#[test]
fn unreadable_file_is_an_error() {
    as_unprivileged(
        "unreadable_file_is_an_error",
        |root| {
            let secret = root.join("db/shard1/secret");
            fs::write(&secret, b"top secret").unwrap();
            fs::set_permissions(&secret, fs::Permissions::from_mode(0o000)).unwrap();
        },
        |root| assert_refused(root, "open", "db/shard1/secret", "Cannot open"),
    );
}

#[test]
fn unreadable_folder_is_an_error() {
    as_unprivileged(
        "unreadable_folder_is_an_error",
        |root| {
            let private = root.join("private");
            fs::create_dir(&private).unwrap();
            fs::write(private.join("inside"), b"hidden").unwrap();
            fs::set_permissions(&private, fs::Permissions::from_mode(0o000)).unwrap();
        },
        |root| assert_refused(root, "open", "private", "Cannot open"),
    );
}

/// A folder that may be listed but not entered (`r--`): its names are
/// read, but none of them can be stat'ed.
#[test]
fn folder_that_cannot_be_entered_is_an_error() {
    as_unprivileged(
        "folder_that_cannot_be_entered_is_an_error",
        |root| {
            let listed = root.join("listed");
            fs::create_dir(&listed).unwrap();
            fs::write(listed.join("only"), b"cannot stat me").unwrap();
            fs::set_permissions(&listed, fs::Permissions::from_mode(0o444)).unwrap();
        },
        |root| assert_refused(root, "stat", "listed/only", "Cannot stat"),
    );
}
