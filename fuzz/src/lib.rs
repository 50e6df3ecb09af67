//! Fuzz targets of the delta engine, one per entry point that reads
//! untrusted bytes: `decode_header`, `decode_ops`, `apply`, `roundtrip`,
//! `decode_signatures`, `map_image` and `deflate_segment`.
//!
//! The targets in `fuzz_targets/` are one line each; the invariants live in
//! [`checks`], which `crates/apply/tests/regress.rs` also compiles (with
//! `#[path]`) to replay `testdata/regress/<target>/*` as a regular test.
#![forbid(unsafe_code)]

pub mod checks;
pub mod map_image;
