//! The run page's "Replicas" section: what the replicas (and the generator) did each second,
//! from the run's `resources.csv` and `metrics.csv`, with the same leader-change and fault
//! markers as the time series.
//!
//! - CPU and memory by process (`resources.csv`);
//! - fdatasync latency p50/p99 and entries per fdatasync, per replica;
//! - commit latency p50/p99 per second (the leader's: only a leader commits proposals);
//! - ReadIndex rounds per second and reads per round (how well linearizable reads batch);
//! - the share of the generator's calls that a replica forwarded to the leader;
//! - the deepest actor queue of each replica at each sample.
//!
//! Snapshots are marked on these charts and on the run's time series ([`snapshot_markers`]):
//! a snapshot is the first thing to look for under a latency spike. The "where the time
//! goes" table is the summary's `time_split` (`crate::results::time_split`).

use std::collections::BTreeMap;
use std::path::Path;

use serde::{Deserialize, Serialize};

use super::charts::{self, Line, Marker, MarkerKind};
use crate::results::files;

/// Time-series charts count seconds from here.
const SINCE_WINDOW: &str = "time since the measured window began (s)";

/// What the template shows.
#[derive(Serialize)]
pub(super) struct Replicas {
    /// Any row sampled at all.
    pub sampled: bool,
    pub charts: Vec<String>,
}

#[derive(Deserialize)]
struct ResourceRow {
    t_s: f64,
    process: String,
    cpu_pct: f64,
    rss_bytes: f64,
}

#[derive(Deserialize)]
struct MetricRow {
    t_s: f64,
    node: String,
    metric: String,
    value: f64,
}

/// Rows of a CSV file of the run; none when it is missing (an older run) or unreadable.
fn read<T: for<'de> Deserialize<'de>>(path: &Path) -> Vec<T> {
    let Ok(mut r) = csv::Reader::from_path(path) else {
        return Vec::new();
    };
    r.deserialize().filter_map(Result::ok).collect()
}

/// A stable colour per process: replicas by number, the generator grey.
fn color(process: &str) -> plotters::style::RGBColor {
    match process
        .strip_prefix("node-")
        .and_then(|n| n.parse::<usize>().ok())
    {
        Some(n) => charts::nth_color((n + 6) % 7),
        None => charts::nth_color(7),
    }
}

/// Series by process, in order: `(process, [(t, value)])`.
type ByProcess = BTreeMap<String, Vec<(f64, f64)>>;

fn lines(by: &ByProcess, suffix: &str, dashed: bool) -> Vec<Line> {
    by.iter()
        .map(|(p, pts)| Line {
            label: format!("{p}{suffix}"),
            color: color(p),
            points: pts.clone(),
            dashed,
        })
        .collect()
}

/// One marker per second in which replicas took or installed a snapshot
/// (`telegraft_snapshots_total` rose), naming them: `snapshot n1,n3`.
pub(super) fn snapshot_markers(dir: &Path) -> Vec<Marker> {
    let metrics: Vec<MetricRow> = read(&dir.join(files::METRICS));
    snapshots_by_second(&metrics)
        .into_iter()
        .map(|(t, nodes)| Marker {
            x: t as f64,
            label: format!("snapshot {}", nodes.join(",")),
            kind: MarkerKind::Snapshot,
        })
        .collect()
}

/// Seconds with a snapshot, and the replicas (`n1`, ...) that made one in it.
fn snapshots_by_second(metrics: &[MetricRow]) -> BTreeMap<i64, Vec<String>> {
    let mut by: BTreeMap<i64, Vec<String>> = BTreeMap::new();
    for m in metrics
        .iter()
        .filter(|m| m.metric == "telegraft_snapshots_total_rate" && m.value > 0.0)
    {
        let short = m
            .node
            .strip_prefix("node-")
            .map_or(m.node.clone(), |n| format!("n{n}"));
        let nodes = by.entry(m.t_s as i64).or_default();
        if !nodes.contains(&short) {
            nodes.push(short);
        }
    }
    by
}

