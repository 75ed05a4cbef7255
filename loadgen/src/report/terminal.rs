//! What a run prints at its end: the headline, a table per operation, the SLO verdicts, the
//! history check, the generator's cost. Text only; `main` decides when to print it.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::Path;

use comfy_table::{CellAlignment, Table, presets};

use crate::history::{Anomaly, Counts, Verdict};
use crate::results::capacity::Capacity;
use crate::results::{CheckSummary, Summary};

/// The end of `loadgen bench`, up to the line naming the results folder.
pub fn bench_summary(s: &Summary, dir: &Path) -> String {
    let mut out = String::new();
    let offered = s
        .offered_rate
        .map_or(String::new(), |r| format!(" at {r} ops/s offered"));
    let _ = writeln!(
        out,
        "\n{} on {} · {} replicas ({}, {}) · {} model{offered} · {} s measured",
        s.scenario,
        s.system,
        s.replicas,
        super::backend(&s.cluster.kind),
        super::security(&s.cluster.security),
        s.model,
        s.duration_s
    );
    if s.interrupted {
        let _ = writeln!(
            out,
            "INTERRUPTED: the run was stopped early; its figures cover part of the plan"
        );
    }
    let _ = writeln!(out, "{}", table(s));
    let _ = writeln!(
        out,
        "latency: from the intended send time, every call (failed and timed-out ones \
         included); svc: service time of successful calls"
    );
    out.push_str(&slo_lines(s));
    if let Some(w) = &s.generator.warning {
        let _ = writeln!(out, "warning: {w}");
    }
    let _ = writeln!(out, "history check: {}", check_summary_line(&s.check));
    out.push_str(&anomaly_lines(&s.check.anomalies, 5));
    let _ = writeln!(
        out,
        "generator: {} calls, {:.1} µs CPU per call",
        s.generator.calls, s.generator.cpu_us_per_call
    );
    let _ = writeln!(out, "results: {}", dir.display());
    out
}

/// The end of `loadgen capacity`: per replica count, the highest rate sustained and how the
/// search went (a Markdown table, so it pastes into a README), then the folder.
pub fn capacity_table(c: &Capacity, dir: &Path) -> String {
    let mut t = Table::new();
    t.load_preset(presets::ASCII_MARKDOWN);
    t.set_header([
        "replicas",
        "max sustainable ops/s",
        "send p99 ms",
        "get p99 ms",
        "lowest failure ops/s",
        "probes",
        "ended",
    ]);
    for r in &c.replicas {
        let best = r
            .probes
            .iter()
            .filter(|p| p.verdict == "pass")
            .max_by(|a, b| a.rate.total_cmp(&b.rate))
            .filter(|p| p.rate == r.max_sustainable_rate);
        let p99 = |op: &str| {
            best.and_then(|p| p.p99_ms.get(op))
                .map_or("-".to_string(), |v| format!("{v:.1}"))
        };
        let lowest_fail = r
            .probes
            .iter()
            .filter(|p| p.verdict != "pass")
            .map(|p| p.rate)
            .reduce(f64::min)
            .map_or("-".to_string(), |v| format!("{v:.0}"));
        t.add_row([
            r.replicas.to_string(),
            format!("{:.0}", r.max_sustainable_rate),
            p99("send_message"),
            p99("get_messages"),
            lowest_fail,
            r.probes.len().to_string(),
            match &r.error {
                Some(e) => format!("error: {e}"),
                None => r.ended.clone(),
            },
        ]);
    }
    for i in 1..=5 {
        if let Some(col) = t.column_mut(i) {
            col.set_cell_alignment(CellAlignment::Right);
        }
    }
    let mut out = String::new();
    let _ = writeln!(
        out,
        "\n{} · capacity to {:.0}% · probes of {} s after {} s of warm-up",
        c.scenario,
        c.search.precision * 100.0,
        c.search.probe_s,
        c.search.probe_warmup_s
    );
    if c.interrupted {
        let _ = writeln!(out, "INTERRUPTED: the search was stopped early");
    }
    let _ = writeln!(out, "{t}");
    let _ = writeln!(
        out,
        "max sustainable: the highest offered rate whose probe kept the schedule, met every \
         objective and passed the history check; p99s are that probe's"
    );
    let _ = writeln!(out, "results: {}", dir.display());
    out
}

