//! Time spent applying each kind of segment, for the update log: what an
//! operator needs to estimate a device's update time.

use delta_core::SegmentRef;
use delta_format::kind;
use std::time::Duration;

/// The kinds, by their kind byte, and their names in the log.
const NAMES: [&str; 5] = ["plain", "deflate", "lzma", "deflate-chunks", "exec"];

#[derive(Debug, Clone, Copy, Default)]
struct Cost {
    segments: u64,
    bytes: u64,
    time: Duration,
}

/// Segments, new-image bytes and wall time (on the thread that applied
/// them) of each kind.
#[derive(Debug, Clone, Default)]
pub(crate) struct Costs {
    kinds: [Cost; NAMES.len()],
}

/// The kind of segment `seg`, from its payload's kind byte (plain without
/// one); None for a byte no kind has (the segment's check refuses it).
pub(crate) fn kind_of(seg: &SegmentRef<'_>, payload: &[u8]) -> Option<usize> {
    let kind = if seg.kinds {
        *payload.first()?
    } else {
        kind::PLAIN
    };
    Some(usize::from(kind)).filter(|&k| k < NAMES.len())
}

impl Costs {
    /// Counts one segment of `kind`, `bytes` of new image in `time`.
    pub(crate) fn add(&mut self, kind: Option<usize>, bytes: u64, time: Duration) {
        if let Some(cost) = kind.and_then(|k| self.kinds.get_mut(k)) {
            cost.segments += 1;
            cost.bytes += bytes;
            cost.time += time;
        }
    }

    /// Adds what `other` counted.
    pub(crate) fn merge(&mut self, other: &Costs) {
        for (mine, theirs) in self.kinds.iter_mut().zip(&other.kinds) {
            mine.segments += theirs.segments;
            mine.bytes += theirs.bytes;
            mine.time += theirs.time;
        }
    }

    /// One log line: each kind met, with its milliseconds per MiB.
    pub(crate) fn line(&self) -> String {
        let parts: Vec<String> = NAMES
            .iter()
            .zip(&self.kinds)
            .filter(|(_, c)| c.segments > 0)
            .map(|(name, c)| {
                let mib = c.bytes as f64 / f64::from(1 << 20);
                let ms = c.time.as_secs_f64() * 1000.0;
                format!(
                    "{name} {} segments, {} bytes, {ms:.0} ms ({:.1} ms/MiB)",
                    c.segments,
                    c.bytes,
                    if mib > 0.0 { ms / mib } else { 0.0 }
                )
            })
            .collect();
        format!("time applying segments, by kind: {}", parts.join("; "))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kinds_add_up_and_unknown_ones_are_left_out() {
        let mut a = Costs::default();
        a.add(Some(2), 2 << 20, Duration::from_millis(30));
        a.add(None, 1 << 20, Duration::from_secs(9));
        let mut b = Costs::default();
        b.add(Some(2), 1 << 20, Duration::from_millis(15));
        b.add(Some(0), 4 << 20, Duration::from_millis(4));
        a.merge(&b);
        assert_eq!(
            a.line(),
            "time applying segments, by kind: plain 1 segments, 4194304 bytes, 4 ms (1.0 \
             ms/MiB); lzma 2 segments, 3145728 bytes, 45 ms (15.0 ms/MiB)"
        );
    }
}
