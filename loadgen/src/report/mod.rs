//! HTML reports: one page per run and an index across runs, from results folders.
//!
//! `loadgen report [RESULTS...]` (and `loadgen bench`, at its end) reads run folders with
//! [`data`] (polars), draws charts with [`charts`] (plotters, SVG) and fills two minijinja
//! templates (`loadgen/templates/`). Pages are self-contained: charts are inlined SVG, styles
//! are inline, and there is no script needed to see anything and no URL to fetch, so a page
//! opens from disk on a laptop with no network. The only script sorts the index's table.
//!
//! Written to the reports folder: `<run-id>.html` per run, `index.html`, and the aggregate
//! table as `summary.csv` and `summary.parquet`. Links to raw files are relative, so
//! `reports/` and `results/` can be moved together.

pub mod charts;
pub mod data;

use std::collections::BTreeMap;
use std::path::{Component, Path, PathBuf};

use anyhow::Context;
use minijinja::{Environment, context};
use polars::prelude::IntoLazy;
use serde::Serialize;

use crate::scenario::Scenario;
use charts::{Line, Marker};
use data::Run;

const RUN_TEMPLATE: &str = include_str!("../../templates/run.html");
const INDEX_TEMPLATE: &str = include_str!("../../templates/index.html");
const STYLE: &str = include_str!("../../templates/style.css");

/// What a report run wrote.
pub struct Written {
    pub index: PathBuf,
    pub pages: Vec<PathBuf>,
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
        let html = run_page(&env, run, out)?;
        std::fs::write(&page, html).with_context(|| format!("writing {}", page.display()))?;
        pages.push(page);
    }
    let frame = data::runs_frame(&runs)?;
    let agg = data::aggregate(&frame)?;
    data::write_aggregate(&agg, out)?;
    let index = out.join("index.html");
    std::fs::write(&index, index_page(&env, &runs, &agg)?)
        .with_context(|| format!("writing {}", index.display()))?;
    Ok(Written {
        index,
        pages,
        skipped,
    })
}

fn environment() -> anyhow::Result<Environment<'static>> {
    let mut env = Environment::new();
    env.add_template("run.html", RUN_TEMPLATE)?;
    env.add_template("index.html", INDEX_TEMPLATE)?;
    env.add_filter("n3", |v: f64| charts::round3(v));
    Ok(env)
}

/// `to` relative to the directory `from` (both made absolute first).
fn relative(from: &Path, to: &Path) -> String {
    let abs = |p: &Path| {
        std::path::absolute(p)
            .unwrap_or_else(|_| p.to_path_buf())
            .components()
            .filter(|c| !matches!(c, Component::CurDir))
            .map(|c| c.as_os_str().to_string_lossy().to_string())
            .collect::<Vec<String>>()
    };
    let (f, t) = (abs(from), abs(to));
    let common = f.iter().zip(&t).take_while(|(a, b)| a == b).count();
    let mut parts: Vec<String> = vec!["..".into(); f.len() - common];
    parts.extend(t[common..].iter().cloned());
    parts.join("/")
}

#[derive(Serialize)]
struct OpRow {
    op: String,
    count: u64,
    errors: u64,
    errors_by_code: String,
    offered: Option<f64>,
    achieved: f64,
    latency: [f64; 6],
    service: [f64; 6],
}

#[derive(Serialize)]
struct Fact {
    name: &'static str,
    value: String,
}

/// Offered ops/s of each operation: the run's offered rate split by the mix weights.
fn offered_by_op(run: &Run) -> BTreeMap<String, f64> {
    let Some(rate) = run.summary.offered_rate else {
        return BTreeMap::new();
    };
    let Ok(s) = Scenario::parse("scenario.yaml", &run.scenario_yaml, &[]) else {
        return BTreeMap::new();
    };
    let total: u32 = s.mix.values().sum();
    s.mix
        .iter()
        .map(|(op, w)| {
            (
                op.name().to_string(),
                rate * f64::from(*w) / f64::from(total.max(1)),
            )
        })
        .collect()
}

