//! The library API a device agent uses: options, the progress callback,
//! cancellation, resume, and the errors it gets back.

use delta_apply::{Applier, ApplyOptions, Error, Progress, ReaderInput, Step};
use delta_core::testing::{mutate, Rng};
use delta_gen::{generate_to_vec, DeltaOptions, GenOptions};
use std::io::Read;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// How long a test waits for an event before it fails: far longer than
/// any run here takes, so only a hang reaches it.
const DEADLINE: Duration = Duration::from_secs(60);

/// A device in a temp dir: an old image, a new one, a delta of many
/// segments, and options that keep every path inside the dir.
struct Device {
    dir: tempfile::TempDir,
    new: Vec<u8>,
}

impl Device {
    fn new() -> Device {
        let dir = tempfile::tempdir().unwrap();
        let mut rng = Rng::new(7);
        let mut old = rng.text(1 << 20);
        old.extend(rng.bytes(1 << 20));
        let new = mutate(&old, &mut rng, 60);
        let options = GenOptions {
            delta: DeltaOptions {
                segment_len: 64 << 10,
                merge_len: 64 << 10,
                ..DeltaOptions::default()
            },
            ..GenOptions::default()
        };
        let delta = generate_to_vec(&old, &new, &options).unwrap();
        std::fs::write(dir.path().join("old.img"), &old).unwrap();
        std::fs::write(dir.path().join("u.delta"), delta).unwrap();
        let full = generate_to_vec(
            &[],
            &new,
            &GenOptions {
                delta: DeltaOptions {
                    full: true,
                    ..DeltaOptions::default()
                },
                ..GenOptions::default()
            },
        )
        .unwrap();
        std::fs::write(dir.path().join("full.delta"), full).unwrap();
        std::fs::create_dir(dir.path().join("locks")).unwrap();
        Device { dir, new }
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    fn options(&self) -> ApplyOptions {
        ApplyOptions {
            log_dir: Some(self.path("logs")),
            state_dir: self.path("state"),
            instance_lock: self.path("apply.lock"),
            lock_root: self.path("locks"),
            lock_poll: Duration::from_millis(50),
            supervisor_config: self.path("no-config"),
            ..ApplyOptions::default()
        }
    }

    fn apply(&self, applier: &mut Applier) -> Result<delta_apply::Outcome, Error> {
        applier.apply(
            Some(&self.path("old.img")),
            &self.path("u.delta"),
            &self.path("out.img"),
        )
    }

    /// Holds `locks/1/SERVICE/updates.lock` as an application would.
    fn hold_update_lock(&self, service: &str) -> std::fs::File {
        let dir = self.path("locks/1").join(service);
        std::fs::create_dir_all(&dir).unwrap();
        let lock = std::fs::File::create(dir.join("updates.lock")).unwrap();
        lock.lock().unwrap();
        lock
    }

    fn assert_done(&self) {
        assert!(std::fs::read(self.path("out.img")).unwrap() == self.new);
        assert!(!self.path("out.img.partial").exists());
        assert!(!self.path("out.img.journal").exists());
    }

    /// Runs `meanwhile` while an apply to `out.img` holds its verified
    /// target and waits for an application's update lock (from its
    /// `WaitingForLock` report), then releases the lock and checks that the
    /// apply commits.
    fn while_an_apply_waits_for_a_lock(&self, meanwhile: impl FnOnce()) {
        let update_lock = self.hold_update_lock("main");
        let (waiting, waits) = std::sync::mpsc::channel();
        let mut first = Applier::new(ApplyOptions {
            lock_timeout: Some(DEADLINE),
            ..self.options()
        })
        .on_progress(move |p: &Progress| {
            if p.step == Step::WaitingForLock {
                let _ = waiting.send(());
            }
        });
        let first = std::thread::scope(|scope| {
            let running = scope.spawn(|| self.apply(&mut first));
            if waits.recv_timeout(DEADLINE).is_err() {
                panic!("the first apply never waited: {:?}", running.join());
            }
            meanwhile();
            drop(update_lock);
            running.join().unwrap()
        });
        first.unwrap();
        self.assert_done();
    }
}

/// Reads `inner` and sets `cancel` once `after` bytes were read: a cancel
/// at a point the run is seen to reach, not at a time.
struct CancelAfter<R> {
    inner: R,
    read: u64,
    after: u64,
    cancel: Arc<AtomicBool>,
}

impl<R: Read> Read for CancelAfter<R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.read += n as u64;
        if self.read >= self.after {
            self.cancel.store(true, Ordering::Relaxed);
        }
        Ok(n)
    }
}

