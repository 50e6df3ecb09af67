//! Trusted public keys on the device: a file of `delta-ed25519` lines, or a
//! folder of `*.pub` files, one key each.

use crate::error::{Error, Result};
use delta_core::signature::PublicKey;
use std::path::Path;

/// Where a device keeps its trusted keys: when this exists, every delta
/// must carry a signature by one of them, without any option.
pub const DEFAULT_KEYRING: &str = "/etc/delta/trusted-keys";

/// The keys a delta must be signed by: `explicit` when not empty, else
/// those of `keyring` when it exists, else none (signatures not required).
///
/// # Errors
/// A keyring that exists but cannot be loaded (see [`load_keyring`]).
pub fn required_keys(explicit: &[PublicKey], keyring: Option<&Path>) -> Result<Vec<PublicKey>> {
    match keyring {
        Some(path) if explicit.is_empty() && path.exists() => load_keyring(path),
        _ => Ok(explicit.to_vec()),
    }
}

/// Largest key file read: a key line is under 100 bytes.
const MAX_KEY_FILE: u64 = 1 << 20;

/// Loads the public keys at `path`: a file with one key per line (blank
/// lines and `#` comments allowed), or a folder whose `*.pub` files each
/// hold keys the same way.
///
/// # Errors
/// [`Error::Keyring`] naming the file and line of a bad key, an empty
/// keyring, or the I/O error.
pub fn load_keyring(path: &Path) -> Result<Vec<PublicKey>> {
    let bad = |file: &Path, reason: String| Error::Keyring {
        path: file.to_owned(),
        reason,
    };
    let meta = std::fs::metadata(path).map_err(|e| bad(path, e.to_string()))?;
    let mut files = Vec::new();
    if meta.is_dir() {
        let entries = std::fs::read_dir(path).map_err(|e| bad(path, e.to_string()))?;
        for entry in entries {
            let entry = entry.map_err(|e| bad(path, e.to_string()))?;
            let file = entry.path();
            if file.extension().is_some_and(|e| e == "pub") {
                files.push(file);
            }
        }
        files.sort();
    } else {
        files.push(path.to_owned());
    }
    let mut keys = Vec::new();
    for file in &files {
        let (opened, _) = delta_image::open_image(file).map_err(|e| bad(file, e.to_string()))?;
        let mut text = String::new();
        std::io::Read::read_to_string(&mut std::io::Read::take(&opened, MAX_KEY_FILE), &mut text)
            .map_err(|e| bad(file, e.to_string()))?;
        for (n, line) in text.lines().enumerate() {
            let line = line.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let key =
                PublicKey::parse(line).map_err(|e| bad(file, format!("line {}: {e}", n + 1)))?;
            keys.push(key);
        }
    }
    if keys.is_empty() {
        return Err(bad(path, "holds no public key".into()));
    }
    Ok(keys)
}

#[cfg(test)]
mod tests {
    use super::*;
    use delta_core::signature::SecretKey;

    #[test]
    fn files_and_folders_of_keys_load_and_bad_lines_are_named() {
        let dir = tempfile::tempdir().unwrap();
        let (a, b) = (
            SecretKey::from_seed(&[1; 32]).public(),
            SecretKey::from_seed(&[2; 32]).public(),
        );
        let file = dir.path().join("keys");
        std::fs::write(
            &file,
            format!("# fleet keys\n{}\n\n{}\n", a.to_line(), b.to_line()),
        )
        .unwrap();
        assert_eq!(load_keyring(&file).unwrap(), vec![a.clone(), b.clone()]);
        let folder = dir.path().join("trusted");
        std::fs::create_dir(&folder).unwrap();
        std::fs::write(folder.join("a.pub"), a.to_line()).unwrap();
        std::fs::write(folder.join("notes.txt"), "not a key").unwrap();
        assert_eq!(load_keyring(&folder).unwrap(), vec![a]);
        std::fs::write(folder.join("b.pub"), "delta-ed25519 00 11").unwrap();
        let err = load_keyring(&folder).unwrap_err().to_string();
        assert!(err.contains("b.pub") && err.contains("line 1"), "{err}");
        std::fs::write(&file, "# nothing\n").unwrap();
        let err = load_keyring(&file).unwrap_err().to_string();
        assert!(err.contains("holds no public key"), "{err}");
    }
}
