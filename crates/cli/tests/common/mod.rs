//! Helpers shared by the CLI's device tests: loop devices, tmpfs mounts,
//! and reporting what this machine cannot do.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

/// A loop device over a file, detached on drop.
pub struct LoopDevice {
    pub path: PathBuf,
}

impl LoopDevice {
    /// Attaches `file` (with `-P` to scan partitions). `None`, with the
    /// reason printed, where the machine cannot; a failure when
    /// `require_env` is set to 1.
    pub fn attach(file: &Path, partitions: bool, require_env: &str) -> Option<LoopDevice> {
        let mut last = String::new();
        for _ in 0..5 {
            let mut cmd = Command::new("losetup");
            cmd.args(["-f", "--show"]);
            if partitions {
                cmd.arg("-P");
            }
            match cmd.arg(file).output() {
                Ok(out) if out.status.success() => {
                    let path = PathBuf::from(String::from_utf8_lossy(&out.stdout).trim());
                    return Some(LoopDevice { path });
                }
                Ok(out) => last = String::from_utf8_lossy(&out.stderr).into_owned(),
                Err(e) => last = e.to_string(),
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        cannot("make a loop device", &last, require_env);
        None
    }

    pub fn path(&self) -> &str {
        self.path.to_str().unwrap()
    }
}

impl Drop for LoopDevice {
    fn drop(&mut self) {
        let _ = Command::new("losetup").arg("-d").arg(&self.path).status();
    }
}

/// Reports that this machine cannot run a test: a failure when the
/// environment variable `require_env` is 1, else a line in the output.
pub fn cannot(what: &str, why: &str, require_env: &str) {
    let why = why.trim();
    assert!(
        std::env::var(require_env).as_deref() != Ok("1"),
        "{require_env}=1 but this machine cannot {what}: {why}"
    );
    println!("NOT RUN on this machine: cannot {what}: {why} (set {require_env}=1 to require it)");
}

/// Mounts a tmpfs of `size` (mount's units) at `dir`. False, with the reason
/// printed, where the machine cannot; a failure when
/// `DELTA_REQUIRE_MOUNTS=1` (set by `.ci/run` when it can).
pub fn mount_tmpfs(dir: &Path, size: &str) -> bool {
    let out = Command::new("mount")
        .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
        .arg(dir)
        .output();
    match out {
        Ok(out) if out.status.success() => true,
        Ok(out) => {
            cannot(
                "mount a tmpfs",
                &String::from_utf8_lossy(&out.stderr),
                "DELTA_REQUIRE_MOUNTS",
            );
            false
        }
        Err(e) => {
            cannot("mount a tmpfs", &e.to_string(), "DELTA_REQUIRE_MOUNTS");
            false
        }
    }
}
