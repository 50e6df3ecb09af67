//! The `delta` command: generate, apply and inspect OS image deltas.
//!
//! Exit codes: 0 success; 1 failure (one `error: ...` line on stderr);
//! 2 usage error; 3 "not now": the target is verified but an application
//! lock blocked the commit, or `check-data` found the folder over the limit.
#![forbid(unsafe_code)]

/// Prints a line on stdout; a closed stdout (e.g. `| head`) is not an error.
macro_rules! out {
    ($($arg:tt)*) => {{
        use std::io::Write as _;
        let _ = writeln!(std::io::stdout().lock(), $($arg)*);
    }};
}

mod info;
mod keys;
mod report;

use clap::{Parser, Subcommand, ValueEnum};
use delta_apply::{Applier, ApplyOptions, Progress, UrlOptions};
use delta_gen::GenOptions;
use std::io::IsTerminal;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::{Duration, Instant};

#[derive(Parser)]
#[command(
    name = "delta",
    version,
    about = "Block-level deltas for OS images: generate on the build server, apply on the device"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Generate a delta from OLD to NEW (or, with --full, a full-image payload of NEW).
    Gen(GenArgs),
    /// Rebuild the new image from OLD and DELTA (or from a full payload alone), verify it, commit it.
    Apply(Box<ApplyArgs>),
    /// Print a delta's header and what share of the new image is copied, zero, diffed and literal.
    Info {
        /// The delta: a file, `-` for stdin, or an http(s):// URL.
        delta: PathBuf,
        /// Print one JSON object.
        #[arg(long)]
        json: bool,
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

#[derive(clap::Args)]
struct Tuning {
    /// Worker threads (0: one per core; more than the cores are not started).
    #[arg(long, default_value_t = 0)]
    threads: usize,
    /// zstd level of payloads (1-22); streams of random-looking bytes get at most 3.
    #[arg(long, default_value_t = GenOptions::default().level)]
    level: i32,
    /// Bytes of new image per segment.
    #[arg(long, value_parser = parse_size, default_value_t = GenOptions::default().segment_len as u64)]
    segment_size: u64,
    /// Largest segment made by merging cheap neighbours (zero runs, copies), default no limit; at most --segment-size disables merging.
    #[arg(long, value_parser = parse_size)]
    max_merge: Option<u64>,
    /// Most bytes of old image a segment's zstd frame may reference (applier memory grows with it).
    #[arg(long, value_parser = parse_size, default_value_t = GenOptions::default().max_reference as u64)]
    max_reference: u64,
    /// Keep every segment dependent on the old image only: no COPY_NEW ops copying new content that an earlier segment carries (larger deltas; segments can then be applied in any order).
    #[arg(long)]
    independent_segments: bool,
    /// Give every segment one contiguous old-image window, as appliers without the WINDOW_LIST flag need (slower generation; by default windows leave out long runs of old bytes that copies take whole).
    #[arg(long)]
    contiguous_windows: bool,
    /// Treat gzip and zlib files inside ext4 and tar images as bytes, as version 2 appliers need (by default changed ones are rebuilt from their content: deflate segments, format version 3).
    #[arg(long)]
    no_deflate: bool,
}

impl Tuning {
    fn options(&self) -> Result<GenOptions, String> {
        Ok(GenOptions {
            threads: self.threads,
            level: self.level,
            segment_len: usize::try_from(self.segment_size).map_err(|e| e.to_string())?,
            max_reference: usize::try_from(self.max_reference).map_err(|e| e.to_string())?,
            merge_len: match self.max_merge {
                Some(len) => usize::try_from(len).map_err(|e| e.to_string())?,
                None => GenOptions::default().merge_len,
            },
            copy_new: !self.independent_segments,
            window_list: !self.contiguous_windows,
            deflate: !self.no_deflate,
            ..GenOptions::default()
        })
    }
}

#[derive(clap::Args)]
struct GenArgs {
    /// OLD NEW, or NEW alone with --full.
    #[arg(required = true, num_args = 1..=2, value_names = ["OLD", "NEW"])]
    images: Vec<PathBuf>,
    /// Output delta file.
    #[arg(short, long)]
    output: PathBuf,
    /// Write a full-image payload (applies without an old image).
    #[arg(long)]
    full: bool,
    /// Mark the update as a 1.x to 2.x migration (the applier checks /data first).
    #[arg(long)]
    migration: bool,
    /// Sign with this secret key (repeatable: one signature per key).
    #[arg(long = "sign")]
    sign: Vec<PathBuf>,
    /// Write where the delta's bytes go, file by file, as JSON (see the README).
    #[arg(long, value_name = "FILE.json")]
    report: Option<PathBuf>,
    #[command(flatten)]
    tuning: Tuning,
}

#[derive(Clone, Copy, ValueEnum)]
enum ProgressMode {
    /// A bar on a terminal, nothing otherwise.
    Auto,
    /// A progress bar.
    Bar,
    /// One JSON object per line on stdout.
    Json,
    /// No progress.
    None,
}

#[derive(clap::Args)]
struct ApplyArgs {
    /// OLD DELTA, or DELTA alone for a full-image payload. DELTA is a file, `-` for stdin, or an http(s):// URL, applied as it arrives.
    #[arg(required = true, num_args = 1..=2, value_names = ["OLD", "DELTA"])]
    inputs: Vec<PathBuf>,
    /// Failed download attempts in a row before giving up (a URL DELTA).
    #[arg(long, default_value_t = UrlOptions::default().retries)]
    retries: u32,
    /// Seconds to wait for a connection, an answer or the next bytes (a URL DELTA).
    #[arg(long, default_value_t = UrlOptions::default().timeout.as_secs_f64())]
    timeout: f64,
    /// Seconds before the first retry of a download; the wait doubles with each failure in a row, up to 30.
    #[arg(long, default_value_t = UrlOptions::default().backoff.as_secs_f64())]
    retry_delay: f64,
    /// The target: a file (written as OUT.partial, renamed when verified) or the inactive partition's block device.
    #[arg(short, long)]
    output: PathBuf,
    /// Refuse deltas that need more buffer memory than this (bytes or units).
    #[arg(long, value_parser = parse_size, default_value_t = defaults().memory_limit)]
    memory_limit: u64,
    /// Largest new image written to a file target (bytes or units); a block device target is bounded by its size.
    #[arg(long, value_parser = parse_size, default_value_t = defaults().max_image_size)]
    max_image_size: u64,
    /// Public keys to trust (a file of key lines or a folder of *.pub files): the delta must be signed by one of them.
    #[arg(long)]
    trusted_keys: Option<PathBuf>,
    /// Default keyring: when it exists, signatures are required without --trusted-keys.
    #[arg(long, default_value_os_t = defaults().keyring.expect("a default keyring"))]
    keyring: PathBuf,
    /// The BLAKE3 (hex) of the image to install: a delta for any other image is refused up front.
    #[arg(long, value_parser = parse_digest)]
    expect_new: Option<[u8; 32]>,
    /// Check the old image's digest before writing anything.
    #[arg(long)]
    verify_source: bool,
    /// Progress display.
    #[arg(long, value_enum, default_value = "auto")]
    progress: ProgressMode,
    /// Folder of the update log (delta-apply.YYYYmmdd_HHMMSS.log).
    #[arg(long, default_value_os_t = defaults().log_dir.expect("a default log folder"))]
    log_dir: PathBuf,
    /// Write no update log.
    #[arg(long)]
    no_log: bool,
    /// Folder whose */*/updates.lock files gate the commit.
    #[arg(long, default_value_os_t = defaults().lock_root)]
    lock_root: PathBuf,
    /// Seconds between lock probes.
    #[arg(long, default_value_t = defaults().lock_poll.as_secs_f64())]
    lock_poll: f64,
    /// Give up waiting for application locks after this many seconds (exit 3; re-run to commit).
    #[arg(long)]
    lock_timeout: Option<f64>,
    /// Commit even if application locks are held.
    #[arg(long)]
    override_lock: bool,
    /// Supervisor target-state config that may set SUPERVISOR_OVERRIDE_LOCK.
    #[arg(long, default_value_os_t = defaults().supervisor_config)]
    supervisor_config: PathBuf,
    /// Command run (sh -c) once locks are clear, before the commit; DELTA_TARGET names the target.
    #[arg(long)]
    commit_hook: Option<String>,
    /// Folder for the journal of block-device targets.
    #[arg(long, default_value_os_t = defaults().state_dir)]
    state_dir: PathBuf,
    /// Single-instance lock file.
    #[arg(long, default_value_os_t = defaults().instance_lock)]
    instance_lock: PathBuf,
    /// Treat the update as a 1.x to 2.x migration (check the data folder first).
    #[arg(long)]
    migration: bool,
    /// Application data folder checked for migrations.
    #[arg(long, default_value_os_t = defaults().data_dir)]
    data_dir: PathBuf,
    /// Largest tar+gzip size of the data folder for a migration.
    #[arg(long, value_parser = parse_size, default_value_t = defaults().data_limit)]
    data_limit: u64,
    /// Bytes written between journal checkpoints.
    #[arg(long, value_parser = parse_size, default_value_t = defaults().checkpoint_bytes, hide = true)]
    checkpoint_bytes: u64,
    /// Longest time between journal checkpoints, seconds.
    #[arg(long, default_value_t = defaults().checkpoint_interval.as_secs_f64(), hide = true)]
    checkpoint_seconds: f64,
}

/// The library's defaults: the one place they are defined.
fn defaults() -> ApplyOptions {
    ApplyOptions::default()
}

fn parse_digest(text: &str) -> Result<[u8; 32], String> {
    delta_core::from_hex::<32>(text.trim())
        .map(|digest| *digest)
        .ok_or_else(|| "expected 64 hex digits (a BLAKE3 digest)".into())
}

fn parse_size(text: &str) -> Result<u64, String> {
    delta_datacheck::parse_size(text).map_err(|e| e.to_string())
}

/// A failure: message for stderr and exit code.
struct Failure(String, u8);

impl<E: std::fmt::Display> From<E> for Failure {
    fn from(e: E) -> Failure {
        Failure(e.to_string(), 1)
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Gen(args) => gen(args),
        Command::Apply(args) => apply(*args),
        Command::Info { delta, json } => info::run(&delta, json).map_err(Failure::from),
        Command::CheckData { dir, limit, json } => check_data(&dir, limit, json),
        Command::Roundtrip { old, new, tuning } => roundtrip(&old, &new, &tuning),
        Command::Keygen { output } => keys::keygen(&output).map_err(Failure::from),
        Command::Sign { delta, keys } => keys::sign(&delta, &keys).map_err(Failure::from),
        Command::Verify {
            delta,
            old,
            trusted_keys,
            keyring,
        } => keys::explicit(trusted_keys.as_deref())
            .and_then(|explicit| {
                delta_apply::keys::required_keys(&explicit, Some(&keyring))
                    .map_err(|e| e.to_string())
            })
            .and_then(|trusted| keys::verify(&delta, old.as_deref(), &trusted))
            .map_err(Failure::from),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(Failure(message, code)) => {
            eprintln!("error: {message}");
            ExitCode::from(code)
        }
    }
}

/// Opens the delta an argument names: a path, `-` for stdin, or a URL
/// (downloaded with the default retries).
fn open_input(arg: &Path) -> Result<Box<dyn delta_apply::DeltaInput>, String> {
    delta_apply::input::open(arg.as_os_str(), &UrlOptions::default())
        .map_err(|e| format!("open delta {}: {e}", arg.display()))
}

fn usage(message: &str) -> ! {
    use clap::CommandFactory;
    Cli::command()
        .error(clap::error::ErrorKind::WrongNumberOfValues, message)
        .exit()
}

fn gen(args: GenArgs) -> Result<(), Failure> {
    let (old, new) = match (args.full, args.images.as_slice()) {
        (true, [new]) => (None, new),
        (false, [old, new]) => (Some(old.as_path()), new),
        (true, _) => usage("with --full, give only NEW"),
        (false, _) => usage("give OLD and NEW (or --full NEW)"),
    };
    let signing_keys = args
        .sign
        .iter()
        .map(|k| keys::read_secret(k))
        .collect::<Result<Vec<_>, _>>()
        .map_err(Failure::from)?;
    let options = GenOptions {
        full: args.full,
        migration: args.migration,
        signing_keys,
        report: true,
        ..args.tuning.options().map_err(|e| Failure(e, 2))?
    };
    let started = Instant::now();
    let summary = delta_gen::generate(old, new, &args.output, &options)?;
    print_gen_summary(&args.output, &summary, started.elapsed());
    if let Some(report) = &summary.report {
        report::print_costliest(report, 10);
        if let Some(path) = &args.report {
            report::write_json(path, report, summary.delta_len).map_err(Failure::from)?;
        }
    }
    Ok(())
}

fn percent(part: u64, whole: u64) -> f64 {
    if whole == 0 {
        0.0
    } else {
        part as f64 * 100.0 / whole as f64
    }
}

fn print_gen_summary(output: &Path, s: &delta_gen::Summary, elapsed: Duration) {
    out!(
        "wrote {}: {} bytes ({:.3}% of the new image's {} bytes, old {} bytes) in {:.2}s",
        output.display(),
        s.delta_len,
        percent(s.delta_len, s.new_len),
        s.new_len,
        s.old_len,
        elapsed.as_secs_f64()
    );
    out!(
        "segments {}; new image: copied {:.1}% ({:.1}% from earlier segments), zero {:.1}%, diffed {:.1}%, literal {:.1}%",
        s.segments,
        percent(s.copy_len, s.new_len),
        percent(s.copy_new_len, s.new_len),
        percent(s.zero_len, s.new_len),
        percent(s.diff_len, s.new_len),
        percent(s.literal_len, s.new_len)
    );
    let c = &s.content;
    if let Some(why) = c.container.strip_prefix("none: ") {
        out!("content: byte path only, the images were not mapped ({why})");
    } else if !c.container.is_empty() {
        out!(
            "content: {} ({} files); gzip/zlib files rebuilt from their content: {} bytes of new image in {} of {} changed, for {} payload bytes",
            c.container,
            c.files,
            c.deflate_bytes,
            c.deflate_segments,
            c.deflate_candidates,
            c.deflate_payload
        );
    }
}

/// `s` seconds given as option `--name`.
fn seconds(s: f64, name: &str) -> Result<Duration, Failure> {
    if s.is_finite() && s >= 0.0 {
        Ok(Duration::from_secs_f64(s))
    } else {
        Err(Failure(format!("--{name} must be a number of seconds"), 2))
    }
}

impl ApplyArgs {
    /// The library's options from the command line.
    fn options(&self) -> Result<ApplyOptions, Failure> {
        Ok(ApplyOptions {
            memory_limit: self.memory_limit,
            verify_source: self.verify_source,
            lock_root: self.lock_root.clone(),
            lock_poll: seconds(self.lock_poll, "lock-poll")?,
            lock_timeout: self
                .lock_timeout
                .map(|s| seconds(s, "lock-timeout"))
                .transpose()?,
            override_lock: self.override_lock,
            supervisor_config: self.supervisor_config.clone(),
            commit_hook: self.commit_hook.clone(),
            log_dir: (!self.no_log).then(|| self.log_dir.clone()),
            state_dir: self.state_dir.clone(),
            instance_lock: self.instance_lock.clone(),
            migration: self.migration,
            data_dir: self.data_dir.clone(),
            data_limit: self.data_limit,
            checkpoint_bytes: self.checkpoint_bytes,
            checkpoint_interval: seconds(self.checkpoint_seconds, "checkpoint-seconds")?,
            max_image_size: self.max_image_size,
            trusted_keys: keys::explicit(self.trusted_keys.as_deref()).map_err(Failure::from)?,
            keyring: Some(self.keyring.clone()),
            expect_new: self.expect_new,
        })
    }
}

fn apply(args: ApplyArgs) -> Result<(), Failure> {
    let (old, delta) = match args.inputs.as_slice() {
        [delta] => (None, delta),
        [old, delta] => (Some(old.as_path()), delta),
        _ => usage("give OLD DELTA, or DELTA alone for a full-image payload"),
    };
    let options = args.options()?;
    let mode = match args.progress {
        ProgressMode::Auto if std::io::stderr().is_terminal() => ProgressMode::Bar,
        ProgressMode::Auto => ProgressMode::None,
        mode => mode,
    };
    let started = Instant::now();
    let mut applier = Applier::new(options);
    let bar = match mode {
        ProgressMode::Bar => {
            let bar = indicatif::ProgressBar::new(0);
            bar.set_style(
                indicatif::ProgressStyle::with_template(
                    "{msg:28} [{bar:30}] {bytes}/{total_bytes} {bytes_per_sec} eta {eta}",
                )
                .expect("a valid template")
                .progress_chars("=> "),
            );
            let handle = bar.clone();
            applier = applier.on_progress(move |p: &Progress| {
                handle.set_message(p.step.label());
                handle.set_length(p.bytes_total);
                handle.set_position(p.bytes_done);
            });
            Some(bar)
        }
        ProgressMode::Json => {
            applier = applier.on_progress(|p: &Progress| {
                if let Ok(line) = serde_json::to_string(p) {
                    out!("{line}");
                }
            });
            None
        }
        _ => None,
    };
    let url = UrlOptions {
        retries: args.retries,
        timeout: seconds(args.timeout, "timeout")?,
        backoff: seconds(args.retry_delay, "retry-delay")?,
        cancel: Some(applier.cancel_handle()),
    };
    let input = delta_apply::input::open(delta.as_os_str(), &url)
        .map_err(|e| Failure(format!("open delta {}: {e}", delta.display()), 1))?;
    let result = applier.apply_from(old, input, &args.output);
    if let Some(bar) = bar {
        bar.finish_and_clear();
    }
    let outcome = result.map_err(|e| Failure(e.to_string(), e.exit_code() as u8))?;
    for warning in &outcome.warnings {
        eprintln!("warning: {warning}");
    }
    if !matches!(mode, ProgressMode::Json) {
        out!(
            "applied {}: {} bytes, blake3 {} verified, {} segments{} in {:.2}s",
            args.output.display(),
            outcome.new_len,
            outcome.new_digest,
            outcome.segments,
            if outcome.resumed_bytes > 0 {
                format!(
                    " (resumed at byte {}, {} segments done)",
                    outcome.resumed_bytes, outcome.resumed_segments
                )
            } else {
                String::new()
            },
            started.elapsed().as_secs_f64()
        );
        let w = &outcome.writes;
        if w.skipped + w.zeroed + w.compared > 0 {
            out!(
                "target: {} bytes written, {} found in place, {} zeroed by the device, {} read to compare",
                w.written,
                w.skipped,
                w.zeroed,
                w.compared
            );
        }
    }
    Ok(())
}

fn check_data(dir: &Path, limit: u64, json: bool) -> Result<(), Failure> {
    let started = Instant::now();
    let report = delta_datacheck::check_data(
        dir,
        &delta_datacheck::CheckOptions {
            limit,
            ..Default::default()
        },
    )?;
    for warning in &report.warnings {
        eprintln!("warning: {warning}");
    }
    let seconds = started.elapsed().as_secs_f64();
    if json {
        let value = serde_json::json!({
            "dir": dir.display().to_string(),
            "compressed_bytes": report.compressed_bytes,
            "tar_bytes": report.tar_bytes,
            "files": report.files,
            "limit": report.limit,
            "over_limit": report.over_limit,
            "seconds": seconds,
        });
        out!("{value}");
    } else if !report.over_limit {
        out!(
            "{}: compresses to {} bytes (tar {} bytes, {} files), under the limit of {} bytes ({seconds:.2}s)",
            dir.display(),
            report.compressed_bytes,
            report.tar_bytes,
            report.files,
            report.limit
        );
    }
    // Over the limit: said once, on stderr, as every failure is.
    if report.over_limit {
        return Err(Failure(
            format!(
                "{} compresses to at least {} bytes, over the limit of {} bytes; nothing was modified",
                dir.display(),
                report.compressed_bytes,
                report.limit
            ),
            3,
        ));
    }
    Ok(())
}

fn roundtrip(old: &Path, new: &Path, tuning: &Tuning) -> Result<(), Failure> {
    let dir = tempfile::tempdir()?;
    let delta = dir.path().join("update.delta");
    let out = dir.path().join("new.img");
    let options = tuning.options().map_err(|e| Failure(e, 2))?;
    let started = Instant::now();
    let summary = delta_gen::generate(Some(old), new, &delta, &options)?;
    let gen_time = started.elapsed();
    print_gen_summary(&delta, &summary, gen_time);

    let started = Instant::now();
    let mut applier = Applier::new(ApplyOptions {
        log_dir: None,
        instance_lock: dir.path().join("apply.lock"),
        lock_root: dir.path().join("no-locks"),
        supervisor_config: dir.path().join("no-config"),
        ..ApplyOptions::default()
    });
    let outcome = applier
        .apply(Some(old), &delta, &out)
        .map_err(|e| Failure(e.to_string(), e.exit_code() as u8))?;
    let apply_time = started.elapsed();
    // Both images hashed as streams: an image is never held in memory.
    let digest = |path: &Path| -> std::io::Result<String> {
        let mut hasher = blake3::Hasher::new();
        hasher.update_reader(std::fs::File::open(path)?)?;
        Ok(hasher.finalize().to_hex().to_string())
    };
    if digest(&out)? != digest(new)? {
        return Err(Failure("round trip produced a different image".into(), 1));
    }
    out!(
        "applied and verified: {} bytes, byte-exact with {} (blake3 {}) in {:.2}s",
        outcome.new_len,
        new.display(),
        outcome.new_digest,
        apply_time.as_secs_f64()
    );
    out!(
        "ratio: delta is {:.3}% of the new image ({:.1}x smaller); gen {:.2}s, apply {:.2}s",
        percent(summary.delta_len, summary.new_len),
        summary.new_len as f64 / summary.delta_len.max(1) as f64,
        gen_time.as_secs_f64(),
        apply_time.as_secs_f64()
    );
    Ok(())
}
