//! Where the bytes of a delta go: plans every segment of OLD -> NEW and
//! prints, per section (ops, diff bytes, literals), raw and zstd sizes.
//!
//! Usage: `cargo run --release -p delta-core --example anatomy -- OLD NEW`
//! (with `ANATOMY_DUMP=DIR`, the three sections are also written to DIR).

use delta_core::internal::{plan_segment, BlockIndex};
use delta_core::{DiffOptions, Serial};

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let old = std::fs::read(&args[1]).expect("read OLD");
    let new = std::fs::read(&args[2]).expect("read NEW");
    let options = DiffOptions::default();
    let index = BlockIndex::build(&old, options.block_size, &Serial);
    let (mut ops, mut diff, mut lit, mut ops_count) = (Vec::new(), Vec::new(), Vec::new(), 0);
    let mut kinds = [0u64; 4];
    for start in (0..new.len()).step_by(4 << 20) {
        let range = start..(start + (4 << 20)).min(new.len());
        let plan = plan_segment(&old, &new, range, &index, &options);
        ops_count += plan.ops.len();
        for op in &plan.ops {
            let k = match op {
                delta_format::Op::Copy { .. } | delta_format::Op::CopyNew { .. } => 0,
                delta_format::Op::Zero { .. } => 1,
                delta_format::Op::Diff { .. } => 2,
                delta_format::Op::Literal { .. } => 3,
            };
            kinds[k] += op.len();
        }
        ops.extend(delta_format::stream::encode(&plan.ops, &[], &[]));
        diff.extend(plan.diff);
        lit.extend(plan.literal);
    }
    if let Some(dir) = std::env::var_os("ANATOMY_DUMP") {
        let dir = std::path::PathBuf::from(dir);
        for (name, bytes) in [("ops", &ops), ("diff", &diff), ("literal", &lit)] {
            std::fs::write(dir.join(name), bytes).expect("write dump");
        }
    }
    let z = |b: &[u8]| zstd::bulk::compress(b, 19).map(|c| c.len()).unwrap_or(0);
    println!(
        "ops: {ops_count} ops, {} bytes -> {} zstd",
        ops.len(),
        z(&ops)
    );
    println!(
        "diff: {} bytes ({} nonzero) -> {} zstd",
        diff.len(),
        diff.iter().filter(|&&b| b != 0).count(),
        z(&diff)
    );
    println!("literal: {} bytes -> {} zstd", lit.len(), z(&lit));
    println!(
        "bytes by op: copy {} zero {} diff {} literal {}",
        kinds[0], kinds[1], kinds[2], kinds[3]
    );
}
