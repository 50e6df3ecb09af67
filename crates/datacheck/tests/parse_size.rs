//! `parse_size`: what people type for the limit.

use delta_datacheck::{parse_size, Error, DEFAULT_LIMIT};

#[test]
fn plain_bytes() {
    assert_eq!(parse_size("170000000").unwrap(), DEFAULT_LIMIT);
    assert_eq!(parse_size("170_000_000").unwrap(), DEFAULT_LIMIT);
    assert_eq!(parse_size("0").unwrap(), 0);
    assert_eq!(parse_size("512B").unwrap(), 512);
}

#[test]
fn decimal_units() {
    assert_eq!(parse_size("170MB").unwrap(), DEFAULT_LIMIT);
    assert_eq!(parse_size("170mb").unwrap(), DEFAULT_LIMIT);
    assert_eq!(parse_size("170 MB").unwrap(), DEFAULT_LIMIT);
    assert_eq!(parse_size("4kB").unwrap(), 4_000);
    assert_eq!(parse_size("4KB").unwrap(), 4_000);
    assert_eq!(parse_size("2GB").unwrap(), 2_000_000_000);
}

#[test]
fn binary_units() {
    assert_eq!(parse_size("162MiB").unwrap(), 162 * 1024 * 1024);
    assert_eq!(parse_size("162mib").unwrap(), 169_869_312);
    assert_eq!(parse_size("4KiB").unwrap(), 4096);
    assert_eq!(parse_size("4kib").unwrap(), 4096);
    assert_eq!(parse_size("3GiB").unwrap(), 3 << 30);
    assert_eq!(parse_size("  1GiB\n").unwrap(), 1 << 30);
}

#[test]
fn garbage_is_refused_with_a_reason() {
    for text in [
        "", " ", "MB", "abc", "-5", "+5", "1.5GB", "12XB", "170 M B", "1e9", "0x10", "_", "5 5",
    ] {
        match parse_size(text) {
            Err(Error::InvalidSize { text: got, reason }) => {
                assert_eq!(got, text);
                assert!(!reason.is_empty());
            }
            other => panic!("{text:?} gave {other:?}"),
        }
    }
}

#[test]
fn ambiguous_single_letters_are_refused() {
    for text in ["170M", "170m", "4k", "4K", "2G"] {
        let err = parse_size(text).unwrap_err();
        assert!(err.to_string().contains("ambiguous"), "{text}: {err}");
    }
}

#[test]
fn error_message_quotes_the_text() {
    let err = parse_size("12XB").unwrap_err();
    assert_eq!(
        err.to_string(),
        "invalid size \"12XB\": unknown unit: use B, kB, MB, GB, TB, KiB, MiB, GiB or TiB"
    );
}

#[test]
fn overflow_is_refused() {
    assert!(parse_size("99999999999999999999").is_err());
    assert!(parse_size("20000000TB").is_err());
}
