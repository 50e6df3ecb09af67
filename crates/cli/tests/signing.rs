//! Signed deltas through the binary: keygen, gen --sign, sign, verify, and
//! apply refusing, before anything is written, every delta that is not
//! signed by a trusted key or is for another image.

mod common;

use common::{delta_in, APPLY_DEFAULTS, DELTA};
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

fn testdata(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../testdata")
        .join(name)
}

struct Keys {
    dir: tempfile::TempDir,
}

impl Keys {
    /// A scratch folder with the small pair, keys `a` and `b`, and
    /// `u.delta`, unsigned.
    fn new() -> Keys {
        let dir = tempfile::tempdir().unwrap();
        for name in ["old.bin", "new.bin"] {
            std::fs::copy(testdata(&format!("small/{name}")), dir.path().join(name)).unwrap();
        }
        let keys = Keys { dir };
        for key in ["a", "b"] {
            keys.ok(&["keygen", "-o", key]);
        }
        keys.ok(&["gen", "old.bin", "new.bin", "-o", "u.delta"]);
        keys
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    /// `delta ARGS` in the folder; an `apply` with the device's paths
    /// inside it.
    fn run(&self, args: &[&str]) -> Output {
        delta_in(self.dir.path(), args, &APPLY_DEFAULTS)
            .output()
            .unwrap()
    }

    fn run_raw(&self, args: &[&str]) -> Output {
        Command::new(DELTA)
            .current_dir(self.dir.path())
            .args(args)
            .output()
            .unwrap()
    }

    fn ok(&self, args: &[&str]) -> Output {
        let out = self.run(args);
        assert!(
            out.status.success(),
            "delta {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        out
    }

    fn apply(&self, delta: &str, extra: &[&str]) -> Output {
        let mut args = vec!["apply", "old.bin", delta, "-o", "out.img"];
        args.extend_from_slice(extra);
        self.run(&args)
    }

    /// Asserts exit 1 with `needle` on stderr and no target or partial.
    fn assert_refused(&self, out: &Output, needle: &str) {
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "{err}");
        assert!(err.contains(needle), "expected {needle:?} in: {err}");
        assert!(!self.path("out.img").exists(), "target created");
        assert!(!self.path("out.img.partial").exists(), "partial created");
    }

    fn key_id(&self, key: &str) -> String {
        let line = std::fs::read_to_string(self.path(&format!("{key}.pub"))).unwrap();
        line.split_whitespace().nth(1).unwrap().to_owned()
    }
}

#[test]
fn keygen_writes_a_private_secret_and_never_overwrites() {
    use std::os::unix::fs::PermissionsExt;
    let keys = Keys::new();
    let mode = std::fs::metadata(keys.path("a"))
        .unwrap()
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o600);
    let public = std::fs::read_to_string(keys.path("a.pub")).unwrap();
    assert!(public.starts_with("delta-ed25519 "), "{public}");
    assert_eq!(public.lines().count(), 1);
    let before = std::fs::read(keys.path("a")).unwrap();
    let out = keys.run(&["keygen", "-o", "a"]);
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(std::fs::read(keys.path("a")).unwrap(), before);
}

