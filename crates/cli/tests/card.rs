//! Writing a block device at the card's speed: only the blocks that differ
//! from what the device holds are written, zero runs are left to the
//! device's own zeroing, a kill -9 in either path resumes, and the digest
//! is of what the device holds. On real loop devices (required in CI:
//! `DELTA_REQUIRE_DEVICES=1`).

mod common;

use common::{stderr, Fixture, LoopDevice};
use delta_core::testing::Rng;
use std::path::{Path, PathBuf};
use std::process::{Child, Output, Stdio};
use std::time::{Duration, Instant};

/// Image size: several segments, zero runs of several MiB.
const LEN: usize = 24 << 20;

struct Card {
    f: Fixture,
}

impl std::ops::Deref for Card {
    type Target = Fixture;

    fn deref(&self) -> &Fixture {
        &self.f
    }
}

impl Card {
    /// A device with an image pair of [`LEN`] bytes (text, random bytes
    /// and zero runs; the new image has edits, a zero run where the old
    /// had data and data where it had zeros) and a delta of it.
    fn new(seed: u64) -> Card {
        let mut rng = Rng::new(seed);
        let mut old = rng.text(LEN / 3);
        old.extend(rng.bytes(LEN / 3));
        old.resize(LEN, 0);
        // Edits in place (a file system rewrites blocks where they are).
        let mut new = old.clone();
        for _ in 0..60 {
            let at = rng.below(LEN as u64 - 20_000) as usize;
            let len = 1 + rng.below(16_000) as usize;
            new[at..at + len].copy_from_slice(&rng.bytes(len));
        }
        new[4 << 20..8 << 20].fill(0);
        let fresh = rng.bytes(2 << 20);
        new[18 << 20..20 << 20].copy_from_slice(&fresh);
        let f = Fixture::with_images(&old, &new);
        f.make_delta("1MiB", &[]);
        Card { f }
    }

    /// A loop device over a file holding `content`, padded to [`LEN`].
    fn device(&self, name: &str, content: &[u8]) -> Option<LoopDevice> {
        let backing = self.path(name);
        std::fs::write(&backing, content).unwrap();
        std::fs::OpenOptions::new()
            .write(true)
            .open(&backing)
            .unwrap()
            .set_len(LEN as u64)
            .unwrap();
        LoopDevice::attach(&backing, false, "DELTA_REQUIRE_DEVICES")
    }

    /// `delta apply old.img u.delta -o DEV` with `args` after it.
    fn apply(&self, dev: &LoopDevice, args: &[&str], env: &[(&str, &str)]) -> Output {
        let mut cmd = self.command(&["apply", "old.img", "u.delta", "-o", dev.path()]);
        cmd.args(args).envs(env.iter().copied());
        cmd.output().unwrap()
    }

    fn spawn_apply(&self, dev: &LoopDevice, args: &[&str]) -> Child {
        self.command(&[
            "apply",
            "old.img",
            "u.delta",
            "-o",
            dev.path(),
            "--no-log",
            "--checkpoint-bytes",
            "1MiB",
        ])
        .args(args)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap()
    }

    fn journal(&self, dev: &LoopDevice) -> PathBuf {
        let name = Path::new(dev.path()).file_name().unwrap().to_string_lossy();
        self.path(&format!("delta-apply-{name}.journal"))
    }

    fn assert_holds_new(&self, dev: &LoopDevice) {
        let new = std::fs::read(self.path("new.img")).unwrap();
        let held = std::fs::read(dev.path()).unwrap();
        assert!(
            held[..new.len()] == new[..],
            "the device does not hold the new image"
        );
    }

    /// The last update log's text.
    fn log(&self) -> String {
        self.logs()
            .last()
            .map(|p| std::fs::read_to_string(p).unwrap())
            .unwrap_or_default()
    }
}

/// Sectors written to a block device so far, from its sysfs stat.
fn sectors_written(dev: &LoopDevice) -> u64 {
    let name = Path::new(dev.path()).file_name().unwrap().to_string_lossy();
    let stat = std::fs::read_to_string(format!("/sys/block/{name}/stat")).unwrap();
    stat.split_whitespace().nth(6).unwrap().parse().unwrap()
}

