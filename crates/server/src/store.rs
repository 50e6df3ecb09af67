//! Where the service keeps images, deltas and leases: a folder or an
//! S3-compatible bucket, through [`object_store`].
//!
//! The layout, under the store's root:
//! - `images/HEX`: a release image, named by its BLAKE3 digest;
//! - `blobs/HEX`: a delta, named by its own BLAKE3 digest (its ETag);
//! - `deltas/KEY.json`: which blob answers a key (see [`crate::key`]),
//!   written only once the blob is complete, so its presence means done;
//! - `leases/KEY/EPOCH`: who is making the delta of KEY (see [`crate::lease`]).
//!
//! Every object is written whole or not at all: a folder store stages a
//! file and renames it, a bucket completes a multipart upload.

use crate::digest::Digest;
use crate::error::{Error, Result};
use bytes::Bytes;
use futures::StreamExt;
use object_store::local::LocalFileSystem;
use object_store::path::Path as StorePath;
use object_store::{ObjectStore, ObjectStoreExt, PutMode, PutOptions, PutPayload, WriteMultipart};
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use tokio::io::AsyncReadExt;

/// Part size of uploads from a file: what an upload holds in memory.
const PART: usize = 8 << 20;
/// Largest small object (a ref or a lease) read whole.
const SMALL_OBJECT: usize = 64 << 10;

/// Which blob answers a key, and what made it.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub(crate) struct DeltaRef {
    /// BLAKE3 of the delta's bytes (hex): the blob's name and the ETag.
    pub(crate) digest: String,
    /// Its length in bytes.
    pub(crate) len: u64,
    /// The source image (hex), or "full".
    pub(crate) from: String,
    /// The target image (hex).
    pub(crate) to: String,
    /// Seconds the generation took.
    pub(crate) seconds: f64,
    /// The replica that made it.
    pub(crate) made_by: String,
}

/// A store and, for a folder store, its folder (generation reads images
/// there in place instead of downloading them).
#[derive(Debug, Clone)]
pub struct Store {
    inner: Arc<dyn ObjectStore>,
    folder: Option<PathBuf>,
    name: String,
}

impl Store {
    /// Opens `spec`: `s3://BUCKET[/PREFIX]` (credentials, region and
    /// endpoint from the usual `AWS_*` variables), else a folder, made if
    /// missing.
    ///
    /// # Errors
    /// A folder that cannot be made, or a bucket address or setting that
    /// `object_store` refuses.
    pub fn open(spec: &str) -> Result<Store> {
        if let Some(rest) = spec.strip_prefix("s3://") {
            let (bucket, prefix) = rest.split_once('/').unwrap_or((rest, ""));
            let s3 = object_store::aws::AmazonS3Builder::from_env()
                .with_bucket_name(bucket)
                .with_conditional_put(object_store::aws::S3ConditionalPut::ETagMatch)
                .build()
                .map_err(|e| Error::Store(format!("open {spec}: {e}")))?;
            let inner: Arc<dyn ObjectStore> = if prefix.trim_matches('/').is_empty() {
                Arc::new(s3)
            } else {
                Arc::new(object_store::prefix::PrefixStore::new(
                    s3,
                    prefix.trim_matches('/'),
                ))
            };
            return Ok(Store {
                inner,
                folder: None,
                name: spec.to_owned(),
            });
        }
        let folder = PathBuf::from(spec);
        for sub in ["images", "blobs", "deltas", "leases"] {
            std::fs::create_dir_all(folder.join(sub))
                .map_err(|e| Error::Store(format!("make {}: {e}", folder.join(sub).display())))?;
        }
        let folder = folder
            .canonicalize()
            .map_err(|e| Error::Store(format!("open {spec}: {e}")))?;
        let local = LocalFileSystem::new_with_prefix(&folder)
            .map_err(|e| Error::Store(format!("open {spec}: {e}")))?;
        Ok(Store {
            inner: Arc::new(local),
            folder: Some(folder),
            name: spec.to_owned(),
        })
    }

