//! `delta serve`: a delta service for fleets.
//!
//! Release images live in a store (a folder, or an S3-compatible bucket)
//! under their BLAKE3 digest. A device asks `GET /v1/deltas/FROM/TO`; the
//! first request starts the generation and is answered 202 with progress
//! and `Retry-After`; once made, the delta is kept in the store and served
//! with `Range`, `If-Range` and its digest as strong ETag, so the applier
//! resumes a dropped download. Each delta is made once per key (source,
//! target, options, engine version): in a process by a table of jobs, across
//! replicas sharing the store by leases (see [`lease`]). Generation is
//! deterministic, so whichever replica makes a key, its bytes are the same.
//!
//! Routes: `GET /v1/deltas/{from}/{to}`, `GET /v1/full/{to}`,
//! `PUT|GET /v1/images/{digest}`, `GET /healthz`, `GET /metrics`.
#![deny(missing_docs)]

mod digest;
mod error;
mod http;
mod jobs;
mod lease;
mod metrics;
mod store;

pub use digest::Digest;
pub use error::{Error, Result};
pub use store::Store;

use delta_gen::GenOptions;
use jobs::{JobConfig, Jobs, Pair};
use metrics::Metrics;
use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

/// Longest a request's head may be (request line and headers).
const MAX_HEAD: usize = 16 << 10;
/// Most headers in one request.
const MAX_HEADERS: usize = 64;
/// Most connections open at once; more wait in the kernel's backlog.
const MAX_CONNECTIONS: usize = 4096;
/// Longest a TLS handshake may take.
const HANDSHAKE: Duration = Duration::from_secs(30);
/// Longest wait, on SIGTERM, for answers under way to finish.
const DRAIN: Duration = Duration::from_secs(20);
/// How often the cache is trimmed to its limit.
const TRIM_EVERY: Duration = Duration::from_secs(30);

/// How to run the service.
#[derive(Debug, Clone)]
pub struct Config {
    /// Where images and deltas are kept.
    pub store: Store,
    /// The address to listen on (port 0: any free port).
    pub listen: SocketAddr,
    /// Tokens that may fetch deltas (none: anyone may).
    pub device_tokens: Vec<String>,
    /// Tokens that may also push images (none: nobody may).
    pub admin_tokens: Vec<String>,
    /// Generations running at once in this replica.
    pub max_jobs: usize,
    /// Generations waiting beyond those; more are answered 503.
    pub queue: usize,
    /// Most bytes of deltas kept; the least recently used go first (None:
    /// no limit).
    pub cache_bytes: Option<u64>,
    /// Largest image accepted by a push.
    pub max_image_bytes: u64,
    /// How long a generation's lease lasts without renewal.
    pub lease: Duration,
    /// Where images are downloaded to and deltas made (a bucket store).
    pub scratch: PathBuf,
    /// What deltas to make, and the keys that sign them.
    pub gen: GenOptions,
    /// This replica's name in leases and logs.
    pub replica: String,
    /// One JSON line per request on stderr.
    pub log_requests: bool,
    /// Serve HTTPS with this certificate chain and key (PEM files), else
    /// plain HTTP.
    pub tls: Option<(PathBuf, PathBuf)>,
}

impl Config {
    /// The defaults around `store`: port 8080 on all addresses, one job,
    /// eight waiting, no cache limit, 64 GiB images, 30 s leases.
    pub fn new(store: Store) -> Config {
        Config {
            store,
            listen: SocketAddr::from(([0, 0, 0, 0], 8080)),
            device_tokens: Vec::new(),
            admin_tokens: Vec::new(),
            max_jobs: 1,
            queue: 8,
            cache_bytes: None,
            max_image_bytes: 64 << 30,
            lease: Duration::from_secs(30),
            scratch: std::env::temp_dir(),
            gen: GenOptions::default(),
            replica: default_replica(),
            log_requests: true,
            tls: None,
        }
    }
}

/// The host name and process id: unique among live replicas.
fn default_replica() -> String {
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|h| h.trim().to_owned())
        .unwrap_or_else(|_| "host".into());
    format!("{host}-{}", std::process::id())
}