fn run_page(env: &Environment, run: &Run, out: &Path) -> anyhow::Result<String> {
    let s = &run.summary;
    let offered = offered_by_op(run);
    let ops: Vec<OpRow> = s
        .ops
        .iter()
        .map(|(name, o)| {
            let l = &o.latency_ms;
            let t = &o.service_time_ms;
            OpRow {
                op: name.clone(),
                count: o.count,
                errors: o.errors,
                errors_by_code: o
                    .errors_by_code
                    .iter()
                    .map(|(c, n)| format!("{c} {n}"))
                    .collect::<Vec<_>>()
                    .join(", "),
                offered: offered.get(name).copied(),
                achieved: o.throughput,
                latency: [l.p50, l.p90, l.p99, l.p999, l.p9999, l.max],
                service: [t.p50, t.p90, t.p99, t.p999, t.p9999, t.max],
            }
        })
        .collect();
    let m = &s.machine;
    let facts = vec![
        Fact {
            name: "date",
            value: s.started_at.clone(),
        },
        Fact {
            name: "git revision",
            value: s.git_rev.clone().unwrap_or_else(|| "unknown".into()),
        },
        Fact {
            name: "scenario",
            value: format!("{} (YAML crc32 {})", s.scenario, run.yaml_hash),
        },
        Fact {
            name: "replicas",
            value: s.replicas.to_string(),
        },
        Fact {
            name: "model",
            value: match s.offered_rate {
                Some(r) => format!(
                    "open, {} ops/s offered, {} users",
                    charts::round3(r),
                    s.users
                ),
                None => format!("closed, {} users", s.users),
            },
        },
        Fact {
            name: "measured",
            value: format!(
                "{} s after a {} s warm-up (excluded)",
                s.duration_s, s.warmup_s
            ),
        },
        Fact {
            name: "seed",
            value: s.seed.to_string(),
        },
        Fact {
            name: "machine",
            value: format!(
                "{} cores ({}), {} MB memory, kernel {}, disk {}",
                m.cores, m.cpu_model, m.memory_mb, m.kernel, m.disk
            ),
        },
        Fact {
            name: "versions",
            value: format!("loadgen {}", s.versions.loadgen),
        },
        Fact {
            name: "cluster",
            value: format!("{} ({})", s.cluster.kind, s.cluster.endpoints.join(", ")),
        },
    ];

    // The HDR percentile distribution, one line per operation.
    let dist_lines: Vec<Line> = run
        .distributions
        .iter()
        .map(|(op, pts)| Line {
            label: op.clone(),
            color: charts::op_color(op),
            points: pts.clone(),
            dashed: false,
        })
        .collect();
    let distribution = charts::percentile_chart(
        &format!("Latency by percentile (corrected), {} replicas", s.replicas),
        &dist_lines,
    );

    // Time series, with leader changes marked.
    let mut markers: Vec<Marker> = s
        .cluster
        .leader_changes
        .iter()
        .skip(1)
        .map(|c| Marker {
            x: c.at_s,
            label: format!("leader {} (term {})", c.node, c.term),
        })
        .collect();
    // Injected faults, marked like leader changes.
    markers.extend(
        s.faults
            .iter()
            .filter(|f| f.node.is_some())
            .map(|f| Marker {
                x: f.at_s,
                label: format!(
                    "{} node {}",
                    serde_json::to_value(f.action)
                        .ok()
                        .and_then(|v| v.as_str().map(String::from))
                        .unwrap_or_default(),
                    f.node.unwrap_or(0)
                ),
            }),
    );
    // The last row can be a partial second of calls finishing after the window: the charts
    // show the window (the CSV keeps every row).
    let window = run
        .timeseries
        .clone()
        .lazy()
        .filter(
            polars::prelude::col("second").lt_eq(polars::prelude::lit(s.duration_s.ceil() as i64)),
        )
        .collect()?;
    let totals = data::totals_per_second(&window)?;
    let secs = data::f64s(&totals, "second")?;
    let counts = data::f64s(&totals, "count")?;
    let errs = data::f64s(&totals, "errors")?;
    let mut tput_lines = vec![Line {
        label: "achieved ops/s".into(),
        color: charts::nth_color(0),
        points: secs.iter().copied().zip(counts.iter().copied()).collect(),
        dashed: false,
    }];
    if !s.offered_schedule.is_empty() {
        let mut pts = Vec::new();
        for step in &s.offered_schedule {
            pts.push((step.start_s, step.rate));
            pts.push((step.end_s, step.rate));
        }
        tput_lines.push(Line {
            label: "offered ops/s".into(),
            color: charts::nth_color(7),
            points: pts,
            dashed: true,
        });
    }
    let throughput = charts::line_chart(
        "Throughput per second (all operations)",
        "time since the measured window began (s)",
        "ops/s",
        &tput_lines,
        &markers,
        false,
    );
    let mut lat_lines = Vec::new();
    for op in s.ops.keys() {
        let series = data::op_series(&window, op)?;
        let x = data::f64s(&series, "second")?;
        for (col, dashed) in [("p99_ms", false), ("p50_ms", true)] {
            let y = data::f64s(&series, col)?;
            lat_lines.push(Line {
                label: format!("{op} {}", &col[..3]),
                color: charts::op_color(op),
                points: x.iter().copied().zip(y).filter(|p| p.1 > 0.0).collect(),
                dashed,
            });
        }
    }
    let latency = charts::line_chart(
        "Latency per second: p99 (solid) and p50 (thin), corrected",
        "time since the measured window began (s)",
        "latency (ms)",
        &lat_lines,
        &markers,
        true,
    );
    let errors = charts::line_chart(
        "Errors per second (all operations)",
        "time since the measured window began (s)",
        "errors/s",
        &[Line {
            label: "errors/s".into(),
            color: charts::nth_color(3),
            points: secs.iter().copied().zip(errs.iter().copied()).collect(),
            dashed: false,
        }],
        &markers,
        false,
    );

    let mut files: Vec<(String, String)> = Vec::new();
    for name in [
        "summary.json",
        "scenario.yaml",
        "timeseries.csv",
        "goose-report.html",
    ] {
        if run.dir.join(name).exists() {
            files.push((name.to_string(), relative(out, &run.dir.join(name))));
        }
    }
    for op in s.ops.keys() {
        let name = format!("{op}.hdr.hlog");
        if run.dir.join(&name).exists() {
            files.push((name.clone(), relative(out, &run.dir.join(&name))));
        }
    }
    if run.dir.join("nodes").is_dir() {
        files.push((
            "nodes/ (replica logs)".into(),
            relative(out, &run.dir.join("nodes")),
        ));
    }

    Ok(env.get_template("run.html")?.render(context! {
        style => STYLE,
        s => s,
        facts => facts,
        yaml => run.scenario_yaml,
        ops => ops,
        slo => s.slo,
        slo_pass => s.slo_pass(),
        warning => s.generator.warning,
        generator => s.generator,
        distribution => distribution,
        throughput => throughput,
        latency => latency,
        errors => errors,
        leader_changes => s.cluster.leader_changes,
        check => s.check,
        faults => s.faults,
        files => files,
    })?)
}