    /// What the store was opened from, for messages.
    pub fn name(&self) -> &str {
        &self.name
    }

    pub(crate) fn inner(&self) -> &Arc<dyn ObjectStore> {
        &self.inner
    }

    /// The file of `image` when the store is a folder.
    pub(crate) fn local_image(&self, image: &Digest) -> Option<PathBuf> {
        self.folder
            .as_ref()
            .map(|f| f.join("images").join(image.to_string()))
    }

    pub(crate) fn image_path(image: &Digest) -> StorePath {
        StorePath::from(format!("images/{image}"))
    }

    pub(crate) fn blob_path(digest: &str) -> StorePath {
        StorePath::from(format!("blobs/{digest}"))
    }

    fn ref_path(key: &str) -> StorePath {
        StorePath::from(format!("deltas/{key}.json"))
    }

    /// The length of `image`, or None when the store has none.
    pub(crate) async fn image_len(&self, image: &Digest) -> Result<Option<u64>> {
        self.len_of(&Store::image_path(image)).await
    }

    async fn len_of(&self, path: &StorePath) -> Result<Option<u64>> {
        match self.inner.head(path).await {
            Ok(meta) => Ok(Some(meta.size)),
            Err(object_store::Error::NotFound { .. }) => Ok(None),
            Err(e) => Err(Error::Store(format!("head {path}: {e}"))),
        }
    }

    /// The ref of `key`, or None while no delta answers it.
    pub(crate) async fn delta_ref(&self, key: &str) -> Result<Option<DeltaRef>> {
        let path = Store::ref_path(key);
        let Some(bytes) = self.small(&path).await? else {
            return Ok(None);
        };
        serde_json::from_slice(&bytes)
            .map(Some)
            .map_err(|e| Error::Store(format!("{path}: not a delta ref: {e}")))
    }

    /// Publishes `r` for `key` (a ref already there is kept: the same key
    /// makes the same bytes).
    pub(crate) async fn put_ref(&self, key: &str, r: &DeltaRef) -> Result<()> {
        let body = serde_json::to_vec(r).map_err(|e| Error::Store(e.to_string()))?;
        self.create(&Store::ref_path(key), body).await.map(|_| ())
    }

    /// Every ref: its key, length and last modification (Unix ms).
    pub(crate) async fn refs(&self) -> Result<Vec<(String, u64, i64)>> {
        let prefix = StorePath::from("deltas");
        let mut list = self.inner.list(Some(&prefix));
        let mut out = Vec::new();
        while let Some(meta) = list.next().await {
            let meta = meta.map_err(|e| Error::Store(format!("list deltas: {e}")))?;
            let Some(key) = meta
                .location
                .filename()
                .and_then(|n| n.strip_suffix(".json"))
            else {
                continue;
            };
            out.push((
                key.to_owned(),
                meta.size,
                meta.last_modified.timestamp_millis(),
            ));
        }
        Ok(out)
    }

    /// Removes the ref of `key` and its blob (unless another ref names it).
    pub(crate) async fn evict(&self, key: &str, digest: &str, shared: bool) -> Result<()> {
        let path = Store::ref_path(key);
        self.delete(&path).await?;
        if !shared {
            self.delete(&Store::blob_path(digest)).await?;
        }
        Ok(())
    }

    pub(crate) async fn delete(&self, path: &StorePath) -> Result<()> {
        match self.inner.delete(path).await {
            Ok(()) | Err(object_store::Error::NotFound { .. }) => Ok(()),
            Err(e) => Err(Error::Store(format!("delete {path}: {e}"))),
        }
    }

