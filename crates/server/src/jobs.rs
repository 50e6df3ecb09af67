//! Generations: one per key in this process (single flight), one per key
//! across replicas (leases), at most `max_jobs` running and a bounded
//! number waiting.

use crate::digest::Digest;
use crate::error::{Error, Result};
use crate::lease::{self, Acquired};
use crate::metrics::Metrics;
use crate::store::{DeltaRef, Store};
use delta_gen::{GenOptions, GenProgress};
use serde::Serialize;
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};
use tokio::sync::Semaphore;

/// How long a failed generation is remembered (and answered with its
/// error) before a request may start it again.
const FAILURE_KEPT: Duration = Duration::from_secs(60);

/// Checks that the delta at `path` was made from and to the images its
/// pair names: an image in the store that is not what its name says (a
/// bucket written by other hands, a disk error) must not become a delta
/// that devices verify against the wrong target.
fn check_images(path: &Path, pair: Pair) -> Result<()> {
    use std::io::Read;
    let mut head = [0u8; delta_format::HEADER_LEN];
    std::fs::File::open(path)
        .and_then(|mut f| f.read_exact(&mut head))
        .map_err(|e| Error::Generate(format!("read {}: {e}", path.display())))?;
    let limits = delta_format::Limits {
        max_memory: u64::MAX,
        ..delta_format::Limits::default()
    };
    let header = delta_format::Header::decode(&head, &limits)
        .map_err(|e| Error::Generate(format!("{}: {e}", path.display())))?;
    let named = [
        ("target", Some(pair.to), header.new_digest),
        ("source", pair.from, header.old_digest),
    ];
    for (what, digest, found) in named {
        if let Some(digest) = digest.filter(|d| d.bytes() != &found) {
            return Err(Error::Generate(format!(
                "the {what} image stored as {digest} hashes to {}: the store is damaged; \
                 push the image again",
                delta_core::to_hex(&found)
            )));
        }
    }
    Ok(())
}

/// What a delta is made from: a source image, or none (a full payload).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(crate) struct Pair {
    pub(crate) from: Option<Digest>,
    pub(crate) to: Digest,
}

impl Pair {
    pub(crate) fn source_name(&self) -> String {
        self.from
            .map_or_else(|| "full".to_owned(), |d| d.to_string())
    }
}

/// A job's state, as the 202 answer shows it.
#[derive(Debug, Clone, Serialize)]
pub(crate) struct Status {
    /// queued, waiting (another replica holds the lease), generating,
    /// uploading, failed.
    pub(crate) state: &'static str,
    pub(crate) phase: String,
    pub(crate) bytes_done: u64,
    pub(crate) bytes_total: u64,
    /// The replica generating it, when it is another one.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) holder: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) error: Option<String>,
    pub(crate) seconds: f64,
}

struct Job {
    status: Mutex<Status>,
    started: Instant,
    ended: Mutex<Option<Instant>>,
}

impl Job {
    fn set(&self, change: impl FnOnce(&mut Status)) {
        let mut status = self.status.lock().unwrap_or_else(PoisonError::into_inner);
        change(&mut status);
        status.seconds = self.started.elapsed().as_secs_f64();
    }

    fn status(&self) -> Status {
        let mut status = self
            .status
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone();
        status.seconds = self.started.elapsed().as_secs_f64();
        status
    }
}

/// Jobs of `table` running or queued (not failed).
fn live_jobs(table: &HashMap<String, Arc<Job>>) -> usize {
    table
        .values()
        .filter(|j| {
            j.ended
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .is_none()
        })
        .count()
}

/// What a request for a delta gets from [`Jobs::request`].
#[derive(Debug)]
pub(crate) enum Answer {
    /// Being made (or failed a moment ago): the status to show.
    Pending(Status),
    /// The queue is full.
    Busy,
}

/// How the service makes deltas.
#[derive(Debug, Clone)]
pub(crate) struct JobConfig {
    pub(crate) gen: GenOptions,
    pub(crate) max_jobs: usize,
    pub(crate) queue: usize,
    pub(crate) lease_ms: i64,
    pub(crate) scratch: PathBuf,
    pub(crate) replica: String,
    /// Told after each delta published (the cache trims itself then).
    pub(crate) published: Arc<tokio::sync::Notify>,
}

