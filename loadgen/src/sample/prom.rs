//! The Prometheus text format (version 0.0.4), as much of it as a replica's `/metrics`
//! uses, and what one second of it means: counter rates, gauges, and histogram quantiles
//! from the buckets' deltas.
//!
//! Hand-written, with tests: the crates that parse the format pull in `regex`, `chrono` and
//! `itertools` (or a whole client) for about a hundred lines of line splitting.
//!
//! A series is named `family` or `family{label=value,...}` (labels in the order the replica
//! wrote them, values unquoted). What one second gives, per series of each family type:
//!
//! | type | rows |
//! |---|---|
//! | gauge (and untyped) | `<name>`: the value scraped |
//! | counter | `<name>_rate`: its increase per second since the previous scrape |
//! | histogram | `<name>_rate`: observations per second; `<name>_mean`, `<name>_p50`, `<name>_p99`: of the observations made since the previous scrape (none when there were none) |
//!
//! Quantiles are interpolated linearly inside the bucket they fall in, as PromQL's
//! `histogram_quantile` does, except at the ends: a quantile in the first bucket is that
//! bucket's bound (PromQL would interpolate from 0, which makes fsyncs of one entry each
//! read as 0.5 entries), and one in the `+Inf` bucket is the highest finite bound. A counter or histogram that went down (its
//! replica restarted) gives no row that second.

use std::collections::{BTreeMap, HashMap};

/// One sample line: `name{labels} value`.
#[derive(Clone, Debug, PartialEq)]
pub struct Sample {
    pub name: String,
    pub labels: Vec<(String, String)>,
    pub value: f64,
}

/// One scrape, parsed.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Scrape {
    /// `# TYPE` of each family: `counter`, `gauge`, `histogram`, `summary`, `untyped`.
    pub types: HashMap<String, String>,
    pub samples: Vec<Sample>,
}

/// Parses the text format. Lines that are not comments and do not parse are skipped (a
/// scrape is a measurement, not a contract: one odd line must not lose the others).
pub fn parse(text: &str) -> Scrape {
    let mut scrape = Scrape::default();
    for line in text.lines() {
        let line = line.trim();
        if line.is_empty() {
            continue;
        }
        if let Some(rest) = line.strip_prefix('#') {
            let mut words = rest.split_whitespace();
            if words.next() == Some("TYPE")
                && let (Some(name), Some(kind)) = (words.next(), words.next())
            {
                scrape.types.insert(name.to_string(), kind.to_string());
            }
            continue;
        }
        if let Some(s) = parse_sample(line) {
            scrape.samples.push(s);
        }
    }
    scrape
}

fn parse_sample(line: &str) -> Option<Sample> {
    let name_end = line
        .find(|c: char| c == '{' || c.is_whitespace())
        .unwrap_or(line.len());
    let name = &line[..name_end];
    if name.is_empty() {
        return None;
    }
    let mut rest = &line[name_end..];
    let mut labels = Vec::new();
    if let Some(inner) = rest.strip_prefix('{') {
        let (parsed, after) = parse_labels(inner)?;
        labels = parsed;
        rest = after;
    }
    // The value, then an optional timestamp.
    let value = parse_value(rest.split_whitespace().next()?)?;
    Some(Sample {
        name: name.to_string(),
        labels,
        value,
    })
}

/// `k="v",k2="v2"}` -> the labels and what follows the `}`.
fn parse_labels(mut s: &str) -> Option<(Vec<(String, String)>, &str)> {
    let mut labels = Vec::new();
    loop {
        s = s.trim_start();
        if let Some(after) = s.strip_prefix('}') {
            return Some((labels, after));
        }
        let eq = s.find('=')?;
        let key = s[..eq].trim().to_string();
        let mut chars = s[eq + 1..].trim_start().char_indices();
        let offset = s.len() - s[eq + 1..].trim_start().len();
        if chars.next()?.1 != '"' {
            return None;
        }
        let mut value = String::new();
        let mut escaped = false;
        let mut end = None;
        for (i, c) in chars {
            if escaped {
                value.push(match c {
                    'n' => '\n',
                    other => other,
                });
                escaped = false;
            } else if c == '\\' {
                escaped = true;
            } else if c == '"' {
                end = Some(offset + i + 1);
                break;
            } else {
                value.push(c);
            }
        }
        labels.push((key, value));
        s = s[end?..].trim_start();
        s = s.strip_prefix(',').unwrap_or(s);
    }
}

