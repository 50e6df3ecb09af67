//! Command-line habits of the `delta` binary: machine-readable results,
//! signals, `-o -`, `--force`, `-q`/`-v`, completions and the man page,
//! usage errors, update log names.

mod common;

use common::{stderr, stdout, Fixture, Lines, DELTA};
use delta_core::testing::{mutate, Rng};
use std::path::PathBuf;
use std::process::{Child, Command, Output, Stdio};

/// The JSON objects of `out`'s stdout, one per line.
fn json_lines(out: &Output) -> Vec<serde_json::Value> {
    stdout(out)
        .lines()
        .map(|line| serde_json::from_str(line).unwrap_or_else(|e| panic!("{e}: {line}")))
        .collect()
}

/// A device with an image pair and a delta of it, `u.delta`.
struct Pair {
    f: Fixture,
    /// `--segment-size` and `--max-merge` of `u.delta`.
    segment: String,
}

impl std::ops::Deref for Pair {
    type Target = Fixture;

    fn deref(&self) -> &Fixture {
        &self.f
    }
}

impl Pair {
    /// An image pair of `len` bytes.
    fn new(len: usize, segment: &str) -> Pair {
        let mut rng = Rng::new(len as u64 ^ 17);
        let mut old = rng.text(len / 2);
        old.extend(rng.bytes(len - len / 2));
        let new = mutate(&old, &mut rng, 40);
        let p = Pair {
            f: Fixture::with_images(&old, &new),
            segment: segment.into(),
        };
        let out = p.gen(&["-o", "u.delta"]);
        assert!(out.status.success(), "{}", stderr(&out));
        p
    }

    /// A tar archive of `files` gzip files of `len` bytes of text each as
    /// old.img, the same with every text edited as new.img, and its delta.
    fn gzip_tar(files: usize, len: usize) -> Pair {
        let f = Fixture::empty();
        for (tree, edited) in [("old", false), ("new", true)] {
            // The same paths in both archives: each file's old version
            // is found.
            let folder = f.path(tree).join("data");
            std::fs::create_dir_all(&folder).unwrap();
            for i in 0..files {
                let mut text = Rng::new(i as u64).text(len);
                if edited {
                    text.splice(len / 2..len / 2, b"an edit\n".iter().copied());
                }
                std::fs::write(folder.join(format!("f{i}.txt")), text).unwrap();
            }
            let status = Command::new("sh")
                .current_dir(f.dir.path())
                .arg("-c")
                .arg(format!(
                    "gzip -9n {tree}/data/*.txt && tar -cf {tree}.img -C {tree} data"
                ))
                .status()
                .expect("sh, gzip and tar");
            assert!(status.success());
        }
        let p = Pair {
            f,
            segment: "4MiB".into(),
        };
        let out = p.gen(&["-o", "u.delta"]);
        assert!(out.status.success(), "{}", stderr(&out));
        assert!(
            stdout(&out).contains("content: tar") && !stdout(&out).contains(" in 0 of "),
            "no deflate segments: {}",
            stdout(&out)
        );
        p
    }

    /// `delta gen old.img new.img` with `u.delta`'s segment sizes and `extra`.
    fn gen(&self, extra: &[&str]) -> Output {
        let mut args = vec!["gen", "old.img", "new.img"];
        args.extend_from_slice(extra);
        let segment = self.segment.as_str();
        args.extend_from_slice(&["--segment-size", segment, "--max-merge", segment]);
        self.run(&args)
    }

    fn new_len(&self) -> u64 {
        std::fs::metadata(self.path("new.img")).unwrap().len()
    }
}

/// Reads `child`'s stdout lines until one satisfies `ready`, then sends
/// it SIGTERM and collects its output (the lines read included).
fn terminate_when(mut child: Child, ready: impl Fn(&str) -> bool) -> (Output, Vec<String>) {
    let mut lines = Lines::of(child.stdout.take().unwrap());
    lines.wait_for("the moment for SIGTERM", ready);
    let status = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
    let seen = lines.rest();
    let out = child.wait_with_output().unwrap();
    (out, seen)
}

