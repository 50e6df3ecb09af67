//! `delta serve`, `delta push` and `delta precompute`: the delta service
//! and its clients (see the `delta-server` crate).

use crate::args::ServeArgs;
use crate::failure::Failure;
use delta_server::{Config, Digest, Store};
use std::path::Path;
use std::time::Duration;

/// The service's configuration from the command line.
fn config(args: ServeArgs) -> Result<Config, Failure> {
    let store = Store::open(&args.store).map_err(|e| Failure::chain(&e, 1))?;
    let mut config = Config::new(store);
    config.listen = args.listen;
    config.device_tokens = tokens(args.device_tokens.as_deref())?;
    config.admin_tokens = tokens(args.admin_tokens.as_deref())?;
    config.max_jobs = args.max_jobs.max(1);
    config.queue = args.queue;
    config.cache_bytes = args.cache_size;
    config.max_image_bytes = args.max_image_size;
    config.lease = crate::apply::seconds(args.lease, "lease")?.max(Duration::from_millis(300));
    if let Some(scratch) = args.scratch {
        config.scratch = scratch;
    }
    config.tls = args.tls_cert.zip(args.tls_key);
    if let Some(replica) = args.replica {
        config.replica = replica;
    }
    let mut gen = args.tuning.options().map_err(|e| Failure::new(e, 2))?;
    gen.signing_keys = args
        .sign
        .iter()
        .map(|k| crate::keys::read_secret(k))
        .collect::<Result<Vec<_>, _>>()?;
    config.gen = gen;
    Ok(config)
}

/// The tokens of `file`, one per line (blank lines and `#` comments
/// skipped).
fn tokens(file: Option<&Path>) -> Result<Vec<String>, Failure> {
    let Some(file) = file else {
        return Ok(Vec::new());
    };
    let text = std::fs::read_to_string(file)
        .map_err(|e| Failure::from(format!("read tokens {}: {e}", file.display())))?;
    let tokens: Vec<String> = text
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .map(str::to_owned)
        .collect();
    if tokens.is_empty() {
        return Err(Failure::from(format!(
            "{}: no tokens (one per line expected)",
            file.display()
        )));
    }
    Ok(tokens)
}

/// `delta serve`.
pub(crate) fn serve(args: ServeArgs) -> Result<(), Failure> {
    let config = config(args)?;
    if config.device_tokens.is_empty() {
        crate::output::warn("no --device-tokens: anyone who reaches the service may fetch deltas");
    }
    delta_server::run(config).map_err(|e| Failure::chain(&e, 1))
}

/// `delta precompute`.
pub(crate) fn precompute(args: ServeArgs, to: &str, from: &[String]) -> Result<(), Failure> {
    let digest =
        |text: &str| Digest::parse(text).map_err(|e| Failure::new(format!("{text}: {e}"), 2));
    let target = digest(to)?;
    let sources = from
        .iter()
        .map(|f| digest(f))
        .collect::<Result<Vec<_>, _>>()?;
    let config = config(args)?;
    let started = std::time::Instant::now();
    let keys =
        delta_server::precompute(config, target, &sources).map_err(|e| Failure::chain(&e, 1))?;
    say!(
        "{} deltas to {target} in the store in {:.1} s",
        keys.len(),
        started.elapsed().as_secs_f64()
    );
    Ok(())
}

/// `delta push IMAGE TO`.
///
/// The digest alone goes to stdout (`A=$(delta push old.img DIR)`); the
/// summary to stderr.
pub(crate) fn push(image: &Path, to: &str, token_file: Option<&Path>) -> Result<(), Failure> {
    crate::output::SUMMARY_TO_STDERR.store(true, std::sync::atomic::Ordering::Relaxed);
    if !(to.starts_with("http://") || to.starts_with("https://")) {
        let store = Store::open(to).map_err(|e| Failure::chain(&e, 1))?;
        let (digest, len) =
            delta_server::push_file(&store, image).map_err(|e| Failure::chain(&e, 1))?;
        say!("stored {} ({len} bytes) in {to}", image.display());
        out!("{digest}");
        return Ok(());
    }
    let digest = blake3::Hasher::new()
        .update_mmap(image)
        .map_err(|e| Failure::from(format!("read {}: {e}", image.display())))?
        .finalize()
        .to_hex();
    let file = std::fs::File::open(image)
        .map_err(|e| Failure::from(format!("open {}: {e}", image.display())))?;
    let len = file
        .metadata()
        .map_err(|e| Failure::from(format!("stat {}: {e}", image.display())))?
        .len();
    let url = format!("{}/v1/images/{digest}", to.trim_end_matches('/'));
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .http_status_as_error(false)
        .timeout_await_100(Some(Duration::from_secs(10)))
        .build()
        .into();
    // Expect: 100-continue: a refusal (a token that may not push, an image
    // too large) is answered before any of the image is sent.
    let mut request = agent
        .put(&url)
        .header("Expect", "100-continue")
        .header("Content-Length", len.to_string())
        .header("Content-Type", "application/octet-stream");
    if let Some(token) = token_file {
        request = request.header(
            "Authorization",
            format!("Bearer {}", crate::keys::read_token(token)?),
        );
    }
    let mut reader = std::io::BufReader::with_capacity(1 << 20, file);
    let mut response = request
        .send(ureq::SendBody::from_reader(&mut reader))
        .map_err(|e| Failure::from(format!("PUT {url}: {e}")))?;
    let status = response.status();
    let body = response
        .body_mut()
        .with_config()
        .limit(64 << 10)
        .read_to_string()
        .unwrap_or_default();
    if !status.is_success() {
        return Err(Failure::from(format!(
            "PUT {url}: HTTP {status}: {}",
            body.trim()
        )));
    }
    say!("pushed {} ({len} bytes) to {to}", image.display());
    out!("{digest}");
    Ok(())
}
