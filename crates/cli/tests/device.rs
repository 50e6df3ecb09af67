//! The on-device applier through the `delta` binary: resume after kill -9,
//! update locks held by another process, the supervisor override, commit
//! hooks, the single-instance lock, progress and the update log.

mod common;

use common::{json_u64, mount_tmpfs, poll_until, stderr, stdout, Fixture, Lines, LoopDevice};
use delta_core::testing::{mutate, Rng};
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// A device holding an image pair of `len` bytes and a delta with many
/// segments of `segment`. The new image also holds a new 13,000-byte file
/// at eight places, so later segments copy it from earlier ones (COPY_NEW)
/// and a resumed apply reads back what an earlier run wrote.
fn device(len: usize, segment: &str) -> Fixture {
    let mut rng = Rng::new(len as u64);
    let mut old = rng.text(len / 2);
    old.extend(rng.bytes(len - len / 2));
    let mut new = mutate(&old, &mut rng, 40);
    let file = rng.bytes(13_000);
    for i in 0..8 {
        let at = (new.len() / 8 * i).next_multiple_of(4096);
        if at + file.len() <= new.len() {
            new[at..at + file.len()].copy_from_slice(&file);
        }
    }
    let d = Fixture::with_images(&old, &new);
    d.make_delta(segment, &[]);
    let info = d.run(&["info", "u.delta"]);
    assert!(
        stdout(&info).contains("copy new       yes"),
        "{}",
        stdout(&info)
    );
    d
}

#[test]
fn kill_9_at_random_moments_then_resume() {
    let d = device(48 << 20, "256KiB");
    let new_len = std::fs::metadata(d.path("new.img")).unwrap().len();
    let written = || std::fs::metadata(d.path("out.img.partial")).map_or(0, |m| m.len());
    let mut rng = Rng::new(99);
    let mut kills = 0;
    let mut resumed_runs = 0;
    for round in 0..60 {
        // Two threads decode segments ahead of the writer, whatever the
        // machine's cores: kills land while segments wait to be written.
        let mut child =
            d.spawn_apply(&["--no-log", "--checkpoint-bytes", "1MiB", "--threads", "2"]);
        // Kill once the target holds a random number of the bytes not yet
        // written (a moment the run is seen to reach, not one guessed from
        // a clock), give or take a few milliseconds of jitter so that some
        // kills land while verifying or committing.
        let from = written().min(new_len);
        let goal = from + rng.below(new_len - from + 1);
        let mut finished = false;
        poll_until("a kill point", || {
            finished = child.try_wait().unwrap().is_some();
            finished || written() >= goal
        });
        std::thread::sleep(Duration::from_micros(rng.below(3000)));
        if !finished && child.try_wait().unwrap().is_none() {
            child.kill().unwrap();
            kills += 1;
        }
        let out = child.wait_with_output().unwrap();
        if out.status.success() {
            if stdout(&out).contains("resumed") {
                resumed_runs += 1;
            }
            d.assert_done();
            std::fs::remove_file(d.path("out.img")).unwrap();
        } else {
            // Killed (or finished just as it was killed): never complete-looking
            // unless the commit rename happened, in which case it is exact.
            if d.path("out.img").exists() {
                assert_done_or_resumable(&d);
            }
        }
        if kills >= 25 && round >= 30 {
            break;
        }
    }
    assert!(kills >= 20, "only {kills} kills landed");
    // Finish whatever state the last kill left.
    let out = d.apply(&["--no-log"]);
    assert!(out.status.success(), "{}", stderr(&out));
    if stdout(&out).contains("resumed") {
        resumed_runs += 1;
    }
    d.assert_done();
    assert!(resumed_runs >= 1, "no run resumed from a journal");
}

/// After a kill, `out.img` may only exist if the rename happened, in
/// which case it must be exact.
fn assert_done_or_resumable(d: &Fixture) {
    assert!(
        std::fs::read(d.path("out.img")).unwrap() == std::fs::read(d.path("new.img")).unwrap(),
        "out.img exists but is not the new image"
    );
}