/// One row per operation: successful calls, errors, ops/s, corrected percentiles, the
/// service-time p99 and the errors by code. Markdown, so it pastes into a README.
pub fn table(s: &Summary) -> Table {
    let mut t = Table::new();
    t.load_preset(presets::ASCII_MARKDOWN);
    t.set_header([
        "operation",
        "ok",
        "errors",
        "ops/s",
        "p50 ms",
        "p90 ms",
        "p99 ms",
        "p99.9 ms",
        "max ms",
        "svc p99 ms",
        "errors by code",
    ]);
    for (op, r) in &s.ops {
        let l = &r.latency_ms;
        let ms = |v: f64| format!("{v:.2}");
        let codes: Vec<String> = r
            .errors_by_code
            .iter()
            .map(|(c, n)| format!("{c} {n}"))
            .collect();
        t.add_row([
            op.clone(),
            r.count.to_string(),
            r.errors.to_string(),
            format!("{:.1}", r.throughput),
            ms(l.p50),
            ms(l.p90),
            ms(l.p99),
            ms(l.p999),
            ms(l.max),
            ms(r.service_time_ms.p99),
            codes.join(", "),
        ]);
    }
    for i in 1..=9 {
        if let Some(c) = t.column_mut(i) {
            c.set_cell_alignment(CellAlignment::Right);
        }
    }
    t
}

/// `SLO send_message p99 <= 5ms: MISSED (7.1ms)`, one line per objective.
fn slo_lines(s: &Summary) -> String {
    let mut out = String::new();
    for slo in &s.slo {
        let _ = writeln!(
            out,
            "SLO {}: {} ({})",
            slo.name(),
            if slo.passed() { "pass" } else { "MISSED" },
            slo.measured(),
        );
    }
    out
}

/// The check's line: [`check_line`], then what could not be read.
pub fn check_summary_line(c: &CheckSummary) -> String {
    let mut line = check_line(c.verdict, &c.counts);
    if let Some(why) = &c.reason {
        let _ = write!(line, ": {why}");
    }
    if c.unread_chats > 0 {
        let _ = write!(line, "; {} chats unread", c.unread_chats);
    }
    if !c.lagging.is_empty() {
        let lagging: Vec<String> = c
            .lagging
            .iter()
            .map(|l| format!("{} at {} of {}", l.replica, l.applied_index, l.target_index))
            .collect();
        let _ = write!(line, "; lagging: {}", lagging.join(", "));
    }
    if !c.unreachable.is_empty() {
        let _ = write!(line, "; not answering: {}", c.unreachable.join(", "));
    }
    line
}

/// `PASS (120 sends acknowledged, 0 indeterminate, 300 reads, 120 messages in the final
/// state; anomalies: stale_local 4 (allowed by local reads))`.
pub fn check_line(verdict: Verdict, counts: &Counts) -> String {
    format!(
        "{} ({} sends acknowledged, {} indeterminate, {} reads, {} messages in the final state{})",
        verdict.name().to_uppercase(),
        counts.sends_ok,
        counts.sends_unknown,
        counts.reads,
        counts.final_messages,
        anomaly_counts(&counts.anomalies)
    )
}

/// The first `n` anomalies, one indented line each.
pub fn anomaly_lines(anomalies: &[Anomaly], n: usize) -> String {
    let mut out = String::new();
    for a in anomalies.iter().take(n) {
        let _ = writeln!(
            out,
            "  {:?} in chat {}: {} {}",
            a.kind, a.chat, a.key, a.detail
        );
    }
    out
}

/// `; anomalies: lost 2, stale_local 40 (allowed by local reads)`, or nothing.
fn anomaly_counts(counts: &BTreeMap<String, u64>) -> String {
    if counts.is_empty() {
        return String::new();
    }
    let parts: Vec<String> = counts
        .iter()
        .map(|(k, n)| {
            if k == "stale_local" {
                format!("{k} {n} (allowed by local reads)")
            } else {
                format!("{k} {n}")
            }
        })
        .collect();
    format!("; anomalies: {}", parts.join(", "))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn anomaly_counts_say_which_ones_local_reads_allow() {
        let mut counts = Counts::default();
        assert!(check_line(Verdict::Pass, &counts).ends_with("final state)"));
        counts.anomalies.insert("lost".into(), 2);
        counts.anomalies.insert("stale_local".into(), 40);
        assert!(
            check_line(Verdict::Fail, &counts)
                .ends_with("; anomalies: lost 2, stale_local 40 (allowed by local reads))"),
            "{}",
            check_line(Verdict::Fail, &counts)
        );
    }
}
