//! The crate's structure: two halves over a shared bottom, with no cycle
//! between modules, and the apply half using nothing of the generate half
//! (see the crate's docs). Reads the crate's own sources: a `use` that adds
//! a cycle or an arrow from apply to generate fails here.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

/// Non-test code of a module: its text before its `mod tests`, without
/// comment lines.
fn code(text: &str) -> String {
    let text = text.split("#[cfg(test)]\nmod tests").next().unwrap_or("");
    (text.lines())
        .filter(|line| !line.trim_start().starts_with("//"))
        .collect::<Vec<_>>()
        .join("\n")
}

/// Every module file under `dir` (without lib.rs, mod.rs and testing.rs),
/// by its path in the crate (`apply::patch`).
fn modules(dir: &Path, prefix: &str, out: &mut BTreeMap<String, String>) {
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        let name = path.file_stem().unwrap().to_str().unwrap().to_string();
        if path.is_dir() {
            modules(&path, &format!("{prefix}{name}::"), out);
        } else if !["lib", "mod", "testing"].contains(&name.as_str()) {
            out.insert(
                format!("{prefix}{name}"),
                std::fs::read_to_string(&path).unwrap(),
            );
        }
    }
}

/// The modules each module names through `crate::` (root re-exports
/// resolved through lib.rs).
fn arrows() -> BTreeMap<String, BTreeSet<String>> {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut mods = BTreeMap::new();
    modules(&src, "", &mut mods);
    let lib = std::fs::read_to_string(src.join("lib.rs")).unwrap();
    let mut reexports = BTreeMap::new();
    for line in lib.split("pub use ").skip(1) {
        let item = line.split(';').next().unwrap();
        let (path, names) = match item.find("::{") {
            Some(at) => (&item[..at], &item[at + 3..]),
            None => item.rsplit_once("::").unwrap(),
        };
        for name in names.split(|c: char| !c.is_alphanumeric() && c != '_') {
            if !name.is_empty() {
                reexports.insert(name.to_string(), path.trim().to_string());
            }
        }
    }
    let mut arrows = BTreeMap::new();
    for (module, text) in &mods {
        let mut to = BTreeSet::new();
        for reference in code(text).split("crate::").skip(1) {
            let path: String = (reference.chars())
                .take_while(|c| c.is_alphanumeric() || *c == '_' || *c == ':')
                .collect();
            let parts: Vec<&str> = path.split("::").collect();
            let target = (1..=parts.len())
                .rev()
                .map(|k| parts[..k].join("::"))
                .find(|p| mods.contains_key(p))
                .or_else(|| reexports.get(parts[0]).cloned());
            if let Some(target) = target.filter(|t| t != module && mods.contains_key(t)) {
                to.insert(target);
            }
        }
        arrows.insert(module.clone(), to);
    }
    arrows
}

#[test]
fn the_modules_form_no_cycle() {
    let arrows = arrows();
    assert!(arrows.contains_key("apply::patch") && arrows.contains_key("generate::pipeline"));
    // Depth-first search for a back edge.
    fn visit<'a>(
        m: &'a str,
        arrows: &'a BTreeMap<String, BTreeSet<String>>,
        path: &mut Vec<&'a str>,
        done: &mut BTreeSet<&'a str>,
    ) {
        if let Some(at) = path.iter().position(|p| *p == m) {
            panic!("cycle: {} -> {m}", path[at..].join(" -> "));
        }
        if !done.insert(m) {
            return;
        }
        path.push(m);
        for next in &arrows[m] {
            visit(next, arrows, path, done);
        }
        path.pop();
    }
    let mut done = BTreeSet::new();
    for m in arrows.keys() {
        visit(m, &arrows, &mut Vec::new(), &mut done);
    }
}

#[test]
fn the_apply_half_uses_nothing_of_the_generate_half() {
    let arrows = arrows();
    // The generate half does use the apply half: the arrow is seen.
    assert!(arrows["generate::deflate"].contains("apply::rebuild"));
    let upward: Vec<String> = (arrows.iter())
        .filter(|(m, _)| m.starts_with("apply::"))
        .flat_map(|(m, to)| to.iter().map(move |t| format!("{m} uses {t}")))
        .filter(|arrow| arrow.contains(" uses generate::"))
        .collect();
    assert!(upward.is_empty(), "{upward:?}");
}
