//! The C functions called from Rust as C would call them: results, error
//! codes and messages, NULL arguments, byte paths, cancellation and locks.
// Calling a C ABI is unsafe; each block says why it holds.
#![allow(unsafe_code)]

use delta::*;
use std::ffi::{c_char, c_int, c_void, CStr, CString};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::ptr::{null, null_mut};
use std::sync::atomic::{AtomicI32, Ordering};

fn c(path: &Path) -> CString {
    CString::new(path.as_os_str().as_bytes()).unwrap()
}

/// Takes the error out: its code and message (freed).
fn take(err: *mut DeltaError) -> (c_int, String) {
    assert!(!err.is_null(), "a failure sets *err");
    // SAFETY: `err` is a live error from the library, freed once here.
    unsafe {
        let message = CStr::from_ptr(delta_error_message(err))
            .to_string_lossy()
            .into_owned();
        let code = delta_error_code(err);
        delta_error_free(err);
        (code, message)
    }
}

fn text(field: &[c_char]) -> String {
    // SAFETY: the library NUL-terminates every string field.
    unsafe { CStr::from_ptr(field.as_ptr()) }
        .to_string_lossy()
        .into_owned()
}

struct Fixture {
    dir: tempfile::TempDir,
    old: PathBuf,
    new: PathBuf,
    new_bytes: Vec<u8>,
    delta: PathBuf,
}

impl Fixture {
    fn new(gen: delta_gen::GenOptions) -> Fixture {
        let dir = tempfile::tempdir().unwrap();
        let old_bytes: Vec<u8> = (0..200_000u32).map(|i| (i * 7 / 13) as u8).collect();
        let mut new_bytes = old_bytes.clone();
        new_bytes[1000..1200].fill(9);
        new_bytes.extend((0..30_000u32).map(|i| (i % 251) as u8));
        let (old, new, delta) = (
            dir.path().join("old.img"),
            dir.path().join("new.img"),
            dir.path().join("u.delta"),
        );
        std::fs::write(&old, &old_bytes).unwrap();
        std::fs::write(&new, &new_bytes).unwrap();
        let gen = delta_gen::GenOptions { threads: 1, ..gen };
        delta_gen::generate(Some(&old), &new, &delta, &gen).unwrap();
        Fixture {
            dir,
            old,
            new,
            new_bytes,
            delta,
        }
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }
}

/// Options that keep the run inside `dir`, with their strings.
struct Options {
    raw: DeltaApplyOptions,
    _strings: Vec<CString>,
}

fn options(dir: &Path) -> Options {
    let strings: Vec<CString> = ["apply.lock", "locks", "no-config", "no-keyring"]
        .iter()
        .map(|name| c(&dir.join(name)))
        .collect();
    let mut raw = std::mem::MaybeUninit::uninit();
    // SAFETY: `raw` is a valid place for the options.
    let mut raw = unsafe {
        delta_apply_options_default(raw.as_mut_ptr());
        raw.assume_init()
    };
    raw.no_log = true;
    raw.instance_lock = strings[0].as_ptr();
    raw.lock_root = strings[1].as_ptr();
    raw.supervisor_config = strings[2].as_ptr();
    raw.keyring = strings[3].as_ptr();
    Options {
        raw,
        _strings: strings,
    }
}

/// `delta_apply` with the fixture's images: the code, the error, the result.
/// `options` and what its pointers reach outlive the call.
fn apply(
    f: &Fixture,
    target: &Path,
    options: &DeltaApplyOptions,
) -> (c_int, *mut DeltaError, DeltaApplyResult) {
    let (old, delta, target) = (c(&f.old), c(&f.delta), c(target));
    let mut result = std::mem::MaybeUninit::<DeltaApplyResult>::zeroed();
    let mut err = null_mut();
    // SAFETY: valid strings, options and out pointers for the call.
    let code = unsafe {
        delta_apply(
            old.as_ptr(),
            delta.as_ptr(),
            target.as_ptr(),
            options,
            result.as_mut_ptr(),
            &mut err,
        )
    };
    // SAFETY: zeroed is a valid DeltaApplyResult (integers and chars).
    (code, err, unsafe { result.assume_init() })
}