#[test]
fn a_signed_delta_applies_with_its_key_and_nothing_else_does() {
    let keys = Keys::new();
    keys.ok(&["gen", "old.bin", "new.bin", "-o", "a.delta", "--sign", "a"]);
    let info = keys.ok(&["info", "a.delta"]);
    assert!(String::from_utf8_lossy(&info.stdout).contains(&keys.key_id("a")));

    // Unsigned, or signed by a key that is not trusted.
    let out = keys.apply("u.delta", &["--trusted-keys", "a.pub"]);
    keys.assert_refused(&out, "is not signed");
    let out = keys.apply("a.delta", &["--trusted-keys", "b.pub"]);
    keys.assert_refused(
        &out,
        &format!(
            "signed by key ids {}, trusted key ids {}",
            keys.key_id("a"),
            keys.key_id("b")
        ),
    );
    // Changed after signing (another new image digest) and re-signed by
    // the attacker's key, the trusted signature kept: refused.
    let bytes = std::fs::read(keys.path("a.delta")).unwrap();
    let index = delta_format::read_index(&mut &bytes[..], &Default::default()).unwrap();
    let mut header = index.header.clone();
    header.new_digest[0] ^= 1;
    let (table, digest) = delta_format::Index::encode_with_digest(&header, &index.segments);
    let attacker =
        delta_core::signature::SecretKey::parse(&std::fs::read_to_string(keys.path("b")).unwrap())
            .unwrap();
    let block = delta_format::signature::encode_block(&[
        index.signatures[0].clone(),
        attacker.sign(&digest),
    ]);
    let payloads = &bytes[index.payload_offsets[0] as usize..];
    std::fs::write(
        keys.path("forged.delta"),
        [&table[..], &block, payloads].concat(),
    )
    .unwrap();
    let out = keys.apply("forged.delta", &["--trusted-keys", "a.pub"]);
    keys.assert_refused(
        &out,
        &format!("bad signature by trusted key id {}", keys.key_id("a")),
    );

    // Every flipped byte of header, table and signature block, and a few
    // payload bytes, is refused.
    let bytes = std::fs::read(keys.path("a.delta")).unwrap();
    let count = u64::from_le_bytes(bytes[120..128].try_into().unwrap()) as usize;
    let block_end = 128 + count * delta_format::ENTRY_LEN + 32 + 4 + 72;
    let positions: Vec<usize> = (0..block_end)
        .step_by(3)
        .chain([block_end - 1, block_end, bytes.len() - 1])
        .collect();
    for at in positions {
        let mut damaged = bytes.clone();
        damaged[at] ^= 0x04;
        std::fs::write(keys.path("d.delta"), &damaged).unwrap();
        let out = keys.apply("d.delta", &["--trusted-keys", "a.pub"]);
        assert_eq!(out.status.code(), Some(1), "flip at {at} accepted");
        assert!(!keys.path("out.img").exists(), "flip at {at} made a target");
    }

    let out = keys.apply("a.delta", &["--trusted-keys", "a.pub"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        std::fs::read(keys.path("out.img")).unwrap()
            == std::fs::read(keys.path("new.bin")).unwrap()
    );
}

#[test]
fn two_signatures_apply_when_only_the_second_key_is_trusted() {
    let keys = Keys::new();
    keys.ok(&[
        "gen", "old.bin", "new.bin", "-o", "ab.delta", "--sign", "a", "--sign", "b",
    ]);
    let info = keys.ok(&["info", "--json", "ab.delta"]);
    let info: serde_json::Value = serde_json::from_slice(&info.stdout).unwrap();
    assert_eq!(info["signatures"].as_array().unwrap().len(), 2);
    let out = keys.apply("ab.delta", &["--trusted-keys", "b.pub"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn a_keyring_folder_at_the_default_place_requires_signatures() {
    let keys = Keys::new();
    std::fs::create_dir(keys.path("keyring")).unwrap();
    std::fs::copy(keys.path("a.pub"), keys.path("keyring/fleet.pub")).unwrap();
    let mut args = vec!["apply", "old.bin", "u.delta", "-o", "out.img"];
    args.extend([
        "--no-log",
        "--instance-lock",
        "apply.lock",
        "--lock-root",
        "locks",
    ]);
    args.extend([
        "--supervisor-config",
        "none",
        "--state-dir",
        ".",
        "--keyring",
        "keyring",
    ]);
    let out = keys.run_raw(&args);
    keys.assert_refused(&out, "is not signed");
    keys.ok(&["sign", "u.delta", "--key", "a"]);
    let out = keys.run_raw(&args);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn expect_new_refuses_a_delta_for_another_image_up_front() {
    let keys = Keys::new();
    let wrong = "00".repeat(32);
    let out = keys.apply("u.delta", &["--expect-new", &wrong]);
    keys.assert_refused(&out, &format!("not the expected {wrong}"));
    let right = blake3::hash(&std::fs::read(keys.path("new.bin")).unwrap())
        .to_hex()
        .to_string();
    let out = keys.apply("u.delta", &["--expect-new", &right]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn sign_adds_a_signature_that_verify_accepts_without_writing() {
    let keys = Keys::new();
    let payloads_before = std::fs::read(keys.path("u.delta")).unwrap();
    keys.ok(&["sign", "u.delta", "--key", "a"]);
    let signed = std::fs::read(keys.path("u.delta")).unwrap();
    assert!(signed.ends_with(&payloads_before[payloads_before.len() - 500..]));
    let out = keys.ok(&["verify", "u.delta", "old.bin", "--trusted-keys", "a.pub"]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains(&keys.key_id("a")) && text.contains("old image"),
        "{text}"
    );
    let out = keys.run(&["verify", "u.delta", "--trusted-keys", "b.pub"]);
    assert_eq!(out.status.code(), Some(1));
    // A damaged payload fails verify too.
    let mut damaged = signed.clone();
    let last = damaged.len() - 1;
    damaged[last] ^= 1;
    std::fs::write(keys.path("d.delta"), damaged).unwrap();
    let out = keys.run(&["verify", "d.delta", "--trusted-keys", "a.pub"]);
    assert!(String::from_utf8_lossy(&out.stderr).contains("payload digest mismatch"));
    assert_eq!(
        std::fs::read(keys.path("old.bin")).unwrap(),
        std::fs::read(testdata("small/old.bin")).unwrap()
    );
}
