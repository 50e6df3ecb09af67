//! `delta report FILE.json -o PAGE.html` on the report of a real ext4 pair
//! (`mkfs.ext4 -d`): the page's numbers are the JSON's, the treemap is to
//! scale, nothing is fetched from elsewhere and paths are escaped. Needs
//! `mkfs.ext4` (the test fails without it); not a browser.

use std::path::Path;
use std::process::{Command, Output};

const DELTA: &str = env!("CARGO_BIN_EXE_delta");

/// Size of the page's treemap (`MAP_WIDTH` x `MAP_HEIGHT` in html.rs).
const MAP_AREA: f64 = 1160.0 * 440.0;

/// The name of a file whose path must be escaped.
const HOSTILE: &str = "<script>alert(1)</script>.sh";

/// `len` bytes of a xorshift stream from `seed`: incompressible.
fn random(seed: u64, len: usize) -> Vec<u8> {
    let mut x = seed | 1;
    let mut out = Vec::with_capacity(len + 8);
    while out.len() < len {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        out.extend_from_slice(&x.to_le_bytes());
    }
    out.truncate(len);
    out
}

/// Lines of text: compressible, different for each `seed`.
fn text(seed: usize, lines: usize) -> String {
    (0..lines)
        .map(|i| {
            format!(
                "line {i} of file {seed}: value {} ok\n",
                i * 7919 % 1000 + seed
            )
        })
        .collect()
}

fn write(tree: &Path, path: &str, bytes: &[u8]) {
    let path = tree.join(path);
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    std::fs::write(path, bytes).unwrap();
}

/// An ext4 image of `tree` at `dir/name`.
fn ext4(dir: &Path, tree: &Path, name: &str) {
    let status = Command::new("mkfs.ext4")
        .args(["-q", "-F", "-b", "4096", "-d"])
        .arg(tree)
        .arg(dir.join(name))
        .arg("16M")
        .status()
        .expect("mkfs.ext4 (e2fsprogs) is needed");
    assert!(status.success());
}

/// Old and new images: an unchanged file, a changed one, new text, 64 KiB
/// of new random bytes and a new file named [`HOSTILE`].
fn pair(dir: &Path) {
    let old = dir.join("old-tree");
    write(&old, "usr/share/doc/readme", text(1, 3000).as_bytes());
    write(&old, "etc/config", text(2, 2000).as_bytes());
    ext4(dir, &old, "old.img");
    let new = dir.join("new-tree");
    write(&new, "usr/share/doc/readme", text(1, 3000).as_bytes());
    let config = text(2, 2000).replace("ok\nline 1000 ", "changed\nline 1000 ");
    write(&new, "etc/config", config.as_bytes());
    write(&new, "usr/share/data/notes.txt", text(3, 4000).as_bytes());
    write(&new, "usr/lib/blob.bin", &random(5, 65536));
    write(&new, &format!("usr/bin/{HOSTILE}"), text(4, 500).as_bytes());
    ext4(dir, &new, "new.img");
}

fn delta(dir: &Path, args: &[&str]) -> Output {
    Command::new(DELTA)
        .current_dir(dir)
        .args(args)
        .output()
        .unwrap()
}

fn run(dir: &Path, args: &[&str]) {
    let out = delta(dir, args);
    assert!(
        out.status.success(),
        "delta {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

fn escape(text: &str) -> String {
    text.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
        .replace('\'', "&#39;")
}

/// The number shown in the element with `id`, without its commas.
fn shown(html: &str, id: &str) -> u64 {
    let tag = format!("id=\"{id}\">");
    let at = html
        .find(&tag)
        .unwrap_or_else(|| panic!("no {id} in the page"))
        + tag.len();
    let end = at + html[at..].find('<').unwrap();
    html[at..end].replace(',', "").parse().unwrap()
}

/// The value of attribute `name` in `tag`.
fn attr<'a>(tag: &'a str, name: &str) -> &'a str {
    let key = format!(" {name}=\"");
    let at = tag
        .find(&key)
        .unwrap_or_else(|| panic!("no {name} in {tag}"))
        + key.len();
    &tag[at..at + tag[at..].find('"').unwrap()]
}

/// The treemap's rectangles of `class`: (title's first line, area, bytes).
fn rects(html: &str, class: &str) -> Vec<(String, f64, u64)> {
    let open = format!("<rect class=\"{class}\" ");
    html.match_indices(&open)
        .map(|(at, _)| {
            let tag = &html[at..at + html[at..].find("</rect>").unwrap()];
            let number = |name| attr(tag, name).parse::<f64>().unwrap();
            let title = &tag[tag.find("<title>").unwrap() + 7..];
            let path = title.split('\n').next().unwrap().to_string();
            let area = number("width") * number("height");
            (path, area, attr(tag, "data-bytes").parse().unwrap())
        })
        .collect()
}

