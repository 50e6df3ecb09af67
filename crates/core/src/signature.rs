//! Ed25519 keys and the signatures of a delta's table digest.
//!
//! A delta is signed by signing its table digest (see
//! `delta_format::signature`), which commits to every byte the applier
//! uses: so one check, before anything is written, authenticates the whole
//! delta, and each payload is then checked against an authenticated digest.
//!
//! Keys travel as one line of text:
//! - public: `delta-ed25519 <key id, 16 hex> <public key, 64 hex>`;
//! - secret: `delta-ed25519-secret <key id, 16 hex> <seed, 64 hex>`.
//!
//! The key id is the first 8 bytes of the BLAKE3 of the public key, so a
//! line whose id does not match its key is refused. Secret bytes are wiped
//! from memory when a [`SecretKey`] is dropped and are never printed
//! ([`SecretKey`]'s `Debug` shows the key id only).

use crate::error::{Error, Result};
use crate::to_hex as hex;
use delta_format::signature::{signed_message, Signature, KEY_ID_LEN};
use delta_format::{Digest, Index};
use ed25519_dalek::{Signer, SigningKey, Verifier, VerifyingKey};
use zeroize::Zeroizing;

const PUBLIC_TAG: &str = "delta-ed25519";
const SECRET_TAG: &str = "delta-ed25519-secret";

/// A key id: the first 8 bytes of the BLAKE3 of the public key.
pub type KeyId = [u8; KEY_ID_LEN];

/// A public key that may be trusted to sign deltas.
#[derive(Clone, PartialEq, Eq)]
pub struct PublicKey {
    key: VerifyingKey,
    id: KeyId,
}

impl std::fmt::Debug for PublicKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "PublicKey({})", hex(&self.id))
    }
}

/// A secret signing key; its bytes are wiped on drop.
#[derive(Clone)]
pub struct SecretKey {
    key: SigningKey,
    id: KeyId,
}

impl std::fmt::Debug for SecretKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "SecretKey({}, secret not shown)", hex(&self.id))
    }
}

fn key_id(key: &VerifyingKey) -> KeyId {
    let mut id = [0u8; KEY_ID_LEN];
    id.copy_from_slice(&blake3::hash(key.as_bytes()).as_bytes()[..KEY_ID_LEN]);
    id
}

fn unhex<const N: usize>(text: &str, what: &str) -> Result<Zeroizing<[u8; N]>> {
    crate::from_hex(text).ok_or_else(|| Error::Key {
        reason: format!("{what} must be {} hex digits", N * 2),
    })
}

/// Splits `TAG ID KEY` and checks the tag.
fn fields<'a>(line: &'a str, tag: &str) -> Result<(&'a str, &'a str)> {
    let mut parts = line.split_ascii_whitespace();
    match (parts.next(), parts.next(), parts.next(), parts.next()) {
        (Some(t), Some(id), Some(key), None) if t == tag => Ok((id, key)),
        _ => Err(Error::Key {
            reason: format!("expected one line `{tag} <key id> <key>`"),
        }),
    }
}

impl PublicKey {
    /// The key's id.
    pub fn id(&self) -> KeyId {
        self.id
    }

    /// Parses a `delta-ed25519 ID KEY` line.
    ///
    /// # Errors
    /// [`Error::Key`] for another layout, bad hex, a point that is not a
    /// valid public key, or an id that does not belong to the key.
    pub fn parse(line: &str) -> Result<PublicKey> {
        let (id, key) = fields(line.trim(), PUBLIC_TAG)?;
        let bytes = unhex::<32>(key, "a public key")?;
        let key = VerifyingKey::from_bytes(&bytes).map_err(|e| Error::Key {
            reason: format!("not an Ed25519 public key: {e}"),
        })?;
        let public = PublicKey {
            id: key_id(&key),
            key,
        };
        if hex(&public.id) != id.to_ascii_lowercase() {
            return Err(Error::Key {
                reason: format!(
                    "key id {id} does not match its key (whose id is {})",
                    hex(&public.id)
                ),
            });
        }
        Ok(public)
    }

    /// The one-line text form.
    pub fn to_line(&self) -> String {
        format!(
            "{PUBLIC_TAG} {} {}",
            hex(&self.id),
            hex(self.key.as_bytes())
        )
    }
}

impl SecretKey {
    /// The key made from 32 secret random bytes.
    pub fn from_seed(seed: &[u8; 32]) -> SecretKey {
        let key = SigningKey::from_bytes(seed);
        let id = key_id(&key.verifying_key());
        SecretKey { key, id }
    }

    /// Parses a `delta-ed25519-secret ID SEED` line.
    ///
    /// # Errors
    /// [`Error::Key`] for another layout, bad hex, or an id that does not
    /// belong to the key. The message never holds secret bytes.
    pub fn parse(text: &str) -> Result<SecretKey> {
        let (id, seed) = fields(text.trim(), SECRET_TAG)?;
        let seed = unhex::<32>(seed, "a secret key")?;
        let secret = SecretKey::from_seed(&seed);
        if hex(&secret.id) != id.to_ascii_lowercase() {
            return Err(Error::Key {
                reason: format!("key id {id} does not match its secret key"),
            });
        }
        Ok(secret)
    }