#[test]
fn info_reads_the_header() {
    let f = Fixture::new(Default::default());
    let path = c(&f.delta);
    let mut info = std::mem::MaybeUninit::<DeltaInfo>::uninit();
    let mut err = null_mut();
    // SAFETY: valid string and out pointers.
    let code = unsafe { delta_info(path.as_ptr(), info.as_mut_ptr(), &mut err) };
    assert_eq!(code, DELTA_OK);
    assert!(err.is_null());
    // SAFETY: filled on success.
    let info = unsafe { info.assume_init() };
    assert_eq!(info.new_len, f.new_bytes.len() as u64);
    assert_eq!(info.old_len, 200_000);
    assert!(!info.full && !info.migration && !info.is_signed);
    assert!(info.segment_count >= 1 && info.format_version >= 2);
    assert_eq!(
        text(&info.new_digest),
        blake3::hash(&f.new_bytes).to_hex().as_str()
    );
    assert_eq!(info.file_len, std::fs::metadata(&f.delta).unwrap().len());

    // Not a delta, and NULL arguments: named in the message.
    let not_delta = c(&f.old);
    let mut place = std::mem::MaybeUninit::<DeltaInfo>::uninit();
    // SAFETY: as above; NULL where the test says so.
    unsafe {
        let code = delta_info(not_delta.as_ptr(), place.as_mut_ptr(), &mut err);
        assert_eq!(take(err).0, DELTA_ERR_BAD_DELTA);
        assert_eq!(code, DELTA_ERR_BAD_DELTA);
        assert_eq!(delta_info(null(), place.as_mut_ptr(), &mut err), 1);
        assert_eq!(
            take(err),
            (DELTA_ERR_INVALID_ARGUMENT, "delta_path is NULL".into())
        );
        assert_eq!(delta_info(path.as_ptr(), null_mut(), &mut err), 1);
        assert_eq!(take(err).1, "info is NULL");
        // err itself may be NULL.
        assert_eq!(delta_info(null(), null_mut(), null_mut()), 1);
    }
}

#[test]
fn apply_rebuilds_the_image_and_byte_paths_work() {
    let f = Fixture::new(Default::default());
    // Linux paths are bytes: a target name that is not UTF-8.
    let target = f
        .dir
        .path()
        .join(std::ffi::OsStr::from_bytes(b"out-\xff.img"));
    let (code, err, result) = apply(&f, &target, &options(f.dir.path()).raw);
    assert_eq!(code, DELTA_OK, "{:?}", (!err.is_null()).then(|| take(err)));
    assert_eq!(std::fs::read(&target).unwrap(), f.new_bytes);
    assert_eq!(result.new_len, f.new_bytes.len() as u64);
    assert_eq!(
        text(&result.new_digest),
        blake3::hash(&f.new_bytes).to_hex().as_str()
    );

    // Progress: steps in order, on the caller's data.
    extern "C" fn record(data: *mut c_void, step: u32, _: u64, total: u64, _: *const c_char) {
        // SAFETY: the test passes a Vec<(u32, u64)> as user data.
        let steps = unsafe { &mut *data.cast::<Vec<(u32, u64)>>() };
        steps.push((step, total));
    }
    let mut steps: Vec<(u32, u64)> = Vec::new();
    let (old, delta, target) = (c(&f.old), c(&f.delta), c(&f.path("again.img")));
    let options = options(f.dir.path());
    let raw = DeltaApplyOptions {
        progress: Some(record),
        user_data: (&mut steps as *mut Vec<(u32, u64)>).cast(),
        ..options.raw
    };
    // SAFETY: valid strings and options; the callback gets our Vec.
    let code = unsafe {
        delta_apply(
            old.as_ptr(),
            delta.as_ptr(),
            target.as_ptr(),
            &raw,
            null_mut(),
            null_mut(),
        )
    };
    assert_eq!(code, DELTA_OK);
    let order: Vec<u32> = steps.iter().map(|s| s.0).collect();
    assert_eq!(order.first(), Some(&DELTA_STEP_PREPARING));
    assert_eq!(order.last(), Some(&DELTA_STEP_DONE));
    assert!(order.windows(2).all(|w| w[0] <= w[1]), "{order:?}");
    assert!(steps.contains(&(DELTA_STEP_APPLYING, f.new_bytes.len() as u64)));
}

