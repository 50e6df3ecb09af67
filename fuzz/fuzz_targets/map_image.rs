#![no_main]
//! See `delta_fuzz::map_image::map_image` for the invariants.

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| delta_fuzz::map_image::map_image(data));
