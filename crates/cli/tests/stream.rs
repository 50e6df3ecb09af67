//! Applying while downloading: `delta apply OLD - -o OUT` from a pipe and
//! `delta apply OLD http://... -o OUT` from a real HTTP server on
//! 127.0.0.1 that this file starts and stops, which drops connections,
//! ignores Range, changes the file, fails, trickles, and counts the bytes
//! it serves.

mod common;

use common::{json_u64, poll_until, stderr, stdout};
use delta_core::testing::{mutate, Rng};
use std::io::{BufRead, BufReader, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::process::{Child, Command, Output, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// How the test server behaves.
#[derive(Clone)]
struct Behaviour {
    /// Answer Range requests with 206 (else 200 and the whole file).
    ranges: bool,
    /// Drop this many responses, each after a random number of body bytes
    /// in `drop_after`.
    drops: usize,
    drop_after: (u64, u64),
    /// Send the body in pieces of this many bytes with this pause between.
    trickle: Option<(usize, Duration)>,
    /// Answer every request with this status.
    status: Option<u16>,
    /// After this many requests, serve other bytes under another ETag.
    change_after: Option<usize>,
}

impl Default for Behaviour {
    fn default() -> Self {
        Behaviour {
            ranges: true,
            drops: 0,
            drop_after: (100_000, 600_000),
            trickle: None,
            status: None,
            change_after: None,
        }
    }
}

/// One request the server answered.
#[derive(Debug, Clone)]
struct Served {
    range_start: Option<u64>,
    status: u16,
}

struct Shared {
    behaviour: Mutex<Behaviour>,
    content: Vec<u8>,
    served_bytes: AtomicU64,
    /// Dropped responses whose client has closed the connection.
    given_up: AtomicU64,
    log: Mutex<Vec<Served>>,
    rng: Mutex<Rng>,
}

/// An HTTP/1.1 server on 127.0.0.1 serving one file, stopped on drop.
struct Server {
    addr: SocketAddr,
    shared: Arc<Shared>,
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Server {
    fn start(content: Vec<u8>, behaviour: Behaviour) -> Server {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        listener.set_nonblocking(true).unwrap();
        let addr = listener.local_addr().unwrap();
        let shared = Arc::new(Shared {
            behaviour: Mutex::new(behaviour),
            content,
            served_bytes: AtomicU64::new(0),
            given_up: AtomicU64::new(0),
            log: Mutex::new(Vec::new()),
            rng: Mutex::new(Rng::new(addr.port() as u64)),
        });
        let stop = Arc::new(AtomicBool::new(false));
        let thread = {
            let (shared, stop) = (Arc::clone(&shared), Arc::clone(&stop));
            std::thread::spawn(move || {
                while !stop.load(Ordering::Relaxed) {
                    match listener.accept() {
                        Ok((stream, _)) => {
                            let shared = Arc::clone(&shared);
                            std::thread::spawn(move || {
                                let _ = serve(stream, &shared);
                            });
                        }
                        Err(_) => std::thread::sleep(Duration::from_millis(2)),
                    }
                }
            })
        };
        Server {
            addr,
            shared,
            stop,
            thread: Some(thread),
        }
    }

    fn url(&self) -> String {
        format!("http://{}/update.delta", self.addr)
    }

    fn served_bytes(&self) -> u64 {
        self.shared.served_bytes.load(Ordering::Relaxed)
    }

    /// How many dropped responses the client has given up on (closed
    /// the connection after reading the end of the body).
    fn given_up(&self) -> u64 {
        self.shared.given_up.load(Ordering::Relaxed)
    }

    fn requests(&self) -> Vec<Served> {
        self.shared.log.lock().unwrap().clone()
    }

    fn set(&self, behaviour: Behaviour) {
        *self.shared.behaviour.lock().unwrap() = behaviour;
    }

    fn reset_counts(&self) {
        self.shared.served_bytes.store(0, Ordering::Relaxed);
        self.shared.log.lock().unwrap().clear();
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// Answers one request on `stream`, then closes it.
fn serve(stream: TcpStream, shared: &Shared) -> std::io::Result<()> {
    stream.set_nonblocking(false)?;
    stream.set_read_timeout(Some(Duration::from_secs(10)))?;
    let mut reader = BufReader::new(stream.try_clone()?);
    let mut range_start = None;
    let mut if_range = None;
    let mut line = String::new();
    loop {
        line.clear();
        if reader.read_line(&mut line)? == 0 {
            return Ok(());
        }
        let trimmed = line.trim_end();
        if trimmed.is_empty() {
            break;
        }
        let lower = trimmed.to_ascii_lowercase();
        if let Some(value) = lower.strip_prefix("range: bytes=") {
            range_start = value.trim_end_matches('-').parse::<u64>().ok();
        }
        if lower.starts_with("if-range:") {
            if_range = Some(trimmed["if-range:".len()..].trim().to_owned());
        }
    }
    let behaviour = shared.behaviour.lock().unwrap().clone();
    let request_number = shared.log.lock().unwrap().len();
    let changed = behaviour.change_after.is_some_and(|n| request_number >= n);
    let etag = if changed { "\"v2\"" } else { "\"v1\"" };
    let changed_content;
    let content: &[u8] = if changed {
        changed_content = shared.content.iter().map(|b| b ^ 0x5a).collect::<Vec<u8>>();
        &changed_content
    } else {
        &shared.content
    };
    let mut out = stream;
    if let Some(status) = behaviour.status {
        shared.log.lock().unwrap().push(Served {
            range_start,
            status,
        });
        let body = b"no\n";
        write!(
            out,
            "HTTP/1.1 {status} Test\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
            body.len()
        )?;
        out.write_all(body)?;
        return Ok(());
    }
    let start = match range_start {
        Some(start)
            if behaviour.ranges
                && if_range.as_deref().is_none_or(|v| v == etag)
                && start < content.len() as u64 =>
        {
            Some(start)
        }
        _ => None,
    };
    let (status, body) = match start {
        Some(start) => (206, &content[start as usize..]),
        None => (200, content),
    };
    shared.log.lock().unwrap().push(Served {
        range_start,
        status,
    });
    let mut head = format!(
        "HTTP/1.1 {status} {}\r\nContent-Length: {}\r\nETag: {etag}\r\nAccept-Ranges: bytes\r\nConnection: close\r\n",
        if status == 206 { "Partial Content" } else { "OK" },
        body.len()
    );
    if let Some(start) = start {
        head.push_str(&format!(
            "Content-Range: bytes {start}-{}/{}\r\n",
            content.len() - 1,
            content.len()
        ));
    }
    head.push_str("\r\n");
    out.write_all(head.as_bytes())?;
    let drop_at = {
        let mut b = shared.behaviour.lock().unwrap();
        if b.drops > 0 {
            b.drops -= 1;
            let (low, high) = b.drop_after;
            Some(low + shared.rng.lock().unwrap().below(high - low))
        } else {
            None
        }
    };
    let piece = behaviour.trickle.map_or(64 << 10, |t| t.0);
    let mut sent = 0u64;
    for chunk in body.chunks(piece) {
        let chunk = match drop_at {
            Some(at) if sent + chunk.len() as u64 >= at => &chunk[..(at - sent) as usize],
            _ => chunk,
        };
        out.write_all(chunk)?;
        sent += chunk.len() as u64;
        shared
            .served_bytes
            .fetch_add(chunk.len() as u64, Ordering::Relaxed);
        if drop_at == Some(sent) {
            out.flush()?;
            // Half-closed: the client reads the end of the body, gives up
            // on this response and closes the connection, which is seen
            // here as the end of what it sends.
            let _ = out.shutdown(Shutdown::Write);
            let mut rest = [0u8; 512];
            loop {
                match std::io::Read::read(&mut reader, &mut rest) {
                    Ok(0) => {
                        shared.given_up.fetch_add(1, Ordering::Relaxed);
                        break;
                    }
                    Ok(_) => {}
                    Err(_) => break,
                }
            }
            return Ok(());
        }
        if let Some((_, pause)) = behaviour.trickle {
            std::thread::sleep(pause);
        }
    }
    Ok(())
}

/// A device with an image pair and a delta of many segments, most of its
/// bytes new (so the delta is a few MiB).
struct Fixture {
    f: common::Fixture,
}

impl std::ops::Deref for Fixture {
    type Target = common::Fixture;

    fn deref(&self) -> &common::Fixture {
        &self.f
    }
}

impl Fixture {
    fn new(len: usize, seed: u64) -> Fixture {
        let mut rng = Rng::new(seed);
        let old = rng.bytes(len);
        let mut new = mutate(&old, &mut rng, 30);
        // A third of the new image is new random bytes: a large delta.
        let fresh = rng.bytes(len / 3);
        let at = len / 3;
        new[at..at + fresh.len()].copy_from_slice(&fresh);
        let f = common::Fixture::with_images(&old, &new);
        f.make_delta("256KiB", &[]);
        Fixture { f }
    }

    fn delta(&self) -> Vec<u8> {
        std::fs::read(self.path("u.delta")).unwrap()
    }

    /// `delta apply old.img DELTA -o out.img` with `extra`.
    fn apply(&self, delta: &str, extra: &[&str]) -> Output {
        let mut args = vec!["apply", "old.img", delta, "-o", "out.img"];
        args.extend_from_slice(extra);
        self.run(&args)
    }

    /// Runs `delta` with `args`, `bytes` written to its stdin (a thread
    /// writes them, so a run that stops reading early does not block it).
    fn run_piped(&self, args: &[&str], bytes: Vec<u8>) -> Output {
        let mut child = self
            .command(args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let mut stdin = child.stdin.take().unwrap();
        let writer = std::thread::spawn(move || stdin.write_all(&bytes));
        let out = child.wait_with_output().unwrap();
        let _ = writer.join().unwrap();
        out
    }

    /// `delta apply old.img - -o out.img` with `extra`, `bytes` on stdin.
    fn apply_piped(&self, bytes: Vec<u8>, extra: &[&str]) -> Output {
        let mut args = vec!["apply", "old.img", "-", "-o", "out.img"];
        args.extend_from_slice(extra);
        self.run_piped(&args, bytes)
    }

    fn spawn_apply(&self, delta: &str, extra: &[&str], stdin: Stdio) -> Child {
        let mut args = vec!["apply", "old.img", delta, "-o", "out.img"];
        args.extend_from_slice(extra);
        self.command(&args)
            .stdin(stdin)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap()
    }

    fn assert_not_committed(&self) {
        assert!(
            !self.path("out.img").exists(),
            "a failed apply left a complete-looking target"
        );
    }

    /// The text of every update log.
    fn log_text(&self) -> String {
        let mut text = String::new();
        for log in self.logs() {
            text.push_str(&std::fs::read_to_string(log).unwrap());
        }
        text
    }

    /// Offset of segment `i`'s payload in the delta.
    fn payload_offset(&self, i: usize) -> u64 {
        let index = delta_format::read_index(
            &mut std::fs::File::open(self.path("u.delta")).unwrap(),
            &delta_format::Limits::default(),
        )
        .unwrap();
        index.payload_offsets[i]
    }

    /// Waits until the journal records `segments` segments done; returns
    /// how many it records.
    fn wait_for_journal(&self, child: &mut Child, segments: u64) -> u64 {
        let started = Instant::now();
        loop {
            let text = std::fs::read_to_string(self.path("out.img.journal")).unwrap_or_default();
            let done = json_u64(&text, "segments_done");
            if done >= segments {
                return done;
            }
            assert!(
                child.try_wait().unwrap().is_none(),
                "apply ended before {segments} segments were journaled"
            );
            assert!(started.elapsed() < Duration::from_secs(60), "no progress");
            std::thread::sleep(Duration::from_millis(2));
        }
    }
}

/// Asserts exit code 1 with the `error:` line containing each of `needles`.
fn assert_error(out: &Output, needles: &[&str]) {
    let err = stderr(out);
    assert_eq!(out.status.code(), Some(1), "stderr: {err}");
    assert!(err.starts_with("error: "), "stderr: {err}");
    for needle in needles {
        assert!(err.contains(needle), "expected {needle:?} in: {err}");
    }
}

#[test]
fn from_stdin_is_exact() {
    let f = Fixture::new(4 << 20, 1);
    let out = f.apply_piped(f.delta(), &[]);
    assert!(out.status.success(), "{}", stderr(&out));
    f.assert_done();
}

#[test]
fn a_pipe_cut_short_is_an_error_that_resumes() {
    let f = Fixture::new(4 << 20, 2);
    let delta = f.delta();
    let cut = delta.len() * 2 / 3;
    let out = f.apply_piped(delta[..cut].to_vec(), &["--checkpoint-bytes", "256KiB"]);
    assert_error(
        &out,
        &[
            "delta stdin",
            // The byte where the pipe ended, not where the read began.
            &format!("reading byte {cut}: the delta ended there"),
            &format!("{} bytes", delta.len()),
        ],
    );
    f.assert_not_committed();
    assert!(
        f.path("out.img.journal").exists(),
        "the journal was removed"
    );
    // A fresh pipe with the whole delta resumes where the cut one ended.
    let out = f.apply_piped(delta, &[]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(stdout(&out).contains("resumed"), "{}", stdout(&out));
    f.assert_done();
}

#[test]
fn a_pipe_longer_than_the_delta_is_refused() {
    let f = Fixture::new(1 << 20, 3);
    let mut delta = f.delta();
    delta.extend_from_slice(b"trailing");
    let out = f.apply_piped(delta, &[]);
    assert_error(&out, &["delta stdin"]);
    f.assert_not_committed();
}

#[test]
fn kill_9_while_reading_stdin_then_resume_with_a_fresh_pipe() {
    let f = Fixture::new(6 << 20, 4);
    let delta = f.delta();
    let mut child = f.spawn_apply(
        "-",
        &[
            "--checkpoint-bytes",
            "256KiB",
            "--checkpoint-seconds",
            "0.05",
        ],
        Stdio::piped(),
    );
    // Feed the pipe slowly, so the kill lands in the middle of it.
    let mut stdin = child.stdin.take().unwrap();
    let slow = delta.clone();
    let feeder = std::thread::spawn(move || {
        for piece in slow.chunks(32 << 10) {
            if stdin.write_all(piece).is_err() {
                return;
            }
            std::thread::sleep(Duration::from_millis(5));
        }
    });
    let done = f.wait_for_journal(&mut child, 4);
    child.kill().unwrap();
    child.wait().unwrap();
    feeder.join().unwrap();
    f.assert_not_committed();
    let out = f.apply_piped(delta, &[]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(
        stdout(&out).contains("resumed"),
        "journal said {done} segments done: {}",
        stdout(&out)
    );
    f.assert_done();
}

#[test]
fn over_http_with_dropped_connections() {
    let f = Fixture::new(6 << 20, 5);
    let delta = f.delta();
    // Four drops, each at most 400 kB into its answer, all land inside the
    // delta whatever the server's random draw (the port seeds it).
    let drop_after = (100_000, 400_000);
    assert!(4 * drop_after.1 < delta.len() as u64, "{}", delta.len());
    let server = Server::start(
        delta.clone(),
        Behaviour {
            drops: 4,
            drop_after,
            ..Behaviour::default()
        },
    );
    let out = f.apply(&server.url(), &[]);
    assert!(out.status.success(), "{}", stderr(&out));
    f.assert_done();
    let requests = server.requests();
    assert_eq!(requests.len(), 5, "{requests:?}");
    assert!(
        requests[1..].iter().all(|r| r.status == 206),
        "{requests:?}"
    );
    // Every byte was served once: each retry asked for the rest.
    assert_eq!(server.served_bytes(), delta.len() as u64);
    let log = f.log_text();
    let retries: Vec<&str> = log.lines().filter(|l| l.contains("retry")).collect();
    assert_eq!(retries.len(), 4, "{log}");
    for (line, request) in retries.iter().zip(&requests[1..]) {
        let at = request.range_start.unwrap();
        assert!(line.contains(&format!("bytes={at}-")), "{line} / {at}");
    }
}

/// Retries that happen within one read (a server that drops every answer
/// at once, three times) are stamped when each happened, not when the
/// download caught up: the waits between them (50, 100 ms) show.
#[test]
fn retries_are_logged_when_they_happen() {
    let f = Fixture::new(1 << 20, 8);
    let server = Server::start(
        f.delta(),
        Behaviour {
            drops: 3,
            drop_after: (0, 1),
            ..Behaviour::default()
        },
    );
    let out = f.apply(&server.url(), &[]);
    assert!(out.status.success(), "{}", stderr(&out));
    f.assert_done();
    let log = f.log_text();
    let retries: Vec<&str> = log.lines().filter(|l| l.contains("retry")).collect();
    assert_eq!(retries.len(), 3, "{log}");
    let stamp = |line: &str| {
        let time = line.split(' ').next().unwrap();
        chrono::DateTime::parse_from_rfc3339(time).unwrap_or_else(|e| panic!("{e}: {line}"))
    };
    for (pair, wait) in retries.windows(2).zip([50, 100]) {
        let gap = stamp(pair[1]) - stamp(pair[0]);
        assert!(
            gap >= chrono::TimeDelta::milliseconds(wait - 5),
            "{gap} between retries, {wait} ms expected: {log}"
        );
    }
}

#[test]
fn over_http_when_the_server_ignores_range() {
    let f = Fixture::new(4 << 20, 6);
    let delta = f.delta();
    let server = Server::start(
        delta.clone(),
        Behaviour {
            ranges: false,
            drops: 2,
            ..Behaviour::default()
        },
    );
    let out = f.apply(&server.url(), &[]);
    assert!(out.status.success(), "{}", stderr(&out));
    f.assert_done();
    let requests = server.requests();
    assert_eq!(requests.len(), 3, "{requests:?}");
    assert!(requests.iter().all(|r| r.status == 200), "{requests:?}");
    assert!(f.log_text().contains("ignored Range"), "{}", f.log_text());
}

#[test]
fn over_http_a_delta_that_changes_is_refused() {
    let f = Fixture::new(4 << 20, 7);
    let server = Server::start(
        f.delta(),
        Behaviour {
            drops: 1,
            change_after: Some(1),
            ..Behaviour::default()
        },
    );
    let out = f.apply(&server.url(), &[]);
    // The byte the error names is the one the retry asked for.
    let at = server.requests()[1].range_start.unwrap();
    assert_error(
        &out,
        &[
            &server.url(),
            &format!("reading byte {at}: "),
            &format!(
                "changed on the server during the download (asking for the rest at byte {at})"
            ),
        ],
    );
    f.assert_not_committed();
    assert_eq!(server.requests().len(), 2, "{:?}", server.requests());
}

#[test]
fn over_http_4xx_and_persistent_5xx_fail_with_the_status() {
    let f = Fixture::new(1 << 20, 8);
    let server = Server::start(
        f.delta(),
        Behaviour {
            status: Some(404),
            ..Behaviour::default()
        },
    );
    let out = f.apply(&server.url(), &[]);
    assert_error(&out, &[&server.url(), "404"]);
    assert_eq!(server.requests().len(), 1, "a 404 is not retried");
    f.assert_not_committed();

    server.set(Behaviour {
        status: Some(500),
        ..Behaviour::default()
    });
    server.reset_counts();
    let out = f.apply(&server.url(), &["--retries", "3"]);
    assert_error(&out, &[&server.url(), "500", "giving up after 3 retries"]);
    assert_eq!(server.requests().len(), 4, "{:?}", server.requests());
    f.assert_not_committed();
}

#[test]
fn over_http_a_trickle_keeps_progress_moving() {
    let f = Fixture::new(3 << 20, 9);
    let delta = f.delta();
    // About 1 MB/s: the download takes a second or more.
    let server = Server::start(
        delta.clone(),
        Behaviour {
            trickle: Some((8 << 10, Duration::from_millis(8))),
            ..Behaviour::default()
        },
    );
    let out = f.apply(&server.url(), &["--progress", "json"]);
    assert!(out.status.success(), "{}", stderr(&out));
    f.assert_done();
    let received: Vec<u64> = stdout(&out)
        .lines()
        .filter(|l| l.contains("\"step\":\"applying\""))
        .map(|l| json_u64(l, "delta_received"))
        .collect();
    let mut distinct = received.clone();
    distinct.dedup();
    assert!(
        distinct.len() >= 4,
        "progress did not move while downloading: {received:?}"
    );
    assert!(received.windows(2).all(|w| w[0] <= w[1]), "{received:?}");
    assert!(
        stdout(&out).contains(&format!("\"delta_len\":{}", delta.len())),
        "{}",
        stdout(&out)
    );
}

#[test]
fn kill_9_during_a_download_then_fetch_only_the_rest() {
    let f = Fixture::new(8 << 20, 10);
    let delta = f.delta();
    let server = Server::start(
        delta.clone(),
        Behaviour {
            trickle: Some((16 << 10, Duration::from_millis(4))),
            ..Behaviour::default()
        },
    );
    let url = server.url();
    let mut child = f.spawn_apply(
        &url,
        &[
            "--checkpoint-bytes",
            "256KiB",
            "--checkpoint-seconds",
            "0.05",
        ],
        Stdio::null(),
    );
    // Kill once the journal is well into the payloads (the first segments
    // are cheap copies).
    let mut segments = 1;
    while f.payload_offset(segments.min(20) as usize) < delta.len() as u64 / 3 {
        segments = f.wait_for_journal(&mut child, segments) + 1;
    }
    f.wait_for_journal(&mut child, segments);
    child.kill().unwrap();
    child.wait().unwrap();
    f.assert_not_committed();
    let journal = std::fs::read_to_string(f.path("out.img.journal")).unwrap();
    let done = json_u64(&journal, "segments_done") as usize;
    let resume_at = f.payload_offset(done);
    server.reset_counts();
    let out = f.apply(&url, &[]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(stdout(&out).contains("resumed"), "{}", stdout(&out));
    f.assert_done();
    let requests = server.requests();
    assert!(
        requests
            .iter()
            .any(|r| r.range_start == Some(resume_at) && r.status == 206),
        "no request for the rest at byte {resume_at}: {requests:?}"
    );
    // The rest, the index read again, and what the first answer had sent
    // before it was closed.
    let rest = delta.len() as u64 - resume_at;
    let served = server.served_bytes();
    assert!(
        served >= rest && served < rest + (512 << 10),
        "served {served} bytes for a rest of {rest} (delta {} bytes)",
        delta.len()
    );
}

#[test]
fn verify_and_info_read_a_pipe() {
    let f = Fixture::new(1 << 20, 12);
    for args in [
        &["verify", "-", "--keyring", "no-keyring"][..],
        &["info", "-"][..],
    ] {
        let out = f.run_piped(args, f.delta());
        assert!(out.status.success(), "{args:?}: {}", stderr(&out));
    }
    let mut damaged = f.delta();
    let last = damaged.len() - 1;
    damaged[last] ^= 1;
    let out = f.run_piped(&["verify", "-", "--keyring", "no-keyring"], damaged);
    assert_error(&out, &["delta stdin", "digest"]);
}

#[test]
fn a_streamed_payload_that_does_not_match_its_digest_is_refused() {
    let f = Fixture::new(2 << 20, 13);
    let mut damaged = f.delta();
    let last = damaged.len() - 100;
    damaged[last] ^= 1;
    let out = f.apply_piped(damaged, &[]);
    assert_error(&out, &["delta stdin", "payload digest mismatch"]);
    f.assert_not_committed();
    assert!(!f.path("out.img.partial").exists(), "damaged data kept");
}

/// `openssl s_server -WWW` serving the fixture's folder over TLS, with a
/// certificate for 127.0.0.1 signed by a CA made for the test; killed on
/// drop.
struct TlsServer {
    child: Child,
    port: u16,
}

impl TlsServer {
    fn start(dir: &std::path::Path) -> TlsServer {
        common::make_tls_leaf(dir);
        let port = TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let child = Command::new("openssl")
            .current_dir(dir)
            .args([
                "s_server", "-quiet", "-WWW", "-cert", "leaf.pem", "-key", "leaf.key",
            ])
            .args(["-accept", &format!("127.0.0.1:{port}")])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let started = Instant::now();
        while TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(
                started.elapsed() < Duration::from_secs(10),
                "s_server did not start"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        TlsServer { child, port }
    }
}

impl Drop for TlsServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[test]
fn over_https_with_the_devices_trust_store() {
    let f = Fixture::new(1 << 20, 14);
    let server = TlsServer::start(f.dir.path());
    let url = format!("https://127.0.0.1:{}/u.delta", server.port);
    // A CA the device does not trust: refused at once, not retried.
    let out = f
        .command(&["apply", "old.img", &url, "-o", "out.img"])
        .env("SSL_CERT_FILE", f.path("leaf.ext"))
        .output()
        .unwrap();
    assert_error(&out, &[&url, "invalid peer certificate", "not retried"]);
    assert!(!f.log_text().contains("retry"), "{}", f.log_text());
    f.assert_not_committed();
    // With the CA in the device's trust store (SSL_CERT_FILE), it applies.
    let out = f
        .command(&["apply", "old.img", &url, "-o", "out.img"])
        .env("SSL_CERT_FILE", f.path("ca.pem"))
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    f.assert_done();
}

#[test]
fn sigterm_while_a_download_waits_to_retry_cancels_at_once() {
    let f = Fixture::new(4 << 20, 15);
    let server = Server::start(
        f.delta(),
        Behaviour {
            drops: 100,
            drop_after: (100_000, 100_001),
            ..Behaviour::default()
        },
    );
    // A retry delay of an hour: a run that waited it out would not end
    // within the deadline.
    let mut child = f.spawn_apply(&server.url(), &["--retry-delay", "3600"], Stdio::null());
    // The client has given up on the dropped first response: it waits
    // (an hour) before the retry.
    poll_until("the client giving up the first response", || {
        server.given_up() >= 1
    });
    let status = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
    poll_until("the end of the run after SIGTERM", || {
        child.try_wait().unwrap().is_some()
    });
    let out = child.wait_with_output().unwrap();
    assert_eq!(out.status.code(), Some(4), "{}", stderr(&out));
    assert!(f.log_text().contains("retry 1/"), "{}", f.log_text());
    assert_eq!(server.requests().len(), 1, "{:?}", server.requests());
    f.assert_not_committed();
}

/// A delta streamed through a slow pipe (about 300 KiB/s), as a device
/// downloads it: `--progress json` sends an event at least every second
/// while bytes arrive, never reports more done than total, walks the steps
/// in order, and shows both the bytes received and the bytes written
/// moving.
#[test]
fn streamed_progress_never_looks_stuck() {
    let f = Fixture::new(6 << 20, 41);
    let delta = f.delta();
    assert!(delta.len() > 1 << 20, "a delta this small streams too fast");
    let mut child = f.spawn_apply("-", &["--progress", "json"], Stdio::piped());
    let mut stdin = child.stdin.take().unwrap();
    let writer = std::thread::spawn(move || {
        for chunk in delta.chunks(16 << 10) {
            stdin.write_all(chunk).unwrap();
            std::thread::sleep(Duration::from_millis(50));
        }
        Instant::now()
    });
    let stdout = BufReader::new(child.stdout.take().unwrap());
    let events: Vec<(Instant, serde_json::Value)> = stdout
        .lines()
        .map(|line| {
            let line = line.unwrap();
            let value = serde_json::from_str(&line).unwrap_or_else(|e| panic!("{e}: {line}"));
            (Instant::now(), value)
        })
        .collect();
    let last_byte = writer.join().unwrap();
    assert!(child.wait().unwrap().success());
    f.assert_done();

    let progress: Vec<&(Instant, serde_json::Value)> = events
        .iter()
        .filter(|(_, v)| v.get("step").is_some())
        .collect();
    for pair in progress.windows(2) {
        let (at, _) = pair[0];
        let (next, value) = pair[1];
        if *next <= last_byte {
            let gap = *next - *at;
            assert!(
                gap <= Duration::from_secs(1),
                "{gap:?} without an event before {value}"
            );
        }
    }
    let order = ["preparing", "applying", "verifying", "committing", "done"];
    let mut seen: Vec<&str> = Vec::new();
    for (_, v) in &progress {
        assert!(v["bytes_done"].as_u64() <= v["bytes_total"].as_u64(), "{v}");
        let step = v["step"].as_str().unwrap();
        if seen.last() != Some(&step) {
            seen.push(step);
        }
    }
    assert_eq!(seen, order, "steps out of order or missing");
    // Every step starts once and ends once, in that order, and nothing of
    // it is reported after its end.
    for step in order {
        let events: Vec<&str> = progress
            .iter()
            .filter(|(_, v)| v["step"] == step)
            .map(|(_, v)| v["event"].as_str().unwrap())
            .collect();
        assert_eq!(events.first(), Some(&"start"), "{step}: {events:?}");
        assert_eq!(events.last(), Some(&"end"), "{step}: {events:?}");
        let inner = &events[1..events.len() - 1];
        assert!(inner.iter().all(|e| *e == "progress"), "{step}: {events:?}");
    }
    let applying: Vec<&serde_json::Value> = progress
        .iter()
        .map(|(_, v)| v)
        .filter(|v| v["step"] == "applying")
        .collect();
    let moved = |key: &str| {
        let values: Vec<u64> = applying.iter().filter_map(|v| v[key].as_u64()).collect();
        values.windows(2).filter(|w| w[1] > w[0]).count()
    };
    assert!(moved("delta_received") >= 3, "bytes received did not move");
    assert!(moved("bytes_done") >= 3, "bytes written did not move");
    assert!(events.last().unwrap().1.get("result").is_some());
}