#[test]
fn wrong_requests_get_their_codes() {
    let f = Fixture::new(Default::default());
    let mut o = options(f.dir.path());
    let wrong = CString::new("00".repeat(32)).unwrap();
    o.raw.expect_new = wrong.as_ptr();
    let (code, err, _) = apply(&f, &f.path("a.img"), &o.raw);
    assert_eq!((code, take(err).0), (DELTA_ERR_UNEXPECTED_IMAGE, code));
    let malformed = CString::new("beef").unwrap();
    o.raw.expect_new = malformed.as_ptr();
    let (code, err, _) = apply(&f, &f.path("a.img"), &o.raw);
    assert_eq!(code, DELTA_ERR_INVALID_ARGUMENT);
    assert!(take(err).1.contains("expect_new"));
    let right = CString::new(blake3::hash(&f.new_bytes).to_hex().as_str()).unwrap();
    o.raw.expect_new = right.as_ptr();
    // The old image as the target is refused.
    let (code, err, _) = apply(&f, &f.old, &o.raw);
    assert_eq!(code, DELTA_ERR_UNSAFE_TARGET, "{:?}", take(err));
    // No delta.
    let mut err = null_mut();
    let target = c(&f.path("b.img"));
    // SAFETY: valid or NULL pointers.
    let code = unsafe {
        delta_apply(
            null(),
            null(),
            target.as_ptr(),
            null(),
            null_mut(),
            &mut err,
        )
    };
    assert_eq!(code, DELTA_ERR_INVALID_ARGUMENT);
    assert_eq!(take(err).1, "delta is NULL");
}

#[test]
fn a_set_cancel_flag_cancels_and_a_rerun_completes() {
    let f = Fixture::new(Default::default());
    let o = options(f.dir.path());
    let flag = AtomicI32::new(1);
    let with_cancel = DeltaApplyOptions {
        cancel: flag.as_ptr(),
        ..o.raw
    };
    let (code, err, _) = apply(&f, &f.path("c.img"), &with_cancel);
    assert_eq!(code, DELTA_ERR_CANCELLED);
    assert!(take(err).1.contains("cancelled"));
    assert!(!f.path("c.img").exists());
    flag.store(0, Ordering::SeqCst);
    let (code, _, _) = apply(&f, &f.path("c.img"), &with_cancel);
    assert_eq!(code, DELTA_OK);
    assert_eq!(std::fs::read(f.path("c.img")).unwrap(), f.new_bytes);
}

#[test]
fn held_application_locks_mean_not_now_and_cancel_stops_the_wait() {
    let f = Fixture::new(Default::default());
    let lock_dir = f.path("locks/app/service");
    std::fs::create_dir_all(&lock_dir).unwrap();
    let lock = std::fs::File::create(lock_dir.join("updates.lock")).unwrap();
    lock.lock().unwrap();

    let mut o = options(f.dir.path());
    o.raw.lock_timeout_ms = 0;
    let (code, err, _) = apply(&f, &f.path("d.img"), &o.raw);
    assert_eq!(code, DELTA_ERR_LOCKED);
    // SAFETY: `err` is live until `take` frees it.
    assert_eq!(unsafe { delta_error_exit_code(err) }, 3);
    assert!(take(err).1.contains("updates.lock"));
    assert!(!f.path("d.img").exists());

    // Waiting forever, cancelled by the caller once told of the wait.
    extern "C" fn cancel_when_waiting(
        data: *mut c_void,
        step: u32,
        _: u64,
        _: u64,
        _: *const c_char,
    ) {
        if step == DELTA_STEP_WAITING_FOR_LOCK {
            // SAFETY: the test passes its AtomicI32 cancel flag as user data.
            unsafe { &*data.cast::<AtomicI32>() }.store(1, Ordering::SeqCst);
        }
    }
    o.raw.lock_timeout_ms = -1;
    o.raw.lock_poll_ms = 50;
    let flag = AtomicI32::new(0);
    // The callback gets the flag, which outlives the call.
    let raw = DeltaApplyOptions {
        progress: Some(cancel_when_waiting),
        user_data: std::ptr::from_ref(&flag).cast_mut().cast(),
        cancel: flag.as_ptr(),
        ..o.raw
    };
    let (code, err, _) = apply(&f, &f.path("d.img"), &raw);
    assert_eq!(flag.load(Ordering::SeqCst), 1, "no wait was reported");
    assert_eq!(code, DELTA_ERR_CANCELLED, "{:?}", take(err));

    drop(lock);
    let (code, _, _) = apply(&f, &f.path("d.img"), &o.raw);
    assert_eq!(code, DELTA_OK);
    assert_eq!(std::fs::read(f.path("d.img")).unwrap(), f.new_bytes);
}

