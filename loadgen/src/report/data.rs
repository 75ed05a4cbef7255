//! Reading results folders into DataFrames, and the aggregation across runs.
//!
//! Every run becomes a [`Run`]: its `summary.json` (serde), its `timeseries.csv` (a polars
//! DataFrame), and one latency-by-percentile curve per operation, read from the merged
//! per-second histograms of its `<op>.hdr.hlog` (the full distribution, not just the few
//! percentiles the summary keeps). Across runs, [`runs_frame`] has one row per run and
//! operation and [`aggregate`] groups it by (scenario, replicas, operation); that table is
//! what the index's scaling panel draws and what `reports/summary.csv` and
//! `reports/summary.parquet` hold.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use anyhow::Context;
use hdrhistogram::Histogram;
use hdrhistogram::serialization::Deserializer;
use hdrhistogram::serialization::interval_log::{IntervalLogIterator, LogEntry};
use polars::prelude::*;
use polars_io::prelude::{CsvReadOptions, CsvWriter, ParquetWriter, SerReader, SerWriter};

use crate::results::{Summary, files};

/// Operations that change state (the rest are reads).
pub const WRITES: [&str; 4] = ["send_message", "join_chat", "create_chat", "create_user"];

/// One results folder, read.
pub struct Run {
    pub dir: PathBuf,
    pub summary: Summary,
    /// The effective scenario, as the run wrote it.
    pub scenario_yaml: String,
    /// A short hash of that YAML (crc32, hex), to tell runs of edited scenarios apart.
    pub yaml_hash: String,
    /// `second, op, count, errors, p50_ms, p99_ms, max_ms`.
    pub timeseries: DataFrame,
    /// Per operation: (percentile in %, latency in ms) from 0% to the maximum.
    pub distributions: BTreeMap<String, Vec<(f64, f64)>>,
}

impl Run {
    /// Reads a run folder (one that has a `summary.json`).
    pub fn load(dir: &Path) -> anyhow::Result<Run> {
        let path = dir.join(files::SUMMARY);
        let text = std::fs::read_to_string(&path)
            .with_context(|| format!("reading {}", path.display()))?;
        let summary: Summary =
            serde_json::from_str(&text).with_context(|| format!("parsing {}", path.display()))?;
        let scenario_yaml = std::fs::read_to_string(dir.join(files::SCENARIO)).unwrap_or_default();
        let yaml_hash = format!("{:08x}", crc32fast::hash(scenario_yaml.as_bytes()));
        let csv = dir.join(files::TIMESERIES);
        let timeseries = CsvReadOptions::default()
            .with_has_header(true)
            .try_into_reader_with_file_path(Some(csv.clone()))
            .and_then(|r| r.finish())
            .map_err(|e| anyhow::anyhow!("reading {}: {e}", csv.display()))?;
        let mut distributions = BTreeMap::new();
        for op in summary.ops.keys() {
            let hlog = dir.join(files::hlog(op));
            if let Some(h) = merged_histogram(&hlog)? {
                distributions.insert(op.clone(), percentile_curve(&h));
            }
        }
        Ok(Run {
            dir: dir.to_path_buf(),
            summary,
            scenario_yaml,
            yaml_hash,
            timeseries,
            distributions,
        })
    }
}

/// Every run folder among `paths`: each path is a run folder, or a folder of them.
/// Folders without a `summary.json` (a run that failed before the end) are skipped.
pub fn find_runs(paths: &[PathBuf]) -> Vec<PathBuf> {
    let mut runs = Vec::new();
    for p in paths {
        if p.join(files::SUMMARY).is_file() {
            runs.push(p.clone());
        } else if let Ok(entries) = std::fs::read_dir(p) {
            let mut found: Vec<PathBuf> = entries
                .flatten()
                .map(|e| e.path())
                .filter(|d| d.join(files::SUMMARY).is_file())
                .collect();
            found.sort();
            runs.extend(found);
        }
    }
    runs
}

