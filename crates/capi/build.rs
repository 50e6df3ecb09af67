//! Gives the shared library its soname, `libdelta.so.<ABI>`: the major
//! number is `DELTA_ABI_VERSION` in `src/lib.rs` (a test checks they agree).

fn main() {
    println!("cargo:rustc-cdylib-link-arg=-Wl,-soname,libdelta.so.0");
    println!("cargo:rerun-if-changed=build.rs");
}
