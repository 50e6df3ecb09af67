//! The command line: subcommands, their arguments and the knobs they map
//! to (clap derive).

use clap::{Parser, Subcommand, ValueEnum};
use delta_apply::{ApplyOptions, UrlOptions};
use delta_gen::{DeltaOptions, DiffOptions, EncodeOptions, GenOptions};
use std::path::PathBuf;

pub(crate) const EXIT_CODES: &str =
    "Exit codes: 0 success; 1 failure (one `error:` line on stderr); 2 usage error; \
3 not now (an application lock kept the verified target from being committed until \
--lock-timeout: re-run to commit; check-data over the limit); 4 cancelled by SIGTERM or SIGINT \
(delta apply: journal checkpointed, re-run the same command to resume).";

pub(crate) const APPLY_HELP: &str =
    "The target is overwritten: a file target is written as OUT.partial and \
renamed over OUT once verified; a block device is written in place.

SIGTERM or SIGINT stops the run at the next write or lock probe, after a journal \
checkpoint, with exit code 4 and \"cancelled\" in the update log; the same command \
resumes. A second signal ends it at once.

With --progress json the last line is {\"result\": {...}} or {\"error\": {...}} (see the README).

Exit codes: 0 success; 1 failure; 2 usage error; 3 not now (application lock held until \
--lock-timeout; the target is verified, re-run to commit); 4 cancelled (re-run to resume).";

#[derive(Parser)]
#[command(
    name = "delta",
    version,
    about = "Block-level deltas for OS images: generate on the build server, apply on the device",
    after_help = EXIT_CODES
)]
pub(crate) struct Cli {
    /// Print errors only: no summary lines or warnings.
    #[arg(short, long, global = true)]
    pub(crate) quiet: bool,
    #[command(subcommand)]
    pub(crate) command: Command,
}

#[derive(Subcommand)]
pub(crate) enum Command {
    /// Generate a delta from OLD to NEW (or, with --full, a full-image payload of NEW).
    #[command(
        override_usage = "delta gen [OPTIONS] OLD NEW -o DELTA\n       delta gen [OPTIONS] --full NEW -o DELTA"
    )]
    Gen(GenArgs),
    /// Rebuild the new image from OLD and DELTA (or from a full payload alone), verify it, commit it.
    #[command(
        override_usage = "delta apply [OPTIONS] [OLD] DELTA -o OUT",
        after_help = APPLY_HELP
    )]
    Apply(Box<ApplyArgs>),
    /// Print a delta's header and what share of the new image is copied, zero, diffed and literal.
    Info {
        /// The delta: a file, `-` for stdin, or an http(s):// URL.
        delta: PathBuf,
        /// Print one JSON object.
        #[arg(long)]
        json: bool,
    },
    /// Write the JSON of `delta gen --report` as one self-contained HTML page: totals, a treemap by folder and file, the files as a sortable table.
    Report {
        /// The report written by `delta gen --report FILE.json`.
        report: PathBuf,
        /// The page to write.
        #[arg(short, long)]
        output: PathBuf,
    },
    /// Measure `tar -cz DIR` without writing it; exit 3 when over the limit (1.x to 2.x migration preflight).
    CheckData {
        /// The application data folder.
        dir: PathBuf,
        /// Largest compressed size allowed: bytes or units (170MB, 162MiB).
        #[arg(long, default_value_t = delta_datacheck::DEFAULT_LIMIT, value_parser = parse_size)]
        limit: u64,
        /// Print one JSON object.
        #[arg(long)]
        json: bool,
    },
    /// Write a new signing key: KEY (secret, mode 0600) and KEY.pub (one line, with its key id).
    Keygen {
        /// The secret key file to create (never overwritten).
        #[arg(short, long)]
        output: PathBuf,
    },
    /// Add signatures to an existing delta, without regenerating it.
    Sign {
        /// The delta file (replaced by its signed copy).
        delta: PathBuf,
        /// A secret key file (repeatable).
        #[arg(long = "key", required = true)]
        keys: Vec<PathBuf>,
    },
    /// Check a delta's signatures and every payload digest, and with OLD the old image, writing nothing.
    Verify {
        /// The delta: a file, `-` for stdin, or an http(s):// URL.
        delta: PathBuf,
        /// The old image, to check too.
        old: Option<PathBuf>,
        /// Public keys to trust: a file of key lines or a folder of *.pub files.
        #[arg(long)]
        trusted_keys: Option<PathBuf>,
        /// Default keyring, used when it exists and --trusted-keys is not given.
        #[arg(long, default_value = delta_apply::keys::DEFAULT_KEYRING)]
        keyring: PathBuf,
    },
    /// Print a completion script for SHELL on stdout (e.g. `delta completions bash > /etc/bash_completion.d/delta`).
    Completions {
        /// The shell.
        shell: clap_complete::Shell,
    },
    /// Print the manual page (roff) on stdout: `delta man | man -l -`; with --dir, write it and the subcommands' pages it names (delta-gen.1, ...) there, e.g. /usr/local/share/man/man1.
    #[command(alias = "manpage")]
    Man {
        /// Write delta.1 and a page per subcommand into this folder instead.
        #[arg(long, value_name = "DIR")]
        dir: Option<PathBuf>,
    },
    /// Run the delta service: images by digest in a store, deltas made once, cached and served with resume.
    #[cfg(feature = "serve")]
    Serve(Box<ServeArgs>),
    /// Upload IMAGE to a delta service (URL) or straight into a store (a folder or s3://); prints its digest.
    #[cfg(feature = "serve")]
    Push {
        /// The image file.
        image: PathBuf,
        /// The service (http(s)://HOST:PORT) or a store (a folder, s3://BUCKET/PREFIX).
        to: String,
        /// A file holding an admin token (for a service URL).
        #[arg(long, value_name = "FILE")]
        token_file: Option<PathBuf>,
    },
    /// Make the deltas from each --from image to the --to image into a store, as the service would (for a release's most common sources).
    #[cfg(feature = "serve")]
    Precompute {
        #[command(flatten)]
        serve: Box<ServeArgs>,
        /// The target release image: its digest in the store.
        #[arg(long, value_name = "DIGEST")]
        to: String,
        /// A source release image's digest (repeatable).
        #[arg(long = "from", value_name = "DIGEST", required = true)]
        from: Vec<String>,
    },
    /// Generate, apply and verify OLD to NEW in a temporary folder; print sizes, ratio and times.
    Roundtrip {
        /// The old image.
        old: PathBuf,
        /// The new image.
        new: PathBuf,
        #[command(flatten)]
        tuning: Tuning,
    },
}