/// The generations of this process.
pub(crate) struct Jobs {
    store: Store,
    config: JobConfig,
    metrics: Arc<Metrics>,
    table: Mutex<HashMap<String, Arc<Job>>>,
    slots: Semaphore,
}

impl std::fmt::Debug for Jobs {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Jobs").finish_non_exhaustive()
    }
}

impl Jobs {
    pub(crate) fn new(store: Store, config: JobConfig, metrics: Arc<Metrics>) -> Arc<Jobs> {
        let slots = Semaphore::new(config.max_jobs.max(1));
        Arc::new(Jobs {
            store,
            config,
            metrics,
            table: Mutex::new(HashMap::new()),
            slots,
        })
    }

    /// The job of `key`: its status if one runs or failed lately, else a
    /// new one started (or Busy when the queue is full).
    pub(crate) fn request(self: &Arc<Self>, key: &str, pair: Pair) -> Answer {
        let mut table = self.table.lock().unwrap_or_else(PoisonError::into_inner);
        table.retain(|_, job| {
            let ended = job.ended.lock().unwrap_or_else(PoisonError::into_inner);
            ended.is_none_or(|at| at.elapsed() < FAILURE_KEPT)
        });
        if let Some(job) = table.get(key) {
            return Answer::Pending(job.status());
        }
        let live = live_jobs(&table);
        if live >= self.config.max_jobs.max(1) + self.config.queue {
            return Answer::Busy;
        }
        let job = Arc::new(Job {
            status: Mutex::new(Status {
                state: "queued",
                phase: String::new(),
                bytes_done: 0,
                bytes_total: 0,
                holder: None,
                error: None,
                seconds: 0.0,
            }),
            started: Instant::now(),
            ended: Mutex::new(None),
        });
        table.insert(key.to_owned(), Arc::clone(&job));
        self.metrics
            .queue_depth
            .store(live as u64 + 1, Ordering::Relaxed);
        let status = job.status();
        let jobs = Arc::clone(self);
        let key = key.to_owned();
        tokio::spawn(async move {
            let result = jobs.run(&key, pair, &job).await;
            let mut table = jobs.table.lock().unwrap_or_else(PoisonError::into_inner);
            match result {
                Ok(()) => {
                    table.remove(&key);
                }
                Err(e) => {
                    jobs.metrics
                        .generation_failures
                        .fetch_add(1, Ordering::Relaxed);
                    eprintln!(
                        "{}",
                        serde_json::json!({"event": "generation failed", "key": key, "error": e.to_string()})
                    );
                    job.set(|s| {
                        s.state = "failed";
                        s.error = Some(e.to_string());
                    });
                    *job.ended.lock().unwrap_or_else(PoisonError::into_inner) =
                        Some(Instant::now());
                }
            }
            let live = live_jobs(&table);
            jobs.metrics
                .queue_depth
                .store(live as u64, Ordering::Relaxed);
        });
        Answer::Pending(status)
    }

    /// Makes the delta of `key` unless another replica does: then waits
    /// until it is published or that replica's lease expires.
    async fn run(&self, key: &str, pair: Pair, job: &Arc<Job>) -> Result<()> {
        let ttl = self.config.lease_ms;
        loop {
            // A slot is held only to take the lease and generate: a job
            // waiting on another replica leaves it to other keys.
            let slot = self
                .slots
                .acquire()
                .await
                .map_err(|e| Error::Generate(e.to_string()))?;
            if self.store.delta_ref(key).await?.is_some() {
                return Ok(());
            }
            match lease::acquire(&self.store, key, &self.config.replica, ttl).await? {
                Acquired::Elsewhere(other) => {
                    drop(slot);
                    job.set(|s| {
                        s.state = "waiting";
                        s.phase = other.phase.clone();
                        s.bytes_done = other.done;
                        s.bytes_total = other.total;
                        s.holder = Some(other.holder.clone());
                    });
                    tokio::time::sleep(Duration::from_millis((ttl / 6).clamp(100, 2000) as u64))
                        .await;
                }
                Acquired::Held(held) => {
                    // Published between our look and our lease (its maker
                    // then released the lease we took): nothing to do.
                    if self.store.delta_ref(key).await?.is_none() {
                        self.generate_held(key, pair, job, &held).await?;
                    }
                    return held.release(&self.store).await;
                }
            }
        }
    }

