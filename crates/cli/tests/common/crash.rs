//! Power-cut crash states of a recorded run, ALICE/CrashMonkey style.
//!
//! An `strace -f -xx` log of a run is read into the file-system operations
//! it made inside its folder ([`record`]); [`crash_states`] then builds the
//! folders a power cut after each operation may leave: what was made
//! durable (fsync/fdatasync of a file for its data, of its folder for
//! names) is kept, and the rest is lost, kept, lost one operation at a
//! time, or kept with the last write torn. kill -9 tests cannot see these:
//! the page cache survives a killed process but not a power cut.

use std::cell::Cell;
use std::collections::hash_map::Entry;
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::path::Path;
use std::rc::Rc;

/// The system calls traced: those that change files, name them, or give
/// their descriptors (clone to tell threads, which share descriptors, from
/// forked children, which copy them).
pub(crate) const TRACED: &str = "trace=openat,creat,write,pwrite64,pwritev,pwritev2,writev,lseek,\
ftruncate,fallocate,fsync,fdatasync,sync_file_range,rename,renameat,renameat2,unlink,unlinkat,\
close,dup,dup2,dup3,fcntl,mkdir,mkdirat,linkat,link,copy_file_range,clone,clone3,fork,vfork";

/// A file or folder of the model, by number: writes go to the file an fd
/// was opened on even after it was renamed.
pub(crate) type Inode = usize;

/// One operation on the run's folder, in the order the log shows it.
#[derive(Clone, Debug)]
pub(crate) enum Op {
    /// A new empty file (or folder) linked at `path`.
    Create {
        path: String,
        inode: Inode,
        folder: bool,
    },
    Write {
        inode: Inode,
        offset: u64,
        data: Vec<u8>,
    },
    Truncate {
        inode: Inode,
        len: u64,
    },
    Rename {
        from: String,
        to: String,
    },
    Unlink {
        path: String,
    },
    /// fsync or fdatasync: a file's data, or a folder's names, are durable.
    Sync {
        inode: Inode,
    },
}

impl Op {
    fn describe(&self, names: &HashMap<Inode, String>) -> String {
        let name = |i: &Inode| names.get(i).cloned().unwrap_or_else(|| format!("#{i}"));
        match self {
            Op::Create { path, .. } => format!("create {path}"),
            Op::Write {
                inode,
                offset,
                data,
            } => {
                format!("write {} [{offset}, +{})", name(inode), data.len())
            }
            Op::Truncate { inode, len } => format!("truncate {} to {len}", name(inode)),
            Op::Rename { from, to } => format!("rename {from} -> {to}"),
            Op::Unlink { path } => format!("unlink {path}"),
            Op::Sync { inode } => format!("fsync/fdatasync {}", name(inode)),
        }
    }
}

/// The folder's names and the contents of its files.
#[derive(Clone, Debug, Default)]
pub(crate) struct Fs {
    names: BTreeMap<String, Inode>,
    /// Files by inode; an inode without contents is a folder.
    files: HashMap<Inode, Vec<u8>>,
    next: Inode,
}

impl Fs {
    /// The files and folders under `root` (one level of folders deep
    /// suffices for the run's layout), the folder itself as `.`.
    pub(crate) fn read(root: &Path) -> Fs {
        let mut fs = Fs::default();
        let dot = fs.fresh();
        fs.names.insert(".".into(), dot);
        fs.read_folder(root, "");
        fs
    }

    fn read_folder(&mut self, dir: &Path, prefix: &str) {
        for entry in std::fs::read_dir(dir).unwrap() {
            let entry = entry.unwrap();
            let name = format!("{prefix}{}", entry.file_name().to_str().unwrap());
            let inode = self.fresh();
            self.names.insert(name.clone(), inode);
            if entry.file_type().unwrap().is_dir() {
                self.read_folder(&entry.path(), &format!("{name}/"));
            } else {
                self.files
                    .insert(inode, std::fs::read(entry.path()).unwrap());
            }
        }
    }

    fn fresh(&mut self) -> Inode {
        self.next += 1;
        self.next
    }

    /// Writes the folders and files under `root`, which exists.
    pub(crate) fn write(&self, root: &Path) {
        for (name, inode) in self.names.iter().filter(|(n, _)| *n != ".") {
            let path = root.join(name);
            match self.files.get(inode) {
                Some(bytes) => std::fs::write(path, bytes).unwrap(),
                None => std::fs::create_dir_all(path).unwrap(),
            }
        }
    }