fn parse_value(v: &str) -> Option<f64> {
    match v {
        "+Inf" | "Inf" => Some(f64::INFINITY),
        "-Inf" => Some(f64::NEG_INFINITY),
        "NaN" => Some(f64::NAN),
        _ => v.parse().ok(),
    }
}

/// `name` or `name{k=v,...}`.
pub fn series(name: &str, labels: &[(String, String)]) -> String {
    if labels.is_empty() {
        return name.to_string();
    }
    let inner: Vec<String> = labels.iter().map(|(k, v)| format!("{k}={v}")).collect();
    format!("{name}{{{}}}", inner.join(","))
}

/// One histogram series (its buckets by upper bound, cumulative, plus sum and count).
#[derive(Clone, Debug, Default, PartialEq)]
struct Hist {
    buckets: Vec<(f64, f64)>,
    sum: f64,
    count: f64,
}

/// A scrape in the shape a second is computed from.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Values {
    gauges: BTreeMap<String, f64>,
    counters: BTreeMap<String, f64>,
    hists: BTreeMap<String, Hist>,
}

impl Values {
    pub fn of(scrape: &Scrape) -> Values {
        let mut v = Values::default();
        for s in &scrape.samples {
            // The family: the name, or the name less a histogram's suffix.
            let hist = ["_bucket", "_sum", "_count"].iter().find_map(|suffix| {
                let family = s.name.strip_suffix(suffix)?;
                (scrape.types.get(family).map(String::as_str) == Some("histogram"))
                    .then_some((family, *suffix))
            });
            if let Some((family, suffix)) = hist {
                let labels: Vec<(String, String)> = s
                    .labels
                    .iter()
                    .filter(|(k, _)| k != "le")
                    .cloned()
                    .collect();
                let h = v.hists.entry(series(family, &labels)).or_default();
                match suffix {
                    "_bucket" => {
                        let le = s.labels.iter().find(|(k, _)| k == "le");
                        if let Some(le) = le.and_then(|(_, le)| parse_value(le)) {
                            h.buckets.push((le, s.value));
                        }
                    }
                    "_sum" => h.sum = s.value,
                    _ => h.count = s.value,
                }
                continue;
            }
            let key = series(&s.name, &s.labels);
            match scrape.types.get(&s.name).map(String::as_str) {
                Some("counter") => {
                    v.counters.insert(key, s.value);
                }
                Some("summary") => {}
                _ => {
                    v.gauges.insert(key, s.value);
                }
            }
        }
        for h in v.hists.values_mut() {
            h.buckets.sort_by(|a, b| a.0.total_cmp(&b.0));
        }
        v
    }

    /// The rows of one second: `(metric, value)`, from `prev` (scraped `dt_s` seconds
    /// before) to `self`. Without `prev` only the gauges.
    pub fn second(&self, prev: Option<&Values>, dt_s: f64) -> Vec<(String, f64)> {
        let mut rows: Vec<(String, f64)> = self
            .gauges
            .iter()
            .filter(|(_, v)| v.is_finite())
            .map(|(k, v)| (k.clone(), *v))
            .collect();
        let Some(prev) = prev.filter(|_| dt_s > 0.0) else {
            return rows;
        };
        for (k, v) in &self.counters {
            if let Some(p) = prev.counters.get(k)
                && v >= p
            {
                rows.push((suffixed(k, "_rate"), (v - p) / dt_s));
            }
        }
        for (k, h) in &self.hists {
            let Some(p) = prev.hists.get(k) else { continue };
            let n = h.count - p.count;
            if n < 0.0 || h.buckets.len() != p.buckets.len() {
                continue;
            }
            rows.push((suffixed(k, "_rate"), n / dt_s));
            if n == 0.0 {
                continue;
            }
            let deltas: Vec<(f64, f64)> = h
                .buckets
                .iter()
                .zip(&p.buckets)
                .map(|((le, c), (_, pc))| (*le, c - pc))
                .collect();
            rows.push((suffixed(k, "_mean"), (h.sum - p.sum) / n));
            for (q, name) in [(0.5, "_p50"), (0.99, "_p99")] {
                if let Some(x) = quantile(&deltas, q) {
                    rows.push((suffixed(k, name), x));
                }
            }
        }
        rows
    }
}

