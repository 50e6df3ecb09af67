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
        $crate::output::summary(format_args!($($arg)*))
    };
}

mod apply;
mod args;
mod check_data;
mod failure;
mod gen;
mod html;
mod info;
mod keys;
mod output;
mod report;
mod roundtrip;
#[cfg(feature = "serve")]
mod serve;

use crate::apply::apply;
use crate::args::{Cli, Command, ProgressMode};
use crate::check_data::check_data;
use crate::failure::Failure;
use crate::gen::gen;
use crate::output::{json_line, JSON_ON_STDOUT, NORMAL, QUIET, VERBOSE, VERBOSITY};
use crate::roundtrip::roundtrip;
use clap::{CommandFactory, Parser};
use std::process::ExitCode;
use std::sync::atomic::Ordering;

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
        #[cfg(feature = "serve")]
        Command::Serve(args) => serve::serve(*args),
        #[cfg(feature = "serve")]
        Command::Push {
            image,
            to,
            token_file,
        } => serve::push(&image, &to, token_file.as_deref()),
        #[cfg(feature = "serve")]
        Command::Precompute { serve, to, from } => serve::precompute(*serve, &to, &from),
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