/// The state every request sees.
pub(crate) struct Service {
    store: Store,
    jobs: Arc<Jobs>,
    metrics: Arc<Metrics>,
    device_tokens: Vec<blake3::Hash>,
    admin_tokens: Vec<blake3::Hash>,
    max_image_bytes: u64,
    log_requests: bool,
    /// What makes keys differ: options and engine version.
    fingerprint: String,
    /// When this replica last served each key (for the cache's LRU).
    used: Mutex<HashMap<String, Instant>>,
    /// Told when a delta is published.
    published: Arc<tokio::sync::Notify>,
}

impl std::fmt::Debug for Service {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Service")
            .field("store", &self.store)
            .finish_non_exhaustive()
    }
}

impl Service {
    fn new(config: &Config) -> Service {
        let metrics = Arc::new(Metrics::default());
        let mut options = config.gen.delta.clone();
        options.full = false;
        let key_ids: Vec<String> = config
            .gen
            .signing_keys
            .iter()
            .map(|k| delta_core::to_hex(&k.public().id()))
            .collect();
        let fingerprint = format!(
            "engine {} format {}; {options:?}; signed by {key_ids:?}",
            env!("CARGO_PKG_VERSION"),
            delta_format::VERSION
        );
        let hash = |tokens: &[String]| {
            tokens
                .iter()
                .map(|t| blake3::hash(t.trim().as_bytes()))
                .collect()
        };
        let published = Arc::new(tokio::sync::Notify::new());
        let jobs = Jobs::new(
            config.store.clone(),
            JobConfig {
                gen: config.gen.clone(),
                max_jobs: config.max_jobs,
                queue: config.queue,
                lease_ms: config.lease.as_millis().min(i64::MAX as u128) as i64,
                scratch: config.scratch.clone(),
                replica: config.replica.clone(),
                published: Arc::clone(&published),
            },
            Arc::clone(&metrics),
        );
        Service {
            store: config.store.clone(),
            jobs,
            metrics,
            device_tokens: hash(&config.device_tokens),
            admin_tokens: hash(&config.admin_tokens),
            max_image_bytes: config.max_image_bytes,
            log_requests: config.log_requests,
            fingerprint,
            used: Mutex::new(HashMap::new()),
            published,
        }
    }

    /// The key of `pair`: what the store names its delta by.
    fn key(&self, pair: &Pair) -> String {
        let mut hasher = blake3::Hasher::new();
        hasher.update(b"delta-serve key 1\0");
        hasher.update(pair.source_name().as_bytes());
        hasher.update(b"\0");
        hasher.update(pair.to.to_string().as_bytes());
        hasher.update(b"\0");
        hasher.update(self.fingerprint.as_bytes());
        hasher.finalize().to_hex().to_string()
    }

    fn touch(&self, key: &str) {
        self.used
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .insert(key.to_owned(), Instant::now());
    }

    /// Removes the least recently used deltas until at most `limit` bytes
    /// are kept. Use is this replica's (else the ref's age).
    async fn trim(&self, limit: u64) -> Result<()> {
        let refs = self.store.refs().await?;
        let mut entries = Vec::new();
        for (key, _, modified) in refs {
            if let Some(r) = self.store.delta_ref(&key).await? {
                entries.push((key, r, modified));
            }
        }
        // Lengths come from refs in the store: summed without overflow.
        let mut total = entries
            .iter()
            .fold(0u64, |sum, (_, r, _)| sum.saturating_add(r.len));
        if total <= limit {
            return Ok(());
        }
        let now = Instant::now();
        let used = self
            .used
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone();
        let now_ms = chrono::Utc::now().timestamp_millis();
        // Milliseconds since last use: this replica's record, else the
        // ref's age.
        let idle = |key: &str, modified: i64| {
            used.get(key)
                .map_or((now_ms - modified).max(0) as u128, |at| {
                    now.duration_since(*at).as_millis()
                })
        };
        entries.sort_by_key(|(key, _, modified)| std::cmp::Reverse(idle(key, *modified)));
        let mut kept: Vec<String> = entries.iter().map(|(_, r, _)| r.digest.clone()).collect();
        for (i, (key, r, _)) in entries.iter().enumerate() {
            if total <= limit {
                break;
            }
            kept[i].clear();
            let shared = kept.contains(&r.digest);
            self.store.evict(key, &r.digest, shared).await?;
            total = total.saturating_sub(r.len);
            self.metrics
                .evictions
                .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        }
        Ok(())
    }
}

