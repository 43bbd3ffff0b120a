//! The run report: `report.md` and a self-contained `report.html` next to a run's exports.
//!
//! The engine knows nothing of what the files mean. The report opens with the run's outcome and
//! the workflow's description, then shows every export by its extension — PNG images (embedded
//! in the HTML as data URIs), Markdown files inline, CSV files as tables with numbers rounded to
//! four significant digits, anything else as a link — each under the `doc:` of the node that
//! made it. Last comes the provenance: command line, date, host, tomoflow version, git commit,
//! `--set` parameters, plugin libraries with build ids, every instance (status, cache hit, wall
//! time, output size) and the workflow file itself. Plugins make the pictures (slices with
//! picks, loss curves, PR curves) and the tables; the report puts them on one page that opens
//! without network access. A rerun that ran nothing keeps the report of the run that made the
//! results.

use crate::exec::{Outcome, RunReport};
use crate::graph::RunGraph;
use std::collections::HashMap;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};

/// Where a run came from: what the report's provenance section shows.
#[derive(Debug, Clone, Default)]
pub struct Provenance {
    /// The command line.
    pub command: String,
    /// Start of the run, `YYYY-MM-DD HH:MM:SS` UTC.
    pub started: String,
    /// Host name.
    pub host: String,
    /// tomoflow's version.
    pub version: String,
    /// Git commit of the repository holding the workflow file, if any.
    pub commit: Option<String>,
    /// The workflow file and its text.
    pub workflow_path: PathBuf,
    /// The workflow file's text.
    pub workflow_text: String,
    /// Its `description:`.
    pub description: String,
    /// The `--set` overrides.
    pub sets: Vec<String>,
    /// Plugin libraries: name, version, build id, path.
    pub plugins: Vec<[String; 4]>,
    /// `doc:` of each workflow node, by node name.
    pub docs: HashMap<String, String>,
}

impl Provenance {
    /// The host's name (`/proc/sys/kernel/hostname`, else `HOSTNAME`), or "".
    pub fn host_name() -> String {
        std::fs::read_to_string("/proc/sys/kernel/hostname")
            .ok()
            .or_else(|| std::env::var("HOSTNAME").ok())
            .map(|h| h.trim().to_string())
            .unwrap_or_default()
    }

    /// The commit checked out in the git repository that holds `path`, read from `.git`.
    pub fn git_commit(path: &Path) -> Option<String> {
        let start = std::fs::canonicalize(path).ok()?;
        let git = start
            .ancestors()
            .map(|d| d.join(".git"))
            .find(|g| g.is_dir())?;
        let head = std::fs::read_to_string(git.join("HEAD")).ok()?;
        let head = head.trim();
        let Some(r) = head.strip_prefix("ref: ") else {
            return Some(head.to_string());
        };
        if let Ok(c) = std::fs::read_to_string(git.join(r)) {
            return Some(c.trim().to_string());
        }
        std::fs::read_to_string(git.join("packed-refs"))
            .ok()?
            .lines()
            .find_map(|l| l.strip_suffix(r).map(|c| c.trim().to_string()))
    }
}

/// A number with more than four significant digits after the point, rounded to four; any other
/// text unchanged.
fn round_cell(s: &str) -> String {
    let t = s.trim();
    let Ok(v) = t.parse::<f64>() else {
        return s.to_string();
    };
    let decimals = t.split_once('.').map_or(0, |(_, d)| d.len());
    if !v.is_finite() || v == 0.0 || decimals <= 4 || t.contains(['e', 'E']) {
        return s.to_string();
    }
    let places = (3 - v.abs().log10().floor() as i32).clamp(0, 6) as usize;
    format!("{v:.places$}")
}

