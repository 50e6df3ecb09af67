//! Power cuts during `delta apply`: the file-system calls of a real run are
//! recorded with strace, every folder a power cut after each of them may
//! leave is built (see `common/crash.rs`), and the same command re-run on
//! it must either rebuild the new image or refuse without committing a
//! wrong one. kill -9 keeps the page cache; a power cut does not.
//!
//! `DELTA_CRASH_STATES` raises the number of states tried per test (400 by
//! default: about every distinct state of the CI image, in seconds);
//! `DELTA_CRASH_FILES` and `DELTA_CRASH_FILE_KIB` make the image larger
//! (`scripts/crash-states.sh`).

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

/// A new temp dir, on /dev/shm where there is one: each re-run fsyncs
/// dozens of times, free on a tmpfs, slow and uneven on a shared disk.
fn scratch() -> tempfile::TempDir {
    let shm = Path::new("/dev/shm");
    let parent = if shm.is_dir() {
        shm.to_owned()
    } else {
        std::env::temp_dir()
    };
    tempfile::tempdir_in(parent).unwrap()
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
    /// new image: deflate segments) and a binary file as large as the texts
    /// (edited: diffed segments, cheaper to apply, so more checkpoints).
    fn new(files: usize, len: usize) -> Pair {
        let root = scratch();
        let mut blob = Rng::new(7).bytes(files * len);
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
    let rec = crash::record(start, &log, tracked);
    let ops = rec.describe(0..rec.ops.len());
    let checkpoints = ops.matches("-> out.img.journal\n").count();
    assert!(checkpoints > 2, "no journal checkpoints mid-run:\n{ops}");
    rec
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
        let leftovers = ["out.img.partial", "out.img.journal"].map(|f| dir.join(f).exists());
        if out.status.success() && leftovers.contains(&true) {
            return Err(format!(
                "succeeded but left {leftovers:?} (partial, journal); {what}"
            ));
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
    /// Folders tried that each kind of state leaves (a folder may count
    /// for several kinds).
    by_kind: std::collections::BTreeMap<Kind, usize>,
    refused: usize,
    refused_twice: usize,
    failures: Vec<String>,
}

/// Materializes `state`, re-runs the command on it, and once more if it
/// refused; records any wrong outcome with the operations before the cut.
fn try_state(rec: &Recording, state: &CrashState, expect: &Expect, tally: &mut Tally) {
    let dir = scratch();
    rec.materialize(state).write(dir.path());
    for kind in &state.kinds {
        *tally.by_kind.entry(*kind).or_default() += 1;
    }
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
    let files = env_number("DELTA_CRASH_FILES", 6);
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
    power_cuts(None, 400);
}

#[test]
fn power_cuts_over_an_existing_target_leave_it_or_the_new_image() {
    power_cuts(Some(b"the image installed before".as_slice()), 400);
}

/// A log of a thread writing, a forked child reusing fd 3 for /dev/null,
/// a dup by fcntl and a rename, as `strace -f -xx` writes it.
const SMALL_LOG: &str = r#"100  openat(AT_FDCWD, "\x61", O_RDWR|O_CREAT|O_CLOEXEC, 0666) = 3
100  clone3({flags=CLONE_VM|CLONE_FILES|CLONE_THREAD, exit_signal=0}, 88 <unfinished ...>
101  pwrite64(3, "\x31\x32", 2, 0)     = 2
100  <... clone3 resumed>)             = 101
100  clone(child_stack=NULL, flags=CLONE_CHILD_SETTID|SIGCHLD, child_tidptr=0x7f) = 102
102  close(3)                          = 0
102  openat(AT_FDCWD, "\x2f\x64\x65\x76\x2f\x6e\x75\x6c\x6c", O_WRONLY) = 3
102  write(3, "\x00", 1)               = 1
100  --- SIGCHLD {si_signo=SIGCHLD, si_code=CLD_EXITED, si_pid=102} ---
100  fdatasync(3)                      = 0
100  fcntl(3, F_DUPFD_CLOEXEC, 3)      = 4
100  write(4, "\x33\x34\x35\x36", 4)   = 4
100  unlink("\x63")                    = -1 ENOENT (No such file or directory)
100  rename("\x61", "\x62")            = 0
"#;

#[test]
fn the_model_follows_threads_forks_and_dups_and_cuts_power() {
    let empty = tempfile::tempdir().unwrap();
    let rec = crash::record(Fs::read(empty.path()), SMALL_LOG, |_| true);
    assert_eq!(
        rec.describe(0..rec.ops.len()),
        "  0: create a\n  1: write a [0, +2)\n  2: fsync/fdatasync a\n  \
         3: write a [0, +4)\n  4: rename a -> b"
    );
    let (states, _) = rec.crash_states(1000);
    let built: Vec<Fs> = states.iter().map(|s| rec.materialize(s)).collect();
    let folders: Vec<_> = built
        .iter()
        .map(|fs| (fs.file("a"), fs.file("b")))
        .collect();
    // No barrier for the names: every folder a cut after the rename may
    // leave, torn writes and a lost write among them.
    for expected in [
        (None, None),
        (Some(&b""[..]), None),
        (Some(&b"12"[..]), None),
        (Some(&b"3456"[..]), None),
        (None, Some(&b"3456"[..])),
        (None, Some(&b"12"[..])),
        (None, Some(&b"34"[..])),
        (None, Some(&b"345"[..])),
    ] {
        assert!(
            folders.contains(&expected),
            "{expected:?} not in {folders:?}"
        );
    }
}