    /// The contents of file `name`, if it is one.
    pub(crate) fn file(&self, name: &str) -> Option<&[u8]> {
        self.files.get(self.names.get(name)?).map(Vec::as_slice)
    }

    /// A digest of the names and contents: equal folders, equal digests.
    fn digest(&self) -> blake3::Hash {
        let mut hasher = blake3::Hasher::new();
        for (name, inode) in &self.names {
            hasher.update(name.as_bytes());
            let bytes = self.files.get(inode).map_or(&b"/"[..], Vec::as_slice);
            hasher.update(&(bytes.len() as u64).to_le_bytes());
            hasher.update(bytes);
        }
        hasher.finalize()
    }

    /// Applies `op` as a power cut leaves it: leniently, since operations
    /// before it may be lost (a rename of a lost name does nothing).
    fn apply(&mut self, op: &Op) {
        match op {
            Op::Create {
                path,
                inode,
                folder,
            } => {
                self.names.insert(path.clone(), *inode);
                if !*folder {
                    self.files.entry(*inode).or_default();
                }
            }
            Op::Write {
                inode,
                offset,
                data,
            } => {
                let file = self.files.entry(*inode).or_default();
                let end = *offset as usize + data.len();
                if file.len() < end {
                    file.resize(end, 0);
                }
                file[*offset as usize..end].copy_from_slice(data);
            }
            Op::Truncate { inode, len } => self
                .files
                .entry(*inode)
                .or_default()
                .resize(*len as usize, 0),
            Op::Rename { from, to } => {
                if let Some(inode) = self.names.remove(from) {
                    self.names.insert(to.clone(), inode);
                }
            }
            Op::Unlink { path } => {
                self.names.remove(path);
            }
            Op::Sync { .. } => {}
        }
    }
}

/// An open file description: dup'ed and inherited fds share its offset.
#[derive(Clone, Debug)]
struct Open {
    inode: Inode,
    path: String,
    pos: Rc<Cell<u64>>,
    append: bool,
}

/// A run's operations on its folder, read from an strace log.
pub(crate) struct Recording {
    /// The folder before the run.
    start: Fs,
    pub ops: Vec<Op>,
    /// The parent folder of each name an operation changed.
    folder_of_name: HashMap<String, Inode>,
    /// The last name of each inode, for messages.
    names: HashMap<Inode, String>,
}

/// Reads the operations of `log` on the files of `start` (the run's folder
/// before it ran) whose relative paths `tracked` accepts. Panics on a call
/// on a tracked file that the model does not know, so that a change of the
/// applier's habits fails here instead of going unchecked.
pub(crate) fn record(start: Fs, log: &str, tracked: impl Fn(&str) -> bool) -> Recording {
    let calls = merge_unfinished(log);
    let children = clone_children(&calls);
    let mut rec = Recorder {
        fs: start.clone(),
        ops: Vec::new(),
        tables: HashMap::new(),
        shared: HashMap::new(),
        tracked: &tracked,
    };
    for call in &calls {
        rec.adopt(call.pid, &children);
        rec.call(call);
    }
    let mut folder_of_name = HashMap::new();
    let mut names: HashMap<Inode, String> =
        rec.fs.names.iter().map(|(n, i)| (*i, n.clone())).collect();
    for op in &rec.ops {
        let paths: Vec<&String> = match op {
            Op::Create { path, inode, .. } => {
                names.insert(*inode, path.clone());
                vec![path]
            }
            Op::Rename { from, to } => vec![from, to],
            Op::Unlink { path } => vec![path],
            _ => vec![],
        };
        for path in paths {
            let parent = path.rsplit_once('/').map_or(".", |(p, _)| p);
            folder_of_name.insert(path.clone(), folder_inode(&rec.fs, &start, parent));
        }
    }
    Recording {
        start,
        ops: rec.ops,
        folder_of_name,
        names,
    }
}

/// The inode of folder `name`, which the run may have made.
fn folder_inode(end: &Fs, start: &Fs, name: &str) -> Inode {
    *start
        .names
        .get(name)
        .or_else(|| end.names.get(name))
        .unwrap_or_else(|| panic!("no folder {name}"))
}

/// One system call as strace logs it, its unfinished and resumed halves
/// joined.
struct Call {
    pid: u32,
    name: String,
    args: Vec<String>,
    ret: Option<i64>,
}

