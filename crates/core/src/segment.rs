//! Where a segment sits ([`SegmentRef`]) and how much memory one may take
//! ([`SEGMENT_MEMORY`]): what both halves share, the generator to plan and
//! re-apply segments, the applier to apply them.

use delta_format::kind::Kinds;
use delta_format::SegmentEntry;

/// Most memory (payload, stream and window) the generator lets one segment
/// need, so that its deltas apply under [`DEFAULT_MAX_MEMORY`]: 13.5 MiB,
/// what is left of it after [`APPLY_OVERHEAD`] (8 MiB) and the writer's
/// 2 MiB. Measured on x86-64 (release build): the applier's resident
/// memory is 5.5 MB for a delta of a few bytes, and about `apply_memory`
/// plus 10.8 MB on ext4 OS images (os-minor: 13.6 MB of buffers, 24.3 MB
/// peak).
pub const SEGMENT_MEMORY: u64 = 27 << 19;

/// Where a segment sits: its table entry plus the offsets derived from the
/// table.
#[derive(Debug, Clone, Copy)]
pub struct SegmentRef<'a> {
    /// Index in the table.
    pub index: u64,
    /// First byte of the new image it produces.
    pub new_offset: u64,
    /// Offset of its payload in the delta file.
    pub payload_offset: u64,
    /// The table entry.
    pub entry: &'a SegmentEntry,
    /// Bytes of new image its COPY_NEW ops may read: `new_offset` when the
    /// header has `FLAG_COPY_NEW`, else 0.
    pub new_limit: u64,
    /// The payload starts with a window list (the header has
    /// `FLAG_WINDOW_LIST`).
    pub window_list: bool,
    /// The payload starts with a kind byte (the header has
    /// `FLAG_SEGMENT_KINDS`).
    pub kinds: bool,
    /// The kinds beyond plain and deflate the header allows (`FLAG_LZMA`,
    /// `FLAG_DEFLATE_CHUNKS`).
    pub allowed: Kinds,
}

impl<'a> SegmentRef<'a> {
    /// Segment `i` of a decoded index (`i` must be below its segment count).
    pub fn of(index: &'a delta_format::Index, i: usize) -> SegmentRef<'a> {
        let new_offset = index.new_offsets[i];
        SegmentRef {
            index: i as u64,
            new_offset,
            payload_offset: index.payload_offsets[i],
            entry: &index.segments[i],
            new_limit: if index.header.has_copy_new() {
                new_offset
            } else {
                0
            },
            window_list: index.header.has_window_list(),
            kinds: index.header.has_segment_kinds(),
            allowed: Kinds::of_flags(index.header.flags),
        }
    }
}
