//! `delta keygen`, `delta sign`, `delta verify`, and reading key files.

use crate::failure::Failure;
use delta_core::signature::{PublicKey, SecretKey};
use std::io::{Read, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use zeroize::Zeroizing;

/// `delta keygen -o KEY`: a new secret key in KEY (mode 0600, never over
/// an existing file) and its public key in KEY.pub.
pub(crate) fn keygen(out: &Path) -> Result<(), Failure> {
    let mut seed = Zeroizing::new([0u8; 32]);
    std::fs::File::open("/dev/urandom")
        .and_then(|mut f| f.read_exact(&mut seed[..]))
        .map_err(|e| format!("read /dev/urandom: {e}"))?;
    let secret = SecretKey::from_seed(&seed);
    let public_path = pub_path(out);
    for path in [out, public_path.as_path()] {
        if std::fs::symlink_metadata(path).is_ok() {
            return Err(Failure::from(format!(
                "refusing to write {}: it exists (keys are never overwritten)",
                path.display()
            )));
        }
    }
    write_new(out, 0o600, secret.to_line().as_bytes())?;
    write_new(&public_path, 0o644, secret.public().to_line().as_bytes())?;
    say!(
        "wrote secret key {} (mode 0600) and public key {}: key id {}",
        out.display(),
        public_path.display(),
        delta_core::to_hex(&secret.public().id())
    );
    Ok(())
}

fn pub_path(path: &Path) -> PathBuf {
    let mut name = path.as_os_str().to_owned();
    name.push(".pub");
    PathBuf::from(name)
}

/// Creates `path` (never following or replacing anything there) with
/// `mode`, holding `text` and a newline.
fn write_new(path: &Path, mode: u32, text: &[u8]) -> Result<(), Failure> {
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(mode)
        .open(path)
        .map_err(|e| format!("create {}: {e}", path.display()))?;
    file.write_all(text)
        .and_then(|()| file.write_all(b"\n"))
        .and_then(|()| file.sync_all())
        .map_err(|e| Failure::from(format!("write {}: {e}", path.display())))
}

/// Reads a secret key file; the bytes read are wiped afterwards.
pub(crate) fn read_secret(path: &Path) -> Result<SecretKey, Failure> {
    let mut text = Zeroizing::new(String::new());
    std::fs::File::open(path)
        .and_then(|f| f.take(4096).read_to_string(&mut text))
        .map_err(|e| format!("read key {}: {e}", path.display()))?;
    SecretKey::parse(&text).map_err(|e| Failure::from(format!("key {}: {e}", path.display())))
}

/// `delta sign DELTA --key KEY...`.
pub(crate) fn sign(delta: &Path, keys: &[PathBuf]) -> Result<(), Failure> {
    let secrets = keys
        .iter()
        .map(|k| read_secret(k))
        .collect::<Result<Vec<_>, _>>()?;
    let count = delta_gen::sign_file(delta, &secrets).map_err(|e| Failure::chain(&e, 1))?;
    say!(
        "signed {} with key id(s) {}; it holds {count} signature(s)",
        delta.display(),
        secrets
            .iter()
            .map(|s| delta_core::to_hex(&s.public().id()))
            .collect::<Vec<_>>()
            .join(", ")
    );
    Ok(())
}

/// The keys of `--trusted-keys PATH`, or none when it is not given.
pub(crate) fn explicit(path: Option<&Path>) -> Result<Vec<PublicKey>, Failure> {
    path.map_or(Ok(Vec::new()), |path| {
        delta_apply::keys::load_keyring(path).map_err(|e| Failure::chain(&e, 1))
    })
}

/// `delta verify DELTA [OLD]` (DELTA may be `-` or a URL).
pub(crate) fn verify(
    delta: &Path,
    old: Option<&Path>,
    trusted: &[PublicKey],
) -> Result<(), Failure> {
    let input = crate::apply::open_input(delta)?;
    let verified =
        delta_apply::verify_from(input, old, trusted).map_err(|e| Failure::chain(&e, 1))?;
    say!(
        "{}: {} payload digests verified{}{}",
        delta.display(),
        verified.payloads,
        match &verified.signed_by {
            Some(id) => format!(", signed by trusted key id {id}"),
            None => ", signatures not checked (no trusted keys)".into(),
        },
        if verified.old_checked {
            format!(
                ", old image {} verified",
                old.map_or(String::new(), |p| p.display().to_string())
            )
        } else {
            String::new()
        }
    );
    Ok(())
}

/// Reads a bearer token: the file's first line, trimmed.
pub(crate) fn read_token(path: &Path) -> Result<String, Failure> {
    let text = Zeroizing::new(
        std::fs::read_to_string(path)
            .map_err(|e| Failure::from(format!("read token {}: {e}", path.display())))?,
    );
    let token = text.lines().next().unwrap_or("").trim();
    if token.is_empty() || token.len() > 4096 || token.chars().any(|c| c.is_control()) {
        return Err(Failure::from(format!(
            "token {}: expected one line of at most 4096 printable characters",
            path.display()
        )));
    }
    Ok(token.to_owned())
}
