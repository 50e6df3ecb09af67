//! `delta report FILE.json -o PAGE.html`: the report of `delta gen --report`
//! as one page that needs nothing else (no network, no fonts, no scripts
//! from elsewhere): the totals, a treemap of the payload by folder and file
//! (inline SVG laid out here, squarified, coloured by encoding) and every
//! listed file in a table sortable by clicking its headers.
//!
//! The treemap is drawn to scale: each file's rectangle has the area of its
//! delta bytes, the bytes outside files one rectangle of their own, so the
//! whole map is the payload. Folders add outlines and no padding, which
//! would shrink small files out of proportion. Every text from the JSON
//! (paths, encodings, the container) is escaped: a path is whatever the
//! image's file system holds.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::Path;

/// Size of the treemap, in SVG units (pixels at 100%).
const MAP_WIDTH: f64 = 1160.0;
const MAP_HEIGHT: f64 = 440.0;

/// Deepest folder the treemap draws (see [`treemap`]).
const MAX_DEPTH: usize = 64;

/// Encodings with their colours, in legend order; others are grey.
const COLOURS: [(&str, &str); 5] = [
    ("copy", "#a0a0a0"),
    ("diff", "#4e79a7"),
    ("deflate", "#59a14f"),
    ("lzma", "#f28e2b"),
    ("literal", "#e15759"),
];
const OTHER_COLOUR: &str = "#bab0ac";
const OUTSIDE_COLOUR: &str = "#d9d9d9";

/// One file of the report.
struct File {
    path: String,
    new_len: u64,
    partner: Option<String>,
    encoding: String,
    delta_bytes: u64,
}

/// The report as `delta gen --report` writes it.
struct Report {
    container: String,
    delta_bytes: u64,
    payload_bytes: u64,
    table_bytes: u64,
    outside_len: u64,
    outside_bytes: u64,
    files: Vec<File>,
}

/// Reads the report at `input` and writes the page to `output`.
///
/// # Errors
/// One line naming the file: it cannot be read or written, is not JSON, or
/// lacks a field of the report (naming the field and what was expected).
pub(crate) fn run(input: &Path, output: &Path) -> Result<(), crate::failure::Failure> {
    let text = std::fs::read_to_string(input)
        .map_err(|e| format!("read report {}: {e}", input.display()))?;
    let report = parse(&text).map_err(|e| format!("{}: {e}", input.display()))?;
    std::fs::write(output, page(&report))
        .map_err(|e| format!("write page {}: {e}", output.display()).into())
}

/// The report in `text`, or what is wrong with it.
fn parse(text: &str) -> Result<Report, String> {
    let value: serde_json::Value = serde_json::from_str(text)
        .map_err(|e| format!("expected the JSON of `delta gen --report`: {e}"))?;
    let outside = value
        .get("outside_files")
        .ok_or("expected `outside_files` (an object with new_len and delta_bytes)")?;
    let files = value
        .get("files")
        .and_then(|f| f.as_array())
        .ok_or("expected `files` (an array of {path, new_len, partner, encoding, delta_bytes})")?;
    let files = files
        .iter()
        .enumerate()
        .map(|(i, f)| {
            let at = format!("files[{i}]");
            Ok(File {
                path: string(f, "path", &at)?,
                new_len: number(f, "new_len", &at)?,
                partner: match f.get("partner") {
                    None | Some(serde_json::Value::Null) => None,
                    Some(p) => Some(
                        p.as_str()
                            .ok_or(format!("expected `{at}.partner` to be a string or null"))?
                            .to_string(),
                    ),
                },
                encoding: string(f, "encoding", &at)?,
                delta_bytes: number(f, "delta_bytes", &at)?,
            })
        })
        .collect::<Result<Vec<_>, String>>()?;
    Ok(Report {
        container: string(&value, "container", "the report")?,
        delta_bytes: number(&value, "delta_bytes", "the report")?,
        payload_bytes: number(&value, "payload_bytes", "the report")?,
        table_bytes: number(&value, "table_bytes", "the report")?,
        outside_len: number(outside, "new_len", "outside_files")?,
        outside_bytes: number(outside, "delta_bytes", "outside_files")?,
        files,
    })
}

fn number(value: &serde_json::Value, key: &str, at: &str) -> Result<u64, String> {
    value
        .get(key)
        .and_then(|v| v.as_u64())
        .ok_or_else(|| format!("expected `{key}` in {at} to be a whole number of bytes"))
}