/// The number after `label` (as `N label`) in the log's target line.
fn logged(log: &str, label: &str) -> u64 {
    let line = log
        .lines()
        .find(|l| l.contains("found in place"))
        .unwrap_or_else(|| panic!("no target line in the log: {log}"));
    let at = line
        .find(label)
        .unwrap_or_else(|| panic!("{label}: {line}"));
    line[..at]
        .split_whitespace()
        .last()
        .and_then(|n| n.trim_start_matches(';').parse().ok())
        .unwrap_or_else(|| panic!("{label}: {line}"))
}

/// 4 KiB blocks that differ between two images.
fn differing_blocks(a: &[u8], b: &[u8]) -> u64 {
    a.chunks(4096)
        .zip(b.chunks(4096))
        .filter(|(x, y)| x != y)
        .count() as u64
}

#[test]
fn a_device_holding_the_old_image_gets_only_the_blocks_that_differ() {
    let card = Card::new(1);
    let old = std::fs::read(card.path("old.img")).unwrap();
    let new = std::fs::read(card.path("new.img")).unwrap();
    let Some(dev) = card.device("part.img", &old) else {
        return;
    };
    let before = sectors_written(&dev);
    let out = card.apply(&dev, &[], &[]);
    assert!(out.status.success(), "{}", stderr(&out));
    card.assert_holds_new(&dev);
    let written = (sectors_written(&dev) - before) * 512;
    let changed = differing_blocks(&old, &new) * 4096;
    assert!(
        written <= changed,
        "wrote {written} bytes where {changed} bytes of blocks differ: {}",
        card.log()
            .lines()
            .find(|l| l.contains("in place"))
            .unwrap_or("")
    );
    let log = card.log();
    assert!(logged(&log, "written") <= changed, "{log}");
    assert!(logged(&log, "found in place") > 0, "{log}");
}

#[test]
fn zero_runs_on_a_zeroed_device_cost_no_data_writes() {
    let card = Card::new(2);
    let new = std::fs::read(card.path("new.img")).unwrap();
    let Some(dev) = card.device("part.img", &[]) else {
        return;
    };
    let out = card.apply(&dev, &["--progress", "json"], &[]);
    assert!(out.status.success(), "{}", stderr(&out));
    card.assert_holds_new(&dev);
    // The final JSON object reports what the log does.
    let last = String::from_utf8_lossy(&out.stdout)
        .lines()
        .last()
        .map(str::to_owned)
        .unwrap_or_default();
    let result: serde_json::Value = serde_json::from_str(&last).unwrap();
    let reported = result["result"]["bytes_written"].as_u64().unwrap();
    assert_eq!(reported, logged(&card.log(), "written"), "{last}");
    let nonzero = new
        .chunks(4096)
        .filter(|b| b.iter().any(|&x| x != 0))
        .count() as u64
        * 4096;
    let log = card.log();
    let written = logged(&log, "written");
    // Short zero runs inside data are written as bytes: a margin of 10%.
    assert!(
        written <= nonzero + nonzero / 10,
        "wrote {written} bytes; the new image has {nonzero} bytes of non-zero blocks: {}",
        log.lines().find(|l| l.contains("in place")).unwrap_or("")
    );
    // The zero runs were zeroed by the device, or found already zero.
    let zeroed = logged(&log, "zeroed") + logged(&log, "found in place");
    assert!(zeroed >= (4 << 20), "{log}");
}

#[test]
fn kill_9_while_writing_a_device_then_resume() {
    kill_9_then_resume(&Card::new(3), &[]);
}

/// Zero runs compared on their own thread, while data is written after
/// them: a kill lands while both are under way.
#[test]
fn kill_9_while_comparing_zero_runs_then_resume() {
    kill_9_then_resume(&Card::new(6), &["--compare-zero-runs"]);
}

/// Applies with `args` onto a zeroed device and one holding the old
/// image, killing the applier at random moments 20 times, then lets one
/// run end: the device holds the new image.
fn kill_9_then_resume(card: &Card, args: &[&str]) {
    let old = std::fs::read(card.path("old.img")).unwrap();
    let mut rng = Rng::new(9);
    for (state, content) in [("zeroed", &[][..]), ("holding the old image", &old[..])] {
        let Some(dev) = card.device("part.img", content) else {
            return;
        };
        let mut kills = 0;
        for _ in 0..20 {
            let mut child = card.spawn_apply(&dev, args);
            let started = Instant::now();
            // Kill at a random moment once the journal exists.
            while !card.journal(&dev).exists()
                && child.try_wait().unwrap().is_none()
                && started.elapsed() < Duration::from_secs(30)
            {
                std::thread::sleep(Duration::from_micros(200));
            }
            std::thread::sleep(Duration::from_micros(rng.below(40_000)));
            if child.try_wait().unwrap().is_none() {
                child.kill().unwrap();
                kills += 1;
            }
            child.wait().unwrap();
        }
        assert!(kills >= 5, "{state}: only {kills} kills landed");
        let out = card.apply(&dev, args, &[]);
        assert!(out.status.success(), "{state}: {}", stderr(&out));
        card.assert_holds_new(&dev);
        assert!(!card.journal(&dev).exists(), "{state}: journal left");
    }
}

