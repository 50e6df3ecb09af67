//! A delta downloaded over HTTP(S) as it is applied ([`UrlInput`]).
//!
//! After a dropped connection, a timeout or a 5xx answer the download is
//! retried with backoff, asking for the rest with `Range: bytes=N-` and
//! `If-Range` (the first answer's `ETag`, else its `Last-Modified`), so a
//! delta that changed on the server is refused, not spliced. A server that
//! answers 200 to a Range request is read from the start again, its first
//! N bytes discarded. A 4xx answer, a certificate that does not verify and
//! a bad URL are not retried. Proxies come from the usual environment
//! variables (`HTTPS_PROXY`, `HTTP_PROXY`, `ALL_PROXY`, `NO_PROXY`).
//!
//! Certificates are checked against the device's trust store (as `curl`
//! does: `SSL_CERT_FILE`, `SSL_CERT_DIR`, `/etc/ssl/certs`, so a fleet's
//! private CA works), or Mozilla's roots built in where the device has none.

use crate::input::{discard, DeltaInput, Note, UrlOptions, MAX_BACKOFF};
use std::io::{self, Read};
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};
use ureq::http::{header, StatusCode};

/// What identifies one version of the delta on the server.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Validator {
    ETag(String),
    LastModified(String),
}

impl Validator {
    /// The strong ETag of `response`, else its Last-Modified (weak ETags
    /// cannot be used with If-Range).
    fn of(response: &ureq::http::Response<ureq::Body>) -> Option<Validator> {
        let text = |name| {
            response
                .headers()
                .get(name)
                .and_then(|v| v.to_str().ok())
                .map(str::to_owned)
        };
        match text(header::ETAG) {
            Some(tag) if !tag.starts_with("W/") => Some(Validator::ETag(tag)),
            _ => text(header::LAST_MODIFIED).map(Validator::LastModified),
        }
    }

    fn value(&self) -> &str {
        match self {
            Validator::ETag(v) | Validator::LastModified(v) => v,
        }
    }
}

/// Why one attempt failed.
enum Attempt {
    /// Worth another try: a drop, a timeout, a 5xx answer.
    Retry(String),
    /// Not: a 4xx answer, a delta that changed on the server.
    Fatal(String),
    /// Not yet: the server is making the delta (202 Accepted) or is busy
    /// (503 with Retry-After); ask again after the wait given.
    Pending(Duration, String),
}

/// A delta read over HTTP(S), resumed with Range requests.
pub(crate) struct UrlInput {
    url: String,
    agent: ureq::Agent,
    options: UrlOptions,
    /// The next byte the caller reads.
    position: u64,
    /// The delta's length, from the first answer.
    total: Option<u64>,
    validator: Option<Validator>,
    body: Option<ureq::BodyReader<'static>>,
    /// Failed attempts since the last byte received.
    failures: u32,
    /// Time spent waiting on 202 and 503 answers.
    pending: Duration,
    notes: Vec<Note>,
}

impl std::fmt::Debug for UrlInput {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("UrlInput")
            .field("url", &self.url)
            .field("position", &self.position)
            .field("total", &self.total)
            .field("validator", &self.validator)
            .finish_non_exhaustive()
    }
}

impl UrlInput {
    /// A download of `url` (`http://` or `https://`); nothing is sent until
    /// the first read.
    pub(crate) fn new(url: &str, options: UrlOptions) -> UrlInput {
        let timeout = Some(options.timeout);
        let tls = ureq::tls::TlsConfig::builder()
            .root_certs(root_certs())
            .build();
        let config = ureq::Agent::config_builder()
            .tls_config(tls)
            .http_status_as_error(false)
            .timeout_connect(timeout)
            .timeout_recv_response(timeout)
            .timeout_per_read(timeout)
            .user_agent(concat!("delta-apply/", env!("CARGO_PKG_VERSION")))
            .build();
        UrlInput {
            url: url.to_owned(),
            agent: ureq::Agent::new_with_config(config),
            options,
            position: 0,
            total: None,
            validator: None,
            body: None,
            failures: 0,
            pending: Duration::ZERO,
            notes: Vec::new(),
        }
    }

    /// Opens a response whose body starts at `position`, retrying.
    fn connect(&mut self) -> io::Result<()> {
        loop {
            match self.request() {
                Ok(body) => {
                    self.body = Some(body);
                    return Ok(());
                }
                Err(Attempt::Fatal(message)) => return Err(io::Error::other(message)),
                Err(Attempt::Retry(reason)) => self.failed(&reason)?,
                Err(Attempt::Pending(wait, reason)) => self.wait_pending(wait, &reason)?,
            }
        }
    }