/// All the per-second histograms of an interval log, added up.
fn merged_histogram(path: &Path) -> anyhow::Result<Option<Histogram<u64>>> {
    let Ok(bytes) = std::fs::read(path) else {
        return Ok(None);
    };
    let mut total: Option<Histogram<u64>> = None;
    let mut decoder = Deserializer::new();
    for entry in IntervalLogIterator::new(&bytes) {
        let entry = entry.map_err(|e| anyhow::anyhow!("{}: {e:?}", path.display()))?;
        if let LogEntry::Interval(interval) = entry {
            let raw = base64_decode(interval.encoded_histogram())
                .with_context(|| format!("{}: bad base64", path.display()))?;
            let h: Histogram<u64> = decoder
                .deserialize(&mut raw.as_slice())
                .map_err(|e| anyhow::anyhow!("{}: {e:?}", path.display()))?;
            match &mut total {
                Some(t) => t.add(&h).map_err(|e| anyhow::anyhow!("{e:?}"))?,
                None => total = Some(h),
            }
        }
    }
    Ok(total)
}

fn base64_decode(s: &str) -> anyhow::Result<Vec<u8>> {
    use base64::Engine;
    Ok(base64::engine::general_purpose::STANDARD.decode(s.trim())?)
}

/// Latency at percentiles spaced evenly on the "nines" axis (1/(1-p)), from 0% up to the
/// last percentile the sample can resolve, then the maximum.
fn percentile_curve(h: &Histogram<u64>) -> Vec<(f64, f64)> {
    if h.is_empty() {
        return Vec::new();
    }
    let n = h.len() as f64;
    let mut points = Vec::new();
    for k in 0..=100 {
        // 20 steps per nine: 0%, ..., 90%, ..., 99%, ... 99.999%.
        let q = 1.0 - 10f64.powf(-f64::from(k) / 20.0);
        if k > 0 && (1.0 - q) * n < 1.0 {
            break;
        }
        points.push((q * 100.0, h.value_at_quantile(q) as f64 / 1000.0));
    }
    // The maximum, placed one step past the last resolvable percentile.
    let last = points.last().map_or(0.0, |p| p.0);
    let max_q = 1.0 - (1.0 - last / 100.0) / 10f64.powf(1.0 / 20.0);
    points.push((max_q * 100.0, h.max() as f64 / 1000.0));
    points
}

/// One row per run and operation: what the table of runs and the aggregation read.
pub fn runs_frame(runs: &[Run]) -> PolarsResult<DataFrame> {
    let mut run_id = Vec::new();
    let mut started = Vec::new();
    let mut scenario = Vec::new();
    let mut replicas = Vec::new();
    let mut model = Vec::new();
    let mut offered = Vec::new();
    let mut op = Vec::new();
    let (mut count, mut errors, mut throughput) = (Vec::new(), Vec::new(), Vec::new());
    let (mut p50, mut p90, mut p99, mut p999, mut p9999, mut max) =
        (vec![], vec![], vec![], vec![], vec![], vec![]);
    let (mut svc_p50, mut svc_p99) = (vec![], vec![]);
    for r in runs {
        let s = &r.summary;
        for (name, o) in &s.ops {
            run_id.push(s.run_id.clone());
            started.push(s.started_at.clone());
            scenario.push(s.line());
            replicas.push(s.replicas);
            model.push(s.model.clone());
            offered.push(s.offered_rate);
            op.push(name.clone());
            count.push(o.count);
            errors.push(o.errors);
            throughput.push(o.throughput);
            let l = &o.latency_ms;
            p50.push(l.p50);
            p90.push(l.p90);
            p99.push(l.p99);
            p999.push(l.p999);
            p9999.push(l.p9999);
            max.push(l.max);
            svc_p50.push(o.service_time_ms.p50);
            svc_p99.push(o.service_time_ms.p99);
        }
    }
    df!(
        "run_id" => run_id,
        "started_at" => started,
        "scenario" => scenario,
        "replicas" => replicas,
        "model" => model,
        "offered_rate" => offered,
        "op" => op,
        "count" => count,
        "errors" => errors,
        "throughput" => throughput,
        "p50_ms" => p50,
        "p90_ms" => p90,
        "p99_ms" => p99,
        "p999_ms" => p999,
        "p9999_ms" => p9999,
        "max_ms" => max,
        "service_p50_ms" => svc_p50,
        "service_p99_ms" => svc_p99,
    )
}