/// `family{labels}` + `_p99` -> `family_p99{labels}`.
fn suffixed(series: &str, suffix: &str) -> String {
    match series.find('{') {
        Some(i) => format!("{}{suffix}{}", &series[..i], &series[i..]),
        None => format!("{series}{suffix}"),
    }
}

/// The `q` quantile of cumulative buckets `(upper bound, count)`, sorted by bound.
fn quantile(buckets: &[(f64, f64)], q: f64) -> Option<f64> {
    let total = buckets.last()?.1;
    if total <= 0.0 {
        return None;
    }
    let rank = q * total;
    let mut lower: Option<(f64, f64)> = None;
    for &(le, c) in buckets {
        if c >= rank {
            let Some(lower) = lower else {
                // The first bucket: its bound (or 0 for a lone +Inf bucket).
                return Some(if le.is_finite() { le } else { 0.0 });
            };
            if le.is_infinite() {
                return Some(lower.0);
            }
            let within = c - lower.1;
            let frac = if within > 0.0 {
                (rank - lower.1) / within
            } else {
                1.0
            };
            return Some(lower.0 + (le - lower.0) * frac);
        }
        lower = Some((le, c));
    }
    lower.map(|l| l.0)
}

#[cfg(test)]
mod tests {
    use super::*;

    const FIRST: &str = r#"# HELP telegraft_raft_commit_index Highest committed log index
# TYPE telegraft_raft_commit_index gauge
telegraft_raft_commit_index 100
# TYPE telegraft_raft_proposals_total counter
telegraft_raft_proposals_total{outcome="accepted"} 50
telegraft_raft_proposals_total{outcome="not_leader"} 3
# TYPE telegraft_queue_depth gauge
telegraft_queue_depth{queue="peer-2"} 4
# TYPE telegraft_storage_fsync_seconds histogram
telegraft_storage_fsync_seconds_bucket{le="0.001"} 10
telegraft_storage_fsync_seconds_bucket{le="0.002"} 20
telegraft_storage_fsync_seconds_bucket{le="0.004"} 20
telegraft_storage_fsync_seconds_bucket{le="+Inf"} 20
telegraft_storage_fsync_seconds_sum 0.02
telegraft_storage_fsync_seconds_count 20
"#;

    /// One second later: 100 more proposals, 100 fsyncs (90 in (1,2] ms, 10 in (2,4] ms).
    const SECOND: &str = r#"# TYPE telegraft_raft_commit_index gauge
telegraft_raft_commit_index 250
# TYPE telegraft_raft_proposals_total counter
telegraft_raft_proposals_total{outcome="accepted"} 150
telegraft_raft_proposals_total{outcome="not_leader"} 3
# TYPE telegraft_queue_depth gauge
telegraft_queue_depth{queue="peer-2"} 0
# TYPE telegraft_storage_fsync_seconds histogram
telegraft_storage_fsync_seconds_bucket{le="0.001"} 10
telegraft_storage_fsync_seconds_bucket{le="0.002"} 110
telegraft_storage_fsync_seconds_bucket{le="0.004"} 120
telegraft_storage_fsync_seconds_bucket{le="+Inf"} 120
telegraft_storage_fsync_seconds_sum 0.22
telegraft_storage_fsync_seconds_count 120
"#;