fn merge_unfinished(log: &str) -> Vec<Call> {
    let mut pending: HashMap<u32, String> = HashMap::new();
    let mut calls = Vec::new();
    for line in log.lines() {
        let Some((pid, rest)) = line.split_once(' ') else {
            continue;
        };
        let Ok(pid) = pid.parse::<u32>() else {
            continue;
        };
        let rest = rest.trim_start();
        let text = if let Some(head) = rest.strip_suffix(" <unfinished ...>") {
            pending.insert(pid, head.to_owned());
            continue;
        } else if rest.starts_with("<... ") {
            let tail = rest.split_once("resumed>").expect("resumed call").1;
            pending.remove(&pid).expect("unfinished call") + tail
        } else {
            rest.to_owned()
        };
        calls.extend(parse_call(pid, &text));
    }
    calls
}

/// `name(args) = ret ...`; None for signals and exits.
fn parse_call(pid: u32, text: &str) -> Option<Call> {
    let (name, rest) = text.split_once('(')?;
    // strace pads short calls: `fsync(8)      = 0`.
    let (args, ret) = rest.rsplit_once(" = ")?;
    let args = args.trim_end().strip_suffix(')')?;
    let ret = ret.split_whitespace().next()?;
    let ret = match ret.strip_prefix("0x") {
        Some(hex) => i64::from_str_radix(hex, 16).ok(),
        None => ret.parse().ok(),
    };
    Some(Call {
        pid,
        name: name.trim().to_owned(),
        args: split_args(args),
        ret,
    })
}

/// Splits at the commas outside brackets and braces (strings are `-xx`
/// hex, so they hold no commas or brackets).
fn split_args(args: &str) -> Vec<String> {
    let mut out = vec![String::new()];
    let mut depth = 0;
    for c in args.chars() {
        match c {
            '[' | '{' => depth += 1,
            ']' | '}' => depth -= 1,
            ',' if depth == 0 => {
                out.push(String::new());
                continue;
            }
            _ => {}
        }
        out.last_mut().unwrap().push(c);
    }
    out.iter().map(|a| a.trim().to_owned()).collect()
}

/// Decodes a `-xx` string argument; panics on one strace cut short.
fn hex_string(arg: &str) -> Vec<u8> {
    assert!(!arg.ends_with("..."), "strace cut a string short: raise -s");
    let inner = arg.trim_matches('"');
    inner
        .split("\\x")
        .filter(|h| !h.is_empty())
        .map(|h| u8::from_str_radix(h, 16).unwrap())
        .collect()
}

/// Each cloned child: its parent, and whether it shares the parent's
/// descriptors (a thread) or copies them (a fork).
fn clone_children(calls: &[Call]) -> HashMap<u32, (u32, bool)> {
    calls
        .iter()
        .filter(|c| matches!(c.name.as_str(), "clone" | "clone3" | "fork" | "vfork"))
        .filter_map(|c| {
            let child = u32::try_from(c.ret?).ok()?;
            let shares = c.args.iter().any(|a| a.contains("CLONE_FILES"));
            Some((child, (c.pid, shares)))
        })
        .collect()
}

type Table = HashMap<i64, Open>;

struct Recorder<'a> {
    /// The folder as the run sees it, every operation applied.
    fs: Fs,
    ops: Vec<Op>,
    /// Descriptor tables by the pid that owns them.
    tables: HashMap<u32, Table>,
    /// Threads: the pid whose table they use.
    shared: HashMap<u32, u32>,
    tracked: &'a dyn Fn(&str) -> bool,
}

