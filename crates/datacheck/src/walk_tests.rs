//! Unit tests of the walker (`walk.rs`), kept apart so that the walker
//! reads on its own.

use super::*;
use std::os::unix::fs::{symlink, PermissionsExt};
use std::process::Command;

fn tar_of(dir: &Path) -> Vec<u8> {
    let mut out = Vec::new();
    let mut walker = Walker::new(&mut out);
    walker.walk(dir).map_err(|_| "walk failed").unwrap();
    out
}

fn gnu_tar_of(dir: &Path) -> Vec<u8> {
    let out = Command::new("tar")
        .arg("-cf")
        .arg("-")
        .arg("-C")
        .arg(dir)
        .arg(".")
        .output()
        .expect("GNU tar runs");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    out.stdout
}

/// First differing 512-byte block, for a readable failure.
fn first_difference(ours: &[u8], theirs: &[u8]) -> String {
    let at = ours
        .iter()
        .zip(theirs)
        .position(|(a, b)| a != b)
        .unwrap_or(ours.len().min(theirs.len()));
    let block = at / 512 * 512;
    let show = |b: &[u8]| {
        String::from_utf8_lossy(b.get(block..(block + 512).min(b.len())).unwrap_or_default())
            .into_owned()
    };
    format!(
        "lengths {} / {}; first difference at byte {at}\nours:   {:?}\ntheirs: {:?}",
        ours.len(),
        theirs.len(),
        show(ours),
        show(theirs)
    )
}

#[test]
fn byte_identical_to_gnu_tar() {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path();
    std::fs::write(root.join("empty"), b"").unwrap();
    std::fs::write(root.join("block"), [7u8; 512]).unwrap();
    std::fs::write(root.join("odd"), b"hello\n").unwrap();
    std::fs::create_dir_all(root.join("a/b/c")).unwrap();
    std::fs::create_dir(root.join("empty-dir")).unwrap();
    std::fs::write(root.join("a/b/c/deep"), vec![1u8; 70_000]).unwrap();
    let long = "n".repeat(99);
    std::fs::write(root.join(&long), b"x").unwrap(); // "./" + 99 = 101 bytes
    std::fs::write(root.join("n".repeat(98)), b"x").unwrap(); // exactly 100
    std::fs::create_dir(root.join("d".repeat(97))).unwrap(); // "./" + 97 + "/" = 100
    let long_dir = "L".repeat(150);
    std::fs::create_dir(root.join(&long_dir)).unwrap();
    std::fs::write(root.join(&long_dir).join("f"), b"in a long dir").unwrap();
    symlink("odd", root.join("link")).unwrap();
    symlink("t".repeat(120), root.join("long-target")).unwrap();
    symlink("missing", root.join("dangling")).unwrap();
    symlink("a/b", root.join("dir-link")).unwrap();
    std::fs::hard_link(root.join("odd"), root.join("odd-again")).unwrap();
    std::fs::hard_link(root.join(&long), root.join("h".repeat(130))).unwrap();
    let fifo = Command::new("mkfifo")
        .arg(root.join("fifo"))
        .status()
        .unwrap();
    assert!(fifo.success());
    std::fs::set_permissions(root.join("odd"), std::fs::Permissions::from_mode(0o4751)).unwrap();
    // Hard links to a symlink are links; to a fifo or device they are not.
    std::fs::hard_link(root.join("link"), root.join("link-again")).unwrap();
    std::fs::hard_link(root.join("fifo"), root.join("fifo-again")).unwrap();
    // Device nodes need root and a sandbox that allows them.
    for (name, kind, major, minor) in [("null", "c", "1", "3"), ("loop", "b", "7", "200")] {
        let made = Command::new("mknod")
            .arg(root.join(name))
            .args([kind, major, minor])
            .output();
        if made.is_ok_and(|out| out.status.success()) {
            std::fs::hard_link(root.join(name), root.join(format!("{name}-again"))).unwrap();
        } else {
            eprintln!("no device node {name}: mknod not permitted here");
        }
    }
    let ours = tar_of(root);
    let theirs = gnu_tar_of(root);
    assert!(ours == theirs, "{}", first_difference(&ours, &theirs));
}

#[test]
fn empty_folder_is_one_record() {
    let tmp = tempfile::tempdir().unwrap();
    let ours = tar_of(tmp.path());
    assert_eq!(ours.len(), 10_240);
    assert_eq!(ours, gnu_tar_of(tmp.path()));
}

#[test]
fn deep_nesting_beyond_path_max() {
    let tmp = tempfile::tempdir().unwrap();
    let mut dir = tmp.path().to_path_buf();
    let part = "p".repeat(200);
    // 30 levels of 201 bytes: 6 KB of path, over PATH_MAX (4096).
    for _ in 0..30 {
        dir.push(&part);
    }
    // std cannot create it by path; go down with relative paths.
    let mut fd = rustix::fs::open(
        tmp.path(),
        OFlags::RDONLY | OFlags::DIRECTORY,
        Mode::empty(),
    )
    .unwrap();
    for _ in 0..30 {
        rustix::fs::mkdirat(&fd, part.as_str(), Mode::from_raw_mode(0o755)).unwrap();
        fd = rustix::fs::openat(
            &fd,
            part.as_str(),
            OFlags::RDONLY | OFlags::DIRECTORY,
            Mode::empty(),
        )
        .unwrap();
    }
    let mut out = Vec::new();
    let mut walker = Walker::new(&mut out);
    assert!(walker.walk(tmp.path()).is_ok());
    assert_eq!(walker.members, 31);
    assert!(
        walker.warnings.kept.is_empty(),
        "{:?}",
        walker.warnings.kept
    );
}