#[test]
fn resumes_from_the_journal_after_a_kill() {
    let d = device(32 << 20, "256KiB");
    let mut child = d.spawn_apply(&["--checkpoint-bytes", "1MiB", "--progress", "json"]);
    // Kill once the journal shows progress.
    let started = Instant::now();
    loop {
        if let Ok(text) = std::fs::read_to_string(d.path("out.img.journal")) {
            if !text.contains("\"segments_done\":0") {
                break;
            }
        }
        if child.try_wait().unwrap().is_some() || started.elapsed() > Duration::from_secs(30) {
            panic!("apply finished before a checkpoint could be observed");
        }
        std::thread::sleep(Duration::from_millis(1));
    }
    child.kill().unwrap();
    child.wait().unwrap();
    assert!(
        !d.path("out.img").exists(),
        "killed apply left a complete-looking target"
    );
    let out = d.apply(&[]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(stdout(&out).contains("resumed"), "{}", stdout(&out));
    d.assert_done();
}

/// Segments far longer than a checkpoint interval: a kill inside one costs
/// only the writes since the last checkpoint, not the whole segment.
#[test]
fn resumes_inside_a_segment_after_a_kill() {
    let d = device(48 << 20, "16MiB");
    let mut rng = Rng::new(7);
    let mut inside = 0;
    for _ in 0..40 {
        // Two threads decode segments ahead of the writer, whatever the
        // machine's cores: kills land while segments wait to be written.
        let mut child =
            d.spawn_apply(&["--no-log", "--checkpoint-bytes", "1MiB", "--threads", "2"]);
        // Kill at a random moment after a checkpoint inside a segment.
        let started = Instant::now();
        let written = loop {
            let text = std::fs::read_to_string(d.path("out.img.journal")).unwrap_or_default();
            let bytes = json_u64(&text, "segment_bytes");
            if bytes > 0 {
                break bytes;
            }
            if child.try_wait().unwrap().is_some() || started.elapsed() > Duration::from_secs(30) {
                break 0;
            }
            std::thread::sleep(Duration::from_micros(200));
        };
        std::thread::sleep(Duration::from_micros(rng.below(3000)));
        let _ = child.kill();
        let out = child.wait_with_output().unwrap();
        if out.status.success() || written == 0 {
            continue;
        }
        assert!(
            !d.path("out.img").exists(),
            "killed apply left a complete-looking target"
        );
        let journal = std::fs::read_to_string(d.path("out.img.journal")).unwrap();
        let segments = json_u64(&journal, "segments_done");
        let bytes = json_u64(&journal, "segment_bytes");
        let out = d.apply(&["--no-log"]);
        assert!(out.status.success(), "{}", stderr(&out));
        d.assert_done();
        if bytes > 0 {
            inside += 1;
            // 16 MiB segments: the resume point is the journal's, inside one.
            let at = segments * (16 << 20) + bytes;
            assert!(
                stdout(&out).contains(&format!("resumed at byte {at}, {segments} segments done")),
                "journal {journal}, {}",
                stdout(&out)
            );
        }
        std::fs::remove_file(d.path("out.img")).unwrap();
        if inside >= 5 {
            break;
        }
    }
    assert!(inside >= 3, "only {inside} runs resumed inside a segment");
}

/// A journal whose resume point lies past its segment (damaged, or from
/// another build) is not trusted: the apply starts over and succeeds.
#[test]
fn a_journal_claiming_more_than_its_segment_starts_over() {
    let d = device(32 << 20, "16MiB");
    let mut child = d.spawn_apply(&["--no-log", "--checkpoint-bytes", "256KiB"]);
    let started = Instant::now();
    let journal = loop {
        let text = std::fs::read_to_string(d.path("out.img.journal")).unwrap_or_default();
        if json_u64(&text, "segment_bytes") > 0 {
            break text;
        }
        if child.try_wait().unwrap().is_some() || started.elapsed() > Duration::from_secs(30) {
            panic!("apply finished before a checkpoint inside a segment");
        }
        std::thread::sleep(Duration::from_micros(200));
    };
    let _ = child.kill();
    child.wait().unwrap();
    let bytes = json_u64(&journal, "segment_bytes");
    let damaged = journal.replace(
        &format!("\"segment_bytes\":{bytes}"),
        "\"segment_bytes\":99999999999",
    );
    std::fs::write(d.path("out.img.journal"), damaged).unwrap();
    let out = d.apply(&["--no-log"]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(!stdout(&out).contains("resumed"), "{}", stdout(&out));
    d.assert_done();
}

#[test]
fn held_lock_blocks_only_the_commit_then_timeout_exit_3_and_rerun_commits() {
    let d = device(4 << 20, "256KiB");
    let (mut holder, lock) = d.hold_lock("main");
    let hook_marker = d.path("hook-ran");
    let hook = format!("touch {}", hook_marker.display());
    let out = d.apply(&[
        "--lock-timeout",
        "1",
        "--progress",
        "json",
        "--commit-hook",
        &hook,
    ]);
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(3), "{err}");
    assert!(
        err.contains("still held") && err.contains("locks/1/main/updates.lock"),
        "{err}"
    );
    assert!(
        stdout(&out).contains("\"step\":\"waiting_for_lock\""),
        "{}",
        stdout(&out)
    );
    assert!(!d.path("out.img").exists(), "committed despite the lock");
    assert!(d.path("out.img.partial").exists(), "verified target kept");
    assert!(!hook_marker.exists(), "hook ran before the lock cleared");
    let journal = std::fs::read_to_string(d.path("out.img.journal")).unwrap();
    assert!(journal.contains("\"verified\""), "{journal}");

    holder.kill().unwrap();
    holder.wait().unwrap();
    assert!(lock.exists(), "lock file deleted");
    let out = d.apply(&["--progress", "json", "--commit-hook", &hook]);
    assert!(out.status.success(), "{}", stderr(&out));
    let progress = stdout(&out);
    assert!(
        !progress.contains("\"step\":\"applying\""),
        "re-applied instead of committing: {progress}"
    );
    assert!(progress.contains("\"step\":\"committing\""), "{progress}");
    assert!(hook_marker.exists());
    d.assert_done();
    assert!(lock.exists(), "lock file deleted");
}

#[test]
fn lock_released_while_waiting_commits() {
    let d = device(1 << 20, "256KiB");
    let (mut holder, _lock) = d.hold_lock("web");
    let mut child = d
        .command(&[
            "apply",
            "old.img",
            "u.delta",
            "-o",
            "out.img",
            "--progress",
            "json",
        ])
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut lines = Lines::of(child.stdout.take().unwrap());
    let waiting = lines.wait_for("lock wait", |l| l.contains("\"step\":\"waiting_for_lock\""));
    assert!(!d.path("out.img").exists());
    holder.kill().unwrap();
    holder.wait().unwrap();
    let progress = lines.rest().join("\n");
    assert!(child.wait().unwrap().success(), "{progress}");
    // The wait names the application and service holding the lock.
    assert!(
        waiting.contains("application 1/web holds its update lock (")
            && waiting.contains("updates.lock)"),
        "{waiting}"
    );
    d.assert_done();
}

#[test]
fn lock_file_that_merely_exists_does_not_block() {
    let d = device(1 << 20, "256KiB");
    let dir = d.path("locks/1/main");
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join("updates.lock"), "").unwrap();
    let out = d.apply(&["--lock-timeout", "0"]);
    assert!(out.status.success(), "{}", stderr(&out));
    d.assert_done();
    assert!(dir.join("updates.lock").exists());
}