fn string(value: &serde_json::Value, key: &str, at: &str) -> Result<String, String> {
    value
        .get(key)
        .and_then(|v| v.as_str())
        .map(str::to_string)
        .ok_or_else(|| format!("expected `{key}` in {at} to be a string"))
}

/// `text` safe in HTML text and in quoted attributes.
fn escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

/// `n` with thousands separated by commas.
fn grouped(n: u64) -> String {
    let digits = n.to_string();
    let mut out = String::new();
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}

fn colour(encoding: &str) -> &'static str {
    COLOURS
        .iter()
        .find(|(name, _)| *name == encoding)
        .map_or(OTHER_COLOUR, |(_, colour)| colour)
}

/// `part` of `whole` in percent, one decimal.
fn percent(part: u64, whole: u64) -> String {
    if whole == 0 {
        return "0.0".into();
    }
    format!("{:.1}", part as f64 * 100.0 / whole as f64)
}

/// The whole page.
fn page(report: &Report) -> String {
    let mut html = String::new();
    let title = format!("Where the bytes go: {}", escape(&report.container));
    let _ = write!(
        html,
        "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">\
         <title>{title}</title>\n<style>{STYLE}</style></head>\n<body>\n<h1>{title}</h1>\n"
    );
    totals(&mut html, report);
    legend(&mut html, report);
    html.push_str(&treemap(report));
    table(&mut html, report);
    let _ = write!(html, "<script>{SCRIPT}</script>\n</body></html>\n");
    html
}

fn totals(html: &mut String, report: &Report) {
    html.push_str("<table class=\"totals\"><tr>");
    let cells = [
        ("delta_bytes", "delta bytes", report.delta_bytes),
        ("payload_bytes", "payload", report.payload_bytes),
        ("table_bytes", "header and table", report.table_bytes),
        ("outside_bytes", "outside files", report.outside_bytes),
        ("file_count", "files listed", report.files.len() as u64),
    ];
    for (id, name, n) in cells {
        let _ = write!(
            html,
            "<td><div class=\"n\" id=\"{id}\">{}</div><div class=\"k\">{name}</div></td>",
            grouped(n)
        );
    }
    let _ = writeln!(
        html,
        "</tr></table>\n<p class=\"note\">Outside files: file-system metadata, free space, \
         unmapped bytes and the ops of copied bytes ({} bytes of the new image).</p>",
        grouped(report.outside_len)
    );
}

fn legend(html: &mut String, report: &Report) {
    let mut by_encoding: BTreeMap<&str, u64> = BTreeMap::new();
    for f in &report.files {
        *by_encoding.entry(f.encoding.as_str()).or_default() += f.delta_bytes;
    }
    html.push_str("<div class=\"legend\">");
    for (name, colour) in COLOURS {
        let bytes = by_encoding.remove(name).unwrap_or(0);
        let _ = write!(
            html,
            "<span><i style=\"background:{colour}\"></i>{name} {}</span>",
            grouped(bytes)
        );
    }
    for (name, bytes) in by_encoding {
        let _ = write!(
            html,
            "<span><i style=\"background:{OTHER_COLOUR}\"></i>{} {}</span>",
            escape(name),
            grouped(bytes)
        );
    }
    let _ = writeln!(
        html,
        "<span><i style=\"background:{OUTSIDE_COLOUR}\"></i>outside files {}</span></div>",
        grouped(report.outside_bytes)
    );
}

/// A rectangle of the map.
#[derive(Debug, Clone, Copy, PartialEq)]
struct Rect {
    x: f64,
    y: f64,
    w: f64,
    h: f64,
}

/// A folder of the map: its files (indexes into the report) and folders.
#[derive(Default)]
struct Folder {
    bytes: u64,
    files: Vec<usize>,
    folders: BTreeMap<String, Folder>,
}

/// What a rectangle of the map stands for.
enum Item<'a> {
    File(usize),
    /// A folder by its path (empty for the root).
    Folder(String, &'a Folder),
    Outside,
}

