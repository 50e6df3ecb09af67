//! The committed fixtures match what `testdata/generate.sh` writes.

use delta_core::testing::fixtures;
use std::path::Path;

#[test]
fn fixtures_do_not_drift() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../testdata");
    for (name, bytes) in fixtures() {
        let committed = std::fs::read(dir.join(name)).unwrap_or_default();
        assert!(
            committed == bytes,
            "testdata/{name} drifted from its generator; refresh with testdata/generate.sh"
        );
    }
}

#[test]
fn sample_pair_round_trips_small() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../testdata/sample");
    let old = std::fs::read(dir.join("old.img")).unwrap();
    let new = std::fs::read(dir.join("new.img")).unwrap();
    let delta = delta_core::diff_slices(&old, &new, &Default::default()).unwrap();
    assert_eq!(
        delta_core::apply_slice(&old, &delta, &Default::default()).unwrap(),
        new
    );
    assert!(
        delta.len() < new.len() / 4,
        "delta {} of {}",
        delta.len(),
        new.len()
    );
}
