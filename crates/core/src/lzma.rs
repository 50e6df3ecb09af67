//! LZMA segments (kind 2, see [`delta_format::kind`]): a plain segment's op
//! stream compressed with LZMA2 after a branch filter, for the new
//! executables and libraries that no old bytes resemble.
//!
//! On the os-minor corpus pair, the 32 MB of such files compress to 9.03 MB
//! with zstd level 19 and to 8.05 MB with the x86 filter and LZMA2 (xz's
//! `--x86 --lzma2=preset=9`): the filter makes calls to one function look
//! alike, and LZMA2 codes machine code more finely than zstd.
//!
//! Memory: the decoder holds a dictionary of
//! [`lzma_dict_size`](delta_format::kind::lzma_dict_size) bytes, which the
//! entry's `stream_len` counts, besides the op stream it decodes into.

use crate::error::{Error, Result};
use delta_format::kind::{lzma_dict_size, BranchFilter, Lzma};
use liblzma::stream::{Action, Filters, LzmaOptions, Status, Stream};

/// LZMA2 preset of the generator: level 6 gives level 9's size on machine
/// code in segments of a few MiB, at about zstd level 19's speed.
const PRESET: u32 = 6;

/// The filter chain of `filter` then LZMA2 with `options`.
fn chain(filter: BranchFilter, options: &LzmaOptions) -> Filters {
    let mut filters = Filters::new();
    match filter {
        BranchFilter::None => {}
        BranchFilter::X86 => {
            filters.x86();
        }
        BranchFilter::Arm64 => {
            filters.arm64();
        }
        BranchFilter::ArmThumb => {
            filters.arm_thumb();
        }
    }
    filters.lzma2(options);
    filters
}

/// LZMA2 options with the dictionary an op stream of `ops_len` bytes gets.
fn options(ops_len: u64, preset: u32) -> Result<LzmaOptions> {
    let mut options = LzmaOptions::new_preset(preset).map_err(|_| Error::Compress {
        reason: "liblzma refused its preset",
    })?;
    // Callers keep ops_len ≤ MAX_LZMA_STREAM (64 MiB).
    options.dict_size(lzma_dict_size(ops_len).min(u32::MAX.into()) as u32);
    Ok(options)
}

/// The raw LZMA2 data of op stream `ops`, after `filter`, as an LZMA
/// segment holds it (`delta_core::compress_lzma`).
///
/// # Errors
/// [`Error::Compress`] when liblzma fails (out of memory).
pub fn compress(ops: &[u8], filter: BranchFilter) -> Result<Vec<u8>> {
    let fail = |_| Error::Compress {
        reason: "liblzma failed to compress",
    };
    let options = options(ops.len() as u64, PRESET)?;
    let mut encoder = Stream::new_raw_encoder(&chain(filter, &options)).map_err(fail)?;
    let mut out = Vec::with_capacity(ops.len() / 2 + 1024);
    loop {
        let consumed = encoder.total_in() as usize;
        if out.len() == out.capacity() {
            out.reserve(out.capacity().max(4096));
        }
        match encoder
            .process_vec(&ops[consumed..], &mut out, Action::Finish)
            .map_err(fail)?
        {
            Status::StreamEnd => return Ok(out),
            Status::Ok | Status::GetCheck | Status::MemNeeded => {}
        }
    }
}

/// Decodes the LZMA segment `parts` of segment `segment` into `out`, which
/// it must fill exactly (`out` is `ops_len` bytes), with the data ending
/// exactly at its end marker.
///
/// # Errors
/// [`Error::Lzma`] for data liblzma refuses, that ends early, or
/// that holds bytes after its end; [`Error::StreamLength`] for data that
/// decodes to more or fewer bytes than `out`.
pub(crate) fn decompress(segment: u64, parts: &Lzma<'_>, out: &mut [u8]) -> Result<()> {
    let bad = |reason| Error::Lzma { segment, reason };
    let options = options(parts.ops_len, PRESET)?;
    let mut decoder = Stream::new_raw_decoder(&chain(parts.filter, &options))
        .map_err(|_| bad("liblzma refused the filter chain"))?;
    let data = parts.data;
    loop {
        let (read, written) = (decoder.total_in() as usize, decoder.total_out() as usize);
        let status = decoder
            .process(&data[read..], &mut out[written..], Action::Finish)
            .map_err(|_| bad("liblzma finds it damaged"))?;
        let (now_read, now_written) = (decoder.total_in() as usize, decoder.total_out() as usize);
        match status {
            Status::StreamEnd => {
                if now_read != data.len() {
                    return Err(bad("the payload holds bytes after its end"));
                }
                if now_written != out.len() {
                    return Err(Error::StreamLength {
                        segment,
                        stated: out.len() as u64,
                        found: now_written as u64,
                    });
                }
                return Ok(());
            }
            _ if now_written == out.len() && now_read == read && now_written == written => {
                // The buffer is full and the data goes on.
                return Err(Error::StreamLength {
                    segment,
                    stated: out.len() as u64,
                    found: out.len() as u64 + 1,
                });
            }
            _ if now_read == read && now_written == written => {
                return Err(bad("it ends before its end marker"));
            }
            _ => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::Rng;

    fn parts(filter: BranchFilter, ops_len: usize, data: &[u8]) -> Lzma<'_> {
        Lzma {
            filter,
            ops_len: ops_len as u64,
            data,
        }
    }

    #[test]
    fn every_filter_round_trips() {
        let mut rng = Rng::new(3);
        let mut ops = rng.text(300_000);
        // Call-like bytes for the branch filters to rewrite.
        for i in (0..ops.len() - 5).step_by(97) {
            ops[i] = 0xE8;
        }
        for filter in [
            BranchFilter::None,
            BranchFilter::X86,
            BranchFilter::Arm64,
            BranchFilter::ArmThumb,
        ] {
            let data = compress(&ops, filter).unwrap();
            assert!(data.len() < ops.len() / 2, "{filter:?}: {}", data.len());
            let mut out = vec![0; ops.len()];
            decompress(0, &parts(filter, ops.len(), &data), &mut out).unwrap();
            assert!(out == ops, "{filter:?}");
        }
    }

    #[test]
    fn damaged_short_long_and_trailing_data_fail_cleanly() {
        let ops = Rng::new(4).text(50_000);
        let data = compress(&ops, BranchFilter::X86).unwrap();
        let decode = |data: &[u8], len: usize| {
            let mut out = vec![0; len];
            decompress(7, &parts(BranchFilter::X86, len, data), &mut out)
                .unwrap_err()
                .to_string()
        };
        let err = decode(&data, ops.len() - 1);
        assert!(
            err.contains("segment 7") || err.contains("segment[7]"),
            "{err}"
        );
        assert!(decode(&data, ops.len() + 1).contains("stream"), "too short");
        assert!(decode(&data[..data.len() - 1], ops.len()).contains("end"));
        let mut trailing = data.clone();
        trailing.push(0);
        assert!(decode(&trailing, ops.len()).contains("after"));
        // Flipped bytes anywhere: an error or, where LZMA2 cannot tell, other
        // bytes (the output digest catches those) — never a panic.
        for i in (0..data.len()).step_by(data.len() / 50 + 1) {
            let mut bad = data.clone();
            bad[i] ^= 0x55;
            let mut out = vec![0; ops.len()];
            let _ = decompress(7, &parts(BranchFilter::X86, ops.len(), &bad), &mut out);
        }
    }
}