    /// One request for the bytes from `position` on.
    fn request(&mut self) -> Result<ureq::BodyReader<'static>, Attempt> {
        let url = &self.url;
        let at = self.position;
        let mut request = self.agent.get(url);
        if let Some(token) = &self.options.bearer {
            request = request.header(header::AUTHORIZATION, format!("Bearer {token}"));
        }
        if at > 0 {
            request = request.header(header::RANGE, format!("bytes={at}-"));
            if let Some(validator) = &self.validator {
                request = request.header(header::IF_RANGE, validator.value());
            }
        }
        let response = request.call().map_err(|e| {
            if is_transient(&e) {
                Attempt::Retry(e.to_string())
            } else {
                Attempt::Fatal(format!("{e}, not retried"))
            }
        })?;
        let status = response.status();
        let validator = Validator::of(&response);
        let changed = || {
            Attempt::Fatal(format!(
                "the delta changed on the server during the download (asking for the rest \
                 at byte {at}); refusing to splice two versions: re-run to start again"
            ))
        };
        let header_number = |name| {
            response
                .headers()
                .get(name)
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.trim().parse::<u64>().ok())
        };
        let (start, total) = match status {
            StatusCode::OK => (0, header_number(header::CONTENT_LENGTH)),
            StatusCode::PARTIAL_CONTENT => {
                let range = response
                    .headers()
                    .get(header::CONTENT_RANGE)
                    .and_then(|v| v.to_str().ok())
                    .and_then(parse_content_range)
                    .ok_or_else(|| {
                        Attempt::Fatal(format!(
                            "HTTP 206 without a valid Content-Range for bytes={at}-"
                        ))
                    })?;
                (range.0, range.1)
            }
            s if s == StatusCode::ACCEPTED
                || (s == StatusCode::SERVICE_UNAVAILABLE
                    && response.headers().contains_key(header::RETRY_AFTER)) =>
            {
                let wait = header_number(header::RETRY_AFTER)
                    .map_or(MIN_PENDING_WAIT, Duration::from_secs)
                    .clamp(MIN_PENDING_WAIT, MAX_BACKOFF);
                let why = if s == StatusCode::ACCEPTED {
                    "the server is still making the delta (HTTP 202)"
                } else {
                    "the server is busy (HTTP 503)"
                };
                return Err(Attempt::Pending(wait, why.to_owned()));
            }
            s if s == StatusCode::REQUEST_TIMEOUT
                || s == StatusCode::TOO_MANY_REQUESTS
                || s.is_server_error() =>
            {
                return Err(Attempt::Retry(format!("HTTP {s}")));
            }
            s => return Err(Attempt::Fatal(format!("HTTP {s} from {url}, not retried"))),
        };
        if at > 0 && self.validator.is_some() && validator != self.validator {
            return Err(changed());
        }
        if at == 0 {
            self.validator = validator;
            self.total = total;
        } else if total.is_some() && total != self.total {
            return Err(changed());
        }
        let mut body = response.into_body().into_reader();
        if start != at {
            if start != 0 {
                return Err(Attempt::Fatal(format!(
                    "asked for bytes={at}- and got bytes from {start}"
                )));
            }
            self.notes.push(Note::now(format!(
                "download: the server ignored Range (HTTP 200); reading from the start, \
                 discarding the {at} bytes already received"
            )));
            discard(&mut body, at).map_err(|e| {
                Attempt::Retry(format!("while discarding the first {at} bytes: {e}"))
            })?;
        }
        Ok(body)
    }

    /// Waits `wait` for a server that is not ready, or gives up once the
    /// waits add up to [`UrlOptions::pending_limit`].
    fn wait_pending(&mut self, wait: Duration, reason: &str) -> io::Result<()> {
        if self.pending >= self.options.pending_limit {
            return Err(io::Error::other(format!(
                "gave up after waiting {} s: {reason}",
                self.pending.as_secs()
            )));
        }
        let wait = wait.min(self.options.pending_limit - self.pending);
        self.pending += wait;
        self.notes.push(Note::now(format!(
            "download: {reason}; asking again in {} s",
            wait.as_secs_f64()
        )));
        self.sleep(wait, "cancelled while waiting for the server")
    }

    /// Sleeps `delay`, or returns early with an error when cancelled.
    fn sleep(&self, delay: Duration, cancelled: &str) -> io::Result<()> {
        let until = Instant::now() + delay;
        while Instant::now() < until {
            if self
                .options
                .cancel
                .as_ref()
                .is_some_and(|c| c.load(Ordering::Relaxed))
            {
                // Not ErrorKind::Interrupted: read_exact would retry that.
                return Err(io::Error::other(cancelled.to_owned()));
            }
            std::thread::sleep((until - Instant::now()).min(Duration::from_millis(100)));
        }
        Ok(())
    }

    /// Records a failed attempt and waits before the next, or gives up.
    fn failed(&mut self, reason: &str) -> io::Result<()> {
        self.body = None;
        self.failures += 1;
        if self.failures > self.options.retries {
            return Err(io::Error::other(format!(
                "giving up after {} retries: {reason}",
                self.options.retries
            )));
        }
        let doubling = 1u32 << (self.failures - 1).min(16);
        let delay = self
            .options
            .backoff
            .saturating_mul(doubling)
            .min(MAX_BACKOFF);
        self.notes.push(Note::now(format!(
            "download: {reason} at byte {}; retry {}/{} in {:.1} s with Range: bytes={}-",
            self.position,
            self.failures,
            self.options.retries,
            delay.as_secs_f64(),
            self.position
        )));
        self.sleep(delay, "cancelled while waiting to retry")
    }
}

