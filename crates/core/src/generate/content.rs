//! Seeing inside the images: which files of the new image are gzip or zlib
//! streams worth rebuilding from their content, and their old versions.
//!
//! Both images are mapped with `delta-fsmap` (ext4 file systems, tar
//! archives). A new file becomes a deflate candidate ([`deflate_pairs`])
//! when its bytes are one run of the new image, it starts like a gzip or
//! zlib stream, and neither the old image nor an earlier new file holds
//! the same bytes. Its old version, if any, is the old file at the same
//! path, else the one of the same name in the most alike folder (a package
//! renamed from `libssl1.1` to `libssl3`).
//!
//! The map only decides where deflate streams begin and end: everything
//! else of the image, file data and metadata alike, goes through the block
//! matcher against the whole old image, as without a map. An image that
//! cannot be mapped (another file system, damaged, hostile) simply has no
//! candidates, and the summary says why.

use crate::generate::deflate::{wrapper, Pair, MAX_RAW};
use delta_fsmap::{map_image, ContainerKind, FileMap, MappedFile};
use std::collections::{HashMap, HashSet};
use std::ops::Range;

/// What the container maps found, for the generator's summary.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ContentSummary {
    /// `ext4` or `tar` when both images were mapped, else why not (e.g.
    /// `old image: not an ext4 file system or tar archive`); empty when
    /// nothing was tried (full payload, deflate segments off).
    pub container: String,
    /// Regular files mapped in the new image.
    pub files: u64,
    /// New or changed gzip/zlib files: the candidates.
    pub deflate_candidates: u64,
    /// Deflate segments made of them (the rest did not round-trip, or
    /// were not worth it).
    pub deflate_segments: u64,
    /// Bytes of new image that deflate segments produce.
    pub deflate_bytes: u64,
    /// Payload bytes of the deflate segments.
    pub deflate_payload: u64,
    /// Changed ELF files with an old partner: the executable candidates.
    pub exec_candidates: u64,
    /// Executable segments made of them (the rest were not smaller than
    /// plain segments).
    pub exec_segments: u64,
    /// Bytes of new image that executable segments produce.
    pub exec_bytes: u64,
    /// Payload bytes of the executable segments.
    pub exec_payload: u64,
}

/// The container map of an image, or why it has none.
pub(crate) type MapResult = Result<FileMap, String>;

/// [`map_image`] of `image`, its error as text.
pub(crate) fn map_one(image: &[u8]) -> MapResult {
    map_image(image).map_err(|e| e.to_string())
}

/// The container maps of both images (the new one's `new_map`, see
/// [`map_one`]), when both map and are of one kind, and the summary's
/// `container` and `files`.
pub(crate) fn map_both<'m>(
    old: &[u8],
    new_map: &'m MapResult,
) -> (Option<(FileMap, &'m FileMap)>, ContentSummary) {
    let mut summary = ContentSummary::default();
    let (old_map, new_map) = match (map_one(old), new_map) {
        (Ok(old_map), Ok(new_map)) if old_map.kind == new_map.kind => (old_map, new_map),
        (Ok(_), Ok(_)) => {
            summary.container = "none: the images are of different kinds".into();
            return (None, summary);
        }
        (Err(e), _) => {
            summary.container = format!("none: old image: {e}");
            return (None, summary);
        }
        (_, Err(e)) => {
            summary.container = format!("none: new image: {e}");
            return (None, summary);
        }
    };
    summary.container = match new_map.kind {
        ContainerKind::Ext4 => "ext4",
        ContainerKind::Tar => "tar",
    }
    .into();
    summary.files = new_map.files.len() as u64;
    (Some((old_map, new_map)), summary)
}

/// The deflate candidates of `new` (mapped as `new_map`) against `old`,
/// sorted by their place in the new image, not overlapping.
pub(crate) fn deflate_pairs(
    old_map: &FileMap,
    new_map: &FileMap,
    old: &[u8],
    new: &[u8],
) -> Vec<Pair> {
    let partners = Partners::new(old_map, old);
    // Files whose bytes the old image or an earlier new file holds as they
    // are: the block matcher and COPY_NEW take those whole.
    let mut seen: HashSet<blake3::Hash> = partners
        .files()
        .filter_map(|file| Some(blake3::hash(read(file, old)?)))
        .collect();
    let mut pairs: Vec<Pair> = new_map
        .files
        .iter()
        .filter_map(|file| {
            let range = deflate_run(file, new)?;
            if !seen.insert(blake3::hash(&new[range.clone()])) {
                return None;
            }
            let partner = partners.find(&file.path);
            let old_ranges = partner.and_then(file_ranges).unwrap_or_default();
            Some(Pair {
                path: file.path.clone(),
                old_path: partner
                    .filter(|_| !old_ranges.is_empty())
                    .map(|p| p.path.clone()),
                new: range,
                old: old_ranges,
            })
        })
        .collect();
    // Hard links list the same bytes under two paths: keep one.
    pairs.sort_by_key(|pair| pair.new.start);
    pairs.dedup_by(|b, a| b.new.start < a.new.end);
    pairs
}

/// The new image range of `file` when it is one run that starts like a
/// gzip or zlib stream and is small enough to rebuild.
fn deflate_run(file: &MappedFile, image: &[u8]) -> Option<Range<usize>> {
    if file.size > MAX_RAW as u64 {
        return None;
    }
    let range = file.contiguous()?;
    let range = usize::try_from(range.start).ok()?..usize::try_from(range.end).ok()?;
    wrapper(image.get(range.clone())?)?;
    Some(range)
}

/// The image ranges of all of `file`'s bytes, in file order, or `None` when
/// it has holes (bytes no range holds) or is too large.
fn file_ranges(file: &MappedFile) -> Option<Vec<Range<u64>>> {
    if file.size > MAX_RAW as u64 {
        return None;
    }
    let mut at = 0;
    let mut out = Vec::with_capacity(file.extents.len());
    for extent in &file.extents {
        if extent.logical != at {
            return None;
        }
        out.push(extent.physical..extent.physical + extent.len);
        at += extent.len;
    }
    (at == file.size && at > 0).then_some(out)
}

/// The bytes of `file` when they are one run of `image`.
fn read<'a>(file: &MappedFile, image: &'a [u8]) -> Option<&'a [u8]> {
    let range = file.contiguous()?;
    image.get(usize::try_from(range.start).ok()?..usize::try_from(range.end).ok()?)
}

