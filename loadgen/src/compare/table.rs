//! The comparison as text: one markdown table (it pastes into a README or a PR), one row
//! per operation and metric, then the regressions.

use std::fmt::Write as _;

use comfy_table::{CellAlignment, Table, presets};

use super::{Comparison, Row, RowVerdict, Verdict};

/// A number to 3 significant figures, without trailing zeros: 1234.6 -> 1235, 12.345 ->
/// 12.3, 0.012345 -> 0.0123.
pub(crate) fn num(v: f64) -> String {
    if v == 0.0 || !v.is_finite() {
        return "0".into();
    }
    let digits = 2 - v.abs().log10().floor() as i32;
    if digits <= 0 {
        format!("{v:.0}")
    } else {
        let s = format!("{v:.*}", digits as usize);
        s.trim_end_matches('0').trim_end_matches('.').to_string()
    }
}

/// A value with its unit: `12.3 ms`, `498 ops/s`, `0.05%`.
pub(crate) fn value(v: f64, unit: &str) -> String {
    if unit == "%" {
        format!("{}%", num(v))
    } else {
        format!("{} {unit}", num(v))
    }
}

/// The unit of a difference: the error rate's are percentage points.
fn delta_unit(unit: &str) -> &str {
    if unit == "%" { "pt" } else { unit }
}

/// The change: `+1.23 ms (+30.1%)`, `-2 ops/s (-0.4%)`, `+0.05 pt`.
pub(crate) fn delta(r: &Row) -> String {
    let sign = if r.delta > 0.0 { "+" } else { "" };
    let abs = format!("{sign}{} {}", num(r.delta), delta_unit(&r.unit));
    match r.delta_pct {
        Some(p) if r.unit != "%" => {
            let sign = if p > 0.0 { "+" } else { "" };
            format!("{abs} ({sign}{}%)", num(p))
        }
        _ => abs,
    }
}

/// The noise: `0.412 ms`, or `?` when unknown.
pub(crate) fn noise(r: &Row) -> String {
    r.noise.map_or("?".into(), |n| {
        format!("{} {}", num(n), delta_unit(&r.unit))
    })
}

/// The tolerance: `10%`, `0.1 pt`, `off`.
pub(crate) fn tolerance(r: &Row) -> String {
    match r.tolerance {
        None => "off".into(),
        Some(t) if r.unit == "%" => format!("{} pt", num(t)),
        Some(t) => format!("{}%", num(t)),
    }
}

/// The verdict as the table shows it.
pub(crate) fn verdict(v: RowVerdict) -> &'static str {
    match v {
        RowVerdict::Regression => "REGRESSION",
        RowVerdict::Improvement => "improved",
        RowVerdict::Noise => "within noise",
        RowVerdict::Ok => "ok",
        RowVerdict::NotJudged => "-",
    }
}

/// A row in one line: `p99: 4.1 -> 5.3 ms, +1.2 ms (+30.2%); tolerance 10%, noise 0.412 ms`.
pub(crate) fn describe(r: &Row) -> String {
    format!(
        "{}: {} -> {}, {}; tolerance {}, noise {}",
        r.metric,
        value(r.base, &r.unit),
        value(r.new, &r.unit),
        delta(r),
        tolerance(r),
        noise(r)
    )
}

/// One row per operation and metric.
pub fn table(c: &Comparison) -> Table {
    let mut t = Table::new();
    t.load_preset(presets::ASCII_MARKDOWN);
    t.set_header([
        "operation",
        "metric",
        "base",
        "new",
        "delta",
        "noise",
        "tolerance",
        "verdict",
    ]);
    for op in &c.ops {
        for r in &op.rows {
            t.add_row([
                op.op.clone(),
                r.metric.to_string(),
                value(r.base, &r.unit),
                value(r.new, &r.unit),
                delta(r),
                noise(r),
                tolerance(r),
                verdict(r.verdict).to_string(),
            ]);
        }
    }
    for i in 2..=6 {
        if let Some(col) = t.column_mut(i) {
            col.set_cell_alignment(CellAlignment::Right);
        }
    }
    t
}

/// What `loadgen compare` prints on stdout before the files it wrote: the runs, the table,
/// how to read it, and the regressions.
pub fn text(c: &Comparison) -> String {
    let mut out = String::new();
    for (name, r) in [("base", &c.base), ("new ", &c.new)] {
        let _ = writeln!(
            out,
            "{name}: {} ({}, {} replicas, scenario crc32 {}, {}, git {})",
            r.run_id,
            r.scenario,
            r.replicas,
            r.scenario_crc32,
            r.started_at,
            r.git_rev.as_deref().unwrap_or("?")
        );
    }
    let _ = writeln!(out, "{}", table(c));
    let _ = writeln!(
        out,
        "latency: from the intended send time, every call. noise: the larger of the two runs' \
         10th-90th percentile spreads of the per-second values. A regression is worse than both \
         its tolerance and the noise."
    );
    if c.verdict == Verdict::Regression {
        for r in &c.regressions {
            let _ = writeln!(out, "regression: {r}");
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::compare::{Metric, judge};

    #[test]
    fn rows_read_with_their_units() {
        assert_eq!(num(1234.6), "1235");
        assert_eq!(num(12.345), "12.3");
        assert_eq!(num(0.012345), "0.0123");
        let r = judge(Metric::P99, 4.0, 5.2, Some(0.4), Some(0.5), Some(10.0));
        assert_eq!(
            describe(&r),
            "p99: 4 ms -> 5.2 ms, +1.2 ms (+30%); tolerance 10%, noise 0.5 ms"
        );
        let e = judge(Metric::ErrorRate, 0.0, 0.05, Some(0.0), None, Some(0.1));
        assert_eq!(
            describe(&e),
            "error_rate: 0% -> 0.05%, +0.05 pt; tolerance 0.1 pt, noise 0 pt"
        );
        let t = judge(Metric::Throughput, 500.0, 490.0, None, None, None);
        assert_eq!(delta(&t), "-10 ops/s (-2%)");
        assert_eq!((tolerance(&t), noise(&t)), ("off".into(), "?".into()));
    }
}