fn last_json(lines: &[String]) -> serde_json::Value {
    serde_json::from_str(lines.last().expect("some output")).unwrap()
}

#[test]
fn json_progress_ends_with_the_result() {
    let p = Pair::new(1 << 20, "256KiB");
    let out = p.apply(&["--progress", "json"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let lines = json_lines(&out);
    assert!(lines.len() > 2, "{lines:?}");
    assert!(lines[..lines.len() - 1]
        .iter()
        .all(|v| v.get("step").is_some()));
    let result = &lines.last().unwrap()["result"];
    let digest = blake3::hash(&std::fs::read(p.path("new.img")).unwrap());
    assert_eq!(result["digest"], digest.to_hex().as_str(), "{result}");
    assert_eq!(result["new_len"], p.new_len());
    assert!(result["segments"].as_u64().unwrap() >= 4, "{result}");
    assert_eq!(result["resumed"], false);
    assert_eq!(result["resumed_bytes"], 0);
    assert_eq!(result["warnings"], serde_json::json!([]));
    let log = result["log"].as_str().unwrap();
    assert!(p.dir.path().join(log).exists(), "{log}");
    assert!(result["seconds"].as_f64().unwrap() >= 0.0);
    let peak = result["peak_memory"].as_u64().unwrap();
    assert!(peak > 1 << 20 && peak < 24 << 20, "{result}");
    assert_eq!(stderr(&out), "");
    p.assert_done();
}

#[test]
fn json_progress_ends_with_the_error() {
    let p = Pair::new(1 << 20, "256KiB");
    let mut delta = std::fs::read(p.path("u.delta")).unwrap();
    let last = delta.len() - 100;
    delta[last] ^= 0x55;
    std::fs::write(p.path("bad.delta"), &delta).unwrap();
    let out = p.run(&[
        "apply",
        "old.img",
        "bad.delta",
        "-o",
        "out.img",
        "--progress",
        "json",
    ]);
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    let lines = json_lines(&out);
    let error = &lines.last().unwrap()["error"];
    assert_eq!(error["code"], 1, "{error}");
    let message = error["message"].as_str().unwrap();
    assert!(message.contains("bad.delta"), "{message}");
    assert!(error["causes"].is_array(), "{error}");
    assert!(error["log"].as_str().is_some(), "{error}");
    // Still the one error line on stderr.
    let err = stderr(&out);
    assert_eq!(err.trim_end(), format!("error: {message}"));
    assert!(!p.path("out.img").exists());
}

#[test]
fn json_error_of_a_lock_timeout_has_code_3() {
    let p = Pair::new(1 << 20, "256KiB");
    let mut holder = p.hold_lock("main").0;
    let out = p.apply(&["--progress", "json", "--lock-timeout", "0.3"]);
    holder.kill().unwrap();
    holder.wait().unwrap();
    assert_eq!(out.status.code(), Some(3), "{}", stderr(&out));
    let lines = json_lines(&out);
    let error = &lines.last().unwrap()["error"];
    assert_eq!(error["code"], 3, "{error}");
    let message = error["message"].as_str().unwrap();
    assert!(message.contains("still held after"), "{message}");
    // Durations as people read them, not "0.300117s".
    assert!(
        message.contains(" ms") || message.contains(" s:"),
        "{message}"
    );
}

#[test]
fn sigterm_while_waiting_for_a_lock_exits_4_and_a_rerun_resumes() {
    let p = Pair::new(1 << 20, "256KiB");
    let mut holder = p.hold_lock("main").0;
    let child = p.spawn_apply(&["--progress", "json"]);
    let (out, lines) = terminate_when(child, |line| line.contains("waiting_for_lock"));
    holder.kill().unwrap();
    holder.wait().unwrap();
    assert_eq!(out.status.code(), Some(4), "{}", stderr(&out));
    let error = &last_json(&lines)["error"];
    assert_eq!(error["code"], 4, "{error}");
    assert!(
        stderr(&out).contains("cancelled; re-run the same command to resume"),
        "{}",
        stderr(&out)
    );
    let logs = p.logs();
    assert_eq!(logs.len(), 1);
    let log = std::fs::read_to_string(&logs[0]).unwrap();
    assert!(log.contains("result: cancelled (exit code 4)"), "{log}");
    assert!(!p.path("out.img").exists(), "committed despite the lock");
    let journal = std::fs::read_to_string(p.path("out.img.journal")).unwrap();
    assert!(journal.contains("\"verified\""), "{journal}");

    let out = p.apply(&[]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(stdout(&out).contains("resumed at byte"), "{}", stdout(&out));
    p.assert_done();
}

#[test]
fn sigterm_while_applying_checkpoints_exits_4_and_a_rerun_resumes() {
    // A tar of gzip files whose texts changed: the applier re-deflates
    // them (deflate segments), which takes over a second here, so SIGTERM
    // comes while bytes are being written.
    let p = Pair::gzip_tar(16, 512 << 10);
    let child = p.spawn_apply(&["--progress", "json"]);
    let (out, lines) = terminate_when(child, |line| {
        serde_json::from_str::<serde_json::Value>(line)
            .is_ok_and(|v| v["step"] == "applying" && v["bytes_done"].as_u64().unwrap_or(0) > 0)
    });
    assert_eq!(
        out.status.code(),
        Some(4),
        "the apply finished before SIGTERM? {}",
        stderr(&out)
    );
    assert_eq!(last_json(&lines)["error"]["code"], 4);
    let log = std::fs::read_to_string(&p.logs()[0]).unwrap();
    assert!(
        log.contains("result: cancelled (exit code 4)") && log.contains("in step applying"),
        "{log}"
    );
    let journal = std::fs::read_to_string(p.path("out.img.journal")).unwrap();
    assert!(journal.contains("\"applying\""), "{journal}");

    let out = p.apply(&["--progress", "json"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let result = json_lines(&out).pop().unwrap()["result"].take();
    assert_eq!(result["resumed"], true, "{result}");
    assert!(result["resumed_bytes"].as_u64().unwrap() > 0, "{result}");
    p.assert_done();
}

#[test]
fn gen_to_stdout_gives_the_same_delta_and_it_applies() {
    let p = Pair::new(1 << 20, "256KiB");
    let out = p.gen(&["-o", "-"]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(
        out.stdout == std::fs::read(p.path("u.delta")).unwrap(),
        "stdout differs from the file delta"
    );
    assert!(stderr(&out).contains("wrote -: "), "{}", stderr(&out));
    std::fs::write(p.path("piped.delta"), &out.stdout).unwrap();
    let out = p.run(&["apply", "old.img", "piped.delta", "-o", "out.img"]);
    assert!(out.status.success(), "{}", stderr(&out));
    p.assert_done();
}

#[test]
fn existing_output_is_kept_without_force_and_replaced_with_it() {
    let p = Pair::new(1 << 20, "256KiB");
    std::fs::write(p.path("keep.delta"), b"precious").unwrap();
    let out = p.gen(&["-o", "keep.delta"]);
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    let err = stderr(&out);
    assert!(
        err.contains("keep.delta") && err.contains("--force"),
        "{err}"
    );
    assert_eq!(std::fs::read(p.path("keep.delta")).unwrap(), b"precious");
    for force in ["-f", "--force"] {
        let out = p.gen(&["-o", "keep.delta", force]);
        assert!(out.status.success(), "{}", stderr(&out));
        assert!(
            std::fs::read(p.path("keep.delta")).unwrap()
                == std::fs::read(p.path("u.delta")).unwrap(),
            "not replaced by the delta"
        );
    }
}

#[test]
fn gen_json_progress_reports_phases_and_ends_with_the_result() {
    let p = Pair::new(1 << 20, "256KiB");
    let out = p.gen(&["-o", "j.delta", "--progress", "json"]);
    assert!(out.status.success(), "{}", stderr(&out));
    // Only JSON on stdout, one object a line, so an agent can parse it;
    // the text summary goes to stderr.
    let lines: Vec<serde_json::Value> = stdout(&out)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON ({e}): {l}")))
        .collect();
    assert!(stderr(&out).contains("wrote j.delta"), "{}", stderr(&out));
    let phases: Vec<&str> = lines.iter().filter_map(|v| v["phase"].as_str()).collect();
    for phase in ["indexing", "planning", "encoding", "writing", "checking"] {
        assert!(phases.contains(&phase), "{phase} missing: {phases:?}");
    }
    for v in lines.iter().filter(|v| v.get("phase").is_some()) {
        assert!(
            v["bytes_done"].as_u64().unwrap() <= v["bytes_total"].as_u64().unwrap(),
            "{v}"
        );
    }
    // Every phase starts once and ends once (checking too, which may have
    // no bytes), in that order.
    for phase in ["indexing", "planning", "encoding", "writing", "checking"] {
        let events: Vec<&str> = (lines.iter())
            .filter(|v| v["phase"] == phase)
            .map(|v| v["event"].as_str().unwrap())
            .collect();
        assert_eq!(events.first(), Some(&"start"), "{phase}: {events:?}");
        assert_eq!(events.last(), Some(&"end"), "{phase}: {events:?}");
        let ends = events.iter().filter(|e| **e == "end").count();
        assert_eq!(ends, 1, "{phase}: {events:?}");
    }
    let encoding_end = lines.iter().rfind(|v| v["phase"] == "encoding").unwrap();
    assert_eq!(encoding_end["bytes_done"], p.new_len());
    let result = &lines.last().unwrap()["result"];
    let delta_len = std::fs::metadata(p.path("j.delta")).unwrap().len();
    assert_eq!(result["delta_bytes"], delta_len, "{result}");
    assert_eq!(result["delta"], "j.delta");
    assert_eq!(result["new_len"], p.new_len());
    assert!(result["seconds"].as_f64().is_some());
    assert!(
        std::fs::read(p.path("j.delta")).unwrap() == std::fs::read(p.path("u.delta")).unwrap(),
        "progress changed the delta"
    );

    let out = p.gen(&["-o", "j.delta", "--progress", "json"]);
    assert_eq!(out.status.code(), Some(1));
    let error = json_lines(&out).pop().unwrap()["error"].take();
    assert_eq!(error["code"], 1);
    assert!(
        error["message"].as_str().unwrap().contains("--force"),
        "{error}"
    );
}

#[test]
fn completions_and_man_page_name_the_subcommands() {
    let dir = tempfile::tempdir().unwrap();
    for shell in ["bash", "zsh", "fish"] {
        let out = Command::new(DELTA)
            .current_dir(dir.path())
            .args(["completions", shell])
            .output()
            .unwrap();
        assert!(out.status.success(), "{}", stderr(&out));
        let text = stdout(&out);
        assert!(text.len() > 1000, "{shell}: {text}");
        for sub in ["gen", "apply", "info", "verify"] {
            assert!(text.contains(sub), "{shell} completion lacks {sub}");
        }
    }
    let out = Command::new(DELTA)
        .current_dir(dir.path())
        .arg("man")
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    let page = stdout(&out);
    assert!(page.starts_with(".ie") || page.contains(".TH"), "{page}");
    assert!(page.contains(".TH delta"), "{page}");
    for sub in ["gen", "apply", "completions", "check\\-data"] {
        assert!(page.contains(sub), "man page lacks {sub}");
    }
    // The pages the main page names (delta-gen(1), ...) exist: `--dir`
    // writes them all.
    let dir = tempfile::tempdir().unwrap();
    let out = Command::new(DELTA)
        .arg("man")
        .arg("--dir")
        .arg(dir.path())
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    for named in page.lines().filter_map(|l| l.strip_suffix("(1)")) {
        let file = format!("{}.1", named.replace("\\-", "-"));
        let text = std::fs::read_to_string(dir.path().join(&file))
            .unwrap_or_else(|e| panic!("{file}, named by the main page: {e}"));
        assert!(text.contains(".TH"), "{file}");
    }
    assert!(dir.path().join("delta.1").is_file());
    assert!(dir.path().join("delta-apply.1").is_file());
}

#[test]
fn usage_errors_show_the_subcommands_usage() {
    let p = Pair::new(64 << 10, "16KiB");
    let out = p.run(&["gen", "--full", "old.img", "new.img", "-o", "x"]);
    assert_eq!(out.status.code(), Some(2));
    let err = stderr(&out);
    assert!(
        err.contains("Usage: delta gen [OPTIONS] OLD NEW -o DELTA"),
        "{err}"
    );
    assert!(
        err.contains("delta gen [OPTIONS] --full NEW -o DELTA"),
        "{err}"
    );
    assert!(!p.path("x").exists());
    let out = p.run(&["apply", "old.img", "-o", "out.img"]);
    // One input is a full payload's DELTA: not a usage error but a refusal.
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    let out = p.run(&["apply", "-o", "out.img"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(
        stderr(&out).contains("Usage: delta apply [OPTIONS] [OLD] DELTA -o OUT"),
        "{}",
        stderr(&out)
    );
    let help = stdout(&p.run(&["apply", "--help"]));
    assert!(help.contains("4 cancelled"), "{help}");
    assert!(help.contains("overwritten"), "{help}");
    // Each argument on its own line, as the usage line names it.
    assert!(!help.contains("<OLD> [DELTA]..."), "{help}");
    assert!(
        help.contains("  <OLD>\n") && help.contains("  [DELTA]\n"),
        "{help}"
    );
    let help = stdout(&p.run(&["gen", "--help"]));
    assert!(!help.contains("[NEW]..."), "{help}");
    // -v says what it prints, where it prints something.
    assert!(help.contains("every file's cost"), "{help}");
    let help = stdout(&p.run(&["apply", "--help"]));
    assert!(help.contains("the update log"), "{help}");
    for command in ["check-data", "man", "info", "verify"] {
        let help = stdout(&p.run(&[command, "--help"]));
        assert!(!help.contains("--verbose"), "{command}: {help}");
    }
}

#[test]
fn quiet_prints_nothing_and_verbose_prints_the_log() {
    let p = Pair::new(256 << 10, "64KiB");
    let out = p.run(&["-q", "gen", "old.img", "new.img", "-o", "q.delta"]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!((stdout(&out), stderr(&out)), (String::new(), String::new()));
    let out = p.apply(&["--quiet"]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!((stdout(&out), stderr(&out)), (String::new(), String::new()));
    std::fs::remove_file(p.path("out.img")).unwrap();
    let out = p.apply(&["-v"]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(stdout(&out).contains("applied out.img"), "{}", stdout(&out));
    assert!(
        stderr(&out).contains("step applying started") && stderr(&out).contains("result: success"),
        "{}",
        stderr(&out)
    );
    let out = p.run(&["-q", "-v", "info", "q.delta"]);
    assert_eq!(out.status.code(), Some(2));
    // Errors still show with -q.
    let out = p.run(&["-q", "gen", "old.img", "new.img", "-o", "q.delta"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(stderr(&out).starts_with("error: "), "{}", stderr(&out));
}

#[test]
fn update_logs_of_runs_in_the_same_second_do_not_collide() {
    let p = Pair::new(256 << 10, "64KiB");
    // Two runs at once (own instance locks, targets and journals), one log
    // folder: the same second, two files.
    let spawn = |target: &str, lock: &str| {
        p.command(&[
            "apply",
            "old.img",
            "u.delta",
            "-o",
            target,
            "--instance-lock",
            lock,
        ])
        .stdout(Stdio::null())
        .spawn()
        .unwrap()
    };
    let mut a = spawn("a.img", "a.lock");
    let mut b = spawn("b.img", "b.lock");
    assert!(a.wait().unwrap().success());
    assert!(b.wait().unwrap().success());
    let logs = p.logs();
    assert_eq!(logs.len(), 2, "{logs:?}");
    for log in &logs {
        let name = log.file_name().unwrap().to_string_lossy().into_owned();
        let parts: Vec<&str> = name.split('.').collect();
        assert_eq!(parts.len(), 4, "delta-apply.STAMP.PID.log: {name}");
        assert_eq!((parts[0], parts[3]), ("delta-apply", "log"), "{name}");
        assert_eq!(parts[1].len(), "YYYYmmdd_HHMMSS".len(), "{name}");
        assert!(parts[2].parse::<u32>().is_ok(), "{name}");
        let text = std::fs::read_to_string(log).unwrap();
        assert_eq!(text.matches("result: success").count(), 1, "{text}");
    }
    assert_ne!(logs[0], logs[1]);
}

#[test]
fn printed_durations_read_as_people_write_them() {
    let p = Pair::new(256 << 10, "64KiB");
    let out = p.apply(&[]);
    assert!(out.status.success(), "{}", stderr(&out));
    let line = stdout(&out);
    // "in 12 ms" or "in 1.2 s", never "in 0.01s" or "0.012345678s".
    let took = line.rsplit(" in ").next().unwrap().trim();
    assert!(took.ends_with(" ms") || took.ends_with(" s"), "{line}");
    let log = std::fs::read_to_string(&p.logs()[0]).unwrap();
    assert!(
        log.lines()
            .filter(|l| l.contains("finished in"))
            .all(|l| l.ends_with(" ms") || l.ends_with(" s")),
        "{log}"
    );
}

/// The README's apply command, with no path options, works for a user
/// who is not root: journal, update log and instance lock go to the
/// user's state folder (`~/.local/state/delta`), not to the device's
/// `/mnt/data` and `/var/lock`. As root the test runs itself as `nobody`
/// through `setpriv` (and fails where setpriv is missing).
#[test]
fn the_readme_apply_works_as_a_user_who_is_not_root() {
    const CHILD: &str = "DELTA_TEST_NOT_ROOT_DIR";
    if let Some(dir) = std::env::var_os(CHILD) {
        apply_with_defaults(&PathBuf::from(dir));
        return;
    }
    let p = Pair::new(1 << 20, "256KiB");
    let dir = p.dir.path();
    assert!(p.gen(&["-o", "update.delta"]).status.success());
    let home = dir.join("home");
    std::fs::create_dir(&home).unwrap();
    if !rustix::process::geteuid().is_root() {
        apply_with_defaults(dir);
        p.assert_done();
        return;
    }
    assert!(
        Command::new("setpriv").arg("--version").output().is_ok(),
        "running as root and setpriv is missing: install util-linux"
    );
    use std::os::unix::fs::PermissionsExt;
    for folder in [dir, &home] {
        std::fs::set_permissions(folder, std::fs::Permissions::from_mode(0o777)).unwrap();
    }
    let me = std::env::current_exe().unwrap();
    let out = Command::new("setpriv")
        .args(["--reuid=65534", "--regid=65534", "--clear-groups", "--"])
        .arg(&me)
        .args([
            "--exact",
            "the_readme_apply_works_as_a_user_who_is_not_root",
        ])
        .args(["--nocapture", "--test-threads=1"])
        .env(CHILD, dir)
        .output()
        .unwrap();
    assert!(
        out.status.success() && stdout(&out).contains("1 passed"),
        "as nobody:\n{}\n{}",
        stdout(&out),
        stderr(&out)
    );
    p.assert_done();
}

/// `delta apply old.img update.delta -o out.img` in `dir`, with `HOME` at
/// `dir/home` and no other setting.
fn apply_with_defaults(dir: &std::path::Path) {
    let home = dir.join("home");
    let out = Command::new(DELTA)
        .current_dir(dir)
        .env_clear()
        .env("HOME", &home)
        .args(["apply", "old.img", "update.delta", "-o", "out.img"])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    let state = home.join(".local/state/delta");
    assert!(
        state.join("apply.lock").is_file(),
        "no instance lock in {}",
        state.display()
    );
    let logs = std::fs::read_dir(state.join("logs")).unwrap().count();
    assert_eq!(logs, 1, "one update log");
}
