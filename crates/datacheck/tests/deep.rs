//! Deep nesting: the walk holds a bounded number of descriptors, however
//! deep the folder, and its memory grows with the depth, not its square.
//!
//! Each test builds its tree, then re-runs itself alone in a child process
//! whose open-file limit it lowers, so that the rest of the test binary
//! keeps its own.

mod common;

use std::path::Path;

use common::{gnu_tar, gnu_tar_len, gnu_tar_members, relative_difference, run_child, DeepTree};
use delta_datacheck::{check_data, CheckOptions};
use rustix::process::{getrlimit, setrlimit, Resource, Rlimit};

const CHILD_ENV: &str = "DATACHECK_DEEP_DIR";

/// Lowers this process's soft limit on open files to `n`.
fn limit_descriptors(n: u64) {
    let hard = getrlimit(Resource::Nofile).maximum;
    setrlimit(
        Resource::Nofile,
        Rlimit {
            current: Some(n),
            maximum: hard,
        },
    )
    .unwrap();
}

/// Peak resident set size of this process so far, in KiB (`VmHWM`).
fn peak_rss_kib() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    status
        .lines()
        .find_map(|line| line.strip_prefix("VmHWM:"))
        .and_then(|rest| rest.trim().strip_suffix("kB"))
        .and_then(|kib| kib.trim().parse().ok())
        .expect("VmHWM in /proc/self/status")
}

/// 2,000 levels, each with two files, under a limit of 256 open files:
/// one descriptor per level would run out at about 250.
#[test]
fn depth_2000_with_256_descriptors_matches_gnu_tar() {
    if let Ok(dir) = std::env::var(CHILD_ENV) {
        limit_descriptors(256);
        let root = Path::new(&dir);
        let report = check_data(root, &CheckOptions::default()).unwrap_or_else(|e| panic!("{e}"));
        assert!(report.warnings.is_empty(), "{:?}", report.warnings);
        // GNU tar, under the same limit.
        let tar = gnu_tar(root, false);
        let tgz = gnu_tar(root, true);
        assert_eq!(report.tar_bytes, tar.len() as u64, "tar stream length");
        assert_eq!(report.files, gnu_tar_members(&tar), "member count");
        assert_eq!(report.files, 1 + 2000 + 2 * 2000);
        let diff = relative_difference(report.compressed_bytes, tgz.len() as u64);
        assert!(
            diff < 0.01,
            "ours {} vs tar -cz {}",
            report.compressed_bytes,
            tgz.len()
        );
        return;
    }
    let tree = DeepTree::new(2000, 1);
    run_child(
        "depth_2000_with_256_descriptors_matches_gnu_tar",
        CHILD_ENV,
        tree.path(),
    );
}

/// 10,000 levels (20 KB paths, a 130 MB tar stream of long names), files
/// on every tenth: a few MiB of memory, not the 160 MiB that a copy of the
/// path per level costs, and still GNU tar's stream length.
#[test]
fn depth_10000_in_little_memory() {
    if let Ok(dir) = std::env::var(CHILD_ENV) {
        limit_descriptors(256);
        let root = Path::new(&dir);
        let options = CheckOptions {
            threads: 2,
            ..CheckOptions::default()
        };
        let report = check_data(root, &options).unwrap_or_else(|e| panic!("{e}"));
        let peak = peak_rss_kib();
        println!("peak RSS {peak} KiB");
        assert!(!report.over_limit);
        assert!(report.warnings.is_empty(), "{:?}", report.warnings);
        assert_eq!(report.files, 1 + 10_000 + 2 * 1000);
        assert_eq!(report.tar_bytes, gnu_tar_len(root), "tar stream length");
        // Blocks in flight (5 MiB with 2 threads), zlib, the test harness;
        // the walk itself adds about 1 MiB at this depth.
        assert!(peak < 48 * 1024, "peak RSS {peak} KiB");
        return;
    }
    let tree = DeepTree::new(10_000, 10);
    let out = run_child("depth_10000_in_little_memory", CHILD_ENV, tree.path());
    // libtest prints the child's output after "test NAME ... ".
    if let Some(at) = out.find("peak RSS") {
        eprintln!("child: {}", out[at..].lines().next().unwrap_or_default());
    }
}