#[test]
fn the_page_shows_the_reports_numbers() {
    let dir = tempfile::tempdir().unwrap();
    pair(dir.path());
    run(
        dir.path(),
        &[
            "gen", "old.img", "new.img", "-o", "d.delta", "--report", "r.json",
        ],
    );
    run(dir.path(), &["report", "r.json", "-o", "r.html"]);
    let json: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(dir.path().join("r.json")).unwrap()).unwrap();
    let html = std::fs::read_to_string(dir.path().join("r.html")).unwrap();
    let files = json["files"].as_array().unwrap();
    let number = |v: &serde_json::Value| v.as_u64().unwrap();

    // Totals.
    for key in ["delta_bytes", "payload_bytes", "table_bytes"] {
        assert_eq!(shown(&html, key), number(&json[key]), "{key}");
    }
    let outside = number(&json["outside_files"]["delta_bytes"]);
    assert_eq!(shown(&html, "outside_bytes"), outside);
    assert_eq!(shown(&html, "file_count"), files.len() as u64);

    // Costs: the random file costs about its size, the unchanged one nothing.
    let cost = |path: &str| {
        files
            .iter()
            .find(|f| f["path"] == path)
            .map(|f| number(&f["delta_bytes"]))
    };
    let blob = cost("/usr/lib/blob.bin").expect("the random file is listed");
    assert!(blob >= 65536 * 9 / 10, "{blob}: {json:#}");
    assert_eq!(cost("/usr/share/doc/readme"), None, "{json:#}");
    assert!(cost("/etc/config").is_some(), "{json:#}");

    // The table: every file with its delta bytes.
    for f in files {
        let path = escape(f["path"].as_str().unwrap());
        let row = html
            .lines()
            .find(|l| l.starts_with("<tr>") && l.contains(&format!(">{path}</td>")))
            .unwrap_or_else(|| panic!("no row for {path}"));
        assert!(
            row.contains(&format!("data-v=\"{}\"", number(&f["delta_bytes"]))),
            "{row}"
        );
        assert!(
            row.contains(&escape(f["encoding"].as_str().unwrap())),
            "{row}"
        );
    }

    // The treemap: one rectangle per file, to scale (the map is the payload).
    let map = rects(&html, "f");
    assert_eq!(map.len(), files.len());
    let payload = number(&json["payload_bytes"]) as f64;
    let per_byte = MAP_AREA / payload;
    for f in files {
        let path = escape(f["path"].as_str().unwrap());
        let bytes = number(&f["delta_bytes"]);
        let (_, area, shown_bytes) = map
            .iter()
            .find(|(p, ..)| *p == path)
            .unwrap_or_else(|| panic!("no rectangle for {path}"));
        assert_eq!(*shown_bytes, bytes);
        let want = bytes as f64 * per_byte;
        assert!(
            (area - want).abs() <= 0.01 * want + 2.0,
            "{path}: area {area}, want {want}"
        );
    }
    let outside_rects = rects(&html, "o");
    let total: f64 = map.iter().chain(&outside_rects).map(|r| r.1).sum();
    assert!((total - MAP_AREA).abs() < 0.01 * MAP_AREA, "{total}");

    // Self-contained, and the hostile path is text.
    for bad in ["http://", "https://", "<script src", "<link", "@import"] {
        assert!(!html.contains(bad), "{bad}");
    }
    assert!(html.contains(&escape(HOSTILE)));
    assert!(!html.contains(HOSTILE));
    assert_eq!(html.matches("<script").count(), 1);
}

#[test]
fn identical_images_list_no_files() {
    let dir = tempfile::tempdir().unwrap();
    pair(dir.path());
    run(
        dir.path(),
        &[
            "gen", "new.img", "new.img", "-o", "d.delta", "--report", "r.json",
        ],
    );
    let json: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(dir.path().join("r.json")).unwrap()).unwrap();
    assert_eq!(json["files"], serde_json::json!([]), "{json:#}");
    run(dir.path(), &["report", "r.json", "-o", "r.html"]);
    let html = std::fs::read_to_string(dir.path().join("r.html")).unwrap();
    assert_eq!(shown(&html, "file_count"), 0);
    assert!(rects(&html, "f").is_empty());
}

#[test]
fn bad_json_is_one_line_naming_the_file() {
    let dir = tempfile::tempdir().unwrap();
    let cases = [
        ("broken.json", "{\"container\": \"ext4\", "),
        ("fields.json", "{\"container\": \"ext4\"}"),
        (
            "types.json",
            "{\"container\": \"ext4\", \"delta_bytes\": 1, \"payload_bytes\": 1, \
             \"table_bytes\": 0, \"outside_files\": {\"new_len\": 0, \"delta_bytes\": 0}, \
             \"files\": [{\"path\": \"/a\", \"new_len\": \"big\"}]}",
        ),
    ];
    for (name, text) in cases {
        std::fs::write(dir.path().join(name), text).unwrap();
        let out = delta(dir.path(), &["report", name, "-o", "page.html"]);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "{name}: {stderr}");
        assert_eq!(stderr.lines().count(), 1, "{name}: {stderr}");
        assert!(stderr.starts_with("error: "), "{stderr}");
        assert!(stderr.contains(name), "{stderr}");
        assert!(stderr.contains("expected"), "{stderr}");
        assert!(!stderr.contains("panicked"), "{stderr}");
    }
    let missing = delta(dir.path(), &["report", "none.json", "-o", "page.html"]);
    let stderr = String::from_utf8_lossy(&missing.stderr);
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
    assert!(stderr.contains("none.json"), "{stderr}");
    assert!(!dir.path().join("page.html").exists());
}