/// What marks a report file as tomoflow's own (in the HTML head, and a comment atop the
/// Markdown): only such files are ever overwritten.
const MARK: &str = "generator\" content=\"tomoflow";

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
///
/// Returns the report's path and whether it was kept: a run in which nothing ran (every
/// instance from the cache) leaves the report of the run that made the results in place.
pub fn write(
    g: &RunGraph,
    r: &RunReport,
    run_id: Option<u64>,
    prov: &Provenance,
) -> std::io::Result<Option<(PathBuf, bool)>> {
    let Some(dir) = report_dir(g) else {
        return Ok(None);
    };
    // Never over a file tomoflow did not write (a user's own report.md next to the exports).
    // Reports of earlier versions carry no mark but their HTML title; their Markdown goes
    // with the HTML beside it.
    let read = |name: &str| std::fs::read_to_string(dir.join(name)).ok();
    let html = read("report.html");
    let html_ours = html
        .as_deref()
        .is_none_or(|t| t.contains(MARK) || t.contains("— tomoflow report</title>"));
    let md_ours =
        read("report.md").is_none_or(|t| t.contains(MARK) || (html.is_some() && html_ours));
    for (name, ours) in [("report.html", html_ours), ("report.md", md_ours)] {
        if !ours {
            return Err(std::io::Error::other(format!(
                "{} exists and was not written by tomoflow; it is left alone (move it, or export into a directory of its own)",
                dir.join(name).display()
            )));
        }
    }
    let all_cached =
        r.first_error.is_none() && r.nodes.iter().all(|n| n.outcome == Outcome::Cached);
    if all_cached && html.is_some() {
        return Ok(Some((dir.join("report.html"), true)));
    }
    std::fs::create_dir_all(&dir)?;
    let mut report = Report::new(g, r, run_id, prov);
    report.html.push_str("<h2>Results</h2>");
    report.md.push_str("\n## Results\n");
    for n in g.nodes.iter().filter(|n| n.export.is_some()) {
        let doc = n
            .inputs
            .first()
            .and_then(|i| prov.docs.get(&g.nodes[i.from].node));
        report.export(n.export.as_ref().expect("filtered"), &dir, doc);
    }
    report.provenance(r, prov);
    report.html.push_str("</body></html>\n");
    let write_atomic = |name: &str, text: &str| -> std::io::Result<()> {
        let tmp = dir.join(format!(".{name}.tmp"));
        std::fs::write(&tmp, text)?;
        std::fs::rename(&tmp, dir.join(name))
    };
    write_atomic("report.md", &report.md)?;
    write_atomic("report.html", &report.html)?;
    Ok(Some((dir.join("report.html"), false)))
}

/// The report, written as Markdown and as HTML side by side.
struct Report {
    md: String,
    html: String,
}

impl Report {
    /// Title, outcome and the workflow's description.
    fn new(g: &RunGraph, r: &RunReport, run_id: Option<u64>, prov: &Provenance) -> Report {
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
        let when = if prov.started.is_empty() {
            String::new()
        } else {
            format!(" — {} UTC", prov.started)
        };
        let mut md = format!(
            "<!-- <meta name=\"{MARK}\"> -->\n# {}\n\n{headline}{when}\n",
            g.workflow
        );
        let mut html = format!(
            "<!doctype html><html><head><meta charset=\"utf-8\"><meta name=\"{MARK}\"><title>{w} — tomoflow report</title><style>\
body{{font-family:system-ui,sans-serif;max-width:1100px;margin:2em auto;padding:0 1em;color:#222}}\
table{{border-collapse:collapse;margin:0.5em 0 1.5em;display:block;overflow-x:auto;max-width:100%}}\
td,th{{border:1px solid #ccc;padding:2px 8px;font-size:0.9em;white-space:nowrap}}\
th{{background:#f3f3f3}}.ran{{color:#0a6}}.cached{{color:#888}}.FAILED{{color:#c00;font-weight:bold}}\
.headline{{font-size:1.1em}}.caption{{color:#555;margin:0.2em 0 0.6em}}pre{{background:#f7f7f7;padding:0.8em;overflow-x:auto}}\
img{{max-width:100%;border:1px solid #ddd}}h3{{margin-top:1.5em;font-size:1em;font-family:monospace}}</style></head><body>\
<h1>{w}</h1><p class=\"headline\">{h}{when}</p>",
            w = escape(&g.workflow),
            h = escape(&headline),
            when = escape(&when)
        );
        if !prov.description.is_empty() {
            let _ = write!(md, "\n{}\n", prov.description);
            let _ = write!(html, "<p>{}</p>", escape(&prov.description));
        }
        Report { md, html }
    }

