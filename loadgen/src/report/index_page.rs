//! The index page: every run, and how the scenarios scale with the replica count.

use std::collections::BTreeMap;

use minijinja::{Environment, context};
use serde::Serialize;

use super::STYLE;
use super::capacity_page::{self, CapRun};
use super::charts::{self, Line};
use super::data::{self, Run};

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
    system: String,
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

/// The index: the scaling panel, the distributions by replica count, and the table of runs.
pub(super) fn index_page(
    env: &Environment,
    runs: &[Run],
    agg: &polars::prelude::DataFrame,
    caps: &[CapRun],
) -> anyhow::Result<String> {
    let scenarios: Vec<String> = {
        let mut v: Vec<String> = runs.iter().map(|r| r.summary.line()).collect();
        v.sort();
        v.dedup();
        v
    };
    let mut rows: Vec<RunRow> = runs.iter().map(RunRow::of).collect();
    rows.reverse(); // newest first
    Ok(env.get_template("index.html")?.render(context! {
        style => STYLE,
        runs => rows,
        scaling => {
            let mut c = scaling_charts(&scenarios, agg)?;
            c.push(cpu_per_kop_chart(&scenarios, runs));
            c
        },
        overlays => distribution_overlays(&scenarios, runs),
        capacity_runs => capacity_page::rows(caps),
        capacity_chart => capacity_page::max_rate_chart(caps),
        scenarios => scenarios,
    })?)
}

/// Scaling panel: throughput and p99 against replica count, one line per scenario.
fn scaling_charts(
    scenarios: &[String],
    agg: &polars::prelude::DataFrame,
) -> anyhow::Result<Vec<String>> {
    let by_kind = |writes: bool| -> anyhow::Result<Vec<Line>> {
        scenario_lines(
            scenarios,
            &data::throughput_by_kind(agg, writes)?,
            "throughput",
            None,
        )
    };
    let p99_of = |op: &str| scenario_lines(scenarios, agg, "p99_ms_median", Some(op));
    let x = "replicas";
    Ok(vec![
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
    ])
}

/// The replicas' CPU seconds (all replicas together) and successful operations of a run's
/// measured window, from its `resources` and throughput; `None` when no replica was sampled.
pub(super) fn cpu_s_and_ops(r: &Run) -> Option<(f64, f64)> {
    let s = &r.summary;
    let ops: f64 = s.ops.values().map(|o| o.throughput).sum::<f64>() * s.duration_s;
    let cores: f64 = s
        .resources
        .processes
        .iter()
        .filter(|(p, _)| p.starts_with("node-"))
        .map(|(_, p)| p.cpu_pct_mean / 100.0)
        .sum();
    (ops > 0.0 && cores > 0.0).then_some((cores * s.duration_s, ops))
}

/// What the cluster spends per operation, against replica count: one line per scenario, the
/// CPU seconds of its runs at each count over their operations (a ratio of sums, so a long
/// run weighs more than a short one). Every replica does the same work for each write
/// (append, fdatasync, apply), so this grows with the replica count even when throughput
/// holds; fixed costs (heartbeats, the metrics scrape) make it higher at low rates.
fn cpu_per_kop_chart(scenarios: &[String], runs: &[Run]) -> String {
    let lines: Vec<Line> = scenarios
        .iter()
        .enumerate()
        .map(|(i, name)| {
            let mut by: BTreeMap<u32, (f64, f64)> = BTreeMap::new();
            for r in runs.iter().filter(|r| r.summary.line() == *name) {
                if let Some((cpu_s, ops)) = cpu_s_and_ops(r) {
                    let e = by.entry(r.summary.replicas).or_default();
                    e.0 += cpu_s;
                    e.1 += ops;
                }
            }
            Line {
                label: name.clone(),
                color: charts::nth_color(i),
                points: by
                    .into_iter()
                    .map(|(n, (cpu_s, ops))| (f64::from(n), cpu_s / ops * 1000.0))
                    .collect(),
                dashed: false,
            }
        })
        .filter(|l| !l.points.is_empty())
        .collect();
    charts::line_chart(
        "Replicas' CPU seconds per 1,000 operations by replica count",
        "replicas",
        "CPU s per 1,000 ops (all replicas, all runs)",
        &lines,
        &[],
        false,
    )
}

/// Distributions of one operation, one line per replica count (the latest run of each).
fn distribution_overlays(scenarios: &[String], runs: &[Run]) -> Vec<String> {
    let mut overlays = Vec::new();
    for name in scenarios {
        let mut latest: BTreeMap<u32, &Run> = BTreeMap::new();
        for r in runs.iter().filter(|r| r.summary.line() == *name) {
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
    overlays
}

impl RunRow {
    fn of(r: &Run) -> RunRow {
        let s = &r.summary;
        RunRow {
            page: format!("{}.html", s.run_id),
            run_id: s.run_id.clone(),
            started_at: s.started_at.clone(),
            system: s.system.clone(),
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
    }
}
