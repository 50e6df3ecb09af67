//! Gives the shared library its soname, `libdelta.so.<ABI>`: the major
//! number is `DELTA_ABI_VERSION` in `src/lib.rs`, read from there (as
//! `install.sh` does), so that the two cannot disagree.

fn main() {
    let lib = std::fs::read_to_string("src/lib.rs").expect("read src/lib.rs");
    let abi = lib
        .lines()
        .find_map(|line| line.strip_prefix("pub const DELTA_ABI_VERSION: c_uint = "))
        .and_then(|rest| rest.strip_suffix(';'))
        .and_then(|n| n.parse::<u32>().ok())
        .expect("src/lib.rs defines `pub const DELTA_ABI_VERSION: c_uint = N;`");
    println!("cargo:rustc-cdylib-link-arg=-Wl,-soname,libdelta.so.{abi}");
    println!("cargo:rerun-if-changed=build.rs");
    println!("cargo:rerun-if-changed=src/lib.rs");
}
