//! Power cuts during `delta apply`: the file-system calls of a real run are
//! recorded with strace, every folder a power cut after each of them may
//! leave is built (see `common/crash.rs`), and the same command re-run on
//! it must either rebuild the new image or refuse without committing a
//! wrong one. kill -9 keeps the page cache; a power cut does not.
//!
//! `DELTA_CRASH_STATES` raises the number of states tried (the CI default
//! keeps the test near a minute on 2 cores); `DELTA_CRASH_FILES` and
//! `DELTA_CRASH_FILE_KIB` make the image larger (`scripts/crash-states.sh`).

#[path = "common/crash.rs"]
mod crash;

use crash::{CrashState, Fs, Kind, Recording, KINDS};
use delta_core::testing::{mutate, Rng};
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

const DELTA: &str = env!("CARGO_BIN_EXE_delta");

/// Fewer distinct states than this and the test proves little: it fails.
const MIN_STATES: usize = 50;

/// The applier's options: every path inside the run's folder, a journal
/// checkpoint every 16 KiB so that resumes from checkpoints are cut too.
const APPLY: &[&str] = &[
    "apply",
    "old.img",
    "u.delta",
    "-o",
    "out.img",
    "--log-dir",
    "logs",
    "--instance-lock",
    "apply.lock",
    "--lock-root",
    "locks",
    "--supervisor-config",
    "no-config",
    "--state-dir",
    "state",
    "--lock-poll",
    "0.1",
    "--checkpoint-bytes",
    "16KiB",
    "--progress",
    "none",
];

fn env_number(name: &str, default: usize) -> usize {
    std::env::var(name).map_or(default, |v| {
        v.parse()
            .unwrap_or_else(|_| panic!("{name}={v}: not a number"))
    })
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// A run folder with old.img and its delta to new.img, which is kept
/// outside it.
struct Pair {
    root: tempfile::TempDir,
    old: Vec<u8>,
    new: Vec<u8>,
}

impl Pair {
    /// A tar of `files` gzip files of `len` bytes of text (edited in the
    /// new image: deflate segments) and a binary file (edited: diffed
    /// segments).
    fn new(files: usize, len: usize) -> Pair {
        let root = tempfile::tempdir().unwrap();
        let mut blob = Rng::new(7).bytes(len);
        for (tree, edited) in [("old", false), ("new", true)] {
            let folder = root.path().join(tree).join("data");
            std::fs::create_dir_all(&folder).unwrap();
            for i in 0..files {
                let mut text = Rng::new(i as u64).text(len);
                if edited {
                    text.splice(len / 2..len / 2, b"an edit\n".iter().copied());
                }
                std::fs::write(folder.join(format!("f{i}.txt")), text).unwrap();
            }
            if edited {
                blob = mutate(&blob, &mut Rng::new(8), 20);
            }
            std::fs::write(folder.join("blob.bin"), &blob).unwrap();
            sh(
                root.path(),
                &format!("gzip -9n {tree}/data/*.txt && tar -cf {tree}.img -C {tree} data"),
            );
        }
        let run = root.path().join("run");
        for sub in ["run/state", "run/locks", "run/logs"] {
            std::fs::create_dir_all(root.path().join(sub)).unwrap();
        }
        std::fs::rename(root.path().join("old.img"), run.join("old.img")).unwrap();
        let out = Command::new(DELTA)
            .current_dir(&run)
            .args(["gen", "old.img", "../new.img", "-o", "u.delta"])
            .args(["--segment-size", "64KiB", "--max-merge", "64KiB"])
            .output()
            .unwrap();
        assert!(out.status.success(), "{}", stderr(&out));
        let report = String::from_utf8_lossy(&out.stdout);
        assert!(report.contains(" deflate "), "no deflate segment: {report}");
        Pair {
            old: std::fs::read(run.join("old.img")).unwrap(),
            new: std::fs::read(root.path().join("new.img")).unwrap(),
            root,
        }
    }

    fn run_dir(&self) -> PathBuf {
        self.root.path().join("run")
    }
}

fn sh(dir: &Path, script: &str) {
    let status = Command::new("sh")
        .current_dir(dir)
        .args(["-c", script])
        .status()
        .expect("sh, gzip and tar");
    assert!(status.success(), "{script}");
}

/// The log directory, locks and the update log are not part of what a
/// power cut must keep consistent.
fn tracked(path: &str) -> bool {
    let top = path.split('/').next().unwrap();
    !matches!(top, "logs" | "locks" | "apply.lock")
}

/// Runs `delta apply` under strace in `pair`'s run folder and returns the
/// operations it made there. Fails without strace: a skipped crash test
/// would pass unseen.
fn record(pair: &Pair) -> Recording {
    let start = Fs::read(&pair.run_dir());
    let log = pair.root.path().join("strace.log");
    let out = Command::new("strace")
        .args([
            "-f",
            "-qq",
            "-s",
            "16777216",
            "-xx",
            "-e",
            crash::TRACED,
            "-o",
        ])
        .arg(&log)
        .arg(DELTA)
        .args(APPLY)
        .current_dir(pair.run_dir())
        .output()
        .expect("strace is needed for this test (apt-get install strace)");
    assert!(out.status.success(), "{}", stderr(&out));
    let out_img = std::fs::read(pair.run_dir().join("out.img")).unwrap();
    assert!(out_img == pair.new, "the recorded run made a wrong image");
    let log = std::fs::read_to_string(log).unwrap();
    crash::record(start, &log, tracked)
}

/// What a run may leave at out.img: the new image, or what was there
/// before (nothing, or the earlier file).
struct Expect<'a> {
    old: &'a [u8],
    new: &'a [u8],
    before: Option<&'a [u8]>,
}

