//! What storage a path's bytes live on, so that a target is compared with
//! the old image by the storage beneath them, never by the names typed.
//!
//! Names mislead: `/dev/loop3` may be the old image file itself, and
//! `/dev/mmcblk0` holds `/dev/mmcblk0p2`. So each path is resolved, through
//! sysfs, to the places its bytes really are:
//!
//! - **direct** places: a byte range of a whole disk (partitions add their
//!   start; device-mapper and md devices take all of their slaves), or a byte
//!   range of a file's inode (a regular file, or a loop device's backing
//!   file from its offset);
//! - **container** places: the file system device that holds a file (for a
//!   loop device, the one holding its backing file). Writing a file changes
//!   its container; writing a raw device changes only its direct places.
//!
//! A target conflicts with the old image when writing it would change a byte
//! the old image is made of: the target's direct places overlap the old
//! image's direct or container places, or the target's container (writing a
//! file into a file system) overlaps the old image's direct places (the old
//! image is the device holding that file system). Two files in one file
//! system share a container and do not conflict.
//!
//! Device-mapper tables are not read: a dm device is taken to cover all of
//! each slave, which can only refuse more, never less.

use std::fs::Metadata;
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::{Path, PathBuf};

/// One place bytes live.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Place {
    /// Bytes `start..end` of a whole disk, named by its device number.
    Disk {
        /// Major and minor number of the whole disk.
        disk: (u32, u32),
        /// First byte.
        start: u64,
        /// One past the last byte.
        end: u64,
    },
    /// Bytes `start..end` of one inode.
    File {
        /// Device of the file system holding it.
        dev: u64,
        /// Inode number.
        ino: u64,
        /// First byte.
        start: u64,
        /// One past the last byte.
        end: u64,
    },
}

impl Place {
    fn overlaps(&self, other: &Place) -> bool {
        match (*self, *other) {
            (
                Place::Disk { disk, start, end },
                Place::Disk {
                    disk: d,
                    start: s,
                    end: e,
                },
            ) => disk == d && start < e && s < end,
            (
                Place::File {
                    dev,
                    ino,
                    start,
                    end,
                },
                Place::File {
                    dev: d,
                    ino: i,
                    start: s,
                    end: e,
                },
            ) => dev == d && ino == i && start < e && s < end,
            _ => false,
        }
    }
}

/// Where a path's bytes live (see the module docs).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct Storage {
    /// The bytes themselves.
    pub direct: Vec<Place>,
    /// File systems whose devices hold them.
    pub container: Vec<Place>,
}

impl Storage {
    /// True when writing `self` could change a byte of `old`.
    pub(crate) fn conflicts_with(&self, old: &Storage) -> bool {
        let any = |a: &[Place], b: &[Place]| a.iter().any(|x| b.iter().any(|y| x.overlaps(y)));
        any(&self.direct, &old.direct)
            || any(&self.direct, &old.container)
            || any(&self.container, &old.direct)
    }

    /// True when writing `self` writes raw bytes of the device `disk`
    /// holds (a mounted file system, say).
    pub(crate) fn writes_into(&self, device: &Storage) -> bool {
        self.direct
            .iter()
            .any(|x| device.direct.iter().any(|y| x.overlaps(y)))
    }
}

/// How a block device zeroes a range without the zeros being sent.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Zeroing {
    /// A loop device: a discard punches a hole in its backing file, which
    /// reads back as zeros (`BLKDISCARD`).
    Discard,
    /// The device has a write-zeroes command (NVMe, SCSI, virtio):
    /// `fallocate(PUNCH_HOLE)` zeroes with it, or with a discard the
    /// kernel knows reads back as zeros.
    WriteZeroes,
    /// Neither (an SD card or eMMC: their discard may read back as 0xFF or
    /// as the old bytes): zero runs are compared like data, as on every
    /// device with [`ApplyOptions::compare_zero_runs`](crate::ApplyOptions::compare_zero_runs).
    Compare,
}

/// Deepest stack of partitions, loop devices and dm layers followed.
const MAX_DEPTH: usize = 16;

/// Reads sysfs (normally `/sys`; tests pass a fake tree).
#[derive(Debug, Clone)]
pub(crate) struct Sysfs {
    root: PathBuf,
}

impl Default for Sysfs {
    fn default() -> Self {
        Sysfs {
            root: PathBuf::from("/sys"),
        }
    }
}

impl Sysfs {
    /// A sysfs tree rooted at `root` (the tests' fake trees).
    #[cfg(test)]
    pub(crate) fn at(root: impl Into<PathBuf>) -> Sysfs {
        Sysfs { root: root.into() }
    }

