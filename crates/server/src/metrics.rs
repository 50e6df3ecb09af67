//! `/metrics`: the service's counters in Prometheus' text format.

use std::fmt::Write;
use std::sync::atomic::{AtomicU64, Ordering};

/// Counters of one process (each replica has its own).
#[derive(Debug, Default)]
pub(crate) struct Metrics {
    pub(crate) requests: AtomicU64,
    pub(crate) responses_2xx: AtomicU64,
    pub(crate) responses_4xx: AtomicU64,
    pub(crate) responses_5xx: AtomicU64,
    /// Delta requests answered from the store.
    pub(crate) hits: AtomicU64,
    /// Delta requests answered 202 (being made).
    pub(crate) misses: AtomicU64,
    pub(crate) generations: AtomicU64,
    pub(crate) generation_failures: AtomicU64,
    pub(crate) generation_millis: AtomicU64,
    pub(crate) bytes_served: AtomicU64,
    pub(crate) images_pushed: AtomicU64,
    pub(crate) evictions: AtomicU64,
    /// Generations running or waiting in this process.
    pub(crate) queue_depth: AtomicU64,
}

impl Metrics {
    /// The text a Prometheus scrape reads.
    pub(crate) fn render(&self) -> String {
        let get = |c: &AtomicU64| c.load(Ordering::Relaxed);
        let mut out = String::new();
        let mut metric = |name: &str, kind: &str, help: &str, lines: &[(&str, u64)]| {
            let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} {kind}");
            for (labels, value) in lines {
                let _ = writeln!(out, "{name}{labels} {value}");
            }
        };
        metric(
            "delta_requests_total",
            "counter",
            "HTTP requests received.",
            &[("", get(&self.requests))],
        );
        metric(
            "delta_responses_total",
            "counter",
            "HTTP responses by status class.",
            &[
                ("{class=\"2xx\"}", get(&self.responses_2xx)),
                ("{class=\"4xx\"}", get(&self.responses_4xx)),
                ("{class=\"5xx\"}", get(&self.responses_5xx)),
            ],
        );
        metric(
            "delta_cache_hits_total",
            "counter",
            "Delta requests answered from the store.",
            &[("", get(&self.hits))],
        );
        metric(
            "delta_cache_misses_total",
            "counter",
            "Delta requests answered 202 while the delta is made.",
            &[("", get(&self.misses))],
        );
        metric(
            "delta_generations_total",
            "counter",
            "Deltas this replica made and published.",
            &[("", get(&self.generations))],
        );
        metric(
            "delta_generation_failures_total",
            "counter",
            "Generations that failed.",
            &[("", get(&self.generation_failures))],
        );
        let millis = get(&self.generation_millis);
        let _ = writeln!(
            out,
            "# HELP delta_generation_seconds_total Seconds spent making deltas.\n\
             # TYPE delta_generation_seconds_total counter\n\
             delta_generation_seconds_total {}.{:03}",
            millis / 1000,
            millis % 1000
        );
        let mut metric = |name: &str, kind: &str, help: &str, value: u64| {
            let _ = writeln!(
                out,
                "# HELP {name} {help}\n# TYPE {name} {kind}\n{name} {value}"
            );
        };
        metric(
            "delta_bytes_served_total",
            "counter",
            "Delta bytes sent to clients.",
            get(&self.bytes_served),
        );
        metric(
            "delta_images_pushed_total",
            "counter",
            "Images uploaded and verified.",
            get(&self.images_pushed),
        );
        metric(
            "delta_evictions_total",
            "counter",
            "Deltas removed by the cache limit.",
            get(&self.evictions),
        );
        metric(
            "delta_queue_depth",
            "gauge",
            "Generations running or queued in this replica.",
            get(&self.queue_depth),
        );
        out
    }
}