#[test]
fn a_block_that_reads_back_wrong_after_being_skipped_is_refused_at_verification() {
    let card = Card::new(4);
    let old = std::fs::read(card.path("old.img")).unwrap();
    let new = std::fs::read(card.path("new.img")).unwrap();
    // A block that differs, well inside a stretch the device holds right.
    let block = old
        .chunks(4096)
        .zip(new.chunks(4096))
        .enumerate()
        .skip(100)
        .find(|(_, (a, b))| a != b)
        .map(|(i, _)| i as u64 * 4096)
        .unwrap();
    let Some(dev) = card.device("part.img", &old) else {
        return;
    };
    refused_then_mended(&card, &dev, block, &[]);
}

#[test]
fn zero_runs_can_be_compared_instead_of_left_to_the_device() {
    let card = Card::new(5);
    let Some(dev) = card.device("part.img", &[]) else {
        return;
    };
    let out = card.apply(&dev, &["--compare-zero-runs"], &[]);
    assert!(out.status.success(), "{}", stderr(&out));
    card.assert_holds_new(&dev);
    let log = card.log();
    assert_eq!(logged(&log, "zeroed"), 0, "{log}");
    // The zeroed device already holds the zero runs: found in place.
    assert!(logged(&log, "found in place") >= (4 << 20), "{log}");
}

#[test]
fn zero_runs_compared_on_a_device_holding_the_old_image_are_mended() {
    let card = Card::new(7);
    let old = std::fs::read(card.path("old.img")).unwrap();
    let new = std::fs::read(card.path("new.img")).unwrap();
    let Some(dev) = card.device("part.img", &old) else {
        return;
    };
    let out = card.apply(&dev, &["--compare-zero-runs"], &[]);
    assert!(out.status.success(), "{}", stderr(&out));
    card.assert_holds_new(&dev);
    let log = card.log();
    assert_eq!(logged(&log, "zeroed"), 0, "{log}");
    // The segments of the zero run were read ahead of the writer.
    let ahead: u64 = log
        .split("zero runs read ahead of the writer: ")
        .nth(1)
        .and_then(|rest| rest.split(' ').next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no read-ahead line: {log}"));
    assert!(ahead >= 4 << 20, "{log}");
    // The zero run where the old image had text is written over, and only
    // blocks that differ are.
    let changed = differing_blocks(&old, &new) * 4096;
    assert!(logged(&log, "written") >= 4 << 20, "{log}");
    assert!(
        logged(&log, "written") <= changed,
        "{changed} differ: {log}"
    );
}

#[test]
fn a_zero_run_block_let_stand_wrong_is_refused_at_verification() {
    let card = Card::new(8);
    let old = std::fs::read(card.path("old.img")).unwrap();
    // Inside the new image's zero run at 4 MiB, where the old has text.
    let block = (6u64 << 20) + 4096;
    assert!(old[block as usize..block as usize + 4096]
        .iter()
        .any(|&b| b != 0));
    let Some(dev) = card.device("part.img", &old) else {
        return;
    };
    refused_then_mended(&card, &dev, block, &["--compare-zero-runs"]);
}

/// Applies with `args` while the block at `block` counts as in place
/// although it differs: the image is refused at verification. Without the
/// fault the same device is then mended.
fn refused_then_mended(card: &Card, dev: &LoopDevice, block: u64, args: &[&str]) {
    let out = card.apply(
        dev,
        args,
        &[("DELTA_TEST_SKIP_WRONG_BLOCK", &block.to_string())],
    );
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("does not match the digest"),
        "{}",
        stderr(&out)
    );
    assert!(!card.log().contains("state verified"), "{}", card.log());
    let out = card.apply(dev, args, &[]);
    assert!(out.status.success(), "{}", stderr(&out));
    card.assert_holds_new(dev);
}