/// A progress callback that records every report.
fn recorder() -> (
    Arc<Mutex<Vec<Progress>>>,
    impl FnMut(&Progress) + Send + 'static,
) {
    let seen = Arc::new(Mutex::new(Vec::new()));
    let sink = Arc::clone(&seen);
    (seen, move |p: &Progress| {
        sink.lock().unwrap().push(p.clone())
    })
}

#[test]
fn progress_walks_the_steps_in_order_with_bytes_that_only_grow() {
    let device = Device::new();
    let (seen, callback) = recorder();
    let mut applier = Applier::new(device.options()).on_progress(callback);
    let outcome = device.apply(&mut applier).unwrap();
    device.assert_done();
    assert_eq!(outcome.new_len, device.new.len() as u64);
    assert_eq!(
        outcome.new_digest,
        blake3::hash(&device.new).to_hex().as_str()
    );
    assert!(outcome.segments > 10, "{} segments", outcome.segments);
    assert_eq!(outcome.resumed_bytes, 0);
    let log = outcome.log_path.expect("an update log");
    assert!(std::fs::read_to_string(log)
        .unwrap()
        .contains("result: success"));

    let seen = seen.lock().unwrap();
    let mut steps: Vec<Step> = seen.iter().map(|p| p.step).collect();
    steps.dedup();
    assert_eq!(
        steps,
        [
            Step::Preparing,
            Step::Applying,
            Step::Verifying,
            Step::Committing,
            Step::Done
        ]
    );
    let applying: Vec<&Progress> = seen.iter().filter(|p| p.step == Step::Applying).collect();
    assert!(applying
        .windows(2)
        .all(|w| w[0].bytes_done <= w[1].bytes_done));
    assert!(applying
        .iter()
        .all(|p| p.bytes_done <= p.bytes_total && p.bytes_total == outcome.new_len));
}

#[test]
fn cancel_stops_at_a_checkpoint_and_the_next_run_resumes_there() {
    let device = Device::new();
    let mut applier = Applier::new(device.options());
    // Cancelled once half the delta has been read: its payloads come in
    // apply order, so the first segments are written by then.
    let delta = std::fs::read(device.path("u.delta")).unwrap();
    let half = delta.len() as u64 / 2;
    let input = CancelAfter {
        inner: std::io::Cursor::new(delta),
        read: 0,
        after: half,
        cancel: applier.cancel_handle(),
    };
    let err = applier
        .apply_from(
            Some(&device.path("old.img")),
            Box::new(ReaderInput::new("u.delta", input)),
            &device.path("out.img"),
        )
        .unwrap_err();
    assert!(matches!(err, Error::Cancelled), "{err}");
    assert_eq!(err.exit_code(), delta_apply::EXIT_CANCELLED);
    assert!(
        !device.path("out.img").exists(),
        "a cancelled run committed"
    );
    let journal = std::fs::read_to_string(device.path("out.img.journal")).unwrap();
    assert!(journal.contains("applying"), "{journal}");

    let mut again = Applier::new(device.options());
    let outcome = device.apply(&mut again).unwrap();
    device.assert_done();
    assert!(outcome.resumed_bytes > 0, "the second run started over");
    assert!(outcome.resumed_bytes < outcome.new_len);
}

#[test]
fn a_held_update_lock_keeps_the_commit_waiting_and_a_rerun_commits() {
    let device = Device::new();
    let lock = device.hold_update_lock("main");
    let (seen, callback) = recorder();
    let mut applier = Applier::new(ApplyOptions {
        lock_timeout: Some(Duration::from_millis(200)),
        ..device.options()
    })
    .on_progress(callback);
    let err = device.apply(&mut applier).unwrap_err();
    assert!(matches!(err, Error::LockTimeout { .. }), "{err}");
    assert_eq!(err.exit_code(), 3);
    assert!(seen
        .lock()
        .unwrap()
        .iter()
        .any(|p| p.step == Step::WaitingForLock && p.message.is_some()));
    assert!(!device.path("out.img").exists());
    drop(lock);

    let outcome = device.apply(&mut Applier::new(device.options())).unwrap();
    device.assert_done();
    assert_eq!(
        outcome.resumed_segments, outcome.segments,
        "verified once, not rewritten"
    );
}