    /// Command, date, host, versions, parameters, plugins, every instance, the workflow text.
    fn provenance(&mut self, r: &RunReport, prov: &Provenance) {
        let (md, html) = (&mut self.md, &mut self.html);
        md.push_str("\n## Provenance\n\n| | |\n|---|---|\n");
        html.push_str("<h2>Provenance</h2><table>");
        let sets = if prov.sets.is_empty() {
            "(none)".to_string()
        } else {
            prov.sets.join(", ")
        };
        let rows = [
            ("command", prov.command.clone()),
            ("started (UTC)", prov.started.clone()),
            ("host", prov.host.clone()),
            ("tomoflow", prov.version.clone()),
            (
                "git commit",
                prov.commit
                    .clone()
                    .unwrap_or_else(|| "(not in a git repository)".into()),
            ),
            ("workflow file", prov.workflow_path.display().to_string()),
            ("parameters set", sets),
        ];
        for (k, v) in rows {
            let _ = writeln!(md, "| {k} | {} |", v.replace('|', "\\|"));
            let _ = write!(html, "<tr><th>{k}</th><td>{}</td></tr>", escape(&v));
        }
        html.push_str("</table>");
        if !prov.plugins.is_empty() {
            md.push_str(
                "\n### Plugins\n\n| plugin | version | build id | library |\n|---|---|---|---|\n",
            );
            html.push_str("<h3>Plugins</h3><table><tr><th>plugin</th><th>version</th><th>build id</th><th>library</th></tr>");
            for p in &prov.plugins {
                let _ = writeln!(md, "| {} |", p.join(" | "));
                html.push_str("<tr>");
                for c in p {
                    let _ = write!(html, "<td>{}</td>", escape(c));
                }
                html.push_str("</tr>");
            }
            html.push_str("</table>");
        }
        md.push_str("\n### Nodes\n\n| node | type | status | wall (s) | output (bytes) |\n|---|---|---|---:|---:|\n");
        html.push_str("<h3>Nodes</h3><table><tr><th>node</th><th>type</th><th>status</th><th>wall (s)</th><th>output (bytes)</th></tr>");
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
        html.push_str("</table>");
        if !prov.workflow_text.is_empty() {
            let _ = write!(
                md,
                "\n### Workflow file\n\n```yaml\n{}\n```\n",
                prov.workflow_text.trim_end()
            );
            let _ = write!(
                html,
                "<details><summary>Workflow file</summary><pre>{}</pre></details>",
                escape(&prov.workflow_text)
            );
        }
    }

    /// The section of the export at `path`, shown by its extension; `dir` is the report's.
    fn export(&mut self, path: &Path, dir: &Path, doc: Option<&String>) {
        let (md, html) = (&mut self.md, &mut self.html);
        let rel = path.strip_prefix(dir).unwrap_or(path);
        let rel_s = rel.display().to_string();
        let meta = std::fs::metadata(path);
        let _ = write!(md, "\n### {rel_s}\n\n");
        let _ = write!(html, "<h3>{}</h3>", escape(&rel_s));
        if let Some(d) = doc {
            let _ = write!(md, "*{}*\n\n", d.trim());
            let _ = write!(html, "<p class=\"caption\">{}</p>", escape(d.trim()));
        }
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
            let row: Vec<String> = row.iter().map(|c| round_cell(c)).collect();
            for c in &row {
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
    fn long_numbers_are_rounded_to_four_significant_digits() {
        assert_eq!(round_cell("0.16666666666666666"), "0.1667");
        assert_eq!(round_cell("12.345678"), "12.35");
        assert_eq!(round_cell("0.000123456"), "0.000123");
        assert_eq!(round_cell("1234.56789"), "1235");
        assert_eq!(round_cell("0.25"), "0.25");
        assert_eq!(round_cell("42"), "42");
        assert_eq!(round_cell("ribosome"), "ribosome");
        assert_eq!(round_cell("1.5e-7"), "1.5e-7");
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