    /// The storage of a file or device whose metadata (following symlinks)
    /// is `meta`, of which `len` bytes matter.
    ///
    /// # Errors
    /// Why a block device's storage cannot be told (no sysfs entry, a loop
    /// device whose backing file is gone): the caller refuses to write it.
    pub(crate) fn storage(&self, meta: &Metadata, len: u64) -> Result<Storage, String> {
        if meta.file_type().is_block_device() {
            self.block(split(meta.rdev()), 0, u64::MAX, 0)
        } else {
            Ok(Storage {
                direct: vec![Place::File {
                    dev: meta.dev(),
                    ino: meta.ino(),
                    start: 0,
                    end: len.max(1),
                }],
                container: self.container(meta.dev()),
            })
        }
    }

    /// How the block device whose metadata is `meta` can zero a range
    /// itself, from its queue limits (a partition's are its disk's).
    pub(crate) fn zeroing(&self, meta: &Metadata) -> Zeroing {
        let (major, minor) = split(meta.rdev());
        let Ok(mut dir) =
            std::fs::canonicalize(self.root.join(format!("dev/block/{major}:{minor}")))
        else {
            return Zeroing::Compare;
        };
        if dir.join("partition").exists() {
            match dir.parent() {
                Some(disk) => dir = disk.to_owned(),
                None => return Zeroing::Compare,
            }
        }
        let limit = |name: &str| read_u64(&dir.join("queue").join(name)).unwrap_or(0);
        if dir.join("loop/backing_file").exists() && limit("discard_max_bytes") > 0 {
            Zeroing::Discard
        } else if limit("write_zeroes_max_bytes") > 0 {
            Zeroing::WriteZeroes
        } else {
            Zeroing::Compare
        }
    }

    /// The places of the file system device `dev` (none for the anonymous
    /// devices of tmpfs, overlayfs, btrfs subvolumes...: no raw device to
    /// write there).
    fn container(&self, dev: u64) -> Vec<Place> {
        self.block(split(dev), 0, u64::MAX, 0)
            .map(|s| s.direct)
            .unwrap_or_default()
    }

    /// Bytes `start..start+len` of the block device `number`.
    fn block(
        &self,
        number: (u32, u32),
        start: u64,
        len: u64,
        depth: usize,
    ) -> Result<Storage, String> {
        let (major, minor) = number;
        if depth > MAX_DEPTH {
            return Err(format!(
                "device {major}:{minor} is stacked more than {MAX_DEPTH} levels deep"
            ));
        }
        let link = self.root.join(format!("dev/block/{major}:{minor}"));
        let dir = std::fs::canonicalize(&link).map_err(|e| {
            format!(
                "cannot tell what storage device {major}:{minor} is: {} ({e})",
                link.display()
            )
        })?;
        if dir.join("partition").exists() {
            let sector = |name| read_u64(&dir.join(name)).map(|n| n.saturating_mul(512));
            let part_start = sector("start")?;
            let part_len = sector("size")?;
            let parent = dir
                .parent()
                .ok_or_else(|| format!("partition {} has no disk", dir.display()))?;
            let disk = read_dev(&parent.join("dev"))?;
            let len = len.min(part_len.saturating_sub(start));
            return self.block(disk, part_start.saturating_add(start), len, depth + 1);
        }
        let backing = dir.join("loop/backing_file");
        if backing.exists() {
            return self.loop_device(&dir, &backing, start, len, depth);
        }
        let slaves = list(&dir.join("slaves"));
        if !slaves.is_empty() {
            let mut storage = Storage::default();
            for slave in slaves {
                let below = self.block(read_dev(&slave.join("dev"))?, 0, u64::MAX, depth + 1)?;
                storage.direct.extend(below.direct);
                storage.container.extend(below.container);
            }
            return Ok(storage);
        }
        Ok(Storage {
            direct: vec![Place::Disk {
                disk: number,
                start,
                end: start.saturating_add(len),
            }],
            container: Vec::new(),
        })
    }

