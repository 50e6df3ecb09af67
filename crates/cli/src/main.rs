//! The `delta` command: generate, apply and inspect OS image deltas.
//!
//! Exit codes: 0 success; 1 failure (one `error: ...` line on stderr);
//! 2 usage error (with the subcommand's usage); 3 "not now": the target is
//! verified but an application lock blocked the commit, or `check-data`
//! found the folder over the limit; 4 cancelled: `delta apply` got SIGTERM
//! or SIGINT, stored a journal checkpoint and stopped, and the same command
//! resumes (a second signal ends it at once, also with 4: the last periodic
//! checkpoint still lets a re-run resume).
//!
//! With `--progress json`, `delta apply` and `delta gen` print one JSON
//! object per progress event and end with one `{"result": {...}}` or
//! `{"error": {...}}` object, so that a caller never parses stderr.
//! `-q` prints errors only, `-v` more detail.
#![forbid(unsafe_code)]

/// Prints a line on stdout; a closed stdout (e.g. `| head`) is not an error.
macro_rules! out {
    ($($arg:tt)*) => {{
        use std::io::Write as _;
        let _ = writeln!(std::io::stdout().lock(), $($arg)*);
    }};
}

/// Prints a summary line: on stdout (stderr when stdout carries a delta),
/// not at all with `-q`.
macro_rules! say {
    ($($arg:tt)*) => {
        $crate::summary(format_args!($($arg)*))
    };
}

mod html;
mod info;
mod keys;
mod report;

use clap::{CommandFactory, Parser, Subcommand, ValueEnum};
use delta_apply::{Applier, ApplyOptions, Progress, UrlOptions};
use delta_gen::{DeltaOptions, DiffOptions, EncodeOptions, GenOptions, GenProgress};
use std::io::{IsTerminal, Write};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, AtomicU8, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// `-q`, neither, `-v`.
static VERBOSITY: AtomicU8 = AtomicU8::new(NORMAL);
const QUIET: u8 = 0;
const NORMAL: u8 = 1;
const VERBOSE: u8 = 2;
/// Summary lines go to stderr: stdout carries the delta (`gen -o -`).
static SUMMARY_TO_STDERR: AtomicBool = AtomicBool::new(false);
/// `--progress json`: stdout carries JSON lines only, so summary text goes
/// to stderr.
static JSON_ON_STDOUT: AtomicBool = AtomicBool::new(false);

/// See [`say!`].
fn summary(line: std::fmt::Arguments<'_>) {
    if VERBOSITY.load(Ordering::Relaxed) == QUIET {
        return;
    }
    if SUMMARY_TO_STDERR.load(Ordering::Relaxed) || JSON_ON_STDOUT.load(Ordering::Relaxed) {
        let _ = writeln!(std::io::stderr().lock(), "{line}");
    } else {
        let _ = writeln!(std::io::stdout().lock(), "{line}");
    }
}

fn verbose() -> bool {
    VERBOSITY.load(Ordering::Relaxed) == VERBOSE
}

/// A warning on stderr, unless `-q`.
fn warn(message: &str) {
    if VERBOSITY.load(Ordering::Relaxed) != QUIET {
        eprintln!("warning: {message}");
    }
}

/// One JSON object on a line of stdout (stderr when stdout carries a
/// delta); a closed stream is not an error.
fn json_line(value: &serde_json::Value) {
    let line = value.to_string();
    if SUMMARY_TO_STDERR.load(Ordering::Relaxed) {
        let _ = writeln!(std::io::stderr().lock(), "{line}");
    } else {
        let _ = writeln!(std::io::stdout().lock(), "{line}");
    }
}

const EXIT_CODES: &str =
    "Exit codes: 0 success; 1 failure (one `error:` line on stderr); 2 usage error; \
3 not now (an application lock kept the verified target from being committed until \
--lock-timeout: re-run to commit; check-data over the limit); 4 cancelled by SIGTERM or SIGINT \
(delta apply: journal checkpointed, re-run the same command to resume).";

