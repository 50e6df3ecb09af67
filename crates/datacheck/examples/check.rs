//! Prints the [`Report`](delta_datacheck::Report) for a folder; a stand-in
//! for `delta check-data` until the CLI has it.
//!
//! ```text
//! cargo run --release -p delta-datacheck --example check -- DIR [--limit 170MB] [--threads N] [--block-size 1MiB]
//! ```
//!
//! Exit status: 0 fits, 1 over the limit, 2 error.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Instant;

use delta_datacheck::{check_data, parse_size, CheckOptions};

fn main() -> ExitCode {
    match run() {
        Ok(code) => code,
        Err(e) => {
            // One line, as `delta check-data` prints it: the crate's
            // messages end with their cause.
            eprintln!("error: {e}");
            ExitCode::from(2)
        }
    }
}

fn run() -> Result<ExitCode, Box<dyn std::error::Error>> {
    let mut options = CheckOptions::default();
    let mut dir = None;
    let mut args = std::env::args_os().skip(1);
    while let Some(arg) = args.next() {
        let mut value = || {
            args.next()
                .and_then(|v| v.into_string().ok())
                .ok_or_else(|| format!("{} needs a value", arg.to_string_lossy()))
        };
        match arg.to_str() {
            Some("--limit") => options.limit = parse_size(&value()?)?,
            Some("--threads") => options.threads = value()?.parse()?,
            Some("--block-size") => options.block_size = usize::try_from(parse_size(&value()?)?)?,
            Some("-h" | "--help") => {
                println!("usage: check DIR [--limit SIZE] [--threads N] [--block-size SIZE]");
                return Ok(ExitCode::SUCCESS);
            }
            _ if dir.is_none() => dir = Some(PathBuf::from(arg)),
            _ => return Err(format!("unexpected argument {}", arg.to_string_lossy()).into()),
        }
    }
    let dir = dir.ok_or("usage: check DIR [--limit SIZE] [--threads N] [--block-size SIZE]")?;
    let start = Instant::now();
    let report = check_data(&dir, &options)?;
    let elapsed = start.elapsed();
    for warning in &report.warnings {
        eprintln!("warning: {warning}");
    }
    println!("compressed_bytes {}", report.compressed_bytes);
    println!("tar_bytes        {}", report.tar_bytes);
    println!("files            {}", report.files);
    println!("limit            {}", report.limit);
    println!("over_limit       {}", report.over_limit);
    println!("warnings         {}", report.warnings.len());
    println!("seconds          {:.3}", elapsed.as_secs_f64());
    Ok(if report.over_limit {
        ExitCode::from(1)
    } else {
        ExitCode::SUCCESS
    })
}
