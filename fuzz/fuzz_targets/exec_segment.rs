#![no_main]
//! See `delta_fuzz::checks::exec_segment` for the input layout and the
//! invariants.

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| delta_fuzz::checks::exec_segment(data));