    fn loop_device(
        &self,
        dir: &Path,
        backing: &Path,
        start: u64,
        len: u64,
        depth: usize,
    ) -> Result<Storage, String> {
        let name = read_text(backing)?;
        let meta = std::fs::metadata(&name).map_err(|e| {
            format!(
                "loop device {} is backed by {name}, which cannot be found ({e})",
                dir.display()
            )
        })?;
        let offset = read_u64(&dir.join("loop/offset"))?;
        let file_start = offset.saturating_add(start);
        if meta.file_type().is_block_device() {
            // A loop device over a device: its bytes are that device's.
            return self.block(split(meta.rdev()), file_start, len, depth + 1);
        }
        Ok(Storage {
            direct: vec![Place::File {
                dev: meta.dev(),
                ino: meta.ino(),
                start: file_start,
                end: file_start.saturating_add(len),
            }],
            container: self.container(meta.dev()),
        })
    }
}

fn split(dev: u64) -> (u32, u32) {
    (rustix::fs::major(dev), rustix::fs::minor(dev))
}

fn read_text(path: &Path) -> Result<String, String> {
    std::fs::read_to_string(path)
        .map(|s| s.trim_end_matches('\n').to_owned())
        .map_err(|e| format!("cannot read {}: {e}", path.display()))
}

fn read_u64(path: &Path) -> Result<u64, String> {
    let text = read_text(path)?;
    text.trim()
        .parse()
        .map_err(|_| format!("{} holds {text:?}, expected a number", path.display()))
}

fn read_dev(path: &Path) -> Result<(u32, u32), String> {
    let text = read_text(path)?;
    text.trim()
        .split_once(':')
        .and_then(|(a, b)| Some((a.parse().ok()?, b.parse().ok()?)))
        .ok_or_else(|| format!("{} holds {text:?}, expected MAJOR:MINOR", path.display()))
}

fn list(dir: &Path) -> Vec<PathBuf> {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return Vec::new();
    };
    let mut paths: Vec<PathBuf> = entries.filter_map(|e| Some(e.ok()?.path())).collect();
    paths.sort();
    paths
}

/// Mounted file systems with a real device: `(major, minor, mount point)`
/// from `/proc/self/mountinfo`.
pub(crate) fn mounted_devices(mountinfo: &str) -> Vec<((u32, u32), String)> {
    mountinfo
        .lines()
        .filter_map(|line| {
            let mut fields = line.split(' ');
            let number = fields.nth(2)?;
            let point = fields.nth(1)?;
            let (major, minor) = number.split_once(':')?;
            let number = (major.parse().ok()?, minor.parse().ok()?);
            (number.0 != 0).then(|| (number, point.replace("\\040", " ")))
        })
        .collect()
}

