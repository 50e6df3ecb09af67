//! `delta gen`: generate a delta (or a full payload) with progress and a
//! summary.

use crate::args::{GenArgs, ProgressMode};
use crate::failure::Failure;
use crate::output::{
    bar_style, json_line, percent, progress_bar, progress_mode, took, verbose, SUMMARY_TO_STDERR,
};
use delta_gen::{GenOptions, GenProgress};
use std::io::{IsTerminal, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// Where `delta gen` writes the delta.
pub(crate) enum Output<'a> {
    File(&'a Path),
    Stdout,
}

pub(crate) fn gen(args: GenArgs) -> Result<(), Failure> {
    if !args.from.is_empty() {
        return gen_many(args);
    }
    let (old, new) = match (args.full, &args.new) {
        (true, None) => (None, &args.first),
        (false, Some(new)) => (Some(args.first.as_path()), new),
        (true, Some(_)) => crate::usage("gen", "with --full, give only NEW"),
        (false, None) => crate::usage("gen", "give OLD and NEW (or --full NEW)"),
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
    let mode = progress_mode(args.progress);
    let (progress, bar) = gen_progress(mode);
    let options = gen_options(&args, progress)?;
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
        crate::report::print_costliest(report, if verbose() { usize::MAX } else { 10 });
        if let Some(path) = &args.report {
            crate::report::write_json(path, report, summary.delta_len)?;
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

/// The generator's options that `args` give.
/// The generator's options from the command line, with the signing keys
/// read (an unreadable key fails here, before any work).
fn gen_options(
    args: &GenArgs,
    progress: Option<delta_gen::GenProgressFn>,
) -> Result<GenOptions, Failure> {
    let signing_keys = args
        .sign
        .iter()
        .map(|k| crate::keys::read_secret(k))
        .collect::<Result<Vec<_>, _>>()?;
    let mut options = GenOptions {
        signing_keys,
        replace: args.force,
        progress,
        ..args.tuning.options().map_err(|e| Failure::new(e, 2))?
    };
    options.delta.full = args.full;
    options.delta.migration = args.migration;
    options.delta.report = true;
    Ok(options)
}

/// `delta gen NEW --from A [--from B ...] -o DIR`: a delta from each old
/// image to NEW, into DIR, the work on NEW alone done once; one summary
/// line per delta.
fn gen_many(args: GenArgs) -> Result<(), Failure> {
    if args.new.is_some() {
        crate::usage(
            "gen",
            "with --from, give only NEW (not OLD NEW): delta gen NEW --from OLD... -o DIR",
        );
    }
    if args.full {
        crate::usage("gen", "--full and --from do not go together");
    }
    if args.report.is_some() {
        crate::usage("gen", "--report takes one delta: not with --from");
    }
    if args.output.as_os_str() == "-" {
        crate::usage("gen", "with --from, -o names a folder, not stdout");
    }
    let mode = progress_mode(args.progress);
    let (progress, bar) = gen_progress(mode);
    let options = gen_options(&args, progress)?;
    let new = &args.first;
    let dir = &args.output;
    std::fs::create_dir_all(dir)
        .map_err(|e| Failure::new(format!("creating {}: {e}", dir.display()), 1))?;
    let olds: Vec<&Path> = args.from.iter().map(PathBuf::as_path).collect();
    let mut last = Instant::now();
    let generated = delta_gen::generate_many_with(&olds, new, dir, &options, &mut |out, s| {
        if let Some(bar) = &bar {
            bar.suspend(|| print_many_line(out, s, last.elapsed()));
        } else {
            print_many_line(out, s, last.elapsed());
        }
        if matches!(mode, ProgressMode::Json) {
            json_line(&serde_json::json!({"result": {
                "delta": out.display().to_string(),
                "delta_bytes": s.delta_len,
                "old_len": s.old_len,
                "new_len": s.new_len,
                "segments": s.segments,
                "seconds": last.elapsed().as_secs_f64(),
            }}));
        }
        last = Instant::now();
    });
    if let Some(bar) = bar {
        bar.finish_and_clear();
    }
    generated.map_err(|e| Failure::chain(&e, 1))?;
    Ok(())
}

/// The one line `delta gen --from` prints for each delta.
fn print_many_line(out: &Path, s: &delta_gen::Summary, elapsed: Duration) {
    say!(
        "wrote {}: {} bytes ({:.3}% of the new image's {} bytes, old {} bytes) in {}",
        out.display(),
        s.delta_len,
        percent(s.delta_len, s.new_len),
        s.new_len,
        s.old_len,
        took(elapsed)
    );
}

/// The generator's progress callback for `mode`, and the bar it drives.
pub(crate) fn gen_progress(
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

pub(crate) fn print_gen_summary(output: &str, s: &delta_gen::Summary, elapsed: Duration) {
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
        if c.exec_candidates > 0 {
            say!(
                "executables made from their old partners: {} bytes of new image in {} of {} changed, for {} payload bytes",
                c.exec_bytes,
                c.exec_segments,
                c.exec_candidates,
                c.exec_payload
            );
        }
    }
}