#[test]
fn generate_and_verify_with_keys() {
    let f = Fixture::new(Default::default());
    let secret = delta_core::signature::SecretKey::from_seed(&[7; 32]);
    let key_file = f.path("fleet.pub");
    std::fs::write(&key_file, secret.public().to_line()).unwrap();
    let (old, new, out) = (c(&f.old), c(&f.new), c(&f.path("gen.delta")));
    let mut gen = std::mem::MaybeUninit::uninit();
    // SAFETY: a valid place for the options.
    let mut gen = unsafe {
        delta_gen_options_default(gen.as_mut_ptr());
        gen.assume_init()
    };
    assert_eq!(
        gen.level,
        delta_gen::GenOptions::default().delta.encode.level
    );
    gen.threads = 1;
    let mut summary = std::mem::MaybeUninit::<DeltaGenResult>::uninit();
    let mut err = null_mut();
    // SAFETY: valid strings, options and out pointers.
    let code = unsafe {
        delta_generate(
            old.as_ptr(),
            new.as_ptr(),
            out.as_ptr(),
            &gen,
            summary.as_mut_ptr(),
            &mut err,
        )
    };
    assert_eq!(code, DELTA_OK);
    // SAFETY: filled on success.
    let summary = unsafe { summary.assume_init() };
    assert_eq!(summary.new_len, f.new_bytes.len() as u64);
    assert_eq!(
        summary.delta_len,
        std::fs::metadata(f.path("gen.delta")).unwrap().len()
    );

    let keys = c(&key_file);
    let no_keyring = c(&f.path("no-keyring"));
    let mut verified = std::mem::MaybeUninit::<DeltaVerifyResult>::uninit();
    // SAFETY: valid strings and out pointers.
    unsafe {
        // Unsigned, no keys: digests checked, signatures not.
        let code = delta_verify(
            out.as_ptr(),
            old.as_ptr(),
            null(),
            no_keyring.as_ptr(),
            verified.as_mut_ptr(),
            &mut err,
        );
        assert_eq!(code, DELTA_OK);
        let v = verified.assume_init();
        assert!(v.old_checked && !v.signature_checked && v.payloads >= 1);
        assert_eq!(text(&v.signed_by), "");
        // Unsigned, with trusted keys: refused.
        let code = delta_verify(
            out.as_ptr(),
            null(),
            keys.as_ptr(),
            null(),
            null_mut(),
            &mut err,
        );
        assert_eq!(
            (code, take(err).0),
            (DELTA_ERR_SIGNATURE, DELTA_ERR_SIGNATURE)
        );
    }
    // Signed by the trusted key: accepted, naming the key.
    let signed = Fixture::new(delta_gen::GenOptions {
        signing_keys: vec![secret.clone()],
        ..Default::default()
    });
    let delta = c(&signed.delta);
    // SAFETY: valid strings and out pointers.
    unsafe {
        let code = delta_verify(
            delta.as_ptr(),
            null(),
            keys.as_ptr(),
            null(),
            verified.as_mut_ptr(),
            &mut err,
        );
        assert_eq!(code, DELTA_OK);
        let v = verified.assume_init();
        assert!(v.signature_checked && !v.old_checked);
        assert_eq!(
            text(&v.signed_by),
            delta_core::to_hex(&secret.public().id())
        );
    }
    // A missing input names the file.
    let missing = c(&f.path("missing.img"));
    // SAFETY: valid strings; NULL options and result.
    let code = unsafe {
        delta_generate(
            old.as_ptr(),
            missing.as_ptr(),
            out.as_ptr(),
            null(),
            null_mut(),
            &mut err,
        )
    };
    let (code2, message) = take(err);
    assert_eq!((code, code2), (DELTA_ERR_IO, DELTA_ERR_IO));
    assert!(message.contains("missing.img"), "{message}");
}

/// `delta_generate` into `out` with `gen` options (NULL: the defaults).
fn generate(f: &Fixture, out: &Path, gen: Option<&DeltaGenOptions>) -> (c_int, *mut DeltaError) {
    let (old, new, out) = (c(&f.old), c(&f.new), c(out));
    let mut err = null_mut();
    // SAFETY: valid strings and options; NULL result.
    let code = unsafe {
        delta_generate(
            old.as_ptr(),
            new.as_ptr(),
            out.as_ptr(),
            gen.map_or(null(), |g| g as *const DeltaGenOptions),
            null_mut(),
            &mut err,
        )
    };
    (code, err)
}

