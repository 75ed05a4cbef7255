//! Reports: HTML pages per run and across runs, and the end-of-run text.
//!
//! `loadgen report [RESULTS...]` (and `loadgen bench`, at its end) reads run folders with
//! [`data`] (polars), draws charts with [`charts`] (plotters, SVG) and fills two minijinja
//! templates (`loadgen/templates/`): [`run_page`] and [`index_page`]. Pages are
//! self-contained: charts are inlined SVG, styles are inline, and there is no script needed
//! to see anything and no URL to fetch, so a page opens from disk on a laptop with no
//! network. The only script sorts the index's table. [`terminal`] is the text a run prints
//! when it ends, and [`junit`] its verdicts as JUnit XML (`--junit FILE`).
//!
//! Written to the reports folder: `<run-id>.html` per run, `index.html`, and the aggregate
//! table as `summary.csv` and `summary.parquet`; per capacity search ([`capacity_page`]),
//! `<capacity-run>.html` and a page per probe, `<capacity-run>--<probe>.html`. Links to raw files are relative, so
//! `reports/` and `results/` can be moved together.

pub mod data;
pub mod junit;
pub mod terminal;

mod capacity_page;
pub(crate) mod charts;
mod index_page;
mod replicas;
mod run_page;

use std::path::{Path, PathBuf};

use anyhow::Context;
use minijinja::Environment;

use data::Run;

const RUN_TEMPLATE: &str = include_str!("../../templates/run.html");
const INDEX_TEMPLATE: &str = include_str!("../../templates/index.html");
const CAPACITY_TEMPLATE: &str = include_str!("../../templates/capacity.html");
const STYLE: &str = include_str!("../../templates/style.css");

/// What a report run wrote.
pub struct Written {
    pub index: PathBuf,
    pub pages: Vec<PathBuf>,
    /// A page per capacity search (`<capacity-run>.html`).
    pub capacity_pages: Vec<PathBuf>,
    /// Run folders that could not be read, with why.
    pub skipped: Vec<(PathBuf, String)>,
}

/// Writes a page per run folder found under `paths`, the index, and the aggregate tables.
pub fn write_reports(paths: &[PathBuf], out: &Path) -> anyhow::Result<Written> {
    std::fs::create_dir_all(out).with_context(|| format!("creating {}", out.display()))?;
    let mut runs = Vec::new();
    let mut skipped = Vec::new();
    for dir in data::find_runs(paths) {
        match Run::load(&dir) {
            Ok(r) => runs.push(r),
            Err(e) => skipped.push((dir, format!("{e:#}"))),
        }
    }
    runs.sort_by(|a, b| a.summary.run_id.cmp(&b.summary.run_id));
    let env = environment()?;
    let mut pages = Vec::new();
    for run in &runs {
        let page = out.join(format!("{}.html", run.summary.run_id));
        let html = run_page::run_page(&env, run, out)?;
        std::fs::write(&page, html).with_context(|| format!("writing {}", page.display()))?;
        pages.push(page);
    }
    let (caps, bad) = capacity_page::find(paths);
    skipped.extend(bad);
    let mut capacity_pages = Vec::new();
    for cap in &caps {
        // Each probe's run page, then the search's page linking to them.
        let mut written = Vec::new();
        for probe in cap.cap.replicas.iter().flat_map(|r| &r.probes) {
            let dir = cap.dir.join(&probe.results);
            let name = capacity_page::probe_page(&cap.id, &probe.results);
            match Run::load(&dir) {
                Ok(run) => {
                    let page = out.join(&name);
                    let html = run_page::run_page(&env, &run, out)?;
                    std::fs::write(&page, html)
                        .with_context(|| format!("writing {}", page.display()))?;
                    written.push(name);
                }
                Err(e) => skipped.push((dir, format!("{e:#}"))),
            }
        }
        let json = run_page::relative(out, &cap.dir.join(crate::results::capacity::CAPACITY));
        let page = out.join(format!("{}.html", cap.id));
        let html = capacity_page::capacity_page(&env, cap, &written, &json)?;
        std::fs::write(&page, html).with_context(|| format!("writing {}", page.display()))?;
        capacity_pages.push(page);
    }
    let frame = data::runs_frame(&runs)?;
    let agg = data::aggregate(&frame)?;
    data::write_aggregate(&agg, out)?;
    let index = out.join("index.html");
    std::fs::write(&index, index_page::index_page(&env, &runs, &agg, &caps)?)
        .with_context(|| format!("writing {}", index.display()))?;
    Ok(Written {
        index,
        pages,
        capacity_pages,
        skipped,
    })
}

fn environment() -> anyhow::Result<Environment<'static>> {
    let mut env = Environment::new();
    env.add_template("run.html", RUN_TEMPLATE)?;
    env.add_template("index.html", INDEX_TEMPLATE)?;
    env.add_template("capacity.html", CAPACITY_TEMPLATE)?;
    env.add_filter("n3", |v: f64| charts::round3(v));
    Ok(env)
}

/// Which backend ran a run's replicas, from `summary.json`'s `cluster.kind`, in words.
/// How a run page and the terminal name what the cluster secured.
pub fn security(s: &crate::results::SecurityUsed) -> &'static str {
    match (s.tls, s.auth) {
        (false, false) => "plaintext, open API",
        (true, false) => "TLS",
        (false, true) => "auth tokens",
        (true, true) => "TLS + auth tokens",
    }
}

pub fn backend(kind: &str) -> String {
    match kind {
        "local" => "local processes".into(),
        "docker" => "docker containers".into(),
        "external" => "a given cluster".into(),
        other => other.into(),
    }
}
