//! `delta serve` as operators and devices meet it: real server processes
//! on 127.0.0.1 sharing a folder store, spoken to over HTTP, and
//! `delta apply` fetching from them.

mod common;

use common::{delta_in, poll_until, Lines, APPLY_DEFAULTS, DELTA};
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

/// Pseudo-random bytes (xorshift), the same for the same seed.
fn noise(len: usize, seed: u64) -> Vec<u8> {
    let mut x = seed | 1;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            (x >> 24) as u8
        })
        .collect()
}

/// An old image of `len` bytes and a new one: most blocks moved, some
/// changed, some new.
fn image_pair(len: usize, seed: u64) -> (Vec<u8>, Vec<u8>) {
    let old = noise(len, seed);
    let mut new = Vec::with_capacity(len);
    let fresh = noise(len / 8, seed + 1);
    new.extend_from_slice(&old[len / 2..]);
    new.extend_from_slice(&fresh);
    new.extend_from_slice(&old[..len / 2 - len / 8]);
    for i in (0..new.len()).step_by(65_536) {
        new[i] ^= 0x5a;
    }
    (old, new)
}

/// A folder with two images, pushed into a store.
struct Site {
    dir: tempfile::TempDir,
    old: String,
    new: String,
}

impl Site {
    fn new(len: usize, seed: u64) -> Site {
        let dir = tempfile::tempdir().unwrap();
        for sub in ["locks", "logs"] {
            std::fs::create_dir_all(dir.path().join(sub)).unwrap();
        }
        let (old, new) = image_pair(len, seed);
        std::fs::write(dir.path().join("old.img"), &old).unwrap();
        std::fs::write(dir.path().join("new.img"), &new).unwrap();
        std::fs::write(dir.path().join("admin.tokens"), "admin-secret\n").unwrap();
        std::fs::write(dir.path().join("device.tokens"), "# fleet\ndevice-secret\n").unwrap();
        std::fs::write(dir.path().join("device.token"), "device-secret\n").unwrap();
        let site = Site {
            dir,
            old: String::new(),
            new: String::new(),
        };
        let old = site.push("old.img");
        let new = site.push("new.img");
        Site { old, new, ..site }
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    /// `delta push IMAGE store`: the digest.
    fn push(&self, image: &str) -> String {
        let out = delta_in(self.dir.path(), &["push", image, "store"], &[])
            .output()
            .unwrap();
        assert!(out.status.success(), "{}", common::stderr(&out));
        let digest = common::stdout(&out).trim().to_owned();
        assert_eq!(digest.len(), 64, "{digest:?}");
        digest
    }

    fn delta_url(&self, server: &Server) -> String {
        format!("http://{}/v1/deltas/{}/{}", server.addr, self.old, self.new)
    }

    /// Starts `delta serve` on this site's store with `extra` options.
    fn serve(&self, extra: &[&str]) -> Server {
        Server::start(self.dir.path(), "store", extra, &[])
    }

    /// `delta apply old.img URL -o out.img` with the device token.
    fn apply(&self, url: &str, extra: &[&str]) -> std::process::Output {
        let mut args = vec![
            "apply",
            "old.img",
            url,
            "-o",
            "out.img",
            "--token-file",
            "device.token",
        ];
        args.extend_from_slice(extra);
        delta_in(self.dir.path(), &args, &APPLY_DEFAULTS)
            .output()
            .unwrap()
    }

    fn assert_out_is_new(&self) {
        let out = std::fs::read(self.path("out.img")).unwrap();
        assert!(
            out == std::fs::read(self.path("new.img")).unwrap(),
            "out.img differs"
        );
    }

    /// The update logs' text.
    fn log_text(&self) -> String {
        let mut text = String::new();
        for entry in std::fs::read_dir(self.path("logs")).unwrap() {
            text.push_str(&std::fs::read_to_string(entry.unwrap().path()).unwrap());
        }
        text
    }

    /// Every file under the store, and every file beside it.
    fn files(&self) -> Vec<PathBuf> {
        let mut out = Vec::new();
        let mut todo = vec![self.dir.path().to_owned()];
        while let Some(dir) = todo.pop() {
            for entry in std::fs::read_dir(&dir).unwrap() {
                let path = entry.unwrap().path();
                if path.is_dir() {
                    todo.push(path.clone());
                }
                out.push(path);
            }
        }
        out.sort();
        out
    }
}

/// A `delta serve` process, killed when dropped.
struct Server {
    child: Child,
    addr: SocketAddr,
    /// The rest of its log (read to the end, so it never blocks).
    _log: std::sync::Mutex<Lines>,
}

impl Server {
    fn start(dir: &Path, store: &str, extra: &[&str], env: &[(&str, String)]) -> Server {
        let mut child = Command::new(DELTA)
            .current_dir(dir)
            .envs(env.iter().map(|(k, v)| (k, v)))
            .args([
                "serve",
                "--store",
                store,
                "--listen",
                "127.0.0.1:0",
                "--admin-tokens",
                "admin.tokens",
                "--device-tokens",
                "device.tokens",
            ])
            .args(extra)
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let mut log = Lines::of(child.stderr.take().unwrap());
        let line = log.wait_for("listening", |l| l.contains("\"listening\""));
        let value: serde_json::Value = serde_json::from_str(&line).unwrap();
        let addr = value["address"].as_str().unwrap().parse().unwrap();
        Server {
            child,
            addr,
            _log: std::sync::Mutex::new(log),
        }
    }