impl Recorder<'_> {
    /// Gives a pid seen for the first time its table: its parent's if a
    /// thread, a copy of it if forked (the parent waits in clone until the
    /// child runs, so its table is the one at the fork).
    fn adopt(&mut self, pid: u32, children: &HashMap<u32, (u32, bool)>) {
        if self.tables.contains_key(&pid) || self.shared.contains_key(&pid) {
            return;
        }
        match children.get(&pid) {
            Some(&(parent, true)) => {
                let owner = self.owner(parent);
                self.shared.insert(pid, owner);
            }
            Some(&(parent, false)) => {
                let table = self.table(parent).clone();
                self.tables.insert(pid, table);
            }
            None => {
                self.tables.insert(pid, Table::new());
            }
        }
    }

    fn owner(&self, pid: u32) -> u32 {
        *self.shared.get(&pid).unwrap_or(&pid)
    }

    fn table(&mut self, pid: u32) -> &mut Table {
        let owner = self.owner(pid);
        self.tables.entry(owner).or_default()
    }

    fn fd(&mut self, pid: u32, arg: &str) -> Option<Open> {
        let fd: i64 = arg.parse().ok()?;
        self.table(pid).get(&fd).cloned()
    }

    fn push(&mut self, op: Op) {
        self.fs.apply(&op);
        self.ops.push(op);
    }

    fn call(&mut self, call: &Call) {
        let Some(ret) = call.ret.filter(|r| *r >= 0) else {
            return;
        };
        let a = &call.args;
        let pid = call.pid;
        match call.name.as_str() {
            "openat" if a[0] == "AT_FDCWD" => self.open(pid, &hex_string(&a[1]), &a[2], ret),
            "creat" => self.open(pid, &hex_string(&a[0]), "O_CREAT|O_WRONLY|O_TRUNC", ret),
            "close" => {
                self.table(pid).remove(&a[0].parse().unwrap());
            }
            "dup" => self.dup(pid, &a[0], ret),
            "dup2" | "dup3" => self.dup(pid, &a[0], a[1].parse().unwrap()),
            "fcntl" if a[1].starts_with("F_DUPFD") => self.dup(pid, &a[0], ret),
            "lseek" => {
                if let Some(open) = self.fd(pid, &a[0]) {
                    open.pos.set(ret as u64);
                }
            }
            "write" | "pwrite64" => self.write(pid, call, ret),
            "ftruncate" => {
                if let Some(open) = self.tracked_fd(pid, &a[0]) {
                    let len = a[1].parse().unwrap();
                    self.push(Op::Truncate {
                        inode: open.inode,
                        len,
                    });
                }
            }
            "fsync" | "fdatasync" => {
                if let Some(open) = self.tracked_fd(pid, &a[0]) {
                    self.push(Op::Sync { inode: open.inode });
                }
            }
            "rename" => self.rename(&hex_string(&a[0]), &hex_string(&a[1])),
            "renameat" | "renameat2" if a[0] == "AT_FDCWD" && a[2] == "AT_FDCWD" => {
                self.rename(&hex_string(&a[1]), &hex_string(&a[3]))
            }
            "unlink" => self.unlink(&hex_string(&a[0])),
            "unlinkat" if a[0] == "AT_FDCWD" => self.unlink(&hex_string(&a[1])),
            "mkdir" => self.mkdir(&hex_string(&a[0])),
            "mkdirat" if a[0] == "AT_FDCWD" => self.mkdir(&hex_string(&a[1])),
            // Flags of a descriptor (F_GETFD, F_SETFL, ...) change no file.
            "fcntl" | "clone" | "clone3" | "fork" | "vfork" => {}
            other => self.reject_unknown(pid, other, a),
        }
    }

    /// Panics on a call the model does not follow if it touches a tracked
    /// file (a descriptor or a path argument).
    fn reject_unknown(&mut self, pid: u32, name: &str, args: &[String]) {
        let on_fd = args.first().and_then(|a| self.tracked_fd(pid, a)).is_some();
        let on_path = args
            .iter()
            .filter(|a| a.starts_with('"'))
            .any(|a| relative(&hex_string(a)).is_some_and(|p| (self.tracked)(&p)));
        assert!(
            !(on_fd || on_path),
            "the crash model does not know {name}({args:?}): teach it"
        );
    }

    fn tracked_fd(&mut self, pid: u32, arg: &str) -> Option<Open> {
        self.fd(pid, arg).filter(|o| (self.tracked)(&o.path))
    }

    fn open(&mut self, pid: u32, path: &[u8], flags: &str, fd: i64) {
        let Some(path) = relative(path) else {
            return;
        };
        let inode = match self.fs.names.get(&path) {
            Some(&inode) => {
                if flags.contains("O_TRUNC") && (self.tracked)(&path) {
                    self.push(Op::Truncate { inode, len: 0 });
                }
                inode
            }
            None if flags.contains("O_CREAT") => {
                let inode = self.fs.fresh();
                if (self.tracked)(&path) {
                    self.push(Op::Create {
                        path: path.clone(),
                        inode,
                        folder: false,
                    });
                }
                inode
            }
            // A file the run did not see made (outside the model): not tracked.
            None => return,
        };
        let open = Open {
            inode,
            path,
            pos: Rc::new(Cell::new(0)),
            append: flags.contains("O_APPEND"),
        };
        self.table(pid).insert(fd, open);
    }

    fn dup(&mut self, pid: u32, old: &str, new: i64) {
        if let Some(open) = self.fd(pid, old) {
            self.table(pid).insert(new, open);
        } else {
            self.table(pid).remove(&new);
        }
    }

    fn write(&mut self, pid: u32, call: &Call, written: i64) {
        let Some(open) = self.tracked_fd(pid, &call.args[0]) else {
            return;
        };
        let mut data = hex_string(&call.args[1]);
        data.truncate(written as usize);
        let offset = if call.name == "pwrite64" {
            call.args[3].parse().unwrap()
        } else {
            let size = self.fs.files.get(&open.inode).map_or(0, |f| f.len() as u64);
            let at = if open.append { size } else { open.pos.get() };
            open.pos.set(at + written as u64);
            at
        };
        self.push(Op::Write {
            inode: open.inode,
            offset,
            data,
        });
    }

    fn rename(&mut self, from: &[u8], to: &[u8]) {
        let (Some(from), Some(to)) = (relative(from), relative(to)) else {
            return;
        };
        if (self.tracked)(&from) || (self.tracked)(&to) {
            self.push(Op::Rename { from, to });
        }
    }

    fn unlink(&mut self, path: &[u8]) {
        if let Some(path) = relative(path).filter(|p| (self.tracked)(p)) {
            self.push(Op::Unlink { path });
        }
    }

    fn mkdir(&mut self, path: &[u8]) {
        if let Some(path) = relative(path).filter(|p| (self.tracked)(p)) {
            let inode = self.fs.fresh();
            self.push(Op::Create {
                path,
                inode,
                folder: true,
            });
        }
    }
}