    #[test]
    fn parses_samples_labels_escapes_specials_and_timestamps() {
        let s = parse(
            "# HELP x a \"help\"\n# TYPE x gauge\nx 1.5\n\
             y{a=\"q\\\"uo,te\",b = \"\\\\n\"} +Inf 1700000000\nz{} NaN\n\
             not a sample line\n{oops} 1\n",
        );
        assert_eq!(s.types["x"], "gauge");
        assert_eq!(s.samples[0].value, 1.5);
        assert_eq!(s.samples[1].name, "y");
        assert_eq!(
            s.samples[1].labels,
            [("a".into(), "q\"uo,te".into()), ("b".into(), "\\n".into())]
        );
        assert_eq!(s.samples[1].value, f64::INFINITY);
        assert!(s.samples[2].value.is_nan() && s.samples[2].labels.is_empty());
        assert_eq!(s.samples.len(), 3, "unparsable lines are skipped");
    }

    #[test]
    fn a_second_gives_gauges_counter_rates_and_histogram_quantiles_from_bucket_deltas() {
        let first = Values::of(&parse(FIRST));
        let second = Values::of(&parse(SECOND));
        let rows: BTreeMap<String, f64> = second.second(Some(&first), 2.0).into_iter().collect();
        let get = |k: &str| *rows.get(k).unwrap_or_else(|| panic!("{k} in {rows:?}"));
        assert_eq!(get("telegraft_raft_commit_index"), 250.0);
        assert_eq!(get("telegraft_queue_depth{queue=peer-2}"), 0.0);
        assert_eq!(
            get("telegraft_raft_proposals_total_rate{outcome=accepted}"),
            50.0
        );
        assert_eq!(
            get("telegraft_raft_proposals_total_rate{outcome=not_leader}"),
            0.0
        );
        assert_eq!(get("telegraft_storage_fsync_seconds_rate"), 50.0);
        assert!((get("telegraft_storage_fsync_seconds_mean") - 0.002).abs() < 1e-12);
        // Rank 50 of 100: 50/90 of the way through (1, 2] ms; rank 99: 9/10 through (2, 4].
        assert!(
            (get("telegraft_storage_fsync_seconds_p50") - (0.001 + 0.001 * 50.0 / 90.0)).abs()
                < 1e-12
        );
        assert!((get("telegraft_storage_fsync_seconds_p99") - 0.0038).abs() < 1e-12);
        assert_eq!(rows.len(), 8);
        // No previous scrape: gauges only.
        assert_eq!(second.second(None, 1.0).len(), 2);
    }

    #[test]
    fn an_idle_histogram_has_a_zero_rate_and_no_quantiles_and_a_restart_gives_nothing() {
        let first = Values::of(&parse(FIRST));
        let rows = first.second(Some(&first), 1.0);
        assert!(rows.contains(&("telegraft_storage_fsync_seconds_rate".into(), 0.0)));
        assert!(!rows.iter().any(|(k, _)| k.ends_with("_p99")));
        // The replica restarted between the scrapes: its counters went down.
        let rows = first.second(Some(&Values::of(&parse(SECOND))), 1.0);
        let names: Vec<&str> = rows.iter().map(|(k, _)| k.as_str()).collect();
        assert!(!names.contains(&"telegraft_raft_proposals_total_rate{outcome=accepted}"));
        assert!(
            !names.contains(&"telegraft_storage_fsync_seconds_rate"),
            "{names:?}"
        );
    }

    #[test]
    fn quantiles_in_the_inf_bucket_are_the_highest_finite_bound() {
        let b = [(0.5, 0.0), (1.0, 1.0), (f64::INFINITY, 10.0)];
        assert_eq!(quantile(&b, 0.99), Some(1.0));
        assert_eq!(quantile(&b, 0.05), Some(0.75));
        assert_eq!(quantile(&[(1.0, 0.0)], 0.5), None);
        // Every fsync wrote one entry: one, not half of one.
        assert_eq!(quantile(&[(1.0, 7.0), (2.0, 7.0)], 0.5), Some(1.0));
    }
}