/// Serves until SIGTERM or SIGINT, then lets answers under way finish
/// (for up to 20 s); `ready` is told the bound address once requests are
/// accepted.
///
/// # Errors
/// The address cannot be bound, or the scratch folder cannot be made.
pub async fn serve(config: Config, ready: impl FnOnce(SocketAddr)) -> Result<()> {
    std::fs::create_dir_all(&config.scratch)
        .map_err(|e| Error::Serve(format!("make {}: {e}", config.scratch.display())))?;
    let service = Arc::new(Service::new(&config));
    let listener = tokio::net::TcpListener::bind(config.listen)
        .await
        .map_err(|e| Error::Serve(format!("listen on {}: {e}", config.listen)))?;
    let bound = listener
        .local_addr()
        .map_err(|e| Error::Serve(format!("listen on {}: {e}", config.listen)))?;
    if let Some(limit) = config.cache_bytes {
        let trimmer = Arc::clone(&service);
        tokio::spawn(async move {
            loop {
                if let Err(e) = trimmer.trim(limit).await {
                    eprintln!(
                        "{}",
                        serde_json::json!({"event": "trim failed", "error": e.to_string()})
                    );
                }
                let _ = tokio::time::timeout(TRIM_EVERY, trimmer.published.notified()).await;
            }
        });
    }
    let tls = match &config.tls {
        Some((cert, key)) => Some(tls_acceptor(cert, key)?),
        None => None,
    };
    let app = http::router(Arc::clone(&service));
    let connections = Arc::new(tokio::sync::Semaphore::new(MAX_CONNECTIONS));
    let graceful = hyper_util::server::graceful::GracefulShutdown::new();
    let signal = |kind| {
        tokio::signal::unix::signal(kind)
            .map_err(|e| Error::Serve(format!("cannot handle signals: {e}")))
    };
    let mut term = signal(tokio::signal::unix::SignalKind::terminate())?;
    let mut int = signal(tokio::signal::unix::SignalKind::interrupt())?;
    ready(bound);
    loop {
        let permit = tokio::select! {
            permit = Arc::clone(&connections).acquire_owned() => {
                permit.map_err(|e| Error::Serve(e.to_string()))?
            }
            _ = term.recv() => break,
            _ = int.recv() => break,
        };
        let (stream, _) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(e) => {
                    eprintln!("{}", serde_json::json!({"event": "accept failed", "error": e.to_string()}));
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            },
            _ = term.recv() => break,
            _ = int.recv() => break,
        };
        let (app, watcher, tls) = (app.clone(), graceful.watcher(), tls.clone());
        tokio::spawn(async move {
            match tls {
                None => serve_connection(stream, app, watcher).await,
                Some(tls) => {
                    let handshake = tokio::time::timeout(HANDSHAKE, tls.accept(stream)).await;
                    if let Ok(Ok(stream)) = handshake {
                        serve_connection(stream, app, watcher).await;
                    }
                }
            }
            drop(permit);
        });
    }
    // SIGTERM or SIGINT: no new connections; answers under way finish (up
    // to DRAIN), idle keep-alive connections close. Generations under way
    // are dropped: their leases expire and another replica takes them.
    drop(listener);
    eprintln!(
        "{}",
        serde_json::json!({"event": "stopping", "drain_seconds": DRAIN.as_secs()})
    );
    let _ = tokio::time::timeout(DRAIN, graceful.shutdown()).await;
    Ok(())
}

/// Answers the requests of one connection (HTTP/1.1, keep-alive), until
/// it closes or the server drains.
async fn serve_connection<I>(
    io: I,
    app: axum::Router,
    watcher: hyper_util::server::graceful::Watcher,
) where
    I: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let service = hyper_util::service::TowerToHyperService::new(app);
    let connection = hyper::server::conn::http1::Builder::new()
        .timer(hyper_util::rt::TokioTimer::new())
        .header_read_timeout(Duration::from_secs(30))
        .max_buf_size(MAX_HEAD.max(8192))
        .max_headers(MAX_HEADERS)
        .serve_connection(hyper_util::rt::TokioIo::new(io), service);
    let _ = watcher.watch(connection).await;
}