/// One line per scenario of `column` against replica count, from a table with `scenario`
/// and `replicas` columns (and `op`, when `op` picks one operation's rows).
fn scenario_lines(
    scenarios: &[String],
    df: &polars::prelude::DataFrame,
    column: &str,
    op: Option<&str>,
) -> anyhow::Result<Vec<Line>> {
    let (sc, rep, y) = (
        data::strs(df, "scenario")?,
        data::f64s(df, "replicas")?,
        data::f64s(df, column)?,
    );
    let ops = match op {
        Some(_) => data::strs(df, "op")?,
        None => Vec::new(),
    };
    Ok(scenarios
        .iter()
        .enumerate()
        .map(|(i, name)| Line {
            label: name.clone(),
            color: charts::nth_color(i),
            points: (0..sc.len())
                .filter(|&k| sc[k] == *name && op.is_none_or(|o| ops[k] == o))
                .map(|k| (rep[k], y[k]))
                .collect(),
            dashed: false,
        })
        .filter(|l| !l.points.is_empty())
        .collect())
}

#[derive(Serialize)]
struct RunRow {
    page: String,
    run_id: String,
    started_at: String,
    scenario: String,
    replicas: u32,
    model: String,
    offered: Option<f64>,
    achieved: f64,
    send_p99: Option<f64>,
    read_p99: Option<f64>,
    errors: u64,
    slo: String,
}