/// The old deflate files, by path and by file name.
struct Partners<'a> {
    by_path: HashMap<&'a str, &'a MappedFile>,
    by_name: HashMap<&'a str, Vec<&'a MappedFile>>,
}

impl<'a> Partners<'a> {
    fn new(map: &'a FileMap, image: &[u8]) -> Partners<'a> {
        let mut by_path = HashMap::new();
        let mut by_name: HashMap<_, Vec<_>> = HashMap::new();
        let deflate = map.files.iter().filter(|file| {
            let first = file.extents.first();
            first.is_some_and(|e| {
                let start = e.physical as usize;
                let end = start.saturating_add(e.len.min(64) as usize);
                e.logical == 0 && image.get(start..end).and_then(wrapper).is_some()
            })
        });
        for file in deflate {
            by_path.insert(file.path.as_str(), file);
            by_name.entry(file_name(&file.path)).or_default().push(file);
        }
        Partners { by_path, by_name }
    }

    /// Every old deflate file.
    fn files(&self) -> impl Iterator<Item = &'a MappedFile> + '_ {
        self.by_path.values().copied()
    }

    /// The old version of the new file at `path`: the file at the same
    /// path, else the one of the same name whose folder shares the longest
    /// start with this one's, if the folder names share at least three
    /// characters (`libssl1.1` and `libssl3`, not `gzip` and `grep`).
    fn find(&self, path: &str) -> Option<&'a MappedFile> {
        if let Some(file) = self.by_path.get(path) {
            return Some(file);
        }
        let candidates = self.by_name.get(file_name(path))?;
        let (best, shared) = candidates
            .iter()
            .map(|file| (*file, common_prefix(&file.path, path)))
            .max_by_key(|&(_, shared)| shared)?;
        let folder_start = path[..shared].rfind('/').map_or(0, |i| i + 1);
        (shared >= folder_start + 3).then_some(best)
    }
}

pub(crate) fn file_name(path: &str) -> &str {
    path.rsplit('/').next().unwrap_or(path)
}

/// Bytes at the start of `a` and `b` that are the same, on a char boundary.
pub(crate) fn common_prefix(a: &str, b: &str) -> usize {
    a.char_indices()
        .zip(b.chars())
        .find(|((_, x), y)| x != y)
        .map_or(a.len().min(b.len()), |((i, _), _)| i)
}

#[cfg(test)]
mod tests {
    use super::*;
    use delta_fsmap::Extent;

    fn file(path: &str, extents: &[(u64, u64, u64)], size: u64) -> MappedFile {
        MappedFile {
            path: path.into(),
            size,
            extents: extents
                .iter()
                .map(|&(logical, physical, len)| Extent {
                    logical,
                    physical,
                    len,
                })
                .collect(),
        }
    }

    #[test]
    fn renamed_packages_find_their_old_files() {
        let map = FileMap {
            kind: ContainerKind::Tar,
            files: vec![
                file("/usr/share/doc/libssl1.1/changelog.gz", &[(0, 0, 20)], 20),
                file("/usr/share/doc/grep/changelog.gz", &[(0, 0, 20)], 20),
            ],
        };
        let mut image = vec![0u8; 20];
        image[..4].copy_from_slice(&[0x1f, 0x8b, 8, 0]);
        let partners = Partners::new(&map, &image);
        let found = |path| partners.find(path).map(|f| f.path.as_str());
        assert_eq!(
            found("/usr/share/doc/libssl3/changelog.gz"),
            Some("/usr/share/doc/libssl1.1/changelog.gz")
        );
        assert_eq!(
            found("/usr/share/doc/grep/changelog.gz"),
            Some("/usr/share/doc/grep/changelog.gz")
        );
        assert_eq!(found("/usr/share/doc/gzip/changelog.gz"), None);
        assert_eq!(found("/usr/share/doc/libssl3/NEWS.gz"), None);
    }

    #[test]
    fn files_with_holes_have_no_ranges() {
        let whole = file("/a", &[(0, 4096, 10), (10, 100, 5)], 15);
        assert_eq!(file_ranges(&whole), Some(vec![4096..4106, 100..105]));
        let holed = file("/a", &[(0, 4096, 10), (4096, 100, 5)], 4101);
        assert_eq!(file_ranges(&holed), None);
        let short = file("/a", &[(0, 4096, 10)], 15);
        assert_eq!(file_ranges(&short), None);
    }

    #[test]
    fn common_prefix_counts_bytes_on_char_boundaries() {
        assert_eq!(common_prefix("/a/libssl3", "/a/libssl1.1"), 9);
        assert_eq!(common_prefix("/é/x", "/é/y"), 4);
        assert_eq!(common_prefix("/ab", "/ab"), 3);
    }
}