fn treemap(report: &Report) -> String {
    let mut root = Folder::default();
    for (i, f) in report.files.iter().enumerate() {
        if f.delta_bytes == 0 {
            continue;
        }
        let mut folder = &mut root;
        folder.bytes += f.delta_bytes;
        let parts: Vec<&str> = f.path.split('/').filter(|p| !p.is_empty()).collect();
        // Deeper folders are drawn as their ancestor at MAX_DEPTH: the
        // layout recurses once a level, and a path is untrusted.
        let depth = parts.len().saturating_sub(1).min(MAX_DEPTH);
        for part in parts.iter().take(depth) {
            folder = folder.folders.entry((*part).to_string()).or_default();
            folder.bytes += f.delta_bytes;
        }
        folder.files.push(i);
    }
    let total = root.bytes + report.outside_bytes;
    let mut svg = format!(
        "<svg class=\"map\" viewBox=\"0 0 {MAP_WIDTH} {MAP_HEIGHT}\" role=\"img\" \
         aria-label=\"treemap of delta bytes by folder and file\">\n"
    );
    if total > 0 {
        let scale = MAP_WIDTH * MAP_HEIGHT / total as f64;
        let whole = Rect {
            x: 0.0,
            y: 0.0,
            w: MAP_WIDTH,
            h: MAP_HEIGHT,
        };
        let mut top: Vec<(u64, Item)> = vec![(root.bytes, Item::Folder(String::new(), &root))];
        top.push((report.outside_bytes, Item::Outside));
        let mut outlines = String::new();
        draw(&mut svg, &mut outlines, report, top, whole, scale);
        svg.push_str(&outlines);
    }
    svg.push_str("</svg>\n");
    svg
}

/// Lays `items` out in `rect` and draws them: files and the outside line as
/// filled rectangles into `svg`, folders recursively, with their outlines
/// into `outlines` (drawn last, over the files).
fn draw(
    svg: &mut String,
    outlines: &mut String,
    report: &Report,
    mut items: Vec<(u64, Item)>,
    rect: Rect,
    scale: f64,
) {
    items.retain(|(bytes, _)| *bytes > 0);
    items.sort_by_key(|item| std::cmp::Reverse(item.0));
    let areas: Vec<f64> = items.iter().map(|(b, _)| *b as f64 * scale).collect();
    for ((_, item), r) in items.iter().zip(squarify(&areas, rect)) {
        match *item {
            Item::File(i) => {
                let f = &report.files[i];
                let name = f.path.rsplit('/').next().unwrap_or("");
                let tip = format!(
                    "{}\n{} delta bytes, {}, new size {}",
                    f.path,
                    grouped(f.delta_bytes),
                    f.encoding,
                    grouped(f.new_len)
                );
                cell(svg, r, colour(&f.encoding), "f", f.delta_bytes, &tip);
                label(svg, r, name);
            }
            Item::Outside => {
                let tip = format!(
                    "outside files: {} delta bytes (metadata, free space, copy ops)",
                    grouped(report.outside_bytes)
                );
                cell(svg, r, OUTSIDE_COLOUR, "o", report.outside_bytes, &tip);
                label(svg, r, "(outside files)");
            }
            Item::Folder(ref path, folder) => {
                let children = folder
                    .folders
                    .iter()
                    .map(|(n, f)| (f.bytes, Item::Folder(format!("{path}/{n}"), f)))
                    .chain(
                        folder
                            .files
                            .iter()
                            .map(|&i| (report.files[i].delta_bytes, Item::File(i))),
                    )
                    .collect();
                draw(svg, outlines, report, children, r, scale);
                if !path.is_empty() {
                    let _ = writeln!(
                        outlines,
                        "<rect class=\"d\" x=\"{:.2}\" y=\"{:.2}\" width=\"{:.2}\" height=\"{:.2}\"/>",
                        r.x, r.y, r.w, r.h
                    );
                    // Named where it holds files itself: a folder of
                    // folders shares its corners with them.
                    if !folder.files.is_empty() && r.w > 50.0 && r.h > 30.0 {
                        let _ = writeln!(
                            outlines,
                            "<text class=\"dl\" x=\"{:.2}\" y=\"{:.2}\">{}</text>",
                            r.x + 3.0,
                            r.y + r.h - 4.0,
                            escape(&fit(&format!("{path}/"), r.w - 6.0))
                        );
                    }
                }
            }
        }
    }
}

fn cell(svg: &mut String, r: Rect, fill: &str, class: &str, bytes: u64, tip: &str) {
    let _ = writeln!(
        svg,
        "<rect class=\"{class}\" x=\"{:.2}\" y=\"{:.2}\" width=\"{:.2}\" height=\"{:.2}\" \
         fill=\"{fill}\" data-bytes=\"{bytes}\"><title>{}</title></rect>",
        r.x,
        r.y,
        r.w,
        r.h,
        escape(tip)
    );
}