/// A path relative to the run's folder, `./` and trailing slashes removed;
/// None for absolute paths (outside the folder).
fn relative(path: &[u8]) -> Option<String> {
    let path = std::str::from_utf8(path).ok()?;
    if path.starts_with('/') || path.split('/').any(|c| c == "..") {
        return None;
    }
    let parts: Vec<&str> = path
        .split('/')
        .filter(|c| !c.is_empty() && *c != ".")
        .collect();
    Some(if parts.is_empty() {
        ".".into()
    } else {
        parts.join("/")
    })
}

/// How a crash state treats the operations not yet durable at its cut.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub(crate) enum Kind {
    /// Nothing was pending: the cut came right after a barrier.
    Synced,
    /// (a) all lost.
    AllLost,
    /// (b) all kept.
    AllKept,
    /// (c) all kept but one (reordering).
    OneLost,
    /// (d) all kept, the last write torn after its first 4096-byte block
    /// or its first half.
    Torn,
}

/// The kinds of states that lose or keep something not yet durable.
pub(crate) const KINDS: [Kind; 4] = [Kind::AllLost, Kind::AllKept, Kind::OneLost, Kind::Torn];

/// One folder a power cut may leave.
#[derive(Clone, Debug)]
pub(crate) struct CrashState {
    /// The kind of the first state found that leaves this folder.
    pub kind: Kind,
    /// Every kind of state that leaves it: cuts at different points can
    /// leave the same folder (losing all that is pending is the folder of
    /// an earlier cut; keeping it all, that of a later one).
    pub kinds: BTreeSet<Kind>,
    /// The number of operations made before the cut.
    pub cut: usize,
    /// What was lost or torn, in words.
    pub lost: String,
    /// The operations applied: (index, bytes of its data kept if torn).
    applied: Vec<(usize, Option<usize>)>,
}

impl Recording {
    /// The operations, one a line, for messages.
    pub(crate) fn describe(&self, ops: impl Iterator<Item = usize>) -> String {
        ops.map(|i| format!("  {i}: {}", self.ops[i].describe(&self.names)))
            .collect::<Vec<_>>()
            .join("\n")
    }

    /// The folder `state` leaves.
    pub(crate) fn materialize(&self, state: &CrashState) -> Fs {
        let mut fs = self.start.clone();
        for &(i, torn) in &state.applied {
            match (&self.ops[i], torn) {
                (
                    Op::Write {
                        inode,
                        offset,
                        data,
                    },
                    Some(keep),
                ) => fs.apply(&Op::Write {
                    inode: *inode,
                    offset: *offset,
                    data: data[..keep].to_vec(),
                }),
                (op, _) => fs.apply(op),
            }
        }
        fs
    }

    /// The folders after which op `i` stays, once synced: its file's for
    /// data, its names' folders for names.
    fn barriers(&self, i: usize) -> Vec<Inode> {
        match &self.ops[i] {
            Op::Write { inode, .. } | Op::Truncate { inode, .. } => vec![*inode],
            Op::Create { path, .. } | Op::Unlink { path } => vec![self.folder_of_name[path]],
            Op::Rename { from, to } => {
                vec![self.folder_of_name[from], self.folder_of_name[to]]
            }
            Op::Sync { .. } => vec![],
        }
    }