    /// A small object whole (at most [`SMALL_OBJECT`] bytes), or None.
    pub(crate) async fn small(&self, path: &StorePath) -> Result<Option<Bytes>> {
        let got = match self.inner.get(path).await {
            Ok(got) => got,
            Err(object_store::Error::NotFound { .. }) => return Ok(None),
            Err(e) => return Err(Error::Store(format!("get {path}: {e}"))),
        };
        if got.meta.size > SMALL_OBJECT as u64 {
            return Err(Error::Store(format!(
                "{path}: {} bytes, expected at most {SMALL_OBJECT}",
                got.meta.size
            )));
        }
        match got.bytes().await {
            Ok(bytes) => Ok(Some(bytes)),
            Err(object_store::Error::NotFound { .. }) => Ok(None),
            Err(e) => Err(Error::Store(format!("get {path}: {e}"))),
        }
    }

    /// Creates `path` holding `body`; false when it already exists.
    pub(crate) async fn create(&self, path: &StorePath, body: Vec<u8>) -> Result<bool> {
        let options = PutOptions {
            mode: PutMode::Create,
            ..PutOptions::default()
        };
        match self.inner.put_opts(path, body.into(), options).await {
            Ok(_) => Ok(true),
            Err(object_store::Error::AlreadyExists { .. }) => Ok(false),
            Err(e) => Err(Error::Store(format!("create {path}: {e}"))),
        }
    }

    /// Replaces `path` with `body`, atomically.
    pub(crate) async fn overwrite(&self, path: &StorePath, body: Vec<u8>) -> Result<()> {
        self.inner
            .put(path, PutPayload::from(body))
            .await
            .map(|_| ())
            .map_err(|e| Error::Store(format!("put {path}: {e}")))
    }

    /// Uploads the file `from` to `path` in parts of [`PART`] bytes,
    /// hashing what it sends; the upload is completed only when that is
    /// `expected` (else dropped: the file changed meanwhile). Its length.
    pub(crate) async fn upload(
        &self,
        from: &Path,
        path: &StorePath,
        expected: Digest,
    ) -> Result<u64> {
        let io = |e: std::io::Error| Error::Store(format!("read {}: {e}", from.display()));
        let failed = |e: object_store::Error| Error::Store(format!("upload {path}: {e}"));
        let mut file = tokio::fs::File::open(from).await.map_err(io)?;
        let upload = self.inner.put_multipart(path).await.map_err(failed)?;
        let mut writer = WriteMultipart::new_with_chunk_size(upload, PART);
        let mut buf = vec![0u8; 1 << 20];
        let mut hasher = blake3::Hasher::new();
        let mut len = 0u64;
        loop {
            let n = match file.read(&mut buf).await {
                Ok(0) => break,
                Ok(n) => n,
                Err(e) => {
                    writer.abort().await.ok();
                    return Err(io(e));
                }
            };
            writer.wait_for_capacity(2).await.map_err(failed)?;
            hasher.update(&buf[..n]);
            len += n as u64;
            writer.write(&buf[..n]);
        }
        if Digest::of(hasher.finalize()) != expected {
            writer.abort().await.ok();
            return Err(Error::Store(format!(
                "{} changed while it was uploaded: not stored",
                from.display()
            )));
        }
        writer.finish().await.map_err(failed)?;
        Ok(len)
    }

    /// Downloads `path` into the file `to` (created or truncated).
    pub(crate) async fn download(&self, path: &StorePath, to: &Path) -> Result<()> {
        use tokio::io::AsyncWriteExt;
        let got = self
            .inner
            .get(path)
            .await
            .map_err(|e| Error::Store(format!("get {path}: {e}")))?;
        let io = |e: std::io::Error| Error::Store(format!("write {}: {e}", to.display()));
        let mut file = tokio::fs::File::create(to).await.map_err(io)?;
        let mut stream = got.into_stream();
        while let Some(chunk) = stream.next().await {
            let chunk = chunk.map_err(|e| Error::Store(format!("get {path}: {e}")))?;
            file.write_all(&chunk).await.map_err(io)?;
        }
        file.flush().await.map_err(io)
    }
}
