//! The applier never writes outside its target, whatever the caller names:
//! planted symlinks, the old image under a name this run writes, loop
//! devices and whole disks over the old image, device nodes, FIFOs, folders,
//! deltas asking for more work than the target can take, and stale
//! journals. After each test the old image and every file outside the
//! target are compared byte for byte with what they held before.
//!
//! Tests that need loop devices run where the machine can make them (root
//! with `/dev/loop-control`). Elsewhere they print why they did not run;
//! with `DELTA_REQUIRE_DEVICES=1` (set by `.ci/run` when the machine can)
//! they fail instead. `DELTA_REQUIRE_PARTITIONS=1` does the same for loop
//! devices with partitions.

mod common;

use common::{cannot, delta_in, LoopDevice, APPLY_DEFAULTS};
use delta_format::{Header, Index, Op, SegmentEntry};
use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

fn testdata(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../testdata")
        .join(name)
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// A scratch folder with the sample pair, a delta of it, and byte-for-byte
/// copies of every file that must survive each test unchanged.
struct Scene {
    dir: tempfile::TempDir,
    /// Files that must keep their bytes, with the bytes.
    kept: Vec<(PathBuf, Vec<u8>)>,
}

impl Scene {
    fn new() -> Scene {
        let dir = tempfile::tempdir().unwrap();
        for name in ["old.img", "new.img"] {
            fs::copy(testdata(&format!("sample/{name}")), dir.path().join(name)).unwrap();
        }
        fs::write(dir.path().join("victim"), b"a file outside the target\n").unwrap();
        let scene = Scene {
            dir,
            kept: Vec::new(),
        };
        let out = scene.run(&["gen", "old.img", "new.img", "-o", "u.delta"]);
        assert!(out.status.success(), "{}", stderr(&out));
        scene.keeping(&["old.img", "new.img", "u.delta", "victim"])
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    /// Adds files (relative to the scene) whose bytes must not change.
    fn keeping(mut self, names: &[&str]) -> Scene {
        for name in names {
            let path = self.path(name);
            let bytes = fs::read(&path).unwrap();
            self.kept.push((path, bytes));
        }
        self
    }

    /// `delta ARGS` in the scene; an `apply` with the device's paths
    /// inside it, the journal of a block device in `state`.
    fn command(&self, args: &[&str]) -> Command {
        let defaults: Vec<(&str, &str)> = APPLY_DEFAULTS
            .iter()
            .map(|&(flag, value)| match flag {
                "--state-dir" => (flag, "state"),
                _ => (flag, value),
            })
            .collect();
        delta_in(self.dir.path(), args, &defaults)
    }

    /// Runs `delta`, killing it (and failing) if it takes over 60 s.
    fn run(&self, args: &[&str]) -> Output {
        wait_bounded(self.command(args), args)
    }

    fn apply(&self, old: &str, target: &str, extra: &[&str]) -> Output {
        let mut args = vec!["apply", old, "u.delta", "-o", target];
        args.extend_from_slice(extra);
        self.run(&args)
    }

    /// Asserts exit code 1 with one `error:` line holding `needle`.
    fn assert_refused(&self, out: &Output, needle: &str) {
        let err = stderr(out);
        assert_eq!(out.status.code(), Some(1), "stderr: {err}");
        assert!(err.starts_with("error: "), "stderr: {err}");
        assert_eq!(err.lines().count(), 1, "one line expected: {err}");
        assert!(err.contains(needle), "expected {needle:?} in: {err}");
    }

    fn assert_success(&self, out: &Output) {
        assert!(out.status.success(), "stderr: {}", stderr(out));
    }

    fn assert_target_is_new_image(&self, target: &str) {
        let new = fs::read(self.path("new.img")).unwrap();
        let got = fs::read(self.path(target)).unwrap();
        assert!(
            got.get(..new.len()) == Some(&new[..]),
            "{target} is not the new image"
        );
    }

    /// The text of every update log written.
    fn logs(&self) -> String {
        let Ok(entries) = fs::read_dir(self.path("logs")) else {
            return String::new();
        };
        let mut text = String::new();
        for entry in entries {
            text.push_str(&fs::read_to_string(entry.unwrap().path()).unwrap());
        }
        text
    }
}

impl Drop for Scene {
    fn drop(&mut self) {
        if std::thread::panicking() {
            return;
        }
        for (path, bytes) in &self.kept {
            let now = fs::read(path).unwrap_or_default();
            assert!(&now == bytes, "{} changed", path.display());
        }
    }
}

/// Runs `cmd`, killing it (and failing) if it takes over 60 s.
fn wait_bounded(mut cmd: Command, args: &[&str]) -> Output {
    let mut child = cmd
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let started = Instant::now();
    while child.try_wait().unwrap().is_none() {
        if started.elapsed() > Duration::from_secs(60) {
            child.kill().unwrap();
            panic!("delta {args:?} hung for 60 s");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    child.wait_with_output().unwrap()
}

#[test]
fn planted_symlink_at_partial_is_not_followed() {
    for pointing_at in ["victim", "old.img"] {
        let scene = Scene::new();
        std::os::unix::fs::symlink(pointing_at, scene.path("out.img.partial")).unwrap();
        let out = scene.apply("old.img", "out.img", &[]);
        scene.assert_success(&out);
        scene.assert_target_is_new_image("out.img");
        assert!(!scene.path("out.img.partial").exists());
    }
}

#[test]
fn planted_symlink_at_journal_temp_is_not_followed() {
    for pointing_at in ["victim", "old.img"] {
        let scene = Scene::new();
        std::os::unix::fs::symlink(pointing_at, scene.path("out.img.journal.tmp")).unwrap();
        let out = scene.apply("old.img", "out.img", &[]);
        scene.assert_success(&out);
        scene.assert_target_is_new_image("out.img");
    }
}

#[test]
fn old_image_under_a_name_this_run_writes_is_refused() {
    // Named OUT.partial, hard-linked as OUT.partial, named OUT.journal.
    let scene = Scene::new();
    fs::copy(scene.path("old.img"), scene.path("x.img.partial")).unwrap();
    let scene = scene.keeping(&["x.img.partial"]);
    let out = scene.apply("x.img.partial", "x.img", &[]);
    scene.assert_refused(&out, "x.img.partial is the old image");
    assert!(!scene.path("x.img").exists());

    fs::hard_link(scene.path("old.img"), scene.path("y.img.partial")).unwrap();
    let out = scene.apply("old.img", "y.img", &[]);
    scene.assert_refused(&out, "y.img.partial is the old image old.img");
    assert!(scene.path("y.img.partial").exists());

    fs::hard_link(scene.path("old.img"), scene.path("z.img.journal")).unwrap();
    let out = scene.apply("old.img", "z.img", &[]);
    scene.assert_refused(&out, "z.img.journal is the old image old.img");
    assert!(scene.path("z.img.journal").exists());
}

#[test]
fn device_nodes_fifos_and_folders_are_refused_as_targets_up_front() {
    let scene = Scene::new();
    let mknod = Command::new("mknod")
        .arg(scene.path("null"))
        .args(["c", "1", "3"])
        .output()
        .unwrap();
    let mkfifo = Command::new("mkfifo")
        .arg(scene.path("fifo"))
        .status()
        .unwrap();
    assert!(mkfifo.success());
    fs::create_dir(scene.path("folder")).unwrap();
    let mut cases = vec![
        ("fifo", "it is a FIFO (named pipe)"),
        ("folder", "it is a directory"),
    ];
    if mknod.status.success() {
        cases.push(("null", "it is a character device"));
    } else {
        cannot(
            "mknod a character device",
            &stderr(&mknod),
            "DELTA_REQUIRE_DEVICES",
        );
    }
    for (name, reason) in cases {
        let out = scene.apply("old.img", name, &[]);
        scene.assert_refused(&out, &format!("refusing to write {name}: {reason}"));
        assert!(!scene.path(&format!("{name}.partial")).exists());
        assert!(!scene.path(&format!("{name}.journal")).exists());
        let kind = fs::symlink_metadata(scene.path(name)).unwrap().file_type();
        assert!(!kind.is_file(), "{name} was replaced by a regular file");
    }
}

#[test]
fn fifos_as_inputs_or_lock_are_refused_without_hanging() {
    let scene = Scene::new();
    let mkfifo = Command::new("mkfifo")
        .arg(scene.path("fifo"))
        .status()
        .unwrap();
    assert!(mkfifo.success());
    let out = scene.apply("fifo", "out.img", &[]);
    scene.assert_refused(
        &out,
        "open old image fifo: is a FIFO (named pipe), not a regular file or a block device",
    );
    let out = scene.run(&["apply", "old.img", "fifo", "-o", "out.img"]);
    scene.assert_refused(&out, "open delta fifo: is a FIFO (named pipe)");
    let out = scene.apply(
        "old.img",
        "out.img",
        &["--no-log", "--instance-lock", "fifo"],
    );
    scene.assert_refused(&out, "instance lock fifo: it is a FIFO (named pipe)");
    assert!(!scene.path("out.img").exists());
}

#[test]
fn new_image_over_the_file_limit_is_refused_before_any_work() {
    let scene = Scene::new();
    let out = scene.apply("old.img", "out.img", &["--max-image-size", "1MiB"]);
    scene.assert_refused(
        &out,
        "delta u.delta: the new image is 2097698 bytes (header new_len), but the limit for a \
         file target is 1048576 bytes (--max-image-size)",
    );
    assert!(!scene.path("out.img.partial").exists());
    assert!(!scene.path("out.img.journal").exists());

    let out = scene.run(&["gen", "--full", "new.img", "-o", "full.delta"]);
    scene.assert_success(&out);
    let out = scene.run(&[
        "apply",
        "full.delta",
        "-o",
        "out.img",
        "--max-image-size",
        "2MB",
    ]);
    scene.assert_refused(&out, "limit for a file target is 2000000 bytes");
}

#[test]
fn stale_journals_are_discarded_and_the_apply_starts_over() {
    // A journal that says "verified" over a partial file that lost its end.
    let scene = Scene::new();
    fs::create_dir_all(scene.path("locks/1/main")).unwrap();
    let lock = fs::File::create(scene.path("locks/1/main/updates.lock")).unwrap();
    lock.lock().unwrap();
    let out = scene.apply("old.img", "out.img", &["--lock-timeout", "0.2"]);
    assert_eq!(out.status.code(), Some(3), "{}", stderr(&out));
    drop(lock);
    let journal = fs::read_to_string(scene.path("out.img.journal")).unwrap();
    assert!(journal.contains("verified"), "{journal}");
    let partial = fs::OpenOptions::new()
        .write(true)
        .open(scene.path("out.img.partial"))
        .unwrap();
    partial.set_len(1 << 20).unwrap();
    drop(partial);
    let out = scene.apply("old.img", "out.img", &[]);
    scene.assert_success(&out);
    scene.assert_target_is_new_image("out.img");
    assert!(stderr(&out).contains("discarding the journal and starting over"));
    assert!(scene
        .logs()
        .contains("warning: journal out.img.journal says the target is verified"));

    // A journal that says "verified" over a partial whose bytes rotted.
    let scene = Scene::new();
    fs::write(scene.path("out.img.partial"), vec![7u8; 2097698]).unwrap();
    let out = scene.apply("old.img", "out.img", &[]);
    scene.assert_success(&out);
    fs::copy(scene.path("out.img"), scene.path("out.img.partial")).unwrap();
    let mut bytes = fs::read(scene.path("out.img.partial")).unwrap();
    bytes[1000] ^= 1;
    fs::write(scene.path("out.img.partial"), bytes).unwrap();
    let record = format!(
        r#"{{"version":2,"delta_id":"{}","old":"old.img","target":"out.img","segments_done":1,"segment_bytes":0,"state":"verified"}}"#,
        delta_id(&scene.path("u.delta"))
    );
    fs::write(scene.path("out.img.journal"), record).unwrap();
    fs::remove_file(scene.path("out.img")).unwrap();
    let out = scene.apply("old.img", "out.img", &[]);
    scene.assert_success(&out);
    scene.assert_target_is_new_image("out.img");
    assert!(stderr(&out).contains("does not match the new image's digest"));

    // A journal path that is a folder: an empty one is removed, one that
    // holds files is named in the error, before anything is written.
    let scene = Scene::new();
    fs::create_dir(scene.path("out.img.journal")).unwrap();
    let out = scene.apply("old.img", "out.img", &[]);
    scene.assert_success(&out);
    assert!(
        stderr(&out).contains("it is a directory"),
        "{}",
        stderr(&out)
    );
    fs::remove_file(scene.path("out.img")).unwrap();
    fs::create_dir_all(scene.path("out.img.journal/keep")).unwrap();
    let out = scene.apply("old.img", "out.img", &[]);
    scene.assert_refused(&out, "remove stale journal folder out.img.journal");
    assert!(scene.path("out.img.journal/keep").is_dir());
    assert!(!scene.path("out.img.partial").exists());
}

/// A delta as a hostile generator would write it: header and table with
/// their digest right, each payload `payloads[i]`.
fn hostile_delta(header: &Header, segments: &[SegmentEntry], payloads: &[Vec<u8>]) -> Vec<u8> {
    let mut bytes = Index::encode(header, segments);
    for payload in payloads {
        bytes.extend_from_slice(payload);
    }
    bytes
}

#[test]
fn tiny_delta_asking_for_a_terabyte_is_refused_at_once() {
    let scene = Scene::new();
    let new_len = 1u64 << 40;
    let stream = delta_format::stream::encode(&[Op::Zero { len: new_len }], &[], &[]);
    let payload = zstd::bulk::compress(&stream, 3).unwrap();
    let entry = SegmentEntry {
        new_len,
        payload_len: payload.len() as u64,
        stream_len: stream.len() as u64,
        zero_len: new_len,
        payload_digest: *blake3::hash(&payload).as_bytes(),
        ..SegmentEntry::default()
    };
    let header = Header {
        flags: delta_format::FLAG_FULL,
        old_len: 0,
        new_len,
        old_digest: [0; 32],
        new_digest: [0; 32],
        block_size: 4096,
        zstd_level: 3,
        max_segment_len: new_len,
        apply_memory: entry.memory(),
        segment_count: 1,
    };
    let delta = hostile_delta(&header, &[entry], &[payload]);
    assert!(delta.len() < 400, "{} bytes", delta.len());
    fs::write(scene.path("tb.delta"), delta).unwrap();
    let started = Instant::now();
    let out = scene.run(&["apply", "tb.delta", "-o", "out.img"]);
    scene.assert_refused(
        &out,
        "delta tb.delta: the new image is 1099511627776 bytes (header new_len), but the limit \
         for a file target is 8589934592 bytes (--max-image-size)",
    );
    assert!(started.elapsed() < Duration::from_secs(30));
    assert!(!scene.path("out.img.partial").exists());
}

#[test]
fn segments_rereading_the_old_image_are_refused_by_the_table_check() {
    // 2,000 one-byte segments, each with the whole 2 MiB old image as its
    // window: 4 GB of reads from a delta of a few hundred KB.
    let scene = Scene::new();
    let old_len = fs::metadata(scene.path("old.img")).unwrap().len();
    let count = 2000u64;
    let entry = SegmentEntry {
        new_len: 1,
        payload_len: 1,
        stream_len: 8,
        ref_offset: 0,
        ref_len: old_len,
        literal_len: 1,
        ..SegmentEntry::default()
    };
    let header = Header {
        flags: 0,
        old_len,
        new_len: count,
        old_digest: [0; 32],
        new_digest: [0; 32],
        block_size: 4096,
        zstd_level: 3,
        max_segment_len: 1,
        apply_memory: entry.memory(),
        segment_count: count,
    };
    let segments = vec![entry; count as usize];
    let payloads = vec![vec![0u8]; count as usize];
    fs::write(
        scene.path("reread.delta"),
        hostile_delta(&header, &segments, &payloads),
    )
    .unwrap();
    let out = scene.run(&["apply", "old.img", "reread.delta", "-o", "out.img"]);
    let limit = delta_format::max_reference_total(old_len, count);
    scene.assert_refused(
        &out,
        &format!("sum of segment ref_len up to segment[{}]", limit / old_len),
    );
    assert!(stderr(&out).contains(&format!("{limit} bytes of old image read in all")));
}

/// The journal's id of a delta: the hex digest stored after its table.
fn delta_id(delta: &Path) -> String {
    let bytes = fs::read(delta).unwrap();
    let count = u64::from_le_bytes(bytes[120..128].try_into().unwrap()) as usize;
    let end = 128 + count * delta_format::ENTRY_LEN + 32;
    bytes[end - 32..end]
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

#[test]
fn loop_device_over_the_old_image_is_refused() {
    let scene = Scene::new();
    let Some(lo) = LoopDevice::attach(&scene.path("old.img"), false, "DELTA_REQUIRE_DEVICES")
    else {
        return;
    };
    let out = scene.apply("old.img", lo.path(), &[]);
    scene.assert_refused(&out, "its storage overlaps the old image old.img");
    // The old image as the loop device, the file as the target.
    let out = scene.apply(lo.path(), "old.img", &[]);
    scene.assert_refused(
        &out,
        &format!(
            "refusing to write old.img: it is the old image {}",
            lo.path()
        ),
    );
}

#[test]
fn loop_device_target_over_another_file_is_written_in_place() {
    let scene = Scene::new();
    fs::write(scene.path("slot.img"), vec![0xAAu8; 4 << 20]).unwrap();
    let Some(lo) = LoopDevice::attach(&scene.path("slot.img"), false, "DELTA_REQUIRE_DEVICES")
    else {
        return;
    };
    let out = scene.apply("old.img", lo.path(), &[]);
    scene.assert_success(&out);
    drop(lo);
    scene.assert_target_is_new_image("slot.img");
    let slot = fs::read(scene.path("slot.img")).unwrap();
    assert!(
        slot[2097698..].iter().all(|&b| b == 0xAA),
        "wrote past the image"
    );
}

#[test]
fn device_too_small_or_empty_image_is_refused_before_writing() {
    let scene = Scene::new();
    fs::write(scene.path("small.img"), vec![0x55u8; 1 << 20]).unwrap();
    fs::write(scene.path("empty.img"), b"").unwrap();
    let scene = scene.keeping(&["small.img"]);
    let Some(lo) = LoopDevice::attach(&scene.path("small.img"), false, "DELTA_REQUIRE_DEVICES")
    else {
        return;
    };
    let out = scene.apply("old.img", lo.path(), &[]);
    scene.assert_refused(
        &out,
        &format!(
            "the new image is 2097698 bytes (header new_len), but the target device {} holds \
             1048576 bytes",
            lo.path()
        ),
    );
    let out = scene.run(&["gen", "old.img", "empty.img", "-o", "empty.delta"]);
    scene.assert_success(&out);
    let hook = scene.path("hook-ran");
    let out = scene.run(&[
        "apply",
        "old.img",
        "empty.delta",
        "-o",
        lo.path(),
        "--commit-hook",
        &format!("touch {}", hook.display()),
    ]);
    scene.assert_refused(
        &out,
        "an empty image is never committed over a block device",
    );
    assert!(!hook.exists(), "the commit hook ran");
}

#[test]
fn whole_disk_holding_the_old_partition_is_refused() {
    // A 12 MiB disk with an MBR and two 4 MiB partitions; the old image is
    // copied into the first.
    let scene = Scene::new();
    let mut disk = vec![0u8; 12 << 20];
    for (i, start) in [2048u32, 10240].iter().enumerate() {
        let entry = 446 + 16 * i;
        disk[entry + 4] = 0x83;
        disk[entry + 8..entry + 12].copy_from_slice(&start.to_le_bytes());
        disk[entry + 12..entry + 16].copy_from_slice(&8192u32.to_le_bytes());
    }
    disk[510..512].copy_from_slice(&[0x55, 0xAA]);
    let old = fs::read(scene.path("old.img")).unwrap();
    disk[1 << 20..(1 << 20) + old.len()].copy_from_slice(&old);
    fs::write(scene.path("disk.img"), &disk).unwrap();
    let first_partition = 1 << 20..5 << 20;
    let Some(lo) = LoopDevice::attach(&scene.path("disk.img"), true, "DELTA_REQUIRE_DEVICES")
    else {
        return;
    };
    let p1 = format!("{}p1", lo.path());
    let p2 = format!("{}p2", lo.path());
    // Polled: udev makes the partitions' nodes when it gets to them; a
    // machine without it never shows them, so the wait is short.
    let wait = Duration::from_secs(10);
    let deadline = Instant::now() + wait;
    while !Path::new(&p2).exists() && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(1));
    }
    if !Path::new(&p2).exists() {
        cannot(
            "scan partitions of a loop device",
            &format!("{p2} did not appear within {wait:?} of losetup -P"),
            "DELTA_REQUIRE_PARTITIONS",
        );
        return;
    }
    let old_len = old.len().to_string();
    // The old image is the first bytes of p1: give it at the delta's size
    // through a second loop device limited to that size.
    let limited = Command::new("losetup")
        .args(["-f", "--show", "--sizelimit", &old_len, &p1])
        .output()
        .unwrap();
    assert!(limited.status.success(), "{}", stderr(&limited));
    let old_dev = LoopDevice {
        path: PathBuf::from(String::from_utf8_lossy(&limited.stdout).trim()),
    };
    let out = scene.apply(old_dev.path(), lo.path(), &[]);
    scene.assert_refused(&out, "its storage overlaps the old image");
    let out = scene.apply(old_dev.path(), &p1, &[]);
    scene.assert_refused(&out, "its storage overlaps the old image");
    let out = scene.apply(old_dev.path(), &p2, &[]);
    scene.assert_success(&out);
    drop(old_dev);
    drop(lo);
    let now = fs::read(scene.path("disk.img")).unwrap();
    assert!(
        now[first_partition.clone()] == disk[first_partition],
        "the old partition changed"
    );
    let new = fs::read(scene.path("new.img")).unwrap();
    assert!(
        now[5 << 20..(5 << 20) + new.len()] == new[..],
        "p2 is not the new image"
    );
}
