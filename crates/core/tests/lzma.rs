//! LZMA segments (format version 4): new executables compressed with LZMA2
//! after a branch filter, end to end through `generate` and `apply_slice`.

use delta_core::testing::Rng;
use delta_core::{apply_slice, generate, DeltaOptions, Serial};
use delta_format::kind::{self, BranchFilter};
use delta_format::{read_index, Index, Limits, FLAG_LZMA, FLAG_SEGMENT_KINDS};

/// The first `len` bytes of this test's own executable: real machine code
/// of the machine the tests run on, ELF header first.
fn machine_code(len: usize) -> Vec<u8> {
    let exe = std::fs::read(std::env::current_exe().unwrap()).unwrap();
    assert!(exe.len() >= len, "test executable of {} bytes", exe.len());
    exe[..len].to_vec()
}

/// An old image of text, and a new one that adds `code` at a 4 KiB
/// boundary (where a file system puts a new file) and edits the text.
fn pair(code: &[u8]) -> (Vec<u8>, Vec<u8>) {
    let mut rng = Rng::new(11);
    let old = rng.text(2 << 20);
    let mut new = old.clone();
    new[1000..1010].copy_from_slice(b"0123456789");
    new.extend_from_slice(code);
    new.resize(new.len().next_multiple_of(4096), 0);
    (old, new)
}

fn index(bytes: &[u8]) -> Index {
    read_index(&mut &bytes[..], &Limits::default()).unwrap()
}

/// The kind bytes of the delta's payloads.
fn kinds(delta: &delta_core::Delta) -> Vec<u8> {
    delta.payloads.iter().map(|p| p[0]).collect()
}

fn options(lzma: bool) -> DeltaOptions {
    DeltaOptions {
        segment_len: 1 << 20,
        lzma,
        ..DeltaOptions::default()
    }
}

#[test]
fn new_executables_become_lzma_segments_that_apply_and_are_smaller() {
    let (old, new) = pair(&machine_code(1 << 20));
    let with = generate(&old, &new, &options(true), &Serial).unwrap();
    let bytes = with.to_vec();
    let header = index(&bytes).header;
    assert_eq!(header.version(), 4);
    assert_eq!(
        header.flags & (FLAG_LZMA | FLAG_SEGMENT_KINDS),
        FLAG_LZMA | FLAG_SEGMENT_KINDS
    );
    assert!(kinds(&with).contains(&kind::LZMA), "{:?}", kinds(&with));
    // The branch filter of the machine the tests run on.
    let lzma = with.payloads.iter().find(|p| p[0] == kind::LZMA).unwrap();
    let expected = match std::env::consts::ARCH {
        "x86_64" | "x86" => BranchFilter::X86 as u8,
        "aarch64" => BranchFilter::Arm64 as u8,
        "arm" => BranchFilter::ArmThumb as u8,
        _ => BranchFilter::None as u8,
    };
    assert_eq!(lzma[1], expected);
    assert!(apply_slice(&old, &bytes, &Limits::default()).unwrap() == new);

    let without = generate(&old, &new, &options(false), &Serial)
        .unwrap()
        .to_vec();
    assert!(index(&without).header.version() < 4);
    assert!(
        bytes.len() * 100 < without.len() * 97,
        "with LZMA segments {} bytes, without {}",
        bytes.len(),
        without.len()
    );
    // The applier's memory covers the dictionary.
    let memory = index(&bytes).header.apply_memory;
    let tight = Limits {
        max_memory: memory - 1,
        ..Limits::default()
    };
    assert!(read_index(&mut &bytes[..], &tight).is_err());
}

#[test]
fn deltas_where_no_segment_gains_stay_byte_identical_to_version_2() {
    // Small edits of text: zstd against the old bytes wins everywhere.
    let mut rng = Rng::new(12);
    let old = rng.text(3 << 20);
    let mut new = old.clone();
    for at in (0..new.len()).step_by(300_000) {
        new[at] ^= 0x20;
    }
    let with = generate(&old, &new, &options(true), &Serial).unwrap();
    let without = generate(&old, &new, &options(false), &Serial).unwrap();
    assert_eq!(with.header.version(), 2);
    assert!(with.to_vec() == without.to_vec());
    assert!(apply_slice(&old, &with.to_vec(), &Limits::default()).unwrap() == new);
}

#[test]
fn a_damaged_lzma_payload_is_refused_with_its_segment() {
    let (old, new) = pair(&machine_code(256 << 10));
    let mut delta = generate(&old, &new, &options(true), &Serial).unwrap();
    let i = kinds(&delta).iter().position(|&k| k == kind::LZMA).unwrap();
    // Damage the LZMA2 data and make the table agree (as a hostile delta
    // would): the payload digest holds, the data does not decode to the
    // stated stream, or what it decodes to fails the output digest.
    let payload = &mut delta.payloads[i];
    let at = payload.len() / 2;
    payload[at] ^= 0xff;
    delta.segments[i].payload_digest = *blake3::hash(payload).as_bytes();
    let err = apply_slice(&old, &delta.to_vec(), &Limits::default())
        .unwrap_err()
        .to_string();
    assert!(err.contains(&format!("segment {i}")), "{err}");
    assert!(!err.contains("zstd") && !err.contains('\n'), "{err}");
    if err.contains("bad") {
        assert!(err.contains("(LZMA): bad LZMA2 data"), "{err}");
    }
}

#[test]
fn an_lzma_kind_without_the_header_flag_is_refused() {
    let (old, new) = pair(&machine_code(256 << 10));
    let mut delta = generate(&old, &new, &options(true), &Serial).unwrap();
    delta.header.flags &= !FLAG_LZMA;
    let err = apply_slice(&old, &delta.to_vec(), &Limits::default())
        .unwrap_err()
        .to_string();
    assert!(err.contains("kind byte"), "{err}");
}
