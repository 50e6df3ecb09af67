//! Helpers shared by the CLI's tests: the device fixture (a temp dir
//! holding everything `delta apply` touches), waits for events with a
//! deadline, loop devices, tmpfs mounts, and reporting what this machine
//! cannot do.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::Duration;

/// The `delta` binary under test.
pub(crate) const DELTA: &str = env!("CARGO_BIN_EXE_delta");

/// What `delta apply` is given in a fixture, each unless the test names
/// it: every path of the device's (update logs, journal, instance lock,
/// application locks, supervisor config, keyring) inside the fixture's
/// folder, and short waits between lock probes and download retries.
pub(crate) const APPLY_DEFAULTS: [(&str, &str); 8] = [
    ("--log-dir", "logs"),
    ("--state-dir", "."),
    ("--instance-lock", "apply.lock"),
    ("--lock-root", "locks"),
    ("--supervisor-config", "target-state-config"),
    ("--keyring", "no-keyring"),
    ("--lock-poll", "0.1"),
    ("--retry-delay", "0.05"),
];

/// `delta ARGS` in `dir`, with no proxy from the environment; an `apply`
/// gets each of `defaults` (flag and value) whose flag `args` does not
/// name.
pub(crate) fn delta_in(dir: &Path, args: &[&str], defaults: &[(&str, &str)]) -> Command {
    let mut cmd = Command::new(DELTA);
    cmd.current_dir(dir).args(args);
    for proxy in ["http_proxy", "https_proxy", "all_proxy"] {
        cmd.env_remove(proxy).env_remove(proxy.to_ascii_uppercase());
    }
    if args.first() == Some(&"apply") {
        for &(flag, value) in defaults {
            if !args.contains(&flag) {
                cmd.args([flag, value]);
            }
        }
    }
    cmd
}

/// A temp dir standing for a device: `old.img`, `new.img` and `u.delta`
/// once made, and the folders `locks` and `logs`.
pub(crate) struct Fixture {
    pub dir: tempfile::TempDir,
}

impl Fixture {
    /// An empty device: only the folders `locks` and `logs`.
    pub(crate) fn empty() -> Fixture {
        let dir = tempfile::tempdir().unwrap();
        for sub in ["locks", "logs"] {
            std::fs::create_dir_all(dir.path().join(sub)).unwrap();
        }
        Fixture { dir }
    }

    /// A device holding `old` as `old.img` and `new` as `new.img`.
    pub(crate) fn with_images(old: &[u8], new: &[u8]) -> Fixture {
        let f = Fixture::empty();
        std::fs::write(f.path("old.img"), old).unwrap();
        std::fs::write(f.path("new.img"), new).unwrap();
        f
    }

    /// Makes `u.delta` of `old.img` to `new.img` with segments (and merges)
    /// of `segment` (`--segment-size` units) and `extra` arguments.
    pub(crate) fn make_delta(&self, segment: &str, extra: &[&str]) {
        let mut args = vec!["gen", "old.img", "new.img", "-o", "u.delta"];
        args.extend_from_slice(&["--segment-size", segment, "--max-merge", segment]);
        args.extend_from_slice(extra);
        let out = self.run(&args);
        assert!(out.status.success(), "{}", stderr(&out));
    }

    pub(crate) fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    /// `delta ARGS` in the fixture's folder, with no proxy from the
    /// environment; an `apply` gets the [`APPLY_DEFAULTS`] it does not
    /// name.
    pub(crate) fn command(&self, args: &[&str]) -> Command {
        delta_in(self.dir.path(), args, &APPLY_DEFAULTS)
    }

    /// `delta` with exactly `args` (no defaults) in the fixture's folder.
    pub(crate) fn raw_command(&self, args: &[&str]) -> Command {
        delta_in(self.dir.path(), args, &[])
    }

    pub(crate) fn run(&self, args: &[&str]) -> Output {
        self.command(args).output().unwrap()
    }

    /// Runs `delta` with exactly `args` (no defaults).
    pub(crate) fn run_raw(&self, args: &[&str]) -> Output {
        self.raw_command(args).output().unwrap()
    }

