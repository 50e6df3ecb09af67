//! `delta gen` and `delta info` against files that are not what they seem:
//! outputs naming an input, planted temporary names, devices, FIFOs, loop
//! devices, inputs changed or truncated during a run, absurd thread counts.
//! Every run has a timeout, so a hang fails the test instead of the suite.

use std::io::Write;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

mod common;

use common::{Lines, LoopDevice};

const DELTA: &str = env!("CARGO_BIN_EXE_delta");

fn testdata(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../testdata")
        .join(name)
}

fn spawn(dir: &Path, args: &[&str]) -> Child {
    Command::new(DELTA)
        .current_dir(dir)
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run delta")
}

/// Waits for `child` at most `secs` seconds; kills it and fails if it hangs.
fn finish(mut child: Child, secs: u64, args: &[&str]) -> Output {
    let deadline = Instant::now() + Duration::from_secs(secs);
    loop {
        if child.try_wait().expect("wait for delta").is_some() {
            return child.wait_with_output().expect("collect delta's output");
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("delta {args:?} still running after {secs} s: it hangs");
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// Runs `delta` with `args` in `dir`, failing if it takes over `secs`.
fn delta_within(dir: &Path, secs: u64, args: &[&str]) -> Output {
    finish(spawn(dir, args), secs, args)
}

fn delta(dir: &Path, args: &[&str]) -> Output {
    delta_within(dir, 60, args)
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// Asserts exit code 1 with one `error:` line containing every needle.
fn assert_refused(out: &Output, needles: &[&str]) {
    let err = stderr(out);
    assert_eq!(out.status.code(), Some(1), "stderr: {err}");
    assert!(err.starts_with("error: "), "stderr: {err}");
    assert_eq!(err.lines().count(), 1, "one line expected: {err}");
    for needle in needles {
        assert!(err.contains(needle), "expected {needle:?} in: {err}");
    }
}

/// Names in `dir` ending in `.tmp`.
fn temp_files(dir: &Path) -> Vec<String> {
    std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|name| name.ends_with(".tmp"))
        .collect()
}

/// A temp dir holding the small pair as old.bin and new.bin.
fn small_pair() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    for name in ["old.bin", "new.bin"] {
        std::fs::copy(testdata(&format!("small/{name}")), dir.path().join(name)).unwrap();
    }
    dir
}

fn mkfifo(path: &Path) -> bool {
    Command::new("mkfifo")
        .arg(path)
        .status()
        .is_ok_and(|s| s.success())
}

/// Text-like bytes that zstd level 19 compresses slowly (about 1 s per
/// 2 MiB on one thread), from a fixed seed.
fn slow_text(len: usize) -> Vec<u8> {
    let mut state = 0x2545_f491_4f6c_dd1du64;
    let mut next = move || {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        state
    };
    let words: Vec<Vec<u8>> = (0..4000)
        .map(|_| {
            let n = 2 + next() % 8;
            (0..n).map(|_| b'a' + (next() % 26) as u8).collect()
        })
        .collect();
    let mut text = Vec::with_capacity(len + 16);
    while text.len() < len {
        text.extend_from_slice(&words[(next() % words.len() as u64) as usize]);
        text.push(b" \n, "[(next() % 4) as usize]);
    }
    text.truncate(len);
    text
}

/// Waits until `child`, a `delta gen --progress json`, has hashed both
/// images: the indexing phase ends once the digests the header records
/// are taken, so a change from then on is one the run must notice.
fn wait_until_hashed(child: &mut Child) {
    let mut lines = Lines::of(child.stdout.take().expect("stdout piped"));
    lines.wait_for("the end of indexing", |line| {
        serde_json::from_str::<serde_json::Value>(line)
            .is_ok_and(|v| v["phase"] == "indexing" && v["event"] == "end")
    });
}

/// Waits until process `pid` has `path` mapped (it has opened and mapped
/// its inputs and started reading them).
fn wait_until_mapped(pid: u32, path: &Path) {
    let path = path.canonicalize().unwrap();
    let path = path.to_string_lossy();
    let deadline = Instant::now() + Duration::from_secs(20);
    while Instant::now() < deadline {
        let maps = std::fs::read_to_string(format!("/proc/{pid}/maps")).unwrap_or_default();
        if maps.lines().any(|line| line.ends_with(path.as_ref())) {
            return;
        }
        std::thread::sleep(Duration::from_millis(1));
    }
    panic!("delta never mapped {path}");
}

#[test]
fn output_naming_an_input_is_refused_and_inputs_are_kept() {
    let dir = small_pair();
    let d = dir.path();
    std::os::unix::fs::symlink("new.bin", d.join("link-to-new")).unwrap();
    std::fs::hard_link(d.join("old.bin"), d.join("hard-old")).unwrap();
    let old = std::fs::read(d.join("old.bin")).unwrap();
    let new = std::fs::read(d.join("new.bin")).unwrap();
    for (args, needles) in [
        (
            &["gen", "old.bin", "new.bin", "-o", "new.bin"][..],
            &["refusing to write new.bin: it is the new image new.bin"][..],
        ),
        (
            &["gen", "old.bin", "new.bin", "-o", "old.bin"],
            &["refusing to write old.bin: it is the old image old.bin"],
        ),
        (
            &["gen", "old.bin", "new.bin", "-o", "link-to-new"],
            &["refusing to write link-to-new: it is the new image new.bin"],
        ),
        (
            &["gen", "old.bin", "new.bin", "-o", "hard-old"],
            &["refusing to write hard-old: it is the old image old.bin"],
        ),
        (
            &["gen", "--full", "new.bin", "-o", "new.bin"],
            &["refusing to write new.bin: it is the new image new.bin"],
        ),
    ] {
        let out = delta(d, args);
        assert_refused(&out, needles);
        assert_eq!(std::fs::read(d.join("old.bin")).unwrap(), old, "{args:?}");
        assert_eq!(std::fs::read(d.join("new.bin")).unwrap(), new, "{args:?}");
        assert!(
            std::fs::symlink_metadata(d.join("link-to-new"))
                .unwrap()
                .is_symlink(),
            "{args:?}"
        );
        assert_eq!(temp_files(d), Vec::<String>::new(), "{args:?}");
    }
}

#[test]
fn input_at_the_temporary_name_is_refused_and_kept() {
    let dir = small_pair();
    let d = dir.path();
    std::fs::rename(d.join("new.bin"), d.join("d.delta.tmp")).unwrap();
    let new = std::fs::read(d.join("d.delta.tmp")).unwrap();
    let out = delta(d, &["gen", "old.bin", "d.delta.tmp", "-o", "d.delta"]);
    assert_refused(
        &out,
        &["refusing to write d.delta.tmp: it is the new image d.delta.tmp"],
    );
    assert_eq!(std::fs::read(d.join("d.delta.tmp")).unwrap(), new);
    assert!(!d.join("d.delta").exists());
}

#[test]
fn symlink_planted_at_the_temporary_name_is_not_followed() {
    let dir = small_pair();
    let d = dir.path();
    std::fs::write(d.join("victim"), b"not yours").unwrap();
    std::os::unix::fs::symlink("victim", d.join("d.delta.tmp")).unwrap();
    let out = delta(d, &["gen", "old.bin", "new.bin", "-o", "d.delta"]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(
        std::fs::read(d.join("victim")).unwrap() == b"not yours",
        "the symlink's target was written"
    );
    let meta = std::fs::symlink_metadata(d.join("d.delta")).unwrap();
    assert!(
        meta.is_file(),
        "the delta is a regular file, not the symlink"
    );
    assert!(
        !d.join("d.delta.tmp").exists(),
        "stale temporary name removed"
    );
    // The same bytes as with no planted name.
    let clean = delta(d, &["gen", "old.bin", "new.bin", "-o", "clean.delta"]);
    assert!(clean.status.success(), "{}", stderr(&clean));
    assert!(
        std::fs::read(d.join("d.delta")).unwrap() == std::fs::read(d.join("clean.delta")).unwrap(),
        "deltas differ"
    );
}

#[test]
fn output_that_is_not_a_regular_file_is_refused_and_left_alone() {
    let dir = small_pair();
    let d = dir.path();
    // /dev/stdout as seen through a symlink of our own: the real one must
    // not be put at risk by a build without the fix.
    std::os::unix::fs::symlink("/proc/self/fd/1", d.join("stdout")).unwrap();
    std::fs::create_dir(d.join("folder")).unwrap();
    let mut cases = vec![
        ("stdout", "a symbolic link (to /proc/self/fd/1)"),
        ("folder", "a directory, not a regular file"),
    ];
    if mkfifo(&d.join("pipe")) {
        cases.push(("pipe", "a FIFO (named pipe), not a regular file"));
    }
    let null = Command::new("mknod")
        .arg(d.join("null"))
        .args(["c", "1", "3"])
        .status()
        .is_ok_and(|s| s.success());
    if null {
        cases.push(("null", "a character device, not a regular file"));
    } else {
        eprintln!("mknod unavailable: character device output not tried");
    }
    for (name, kind) in cases {
        let before = std::fs::symlink_metadata(d.join(name)).unwrap().file_type();
        let out = delta_within(d, 20, &["gen", "old.bin", "new.bin", "-o", name, "-f"]);
        assert_refused(&out, &[&format!("refusing to write {name}: it is {kind}")]);
        let after = std::fs::symlink_metadata(d.join(name)).unwrap().file_type();
        assert_eq!(before, after, "{name} was replaced");
        assert_eq!(temp_files(d), Vec::<String>::new(), "{name}");
    }
}

/// `-o /dev/stdout` writes the delta to stdout, as `-o -` does, and never
/// replaces the machine's `/dev/stdout` link, `-f` or not.
#[test]
fn output_dev_stdout_is_stdout() {
    let dir = small_pair();
    let d = dir.path();
    let dash = delta(d, &["gen", "old.bin", "new.bin", "-o", "-"]);
    assert!(dash.status.success(), "{}", stderr(&dash));
    let before = std::fs::symlink_metadata("/dev/stdout").map(|m| m.file_type());
    for extra in [&[][..], &["-f"][..]] {
        let mut args = vec!["gen", "old.bin", "new.bin", "-o", "/dev/stdout"];
        args.extend_from_slice(extra);
        let out = delta(d, &args);
        assert!(out.status.success(), "{}", stderr(&out));
        assert!(
            out.stdout == dash.stdout,
            "-o /dev/stdout wrote another delta"
        );
    }
    let after = std::fs::symlink_metadata("/dev/stdout").map(|m| m.file_type());
    assert_eq!(before.ok(), after.ok(), "/dev/stdout was replaced");
}

#[test]
fn device_and_fifo_inputs_are_refused_without_blocking() {
    let dir = small_pair();
    let d = dir.path();
    assert!(mkfifo(&d.join("fifo")), "mkfifo");
    let cases: &[(&[&str], &str)] = &[
        (
            &["gen", "old.bin", "/dev/zero", "-o", "d.delta"],
            "new image /dev/zero is a character device, not a regular file or a block device",
        ),
        (
            &["gen", "old.bin", "/dev/urandom", "-o", "d.delta"],
            "new image /dev/urandom is a character device",
        ),
        (
            &["gen", "old.bin", "fifo", "-o", "d.delta"],
            "new image fifo is a FIFO (named pipe), not a regular file or a block device",
        ),
        (
            &["gen", "fifo", "new.bin", "-o", "d.delta"],
            "old image fifo is a FIFO (named pipe)",
        ),
        (
            &["gen", "--full", "fifo", "-o", "d.delta"],
            "new image fifo is a FIFO (named pipe)",
        ),
        (
            &["gen", "--full", "/dev/zero", "-o", "d.delta"],
            "new image /dev/zero is a character device",
        ),
        (
            &["gen", "old.bin", ".", "-o", "d.delta"],
            "new image . is a directory",
        ),
    ];
    for (args, needle) in cases {
        let out = delta_within(d, 10, args);
        assert_refused(&out, &[needle]);
        assert!(!d.join("d.delta").exists(), "{args:?}");
        assert_eq!(temp_files(d), Vec::<String>::new(), "{args:?}");
    }
}

#[test]
fn info_refuses_fifos_devices_and_folders_without_blocking() {
    let dir = small_pair();
    let d = dir.path();
    assert!(mkfifo(&d.join("fifo")), "mkfifo");
    for (path, needle) in [
        (
            "fifo",
            "open delta fifo: is a FIFO (named pipe), not a regular file or a block device",
        ),
        (
            "/dev/zero",
            "open delta /dev/zero: is a character device, not a regular file or a block device",
        ),
        (
            ".",
            "open delta .: is a directory, not a regular file or a block device",
        ),
    ] {
        let out = delta_within(d, 10, &["info", path]);
        assert_refused(&out, &[needle]);
    }
    // A delta still reads.
    let out = delta(d, &["gen", "old.bin", "new.bin", "-o", "d.delta"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let out = delta_within(d, 10, &["info", "d.delta"]);
    assert!(out.status.success(), "{}", stderr(&out));
}

#[test]
fn loop_device_input_gives_the_same_delta_as_its_file() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    // Loop devices are whole 512-byte sectors: use 2 MiB images.
    std::fs::copy(testdata("sample/old.img"), d.join("old.img")).unwrap();
    let mut new = std::fs::read(testdata("sample/new.img")).unwrap();
    new.truncate(2 << 20);
    std::fs::write(d.join("new.img"), &new).unwrap();
    let require = "DELTA_REQUIRE_DEVICES";
    let (Some(old_dev), Some(new_dev)) = (
        LoopDevice::attach(&d.join("old.img"), false, require),
        LoopDevice::attach(&d.join("new.img"), false, require),
    ) else {
        return;
    };
    let (old_dev, new_dev) = (old_dev.path(), new_dev.path());
    for (files, devices) in [
        (
            &["gen", "old.img", "new.img", "-o", "file.delta"][..],
            &["gen", old_dev, new_dev, "-o", "dev.delta"][..],
        ),
        (
            &["gen", "--full", "new.img", "-o", "file.delta", "--force"],
            &["gen", "--full", new_dev, "-o", "dev.delta", "--force"],
        ),
    ] {
        let a = delta(d, files);
        assert!(a.status.success(), "{}", stderr(&a));
        let b = delta(d, devices);
        assert!(b.status.success(), "{}", stderr(&b));
        let from_file = std::fs::read(d.join("file.delta")).unwrap();
        let from_dev = std::fs::read(d.join("dev.delta")).unwrap();
        assert!(from_dev == from_file, "{devices:?}: deltas differ");
        let info = delta(d, &["info", "--json", "dev.delta"]);
        let info: serde_json::Value = serde_json::from_slice(&info.stdout).unwrap();
        assert_eq!(info["new_len"], 2 << 20);
    }
    // A block device holding no delta is read as the applier reads it, and
    // a loop device's backing file is not overwritten by name.
    let out = delta_within(d, 10, &["info", new_dev]);
    assert_refused(&out, &[&format!("delta {new_dev}: not a delta file")]);
    let out = delta(d, &["gen", "old.img", new_dev, "-o", "new.img"]);
    assert_refused(
        &out,
        &[&format!(
            "refusing to write new.img: it is the backing file of the new image {new_dev}"
        )],
    );
    let out = delta(d, &["gen", "old.img", new_dev, "-o", new_dev]);
    assert_refused(
        &out,
        &[&format!(
            "refusing to write {new_dev}: it is the new image {new_dev}"
        )],
    );
    assert!(std::fs::read(d.join("new.img")).unwrap() == new);
}

#[test]
fn new_image_rewritten_during_gen_is_refused_and_nothing_written() {
    let dir = small_pair();
    let d = dir.path();
    std::fs::write(d.join("new.bin"), slow_text(2 << 20)).unwrap();
    let args = [
        "gen",
        "old.bin",
        "new.bin",
        "-o",
        "d.delta",
        "--threads",
        "1",
        "--progress",
        "json",
    ];
    let mut child = spawn(d, &args);
    wait_until_hashed(&mut child);
    // Same size, other bytes, written in place.
    let file = std::fs::OpenOptions::new()
        .write(true)
        .open(d.join("new.bin"))
        .unwrap();
    file.write_all_at(b"REWRITTEN", 1 << 20).unwrap();
    drop(file);
    let out = finish(child, 60, &args);
    assert_refused(
        &out,
        &[
            "new image new.bin changed while the delta was being generated (",
            "); no delta written",
        ],
    );
    assert!(!d.join("d.delta").exists());
    assert_eq!(temp_files(d), Vec::<String>::new());
}

#[test]
fn block_device_rewritten_through_another_node_is_refused() {
    let dir = small_pair();
    let d = dir.path();
    std::fs::write(d.join("new.img"), slow_text(2 << 20)).unwrap();
    let Some(dev) = LoopDevice::attach(&d.join("new.img"), false, "DELTA_REQUIRE_DEVICES") else {
        return;
    };
    // A second node for the same device: writes through it share the
    // device's page cache but leave the times of `dev`'s node alone, so
    // only the digests can tell.
    let numbers = Command::new("stat")
        .args(["-c", "%t %T", dev.path()])
        .output()
        .unwrap();
    let numbers = String::from_utf8_lossy(&numbers.stdout);
    let mut numbers = numbers
        .split_whitespace()
        .map(|hex| u32::from_str_radix(hex, 16).unwrap().to_string());
    let (major, minor) = (numbers.next().unwrap(), numbers.next().unwrap());
    let alias = d.join("alias");
    let made = Command::new("mknod")
        .arg(&alias)
        .args(["b", &major, &minor])
        .status()
        .is_ok_and(|s| s.success());
    if !made {
        eprintln!(
            "SKIPPED block_device_rewritten_through_another_node_is_refused: mknod unavailable"
        );
        return;
    }
    let args = [
        "gen",
        "old.bin",
        dev.path(),
        "-o",
        "d.delta",
        "--threads",
        "1",
        "--progress",
        "json",
    ];
    let mut child = spawn(d, &args);
    wait_until_hashed(&mut child);
    let file = std::fs::OpenOptions::new()
        .write(true)
        .open(&alias)
        .unwrap();
    file.write_all_at(b"REWRITTEN", 1 << 20).unwrap();
    drop(file);
    let out = finish(child, 60, &args);
    assert_refused(
        &out,
        &[&format!(
            "new image {} changed while the delta was being generated (its contents no longer match their digest); no delta written",
            dev.path()
        )],
    );
    assert!(!d.join("d.delta").exists());
    assert_eq!(temp_files(d), Vec::<String>::new());
}

#[test]
fn new_image_truncated_during_gen_leaves_nothing() {
    let dir = small_pair();
    let d = dir.path();
    // 256 MiB, sparse but for 2 MiB of slow text at its end.
    let mut file = std::fs::File::create(d.join("new.bin")).unwrap();
    file.set_len(254 << 20).unwrap();
    let mut tail = std::io::BufWriter::new(&mut file);
    std::io::Seek::seek(&mut tail, std::io::SeekFrom::End(0)).unwrap();
    tail.write_all(&slow_text(2 << 20)).unwrap();
    drop(tail);
    drop(file);
    let args = [
        "gen",
        "old.bin",
        "new.bin",
        "-o",
        "d.delta",
        "--threads",
        "1",
    ];
    let child = spawn(d, &args);
    wait_until_mapped(child.id(), &d.join("new.bin"));
    std::fs::OpenOptions::new()
        .write(true)
        .open(d.join("new.bin"))
        .unwrap()
        .set_len(1 << 20)
        .unwrap();
    let out = finish(child, 60, &args);
    eprintln!(
        "truncated during gen: {:?}, stderr {:?}",
        out.status,
        stderr(&out)
    );
    assert!(!out.status.success(), "gen succeeded on a truncated input");
    assert!(!d.join("d.delta").exists(), "delta left at OUT");
    assert_eq!(temp_files(d), Vec::<String>::new(), "OUT.tmp left behind");
    if out.status.code().is_some() {
        // Survived (the truncation came after the last read of the mapping).
        assert_refused(
            &out,
            &["new image new.bin changed while the delta was being generated (size 268435456 -> 1048576 bytes); no delta written"],
        );
    } else {
        use std::os::unix::process::ExitStatusExt;
        assert_eq!(out.status.signal(), Some(7), "killed by SIGBUS expected");
    }
}

#[test]
fn absurd_thread_counts_finish_and_match_one_thread() {
    let dir = small_pair();
    let d = dir.path();
    let one = delta(
        d,
        &[
            "gen",
            "old.bin",
            "new.bin",
            "-o",
            "one.delta",
            "--threads",
            "1",
        ],
    );
    assert!(one.status.success(), "{}", stderr(&one));
    let many = delta_within(
        d,
        30,
        &[
            "gen",
            "old.bin",
            "new.bin",
            "-o",
            "many.delta",
            "--threads",
            "100000",
        ],
    );
    assert!(many.status.success(), "{}", stderr(&many));
    assert!(
        std::fs::read(d.join("one.delta")).unwrap() == std::fs::read(d.join("many.delta")).unwrap(),
        "--threads 100000 gave other bytes than --threads 1"
    );
}