/// `calls_per_second`: the generator's calls (ok and failed) by measured second.
pub(super) fn replicas(
    dir: &Path,
    markers: &[Marker],
    calls_per_second: &BTreeMap<i64, f64>,
) -> Replicas {
    let resources: Vec<ResourceRow> = read(&dir.join(files::RESOURCES));
    let metrics: Vec<MetricRow> = read(&dir.join(files::METRICS));
    let (mut cpu, mut rss) = (ByProcess::new(), ByProcess::new());
    for r in &resources {
        cpu.entry(r.process.clone())
            .or_default()
            .push((r.t_s, r.cpu_pct));
        rss.entry(r.process.clone())
            .or_default()
            .push((r.t_s, r.rss_bytes / 1e6));
    }
    // One metric by node, milliseconds for seconds.
    let by_node = |name: &str, scale: f64| -> ByProcess {
        let mut by = ByProcess::new();
        for m in metrics.iter().filter(|m| m.metric == name) {
            by.entry(m.node.clone())
                .or_default()
                .push((m.t_s, m.value * scale));
        }
        by
    };
    let quantiles = |family: &str| {
        let mut l = lines(&by_node(&format!("{family}_p99"), 1e3), " p99", false);
        l.extend(lines(&by_node(&format!("{family}_p50"), 1e3), " p50", true));
        l
    };
    // Forwarded share: every replica's forwards that second over the generator's calls.
    let mut forwarded: BTreeMap<i64, f64> = BTreeMap::new();
    for m in metrics
        .iter()
        .filter(|m| m.metric == "telegraft_requests_forwarded_total_rate")
    {
        *forwarded.entry(m.t_s as i64).or_default() += m.value;
    }
    let share: Vec<(f64, f64)> = forwarded
        .iter()
        .filter_map(|(t, f)| {
            let calls = calls_per_second.get(t).copied().filter(|c| *c > 0.0)?;
            Some((*t as f64, (100.0 * f / calls).min(100.0)))
        })
        .collect();
    // The deepest queue of each replica at each sample.
    let mut deepest: BTreeMap<String, BTreeMap<i64, f64>> = BTreeMap::new();
    for m in metrics
        .iter()
        .filter(|m| m.metric.starts_with("telegraft_queue_depth"))
    {
        let d = deepest
            .entry(m.node.clone())
            .or_default()
            .entry(m.t_s as i64)
            .or_default();
        *d = d.max(m.value);
    }
    let deepest: ByProcess = deepest
        .into_iter()
        .map(|(n, by_t)| (n, by_t.into_iter().map(|(t, v)| (t as f64, v)).collect()))
        .collect();
    let chart = |title: &str, y: &str, lines: &[Line], log_y: bool| {
        charts::line_chart(title, SINCE_WINDOW, y, lines, markers, log_y)
    };
    Replicas {
        sampled: !resources.is_empty() || !metrics.is_empty(),
        charts: vec![
            chart(
                "CPU by process (% of one core)",
                "CPU (%)",
                &lines(&cpu, "", false),
                false,
            ),
            chart(
                "Memory by process (RSS)",
                "RSS (MB)",
                &lines(&rss, "", false),
                false,
            ),
            chart(
                "fdatasync latency per second: p99 (solid) and p50 (thin)",
                "latency (ms)",
                &quantiles("telegraft_storage_fsync_seconds"),
                true,
            ),
            chart(
                "Entries per fdatasync (mean per second)",
                "entries",
                &lines(
                    &by_node("telegraft_storage_fsync_entries_mean", 1.0),
                    "",
                    false,
                ),
                false,
            ),
            chart(
                "Commit latency per second (proposal to commit): p99 (solid) and p50 (thin)",
                "latency (ms)",
                &quantiles("telegraft_raft_commit_seconds"),
                true,
            ),
            chart(
                "ReadIndex rounds per second (a leader confirms its leadership once per round)",
                "rounds/s",
                &lines(
                    &by_node("telegraft_raft_read_index_seconds_rate", 1.0),
                    "",
                    false,
                ),
                false,
            ),
            chart(
                "Linearizable reads per ReadIndex round (mean per second)",
                "reads per round",
                &lines(
                    &by_node("telegraft_raft_reads_per_round_mean", 1.0),
                    "",
                    false,
                ),
                false,
            ),
            chart(
                "Forwarded share: the generator's calls a replica forwarded to the leader",
                "forwarded (%)",
                &[Line {
                    label: "forwarded".into(),
                    color: charts::nth_color(4),
                    points: share,
                    dashed: false,
                }],
                false,
            ),
            chart(
                "Deepest actor queue of each replica, at each sample",
                "messages waiting",
                &lines(&deepest, "", false),
                false,
            ),
        ],
    }
}