const APPLY_HELP: &str = "The target is overwritten: a file target is written as OUT.partial and \
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
struct Cli {
    /// Print errors only: no summary lines or warnings.
    #[arg(short, long, global = true)]
    quiet: bool,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
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
    #[arg(long, default_value_t = GenOptions::default().threads)]
    threads: usize,
    /// zstd level of payloads (1-22); streams of random-looking bytes get at most 3.
    #[arg(long, default_value_t = DeltaOptions::default().encode.level)]
    level: i32,
    /// Bytes of new image per segment.
    #[arg(long, value_parser = parse_size, default_value_t = DeltaOptions::default().segment_len as u64)]
    segment_size: u64,
    /// Largest segment made by merging cheap neighbours (zero runs, copies), default no limit; at most --segment-size disables merging.
    #[arg(long, value_parser = parse_size)]
    max_merge: Option<u64>,
    /// Most bytes of old image a segment's zstd frame may reference (applier memory grows with it).
    #[arg(long, value_parser = parse_size, default_value_t = DeltaOptions::default().diff.max_reference as u64)]
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
    /// Compress every segment with zstd, as version 3 appliers need (by default segments of mostly new bytes, such as new executables, are LZMA2-compressed after a branch filter where that is smaller: LZMA segments, format version 4).
    #[arg(long)]
    no_lzma: bool,
}

impl Tuning {
    /// The generator's options: core's [`DeltaOptions`] with these knobs
    /// set, the rest at their defaults.
    fn options(&self) -> Result<GenOptions, String> {
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
                ..d
            },
            ..GenOptions::default()
        })
    }
}

#[derive(clap::Args)]
struct GenArgs {
    /// The old image (with --full, the new image alone).
    #[arg(value_name = "OLD")]
    first: PathBuf,
    /// The new image.
    #[arg(value_name = "NEW")]
    new: Option<PathBuf>,
    /// Print every file's cost, not only the ten costliest.
    #[arg(short, long)]
    verbose: bool,
    /// Output delta file; `-` writes it to stdout (the summary then goes to stderr).
    #[arg(short, long, value_name = "DELTA")]
    output: PathBuf,
    /// Replace an existing output file (without: exit 1, the file kept as it is).
    #[arg(short, long)]
    force: bool,
    /// Progress display: the phases (indexing, deflating, planning, encoding, writing, checking) with bytes done.
    #[arg(long, value_enum, default_value = "auto")]
    progress: ProgressMode,
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
    /// One JSON object per line on stdout (stderr for `gen -o -`), ending with a result or error object.
    Json,
    /// No progress.
    None,
}

#[derive(clap::Args)]
struct ApplyArgs {
    /// The old image (or, alone, the delta of a full-image payload).
    #[arg(value_name = "OLD")]
    first: PathBuf,
    /// The delta: a file, `-` for stdin, or an http(s):// URL, applied as it arrives.
    #[arg(value_name = "DELTA")]
    delta: Option<PathBuf>,
    /// Print the update log after the summary.
    #[arg(short, long)]
    verbose: bool,
    /// Failed download attempts in a row before giving up (a URL DELTA).
    #[arg(long, default_value_t = UrlOptions::default().retries)]
    retries: u32,
    /// Seconds to wait for a connection, an answer or the next bytes (a URL DELTA).
    #[arg(long, default_value_t = UrlOptions::default().timeout.as_secs_f64())]
    timeout: f64,
    /// Seconds before the first retry of a download; the wait doubles with each failure in a row, up to 30.
    #[arg(long, default_value_t = UrlOptions::default().backoff.as_secs_f64())]
    retry_delay: f64,
    /// The target, overwritten: a file (written as OUT.partial, renamed over OUT when verified) or the inactive partition's block device.
    #[arg(short, long, value_name = "OUT")]
    output: PathBuf,
    /// Most memory the apply may take, in all (bytes or units): a delta needing more (its buffers plus the applier's fixed 9 MiB) is refused before anything is written.
    #[arg(long = "max-memory", alias = "memory-limit", value_parser = parse_size, default_value_t = defaults().memory_limit)]
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
    /// On a block device, read and compare zero runs like data instead of leaving them to the device's own zeroing (discard on a loop device, write-zeroes), for devices whose zeroing is not to be trusted.
    #[arg(long)]
    compare_zero_runs: bool,
    /// Progress display.
    #[arg(long, value_enum, default_value = "auto")]
    progress: ProgressMode,
    /// Folder of the update log (delta-apply.YYYYmmdd_HHMMSS.PID.log, one per run).
    #[arg(long, default_value_os_t = defaults().log_dir.expect("a default log folder"))]
    log_dir: PathBuf,
    /// Update logs kept in the log folder, this run's counted: older ones are removed as a run starts.
    #[arg(long, default_value_t = defaults().keep_logs)]
    keep_logs: usize,
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

/// A failure: message for stderr, exit code, and for JSON output the
/// causes and the update log.
struct Failure {
    message: String,
    code: u8,
    /// Each `source()` of the error, outermost first.
    causes: Vec<String>,
    /// The update log of a failed apply.
    log: Option<PathBuf>,
}

impl Failure {
    fn new(message: impl Into<String>, code: u8) -> Failure {
        Failure {
            message: message.into(),
            code,
            causes: Vec::new(),
            log: None,
        }
    }