/// Creates files in `dir` until one comes after `sub` in directory
/// order, so that the walk must return to `dir` after `sub`.
fn files_after(dir: &Path, sub: &str) {
    for i in 0.. {
        std::fs::write(dir.join(format!("f{i}")), format!("file {i}")).unwrap();
        let order: Vec<_> = std::fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        if order.last().is_some_and(|last| last != sub) {
            return;
        }
    }
}

#[test]
fn few_descriptors_give_the_same_stream() {
    let tmp = tempfile::tempdir().unwrap();
    let mut dir = tmp.path().to_path_buf();
    for level in 0..150 {
        std::fs::write(dir.join(format!("a{level}")), vec![b'a'; level]).unwrap();
        std::fs::create_dir(dir.join("d")).unwrap();
        if level % 7 == 0 {
            let side = dir.join(format!("side{level}"));
            std::fs::create_dir_all(side.join("x/y")).unwrap();
            std::fs::write(side.join("x/y/leaf"), b"leaf").unwrap();
            std::fs::write(side.join("x/z"), b"z").unwrap();
        }
        std::fs::write(dir.join(format!("z{level}")), b"z").unwrap();
        dir.push("d");
    }
    let theirs = gnu_tar_of(tmp.path());
    for max_open_dirs in [3, 4, 5, 8, MAX_OPEN_DIRS] {
        let mut ours = Vec::new();
        let mut walker = Walker::new(&mut ours);
        walker.max_open_dirs = max_open_dirs;
        assert!(walker.walk(tmp.path()).is_ok());
        assert!(walker.peak_open_dirs <= max_open_dirs);
        let reopened = walker.reopened_dirs;
        if max_open_dirs < 10 {
            assert!(reopened > 0, "no directory re-opened with {max_open_dirs}");
        }
        assert!(
            ours == theirs,
            "with {max_open_dirs} descriptors: {}",
            first_difference(&ours, &theirs)
        );
    }
}

/// A sink that runs `action` once, when a write contains `trigger`.
struct Trap<F: FnOnce()> {
    out: Vec<u8>,
    trigger: &'static [u8],
    action: Option<F>,
}

impl<F: FnOnce()> Sink for Trap<F> {
    fn write(&mut self, bytes: &[u8]) -> Result<(), Halt> {
        self.out.extend_from_slice(bytes);
        if bytes.windows(self.trigger.len()).any(|w| w == self.trigger) {
            if let Some(action) = self.action.take() {
                action();
            }
        }
        Ok(())
    }
}

#[test]
fn a_directory_replaced_while_closed_is_refused() {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path();
    std::fs::create_dir_all(root.join("a/b/c/d")).unwrap();
    for (dir, sub) in [("", "a"), ("a", "b"), ("a/b", "c"), ("a/b/c", "d")] {
        files_after(&root.join(dir), sub);
    }
    // With 3 descriptors, entering c gives up a's, and entering d c's.
    let mut trap = Trap {
        out: Vec::new(),
        trigger: b"./a/b/c/d/",
        action: Some(|| {
            std::fs::rename(root.join("a"), root.join("a.old")).unwrap();
            std::fs::create_dir(root.join("a")).unwrap();
        }),
    };
    let mut walker = Walker::new(&mut trap);
    walker.max_open_dirs = 3;
    let err = match walker.walk(root) {
        Err(Halt::Failed(e)) => e,
        Err(Halt::OverLimit) => panic!("over the limit"),
        Ok(()) => panic!("the replaced directory went unnoticed"),
    };
    assert!(
        matches!(&err, Error::Changed { path } if *path == root.join("a")),
        "{err}"
    );
    assert_eq!(
        err.to_string(),
        format!(
            "{} was moved or replaced during the check; run it again",
            root.join("a").display()
        )
    );
    assert!(trap.action.is_none(), "the trap never fired");
}

#[test]
fn member_names_become_paths_in_the_folder() {
    let root = Path::new("/data/resin-data");
    assert_eq!(full_path(root, b"./"), root);
    assert_eq!(full_path(root, b"./a/b/"), root.join("a/b"));
    assert_eq!(full_path(root, b"./a/file"), root.join("a/file"));
}

#[test]
fn warnings_are_capped() {
    let mut warnings = Warnings::default();
    for i in 0..MAX_WARNINGS + 5 {
        warnings.push(format!("./f{i}").as_bytes(), "socket ignored");
    }
    let list = warnings.into_vec();
    assert_eq!(list.len(), MAX_WARNINGS + 1);
    assert_eq!(
        list.last().map(String::as_str),
        Some("... and 5 more warnings")
    );
}
