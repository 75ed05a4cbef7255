//! `compare.html`: the two runs, the warnings, the verdict, the table, and per operation both
//! runs overlaid: latency by percentile (the merged interval logs), throughput and p50/p99
//! per second. Self-contained as the run pages are: inline styles (the reports' own
//! stylesheet), inline SVG, no script, no URL; links to the runs' folders are relative.

use std::fmt::Write as _;
use std::path::Path;

use super::charts::{self, BASE, BASE_LIGHT, Line, NEW, NEW_LIGHT};
use super::table::{delta, noise, tolerance, value, verdict};
use super::{Comparison, RowVerdict, RunInfo, Verdict};

const STYLE: &str = include_str!("../../templates/style.css");

/// HTML-escapes text.
pub(crate) fn escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
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

/// The page, to be written in `out` (links to the run folders are relative to it).
pub fn page(c: &Comparison, out: &Path) -> String {
    let e = escape;
    let mut h = String::new();
    let title = format!("{} vs {}", c.base.run_id, c.new.run_id);
    let _ = write!(
        h,
        "<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n\
         <title>compare · {}</title>\n<style>{STYLE}\n\
         .base {{ color: rgb(31,119,180); font-weight: 600; }}\n\
         .new {{ color: rgb(255,127,14); font-weight: 600; }}\n</style>\n</head>\n<body>\n\
         <h1>Compare: <span class=\"base\">{}</span> vs <span class=\"new\">{}</span></h1>\n",
        e(&title),
        e(&c.base.run_id),
        e(&c.new.run_id)
    );

    // The runs.
    h.push_str(
        "<h2 id=\"runs\">Runs</h2>\n<table class=\"facts\">\n<tr><th></th>\
                <th class=\"base\">base</th><th class=\"new\">new</th></tr>\n",
    );
    let link = |r: &RunInfo| {
        let dir = Path::new(&r.dir);
        let abs = |p: &Path| std::path::absolute(p).unwrap_or_else(|_| p.to_path_buf());
        let rel = pathdiff::diff_paths(abs(dir), abs(out)).unwrap_or_else(|| dir.to_path_buf());
        format!(
            "<a href=\"{}/\">{}</a>",
            e(&rel.display().to_string()),
            e(&r.dir)
        )
    };
    let facts = |r: &RunInfo| -> [String; 8] {
        let m = &r.machine;
        let interrupted = if r.interrupted { " (interrupted)" } else { "" };
        [
            e(&r.run_id),
            link(r),
            e(&format!("{} (YAML crc32 {})", r.scenario, r.scenario_crc32)),
            r.replicas.to_string(),
            e(&r.started_at),
            e(r.git_rev.as_deref().unwrap_or("?")),
            format!("{} s{interrupted}", r.duration_s),
            e(&format!(
                "{} cores, {} MB, {}, kernel {}, {}",
                m.cores, m.memory_mb, m.cpu_model, m.kernel, m.disk
            )),
        ]
    };
    let names = [
        "run",
        "folder",
        "scenario",
        "replicas",
        "started",
        "git revision",
        "measured",
        "machine",
    ];
    let (b, n) = (facts(&c.base), facts(&c.new));
    for (i, name) in names.iter().enumerate() {
        let _ = writeln!(
            h,
            "<tr><th>{name}</th><td>{}</td><td>{}</td></tr>",
            b[i], n[i]
        );
    }
    h.push_str("</table>\n");
    for w in &c.warnings {
        let _ = writeln!(h, "<p class=\"warn\">Warning: {}</p>", e(w));
    }

    // The verdict and the table.
    h.push_str("<h2 id=\"verdict\">Verdict</h2>\n");
    match c.verdict {
        Verdict::Pass => {
            let _ = writeln!(
                h,
                "<p><span class=\"pass\">No regression</span> beyond tolerance and noise \
                 (exit status {}).</p>",
                c.exit_code
            );
        }
        Verdict::Regression => {
            let _ = writeln!(
                h,
                "<p><span class=\"fail\">{} regression(s)</span> beyond tolerance and noise \
                 (exit status {}):</p>\n<ul>",
                c.regressions.len(),
                c.exit_code
            );
            for r in &c.regressions {
                let _ = writeln!(h, "<li>{}</li>", e(r));
            }
            h.push_str("</ul>\n");
        }
    }
    let _ = writeln!(
        h,
        "<p class=\"muted\">Latency is measured from each request's intended send time, over \
         every call. The noise of a row is the larger of the two runs' spreads: the 10th to \
         90th percentile of the metric's per-second values. A row is a regression when it is \
         worse than both its tolerance (% of the base's value; percentage points, pt, for the \
         error rate) and the noise; beyond its tolerance but not the noise, it is within \
         noise. Tolerances: <code>{}</code>.</p>",
        e(&c.tolerance.describe())
    );
    h.push_str(
        "<table>\n<tr><th class=\"l\">operation</th><th class=\"l\">metric</th>\
         <th class=\"base\">base</th><th class=\"new\">new</th><th>delta</th><th>noise</th>\
         <th>tolerance</th><th class=\"l\">verdict</th></tr>\n",
    );
    for op in &c.ops {
        for r in &op.rows {
            let class = match r.verdict {
                RowVerdict::Regression => "fail",
                RowVerdict::Improvement => "pass",
                _ => "",
            };
            let _ = writeln!(
                h,
                "<tr><td class=\"l\">{}</td><td class=\"l\">{}</td><td>{}</td><td>{}</td>\
                 <td>{}</td><td>{}</td><td>{}</td><td class=\"l {class}\">{}</td></tr>",
                e(&op.op),
                r.metric,
                e(&value(r.base, &r.unit)),
                e(&value(r.new, &r.unit)),
                e(&delta(r)),
                e(&noise(r)),
                e(&tolerance(r)),
                verdict(r.verdict)
            );
        }
    }
    h.push_str("</table>\n");

    // Per operation, both runs overlaid.
    h.push_str("<h2 id=\"charts\">Both runs, overlaid</h2>\n");
    for (op, ch) in &c.charts {
        let lines = |pts: &[Vec<(f64, f64)>; 2], what: &str| -> Vec<Line> {
            // p50 lines in lighter shades of the runs' colours.
            let (b, n) = if what == " p50" {
                (BASE_LIGHT, NEW_LIGHT)
            } else {
                (BASE, NEW)
            };
            [
                (b, "base", &c.base.run_id, &pts[0]),
                (n, "new", &c.new.run_id, &pts[1]),
            ]
            .into_iter()
            .map(|(color, which, id, p)| Line {
                label: format!("{which}{what} {id}"),
                color,
                points: p.clone(),
                dashed: false,
            })
            .collect()
        };
        let mut latency = lines(&ch.p99, " p99");
        latency.extend(lines(&ch.p50, " p50"));
        let _ = writeln!(
            h,
            "<h3>{}</h3>\n<div class=\"charts\">{}{}{}</div>",
            e(op),
            charts::percentile_chart(
                &format!("{op}: latency by percentile"),
                &lines(&ch.distribution, "")
            ),
            charts::series_chart(
                &format!("{op}: successful calls per second"),
                "ops/s",
                &lines(&ch.throughput, "")
            ),
            charts::series_chart(
                &format!("{op}: p99 and p50 per second"),
                "latency (ms)",
                &latency
            ),
        );
    }
    h.push_str("</body>\n</html>\n");
    h
}
