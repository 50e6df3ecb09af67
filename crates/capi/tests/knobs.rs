//! Every knob of the Rust options reaches the C API or is left out on
//! purpose, with the reason written here: a field added to
//! `DeltaOptions`, `DiffOptions`, `EncodeOptions`, `GenOptions` or
//! `ApplyOptions` fails to compile below (the patterns are exhaustive)
//! until it is listed, and a listed C field must be in `include/delta.h`
//! (which `tests/header.rs` keeps equal to the crate), as every field of
//! the C options structs must carry a Rust knob.
// Calling a C ABI is unsafe; each block says why it holds.
#![allow(unsafe_code)]

use delta::{delta_apply_options_default, delta_gen_options_default};
use delta_apply::ApplyOptions;
use delta_gen::{DeltaOptions, DiffOptions, EncodeOptions, GenOptions};
use std::collections::BTreeSet;

/// Where a Rust knob goes in the C API.
#[derive(Debug)]
enum Knob {
    /// These fields of the C struct carry it.
    C(&'static [&'static str]),
    /// A nested options struct, checked on its own.
    Nested(&'static str),
    /// Not in the C API, for this reason.
    Out(&'static str),
}
use Knob::{Nested, Out, C};

/// The knobs of one Rust options struct: `Type => "CStruct" { field:
/// Knob, ... }`. The destructuring is exhaustive, so a new field of `Type`
/// does not compile until it is listed.
macro_rules! knobs {
    ($ty:ident => $c:literal { $($field:ident: $knob:expr),* $(,)? }) => {{
        let _exhaustive = |options: &$ty| {
            let $ty { $($field: _),* } = options;
        };
        (stringify!($ty), $c, vec![$((stringify!($field), $knob)),*])
    }};
}

type Table = (&'static str, &'static str, Vec<(&'static str, Knob)>);

fn tables() -> Vec<Table> {
    vec![
        knobs!(GenOptions => "DeltaGenOptions" {
            delta: Nested("DeltaOptions"),
            threads: C(&["threads"]),
            signing_keys: Out(
                "the C API has no key type: deltas it makes are unsigned, and `delta sign` \
                 signs them afterwards",
            ),
            replace: C(&["replace"]),
            progress: Out(
                "no progress callback for generation yet (a build server runs `delta gen \
                 --progress json`); it would need its own C callback type",
            ),
        }),
        knobs!(DeltaOptions => "DeltaGenOptions" {
            diff: Nested("DiffOptions"),
            encode: Nested("EncodeOptions"),
            segment_len: C(&["segment_len"]),
            full: C(&["full"]),
            migration: C(&["migration"]),
            merge_len: C(&["merge_len"]),
            copy_new: C(&["copy_new"]),
            window_list: C(&["window_list"]),
            deflate: C(&["deflate"]),
            lzma: C(&["lzma"]),
            exec: C(&["exec"]),
            report: Out(
                "the per-file report has no C result to go in (`delta gen --report FILE.json` \
                 writes it); it changes no byte of the delta",
            ),
        }),
        knobs!(DiffOptions => "DeltaGenOptions" {
            block_size: Out(
                "the matcher's block width is tuned for OS images (4 KiB file-system blocks); \
                 `delta gen` does not offer it either",
            ),
            max_reference: C(&["max_reference"]),
        }),
        knobs!(EncodeOptions => "DeltaGenOptions" {
            level: C(&["level"]),
            max_memory: Out(
                "the per-segment apply memory is what every applier's default limit accepts; \
                 `delta gen` does not offer it either",
            ),
        }),
        knobs!(ApplyOptions => "DeltaApplyOptions" {
            memory_limit: C(&["memory_limit"]),
            verify_source: C(&["verify_source"]),
            lock_root: C(&["lock_root"]),
            lock_poll: C(&["lock_poll_ms"]),
            lock_timeout: C(&["lock_timeout_ms"]),
            override_lock: C(&["override_lock"]),
            supervisor_config: C(&["supervisor_config"]),
            commit_hook: C(&["commit_hook"]),
            log_dir: C(&["log_dir", "no_log"]),
            keep_logs: C(&["keep_logs"]),
            state_dir: C(&["state_dir"]),
            instance_lock: C(&["instance_lock"]),
            migration: C(&["migration"]),
            data_dir: C(&["data_dir"]),
            data_limit: C(&["data_limit"]),
            checkpoint_bytes: Out(
                "journal checkpoint spacing is a test knob (hidden in `delta apply` too); the \
                 default bounds what a power cut costs",
            ),
            checkpoint_interval: Out(
                "journal checkpoint spacing is a test knob (hidden in `delta apply` too); the \
                 default bounds what a power cut costs",
            ),
            max_image_size: C(&["max_image_size"]),
            trusted_keys: C(&["trusted_keys"]),
            keyring: C(&["keyring"]),
            expect_new: C(&["expect_new"]),
            compare_zero_runs: C(&["compare_zero_runs"]),
            threads: C(&["threads"]),
        }),
    ]
}

/// The field names of `typedef struct NAME { ... } NAME;` in the header.
fn c_fields(header: &str, name: &str) -> BTreeSet<String> {
    let start = header
        .find(&format!("typedef struct {name} {{"))
        .unwrap_or_else(|| panic!("struct {name} in delta.h"));
    let body = &header[start..];
    let body = &body[body.find('{').unwrap() + 1..body.find(&format!("}} {name};")).unwrap()];
    body.lines()
        .map(str::trim)
        .filter(|line| !line.starts_with("//") && line.ends_with(';'))
        .map(|line| {
            let decl = line.trim_end_matches(';');
            let name = decl.rsplit([' ', '*']).next().unwrap();
            name.split('[').next().unwrap().to_owned()
        })
        .collect()
}

#[test]
fn every_rust_knob_is_in_the_c_api_or_left_out_with_a_reason() {
    let header = include_str!("../include/delta.h");
    let tables = tables();
    let mut claimed: BTreeSet<(&str, &str)> = BTreeSet::new();
    let mut missing = Vec::new();
    for (rust, c_struct, knobs) in &tables {
        let fields = c_fields(header, c_struct);
        for (field, knob) in knobs {
            match knob {
                C(names) => {
                    for &name in *names {
                        if fields.contains(name) {
                            claimed.insert((*c_struct, name));
                        } else {
                            missing.push(format!("{rust}::{field} -> {c_struct}.{name}"));
                        }
                    }
                }
                Nested(inner) => assert!(
                    tables.iter().any(|(name, _, _)| name == inner),
                    "{rust}::{field}: no table for {inner}"
                ),
                Out(reason) => {
                    assert!(reason.len() > 20, "{rust}::{field}: say why it is left out")
                }
            }
        }
    }
    assert!(
        missing.is_empty(),
        "knobs mapped to C fields that delta.h does not have: {missing:#?}"
    );
    // The progress callback and the cancel flag are calls on the Rust
    // `Applier` (`on_progress`, `cancel_handle`), not fields of its options:
    // in C they ride in the options, so that `delta_apply` takes six
    // arguments. So does the bearer token of a URL delta, a field of the
    // Rust `UrlOptions` that `delta_apply::input::open` takes.
    for name in ["progress", "user_data", "cancel", "bearer_token"] {
        assert!(
            c_fields(header, "DeltaApplyOptions").contains(name),
            "{name}"
        );
        claimed.insert(("DeltaApplyOptions", name));
    }
    // Every other C field carries a Rust knob: none is a knob of the C API
    // alone.
    for c_struct in ["DeltaGenOptions", "DeltaApplyOptions"] {
        let unclaimed: Vec<String> = c_fields(header, c_struct)
            .into_iter()
            .filter(|name| !claimed.contains(&(c_struct, name.as_str())))
            .collect();
        assert!(
            unclaimed.is_empty(),
            "{c_struct} fields that map to no Rust knob: {unclaimed:?}"
        );
    }
}

/// What the C defaults give is what the Rust defaults are: the one place
/// each default is defined.
#[test]
fn the_c_defaults_are_the_rust_ones() {
    let mut gen = std::mem::MaybeUninit::uninit();
    let mut apply = std::mem::MaybeUninit::uninit();
    // SAFETY: valid places for the options.
    let (gen, apply) = unsafe {
        delta_gen_options_default(gen.as_mut_ptr());
        delta_apply_options_default(apply.as_mut_ptr());
        (gen.assume_init(), apply.assume_init())
    };
    let d = GenOptions::default();
    assert_eq!(gen.level, d.delta.encode.level);
    assert_eq!(gen.segment_len, d.delta.segment_len as u64);
    assert_eq!(gen.merge_len, d.delta.merge_len as u64);
    assert_eq!(gen.max_reference, d.delta.diff.max_reference as u64);
    assert_eq!(
        (gen.full, gen.migration, gen.copy_new, gen.window_list),
        (
            d.delta.full,
            d.delta.migration,
            d.delta.copy_new,
            d.delta.window_list
        )
    );
    assert_eq!((gen.deflate, gen.lzma), (d.delta.deflate, d.delta.lzma));
    assert!(
        !d.replace && !gen.replace,
        "no front end replaces an existing output by default"
    );

    let d = ApplyOptions::default();
    assert_eq!(apply.compare_zero_runs, d.compare_zero_runs);
    assert_eq!(apply.keep_logs, d.keep_logs as u64);
}