    /// `delta apply old.img u.delta -o out.img` with `extra`.
    pub(crate) fn apply(&self, extra: &[&str]) -> Output {
        let mut args = vec!["apply", "old.img", "u.delta", "-o", "out.img"];
        args.extend_from_slice(extra);
        self.run(&args)
    }

    /// Starts `delta apply old.img u.delta -o out.img` with `extra`, its
    /// stdout and stderr piped.
    pub(crate) fn spawn_apply(&self, extra: &[&str]) -> Child {
        let mut args = vec!["apply", "old.img", "u.delta", "-o", "out.img"];
        args.extend_from_slice(extra);
        self.command(&args)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap()
    }

    /// `out.img` is `new.img`, and nothing of the run is left beside it.
    pub(crate) fn assert_done(&self) {
        assert!(
            std::fs::read(self.path("out.img")).unwrap()
                == std::fs::read(self.path("new.img")).unwrap(),
            "out.img differs from new.img"
        );
        assert!(!self.path("out.img.partial").exists());
        assert!(!self.path("out.img.journal").exists());
    }

    /// A child process holding an exclusive flock on service `service`'s
    /// `updates.lock`, as an application would, once it holds it; and the
    /// lock's path.
    pub(crate) fn hold_lock(&self, service: &str) -> (Child, PathBuf) {
        use std::io::BufRead;
        let dir = self.path("locks/1").join(service);
        std::fs::create_dir_all(&dir).unwrap();
        let lock = dir.join("updates.lock");
        let mut child = Command::new("flock")
            .args(["-x", "-o"])
            .arg(&lock)
            .args(["-c", "echo held; sleep 60"])
            .stdout(Stdio::piped())
            .spawn()
            .expect("flock(1) from util-linux");
        let mut line = String::new();
        std::io::BufReader::new(child.stdout.as_mut().unwrap())
            .read_line(&mut line)
            .unwrap();
        assert_eq!(line.trim(), "held");
        (child, lock)
    }

    /// The update logs in `logs`, oldest first.
    pub(crate) fn logs(&self) -> Vec<PathBuf> {
        let mut logs: Vec<PathBuf> = std::fs::read_dir(self.path("logs"))
            .unwrap()
            .map(|e| e.unwrap().path())
            .collect();
        logs.sort();
        logs
    }
}

pub(crate) fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