/// Shortest wait between two asks to a server that is not ready.
const MIN_PENDING_WAIT: Duration = Duration::from_secs(1);

/// The device's trust anchors, else Mozilla's.
fn root_certs() -> ureq::tls::RootCerts {
    let found = rustls_native_certs::load_native_certs();
    let certs: Vec<ureq::tls::Certificate<'static>> = found
        .certs
        .iter()
        .map(|c| ureq::tls::Certificate::from_der(c.as_ref()).to_owned())
        .collect();
    if certs.is_empty() {
        ureq::tls::RootCerts::WebPki
    } else {
        ureq::tls::RootCerts::new_with_certs(&certs)
    }
}

/// Whether a failed request is worth another try: the network and the
/// server's answers, not a certificate, a URL or a proxy setting, which a
/// retry cannot change.
fn is_transient(e: &ureq::Error) -> bool {
    match e {
        // TLS failures surface as I/O errors of kind InvalidData.
        ureq::Error::Io(io) => io.kind() != io::ErrorKind::InvalidData,
        ureq::Error::Timeout(_)
        | ureq::Error::HostNotFound
        | ureq::Error::ConnectionFailed
        | ureq::Error::Protocol(_)
        | ureq::Error::BodyStalled
        | ureq::Error::ConnectProxyFailed(_) => true,
        _ => false,
    }
}

/// `bytes START-END/TOTAL` → (START, TOTAL), TOTAL None for `*`.
fn parse_content_range(text: &str) -> Option<(u64, Option<u64>)> {
    let rest = text.trim().strip_prefix("bytes ")?;
    let (range, total) = rest.split_once('/')?;
    let (start, end) = range.split_once('-')?;
    let start: u64 = start.trim().parse().ok()?;
    let end: u64 = end.trim().parse().ok()?;
    let total = match total.trim() {
        "*" => None,
        t => Some(t.parse().ok()?),
    };
    (start <= end && total.is_none_or(|t| end < t)).then_some((start, total))
}

impl Read for UrlInput {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if buf.is_empty() {
            return Ok(0);
        }
        loop {
            if self.total == Some(self.position) {
                return Ok(0);
            }
            if self.body.is_none() {
                self.connect()?;
            }
            let Some(body) = self.body.as_mut() else {
                continue;
            };
            match body.read(buf) {
                Ok(0) if self.total.is_none() => return Ok(0),
                Ok(0) => self.failed("the connection closed early")?,
                Ok(n) => {
                    self.position += n as u64;
                    self.failures = 0;
                    return Ok(n);
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => self.failed(&e.to_string())?,
            }
        }
    }
}

impl DeltaInput for UrlInput {
    fn name(&self) -> &str {
        &self.url
    }

    fn known_len(&self) -> Option<u64> {
        self.total
    }

    fn skip(&mut self, len: u64) -> io::Result<()> {
        // Small gaps are read through; larger ones cost a new request.
        if len < 256 << 10 || self.total.is_none() {
            return discard(self, len);
        }
        self.position = self
            .position
            .checked_add(len)
            .filter(|&p| self.total.is_none_or(|t| p <= t))
            .ok_or(io::ErrorKind::UnexpectedEof)?;
        self.body = None;
        self.notes.push(Note::now(format!(
            "download: resuming at byte {} with Range: bytes={}-",
            self.position, self.position
        )));
        Ok(())
    }

    fn take_notes(&mut self) -> Vec<Note> {
        std::mem::take(&mut self.notes)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn content_ranges_are_parsed_and_checked() {
        assert_eq!(parse_content_range("bytes 10-19/20"), Some((10, Some(20))));
        assert_eq!(parse_content_range("bytes 0-0/*"), Some((0, None)));
        assert_eq!(parse_content_range("bytes 10-19/19"), None);
        assert_eq!(parse_content_range("bytes 20-19/40"), None);
        assert_eq!(parse_content_range("items 0-1/2"), None);
    }
}
