//! `check_data` against GNU tar, the limit, early stop, errors.

mod common;

use std::fs;
use std::os::unix::fs::MetadataExt;
use std::os::unix::net::UnixListener;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, SystemTime};

use common::{gnu_tar, gnu_tar_members, mixed_tree, relative_difference, write_noise, Rng};
use delta_datacheck::{check_data, check_data_with_progress, CheckOptions, Error, DEFAULT_LIMIT};

fn options(limit: u64, threads: usize, block_size: usize) -> CheckOptions {
    CheckOptions {
        limit,
        threads,
        block_size,
    }
}

#[test]
fn agrees_with_gnu_tar_on_a_mixed_folder() {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path();
    mixed_tree(root, 42);
    let _socket = UnixListener::bind(root.join("cache/app.sock")).unwrap();
    // A device node where the sandbox allows one (GNU tar archives its header).
    let _ = Command::new("mknod")
        .arg(root.join("cache/null"))
        .args(["c", "1", "3"])
        .status();

    let report = check_data(root, &CheckOptions::default()).unwrap();

    let tar = gnu_tar(root, false);
    let tgz = gnu_tar(root, true);
    assert_eq!(report.tar_bytes, tar.len() as u64, "tar stream length");
    assert_eq!(report.files, gnu_tar_members(&tar), "member count");
    let diff = relative_difference(report.compressed_bytes, tgz.len() as u64);
    assert!(
        diff < 0.01,
        "ours {} vs tar -cz {} ({:.3}%)",
        report.compressed_bytes,
        tgz.len(),
        diff * 100.0
    );
    assert!(!report.over_limit);
    assert_eq!(report.limit, DEFAULT_LIMIT);
    assert_eq!(
        report.warnings,
        vec!["./cache/app.sock: socket ignored".to_string()]
    );
}

#[test]
fn thread_count_does_not_change_the_count() {
    let tmp = tempfile::tempdir().unwrap();
    mixed_tree(tmp.path(), 7);
    let one = check_data(tmp.path(), &options(DEFAULT_LIMIT, 1, 256 << 10)).unwrap();
    let four = check_data(tmp.path(), &options(DEFAULT_LIMIT, 4, 256 << 10)).unwrap();
    assert_eq!(one, four);
}

#[test]
fn just_under_and_just_over_the_limit() {
    let tmp = tempfile::tempdir().unwrap();
    mixed_tree(tmp.path(), 3);
    let exact = check_data(tmp.path(), &options(u64::MAX, 2, 128 << 10)).unwrap();
    assert!(!exact.over_limit);
    let size = exact.compressed_bytes;

    let at = check_data(tmp.path(), &options(size, 2, 128 << 10)).unwrap();
    assert!(!at.over_limit, "exactly at the limit fits");
    assert_eq!(at.compressed_bytes, size);

    let under = check_data(tmp.path(), &options(size - 1, 2, 128 << 10)).unwrap();
    assert!(under.over_limit, "one byte over does not fit");
    assert!(under.compressed_bytes > size - 1);
    assert_eq!(under.limit, size - 1);
}

#[test]
fn stops_early_on_incompressible_data() {
    let tmp = tempfile::tempdir().unwrap();
    for i in 0..4 {
        write_noise(&tmp.path().join(format!("noise{i}")), 16 << 20, 100 + i);
    }
    let report = check_data(tmp.path(), &options(4_000_000, 2, 1 << 20)).unwrap();
    assert!(report.over_limit);
    assert!(report.compressed_bytes > 4_000_000);
    // 64 MiB in the folder; stopping costs the limit plus the blocks in
    // flight (2 × threads + 1 MiB), not the whole folder.
    assert!(
        report.tar_bytes < 12 << 20,
        "read {} tar bytes",
        report.tar_bytes
    );
    assert!(report.compressed_bytes < 12 << 20);
}

#[test]
fn zero_limit_is_always_over() {
    let tmp = tempfile::tempdir().unwrap();
    let report = check_data(tmp.path(), &options(0, 1, 1 << 20)).unwrap();
    assert!(report.over_limit);
    assert!(report.compressed_bytes > 0);
}

/// GNU tar warns "File removed before we read it" and exits 1 with a whole
/// archive of what is left: not a failure of the backup.
#[test]
fn files_vanishing_during_the_walk_are_warnings() {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path();
    let mut rng = Rng::new(5);
    for i in 0..4 {
        fs::write(root.join(format!("big{i}")), rng.bytes(2 << 20)).unwrap();
    }
    let victims = 100;
    for i in 0..victims {
        fs::write(root.join(format!("v{i}")), format!("victim {i}")).unwrap();
    }
    // The root's names are listed before its first entry is read; once the
    // first block is counted, delete every victim not archived yet.
    let mut deleted = false;
    let report = check_data_with_progress(root, &options(u64::MAX, 2, 64 << 10), |_| {
        if !deleted {
            deleted = true;
            for i in 0..victims {
                let _ = fs::remove_file(root.join(format!("v{i}")));
            }
        }
    })
    .unwrap();
    assert!(deleted);
    let vanished = report
        .warnings
        .iter()
        .filter(|w| w.ends_with(": File removed before we read it"))
        .count() as u64;
    assert!(
        vanished > 0,
        "no victim was deleted in time: {:?}",
        report.warnings
    );
    assert_eq!(
        report.warnings.len() as u64,
        vanished,
        "{:?}",
        report.warnings
    );
    // "./", the big files, and the victims archived before they went.
    assert_eq!(report.files + vanished, 1 + 4 + victims);
}

