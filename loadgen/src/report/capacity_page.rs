//! Capacity searches in the reports: a page per search (each replica count's probes on a
//! rate axis, pass and fail marked, and a table of every probe linking to its own run
//! page), and, on the index, the maximum sustainable rate against replica count, one line
//! per scenario.
//!
//! A search's probes are whole runs, but they are not listed with the other runs on the
//! index: a dozen runs of one scenario at rates chosen by a bisection would swamp the
//! scaling charts' means. Their pages are `<capacity-run>--<probe>.html`, beside the
//! others, so every page's links stay relative to the reports folder.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use minijinja::{Environment, context};
use serde::Serialize;

use super::STYLE;
use super::charts::{self, Line, ProbePoint};
use crate::results::capacity::{CAPACITY, Capacity};

/// A capacity run's folder and what it found.
pub struct CapRun {
    pub dir: PathBuf,
    /// The folder's name.
    pub id: String,
    pub cap: Capacity,
}

/// Every capacity run folder among `paths` (each a capacity run folder, or a folder of
/// them), read; those that cannot be read are returned apart, with why.
pub fn find(paths: &[PathBuf]) -> (Vec<CapRun>, Vec<(PathBuf, String)>) {
    let mut dirs = Vec::new();
    for p in paths {
        if p.join(CAPACITY).is_file() {
            dirs.push(p.clone());
        } else if let Ok(entries) = std::fs::read_dir(p) {
            let mut found: Vec<PathBuf> = entries
                .flatten()
                .map(|e| e.path())
                .filter(|d| d.join(CAPACITY).is_file())
                .collect();
            found.sort();
            dirs.extend(found);
        }
    }
    let (mut ok, mut bad) = (Vec::new(), Vec::new());
    for dir in dirs {
        match Capacity::read(&dir) {
            Ok(cap) => ok.push(CapRun {
                id: dir
                    .file_name()
                    .map(|n| n.to_string_lossy().to_string())
                    .unwrap_or_default(),
                dir,
                cap,
            }),
            Err(e) => bad.push((dir, format!("{e:#}"))),
        }
    }
    (ok, bad)
}

/// The page name of a probe's run page.
pub fn probe_page(cap_id: &str, results: &str) -> String {
    let probe = Path::new(results)
        .file_name()
        .map(|n| n.to_string_lossy().to_string())
        .unwrap_or_default();
    format!("{cap_id}--{probe}.html")
}

#[derive(Serialize)]
struct ProbeRow {
    rate: f64,
    achieved: f64,
    verdict: String,
    send_p99: Option<f64>,
    read_p99: Option<f64>,
    lateness_p99: Option<f64>,
    reasons: String,
    /// The probe's page, when it was written.
    page: Option<String>,
}

#[derive(Serialize)]
struct Section {
    replicas: u32,
    max_sustainable_rate: f64,
    ended: String,
    error: Option<String>,
    chart: String,
    probes: Vec<ProbeRow>,
}

/// A search's page. `pages` holds the probe pages written (by file name); `json` links to
/// its `capacity.json` from the reports folder.
pub(super) fn capacity_page(
    env: &Environment,
    run: &CapRun,
    pages: &[String],
    json: &str,
) -> anyhow::Result<String> {
    let c = &run.cap;
    let sections: Vec<Section> = c
        .replicas
        .iter()
        .map(|r| {
            let points: Vec<ProbePoint> = r
                .probes
                .iter()
                .map(|p| ProbePoint {
                    offered: p.rate,
                    achieved: p.achieved,
                    verdict: p.verdict.clone(),
                })
                .collect();
            let mut probes: Vec<ProbeRow> = r
                .probes
                .iter()
                .map(|p| {
                    let page = probe_page(&run.id, &p.results);
                    ProbeRow {
                        rate: p.rate,
                        achieved: p.achieved,
                        verdict: p.verdict.clone(),
                        send_p99: p.p99_ms.get("send_message").copied(),
                        read_p99: p.p99_ms.get("get_messages").copied(),
                        lateness_p99: p.lateness_p99_ms,
                        reasons: p.reasons.join("; "),
                        page: pages.contains(&page).then_some(page),
                    }
                })
                .collect();
            probes.sort_by(|a, b| a.rate.total_cmp(&b.rate));
            Section {
                replicas: r.replicas,
                max_sustainable_rate: r.max_sustainable_rate,
                ended: r.ended.clone(),
                error: r.error.clone(),
                chart: charts::probe_chart(
                    &format!("{} replicas: probes", r.replicas),
                    &points,
                    r.max_sustainable_rate,
                ),
                probes,
            }
        })
        .collect();
    Ok(env.get_template("capacity.html")?.render(context! {
        style => STYLE,
        id => run.id,
        c => c,
        precision_pct => c.search.precision * 100.0,
        sections => sections,
        max_chart => max_rate_chart(std::slice::from_ref(run)),
        capacity_json => json,
    })?)
}

/// The maximum sustainable rate against replica count, one line per scenario; where a
/// scenario was searched more than once at a count, its latest search counts.
pub(super) fn max_rate_chart(runs: &[CapRun]) -> String {
    // scenario -> replicas -> (started_at, rate)
    let mut best: BTreeMap<String, BTreeMap<u32, (&str, f64)>> = BTreeMap::new();
    for r in runs {
        for rc in &r.cap.replicas {
            if rc.error.is_some() || rc.ended == "running" || rc.ended == "interrupted" {
                continue;
            }
            let e = best
                .entry(r.cap.line())
                .or_default()
                .entry(rc.replicas)
                .or_insert((r.cap.started_at.as_str(), rc.max_sustainable_rate));
            if r.cap.started_at.as_str() >= e.0 {
                *e = (r.cap.started_at.as_str(), rc.max_sustainable_rate);
            }
        }
    }
    let lines: Vec<Line> = best
        .iter()
        .enumerate()
        .map(|(i, (scenario, by))| Line {
            label: scenario.to_string(),
            color: charts::nth_color(i),
            points: by.iter().map(|(n, (_, v))| (*n as f64, *v)).collect(),
            dashed: false,
        })
        .collect();
    charts::line_chart(
        "Maximum sustainable rate by replica count",
        "replicas",
        "max sustainable ops/s (capacity search)",
        &lines,
        &[],
        false,
    )
}

/// One capacity run as the index lists it.
#[derive(Serialize)]
pub(super) struct CapRow {
    page: String,
    id: String,
    started_at: String,
    scenario: String,
    found: String,
}

pub(super) fn rows(runs: &[CapRun]) -> Vec<CapRow> {
    let mut rows: Vec<CapRow> = runs
        .iter()
        .map(|r| CapRow {
            page: format!("{}.html", r.id),
            id: r.id.clone(),
            started_at: r.cap.started_at.clone(),
            scenario: r.cap.line(),
            found: r
                .cap
                .replicas
                .iter()
                .map(|rc| {
                    format!(
                        "{} at {}",
                        charts::round3(rc.max_sustainable_rate),
                        rc.replicas
                    )
                })
                .collect::<Vec<_>>()
                .join(", "),
        })
        .collect();
    rows.sort_by(|a, b| b.started_at.cmp(&a.started_at));
    rows
}
