//! One generation per key across replicas sharing a store: leases.
//!
//! A lease is the object `leases/KEY/EPOCH` (epochs 0, 1, 2, ...), made
//! with a conditional create, so of all replicas that try one epoch exactly
//! one succeeds. Its holder rewrites it every third of the lease time with
//! a later expiry (and its progress, which other replicas answer with).
//! A replica that finds the newest epoch expired takes over by creating
//! the next one; again only one can. Only conditional create is needed,
//! which a folder and S3 (`If-None-Match: *`) both have. Expiry compares
//! wall clocks: replicas' clocks must agree to well within the lease time.

use crate::error::Result;
use crate::store::Store;
use object_store::path::Path as StorePath;
use serde::{Deserialize, Serialize};

/// Epochs tried before giving up: a key whose generation died this many
/// times is not retried by leases.
const MAX_EPOCHS: u32 = 1000;

/// What a lease object holds.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct LeaseBody {
    /// The replica holding it.
    pub(crate) holder: String,
    /// Unix milliseconds after which it may be taken over.
    pub(crate) expires_ms: i64,
    /// The generation's phase and bytes, as last renewed.
    pub(crate) phase: String,
    pub(crate) done: u64,
    pub(crate) total: u64,
}

/// A lease this replica holds.
#[derive(Debug, Clone)]
pub(crate) struct Lease {
    key: String,
    epoch: u32,
}

/// The outcome of [`acquire`].
#[derive(Debug)]
pub(crate) enum Acquired {
    /// This replica holds the key.
    Held(Lease),
    /// Another replica does, until its lease expires.
    Elsewhere(LeaseBody),
}

fn path(key: &str, epoch: u32) -> StorePath {
    StorePath::from(format!("leases/{key}/{epoch:08}"))
}

pub(crate) fn now_ms() -> i64 {
    chrono::Utc::now().timestamp_millis()
}

fn body(holder: &str, ttl_ms: i64, phase: &str, done: u64, total: u64) -> Vec<u8> {
    serde_json::to_vec(&LeaseBody {
        holder: holder.to_owned(),
        expires_ms: now_ms() + ttl_ms,
        phase: phase.to_owned(),
        done,
        total,
    })
    .unwrap_or_default()
}

/// Takes the lease of `key` for `holder`, or says who holds it.
pub(crate) async fn acquire(
    store: &Store,
    key: &str,
    holder: &str,
    ttl_ms: i64,
) -> Result<Acquired> {
    for epoch in 0..MAX_EPOCHS {
        let at = path(key, epoch);
        if store
            .create(&at, body(holder, ttl_ms, "queued", 0, 0))
            .await?
        {
            return Ok(Acquired::Held(Lease {
                key: key.to_owned(),
                epoch,
            }));
        }
        // Someone made this epoch: it stands unless a later one exists or
        // it expired. A body that cannot be read (removed since, or torn
        // by a foreign writer) counts as expired.
        let current = store
            .small(&at)
            .await?
            .and_then(|b| serde_json::from_slice::<LeaseBody>(&b).ok());
        if let Some(lease) = current.filter(|l| l.expires_ms > now_ms()) {
            if store.small(&path(key, epoch + 1)).await?.is_none() {
                return Ok(Acquired::Elsewhere(lease));
            }
        }
    }
    Err(crate::error::Error::Store(format!(
        "leases/{key}: {MAX_EPOCHS} epochs used; remove the folder to retry this key"
    )))
}

impl Lease {
    /// Extends the lease and records progress; false when another replica
    /// has taken it over (this one's work will be published anyway: the
    /// same key makes the same bytes).
    pub(crate) async fn renew(
        &self,
        store: &Store,
        holder: &str,
        ttl_ms: i64,
        progress: (&str, u64, u64),
    ) -> Result<bool> {
        if store
            .small(&path(&self.key, self.epoch + 1))
            .await?
            .is_some()
        {
            return Ok(false);
        }
        let (phase, done, total) = progress;
        store
            .overwrite(
                &path(&self.key, self.epoch),
                body(holder, ttl_ms, phase, done, total),
            )
            .await?;
        Ok(true)
    }

    /// Removes every epoch of the key, once its delta is published.
    pub(crate) async fn release(self, store: &Store) -> Result<()> {
        for epoch in 0..=self.epoch + 1 {
            store.delete(&path(&self.key, epoch)).await?;
        }
        Ok(())
    }
}
