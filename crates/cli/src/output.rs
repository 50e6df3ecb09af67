//! What the command prints: summary lines, warnings, JSON lines, progress
//! bars, and how much it says (`-q`, `-v`).

use crate::args::ProgressMode;
use delta_apply::Progress;
use std::io::{IsTerminal, Write};
use std::sync::atomic::{AtomicBool, AtomicU8, Ordering};
use std::time::Duration;

/// `-q`, neither, `-v`.
pub(crate) static VERBOSITY: AtomicU8 = AtomicU8::new(NORMAL);

pub(crate) const QUIET: u8 = 0;

pub(crate) const NORMAL: u8 = 1;

pub(crate) const VERBOSE: u8 = 2;

/// Summary lines go to stderr: stdout carries the delta (`gen -o -`).
pub(crate) static SUMMARY_TO_STDERR: AtomicBool = AtomicBool::new(false);

/// `--progress json`: stdout carries JSON lines only, so summary text goes
/// to stderr.
pub(crate) static JSON_ON_STDOUT: AtomicBool = AtomicBool::new(false);

/// See [`say!`].
pub(crate) fn summary(line: std::fmt::Arguments<'_>) {
    if VERBOSITY.load(Ordering::Relaxed) == QUIET {
        return;
    }
    if SUMMARY_TO_STDERR.load(Ordering::Relaxed) || JSON_ON_STDOUT.load(Ordering::Relaxed) {
        let _ = writeln!(std::io::stderr().lock(), "{line}");
    } else {
        let _ = writeln!(std::io::stdout().lock(), "{line}");
    }
}

pub(crate) fn verbose() -> bool {
    VERBOSITY.load(Ordering::Relaxed) == VERBOSE
}

/// A warning on stderr, unless `-q`.
pub(crate) fn warn(message: &str) {
    if VERBOSITY.load(Ordering::Relaxed) != QUIET {
        eprintln!("warning: {message}");
    }
}

/// One JSON object on a line of stdout (stderr when stdout carries a
/// delta); a closed stream is not an error.
pub(crate) fn json_line(value: &serde_json::Value) {
    let line = value.to_string();
    if SUMMARY_TO_STDERR.load(Ordering::Relaxed) {
        let _ = writeln!(std::io::stderr().lock(), "{line}");
    } else {
        let _ = writeln!(std::io::stdout().lock(), "{line}");
    }
}

/// `auto` resolved: a bar when stderr is a terminal, else nothing.
pub(crate) fn progress_mode(mode: ProgressMode) -> ProgressMode {
    match mode {
        ProgressMode::Auto if std::io::stderr().is_terminal() => ProgressMode::Bar,
        ProgressMode::Auto => ProgressMode::None,
        mode => mode,
    }
}

pub(crate) fn progress_bar() -> indicatif::ProgressBar {
    let bar = indicatif::ProgressBar::new(0);
    bar.set_style(bar_style(true));
    bar
}

/// A bar with bytes done of a total, or (`counting` false: a step with
/// no bytes to count, such as a lock wait) the step and the time spent.
pub(crate) fn bar_style(counting: bool) -> indicatif::ProgressStyle {
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
pub(crate) fn show_apply_progress(bar: &indicatif::ProgressBar, counting: &mut bool, p: &Progress) {
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

pub(crate) fn percent(part: u64, whole: u64) -> f64 {
    if whole == 0 {
        0.0
    } else {
        part as f64 * 100.0 / whole as f64
    }
}

/// A duration as people read it ("850 ms", "2.0 s", "1 min 3 s").
pub(crate) fn took(d: Duration) -> String {
    delta_apply::log::duration(d)
}
