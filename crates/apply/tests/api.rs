//! The library API a device agent uses: options, the progress callback,
//! cancellation, resume, and the errors it gets back.

use delta_apply::{Applier, ApplyOptions, Error, Progress, Step};
use delta_core::testing::{mutate, Rng};
use delta_gen::{generate_to_vec, DeltaOptions, GenOptions};
use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::Duration;

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

    fn assert_done(&self) {
        assert!(std::fs::read(self.path("out.img")).unwrap() == self.new);
        assert!(!self.path("out.img.partial").exists());
        assert!(!self.path("out.img.journal").exists());
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
    let cancel = applier.cancel_handle();
    // A slow agent: each report before the first write (the step's start,
    // bytes of the delta received) takes 300 ms, so the next write is
    // reported at once (reports come at most every 250 ms), with bytes
    // done; the cancel then stops the run inside its first segments.
    applier = applier.on_progress(move |p: &Progress| {
        if p.step != Step::Applying {
            return;
        }
        if p.bytes_done == 0 {
            std::thread::sleep(Duration::from_millis(300));
        } else {
            cancel.store(true, Ordering::Relaxed);
        }
    });
    let err = device.apply(&mut applier).unwrap_err();
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
    let service = device.path("locks/1/main");
    std::fs::create_dir_all(&service).unwrap();
    let lock = std::fs::File::create(service.join("updates.lock")).unwrap();
    lock.lock().unwrap();
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
    let service = device.path("locks/1/main");
    std::fs::create_dir_all(&service).unwrap();
    let update_lock = std::fs::File::create(service.join("updates.lock")).unwrap();
    update_lock.lock().unwrap();
    let (seen, callback) = recorder();
    let mut first = Applier::new(ApplyOptions {
        lock_timeout: Some(Duration::from_secs(60)),
        ..device.options()
    })
    .on_progress(callback);
    let first = std::thread::scope(|scope| {
        let running = scope.spawn(|| device.apply(&mut first));
        while !seen
            .lock()
            .unwrap()
            .iter()
            .any(|p| p.step == Step::WaitingForLock)
        {
            assert!(!running.is_finished(), "the first apply ended early");
            std::thread::sleep(Duration::from_millis(20));
        }
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
        drop(update_lock);
        running.join().unwrap()
    });
    first.unwrap();
    device.assert_done();
}