    /// For each op, the index of the first op after which it is durable
    /// (every barrier it needs synced since), or `ops.len()` if never.
    fn durable_at(&self) -> Vec<usize> {
        (0..self.ops.len())
            .map(|i| {
                self.barriers(i)
                    .iter()
                    .map(|b| {
                        (i + 1..self.ops.len())
                            .find(|&j| matches!(self.ops[j], Op::Sync { inode } if inode == *b))
                            .unwrap_or(self.ops.len())
                    })
                    .max()
                    .unwrap_or(i)
            })
            .collect()
    }

    /// Every distinct folder a power cut may leave, then at most `cap` of
    /// them, spread over the kinds and the run; and the number of distinct
    /// folders.
    pub(crate) fn crash_states(&self, cap: usize) -> (Vec<CrashState>, usize) {
        let durable = self.durable_at();
        let mut distinct: Vec<CrashState> = Vec::new();
        let mut index: HashMap<blake3::Hash, usize> = HashMap::new();
        for state in (0..=self.ops.len()).flat_map(|cut| self.states_at(cut, &durable)) {
            match index.entry(self.materialize(&state).digest()) {
                Entry::Occupied(seen) => {
                    distinct[*seen.get()].kinds.insert(state.kind);
                }
                Entry::Vacant(new) => {
                    new.insert(distinct.len());
                    distinct.push(state);
                }
            }
        }
        let count = distinct.len();
        let mut by_kind: BTreeMap<Kind, Vec<CrashState>> = BTreeMap::new();
        for state in distinct {
            by_kind.entry(state.kind).or_default().push(state);
        }
        (spread(by_kind, cap), count)
    }

    /// The states of a cut after `cut` operations.
    fn states_at(&self, cut: usize, durable: &[usize]) -> Vec<CrashState> {
        let effective = |i: &usize| !matches!(self.ops[*i], Op::Sync { .. });
        let (kept, pending): (Vec<usize>, Vec<usize>) =
            (0..cut).filter(effective).partition(|&i| durable[i] < cut);
        let with = |extra: &[usize], torn: Option<(usize, usize)>| {
            let mut applied: Vec<(usize, Option<usize>)> = kept
                .iter()
                .chain(extra)
                .map(|&i| (i, torn.filter(|t| t.0 == i).map(|t| t.1)))
                .collect();
            applied.sort();
            applied
        };
        let state = |kind, lost: String, applied| CrashState {
            kind,
            kinds: BTreeSet::from([kind]),
            cut,
            lost,
            applied,
        };
        if pending.is_empty() {
            return vec![state(
                Kind::Synced,
                "nothing pending".into(),
                with(&[], None),
            )];
        }
        let mut states = vec![
            state(Kind::AllLost, format!("lost {pending:?}"), with(&[], None)),
            state(Kind::AllKept, "nothing lost".into(), with(&pending, None)),
        ];
        if pending.len() > 1 {
            for &p in &pending {
                let rest: Vec<usize> = pending.iter().copied().filter(|&i| i != p).collect();
                states.push(state(Kind::OneLost, format!("lost {p}"), with(&rest, None)));
            }
        }
        let last_write = pending.iter().rev().find_map(|&i| match &self.ops[i] {
            Op::Write { data, .. } if data.len() > 1 => Some((i, data.len())),
            _ => None,
        });
        if let Some((last, len)) = last_write {
            for keep in [len / 2, 4096.min(len - 1)] {
                let lost = format!("{last} torn after {keep} bytes");
                states.push(state(Kind::Torn, lost, with(&pending, Some((last, keep)))));
            }
        }
        states
    }
}

/// At most `cap` states: each kind gets an even share of what the kinds
/// with fewer states left over, taken evenly over its states (over the run).
fn spread(by_kind: BTreeMap<Kind, Vec<CrashState>>, cap: usize) -> Vec<CrashState> {
    let mut kinds: Vec<Vec<CrashState>> = by_kind.into_values().collect();
    kinds.sort_by_key(Vec::len);
    let mut out = Vec::new();
    let count = kinds.len();
    for (done, states) in kinds.into_iter().enumerate() {
        let take = ((cap - out.len()) / (count - done)).min(states.len());
        let step = states.len() as f64 / take.max(1) as f64;
        out.extend((0..take).map(|k| states[(k as f64 * step) as usize].clone()));
    }
    out
}