    /// Generates, uploads and publishes under a held lease, renewing it.
    async fn generate_held(
        &self,
        key: &str,
        pair: Pair,
        job: &Arc<Job>,
        held: &lease::Lease,
    ) -> Result<()> {
        job.set(|s| {
            s.state = "generating";
            s.holder = None;
        });
        let work = tempfile::Builder::new()
            .prefix("job-")
            .tempdir_in(&self.config.scratch)
            .map_err(|e| {
                Error::Generate(format!("scratch {}: {e}", self.config.scratch.display()))
            })?;
        let started = Instant::now();
        let making = self.make(pair, job, work.path());
        tokio::pin!(making);
        let every = Duration::from_millis((self.config.lease_ms / 3).max(50) as u64);
        let made = loop {
            tokio::select! {
                made = &mut making => break made?,
                () = tokio::time::sleep(every) => {
                    let s = job.status();
                    held.renew(&self.store, &self.config.replica, self.config.lease_ms,
                        (&s.phase, s.bytes_done, s.bytes_total)).await?;
                }
            }
        };
        let seconds = started.elapsed().as_secs_f64();
        job.set(|s| s.state = "uploading");
        let (delta, digest) = made;
        let digest_hex = digest.to_string();
        let len = self
            .store
            .upload(&delta, &Store::blob_path(&digest_hex), digest)
            .await?;
        let r = DeltaRef {
            digest: digest_hex,
            len,
            from: pair.source_name(),
            to: pair.to.to_string(),
            seconds,
            made_by: self.config.replica.clone(),
        };
        self.store.put_ref(key, &r).await?;
        self.metrics.generations.fetch_add(1, Ordering::Relaxed);
        self.config.published.notify_one();
        self.metrics
            .generation_millis
            .fetch_add((seconds * 1000.0) as u64, Ordering::Relaxed);
        eprintln!(
            "{}",
            serde_json::json!({"event": "generated", "key": key, "from": r.from, "to": r.to,
                "delta_bytes": len, "seconds": seconds, "replica": self.config.replica})
        );
        Ok(())
    }

    /// Runs the generator on the pair's images (in the store's folder, or
    /// downloaded into `work`); the delta's file and digest.
    async fn make(&self, pair: Pair, job: &Arc<Job>, work: &Path) -> Result<(PathBuf, Digest)> {
        let image = |d: Digest| async move {
            if let Some(path) = self.store.local_image(&d) {
                return Ok::<_, Error>(path);
            }
            let path = work.join(d.to_string());
            self.store.download(&Store::image_path(&d), &path).await?;
            Ok(path)
        };
        let old = match pair.from {
            Some(d) => Some(image(d).await?),
            None => None,
        };
        let new = image(pair.to).await?;
        let out = work.join("delta");
        let mut options = self.config.gen.clone();
        let watched = Arc::clone(job);
        options.progress = Some(Arc::new(move |p: &GenProgress| {
            watched.set(|s| {
                s.phase = p.phase.name().to_owned();
                s.bytes_done = p.bytes_done;
                s.bytes_total = p.bytes_total;
            });
        }));
        options.delta.full = old.is_none();
        let to = out.clone();
        tokio::task::spawn_blocking(move || {
            delta_gen::generate(old.as_deref(), &new, &to, &options)
                .map_err(|e| Error::Generate(e.to_string()))?;
            check_images(&to, pair)?;
            let mut hasher = blake3::Hasher::new();
            hasher
                .update_mmap(&to)
                .map_err(|e| Error::Generate(format!("hash {}: {e}", to.display())))?;
            Ok((to, Digest::of(hasher.finalize())))
        })
        .await
        .map_err(|e| Error::Generate(format!("the generation task died: {e}")))?
    }
}