/// What `delta serve` and `delta precompute` share.
#[cfg(feature = "serve")]
#[derive(clap::Args)]
pub(crate) struct ServeArgs {
    /// Where images and deltas are kept: a folder (made if missing) or s3://BUCKET[/PREFIX] (AWS_* variables give credentials, region and endpoint).
    #[arg(long)]
    pub(crate) store: String,
    /// Address to listen on.
    #[arg(long, default_value = "0.0.0.0:8080")]
    pub(crate) listen: std::net::SocketAddr,
    /// A file of device tokens, one per line: they may fetch deltas. Without it anyone may.
    #[arg(long, value_name = "FILE")]
    pub(crate) device_tokens: Option<PathBuf>,
    /// A file of admin tokens, one per line: they may also push images. Without it nobody may push over HTTP.
    #[arg(long, value_name = "FILE")]
    pub(crate) admin_tokens: Option<PathBuf>,
    /// Generations running at once in this replica (each needs about old + new + 512 MiB).
    #[arg(long, default_value_t = 1)]
    pub(crate) max_jobs: usize,
    /// Generations waiting beyond --max-jobs; more requests are answered 503 with Retry-After.
    #[arg(long, default_value_t = 8)]
    pub(crate) queue: usize,
    /// Most bytes of deltas kept in the store (bytes or units); the least recently used are removed first. Default: no limit.
    #[arg(long, value_parser = parse_size)]
    pub(crate) cache_size: Option<u64>,
    /// Largest image a push may upload.
    #[arg(long, value_parser = parse_size, default_value = "64GiB")]
    pub(crate) max_image_size: u64,
    /// Seconds a generation's lease lasts unrenewed: after that another replica takes the job over.
    #[arg(long, default_value_t = 30.0)]
    pub(crate) lease: f64,
    /// Where images of a bucket store are downloaded and deltas made. Default: the temporary folder.
    #[arg(long, value_name = "DIR")]
    pub(crate) scratch: Option<PathBuf>,
    /// Sign every delta with this secret key (repeatable), so devices that trust the key accept it.
    #[arg(long = "sign", value_name = "KEY")]
    pub(crate) sign: Vec<PathBuf>,
    /// This replica's name in leases and logs. Default: host name and process id.
    #[arg(long)]
    pub(crate) replica: Option<String>,
    /// Serve HTTPS with this certificate chain (PEM); needs --tls-key. Default: plain HTTP (for a TLS-terminating proxy).
    #[arg(long, value_name = "PEM", requires = "tls_key")]
    pub(crate) tls_cert: Option<PathBuf>,
    /// The private key (PEM) of --tls-cert.
    #[arg(long, value_name = "PEM", requires = "tls_cert")]
    pub(crate) tls_key: Option<PathBuf>,
    #[command(flatten)]
    pub(crate) tuning: Tuning,
}