/// The name inside `r`, if it fits at all.
fn label(svg: &mut String, r: Rect, name: &str) {
    if r.w < 30.0 || r.h < 14.0 {
        return;
    }
    let _ = writeln!(
        svg,
        "<text x=\"{:.2}\" y=\"{:.2}\">{}</text>",
        r.x + 3.0,
        r.y + 12.0,
        escape(&fit(name, r.w - 6.0))
    );
}

/// `name` cut to about `width` units of 11px text, with an ellipsis.
fn fit(name: &str, width: f64) -> String {
    let most = (width / 6.5).max(0.0) as usize;
    if name.chars().count() <= most {
        return name.to_string();
    }
    let kept: String = name.chars().take(most.saturating_sub(1)).collect();
    format!("{kept}…")
}

/// Squarified layout (Bruls, Huizing, van Wijk): `areas`, largest first and
/// adding up to `rect`'s area, as rectangles in the same order.
fn squarify(areas: &[f64], rect: Rect) -> Vec<Rect> {
    let mut out = Vec::with_capacity(areas.len());
    let mut rest = rect;
    let mut start = 0;
    while start < areas.len() {
        let side = rest.w.min(rest.h);
        let mut end = start + 1;
        while end < areas.len()
            && worst(&areas[start..=end], side) <= worst(&areas[start..end], side)
        {
            end += 1;
        }
        let row = &areas[start..end];
        let sum: f64 = row.iter().sum();
        let last = end == areas.len();
        if rest.w >= rest.h {
            // A column at the left, its items stacked.
            let thick = if last || rest.h <= 0.0 {
                rest.w
            } else {
                sum / rest.h
            };
            let mut y = rest.y;
            for a in row {
                let h = if thick > 0.0 { a / thick } else { 0.0 };
                out.push(Rect {
                    x: rest.x,
                    y,
                    w: thick,
                    h,
                });
                y += h;
            }
            rest.x += thick;
            rest.w = (rest.w - thick).max(0.0);
        } else {
            // A row at the top, its items side by side.
            let thick = if last || rest.w <= 0.0 {
                rest.h
            } else {
                sum / rest.w
            };
            let mut x = rest.x;
            for a in row {
                let w = if thick > 0.0 { a / thick } else { 0.0 };
                out.push(Rect {
                    x,
                    y: rest.y,
                    w,
                    h: thick,
                });
                x += w;
            }
            rest.y += thick;
            rest.h = (rest.h - thick).max(0.0);
        }
        start = end;
    }
    out
}

/// The worst aspect ratio of `row` laid along a side of length `side`.
fn worst(row: &[f64], side: f64) -> f64 {
    let sum: f64 = row.iter().sum();
    let (most, least) = row
        .iter()
        .fold((0.0f64, f64::MAX), |(m, l), &a| (m.max(a), l.min(a)));
    if sum <= 0.0 || least <= 0.0 || side <= 0.0 {
        return f64::MAX;
    }
    let s2 = side * side;
    let sum2 = sum * sum;
    (s2 * most / sum2).max(sum2 / (s2 * least))
}

fn table(html: &mut String, report: &Report) {
    html.push_str(
        "<h2>Costliest files</h2>\n<table class=\"files\" id=\"files\"><thead><tr>\
         <th data-type=\"n\">#</th><th>path</th><th>encoding</th>\
         <th data-type=\"n\">delta bytes</th><th data-type=\"n\">share</th>\
         <th data-type=\"n\">new size</th><th>partner</th></tr></thead><tbody>\n",
    );
    for (rank, f) in report.files.iter().enumerate() {
        let share = percent(f.delta_bytes, report.payload_bytes);
        let _ = writeln!(
            html,
            "<tr><td data-v=\"{rank}\">{}</td><td class=\"p\">{}</td>\
             <td><i style=\"background:{}\"></i>{}</td>\
             <td class=\"r\" data-v=\"{}\">{}</td><td class=\"r\" data-v=\"{share}\">{share}%</td>\
             <td class=\"r\" data-v=\"{}\">{}</td><td class=\"p\">{}</td></tr>",
            rank + 1,
            escape(&f.path),
            colour(&f.encoding),
            escape(&f.encoding),
            f.delta_bytes,
            grouped(f.delta_bytes),
            f.new_len,
            grouped(f.new_len),
            f.partner.as_deref().map_or("(new)".into(), escape),
        );
    }
    html.push_str("</tbody></table>\n");
}

