//! One run's page: header facts, the verdicts, the operations table, the latency
//! distribution, the time series with leader changes and faults marked, the replicas
//! ([`super::replicas`]), and links to the raw files.

use std::collections::BTreeMap;
use std::path::Path;

use minijinja::{Environment, context};
use polars::prelude::{DataFrame, IntoLazy, col, lit};
use serde::Serialize;

use super::STYLE;
use super::charts::{self, Line, Marker, MarkerKind};
use super::data::{self, Run};
use super::replicas;
use crate::results::{Summary, files};
use crate::scenario::Scenario;

/// Time-series charts count seconds from here.
const SINCE_WINDOW: &str = "time since the measured window began (s)";

pub(super) fn run_page(env: &Environment, run: &Run, out: &Path) -> anyhow::Result<String> {
    let s = &run.summary;
    let series = TimeSeries::of(run)?;
    let replicas = replicas::replicas(&run.dir, &markers(run), &calls_per_second(run)?);
    Ok(env.get_template("run.html")?.render(context! {
        style => STYLE,
        s => s,
        facts => facts(run),
        yaml => run.scenario_yaml,
        ops => op_rows(run),
        slo => slo_rows(s),
        slo_pass => s.slo_pass(),
        warning => s.generator.warning,
        generator => s.generator,
        distribution => distribution_chart(run),
        throughput => series.throughput,
        latency => series.latency,
        errors => series.errors,
        leader_changes => s.cluster.leader_changes,
        replicas => replicas,
        split => s.time_split,
        check => s.check,
        faults => s.faults,
        files => file_links(run, out),
    })?)
}

/// One objective as the page shows it.
#[derive(Serialize)]
struct SloRow {
    name: String,
    measured: String,
    pass: bool,
}