/// The regular files and directories under `root` (listing them reads the
/// directories, so do it before aging). Symlinks are left out: the kernel
/// updates their atime on readlink, whatever the flags. The fifo is only
/// stat'ed by the check, and opening it here would block.
fn files_and_dirs(root: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut stack = vec![root.to_path_buf()];
    while let Some(path) = stack.pop() {
        let meta = fs::symlink_metadata(&path).unwrap();
        if meta.is_dir() {
            for entry in fs::read_dir(&path).unwrap() {
                stack.push(entry.unwrap().path());
            }
        }
        if meta.is_file() || meta.is_dir() {
            out.push(path);
        }
    }
    out.sort();
    out
}

/// Access times by `lstat`, which does not change them.
fn atimes(paths: &[PathBuf]) -> Vec<(i64, i64)> {
    paths
        .iter()
        .map(|p| {
            let meta = fs::symlink_metadata(p).unwrap();
            (meta.atime(), meta.atime_nsec())
        })
        .collect()
}

/// Sets access times to 2001, before every mtime, so that even relatime
/// would update them on the next read.
fn age(paths: &[PathBuf]) {
    let old = SystemTime::UNIX_EPOCH + Duration::from_secs(1_000_000_000);
    for path in paths {
        let file = fs::File::open(path).unwrap();
        file.set_times(fs::FileTimes::new().set_accessed(old))
            .unwrap();
    }
}

#[test]
fn access_times_are_left_alone() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    fs::create_dir(&data).unwrap();
    mixed_tree(&data, 9);
    let control = tmp.path().join("control");
    fs::create_dir(&control).unwrap();
    fs::write(control.join("file"), b"read me").unwrap();

    // Does this file system update atime on reads at all? If not, the check
    // below could not fail.
    let control_paths = files_and_dirs(&control);
    age(&control_paths);
    let before = atimes(&control_paths);
    fs::read(control.join("file")).unwrap();
    fs::read_dir(&control).unwrap().for_each(drop);
    let after = atimes(&control_paths);
    if after.iter().zip(&before).all(|(a, b)| a == b) {
        eprintln!("skipped: this file system does not update access times (noatime?)");
        return;
    }
    assert!(
        after.iter().zip(&before).all(|(a, b)| a != b),
        "plain reads update file and dir atimes"
    );

    let paths = files_and_dirs(&data);
    age(&paths);
    let before = atimes(&paths);
    let report = check_data(&data, &CheckOptions::default()).unwrap();
    assert!(report.files > 400);
    let after = atimes(&paths);
    let changed: Vec<_> = paths
        .iter()
        .zip(before.iter().zip(&after))
        .filter(|(_, (b, a))| b != a)
        .map(|(p, (b, a))| format!("{}: {b:?} -> {a:?}", p.display()))
        .collect();
    assert!(
        changed.is_empty(),
        "check_data changed access times:\n{}",
        changed.join("\n")
    );
}

#[test]
fn missing_folder_is_an_error_naming_it() {
    let tmp = tempfile::tempdir().unwrap();
    let missing = tmp.path().join("resin-data");
    let err = check_data(&missing, &CheckOptions::default()).unwrap_err();
    assert!(matches!(err, Error::NotFound { ref path } if *path == missing));
    assert!(
        err.to_string().contains(&missing.display().to_string()),
        "{err}"
    );
}

#[test]
fn a_file_is_not_a_data_folder() {
    let tmp = tempfile::tempdir().unwrap();
    let file = tmp.path().join("resin-data");
    fs::write(&file, b"not a folder").unwrap();
    let err = check_data(&file, &CheckOptions::default()).unwrap_err();
    assert!(matches!(err, Error::NotADirectory { ref path } if *path == file));
    assert!(err.to_string().contains("not a directory"), "{err}");
}

#[test]
fn a_symlink_to_the_folder_is_followed_like_tar_c() {
    let tmp = tempfile::tempdir().unwrap();
    let real = tmp.path().join("real");
    fs::create_dir(&real).unwrap();
    fs::write(real.join("f"), b"contents").unwrap();
    let link = tmp.path().join("link");
    std::os::unix::fs::symlink(&real, &link).unwrap();
    let via_link = check_data(&link, &CheckOptions::default()).unwrap();
    let direct = check_data(&real, &CheckOptions::default()).unwrap();
    assert_eq!(via_link, direct);
    assert_eq!(direct.files, 2);
}

#[test]
fn bad_options_are_refused() {
    let tmp = tempfile::tempdir().unwrap();
    let err = check_data(tmp.path(), &options(DEFAULT_LIMIT, 1, 100)).unwrap_err();
    assert!(
        matches!(
            err,
            Error::InvalidOption {
                name: "block_size",
                ..
            }
        ),
        "{err}"
    );
}
