//! The run report: `report.md` and a self-contained `report.html` next to a run's exports.
//!
//! The engine knows nothing of what the files mean: the report lists every instance (status,
//! cache hit, wall time, output size) and shows every export by its extension — PNG images
//! (embedded in the HTML as data URIs), Markdown files inline, CSV files as tables, anything
//! else as a link. Plugins make the pictures (slices with picks, loss curves, PR curves) and the
//! tables; the report puts them on one page that opens without network access.

use crate::exec::{Outcome, RunReport};
use crate::graph::RunGraph;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};

/// CSV and Markdown files larger than this are linked, not inlined.
const INLINE_LIMIT: u64 = 256 * 1024;
/// CSV tables longer than this many data rows show only these and the last row.
const CSV_ROWS: usize = 20;

/// The directory the report goes to: the deepest directory holding every export.
pub fn report_dir(g: &RunGraph) -> Option<PathBuf> {
    let mut dirs = g
        .nodes
        .iter()
        .filter_map(|n| n.export.as_ref())
        .map(|p| p.parent().unwrap_or(Path::new(".")).to_path_buf());
    let mut common = dirs.next()?;
    for d in dirs {
        while !d.starts_with(&common) {
            if !common.pop() {
                return Some(PathBuf::from("."));
            }
        }
    }
    Some(common)
}

fn base64(data: &[u8]) -> String {
    const T: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut s = String::with_capacity(data.len().div_ceil(3) * 4);
    for c in data.chunks(3) {
        let b = [c[0], *c.get(1).unwrap_or(&0), *c.get(2).unwrap_or(&0)];
        let n = (b[0] as u32) << 16 | (b[1] as u32) << 8 | b[2] as u32;
        for i in 0..4 {
            if i <= c.len() {
                s.push(T[(n >> (18 - 6 * i) & 63) as usize] as char);
            } else {
                s.push('=');
            }
        }
    }
    s
}

fn escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

fn csv_rows(text: &str) -> Vec<Vec<String>> {
    text.lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| l.split(',').map(|c| c.trim().to_string()).collect())
        .collect()
}

/// Minimal Markdown to HTML for the tables and paragraphs plugins write.
fn markdown_html(md: &str) -> String {
    let mut out = String::new();
    let mut in_table = false;
    for line in md.lines() {
        let t = line.trim();
        if t.starts_with('|') {
            let cells: Vec<&str> = t.trim_matches('|').split('|').map(str::trim).collect();
            if cells
                .iter()
                .all(|c| c.chars().all(|ch| ch == '-' || ch == ':'))
            {
                continue;
            }
            if !in_table {
                out.push_str("<table>");
                in_table = true;
                out.push_str("<tr>");
                for c in &cells {
                    let _ = write!(out, "<th>{}</th>", escape(c));
                }
                out.push_str("</tr>");
                continue;
            }
            out.push_str("<tr>");
            for c in &cells {
                let _ = write!(out, "<td>{}</td>", escape(c));
            }
            out.push_str("</tr>");
        } else {
            if in_table {
                out.push_str("</table>");
                in_table = false;
            }
            if !t.is_empty() {
                let bold = t.starts_with("**");
                let body = escape(&t.replace("**", ""));
                if bold {
                    let _ = write!(out, "<p><b>{body}</b></p>");
                } else {
                    let _ = write!(out, "<p>{body}</p>");
                }
            }
        }
    }
    if in_table {
        out.push_str("</table>");
    }
    out
}

/// Write `report.md` and `report.html` into the exports' common directory; returns the HTML
/// path, or `None` when the workflow exports nothing.
pub fn write(g: &RunGraph, r: &RunReport, run_id: Option<u64>) -> std::io::Result<Option<PathBuf>> {
    let Some(dir) = report_dir(g) else {
        return Ok(None);
    };
    std::fs::create_dir_all(&dir)?;
    let mut report = Report::new(g, r, run_id);
    report.html.push_str("</table><h2>Results</h2>");
    report.md.push_str("\n## Results\n");
    for n in g.nodes.iter().filter(|n| n.export.is_some()) {
        report.export(n.export.as_ref().expect("filtered"), &dir);
    }
    report.html.push_str("</body></html>\n");
    let write_atomic = |name: &str, text: &str| -> std::io::Result<()> {
        let tmp = dir.join(format!(".{name}.tmp"));
        std::fs::write(&tmp, text)?;
        std::fs::rename(&tmp, dir.join(name))
    };
    write_atomic("report.md", &report.md)?;
    write_atomic("report.html", &report.html)?;
    Ok(Some(dir.join("report.html")))
}

/// The report, written as Markdown and as HTML side by side.
struct Report {
    md: String,
    html: String,
}