#[derive(clap::Args)]
pub(crate) struct Tuning {
    /// Worker threads (0: one per core; more than the cores are not started).
    #[arg(long, default_value_t = GenOptions::default().threads)]
    pub(crate) threads: usize,
    /// zstd level of payloads (1-22); streams of random-looking bytes get at most 3.
    #[arg(long, default_value_t = DeltaOptions::default().encode.level)]
    pub(crate) level: i32,
    /// Bytes of new image per segment.
    #[arg(long, value_parser = parse_size, default_value_t = DeltaOptions::default().segment_len as u64)]
    pub(crate) segment_size: u64,
    /// Largest segment made by merging cheap neighbours (zero runs, copies), default no limit; at most --segment-size disables merging.
    #[arg(long, value_parser = parse_size)]
    pub(crate) max_merge: Option<u64>,
    /// Most bytes of old image a segment's zstd frame may reference (applier memory grows with it).
    #[arg(long, value_parser = parse_size, default_value_t = DeltaOptions::default().diff.max_reference as u64)]
    pub(crate) max_reference: u64,
    /// Keep every segment dependent on the old image only: no COPY_NEW ops copying new content that an earlier segment carries (larger deltas; segments can then be applied in any order).
    #[arg(long)]
    pub(crate) independent_segments: bool,
    /// Give every segment one contiguous old-image window, as appliers without the WINDOW_LIST flag need (slower generation; by default windows leave out long runs of old bytes that copies take whole).
    #[arg(long)]
    pub(crate) contiguous_windows: bool,
    /// Treat gzip and zlib files inside ext4 and tar images as bytes, as version 2 appliers need (by default changed ones are rebuilt from their content: deflate segments, format version 3).
    #[arg(long)]
    pub(crate) no_deflate: bool,
    /// Compress every segment with zstd, as version 3 appliers need (by default segments of mostly new bytes, such as new executables, are LZMA2-compressed after a branch filter where that is smaller: LZMA segments, format version 4).
    #[arg(long)]
    pub(crate) no_lzma: bool,
    /// Treat ELF files inside ext4 and tar images as bytes, as version 5 appliers need (by default each changed executable or library is made from its old partner, found by path or by name without its version, with the partner's calls, jumps and PC-relative loads projected to where the new file has them: executable segments, format version 6).
    #[arg(long)]
    pub(crate) no_exec: bool,
}

impl Tuning {
    /// The generator's options: core's [`DeltaOptions`] with these knobs
    /// set, the rest at their defaults.
    pub(crate) fn options(&self) -> Result<GenOptions, String> {
        let size = |len: u64| usize::try_from(len).map_err(|e| e.to_string());
        let d = DeltaOptions::default();
        Ok(GenOptions {
            threads: self.threads,
            delta: DeltaOptions {
                diff: DiffOptions {
                    max_reference: size(self.max_reference)?,
                    ..d.diff
                },
                encode: EncodeOptions {
                    level: self.level,
                    ..d.encode
                },
                segment_len: size(self.segment_size)?,
                merge_len: self.max_merge.map_or(Ok(d.merge_len), size)?,
                copy_new: !self.independent_segments,
                window_list: !self.contiguous_windows,
                deflate: !self.no_deflate,
                lzma: !self.no_lzma,
                exec: !self.no_exec,
                ..d
            },
            ..GenOptions::default()
        })
    }
}

