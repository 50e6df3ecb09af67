//! Invariants of the `map_image` target, shared with the regression test.
//!
//! This file uses only `delta-fsmap`, so that `crates/fsmap/tests/regress.rs`
//! can include it with `#[path]` (as `crates/apply/tests/regress.rs` does
//! with `checks.rs`) without the fuzz crate's other dependencies.
//!
//! Memory: mapping allocates at most about twice the input's length
//! (`delta-fsmap`'s limits), and inputs are bounded by libFuzzer's `-max_len`.

use delta_fsmap::{ContainerKind, FileMap};

/// `map_image`: the input is an image. Mapping it as ext4, as tar, or by
/// detection never panics, and a map it returns is sorted by path, has
/// extents inside the image and inside each file, in order and not
/// overlapping, and `contiguous()` ranges inside the image.
pub fn map_image(data: &[u8]) {
    let detected = delta_fsmap::map_image(data);
    if let Ok(map) = &detected {
        check_map(data, map);
    }
    for (kind, result) in [
        (ContainerKind::Ext4, delta_fsmap::map_ext4(data)),
        (ContainerKind::Tar, delta_fsmap::map_tar(data)),
    ] {
        let Ok(map) = result else { continue };
        assert_eq!(map.kind, kind, "map_{kind:?} returned another kind");
        check_map(data, &map);
        if detected.as_ref().is_ok_and(|d| d.kind == kind) {
            assert_eq!(
                detected.as_ref().ok(),
                Some(&map),
                "map_image differs from map_{kind:?}"
            );
        }
    }
}

fn check_map(data: &[u8], map: &FileMap) {
    let len = data.len() as u64;
    assert!(
        map.files.windows(2).all(|w| w[0].path <= w[1].path),
        "files not sorted by path"
    );
    for file in &map.files {
        let mut end = 0;
        for e in &file.extents {
            assert!(e.len > 0, "{}: empty extent", file.path);
            assert!(
                e.logical >= end,
                "{}: extents overlap or are out of order",
                file.path
            );
            end = e.logical.checked_add(e.len).expect("extent end overflows");
            assert!(end <= file.size, "{}: extent past the file size", file.path);
            let physical_end = e.physical.checked_add(e.len).expect("extent end overflows");
            assert!(physical_end <= len, "{}: extent past the image", file.path);
        }
        if let Some(range) = file.contiguous() {
            assert!(
                range.end <= len && range.end - range.start == file.size,
                "{}: bad run",
                file.path
            );
        }
    }
}
