//! A load run against a running `delta serve`: CLIENTS threads fetch one
//! URL path REQUESTS times in all, each request on its own connection,
//! reading every byte; prints throughput and latency percentiles.
//!
//!     cargo run --release -p delta-server --example load -- 127.0.0.1:8080 /v1/deltas/A/B 100 2000 [TOKEN]

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

fn main() {
    let args: Vec<String> = std::env::args().collect();
    if args.len() < 5 {
        eprintln!("usage: load ADDR PATH CLIENTS REQUESTS [TOKEN]");
        std::process::exit(2);
    }
    let addr: SocketAddr = args[1].parse().expect("ADDR: host:port");
    let path = args[2].clone();
    let clients: usize = args[3].parse().expect("CLIENTS: a number");
    let requests: usize = args[4].parse().expect("REQUESTS: a number");
    let token = args.get(5).cloned();
    let next = Arc::new(AtomicUsize::new(0));
    let started = Instant::now();
    let workers: Vec<_> = (0..clients)
        .map(|_| {
            let (next, path, token) = (Arc::clone(&next), path.clone(), token.clone());
            std::thread::spawn(move || {
                let mut out = Vec::new();
                while next.fetch_add(1, Ordering::Relaxed) < requests {
                    out.push(fetch(addr, &path, token.as_deref()));
                }
                out
            })
        })
        .collect();
    let mut results: Vec<(Duration, u64)> = workers
        .into_iter()
        .flat_map(|w| w.join().expect("a client thread"))
        .collect();
    let elapsed = started.elapsed();
    results.sort();
    let bytes: u64 = results.iter().map(|r| r.1).sum();
    let pct = |p: f64| results[((results.len() as f64 * p) as usize).min(results.len() - 1)].0;
    println!(
        "{} requests by {clients} clients in {:.1} s: {:.1} requests/s, {:.0} MB/s; latency p50 {:.0} ms, p99 {:.0} ms, max {:.0} ms",
        results.len(),
        elapsed.as_secs_f64(),
        results.len() as f64 / elapsed.as_secs_f64(),
        bytes as f64 / 1e6 / elapsed.as_secs_f64(),
        pct(0.50).as_secs_f64() * 1e3,
        pct(0.99).as_secs_f64() * 1e3,
        results.last().map_or(0.0, |r| r.0.as_secs_f64() * 1e3),
    );
}

/// One GET on a new connection, read to the end: its time and bytes.
fn fetch(addr: SocketAddr, path: &str, token: Option<&str>) -> (Duration, u64) {
    let started = Instant::now();
    let mut stream = TcpStream::connect(addr).expect("connect");
    let auth = token.map_or(String::new(), |t| format!("Authorization: Bearer {t}\r\n"));
    write!(
        stream,
        "GET {path} HTTP/1.1\r\nHost: {addr}\r\n{auth}Connection: close\r\n\r\n"
    )
    .expect("send");
    let mut buf = vec![0u8; 256 << 10];
    let mut total = 0u64;
    let mut head = Vec::new();
    loop {
        let n = stream.read(&mut buf).expect("read");
        if n == 0 {
            break;
        }
        if head.len() < 16 {
            head.extend_from_slice(&buf[..n.min(16)]);
        }
        total += n as u64;
    }
    assert!(
        head.starts_with(b"HTTP/1.1 200"),
        "{}",
        String::from_utf8_lossy(&head)
    );
    (started.elapsed(), total)
}