#[test]
fn limits_in_the_options_refuse_before_anything_is_written() {
    let device = Device::new();
    let tight = ApplyOptions {
        memory_limit: 1024,
        ..device.options()
    };
    let err = device.apply(&mut Applier::new(tight)).unwrap_err();
    assert!(err.to_string().contains("apply_memory"), "{err}");
    let small = ApplyOptions {
        max_image_size: 1 << 20,
        ..device.options()
    };
    let err = device.apply(&mut Applier::new(small)).unwrap_err();
    assert!(matches!(err, Error::ImageTooLarge { .. }), "{err}");
    assert!(!device.path("out.img.partial").exists());
    assert!(!device.path("out.img.journal").exists());
}

#[test]
fn a_full_payload_needs_no_old_image_and_a_delta_does() {
    let device = Device::new();
    let mut applier = Applier::new(device.options());
    let outcome = applier
        .apply(None, &device.path("full.delta"), &device.path("out.img"))
        .unwrap();
    assert_eq!(outcome.new_len, device.new.len() as u64);
    device.assert_done();
    let err = applier
        .apply(None, &device.path("u.delta"), &device.path("other.img"))
        .unwrap_err();
    assert!(matches!(err, Error::NeedsSource { .. }), "{err}");
    assert!(!Path::new(&device.path("other.img")).exists());
}

#[test]
fn trusted_keys_in_the_options_refuse_an_unsigned_or_foreign_delta_before_writing() {
    use delta_core::signature::SecretKey;
    let device = Device::new();
    let ours = SecretKey::from_seed(&[1; 32]);
    let theirs = SecretKey::from_seed(&[2; 32]);
    let old = std::fs::read(device.path("old.img")).unwrap();
    let signed = generate_to_vec(
        &old,
        &device.new,
        &GenOptions {
            signing_keys: vec![ours.clone()],
            ..GenOptions::default()
        },
    )
    .unwrap();
    std::fs::write(device.path("signed.delta"), signed).unwrap();
    let with_keys = |keys: Vec<_>| ApplyOptions {
        trusted_keys: keys,
        ..device.options()
    };
    for (delta, keys) in [
        ("u.delta", vec![ours.public()]),
        ("signed.delta", vec![theirs.public()]),
    ] {
        let err = Applier::new(with_keys(keys))
            .apply(
                Some(&device.path("old.img")),
                &device.path(delta),
                &device.path("out.img"),
            )
            .unwrap_err();
        assert!(matches!(err, Error::Signature { .. }), "{delta}: {err}");
        assert!(!device.path("out.img.partial").exists());
        assert!(!device.path("out.img.journal").exists());
    }
    Applier::new(with_keys(vec![theirs.public(), ours.public()]))
        .apply(
            Some(&device.path("old.img")),
            &device.path("signed.delta"),
            &device.path("out.img"),
        )
        .unwrap();
    device.assert_done();
}

/// Two applies to one target, each with its own instance lock: while the
/// first holds its verified target and waits for an application's update
/// lock, the second is refused, by whatever path it names the target, and
/// the first commits the image it verified.
#[test]
fn a_second_apply_to_a_target_being_written_is_refused() {
    let device = Device::new();
    device.while_an_apply_waits_for_a_lock(|| {
        std::os::unix::fs::symlink(device.dir.path(), device.path("same-folder")).unwrap();
        for target in [device.path("out.img"), device.path("same-folder/out.img")] {
            let mut second = Applier::new(ApplyOptions {
                instance_lock: device.path("another-instance.lock"),
                ..device.options()
            });
            let err = second
                .apply(None, &device.path("full.delta"), &target)
                .unwrap_err();
            assert!(matches!(err, Error::TargetInUse { .. }), "{err}");
            assert!(err.to_string().contains("out.img.partial"), "{err}");
        }
    });
}