pub(crate) fn stdout(out: &Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// The number after `"key":` in a JSON text (0 when absent).
pub(crate) fn json_u64(text: &str, key: &str) -> u64 {
    let needle = format!("\"{key}\":");
    text.find(&needle)
        .map(|at| {
            text[at + needle.len()..]
                .chars()
                .take_while(char::is_ascii_digit)
                .collect::<String>()
        })
        .and_then(|digits| digits.parse().ok())
        .unwrap_or(0)
}

/// A loop device over a file, detached on drop.
pub(crate) struct LoopDevice {
    pub path: PathBuf,
}

impl LoopDevice {
    /// Attaches `file` (with `-P` to scan partitions). `None`, with the
    /// reason printed, where the machine cannot; a failure when
    /// `require_env` is set to 1.
    pub(crate) fn attach(file: &Path, partitions: bool, require_env: &str) -> Option<LoopDevice> {
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

    pub(crate) fn path(&self) -> &str {
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
pub(crate) fn cannot(what: &str, why: &str, require_env: &str) {
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
pub(crate) fn mount_tmpfs(dir: &Path, size: &str) -> bool {
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

/// How long a test waits for an event (a line, a file, a lock) before it
/// fails: far longer than any run takes, so only a hang reaches it.
pub(crate) const DEADLINE: Duration = Duration::from_secs(60);

/// The lines a child writes to a pipe, read on a thread of their own, so
/// that a wait for one of them has a deadline even if the child hangs.
pub(crate) struct Lines {
    lines: std::sync::mpsc::Receiver<String>,
    /// Every line received so far.
    pub seen: Vec<String>,
}

impl Lines {
    /// Reads `pipe` (a child's stdout or stderr) line by line, to its end.
    pub(crate) fn of(pipe: impl std::io::Read + Send + 'static) -> Lines {
        use std::io::BufRead;
        let (send, lines) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            // Read to the end even when no one listens any more, so that
            // the child never writes to a closed pipe.
            for line in std::io::BufReader::new(pipe).lines() {
                let Ok(line) = line else { return };
                let _ = send.send(line);
            }
        });
        Lines {
            lines,
            seen: Vec::new(),
        }
    }

    /// Waits for the first line that satisfies `ready` and returns it;
    /// fails the test if the pipe ends first or [`DEADLINE`] passes.
    pub(crate) fn wait_for(&mut self, what: &str, ready: impl Fn(&str) -> bool) -> String {
        let deadline = std::time::Instant::now() + DEADLINE;
        loop {
            let left = deadline.saturating_duration_since(std::time::Instant::now());
            match self.lines.recv_timeout(left) {
                Ok(line) => {
                    self.seen.push(line.clone());
                    if ready(&line) {
                        return line;
                    }
                }
                Err(std::sync::mpsc::RecvTimeoutError::Timeout) => {
                    panic!("no {what} within {DEADLINE:?}: {:?}", self.seen)
                }
                Err(std::sync::mpsc::RecvTimeoutError::Disconnected) => {
                    panic!("the output ended before {what}: {:?}", self.seen)
                }
            }
        }
    }

    /// Every line, those seen included, to the end of the pipe (at most
    /// [`DEADLINE`] from now).
    pub(crate) fn rest(mut self) -> Vec<String> {
        let deadline = std::time::Instant::now() + DEADLINE;
        loop {
            let left = deadline.saturating_duration_since(std::time::Instant::now());
            match self.lines.recv_timeout(left) {
                Ok(line) => self.seen.push(line),
                Err(std::sync::mpsc::RecvTimeoutError::Disconnected) => return self.seen,
                Err(std::sync::mpsc::RecvTimeoutError::Timeout) => {
                    panic!(
                        "the output did not end within {DEADLINE:?}: {:?}",
                        self.seen
                    )
                }
            }
        }
    }
}

/// Polls `reached` (every millisecond) until it is true; fails the test,
/// naming `what`, after [`DEADLINE`].
pub(crate) fn poll_until(what: &str, mut reached: impl FnMut() -> bool) {
    let deadline = std::time::Instant::now() + DEADLINE;
    while !reached() {
        assert!(
            std::time::Instant::now() < deadline,
            "{what} not reached within {DEADLINE:?}"
        );
        std::thread::sleep(Duration::from_millis(1));
    }
}

/// Makes, with openssl(1), a test CA (`ca.pem`) and a certificate for
/// 127.0.0.1 that it signed (`leaf.pem`, key `leaf.key`) in `dir`.
pub(crate) fn make_tls_leaf(dir: &Path) {
    let openssl = |args: &[&str]| {
        let out = Command::new("openssl")
            .current_dir(dir)
            .args(args)
            .output()
            .expect("openssl(1), installed by .ci/run");
        assert!(out.status.success(), "openssl {args:?}: {}", stderr(&out));
    };
    let key = [
        "-newkey",
        "ec",
        "-pkeyopt",
        "ec_paramgen_curve:prime256v1",
        "-nodes",
    ];
    openssl(
        &[
            &["req", "-subj", "/CN=test-ca", "-x509"][..],
            &key,
            &["-keyout", "ca.key", "-out", "ca.pem", "-days", "2"],
        ]
        .concat(),
    );
    openssl(
        &[
            &["req", "-subj", "/CN=127.0.0.1"][..],
            &key,
            &["-keyout", "leaf.key", "-out", "leaf.csr"],
        ]
        .concat(),
    );
    std::fs::write(
        dir.join("leaf.ext"),
        "subjectAltName=IP:127.0.0.1\nbasicConstraints=CA:FALSE\n",
    )
    .unwrap();
    openssl(&[
        "x509",
        "-req",
        "-in",
        "leaf.csr",
        "-CA",
        "ca.pem",
        "-CAkey",
        "ca.key",
        "-CAcreateserial",
        "-out",
        "leaf.pem",
        "-days",
        "2",
        "-extfile",
        "leaf.ext",
    ]);
}