fn index_page(
    env: &Environment,
    runs: &[Run],
    agg: &polars::prelude::DataFrame,
) -> anyhow::Result<String> {
    // Scaling panel: one line per scenario, against replica count.
    let scenarios: Vec<String> = {
        let mut v: Vec<String> = runs.iter().map(|r| r.summary.scenario.clone()).collect();
        v.sort();
        v.dedup();
        v
    };
    let by_kind = |writes: bool| -> anyhow::Result<Vec<Line>> {
        scenario_lines(
            &scenarios,
            &data::throughput_by_kind(agg, writes)?,
            "throughput",
            None,
        )
    };
    let p99_of = |op: &str| scenario_lines(&scenarios, agg, "p99_ms_median", Some(op));
    let x = "replicas";
    let scaling = vec![
        charts::line_chart(
            "Write throughput by replica count",
            x,
            "writes/s (mean of runs)",
            &by_kind(true)?,
            &[],
            false,
        ),
        charts::line_chart(
            "Read throughput by replica count",
            x,
            "reads/s (mean of runs)",
            &by_kind(false)?,
            &[],
            false,
        ),
        charts::line_chart(
            "send_message p99 by replica count",
            x,
            "p99 latency (ms, median of runs)",
            &p99_of("send_message")?,
            &[],
            false,
        ),
        charts::line_chart(
            "get_messages p99 by replica count",
            x,
            "p99 latency (ms, median of runs)",
            &p99_of("get_messages")?,
            &[],
            false,
        ),
    ];

    // Distributions of one operation, one line per replica count (the latest run of each).
    let mut overlays = Vec::new();
    for name in &scenarios {
        let mut latest: BTreeMap<u32, &Run> = BTreeMap::new();
        for r in runs.iter().filter(|r| r.summary.scenario == *name) {
            latest.insert(r.summary.replicas, r); // runs are sorted by id, i.e. by time
        }
        for op in ["send_message", "get_messages"] {
            let lines: Vec<Line> = latest
                .iter()
                .filter_map(|(n, r)| {
                    r.distributions.get(op).map(|pts| Line {
                        label: format!("{n} replicas"),
                        color: charts::replicas_color(*n),
                        points: pts.clone(),
                        dashed: false,
                    })
                })
                .collect();
            if !lines.is_empty() {
                overlays.push(charts::percentile_chart(
                    &format!("{name}: {op} latency by percentile"),
                    &lines,
                ));
            }
        }
    }

    let mut rows: Vec<RunRow> = runs
        .iter()
        .map(|r| {
            let s = &r.summary;
            RunRow {
                page: format!("{}.html", s.run_id),
                run_id: s.run_id.clone(),
                started_at: s.started_at.clone(),
                scenario: s.scenario.clone(),
                replicas: s.replicas,
                model: s.model.clone(),
                offered: s.offered_rate,
                achieved: s.ops.values().map(|o| o.throughput).sum(),
                send_p99: s.ops.get("send_message").map(|o| o.latency_ms.p99),
                read_p99: s.ops.get("get_messages").map(|o| o.latency_ms.p99),
                errors: s.ops.values().map(|o| o.errors).sum(),
                slo: if s.slo.is_empty() {
                    "none".into()
                } else if s.slo_pass() {
                    "pass".into()
                } else {
                    "missed".into()
                },
            }
        })
        .collect();
    rows.reverse(); // newest first
    Ok(env.get_template("index.html")?.render(context! {
        style => STYLE,
        runs => rows,
        scaling => scaling,
        overlays => overlays,
        scenarios => scenarios,
    })?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn links_are_relative_between_folders() {
        assert_eq!(
            relative(
                Path::new("/a/reports"),
                Path::new("/a/results/r1/summary.json")
            ),
            "../results/r1/summary.json"
        );
        assert_eq!(relative(Path::new("/a"), Path::new("/a/b")), "b");
    }
}