/// The application releases its lock when the applier reports the wait:
/// the next probe finds it free and the run commits, with no timeout. The
/// wait names the application and service.
#[test]
fn a_lock_released_while_waiting_lets_the_run_commit() {
    let device = Device::new();
    let held = Mutex::new(Some(device.hold_update_lock("web")));
    let held = Arc::new(held);
    let released = Arc::clone(&held);
    let (seen, mut record) = recorder();
    let mut applier = Applier::new(ApplyOptions {
        lock_timeout: Some(DEADLINE),
        ..device.options()
    })
    .on_progress(move |p: &Progress| {
        record(p);
        if p.step == Step::WaitingForLock {
            drop(released.lock().unwrap().take());
        }
    });
    device.apply(&mut applier).unwrap();
    device.assert_done();
    assert!(held.lock().unwrap().is_none(), "no wait was reported");
    let seen = seen.lock().unwrap();
    let waiting = seen
        .iter()
        .find_map(|p| (p.step == Step::WaitingForLock).then_some(p.message.as_deref()))
        .flatten()
        .expect("the wait names what it waits on");
    assert!(
        waiting.contains("application 1/web holds its update lock (")
            && waiting.contains("updates.lock)"),
        "{waiting}"
    );
    let logged = std::fs::read_to_string(applier.log_path().unwrap()).unwrap();
    assert!(
        logged.contains("step waiting for application lock started"),
        "{logged}"
    );
}

/// A cancel while the verified target waits for an application's lock
/// keeps it verified: the next run commits it without writing it again.
#[test]
fn cancel_while_waiting_for_a_lock_keeps_the_verified_target_for_the_next_run() {
    let device = Device::new();
    let lock = device.hold_update_lock("main");
    let mut applier = Applier::new(ApplyOptions {
        lock_timeout: None,
        ..device.options()
    });
    let cancel = applier.cancel_handle();
    applier = applier.on_progress(move |p: &Progress| {
        if p.step == Step::WaitingForLock {
            cancel.store(true, Ordering::Relaxed);
        }
    });
    let err = device.apply(&mut applier).unwrap_err();
    assert!(matches!(err, Error::Cancelled), "{err}");
    assert_eq!(err.exit_code(), delta_apply::EXIT_CANCELLED);
    assert!(
        !device.path("out.img").exists(),
        "committed despite the lock"
    );
    let journal = std::fs::read_to_string(device.path("out.img.journal")).unwrap();
    assert!(journal.contains("\"verified\""), "{journal}");
    let logged = std::fs::read_to_string(applier.log_path().unwrap()).unwrap();
    assert!(
        logged.contains("result: cancelled (exit code 4)")
            && logged.contains("in step waiting for application lock"),
        "{logged}"
    );
    drop(lock);

    let outcome = device.apply(&mut Applier::new(device.options())).unwrap();
    device.assert_done();
    assert_eq!(outcome.resumed_segments, outcome.segments);
    assert_eq!(
        outcome.writes.written, 0,
        "the verified target was rewritten"
    );
}

/// While one apply holds the instance lock (it waits for an application's
/// lock), a second apply with the same instance lock is refused at once,
/// whatever its target, and writes nothing; the first then commits.
#[test]
fn a_second_apply_while_one_runs_is_refused_by_the_instance_lock() {
    let device = Device::new();
    device.while_an_apply_waits_for_a_lock(|| {
        let err = Applier::new(device.options())
            .apply(
                Some(&device.path("old.img")),
                &device.path("u.delta"),
                &device.path("other.img"),
            )
            .unwrap_err();
        assert!(matches!(err, Error::AlreadyRunning { .. }), "{err}");
        assert!(err.to_string().contains("apply.lock"), "{err}");
        assert!(!device.path("other.img").exists());
        assert!(!device.path("other.img.partial").exists());
        assert!(!device.path("other.img.journal").exists());
    });
}

/// Targets the applier must never write: the old image itself (also by
/// another name), and things that are not images (a folder, a FIFO) are
/// refused before anything is written, and the old image is unchanged.
#[test]
fn unsafe_targets_are_refused_before_anything_is_written() {
    let device = Device::new();
    let old = std::fs::read(device.path("old.img")).unwrap();
    std::fs::hard_link(device.path("old.img"), device.path("old-link.img")).unwrap();
    std::fs::create_dir(device.path("folder")).unwrap();
    let fifo = device.path("fifo");
    let made = std::process::Command::new("mkfifo")
        .arg(&fifo)
        .status()
        .is_ok_and(|s| s.success());
    assert!(made, "mkfifo");
    for target in ["old.img", "old-link.img", "folder", "fifo"] {
        let err = Applier::new(device.options())
            .apply(
                Some(&device.path("old.img")),
                &device.path("u.delta"),
                &device.path(target),
            )
            .unwrap_err();
        assert!(matches!(err, Error::UnsafeTarget { .. }), "{target}: {err}");
        assert!(!device.path(&format!("{target}.partial")).exists());
        assert!(!device.path(&format!("{target}.journal")).exists());
    }
    assert!(std::fs::read(device.path("old.img")).unwrap() == old);
}