impl Sysfs {
    /// The first mounted file system whose device the target would write,
    /// with its mount point.
    pub(crate) fn mounted_in(&self, target: &Storage, mountinfo: &str) -> Option<String> {
        mounted_devices(mountinfo)
            .into_iter()
            .find(|(number, _)| {
                self.block(*number, 0, u64::MAX, 0)
                    .is_ok_and(|device| target.writes_into(&device))
            })
            .map(|(_, point)| point)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::symlink;

    /// A fake sysfs: `mmcblk0` (179:0) with partitions p1..p3 (179:1..3) of
    /// 1 MiB each from sector 2048, a dm device 253:0 over p2, and loop0
    /// (7:0) backed by `file` at offset 4096.
    struct FakeSys {
        dir: tempfile::TempDir,
        file: PathBuf,
    }

    impl FakeSys {
        fn new() -> FakeSys {
            let dir = tempfile::tempdir().unwrap();
            let root = dir.path();
            let write = |path: &Path, text: &str| {
                std::fs::create_dir_all(path.parent().unwrap()).unwrap();
                std::fs::write(path, text).unwrap();
            };
            let disk = root.join("devices/platform/mmc/block/mmcblk0");
            write(&disk.join("dev"), "179:0\n");
            write(&disk.join("size"), "16384\n");
            std::fs::create_dir_all(root.join("dev/block")).unwrap();
            symlink(&disk, root.join("dev/block/179:0")).unwrap();
            for p in 1..=3u64 {
                let part = disk.join(format!("mmcblk0p{p}"));
                write(&part.join("dev"), &format!("179:{p}\n"));
                write(&part.join("partition"), &format!("{p}\n"));
                write(&part.join("start"), &format!("{}\n", 2048 * p));
                write(&part.join("size"), "2048\n");
                symlink(&part, root.join(format!("dev/block/179:{p}"))).unwrap();
            }
            let dm = root.join("devices/virtual/block/dm-0");
            write(&dm.join("dev"), "253:0\n");
            std::fs::create_dir_all(dm.join("slaves")).unwrap();
            symlink(disk.join("mmcblk0p2"), dm.join("slaves/mmcblk0p2")).unwrap();
            symlink(&dm, root.join("dev/block/253:0")).unwrap();
            let file = root.join("backing.img");
            std::fs::write(&file, vec![0u8; 8192]).unwrap();
            let lo = root.join("devices/virtual/block/loop0");
            write(&lo.join("dev"), "7:0\n");
            write(
                &lo.join("loop/backing_file"),
                &format!("{}\n", file.display()),
            );
            write(&lo.join("loop/offset"), "4096\n");
            symlink(&lo, root.join("dev/block/7:0")).unwrap();
            FakeSys { dir, file }
        }

        fn sys(&self) -> Sysfs {
            Sysfs::at(self.dir.path())
        }

        fn device(&self, number: (u32, u32)) -> Storage {
            self.sys().block(number, 0, u64::MAX, 0).unwrap()
        }

        fn file(&self, len: u64) -> Storage {
            let meta = std::fs::metadata(&self.file).unwrap();
            self.sys().storage(&meta, len).unwrap()
        }
    }

    #[test]
    fn partitions_resolve_to_ranges_of_their_disk() {
        let f = FakeSys::new();
        let p2 = f.device((179, 2));
        assert_eq!(
            p2.direct,
            vec![Place::Disk {
                disk: (179, 0),
                start: 2048 * 2 * 512,
                end: 2048 * 3 * 512,
            }]
        );
        let whole = f.device((179, 0));
        assert!(whole.conflicts_with(&p2), "the disk holds its partitions");
        assert!(p2.conflicts_with(&whole));
        assert!(
            !f.device((179, 3)).conflicts_with(&p2),
            "neighbours do not overlap"
        );
        assert!(p2.conflicts_with(&f.device((179, 2))));
    }

    #[test]
    fn device_mapper_devices_cover_their_slaves() {
        let f = FakeSys::new();
        let dm = f.device((253, 0));
        assert!(dm.conflicts_with(&f.device((179, 2))));
        assert!(f.device((179, 0)).conflicts_with(&dm));
        assert!(!f.device((179, 1)).conflicts_with(&dm));
    }

    #[test]
    fn loop_devices_resolve_to_their_backing_file_from_its_offset() {
        let f = FakeSys::new();
        let lo = f.device((7, 0));
        assert!(
            lo.conflicts_with(&f.file(8192)),
            "loop0 maps bytes 4096.. of the file"
        );
        assert!(
            !lo.conflicts_with(&f.file(4096)),
            "an old image in the first 4096 bytes is not reached"
        );
        assert!(f.file(8192).conflicts_with(&lo));
    }

    #[test]
    fn unknown_devices_and_lost_backing_files_are_errors() {
        let f = FakeSys::new();
        assert!(f.sys().block((8, 0), 0, u64::MAX, 0).is_err());
        std::fs::remove_file(&f.file).unwrap();
        let err = f.sys().block((7, 0), 0, u64::MAX, 0).unwrap_err();
        assert!(err.contains("cannot be found"), "{err}");
    }

    #[test]
    fn files_in_one_file_system_do_not_conflict_but_its_device_does() {
        let a = Storage {
            direct: vec![Place::File {
                dev: 1,
                ino: 10,
                start: 0,
                end: 100,
            }],
            container: vec![Place::Disk {
                disk: (179, 0),
                start: 0,
                end: 1000,
            }],
        };
        let b = Storage {
            direct: vec![Place::File {
                dev: 1,
                ino: 11,
                start: 0,
                end: 100,
            }],
            ..a.clone()
        };
        let device = Storage {
            direct: a.container.clone(),
            container: Vec::new(),
        };
        assert!(!a.conflicts_with(&b));
        assert!(
            device.conflicts_with(&a),
            "raw writes into the old file's file system"
        );
        assert!(
            a.conflicts_with(&device),
            "a file written into the old device's file system"
        );
        assert!(a.conflicts_with(&a));
    }

    #[test]
    fn mountinfo_lists_real_devices_only() {
        let text = "22 27 0:21 / /proc rw,relatime - proc proc rw\n\
                    30 1 179:2 / /mnt/my\\040data rw - ext4 /dev/mmcblk0p2 rw\n";
        assert_eq!(
            mounted_devices(text),
            vec![((179, 2), "/mnt/my data".to_string())]
        );
        let f = FakeSys::new();
        assert_eq!(
            f.sys().mounted_in(&f.device((179, 0)), text).as_deref(),
            Some("/mnt/my data")
        );
        assert_eq!(f.sys().mounted_in(&f.device((179, 3)), text), None);
    }
}