impl Report {
    /// Title, headline, and the table of node instances (left open in the HTML).
    fn new(g: &RunGraph, r: &RunReport, run_id: Option<u64>) -> Report {
        let count = |o: &Outcome| r.nodes.iter().filter(|n| &n.outcome == o).count();
        let status = match &r.first_error {
            None => "completed".to_string(),
            Some((id, e)) => format!("FAILED at {id}: {e}"),
        };
        let run = run_id.map(|i| format!("run {i}, ")).unwrap_or_default();
        let headline = format!(
            "{run}{status}; {} ran, {} cached, {:.1} s",
            count(&Outcome::Ran),
            count(&Outcome::Cached),
            r.wall_s
        );
        let mut md = format!("# {}\n\n{headline}\n\n## Nodes\n\n| node | type | status | wall (s) | output (bytes) |\n|---|---|---|---:|---:|\n", g.workflow);
        let mut html = format!(
            "<!doctype html><html><head><meta charset=\"utf-8\"><title>{w} — tomoflow report</title><style>\
body{{font-family:system-ui,sans-serif;max-width:1100px;margin:2em auto;padding:0 1em;color:#222}}\
table{{border-collapse:collapse;margin:0.5em 0 1.5em}}td,th{{border:1px solid #ccc;padding:2px 8px;font-size:0.9em}}\
th{{background:#f3f3f3}}.ran{{color:#0a6}}.cached{{color:#888}}.FAILED{{color:#c00;font-weight:bold}}\
img{{max-width:100%;border:1px solid #ddd}}h3{{margin-top:1.5em;font-size:1em;font-family:monospace}}</style></head><body>\
<h1>{w}</h1><p>{h}</p><h2>Nodes</h2><table><tr><th>node</th><th>type</th><th>status</th><th>wall (s)</th><th>output (bytes)</th></tr>",
            w = escape(&g.workflow),
            h = escape(&headline)
        );
        for n in &r.nodes {
            let _ = writeln!(
                md,
                "| {} | {} | {} | {:.2} | {} |",
                n.id,
                n.node_type,
                n.outcome.word(),
                n.wall_s,
                n.bytes_out
            );
            let _ = write!(
                html,
                "<tr><td>{}</td><td>{}</td><td class=\"{w}\">{w}</td><td>{:.2}</td><td>{}</td></tr>",
                escape(&n.id),
                escape(&n.node_type),
                n.wall_s,
                n.bytes_out,
                w = n.outcome.word()
            );
        }
        Report { md, html }
    }

    /// The section of the export at `path`, shown by its extension; `dir` is the report's.
    fn export(&mut self, path: &Path, dir: &Path) {
        let (md, html) = (&mut self.md, &mut self.html);
        let rel = path.strip_prefix(dir).unwrap_or(path);
        let rel_s = rel.display().to_string();
        let meta = std::fs::metadata(path);
        let _ = write!(md, "\n### {rel_s}\n\n");
        let _ = write!(html, "<h3>{}</h3>", escape(&rel_s));
        let Ok(meta) = meta else {
            md.push_str("(not written)\n");
            html.push_str("<p>(not written)</p>");
            return;
        };
        let ext = path
            .extension()
            .and_then(|e| e.to_str())
            .unwrap_or("")
            .to_ascii_lowercase();
        match ext.as_str() {
            "png" => {
                let _ = writeln!(md, "![{rel_s}]({rel_s})");
                if let Ok(bytes) = std::fs::read(path) {
                    let _ = write!(
                        html,
                        "<img alt=\"{}\" src=\"data:image/png;base64,{}\">",
                        escape(&rel_s),
                        base64(&bytes)
                    );
                }
            }
            "md" if meta.len() <= INLINE_LIMIT => {
                let text = std::fs::read_to_string(path).unwrap_or_default();
                md.push_str(&text);
                md.push('\n');
                html.push_str(&markdown_html(&text));
            }
            "csv" if meta.len() <= INLINE_LIMIT => {
                let rows = csv_rows(&std::fs::read_to_string(path).unwrap_or_default());
                self.csv_table(&rows, &rel_s);
            }
            _ => {
                let _ = writeln!(md, "[{rel_s}]({rel_s}) ({} bytes)", meta.len());
                let _ = write!(
                    html,
                    "<p><a href=\"{r}\">{r}</a> ({} bytes)</p>",
                    meta.len(),
                    r = escape(&rel_s)
                );
            }
        }
    }

    /// A CSV file's rows as a table; a long one (a training history) shows its head and its
    /// last row, with a link to the file for the rest.
    fn csv_table(&mut self, rows: &[Vec<String>], rel_s: &str) {
        let (md, html) = (&mut self.md, &mut self.html);
        html.push_str("<table>");
        let long = rows.len() > CSV_ROWS + 2;
        let shown: Vec<(usize, &Vec<String>)> = rows
            .iter()
            .enumerate()
            .filter(|(i, _)| !long || *i <= CSV_ROWS || *i == rows.len() - 1)
            .collect();
        for (i, row) in shown {
            if long && i == rows.len() - 1 {
                let skipped = rows.len() - 2 - CSV_ROWS;
                let _ = write!(
                    html,
                    "<tr><td colspan=\"{}\">… {skipped} more rows in <a href=\"{r}\">{r}</a></td></tr>",
                    row.len(),
                    r = escape(rel_s)
                );
                let _ = writeln!(md, "| … {skipped} more rows in [{rel_s}]({rel_s}) |");
            }
            let cell = if i == 0 { "th" } else { "td" };
            html.push_str("<tr>");
            for c in row {
                let _ = write!(html, "<{cell}>{}</{cell}>", escape(c));
            }
            html.push_str("</tr>");
            let _ = writeln!(md, "| {} |", row.join(" | "));
            if i == 0 {
                let _ = writeln!(md, "|{}", "---|".repeat(row.len()));
            }
        }
        html.push_str("</table>");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn base64_matches_rfc4648() {
        assert_eq!(base64(b""), "");
        assert_eq!(base64(b"f"), "Zg==");
        assert_eq!(base64(b"fo"), "Zm8=");
        assert_eq!(base64(b"foo"), "Zm9v");
        assert_eq!(base64(b"foobar"), "Zm9vYmFy");
    }

    #[test]
    fn markdown_tables_become_html_tables() {
        let h = markdown_html("**overall**: x\n\n| a | b |\n|---|---|\n| 1 | <2> |\n");
        assert!(h.contains("<p><b>overall: x</b></p>"), "{h}");
        assert!(
            h.contains(
                "<tr><th>a</th><th>b</th></tr><tr><td>1</td><td>&lt;2&gt;</td></tr></table>"
            ),
            "{h}"
        );
    }
}