#[test]
fn override_by_option_and_by_supervisor_config() {
    let d = device(1 << 20, "256KiB");
    let (mut holder, _lock) = d.hold_lock("main");
    let out = d.apply(&["--lock-timeout", "0", "--override-lock"]);
    assert!(out.status.success(), "{}", stderr(&out));
    d.assert_done();
    std::fs::remove_file(d.path("out.img")).unwrap();

    std::fs::write(
        d.path("target-state-config"),
        r#"{"SUPERVISOR_OVERRIDE_LOCK":"true"}"#,
    )
    .unwrap();
    let out = d.apply(&["--lock-timeout", "0"]);
    assert!(out.status.success(), "{}", stderr(&out));
    d.assert_done();
    std::fs::remove_file(d.path("out.img")).unwrap();

    std::fs::write(
        d.path("target-state-config"),
        r#"{"RESIN_OVERRIDE_LOCK":"false"}"#,
    )
    .unwrap();
    let out = d.apply(&["--lock-timeout", "0"]);
    assert_eq!(out.status.code(), Some(3), "{}", stderr(&out));
    holder.kill().unwrap();
    holder.wait().unwrap();
}

#[test]
fn failing_commit_hook_leaves_target_verified_not_committed() {
    let d = device(1 << 20, "256KiB");
    let out = d.apply(&["--commit-hook", "exit 7"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        stderr(&out).contains("commit hook `exit 7` failed"),
        "{}",
        stderr(&out)
    );
    assert!(!d.path("out.img").exists());
    assert!(d.path("out.img.partial").exists());
    let out = d.apply(&["--commit-hook", "test -f \"$DELTA_TARGET.partial\""]);
    assert!(out.status.success(), "{}", stderr(&out));
    d.assert_done();
}

#[test]
fn second_concurrent_apply_is_refused() {
    let d = device(1 << 20, "256KiB");
    let (mut holder, _lock) = d.hold_lock("main");
    let mut first = d
        .command(&[
            "apply",
            "old.img",
            "u.delta",
            "-o",
            "out.img",
            "--progress",
            "json",
        ])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    // The instance lock is taken first: held once the first waits for
    // the application's lock.
    let mut lines = Lines::of(first.stdout.take().unwrap());
    lines.wait_for("lock wait", |l| l.contains("\"step\":\"waiting_for_lock\""));
    let out = d.run(&["apply", "old.img", "u.delta", "-o", "other.img"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        stderr(&out).contains("another update is running"),
        "{}",
        stderr(&out)
    );
    holder.kill().unwrap();
    holder.wait().unwrap();
    assert!(first.wait().unwrap().success());
    d.assert_done();
}

#[test]
fn update_log_records_steps_and_errors() {
    let d = device(1 << 20, "256KiB");
    let out = d.apply(&[]);
    assert!(out.status.success(), "{}", stderr(&out));
    let logs: Vec<PathBuf> = std::fs::read_dir(d.path("logs"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    assert_eq!(logs.len(), 1);
    let name = logs[0].file_name().unwrap().to_string_lossy().into_owned();
    // delta-apply.YYYYmmdd_HHMMSS.PID.log
    let parts: Vec<&str> = name.split('.').collect();
    assert!(
        parts.len() == 4
            && (parts[0], parts[3]) == ("delta-apply", "log")
            && parts[1].len() == "YYYYmmdd_HHMMSS".len()
            && parts[2].parse::<u32>().is_ok(),
        "{name}"
    );
    let text = std::fs::read_to_string(&logs[0]).unwrap();
    for needle in [
        "old=old.img",
        "step applying started",
        "step verifying",
        "step committing",
        "result: success",
    ] {
        assert!(
            text.contains(needle),
            "{needle:?} missing from log:\n{text}"
        );
    }
    std::fs::remove_dir_all(d.path("logs")).unwrap();
    std::fs::create_dir(d.path("logs")).unwrap();
    std::fs::remove_file(d.path("out.img")).unwrap();
    std::fs::write(d.path("bad.delta"), b"garbage").unwrap();
    let out = d.run(&["apply", "old.img", "bad.delta", "-o", "out.img"]);
    assert_eq!(out.status.code(), Some(1));
    let log = std::fs::read_dir(d.path("logs"))
        .unwrap()
        .next()
        .unwrap()
        .unwrap()
        .path();
    let text = std::fs::read_to_string(log).unwrap();
    assert!(
        text.contains("result: failure (exit code 1)") && text.contains("not a delta file"),
        "{text}"
    );
}

#[test]
fn unwritable_log_dir_warns_and_carries_on() {
    let d = device(1 << 20, "256KiB");
    std::fs::write(d.path("not-a-dir"), "").unwrap();
    let out = d.apply(&["--log-dir", "not-a-dir/logs"]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("warning: cannot write the update log"),
        "{}",
        stderr(&out)
    );
    d.assert_done();
}

#[test]
fn json_progress_reports_every_step() {
    let d = device(8 << 20, "256KiB");
    let out = d.apply(&["--progress", "json"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let mut steps = Vec::new();
    let text = stdout(&out);
    let (events, last) = text.trim_end().rsplit_once('\n').unwrap();
    let last: serde_json::Value = serde_json::from_str(last).expect("a final JSON object");
    assert!(last["result"]["digest"].is_string(), "{last}");
    for line in events.lines() {
        let v: serde_json::Value = serde_json::from_str(line).expect("one JSON object per line");
        let step = v["step"].as_str().unwrap().to_owned();
        assert!(
            v["bytes_done"].as_u64().unwrap()
                <= v["bytes_total"]
                    .as_u64()
                    .unwrap()
                    .max(v["bytes_done"].as_u64().unwrap())
        );
        if steps.last() != Some(&step) {
            steps.push(step);
        }
    }
    for step in ["preparing", "verifying", "committing", "done"] {
        assert!(
            steps.iter().any(|s| s == step),
            "{step} missing from {steps:?}"
        );
    }
}

#[test]
fn block_device_target_written_in_place() {
    let d = device(2 << 20, "256KiB");
    let backing = d.path("partition.raw");
    std::fs::File::create(&backing)
        .unwrap()
        .set_len(4 << 20)
        .unwrap();
    let Some(lo) = LoopDevice::attach(&backing, false, "DELTA_REQUIRE_DEVICES") else {
        return;
    };
    let dev = lo.path().to_owned();
    let out = d.run(&["apply", "old.img", "u.delta", "-o", &dev, "--no-log"]);
    drop(lo);
    assert!(out.status.success(), "{}", stderr(&out));
    let new = std::fs::read(d.path("new.img")).unwrap();
    let written = std::fs::read(&backing).unwrap();
    assert!(written[..new.len()] == new[..], "partition content differs");
    assert!(std::fs::read_dir(d.dir.path()).unwrap().all(|e| !e
        .unwrap()
        .file_name()
        .to_string_lossy()
        .ends_with(".journal")));
}

#[test]
fn file_system_without_room_is_refused_before_writing() {
    let d = device(2 << 20, "256KiB");
    let small = d.path("small");
    std::fs::create_dir(&small).unwrap();
    // A 1 MiB file system for a 2 MiB image of random and text data.
    if !mount_tmpfs(&small, "1m") {
        return;
    }
    let out = d.run(&["apply", "old.img", "u.delta", "-o", "small/out.img"]);
    let left: Vec<_> = std::fs::read_dir(&small)
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    let _ = Command::new("umount").arg(&small).status();
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    let err = stderr(&out);
    assert!(
        err.contains("small/out.img") && err.contains("bytes free"),
        "{err}"
    );
    assert!(left.is_empty(), "files left in the target folder: {left:?}");
}