#[derive(clap::Args)]
pub(crate) struct GenArgs {
    /// The old image (with --full, the new image alone).
    #[arg(value_name = "OLD")]
    pub(crate) first: PathBuf,
    /// The new image.
    #[arg(value_name = "NEW")]
    pub(crate) new: Option<PathBuf>,
    /// Make a delta from this old image (repeatable) to the one image given (NEW), each written to the folder -o names as NAME.delta (NAME: the old image's file name without its extension); the work on NEW alone is done once for all.
    #[arg(long = "from", value_name = "OLD")]
    pub(crate) from: Vec<PathBuf>,
    /// Print every file's cost, not only the ten costliest.
    #[arg(short, long)]
    pub(crate) verbose: bool,
    /// Output delta file; `-` writes it to stdout (the summary then goes to stderr). With --from, the folder the deltas go to (created if missing).
    #[arg(short, long, value_name = "DELTA")]
    pub(crate) output: PathBuf,
    /// Replace an existing output file (without: exit 1, the file kept as it is).
    #[arg(short, long)]
    pub(crate) force: bool,
    /// Progress display: the phases (indexing, deflating, executables, planning, encoding, writing, checking) with bytes done.
    #[arg(long, value_enum, default_value = "auto")]
    pub(crate) progress: ProgressMode,
    /// Write a full-image payload (applies without an old image).
    #[arg(long)]
    pub(crate) full: bool,
    /// Mark the update as a 1.x to 2.x migration (the applier checks /data first).
    #[arg(long)]
    pub(crate) migration: bool,
    /// Sign with this secret key (repeatable: one signature per key).
    #[arg(long = "sign")]
    pub(crate) sign: Vec<PathBuf>,
    /// Write where the delta's bytes go, file by file, as JSON (see the README).
    #[arg(long, value_name = "FILE.json")]
    pub(crate) report: Option<PathBuf>,
    #[command(flatten)]
    pub(crate) tuning: Tuning,
}

#[derive(Clone, Copy, ValueEnum)]
pub(crate) enum ProgressMode {
    /// A bar on a terminal, nothing otherwise.
    Auto,
    /// A progress bar.
    Bar,
    /// One JSON object per line on stdout (stderr for `gen -o -`), ending with a result or error object.
    Json,
    /// No progress.
    None,
}