    fn get(&self, path: &str, token: Option<&str>) -> Answer {
        request(self.addr, "GET", path, token, &[], b"")
    }

    /// One counter of `/metrics`.
    fn metric(&self, name: &str) -> u64 {
        let answer = self.get("/metrics", None);
        assert_eq!(answer.status, 200);
        String::from_utf8_lossy(&answer.body)
            .lines()
            .find_map(|l| l.strip_prefix(name)?.strip_prefix(' '))
            .unwrap_or_else(|| panic!("no {name} in /metrics"))
            .trim()
            .parse::<f64>()
            .unwrap() as u64
    }

    /// Asks for `path` until it is answered 200; the answer.
    fn wait_ready(&self, path: &str) -> Answer {
        let mut last = None;
        poll_until("the delta", || {
            let answer = self.get(path, Some("device-secret"));
            assert!(
                [200, 202].contains(&answer.status),
                "HTTP {}: {}",
                answer.status,
                String::from_utf8_lossy(&answer.body)
            );
            let done = answer.status == 200;
            if !done {
                std::thread::sleep(Duration::from_millis(50));
            }
            last = Some(answer);
            done
        });
        last.unwrap()
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Asks every server for `path` five times at once, then until each
/// answers 200; checks that one generation made it, served alike by all.
fn asked_of_all_made_once(servers: &[Server], path: &str) -> Vec<Answer> {
    std::thread::scope(|s| {
        for server in servers {
            for _ in 0..5 {
                s.spawn(|| server.get(path, Some("device-secret")));
            }
        }
    });
    let answers: Vec<Answer> = servers.iter().map(|s| s.wait_ready(path)).collect();
    let made: u64 = servers
        .iter()
        .map(|s| s.metric("delta_generations_total"))
        .sum();
    assert_eq!(made, 1, "generations across the replicas");
    for answer in &answers[1..] {
        assert_eq!(answer.header("etag"), answers[0].header("etag"));
    }
    answers
}

/// An HTTP answer.
#[derive(Debug)]
struct Answer {
    status: u16,
    head: String,
    body: Vec<u8>,
}

impl Answer {
    fn header(&self, name: &str) -> Option<String> {
        self.head.lines().find_map(|l| {
            let (n, v) = l.split_once(':')?;
            n.eq_ignore_ascii_case(name).then(|| v.trim().to_owned())
        })
    }
}

/// One HTTP/1.1 request on its own connection.
fn request(
    addr: SocketAddr,
    method: &str,
    path: &str,
    token: Option<&str>,
    headers: &[(&str, &str)],
    body: &[u8],
) -> Answer {
    let mut stream = TcpStream::connect(addr).unwrap();
    let mut head = format!("{method} {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n");
    if let Some(token) = token {
        head.push_str(&format!("Authorization: Bearer {token}\r\n"));
    }
    for (name, value) in headers {
        head.push_str(&format!("{name}: {value}\r\n"));
    }
    if !body.is_empty() {
        head.push_str(&format!("Content-Length: {}\r\n", body.len()));
    }
    head.push_str("\r\n");
    stream.write_all(head.as_bytes()).unwrap();
    let _ = stream.write_all(body);
    let mut raw = Vec::new();
    let _ = stream.read_to_end(&mut raw);
    let split = raw
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .unwrap_or_else(|| panic!("no HTTP head in {:?}", String::from_utf8_lossy(&raw)));
    let head = String::from_utf8_lossy(&raw[..split]).into_owned();
    let status = head.split(' ').nth(1).unwrap().parse().unwrap();
    Answer {
        status,
        head,
        body: raw[split + 4..].to_vec(),
    }
}

/// A TCP proxy to `to` that cuts the first connection carrying more than
/// `cut` bytes to the client, after `cut` bytes.
struct CuttingProxy {
    addr: SocketAddr,
    cut_done: Arc<AtomicBool>,
}

impl CuttingProxy {
    fn start(to: SocketAddr, cut: usize) -> CuttingProxy {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let cut_done = Arc::new(AtomicBool::new(false));
        let flag = Arc::clone(&cut_done);
        std::thread::spawn(move || {
            for client in listener.incoming() {
                let Ok(mut client) = client else { return };
                let mut upstream = TcpStream::connect(to).unwrap();
                let mut up_writer = upstream.try_clone().unwrap();
                let mut client_reader = client.try_clone().unwrap();
                std::thread::spawn(move || {
                    let _ = std::io::copy(&mut client_reader, &mut up_writer);
                });
                let flag = Arc::clone(&flag);
                std::thread::spawn(move || {
                    let mut sent = 0;
                    let mut buf = [0u8; 8192];
                    loop {
                        let n = match upstream.read(&mut buf) {
                            Ok(0) | Err(_) => break,
                            Ok(n) => n,
                        };
                        if !flag.load(Ordering::SeqCst) && sent + n > cut {
                            let _ = client.write_all(&buf[..cut - sent]);
                            flag.store(true, Ordering::SeqCst);
                            break;
                        }
                        if client.write_all(&buf[..n]).is_err() {
                            break;
                        }
                        sent += n;
                    }
                    let _ = client.shutdown(std::net::Shutdown::Both);
                });
            }
        });
        CuttingProxy { addr, cut_done }
    }
}

#[test]
fn a_device_applies_from_the_service_through_a_dropped_connection() {
    let site = Site::new(4 << 20, 1);
    let server = site.serve(&[]);
    let proxy = CuttingProxy::start(server.addr, 300_000);
    // The first ask starts the generation: the applier is answered 202
    // and waits, then downloads, is cut off, resumes with Range.
    let url = format!("http://{}/v1/deltas/{}/{}", proxy.addr, site.old, site.new);
    let out = site.apply(&url, &[]);
    let err = common::stderr(&out);
    assert!(out.status.success(), "{err}\n{}", common::stdout(&out));
    site.assert_out_is_new();
    assert!(proxy.cut_done.load(Ordering::SeqCst), "the proxy never cut");
    let log = site.log_text();
    assert!(log.contains("still making the delta (HTTP 202)"), "{log}");
    assert!(log.contains("with Range: bytes="), "{log}");
    assert_eq!(server.metric("delta_generations_total"), 1);
    // Over 300 kB were sent twice at most: the rest was asked by Range.
    let delta_len = server
        .wait_ready(&format!("/v1/deltas/{}/{}", site.old, site.new))
        .body
        .len() as u64;
    assert!(
        delta_len > 300_000,
        "delta of {delta_len} bytes: cut after it"
    );
    assert!(server.metric("delta_bytes_served_total") < 3 * delta_len);
}

#[test]
fn fifty_concurrent_requests_make_one_generation() {
    let site = Site::new(2 << 20, 2);
    let server = site.serve(&["--max-jobs", "2"]);
    let path = format!("/v1/deltas/{}/{}", site.old, site.new);
    let statuses: Vec<u16> = std::thread::scope(|s| {
        let asks: Vec<_> = (0..50)
            .map(|_| s.spawn(|| server.get(&path, Some("device-secret")).status))
            .collect();
        asks.into_iter().map(|a| a.join().unwrap()).collect()
    });
    assert!(
        statuses.iter().all(|s| [200, 202].contains(s)),
        "{statuses:?}"
    );
    assert!(statuses.contains(&202), "{statuses:?}");
    let answer = server.wait_ready(&path);
    assert_eq!(server.metric("delta_generations_total"), 1);
    let blobs = std::fs::read_dir(site.path("store/blobs")).unwrap().count();
    assert_eq!(blobs, 1);
    let etag = answer.header("etag").unwrap();
    assert_eq!(etag, format!("\"{}\"", blake3::hash(&answer.body).to_hex()));
}

#[test]
fn three_replicas_sharing_a_store_make_one_generation_and_the_same_bytes() {
    let site = Site::new(2 << 20, 3);
    let servers: Vec<Server> = (0..3)
        .map(|i| site.serve(&["--replica", &format!("r{i}"), "--lease", "2"]))
        .collect();
    let path = format!("/v1/deltas/{}/{}", site.old, site.new);
    let answers = asked_of_all_made_once(&servers, &path);
    for answer in &answers[1..] {
        assert!(answer.body == answers[0].body);
    }
    assert!(
        std::fs::read_dir(site.path("store/leases"))
            .unwrap()
            .all(|d| {
                std::fs::read_dir(d.unwrap().path())
                    .unwrap()
                    .next()
                    .is_none()
            }),
        "leases left behind"
    );
}

#[test]
fn kill_9_of_the_generating_replica_is_taken_over_after_its_lease() {
    let site = Site::new(48 << 20, 4);
    let mut first = site.serve(&["--replica", "first", "--lease", "1"]);
    let second = site.serve(&["--replica", "second", "--lease", "1"]);
    let path = format!("/v1/deltas/{}/{}", site.old, site.new);
    // Until the first replica is generating (not merely queued).
    poll_until("the first replica generating", || {
        let answer = first.get(&path, Some("device-secret"));
        assert_eq!(
            answer.status, 202,
            "it finished before the kill: {answer:?}"
        );
        String::from_utf8_lossy(&answer.body).contains("\"generating\"")
    });
    first.child.kill().unwrap();
    first.child.wait().unwrap();
    // The second replica sees the lease held, then takes it over.
    let answer = second.get(&path, Some("device-secret"));
    assert_eq!(answer.status, 202, "{answer:?}");
    let answer = second.wait_ready(&path);
    assert_eq!(second.metric("delta_generations_total"), 1);
    let url = site.delta_url(&second);
    let out = site.apply(&url, &[]);
    assert!(out.status.success(), "{}", common::stderr(&out));
    site.assert_out_is_new();
    assert!(!answer.body.is_empty());
}

#[test]
fn deltas_do_not_depend_on_the_replica_or_its_threads() {
    let a = Site::new(3 << 20, 5);
    let b = Site::new(3 << 20, 5);
    let key = a.path("fleet.key");
    let made = delta_in(a.dir.path(), &["keygen", "-o", "fleet.key"], &[])
        .output()
        .unwrap();
    assert!(made.status.success(), "{}", common::stderr(&made));
    let key = key.to_str().unwrap();
    let one = a.serve(&["--threads", "1", "--sign", key]);
    let two = b.serve(&["--threads", "2", "--sign", key]);
    let path = format!("/v1/deltas/{}/{}", a.old, a.new);
    let from_one = one.wait_ready(&path);
    let from_two = two.wait_ready(&path);
    assert!(
        from_one.body == from_two.body,
        "two stores made different deltas"
    );
    assert_eq!(from_one.header("etag"), from_two.header("etag"));
    // Signed with the fleet key: a device trusting it accepts the delta.
    std::fs::copy(format!("{key}.pub"), a.path("trusted.pub")).unwrap();
    let out = a.apply(&a.delta_url(&one), &["--trusted-keys", "trusted.pub"]);
    assert!(out.status.success(), "{}", common::stderr(&out));
    a.assert_out_is_new();
}

#[test]
fn full_payloads_and_unknown_images() {
    let site = Site::new(1 << 20, 6);
    let server = site.serve(&[]);
    let unknown = blake3::hash(b"not pushed").to_hex().to_string();
    let answer = server.get(
        &format!("/v1/deltas/{unknown}/{}", site.new),
        Some("device-secret"),
    );
    assert_eq!(answer.status, 404);
    let text = String::from_utf8_lossy(&answer.body);
    assert!(text.contains(&format!("source image {unknown}")), "{text}");
    let answer = server.get(
        &format!("/v1/deltas/{}/{unknown}", site.old),
        Some("device-secret"),
    );
    assert!(String::from_utf8_lossy(&answer.body).contains("target image"));
    // A device with no image in the store gets the whole new image.
    let full = format!("http://{}/v1/full/{}", server.addr, site.new);
    std::fs::remove_file(site.path("out.img")).ok();
    let out = delta_in(
        site.dir.path(),
        &[
            "apply",
            &full,
            "-o",
            "out.img",
            "--token-file",
            "device.token",
        ],
        &APPLY_DEFAULTS,
    )
    .output()
    .unwrap();
    assert!(out.status.success(), "{}", common::stderr(&out));
    site.assert_out_is_new();
}

#[test]
fn ranges_and_if_range_follow_the_etag() {
    let site = Site::new(1 << 20, 7);
    let server = site.serve(&[]);
    let path = format!("/v1/deltas/{}/{}", site.old, site.new);
    let whole = server.wait_ready(&path);
    let etag = whole.header("etag").unwrap();
    let len = whole.body.len();
    let ranged = |headers: &[(&str, &str)]| {
        request(
            server.addr,
            "GET",
            &path,
            Some("device-secret"),
            headers,
            b"",
        )
    };
    let part = ranged(&[("Range", "bytes=100-")]);
    assert_eq!(part.status, 206);
    assert!(part.body == whole.body[100..]);
    assert_eq!(
        part.header("content-range").unwrap(),
        format!("bytes 100-{}/{len}", len - 1)
    );
    let part = ranged(&[("Range", "bytes=100-"), ("If-Range", &etag)]);
    assert_eq!(part.status, 206);
    let stale = ranged(&[("Range", "bytes=100-"), ("If-Range", "\"other\"")]);
    assert_eq!(stale.status, 200);
    assert!(stale.body == whole.body);
    let past = ranged(&[("Range", &format!("bytes={len}-"))]);
    assert_eq!(past.status, 416);
}

#[test]
fn bad_requests_get_4xx_and_nothing_is_written_outside_the_store() {
    let site = Site::new(256 << 10, 8);
    let server = site.serve(&[]);
    let before = site.files();
    let good = &site.new;
    // Path, token, extra headers, the status expected.
    type Case<'a> = (String, Option<&'a str>, Vec<(&'a str, String)>, u16);
    let cases: Vec<Case> = vec![
        (
            format!("/v1/deltas/{}/{good}", &good[..40]),
            Some("device-secret"),
            vec![],
            400,
        ),
        (
            format!("/v1/deltas/{}x/{good}", &good[..63]),
            Some("device-secret"),
            vec![],
            400,
        ),
        (
            format!("/v1/deltas/../../{good}"),
            Some("device-secret"),
            vec![],
            404,
        ),
        (
            "/v1/full/..%2F..%2Fetc%2Fpasswd".to_owned(),
            Some("device-secret"),
            vec![],
            400,
        ),
        (format!("/v1/deltas/{}/{good}", site.old), None, vec![], 401),
        (
            format!("/v1/deltas/{}/{good}", site.old),
            Some("wrong"),
            vec![],
            401,
        ),
        (
            format!("/v1/deltas/{}/{good}", site.old),
            Some("device-secret"),
            vec![("X-Big", "a".repeat(64 << 10))],
            431,
        ),
    ];
    for (path, token, headers, expected) in cases {
        let headers: Vec<(&str, &str)> = headers.iter().map(|(n, v)| (*n, v.as_str())).collect();
        let answer = request(server.addr, "GET", &path, token, &headers, b"");
        assert_eq!(answer.status, expected, "GET {path}: {answer:?}");
    }
    // A body on GET.
    let answer = request(
        server.addr,
        "GET",
        &format!("/v1/deltas/{}/{good}", site.old),
        Some("device-secret"),
        &[],
        b"surprise",
    );
    assert_eq!(answer.status, 400);
    // Pushes: a device token may not; a body that is not the digest named
    // is not stored.
    let put = |token, digest: &str, body: &[u8]| {
        request(
            server.addr,
            "PUT",
            &format!("/v1/images/{digest}"),
            token,
            &[],
            body,
        )
    };
    let body = b"an image".to_vec();
    let digest = blake3::hash(&body).to_hex().to_string();
    assert_eq!(put(Some("device-secret"), &digest, &body).status, 403);
    assert_eq!(put(None, &digest, &body).status, 401);
    let elsewhere = blake3::hash(b"another image").to_hex().to_string();
    let wrong = put(Some("admin-secret"), &elsewhere, &body);
    assert_eq!(wrong.status, 422, "{wrong:?}");
    assert_eq!(put(Some("admin-secret"), "../x", &body).status, 404);
    assert_eq!(site.files(), before, "files changed");
    assert_eq!(put(Some("admin-secret"), &digest, &body).status, 201);
    assert!(site.path(&format!("store/images/{digest}")).exists());
    let answer = server.get(&format!("/v1/images/{digest}"), Some("device-secret"));
    assert_eq!(answer.status, 200);
}

#[test]
fn push_over_http_with_an_admin_token() {
    let site = Site::new(256 << 10, 9);
    let server = site.serve(&[]);
    std::fs::write(site.path("admin.token"), "admin-secret\n").unwrap();
    std::fs::write(site.path("other.img"), noise(300_000, 99)).unwrap();
    let url = format!("http://{}", server.addr);
    let out = delta_in(
        site.dir.path(),
        &["push", "other.img", &url, "--token-file", "admin.token"],
        &[],
    )
    .output()
    .unwrap();
    assert!(out.status.success(), "{}", common::stderr(&out));
    let digest = common::stdout(&out).trim().to_owned();
    let stored = std::fs::read(site.path(&format!("store/images/{digest}"))).unwrap();
    assert!(stored == std::fs::read(site.path("other.img")).unwrap());
    assert_eq!(server.metric("delta_images_pushed_total"), 1);
    let out = delta_in(
        site.dir.path(),
        &["push", "other.img", &url, "--token-file", "device.token"],
        &[],
    )
    .output()
    .unwrap();
    assert!(!out.status.success());
    assert!(
        common::stderr(&out).contains("403"),
        "{}",
        common::stderr(&out)
    );
}

#[test]
fn a_full_queue_answers_503_and_the_cache_keeps_its_limit() {
    let site = Site::new(4 << 20, 10);
    std::fs::write(site.path("third.img"), noise(4 << 20, 77)).unwrap();
    let third = site.push("third.img");
    let first = format!("/v1/deltas/{}/{}", site.old, site.new);
    let second = format!("/v1/deltas/{}/{third}", site.new);
    let kept = {
        let server = site.serve(&["--max-jobs", "1", "--queue", "0"]);
        assert_eq!(server.get(&first, Some("device-secret")).status, 202);
        let busy = server.get(&second, Some("device-secret"));
        assert_eq!(busy.status, 503, "{busy:?}");
        assert!(busy.header("retry-after").is_some());
        server.wait_ready(&first);
        server.wait_ready(&second).body.len()
    };
    assert_eq!(
        std::fs::read_dir(site.path("store/blobs")).unwrap().count(),
        2
    );
    // A replica whose limit holds one of them removes the older.
    let server = site.serve(&["--cache-size", &(kept + 1).to_string()]);
    poll_until("the cache trimmed", || {
        server.metric("delta_evictions_total") == 1
    });
    assert_eq!(
        std::fs::read_dir(site.path("store/blobs")).unwrap().count(),
        1
    );
    assert_eq!(server.get(&second, Some("device-secret")).status, 200);
    assert_eq!(server.get(&first, Some("device-secret")).status, 202);
}

/// A real S3-compatible server (moto's, installed by
/// `scripts/s3-server.sh`) on a free port, with one bucket; killed when
/// dropped.
struct S3 {
    child: Child,
    port: u16,
}

impl S3 {
    fn start(bucket: &str) -> S3 {
        // $DELTA_S3_SERVER, else what scripts/s3-server.sh installs (once,
        // into a venv) and names.
        let program = std::env::var("DELTA_S3_SERVER").unwrap_or_else(|_| {
            let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../scripts/s3-server.sh");
            let out = Command::new(&script).output().unwrap();
            assert!(
                out.status.success(),
                "{} failed (it needs python3 with venv and PyPI): {}",
                script.display(),
                common::stderr(&out)
            );
            common::stdout(&out).trim().to_owned()
        });
        assert!(
            Path::new(&program).exists(),
            "no S3 server at {program}: run scripts/s3-server.sh (or set DELTA_S3_SERVER)"
        );
        let port = TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let child = Command::new(&program)
            .args(["-H", "127.0.0.1", "-p", &port.to_string()])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let s3 = S3 { child, port };
        let addr: SocketAddr = ([127, 0, 0, 1], port).into();
        poll_until("the S3 server", || TcpStream::connect(addr).is_ok());
        let made = request(addr, "PUT", &format!("/{bucket}"), None, &[], b"");
        assert_eq!(made.status, 200, "create bucket: {made:?}");
        s3
    }

    /// The variables that point `object_store` at this server.
    fn env(&self) -> Vec<(&'static str, String)> {
        vec![
            ("AWS_ACCESS_KEY_ID", "test".into()),
            ("AWS_SECRET_ACCESS_KEY", "test".into()),
            ("AWS_REGION", "us-east-1".into()),
            ("AWS_ENDPOINT", format!("http://127.0.0.1:{}", self.port)),
            ("AWS_ALLOW_HTTP", "true".into()),
        ]
    }
}

impl Drop for S3 {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[test]
fn replicas_sharing_an_s3_bucket_make_one_generation_and_devices_apply_it() {
    let s3 = S3::start("fleet");
    let site = Site::new(2 << 20, 11);
    let store = "s3://fleet/releases";
    let env = s3.env();
    // Images go in through the service (an admin push) and straight in.
    let push = |image: &str, to: &str, extra: &[&str]| {
        let mut args = vec!["push", image, to];
        args.extend_from_slice(extra);
        let out = delta_in(site.dir.path(), &args, &[])
            .envs(env.iter().map(|(k, v)| (k, v)))
            .output()
            .unwrap();
        assert!(out.status.success(), "{}", common::stderr(&out));
        common::stdout(&out).trim().to_owned()
    };
    assert_eq!(push("old.img", store, &[]), site.old);
    let servers: Vec<Server> = (0..3)
        .map(|i| {
            let replica = format!("s3-{i}");
            Server::start(
                site.dir.path(),
                store,
                &[
                    "--replica",
                    &replica,
                    "--lease",
                    "2",
                    "--scratch",
                    "scratch",
                ],
                &env,
            )
        })
        .collect();
    std::fs::write(site.path("admin.token"), "admin-secret\n").unwrap();
    let url = format!("http://{}", servers[0].addr);
    assert_eq!(
        push("new.img", &url, &["--token-file", "admin.token"]),
        site.new
    );
    let path = format!("/v1/deltas/{}/{}", site.old, site.new);
    asked_of_all_made_once(&servers, &path);
    let out = site.apply(&site.delta_url(&servers[2]), &[]);
    assert!(out.status.success(), "{}", common::stderr(&out));
    site.assert_out_is_new();
    // The bucket holds the images, one blob and one ref, and no lease.
    let list = request(
        ([127, 0, 0, 1], s3.port).into(),
        "GET",
        "/fleet?list-type=2",
        None,
        &[],
        b"",
    );
    let keys: Vec<&str> = std::str::from_utf8(&list.body)
        .unwrap()
        .split("<Key>")
        .skip(1)
        .filter_map(|k| k.split("</Key>").next())
        .collect();
    assert_eq!(keys.len(), 4, "{keys:?}");
    assert!(keys.iter().all(|k| !k.contains("/leases/")), "{keys:?}");
}

#[test]
fn sigterm_lets_answers_under_way_finish_then_exits() {
    let site = Site::new(2 << 20, 12);
    let mut server = site.serve(&[]);
    let path = format!("/v1/deltas/{}/{}", site.old, site.new);
    let whole = server.wait_ready(&path).body;
    // A download under way: its head read, its body not.
    let mut stream = TcpStream::connect(server.addr).unwrap();
    write!(
        stream,
        "GET {path} HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer device-secret\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut first = [0u8; 64];
    stream.read_exact(&mut first).unwrap();
    assert!(first.starts_with(b"HTTP/1.1 200"));
    let pid = server.child.id().to_string();
    let killed = Command::new("kill").args(["-TERM", &pid]).status().unwrap();
    assert!(killed.success());
    let mut rest = Vec::new();
    stream.read_to_end(&mut rest).unwrap();
    let raw = [&first[..], &rest].concat();
    let body_at = raw.windows(4).position(|w| w == b"\r\n\r\n").unwrap() + 4;
    assert!(raw[body_at..] == whole[..], "the answer under way was cut");
    let status = server.child.wait().unwrap();
    assert!(status.success(), "{status:?}");
    assert!(TcpStream::connect(server.addr).is_err(), "still accepting");
}

#[test]
fn precompute_fills_the_store_so_devices_are_answered_at_once() {
    let site = Site::new(1 << 20, 13);
    std::fs::write(site.path("older.img"), noise(1 << 20, 14)).unwrap();
    let older = site.push("older.img");
    let precompute = |from: &[&str]| {
        let mut args = vec!["precompute", "--store", "store", "--to", &site.new];
        for f in from {
            args.extend(["--from", f]);
        }
        delta_in(site.dir.path(), &args, &[]).output().unwrap()
    };
    let out = precompute(&[&site.old, &older]);
    assert!(out.status.success(), "{}", common::stderr(&out));
    assert_eq!(
        std::fs::read_dir(site.path("store/deltas"))
            .unwrap()
            .count(),
        2
    );
    let server = site.serve(&[]);
    for from in [&site.old, &older] {
        let answer = server.get(
            &format!("/v1/deltas/{from}/{}", site.new),
            Some("device-secret"),
        );
        assert_eq!(answer.status, 200, "{answer:?}");
    }
    assert_eq!(server.metric("delta_generations_total"), 0);
    let out = site.apply(&site.delta_url(&server), &[]);
    assert!(out.status.success(), "{}", common::stderr(&out));
    site.assert_out_is_new();
    // An unknown source is refused before any work, naming it.
    let unknown = blake3::hash(b"x").to_hex().to_string();
    let out = precompute(&[&unknown]);
    assert!(!out.status.success());
    assert!(
        common::stderr(&out).contains(&unknown),
        "{}",
        common::stderr(&out)
    );
}

#[test]
fn pushes_over_the_size_limit_are_refused() {
    let site = Site::new(64 << 10, 15);
    let server = site.serve(&["--max-image-size", "1000"]);
    let body = noise(5000, 16);
    let digest = blake3::hash(&body).to_hex().to_string();
    let answer = request(
        server.addr,
        "PUT",
        &format!("/v1/images/{digest}"),
        Some("admin-secret"),
        &[],
        &body,
    );
    assert_eq!(answer.status, 413, "{answer:?}");
    assert!(!site.path(&format!("store/images/{digest}")).exists());
    // Without Content-Length (chunked), the limit holds as bytes arrive.
    let mut stream = TcpStream::connect(server.addr).unwrap();
    write!(
        stream,
        "PUT /v1/images/{digest} HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer admin-secret\r\n\
         Transfer-Encoding: chunked\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    for chunk in body.chunks(500) {
        let _ = write!(stream, "{:x}\r\n", chunk.len());
        let _ = stream.write_all(chunk);
        let _ = stream.write_all(b"\r\n");
    }
    let _ = stream.write_all(b"0\r\n\r\n");
    let mut raw = Vec::new();
    let _ = stream.read_to_end(&mut raw);
    assert!(
        raw.starts_with(b"HTTP/1.1 413"),
        "{}",
        String::from_utf8_lossy(&raw)
    );
    assert!(!site.path(&format!("store/images/{digest}")).exists());
}

#[test]
fn https_with_tls_cert_and_key() {
    let site = Site::new(1 << 20, 17);
    common::make_tls_leaf(site.dir.path());
    let server = site.serve(&["--tls-cert", "leaf.pem", "--tls-key", "leaf.key"]);
    let url = format!(
        "https://127.0.0.1:{}/v1/deltas/{}/{}",
        server.addr.port(),
        site.old,
        site.new
    );
    let out = delta_in(
        site.dir.path(),
        &[
            "apply",
            "old.img",
            &url,
            "-o",
            "out.img",
            "--token-file",
            "device.token",
        ],
        &APPLY_DEFAULTS,
    )
    .env("SSL_CERT_FILE", site.path("ca.pem"))
    .output()
    .unwrap();
    assert!(out.status.success(), "{}", common::stderr(&out));
    site.assert_out_is_new();
    // Plain HTTP to the TLS port is not answered as HTTP.
    let mut stream = TcpStream::connect(server.addr).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    let _ = stream.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n");
    let mut raw = Vec::new();
    let _ = stream.read_to_end(&mut raw);
    assert!(!raw.starts_with(b"HTTP/1.1 200"));
}

#[test]
fn an_image_that_is_not_what_its_name_says_makes_no_delta() {
    let site = Site::new(256 << 10, 18);
    // Damage the stored target after its push.
    let stored = site.path(&format!("store/images/{}", site.new));
    let mut bytes = std::fs::read(&stored).unwrap();
    bytes[1000] ^= 1;
    std::fs::write(&stored, bytes).unwrap();
    let server = site.serve(&[]);
    let path = format!("/v1/deltas/{}/{}", site.old, site.new);
    let mut last = None;
    poll_until("the generation to fail", || {
        let answer = server.get(&path, Some("device-secret"));
        let failed = answer.status == 500;
        last = Some(answer);
        failed
    });
    let text = String::from_utf8_lossy(&last.unwrap().body).into_owned();
    assert!(text.contains("store is damaged"), "{text}");
    assert_eq!(
        std::fs::read_dir(site.path("store/deltas"))
            .unwrap()
            .count(),
        0
    );
    assert_eq!(
        std::fs::read_dir(site.path("store/blobs")).unwrap().count(),
        0
    );
}