/// The TLS side of `--tls-cert` and `--tls-key`: rustls (ring), TLS 1.2
/// and 1.3.
fn tls_acceptor(
    cert: &std::path::Path,
    key: &std::path::Path,
) -> Result<tokio_rustls::TlsAcceptor> {
    use rustls_pki_types::pem::PemObject;
    use rustls_pki_types::{CertificateDer, PrivateKeyDer};
    use tokio_rustls::rustls;
    let bad = |path: &std::path::Path, e: &dyn std::fmt::Display| {
        Error::Serve(format!("{}: {e}", path.display()))
    };
    let chain = CertificateDer::pem_file_iter(cert)
        .and_then(|certs| certs.collect::<Result<Vec<_>, _>>())
        .map_err(|e| bad(cert, &e))?;
    if chain.is_empty() {
        return Err(bad(cert, &"no certificate (PEM) in the file"));
    }
    let private = PrivateKeyDer::from_pem_file(key).map_err(|e| bad(key, &e))?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| Error::Serve(format!("TLS: {e}")))?
        .with_no_client_auth()
        .with_single_cert(chain, private)
        .map_err(|e| bad(key, &e))?;
    Ok(tokio_rustls::TlsAcceptor::from(Arc::new(config)))
}

/// [`serve`] on a runtime of its own, printing the address it listens on.
///
/// # Errors
/// As [`serve`], or the runtime cannot start.
pub fn run(config: Config) -> Result<()> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .map_err(|e| Error::Serve(format!("start the runtime: {e}")))?;
    let store = config.store.name().to_owned();
    runtime.block_on(serve(config, |addr| {
        eprintln!(
            "{}",
            serde_json::json!({"event": "listening", "address": addr.to_string(), "store": store})
        );
    }))
}

/// Makes the deltas from each of `sources` to `target` into the store (as
/// requests would, with leases, so replicas and other precompute runs
/// share the work), waiting for all of them.
///
/// # Errors
/// An image missing from the store, or a failed generation.
pub fn precompute(config: Config, target: Digest, sources: &[Digest]) -> Result<Vec<String>> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .map_err(|e| Error::Serve(format!("start the runtime: {e}")))?;
    runtime.block_on(async {
        let service = Service::new(&config);
        let pairs: Vec<Pair> = sources
            .iter()
            .map(|from| Pair {
                from: Some(*from),
                to: target,
            })
            .collect();
        for image in std::iter::once(target).chain(sources.iter().copied()) {
            if service.store.image_len(&image).await?.is_none() {
                return Err(Error::Store(format!("image {image} is not in the store")));
            }
        }
        // Every pair asked at once (--max-jobs run together, the rest
        // queue), then asked again until each is in the store.
        let keys: Vec<String> = pairs.iter().map(|p| service.key(p)).collect();
        let mut waiting: Vec<usize> = (0..pairs.len()).collect();
        while !waiting.is_empty() {
            let mut still = Vec::new();
            for i in waiting {
                if service.store.delta_ref(&keys[i]).await?.is_some() {
                    continue;
                }
                if let jobs::Answer::Pending(s) = service.jobs.request(&keys[i], pairs[i]) {
                    if s.state == "failed" {
                        return Err(Error::Generate(format!(
                            "{} -> {}: {}",
                            pairs[i].source_name(),
                            pairs[i].to,
                            s.error.unwrap_or_default()
                        )));
                    }
                }
                still.push(i);
            }
            waiting = still;
            if !waiting.is_empty() {
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        }
        Ok(keys)
    })
}

/// Uploads the image file `path` into `store` under its digest, which is
/// returned with its length; the file is hashed again as it is uploaded
/// and the upload dropped if it changed meanwhile.
///
/// # Errors
/// The file cannot be read, changed during the upload, or the store
/// refuses it.
pub fn push_file(store: &Store, path: &std::path::Path) -> Result<(Digest, u64)> {
    let mut hasher = blake3::Hasher::new();
    hasher
        .update_mmap(path)
        .map_err(|e| Error::Store(format!("read {}: {e}", path.display())))?;
    let digest = Digest::of(hasher.finalize());
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| Error::Serve(format!("start the runtime: {e}")))?;
    let len = runtime.block_on(store.upload(path, &Store::image_path(&digest), digest))?;
    Ok((digest, len))
}