    /// The one-line text form (secret: write it to a file of mode 0600).
    pub fn to_line(&self) -> Zeroizing<String> {
        let seed = Zeroizing::new(self.key.to_bytes());
        Zeroizing::new(format!("{SECRET_TAG} {} {}", hex(&self.id), hex(&seed[..])))
    }

    /// The public half.
    pub fn public(&self) -> PublicKey {
        PublicKey {
            key: self.key.verifying_key(),
            id: self.id,
        }
    }

    /// Signs a delta's table digest.
    pub fn sign(&self, table_digest: &Digest) -> Signature {
        Signature {
            key_id: self.id,
            signature: self.key.sign(&signed_message(table_digest)).to_bytes(),
        }
    }
}

/// Checks `index`'s signatures against `trusted` keys: at least one must
/// be by a trusted key, and every signature by a trusted key must be
/// valid. Returns the id of a trusted key that signed.
///
/// # Errors
/// [`Error::Unsigned`], [`Error::UntrustedSignatures`] or
/// [`Error::BadSignature`], naming the key ids found and trusted.
pub fn verify(index: &Index, trusted: &[PublicKey]) -> Result<KeyId> {
    let trusted_ids = || ids(trusted.iter().map(|k| k.id));
    if index.signatures.is_empty() {
        return Err(Error::Unsigned {
            trusted: trusted_ids(),
        });
    }
    let message = signed_message(&index.table_digest);
    let mut signed_by = None;
    for s in &index.signatures {
        let Some(key) = trusted.iter().find(|k| k.id == s.key_id) else {
            continue;
        };
        let signature = ed25519_dalek::Signature::from_bytes(&s.signature);
        if key.key.verify(&message, &signature).is_err() {
            return Err(Error::BadSignature {
                key_id: hex(&s.key_id),
            });
        }
        signed_by.get_or_insert(s.key_id);
    }
    signed_by.ok_or_else(|| Error::UntrustedSignatures {
        found: ids(index.signatures.iter().map(|s| s.key_id)),
        trusted: trusted_ids(),
    })
}

fn ids(ids: impl Iterator<Item = KeyId>) -> String {
    let list: Vec<String> = ids.map(|id| hex(&id)).collect();
    if list.is_empty() {
        "none".into()
    } else {
        list.join(", ")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(n: u8) -> SecretKey {
        SecretKey::from_seed(&[n; 32])
    }

    fn index_signed_by(signers: &[&SecretKey]) -> Index {
        let digest = [5u8; 32];
        Index {
            header: Default::default(),
            segments: Vec::new(),
            new_offsets: Vec::new(),
            payload_offsets: Vec::new(),
            file_len: 0,
            table_digest: digest,
            signatures: signers.iter().map(|k| k.sign(&digest)).collect(),
        }
    }

    #[test]
    fn keys_round_trip_as_text_and_ids_are_checked() {
        let secret = key(1);
        let again = SecretKey::parse(&secret.to_line()).unwrap();
        assert_eq!(again.public(), secret.public());
        let public = PublicKey::parse(&secret.public().to_line()).unwrap();
        assert_eq!(public, secret.public());
        let other = key(2).public().to_line();
        let (_, other_key) = other.rsplit_once(' ').unwrap();
        let forged = format!("delta-ed25519 {} {other_key}", hex(&public.id()));
        let err = PublicKey::parse(&forged).unwrap_err().to_string();
        assert!(err.contains("does not match its key"), "{err}");
        assert!(!format!("{secret:?}").contains(&secret.to_line()[40..]));
    }

    #[test]
    fn a_trusted_signature_verifies_and_anything_else_is_named() {
        let (a, b) = (key(1), key(2));
        assert_eq!(
            verify(&index_signed_by(&[&a]), &[a.public()]).unwrap(),
            a.id
        );
        // Two signatures, only the second key trusted.
        assert_eq!(
            verify(&index_signed_by(&[&a, &b]), &[b.public()]).unwrap(),
            b.id
        );
        let err = verify(&index_signed_by(&[]), &[a.public()]).unwrap_err();
        assert!(matches!(err, Error::Unsigned { .. }), "{err}");
        let err = verify(&index_signed_by(&[&b]), &[a.public()]).unwrap_err();
        let text = err.to_string();
        assert!(
            text.contains(&hex(&b.id)) && text.contains(&hex(&a.id)),
            "{text}"
        );
        let mut damaged = index_signed_by(&[&a]);
        damaged.signatures[0].signature[10] ^= 1;
        let err = verify(&damaged, &[a.public()]).unwrap_err();
        assert!(matches!(err, Error::BadSignature { .. }), "{err}");
        let mut other_table = index_signed_by(&[&a]);
        other_table.table_digest[0] ^= 1;
        assert!(verify(&other_table, &[a.public()]).is_err());
    }
}