#[test]
fn generate_refuses_an_existing_output_unless_told_to_replace_it() {
    let f = Fixture::new(Default::default());
    let mut gen = std::mem::MaybeUninit::uninit();
    // SAFETY: a valid place for the options.
    let mut gen = unsafe {
        delta_gen_options_default(gen.as_mut_ptr());
        gen.assume_init()
    };
    gen.threads = 1;
    assert!(!gen.replace, "off by default, as delta gen without --force");
    // The fixture's delta, made by the Rust library with its defaults.
    let made = std::fs::read(&f.delta).unwrap();
    for options in [None, Some(&gen)] {
        let (code, err) = generate(&f, &f.delta, options);
        let (code2, message) = take(err);
        assert_eq!((code, code2), (DELTA_ERR_OUTPUT_EXISTS, code));
        assert!(
            message.contains("u.delta: it exists (set options.replace"),
            "{message}"
        );
        assert_eq!(std::fs::read(&f.delta).unwrap(), made, "kept as it was");
    }
    // Replaced: the same options give the same bytes as the Rust library.
    gen.replace = true;
    let (code, err) = generate(&f, &f.delta, Some(&gen));
    assert_eq!(code, DELTA_OK, "{:?}", (!err.is_null()).then(|| take(err)));
    assert_eq!(std::fs::read(&f.delta).unwrap(), made);
    // deflate off keeps LZMA: the same bytes as the Rust options so set.
    gen.deflate = false;
    let (code, _) = generate(&f, &f.path("no-deflate.delta"), Some(&gen));
    assert_eq!(code, DELTA_OK);
    let rust = delta_gen::generate_to_vec(
        &std::fs::read(&f.old).unwrap(),
        &f.new_bytes,
        &delta_gen::GenOptions {
            delta: delta_gen::DeltaOptions {
                deflate: false,
                ..Default::default()
            },
            ..Default::default()
        },
    )
    .unwrap();
    assert_eq!(std::fs::read(f.path("no-deflate.delta")).unwrap(), rust);
}

#[test]
fn a_url_delta_is_fetched_with_the_bearer_token() {
    use std::io::{Read, Write};
    let f = Fixture::new(Default::default());
    let bytes = std::fs::read(&f.delta).unwrap();
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let url = CString::new(format!("http://{}/u.delta", listener.local_addr().unwrap())).unwrap();
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(mut stream) = stream else { return };
            let mut head = Vec::new();
            let mut byte = [0u8; 1];
            while !head.ends_with(b"\r\n\r\n") && stream.read(&mut byte).unwrap_or(0) == 1 {
                head.push(byte[0]);
            }
            let head = String::from_utf8_lossy(&head).to_ascii_lowercase();
            let answer = if head.contains("\r\nauthorization: bearer s3cret\r\n") {
                let mut a = format!(
                    "HTTP/1.1 200 OK\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
                    bytes.len()
                )
                .into_bytes();
                a.extend_from_slice(&bytes);
                a
            } else {
                b"HTTP/1.1 401 Unauthorized\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
                    .to_vec()
            };
            let _ = stream.write_all(&answer);
        }
    });
    let call = |options: &DeltaApplyOptions| {
        let (old, target) = (c(&f.old), c(&f.path("out.img")));
        let mut result = std::mem::MaybeUninit::<DeltaApplyResult>::zeroed();
        let mut err = null_mut();
        // SAFETY: valid strings, options and out pointers for the call.
        let code = unsafe {
            delta_apply(
                old.as_ptr(),
                url.as_ptr(),
                target.as_ptr(),
                options,
                result.as_mut_ptr(),
                &mut err,
            )
        };
        (code, err)
    };
    let mut o = options(f.dir.path());
    let (code, err) = call(&o.raw);
    assert_ne!(code, DELTA_OK);
    let (_, message) = take(err);
    assert!(message.contains("401"), "{message}");
    let token = CString::new("s3cret").unwrap();
    o.raw.bearer_token = token.as_ptr();
    let (code, err) = call(&o.raw);
    assert_eq!(code, DELTA_OK, "{:?}", (!err.is_null()).then(|| take(err)));
    assert!(std::fs::read(f.path("out.img")).unwrap() == f.new_bytes);
}