fn slo_rows(s: &Summary) -> Vec<SloRow> {
    s.slo
        .iter()
        .map(|v| SloRow {
            name: v.name(),
            measured: v.measured(),
            pass: v.passed(),
        })
        .collect()
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

/// The operations table: counts, offered and achieved rates, corrected and service-time
/// percentiles.
fn op_rows(run: &Run) -> Vec<OpRow> {
    let offered = offered_by_op(run);
    run.summary
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
        .collect()
}

/// Offered ops/s of each operation: the run's offered rate split by the mix weights.
fn offered_by_op(run: &Run) -> BTreeMap<String, f64> {
    let Some(rate) = run.summary.offered_rate else {
        return BTreeMap::new();
    };
    let Ok(s) = Scenario::parse(files::SCENARIO, &run.scenario_yaml, &[]) else {
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

#[derive(Serialize)]
struct Fact {
    name: &'static str,
    value: String,
}

/// The header: when, what, where.
fn facts(run: &Run) -> Vec<Fact> {
    let s = &run.summary;
    let m = &s.machine;
    let fact = |name, value| Fact { name, value };
    vec![
        fact("date", s.started_at.clone()),
        fact(
            "git revision",
            s.git_rev.clone().unwrap_or_else(|| "unknown".into()),
        ),
        fact(
            "scenario",
            format!("{} (YAML crc32 {})", s.scenario, run.yaml_hash),
        ),
        fact("replicas", s.replicas.to_string()),
        fact(
            "model",
            match s.offered_rate {
                Some(r) => format!(
                    "open, {} ops/s offered, {} users",
                    charts::round3(r),
                    s.users
                ),
                None => format!("closed, {} users", s.users),
            },
        ),
        fact(
            "measured",
            format!(
                "{} s after a {} s warm-up (excluded)",
                s.duration_s, s.warmup_s
            ),
        ),
        fact("seed", s.seed.to_string()),
        fact(
            "machine",
            format!(
                "{} cores ({}), {} MB memory, kernel {}, disk {}",
                m.cores, m.cpu_model, m.memory_mb, m.kernel, m.disk
            ),
        ),
        fact("versions", format!("loadgen {}", s.versions.loadgen)),
        fact(
            "cluster",
            format!(
                "{} ({})",
                super::backend(&s.cluster.kind),
                s.cluster.endpoints.join(", ")
            ),
        ),
        fact("security", super::security(&s.cluster.security).to_string()),
    ]
}

/// The HDR percentile distribution, one line per operation.
fn distribution_chart(run: &Run) -> String {
    let lines: Vec<Line> = run
        .distributions
        .iter()
        .map(|(op, pts)| Line {
            label: op.clone(),
            color: charts::op_color(op),
            points: pts.clone(),
            dashed: false,
        })
        .collect();
    charts::percentile_chart(
        &format!(
            "Latency by percentile (corrected), {} replicas",
            run.summary.replicas
        ),
        &lines,
    )
}

/// The generator's calls (ok and failed, all operations) by second of the measured window.
fn calls_per_second(run: &Run) -> anyhow::Result<BTreeMap<i64, f64>> {
    let totals = data::totals_per_second(&run.timeseries)?;
    let secs = data::f64s(&totals, "second")?;
    let count = data::f64s(&totals, "count")?;
    let errors = data::f64s(&totals, "errors")?;
    Ok(secs
        .iter()
        .zip(count.iter().zip(&errors))
        .map(|(s, (c, e))| (*s as i64, c + e))
        .collect())
}

/// Leader changes (after the first leader), the faults that were carried out, and the
/// replicas' snapshots.
fn markers(run: &Run) -> Vec<Marker> {
    let mut m = events(&run.summary);
    m.extend(replicas::snapshot_markers(&run.dir));
    m
}

/// Leader changes (after the first leader) and the faults that were carried out.
fn events(s: &Summary) -> Vec<Marker> {
    let leaders = s.cluster.leader_changes.iter().skip(1).map(|c| Marker {
        x: c.at_s,
        label: format!("leader {} (term {})", c.node, c.term),
        kind: MarkerKind::Event,
    });
    let faults = s.faults.iter().filter_map(|f| {
        f.node.map(|node| Marker {
            x: f.at_s,
            label: format!("{} node {node}", f.action.name()),
            kind: MarkerKind::Event,
        })
    });
    leaders.chain(faults).collect()
}

/// The three time-series charts.
struct TimeSeries {
    throughput: String,
    latency: String,
    errors: String,
}

impl TimeSeries {
    fn of(run: &Run) -> anyhow::Result<TimeSeries> {
        let s = &run.summary;
        let markers = markers(run);
        // The last row can be a partial second of calls finishing after the window: the
        // charts show the window (the CSV keeps every row).
        let window = run
            .timeseries
            .clone()
            .lazy()
            .filter(col("second").lt_eq(lit(s.duration_s.ceil() as i64)))
            .collect()?;
        let totals = data::totals_per_second(&window)?;
        let secs = data::f64s(&totals, "second")?;
        let points = |column: &str| -> anyhow::Result<Vec<(f64, f64)>> {
            let y = data::f64s(&totals, column)?;
            Ok(secs.iter().copied().zip(y).collect())
        };
        let mut tput_lines = vec![Line {
            label: "achieved ops/s".into(),
            color: charts::nth_color(0),
            points: points("count")?,
            dashed: false,
        }];
        if !s.offered_schedule.is_empty() {
            tput_lines.push(Line {
                label: "offered ops/s".into(),
                color: charts::nth_color(7),
                points: s
                    .offered_schedule
                    .iter()
                    .flat_map(|step| [(step.start_s, step.rate), (step.end_s, step.rate)])
                    .collect(),
                dashed: true,
            });
        }
        let error_lines = [Line {
            label: "errors/s".into(),
            color: charts::nth_color(3),
            points: points("errors")?,
            dashed: false,
        }];
        Ok(TimeSeries {
            throughput: charts::line_chart(
                "Throughput per second (all operations)",
                SINCE_WINDOW,
                "ops/s",
                &tput_lines,
                &markers,
                false,
            ),
            latency: charts::line_chart(
                "Latency per second: p99 (solid) and p50 (thin), corrected",
                SINCE_WINDOW,
                "latency (ms)",
                &latency_lines(s, &window)?,
                &markers,
                true,
            ),
            errors: charts::line_chart(
                "Errors per second (all operations)",
                SINCE_WINDOW,
                "errors/s",
                &error_lines,
                &markers,
                false,
            ),
        })
    }
}

/// p99 (solid) and p50 (dashed) per second, per operation.
fn latency_lines(s: &Summary, window: &DataFrame) -> anyhow::Result<Vec<Line>> {
    let mut lines = Vec::new();
    for op in s.ops.keys() {
        let series = data::op_series(window, op)?;
        let x = data::f64s(&series, "second")?;
        for (column, dashed) in [("p99_ms", false), ("p50_ms", true)] {
            let y = data::f64s(&series, column)?;
            lines.push(Line {
                label: format!("{op} {}", &column[..3]),
                color: charts::op_color(op),
                points: x.iter().copied().zip(y).filter(|p| p.1 > 0.0).collect(),
                dashed,
            });
        }
    }
    Ok(lines)
}

/// Links to the run's raw files that exist, relative to the reports folder `out`.
fn file_links(run: &Run, out: &Path) -> Vec<(String, String)> {
    let hlogs = run.summary.ops.keys().map(|op| files::hlog(op));
    let names = [
        files::SUMMARY,
        files::SCENARIO,
        files::TIMESERIES,
        files::RESOURCES,
        files::METRICS,
        files::GOOSE_HTML,
    ]
    .map(String::from)
    .into_iter()
    .chain(hlogs);
    let mut links: Vec<(String, String)> = names
        .filter(|name| run.dir.join(name).exists())
        .map(|name| {
            let link = relative(out, &run.dir.join(&name));
            (name, link)
        })
        .collect();
    if run.dir.join(files::NODES).is_dir() {
        links.push((
            "nodes/ (replica logs)".into(),
            relative(out, &run.dir.join(files::NODES)),
        ));
    }
    links
}

/// `to` relative to the directory `from` (both made absolute first), with `/` separators.
pub(super) fn relative(from: &Path, to: &Path) -> String {
    let abs = |p: &Path| std::path::absolute(p).unwrap_or_else(|_| p.to_path_buf());
    let (from, to) = (abs(from), abs(to));
    pathdiff::diff_paths(&to, &from)
        .unwrap_or(to)
        .components()
        .map(|c| c.as_os_str().to_string_lossy())
        .collect::<Vec<_>>()
        .join("/")
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
        assert_eq!(
            relative(Path::new("/a/./reports"), Path::new("/a/results/x")),
            "../results/x"
        );
    }
}