const STYLE: &str = "
body{font:14px/1.4 system-ui,sans-serif;margin:20px;color:#222;background:#fff}
h1{font-size:20px;margin:0 0 12px}h2{font-size:16px;margin:20px 0 8px}
table.totals{border-collapse:collapse;margin-bottom:4px}
table.totals td{padding:4px 24px 4px 0}
.n{font-size:20px;font-weight:600;font-variant-numeric:tabular-nums}.k{color:#666;font-size:12px}
.note{color:#666;font-size:12px;margin:0 0 10px}
.legend span{margin-right:16px;font-size:13px;white-space:nowrap}
i{display:inline-block;width:11px;height:11px;margin-right:5px;vertical-align:-1px;border-radius:2px}
svg.map{width:100%;max-width:1160px;display:block;margin:10px 0;font-size:11px}
svg.map rect{stroke:#fff;stroke-width:.5}
svg.map rect.d{fill:none;stroke:#333;stroke-width:1.2;pointer-events:none}
svg.map text{fill:#fff;pointer-events:none}svg.map text.dl{fill:#222;font-weight:600}
table.files{border-collapse:collapse;font-size:13px}
table.files th{cursor:pointer;text-align:left;border-bottom:2px solid #ccc;padding:3px 10px;user-select:none}
table.files th:hover{background:#eee}
table.files td{padding:2px 10px;border-bottom:1px solid #eee;font-variant-numeric:tabular-nums}
td.r{text-align:right}td.p{font-family:ui-monospace,monospace;word-break:break-all}
";

/// Sorts the file table by the clicked column (numbers by `data-v`), again
/// in the other direction.
const SCRIPT: &str = "
document.querySelectorAll('#files th').forEach(function(th,col){
 th.addEventListener('click',function(){
  var body=th.closest('table').tBodies[0],rows=Array.prototype.slice.call(body.rows);
  var num=th.dataset.type==='n',dir=th.dataset.dir==='asc'?-1:1;th.dataset.dir=dir===1?'asc':'desc';
  rows.sort(function(a,b){var x=a.cells[col],y=b.cells[col];
   if(num){return dir*(parseFloat(x.dataset.v)-parseFloat(y.dataset.v));}
   return dir*x.textContent.localeCompare(y.textContent);});
  rows.forEach(function(r){body.appendChild(r);});
 });
});
";

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn squarify_keeps_areas() {
        let rect = Rect {
            x: 0.0,
            y: 0.0,
            w: 600.0,
            h: 400.0,
        };
        let areas = [120_000.0, 60_000.0, 30_000.0, 20_000.0, 9_000.0, 1_000.0];
        let out = squarify(&areas, rect);
        for (a, r) in areas.iter().zip(&out) {
            assert!((r.w * r.h - a).abs() < 1e-6 * a, "{a} {r:?}");
            assert!(r.x >= -1e-9 && r.y >= -1e-9);
            assert!(
                r.x + r.w <= 600.0 + 1e-6 && r.y + r.h <= 400.0 + 1e-6,
                "{r:?}"
            );
        }
    }

    #[test]
    fn a_deep_path_is_drawn_at_the_deepest_folder() {
        let path = "/d".repeat(200_000) + "/file";
        let report = Report {
            container: "ext4".into(),
            delta_bytes: 10,
            payload_bytes: 10,
            table_bytes: 0,
            outside_len: 0,
            outside_bytes: 0,
            files: vec![File {
                path,
                new_len: 1,
                partner: None,
                encoding: "literal".into(),
                delta_bytes: 10,
            }],
        };
        let svg = treemap(&report);
        assert_eq!(svg.matches("<rect class=\"f\"").count(), 1);
        assert_eq!(svg.matches("<rect class=\"d\"").count(), MAX_DEPTH);
    }

    #[test]
    fn text_is_escaped_and_numbers_grouped() {
        assert_eq!(
            escape("<script>\"a\"&'b'"),
            "&lt;script&gt;&quot;a&quot;&amp;&#39;b&#39;"
        );
        assert_eq!(grouped(0), "0");
        assert_eq!(grouped(999), "999");
        assert_eq!(grouped(1000), "1,000");
        assert_eq!(grouped(1234567), "1,234,567");
    }

    #[test]
    fn a_report_missing_a_field_says_which() {
        let e = parse("{\"container\":\"ext4\"}").err().unwrap();
        assert!(e.contains("outside_files"), "{e}");
        let e = parse("[1,").err().unwrap();
        assert!(e.starts_with("expected the JSON"), "{e}");
        assert!(!e.contains('\n'));
    }
}