#[derive(clap::Args)]
pub(crate) struct ApplyArgs {
    /// The old image (or, alone, the delta of a full-image payload).
    #[arg(value_name = "OLD")]
    pub(crate) first: PathBuf,
    /// The delta: a file, `-` for stdin, or an http(s):// URL, applied as it arrives.
    #[arg(value_name = "DELTA")]
    pub(crate) delta: Option<PathBuf>,
    /// Print the update log after the summary.
    #[arg(short, long)]
    pub(crate) verbose: bool,
    /// Failed download attempts in a row before giving up (a URL DELTA).
    #[arg(long, default_value_t = UrlOptions::default().retries)]
    pub(crate) retries: u32,
    /// Seconds to wait for a connection, an answer or the next bytes (a URL DELTA).
    #[arg(long, default_value_t = UrlOptions::default().timeout.as_secs_f64())]
    pub(crate) timeout: f64,
    /// Seconds before the first retry of a download; the wait doubles with each failure in a row, up to 30.
    #[arg(long, default_value_t = UrlOptions::default().backoff.as_secs_f64())]
    pub(crate) retry_delay: f64,
    /// A file holding the token sent as `Authorization: Bearer` (a delta service's device token; a URL DELTA).
    #[arg(long, value_name = "FILE")]
    pub(crate) token_file: Option<PathBuf>,
    /// Longest wait, in seconds, for a server still making the delta (HTTP 202) or busy (503 with Retry-After); these waits are not failed attempts.
    #[arg(long, default_value_t = UrlOptions::default().pending_limit.as_secs_f64())]
    pub(crate) wait_for_server: f64,
    /// The target, overwritten: a file (written as OUT.partial, renamed over OUT when verified) or the inactive partition's block device.
    #[arg(short, long, value_name = "OUT")]
    pub(crate) output: PathBuf,
    /// Most memory the apply may take, in all (bytes or units): a delta needing more (its buffers plus the applier's fixed 9 MiB) is refused before anything is written.
    #[arg(long = "max-memory", alias = "memory-limit", value_parser = parse_size, default_value_t = defaults().memory_limit)]
    pub(crate) memory_limit: u64,
    /// Largest new image written to a file target (bytes or units); a block device target is bounded by its size.
    #[arg(long, value_parser = parse_size, default_value_t = defaults().max_image_size)]
    pub(crate) max_image_size: u64,
    /// Public keys to trust (a file of key lines or a folder of *.pub files): the delta must be signed by one of them.
    #[arg(long)]
    pub(crate) trusted_keys: Option<PathBuf>,
    /// Default keyring: when it exists, signatures are required without --trusted-keys.
    #[arg(long, default_value_os_t = defaults().keyring.expect("a default keyring"))]
    pub(crate) keyring: PathBuf,
    /// The BLAKE3 (hex) of the image to install: a delta for any other image is refused up front.
    #[arg(long, value_parser = parse_digest)]
    pub(crate) expect_new: Option<[u8; 32]>,
    /// Check the old image's digest before writing anything.
    #[arg(long)]
    pub(crate) verify_source: bool,
    /// On a block device, read and compare zero runs like data instead of leaving them to the device's own zeroing (discard on a loop device, write-zeroes), for devices whose zeroing is not to be trusted.
    #[arg(long)]
    pub(crate) compare_zero_runs: bool,
    /// Helper threads decoding segments ahead of the writer (0: one per core, at most 4; 1: none, the old applier; at most 64); each helper may add 20 MiB to --max-memory.
    #[arg(long, default_value_t = defaults().threads)]
    pub(crate) threads: usize,
    /// Progress display.
    #[arg(long, value_enum, default_value = "auto")]
    pub(crate) progress: ProgressMode,
    /// Folder of the update log (delta-apply.YYYYmmdd_HHMMSS.PID.log, one per run).
    #[arg(long, default_value_os_t = defaults().log_dir.expect("a default log folder"))]
    pub(crate) log_dir: PathBuf,
    /// Update logs kept in the log folder, this run's counted: older ones are removed as a run starts.
    #[arg(long, default_value_t = defaults().keep_logs)]
    pub(crate) keep_logs: usize,
    /// Write no update log.
    #[arg(long)]
    pub(crate) no_log: bool,
    /// Folder whose */*/updates.lock files gate the commit.
    #[arg(long, default_value_os_t = defaults().lock_root)]
    pub(crate) lock_root: PathBuf,
    /// Seconds between lock probes.
    #[arg(long, default_value_t = defaults().lock_poll.as_secs_f64())]
    pub(crate) lock_poll: f64,
    /// Give up waiting for application locks after this many seconds (exit 3; re-run to commit).
    #[arg(long)]
    pub(crate) lock_timeout: Option<f64>,
    /// Commit even if application locks are held.
    #[arg(long)]
    pub(crate) override_lock: bool,
    /// Supervisor target-state config that may set SUPERVISOR_OVERRIDE_LOCK.
    #[arg(long, default_value_os_t = defaults().supervisor_config)]
    pub(crate) supervisor_config: PathBuf,
    /// Command run (sh -c) once locks are clear, before the commit; DELTA_TARGET names the target.
    #[arg(long)]
    pub(crate) commit_hook: Option<String>,
    /// Folder for the journal of block-device targets.
    #[arg(long, default_value_os_t = defaults().state_dir)]
    pub(crate) state_dir: PathBuf,
    /// Single-instance lock file.
    #[arg(long, default_value_os_t = defaults().instance_lock)]
    pub(crate) instance_lock: PathBuf,
    /// Treat the update as a 1.x to 2.x migration (check the data folder first).
    #[arg(long)]
    pub(crate) migration: bool,
    /// Application data folder checked for migrations.
    #[arg(long, default_value_os_t = defaults().data_dir)]
    pub(crate) data_dir: PathBuf,
    /// Largest tar+gzip size of the data folder for a migration.
    #[arg(long, value_parser = parse_size, default_value_t = defaults().data_limit)]
    pub(crate) data_limit: u64,
    /// Bytes written between journal checkpoints.
    #[arg(long, value_parser = parse_size, default_value_t = defaults().checkpoint_bytes, hide = true)]
    pub(crate) checkpoint_bytes: u64,
    /// Longest time between journal checkpoints, seconds.
    #[arg(long, default_value_t = defaults().checkpoint_interval.as_secs_f64(), hide = true)]
    pub(crate) checkpoint_seconds: f64,
}

/// The library's defaults: the one place they are defined.
pub(crate) fn defaults() -> ApplyOptions {
    ApplyOptions::default()
}

pub(crate) fn parse_digest(text: &str) -> Result<[u8; 32], String> {
    delta_core::from_hex::<32>(text.trim())
        .map(|digest| *digest)
        .ok_or_else(|| "expected 64 hex digits (a BLAKE3 digest)".into())
}

pub(crate) fn parse_size(text: &str) -> Result<u64, String> {
    delta_datacheck::parse_size(text).map_err(|e| e.to_string())
}