/// Per (scenario, replicas, operation), over its runs: how many runs, mean and best
/// throughput, median p50 and p99, worst p99.9 and max, total calls and errors.
pub fn aggregate(runs: &DataFrame) -> PolarsResult<DataFrame> {
    runs.clone()
        .lazy()
        .group_by([col("scenario"), col("replicas"), col("op")])
        .agg([
            len().alias("runs"),
            col("throughput").mean().alias("throughput_mean"),
            col("throughput").max().alias("throughput_max"),
            col("p50_ms").median().alias("p50_ms_median"),
            col("p99_ms").median().alias("p99_ms_median"),
            col("p999_ms").max().alias("p999_ms_worst"),
            col("max_ms").max().alias("max_ms_worst"),
            col("count").sum().alias("count"),
            col("errors").sum().alias("errors"),
        ])
        .sort(
            ["scenario", "op", "replicas"],
            SortMultipleOptions::default(),
        )
        .collect()
}

/// Per (scenario, replicas): total mean throughput of the writes or of the reads.
pub fn throughput_by_kind(agg: &DataFrame, writes: bool) -> PolarsResult<DataFrame> {
    let is_write = WRITES
        .iter()
        .map(|w| col("op").eq(lit(*w)))
        .reduce(|a, b| a.or(b))
        .expect("there are write operations");
    agg.clone()
        .lazy()
        .filter(if writes { is_write } else { is_write.not() })
        .group_by([col("scenario"), col("replicas")])
        .agg([col("throughput_mean").sum().alias("throughput")])
        .sort(["scenario", "replicas"], SortMultipleOptions::default())
        .collect()
}

/// Writes the aggregate as `summary.csv` and `summary.parquet` in `dir`.
pub fn write_aggregate(agg: &DataFrame, dir: &Path) -> anyhow::Result<()> {
    let mut df = agg.clone();
    let mut csv = std::fs::File::create(dir.join("summary.csv"))?;
    CsvWriter::new(&mut csv).finish(&mut df)?;
    let parquet = std::fs::File::create(dir.join("summary.parquet"))?;
    ParquetWriter::new(parquet).finish(&mut df)?;
    Ok(())
}

/// A column as f64 values (nulls as NaN).
pub fn f64s(df: &DataFrame, name: &str) -> PolarsResult<Vec<f64>> {
    let s = df.column(name)?.cast(&DataType::Float64)?;
    let ca = s.f64()?;
    Ok((0..ca.len())
        .map(|i| ca.get(i).unwrap_or(f64::NAN))
        .collect())
}

/// A column as strings.
pub fn strs(df: &DataFrame, name: &str) -> PolarsResult<Vec<String>> {
    let s = df.column(name)?.cast(&DataType::String)?;
    let ca = s.str()?;
    Ok((0..ca.len())
        .map(|i| ca.get(i).unwrap_or_default().to_string())
        .collect())
}

/// Per second of one run: all operations' calls and errors added up.
pub fn totals_per_second(ts: &DataFrame) -> PolarsResult<DataFrame> {
    ts.clone()
        .lazy()
        .group_by([col("second")])
        .agg([
            col("count").sum().alias("count"),
            col("errors").sum().alias("errors"),
        ])
        .sort(["second"], SortMultipleOptions::default())
        .collect()
}

/// One operation's rows of a run's time series, by second.
pub fn op_series(ts: &DataFrame, op: &str) -> PolarsResult<DataFrame> {
    ts.clone()
        .lazy()
        .filter(col("op").eq(lit(op)))
        .sort(["second"], SortMultipleOptions::default())
        .collect()
}
