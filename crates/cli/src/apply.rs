//! `delta apply`: rebuild, verify and commit the new image, with progress,
//! signals and the update log.

use crate::args::{ApplyArgs, ProgressMode};
use crate::failure::Failure;
use crate::output::{
    json_line, progress_bar, progress_mode, show_apply_progress, took, verbose, warn,
};
use delta_apply::{Applier, ApplyOptions, Progress, UrlOptions};
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Opens the delta an argument names: a path, `-` for stdin, or a URL
/// (downloaded with the default retries).
pub(crate) fn open_input(arg: &Path) -> Result<Box<dyn delta_apply::DeltaInput>, String> {
    delta_apply::input::open(arg.as_os_str(), &UrlOptions::default())
        .map_err(|e| format!("open delta {}: {e}", arg.display()))
}

/// `s` seconds given as option `--name`.
pub(crate) fn seconds(s: f64, name: &str) -> Result<Duration, Failure> {
    if s.is_finite() && s >= 0.0 {
        Duration::try_from_secs_f64(s)
            .map_err(|_| Failure::new(format!("--{name}: {s} seconds is too long"), 2))
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
            trusted_keys: crate::keys::explicit(self.trusted_keys.as_deref())?,
            keyring: Some(self.keyring.clone()),
            expect_new: self.expect_new,
            compare_zero_runs: self.compare_zero_runs,
            threads: self.threads,
        })
    }
}

pub(crate) fn apply(args: ApplyArgs) -> Result<(), Failure> {
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
        bearer: args
            .token_file
            .as_deref()
            .map(crate::keys::read_token)
            .transpose()?,
        pending_limit: seconds(args.wait_for_server, "wait-for-server")?,
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
pub(crate) fn print_log(path: &Path) {
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