impl Expect<'_> {
    /// Runs the apply command in `dir` and checks what it left; Ok(true)
    /// if it succeeded.
    fn run(&self, dir: &Path) -> Result<bool, String> {
        let out = Command::new(DELTA)
            .args(APPLY)
            .current_dir(dir)
            .output()
            .unwrap();
        let what = format!("exit {:?}, stderr: {}", out.status.code(), stderr(&out));
        if std::fs::read(dir.join("old.img")).ok().as_deref() != Some(self.old) {
            return Err(format!("old.img changed; {what}"));
        }
        let target = std::fs::read(dir.join("out.img")).ok();
        match target.as_deref() {
            Some(bytes) if bytes == self.new => Ok(out.status.success()),
            _ if out.status.success() => Err(format!("succeeded without the new image; {what}")),
            left if left == self.before => Ok(false),
            Some(bytes) => Err(format!("out.img is {} wrong bytes; {what}", bytes.len())),
            None => Err(format!("out.img is gone; {what}")),
        }
    }
}

/// The counts of a crash test.
#[derive(Default)]
struct Tally {
    tried: usize,
    by_kind: std::collections::BTreeMap<Kind, usize>,
    refused: usize,
    refused_twice: usize,
    failures: Vec<String>,
}

/// Materializes `state`, re-runs the command on it, and once more if it
/// refused; records any wrong outcome with the operations before the cut.
fn try_state(rec: &Recording, state: &CrashState, expect: &Expect, tally: &mut Tally) {
    let dir = tempfile::tempdir().unwrap();
    rec.materialize(state).write(dir.path());
    *tally.by_kind.entry(state.kind).or_default() += 1;
    tally.tried += 1;
    let outcome = expect.run(dir.path()).and_then(|done| {
        if done {
            return Ok(());
        }
        tally.refused += 1;
        let again = expect
            .run(dir.path())
            .map_err(|e| format!("second re-run: {e}"))?;
        tally.refused_twice += usize::from(!again);
        Ok(())
    });
    if let Err(e) = outcome {
        let ops = rec.describe(state.cut.saturating_sub(16)..state.cut);
        tally.failures.push(format!(
            "{:?} state, cut after {} ops, {}: {e}\nlast ops before the cut:\n{ops}",
            state.kind, state.cut, state.lost
        ));
    }
}

/// Records a run over `before` (out.img's earlier content, if any), then
/// tries up to `cap` crash states of it.
fn power_cuts(before: Option<&[u8]>, cap: usize) {
    let files = env_number("DELTA_CRASH_FILES", 4);
    let len = env_number("DELTA_CRASH_FILE_KIB", 128) << 10;
    let pair = Pair::new(files, len);
    if let Some(bytes) = before {
        std::fs::write(pair.run_dir().join("out.img"), bytes).unwrap();
    }
    let rec = record(&pair);
    let (states, distinct) = rec.crash_states(env_number("DELTA_CRASH_STATES", cap));
    let expect = Expect {
        old: &pair.old,
        new: &pair.new,
        before,
    };
    let mut tally = Tally::default();
    for state in &states {
        try_state(&rec, state, &expect, &mut tally);
    }
    eprintln!(
        "crash states: {} ops recorded, {distinct} distinct states, {} tried {:?}, \
         {} refused at first ({} twice), {} wrong",
        rec.ops.len(),
        tally.tried,
        tally.by_kind,
        tally.refused,
        tally.refused_twice,
        tally.failures.len()
    );
    assert!(
        tally.failures.is_empty(),
        "{} of {} crash states went wrong:\n{}",
        tally.failures.len(),
        tally.tried,
        tally.failures.join("\n\n")
    );
    assert!(tally.tried >= MIN_STATES, "only {} states", tally.tried);
    for kind in KINDS {
        assert!(tally.by_kind.contains_key(&kind), "no {kind:?} state");
    }
}

#[test]
fn power_cuts_during_apply_never_commit_a_wrong_image() {
    power_cuts(None, 200);
}

#[test]
fn power_cuts_over_an_existing_target_leave_it_or_the_new_image() {
    power_cuts(Some(b"the image installed before".as_slice()), 100);
}