    /// The error with its cause chain (every cause, outermost first, as
    /// [`delta_apply::causes`] walks it).
    fn chain(e: &(dyn std::error::Error + 'static), code: u8) -> Failure {
        Failure {
            causes: delta_apply::causes(e).map(ToString::to_string).collect(),
            ..Failure::new(e.to_string(), code)
        }
    }

    /// `{"error": {...}}`.
    fn to_json(&self) -> serde_json::Value {
        serde_json::json!({"error": {
            "code": self.code,
            "message": self.message,
            "causes": self.causes,
            "log": self.log.as_ref().map(|p| p.display().to_string()),
        }})
    }
}

impl<E: std::fmt::Display> From<E> for Failure {
    fn from(e: E) -> Failure {
        Failure::new(e.to_string(), 1)
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    // -v belongs to the commands that have more to say.
    let verbose = match &cli.command {
        Command::Gen(args) => args.verbose,
        Command::Apply(args) => args.verbose,
        _ => false,
    };
    let verbosity = match (cli.quiet, verbose) {
        (true, true) => {
            let mut cli = Cli::command();
            cli.error(
                clap::error::ErrorKind::ArgumentConflict,
                "--quiet and --verbose cannot be used together",
            )
            .exit()
        }
        (true, false) => QUIET,
        (false, true) => VERBOSE,
        (false, false) => NORMAL,
    };
    VERBOSITY.store(verbosity, Ordering::Relaxed);
    let mut json = false;
    let result = match cli.command {
        Command::Gen(args) => {
            json = matches!(args.progress, ProgressMode::Json);
            JSON_ON_STDOUT.store(json, Ordering::Relaxed);
            gen(args)
        }
        Command::Apply(args) => {
            json = matches!(args.progress, ProgressMode::Json);
            JSON_ON_STDOUT.store(json, Ordering::Relaxed);
            delta_apply::bound_allocator();
            apply(*args)
        }
        Command::Info { delta, json } => info::run(&delta, json),
        Command::Report { report, output } => html::run(&report, &output),
        Command::CheckData { dir, limit, json } => check_data(&dir, limit, json),
        Command::Roundtrip { old, new, tuning } => roundtrip(&old, &new, &tuning),
        Command::Keygen { output } => keys::keygen(&output),
        Command::Sign { delta, keys } => keys::sign(&delta, &keys),
        Command::Verify {
            delta,
            old,
            trusted_keys,
            keyring,
        } => keys::explicit(trusted_keys.as_deref())
            .and_then(|explicit| {
                delta_apply::keys::required_keys(&explicit, Some(&keyring))
                    .map_err(|e| Failure::chain(&e, 1))
            })
            .and_then(|trusted| keys::verify(&delta, old.as_deref(), &trusted)),
        Command::Completions { shell } => {
            clap_complete::generate(shell, &mut Cli::command(), "delta", &mut std::io::stdout());
            Ok(())
        }
        // Without `help`, as `generate_to` writes them: the page names
        // only subcommands that have a page.
        Command::Man { dir: None } => {
            clap_mangen::Man::new(Cli::command().disable_help_subcommand(true))
                .render(&mut std::io::stdout())
                .map_err(Failure::from)
        }
        Command::Man { dir: Some(dir) } => clap_mangen::generate_to(Cli::command(), &dir)
            .map_err(|e| Failure::new(format!("write manual pages in {}: {e}", dir.display()), 1)),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(failure) => {
            if json {
                json_line(&failure.to_json());
            }
            eprintln!("error: {}", failure.message);
            ExitCode::from(failure.code)
        }
    }
}

/// Opens the delta an argument names: a path, `-` for stdin, or a URL
/// (downloaded with the default retries).
fn open_input(arg: &Path) -> Result<Box<dyn delta_apply::DeltaInput>, String> {
    delta_apply::input::open(arg.as_os_str(), &UrlOptions::default())
        .map_err(|e| format!("open delta {}: {e}", arg.display()))
}

/// Exits with code 2, `message` and the usage of `subcommand`.
fn usage(subcommand: &str, message: &str) -> ! {
    let mut cli = Cli::command();
    cli.build();
    let command = cli
        .find_subcommand_mut(subcommand)
        .expect("a subcommand of delta");
    command
        .error(clap::error::ErrorKind::WrongNumberOfValues, message)
        .exit()
}

/// Where `delta gen` writes the delta.
enum Output<'a> {
    File(&'a Path),
    Stdout,
}

fn gen(args: GenArgs) -> Result<(), Failure> {
    let (old, new) = match (args.full, &args.new) {
        (true, None) => (None, &args.first),
        (false, Some(new)) => (Some(args.first.as_path()), new),
        (true, Some(_)) => usage("gen", "with --full, give only NEW"),
        (false, None) => usage("gen", "give OLD and NEW (or --full NEW)"),
    };
    // `-o /dev/stdout` is stdout, as `-`: that name is a symlink, which
    // the generator never replaces.
    let to_stdout = ["-", "/dev/stdout", "/proc/self/fd/1", "/dev/fd/1"]
        .iter()
        .any(|name| args.output.as_os_str() == *name);
    let output = if to_stdout {
        SUMMARY_TO_STDERR.store(true, Ordering::Relaxed);
        if std::io::stdout().is_terminal() {
            return Err(Failure::new(
                "refusing to write a delta to a terminal; redirect stdout or name a file with -o",
                1,
            ));
        }
        Output::Stdout
    } else {
        Output::File(&args.output)
    };
    let signing_keys = args
        .sign
        .iter()
        .map(|k| keys::read_secret(k))
        .collect::<Result<Vec<_>, _>>()?;
    let mode = progress_mode(args.progress);
    let (progress, bar) = gen_progress(mode);
    let mut options = GenOptions {
        signing_keys,
        replace: args.force,
        progress,
        ..args.tuning.options().map_err(|e| Failure::new(e, 2))?
    };
    options.delta.full = args.full;
    options.delta.migration = args.migration;
    options.delta.report = true;
    let started = Instant::now();
    let generated = match output {
        Output::File(path) => delta_gen::generate(old, new, path, &options),
        Output::Stdout => {
            let mut stdout = std::io::BufWriter::with_capacity(1 << 20, std::io::stdout().lock());
            delta_gen::generate_to(old, new, &mut stdout, &options).and_then(|summary| {
                stdout
                    .flush()
                    .map_err(|source| delta_gen::Error::Output { source })?;
                Ok(summary)
            })
        }
    };
    if let Some(bar) = bar {
        bar.finish_and_clear();
    }
    let summary = generated.map_err(|e| Failure::chain(&e, 1))?;
    let elapsed = started.elapsed();
    let name = match output {
        Output::File(path) => path.display().to_string(),
        Output::Stdout => "-".into(),
    };
    print_gen_summary(&name, &summary, elapsed);
    if let Some(report) = &summary.report {
        report::print_costliest(report, if verbose() { usize::MAX } else { 10 });
        if let Some(path) = &args.report {
            report::write_json(path, report, summary.delta_len)?;
        }
    }
    if matches!(mode, ProgressMode::Json) {
        json_line(&serde_json::json!({"result": {
            "delta": name,
            "delta_bytes": summary.delta_len,
            "old_len": summary.old_len,
            "new_len": summary.new_len,
            "segments": summary.segments,
            "seconds": elapsed.as_secs_f64(),
        }}));
    }
    Ok(())
}

/// `auto` resolved: a bar when stderr is a terminal, else nothing.
fn progress_mode(mode: ProgressMode) -> ProgressMode {
    match mode {
        ProgressMode::Auto if std::io::stderr().is_terminal() => ProgressMode::Bar,
        ProgressMode::Auto => ProgressMode::None,
        mode => mode,
    }
}

fn progress_bar() -> indicatif::ProgressBar {
    let bar = indicatif::ProgressBar::new(0);
    bar.set_style(bar_style(true));
    bar
}

/// A bar with bytes done of a total, or (`counting` false: a step with
/// no bytes to count, such as a lock wait) the step and the time spent.
fn bar_style(counting: bool) -> indicatif::ProgressStyle {
    let template = if counting {
        "{msg:28} [{bar:30}] {bytes}/{total_bytes} {bytes_per_sec} eta {eta}"
    } else {
        "{msg} ({elapsed})"
    };
    indicatif::ProgressStyle::with_template(template)
        .expect("a valid template")
        .progress_chars("=> ")
}

/// Shows an apply's progress on the bar: the step, what it waits on, the
/// bytes of the delta received while it is still arriving, and the bytes
/// done of the step's total (never past it; no bar for a step without
/// bytes).
fn show_apply_progress(bar: &indicatif::ProgressBar, counting: &mut bool, p: &Progress) {
    use indicatif::HumanBytes;
    let mut message = p.step.label().to_string();
    if let Some(detail) = &p.message {
        message = format!("{message}: {detail}");
    }
    if let (Some(received), Some(len)) = (p.delta_received, p.delta_len) {
        if received < len {
            message = format!(
                "{message}, received {}/{}",
                HumanBytes(received),
                HumanBytes(len)
            );
        }
    }
    let counts = p.bytes_total > 0;
    if counts != *counting {
        bar.set_style(bar_style(counts));
        *counting = counts;
    }
    bar.set_message(message);
    bar.set_length(p.bytes_total);
    bar.set_position(p.bytes_done.min(p.bytes_total));
}

/// The generator's progress callback for `mode`, and the bar it drives.
fn gen_progress(
    mode: ProgressMode,
) -> (
    Option<delta_gen::GenProgressFn>,
    Option<indicatif::ProgressBar>,
) {
    match mode {
        ProgressMode::Bar => {
            let bar = progress_bar();
            let handle = bar.clone();
            let state = Mutex::new((true, None));
            let callback = move |p: &GenProgress| {
                let counts = p.bytes_total > 0;
                let mut state = state
                    .lock()
                    .unwrap_or_else(std::sync::PoisonError::into_inner);
                let (was, phase) = &mut *state;
                if *phase != Some(p.phase) {
                    // A new phase: its rate and eta start afresh (the last
                    // phase's would say 'eta 2m' of a phase taking a second).
                    handle.reset();
                    *phase = Some(p.phase);
                }
                if counts != *was {
                    handle.set_style(bar_style(counts));
                    *was = counts;
                }
                handle.set_message(p.phase.name());
                handle.set_length(p.bytes_total);
                handle.set_position(p.bytes_done.min(p.bytes_total));
            };
            (Some(Arc::new(callback)), Some(bar))
        }
        ProgressMode::Json => {
            // Workers report at once: a line when a phase starts ("start")
            // and one when all its bytes are done ("end"), else at most
            // every 100 ms ("progress"), never going backwards.
            let last = Mutex::new((None, 0u64, Instant::now(), false));
            let callback = move |p: &GenProgress| {
                let mut last = last
                    .lock()
                    .unwrap_or_else(std::sync::PoisonError::into_inner);
                let (phase, done, at, ended) = &mut *last;
                let all = p.bytes_done == p.bytes_total;
                let event = if *phase != Some(p.phase) {
                    (*phase, *ended) = (Some(p.phase), false);
                    "start"
                } else if *ended {
                    return;
                } else if all {
                    *ended = true;
                    "end"
                } else if p.bytes_done <= *done || at.elapsed() < Duration::from_millis(100) {
                    return;
                } else {
                    "progress"
                };
                (*done, *at) = (p.bytes_done, Instant::now());
                json_line(&serde_json::json!({
                    "phase": p.phase.name(),
                    "event": event,
                    "bytes_done": p.bytes_done,
                    "bytes_total": p.bytes_total,
                }));
            };
            (Some(Arc::new(callback)), None)
        }
        _ => (None, None),
    }
}

fn percent(part: u64, whole: u64) -> f64 {
    if whole == 0 {
        0.0
    } else {
        part as f64 * 100.0 / whole as f64
    }
}

/// A duration as people read it ("850 ms", "2.0 s", "1 min 3 s").
fn took(d: Duration) -> String {
    delta_apply::log::duration(d)
}

fn print_gen_summary(output: &str, s: &delta_gen::Summary, elapsed: Duration) {
    say!(
        "wrote {output}: {} bytes ({:.3}% of the new image's {} bytes, old {} bytes) in {}",
        s.delta_len,
        percent(s.delta_len, s.new_len),
        s.new_len,
        s.old_len,
        took(elapsed)
    );
    say!(
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
        say!("content: byte path only, the images were not mapped ({why})");
    } else if !c.container.is_empty() {
        say!(
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
        Err(Failure::new(
            format!("--{name} must be a number of seconds"),
            2,
        ))
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
            keep_logs: self.keep_logs,
            state_dir: self.state_dir.clone(),
            instance_lock: self.instance_lock.clone(),
            migration: self.migration,
            data_dir: self.data_dir.clone(),
            data_limit: self.data_limit,
            checkpoint_bytes: self.checkpoint_bytes,
            checkpoint_interval: seconds(self.checkpoint_seconds, "checkpoint-seconds")?,
            max_image_size: self.max_image_size,
            trusted_keys: keys::explicit(self.trusted_keys.as_deref())?,
            keyring: Some(self.keyring.clone()),
            expect_new: self.expect_new,
            compare_zero_runs: self.compare_zero_runs,
        })
    }
}

fn apply(args: ApplyArgs) -> Result<(), Failure> {
    let (old, delta) = match &args.delta {
        None => (None, &args.first),
        Some(delta) => (Some(args.first.as_path()), delta),
    };
    let options = args.options()?;
    let mode = progress_mode(args.progress);
    let started = Instant::now();
    let mut applier = Applier::new(options);
    // The first SIGTERM or SIGINT cancels (checkpoint, exit 4); a second
    // one, while the first is being handled, ends the process at once.
    let cancel = applier.cancel_handle();
    for signal in [signal_hook::consts::SIGTERM, signal_hook::consts::SIGINT] {
        signal_hook::flag::register_conditional_shutdown(
            signal,
            delta_apply::EXIT_CANCELLED,
            Arc::clone(&cancel),
        )
        .and_then(|_| signal_hook::flag::register(signal, Arc::clone(&cancel)))
        .map_err(|e| Failure::new(format!("cannot handle signal {signal}: {e}"), 1))?;
    }
    let bar = match mode {
        ProgressMode::Bar => {
            let bar = progress_bar();
            let handle = bar.clone();
            let mut counting = true;
            applier = applier.on_progress(move |p: &Progress| {
                show_apply_progress(&handle, &mut counting, p);
            });
            Some(bar)
        }
        ProgressMode::Json => {
            applier = applier.on_progress(|p: &Progress| {
                if let Ok(line) = serde_json::to_value(p) {
                    json_line(&line);
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
        .map_err(|e| Failure::new(format!("open delta {}: {e}", delta.display()), 1))?;
    let result = applier.apply_from(old, input, &args.output);
    if let Some(bar) = bar {
        bar.finish_and_clear();
    }
    if verbose() {
        if let Some(log) = applier.log_path() {
            print_log(log);
        }
    }
    let outcome = result.map_err(|e| Failure {
        log: applier.log_path().map(Path::to_owned),
        ..Failure::chain(&e, u8::try_from(e.exit_code()).unwrap_or(1))
    })?;
    let elapsed = started.elapsed();
    for warning in &outcome.warnings {
        warn(warning);
    }
    let resumed = outcome.resumed_bytes > 0 || outcome.resumed_segments > 0;
    if matches!(mode, ProgressMode::Json) {
        json_line(&serde_json::json!({"result": {
            "target": args.output.display().to_string(),
            "digest": outcome.new_digest,
            "new_len": outcome.new_len,
            "segments": outcome.segments,
            "resumed": resumed,
            "resumed_bytes": outcome.resumed_bytes,
            "resumed_segments": outcome.resumed_segments,
            "warnings": outcome.warnings,
            "log": outcome.log_path.as_ref().map(|p| p.display().to_string()),
            "seconds": elapsed.as_secs_f64(),
            "bytes_written": outcome.writes.written,
            "bytes_in_place": outcome.writes.skipped,
            "bytes_zeroed_by_device": outcome.writes.zeroed,
            "bytes_compared": outcome.writes.compared,
            "peak_memory": outcome.peak_memory,
        }}));
    } else {
        say!(
            "applied {}: {} bytes, blake3 {} verified, {} segments{} in {}",
            args.output.display(),
            outcome.new_len,
            outcome.new_digest,
            outcome.segments,
            if resumed {
                format!(
                    " (resumed at byte {}, {} segments done)",
                    outcome.resumed_bytes, outcome.resumed_segments
                )
            } else {
                String::new()
            },
            took(elapsed)
        );
        let w = &outcome.writes;
        if w.skipped + w.zeroed + w.compared > 0 {
            say!(
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

/// `-v`: the update log's lines on stderr.
fn print_log(path: &Path) {
    match std::fs::read_to_string(path) {
        Ok(text) => {
            eprintln!("update log {}:", path.display());
            for line in text.lines() {
                eprintln!("  {line}");
            }
        }
        Err(e) => warn(&format!(
            "cannot read the update log {}: {e}",
            path.display()
        )),
    }
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
        warn(warning);
    }
    let elapsed = started.elapsed();
    let seconds = elapsed.as_secs_f64();
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
        say!(
            "{}: compresses to {} bytes (tar {} bytes, {} files), under the limit of {} bytes ({})",
            dir.display(),
            report.compressed_bytes,
            report.tar_bytes,
            report.files,
            report.limit,
            took(elapsed)
        );
    }
    // Over the limit: said once, on stderr, as every failure is.
    if report.over_limit {
        return Err(Failure::new(
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
    let options = tuning.options().map_err(|e| Failure::new(e, 2))?;
    let started = Instant::now();
    let summary = delta_gen::generate(Some(old), new, &delta, &options)?;
    let gen_time = started.elapsed();
    print_gen_summary(&delta.display().to_string(), &summary, gen_time);

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
        .map_err(|e| Failure::chain(&e, u8::try_from(e.exit_code()).unwrap_or(1)))?;
    let apply_time = started.elapsed();
    // Both images hashed as streams: an image is never held in memory.
    let digest = |path: &Path| -> std::io::Result<String> {
        let mut hasher = blake3::Hasher::new();
        hasher.update_reader(std::fs::File::open(path)?)?;
        Ok(hasher.finalize().to_hex().to_string())
    };
    if digest(&out)? != digest(new)? {
        return Err(Failure::new("round trip produced a different image", 1));
    }
    say!(
        "applied and verified: {} bytes, byte-exact with {} (blake3 {}) in {}",
        outcome.new_len,
        new.display(),
        outcome.new_digest,
        took(apply_time)
    );
    say!(
        "ratio: delta is {:.3}% of the new image ({:.1}x smaller); gen {}, apply {}",
        percent(summary.delta_len, summary.new_len),
        summary.new_len as f64 / summary.delta_len.max(1) as f64,
        took(gen_time),
        took(apply_time)
    );
    Ok(())
}
