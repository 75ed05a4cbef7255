//! Latency recording: one pair of HDR histograms per operation, at microsecond resolution.
//!
//! For every call the runner records two latencies:
//! - *corrected*: from the request's intended send time (open model) to its completion.
//!   This is the latency a user would have seen; it includes any queueing in the generator
//!   (coordinated-omission correction, as wrk2 does).
//! - *service time*: from the moment the request was actually sent to its completion.
//!
//! In the closed model the two are equal. A failed call (an error code, or a timeout) enters
//! the corrected histogram too, at the time its answer came or the generator gave up on it
//! (wrk2-style), so that leaving failures out can never make a percentile look better; it is
//! also counted by gRPC status code. The service-time histogram holds successful calls
//! only: it describes the work the cluster did. A per-second interval histogram (corrected,
//! every call) feeds the time series (`timeseries.csv`), and the interval histograms can be
//! written as a standard HdrHistogram interval log (`<op>.hdr.hlog`) that other HdrHistogram
//! tools read.

use std::collections::BTreeMap;
use std::time::{Duration, SystemTime};

use hdrhistogram::Histogram;
use hdrhistogram::serialization::V2DeflateSerializer;
use hdrhistogram::serialization::interval_log::{IntervalLogWriterBuilder, Tag};

use crate::scenario::Op;

/// Highest trackable latency: one hour, in microseconds.
const MAX_US: u64 = 3_600_000_000;

fn histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, MAX_US, 3).expect("valid histogram bounds")
}

fn micros(d: Duration) -> u64 {
    (d.as_micros() as u64).clamp(1, MAX_US)
}

/// Latency percentiles in milliseconds (microsecond resolution), as recorded and as
/// `summary.json` holds them.
#[derive(
    Clone,
    Copy,
    Debug,
    Default,
    PartialEq,
    serde::Serialize,
    serde::Deserialize,
    schemars::JsonSchema,
)]
pub struct Percentiles {
    pub p50: f64,
    pub p90: f64,
    pub p99: f64,
    pub p999: f64,
    pub p9999: f64,
    pub max: f64,
    /// The arithmetic mean: unlike the percentiles, means add up, so the report can split a
    /// mean latency into its parts (the replicas' histograms give means too).
    #[serde(default)]
    pub mean: f64,
}

impl Percentiles {
    /// The percentiles of a histogram of microseconds.
    pub fn of(h: &Histogram<u64>) -> Percentiles {
        if h.is_empty() {
            return Percentiles::default();
        }
        let ms = |q: f64| h.value_at_quantile(q) as f64 / 1000.0;
        Percentiles {
            p50: ms(0.5),
            p90: ms(0.9),
            p99: ms(0.99),
            p999: ms(0.999),
            p9999: ms(0.9999),
            max: h.max() as f64 / 1000.0,
            mean: h.mean().round() / 1000.0,
        }
    }

    /// One of them by name (`p50`, `p90`, `p99`, `p999`, `p9999`, `max`), as SLOs name them.
    pub fn get(&self, metric: &str) -> Option<f64> {
        Some(match metric {
            "p50" => self.p50,
            "p90" => self.p90,
            "p99" => self.p99,
            "p999" => self.p999,
            "p9999" => self.p9999,
            "max" => self.max,
            _ => return None,
        })
    }
}

/// One row of the per-second time series.
#[derive(Clone, Debug, PartialEq)]
pub struct Interval {
    pub second: u64,
    pub op: Op,
    pub count: u64,
    pub errors: u64,
    pub p50_ms: f64,
    pub p99_ms: f64,
    pub max_ms: f64,
}

#[derive(Default)]
struct OpRecord {
    /// Successful calls.
    ok: u64,
    /// Every call, failed ones included, from its intended send time.
    corrected: Option<Histogram<u64>>,
    /// Successful calls only, from the actual send.
    service: Option<Histogram<u64>>,
    errors_by_code: BTreeMap<String, u64>,
    interval: Option<Histogram<u64>>,
    interval_errors: u64,
    /// Closed interval histograms: (second, histogram, failed calls in it), for the
    /// interval log.
    intervals: Vec<(u64, Histogram<u64>, u64)>,
}

/// What one operation did over the measured window.
#[derive(Clone, Debug, PartialEq)]
pub struct OpSummary {
    /// Successful calls.
    pub count: u64,
    pub errors: u64,
    pub errors_by_code: BTreeMap<String, u64>,
    /// Every call (failed and timed-out ones included), from the intended send time.
    pub latency_ms: Percentiles,
    /// Successful calls only, from the actual send.
    pub service_time_ms: Percentiles,
}

#[derive(Default)]
pub struct Recorder {
    ops: BTreeMap<Op, OpRecord>,
}

impl Recorder {
    pub fn new() -> Recorder {
        Recorder::default()
    }

    fn op(&mut self, op: Op) -> &mut OpRecord {
        self.ops.entry(op).or_default()
    }

    /// A successful call: latency from the intended send time, and service time.
    pub fn ok(&mut self, op: Op, corrected: Duration, service: Duration) {
        let r = self.op(op);
        r.ok += 1;
        r.corrected
            .get_or_insert_with(histogram)
            .saturating_record(micros(corrected));
        r.service
            .get_or_insert_with(histogram)
            .saturating_record(micros(service));
        r.interval
            .get_or_insert_with(histogram)
            .saturating_record(micros(corrected));
    }

    /// A failed call, counted by its gRPC status code name (`Unavailable`, `Timeout`), with
    /// its latency from the intended send time to its answer (or to when the generator gave
    /// up on it).
    pub fn error(&mut self, op: Op, code: &str, corrected: Duration) {
        let r = self.op(op);
        *r.errors_by_code.entry(code.to_string()).or_insert(0) += 1;
        r.interval_errors += 1;
        r.corrected
            .get_or_insert_with(histogram)
            .saturating_record(micros(corrected));
        r.interval
            .get_or_insert_with(histogram)
            .saturating_record(micros(corrected));
    }

    /// Closes the interval ending at `second` (seconds since the measured window began):
    /// one row per operation that saw any call.
    pub fn close_interval(&mut self, second: u64) -> Vec<Interval> {
        let mut rows = Vec::new();
        for (&op, r) in &mut self.ops {
            let h = r.interval.take();
            let errors = std::mem::take(&mut r.interval_errors);
            let count = h.as_ref().map_or(0, |h| h.len()).saturating_sub(errors);
            if count == 0 && errors == 0 {
                continue;
            }
            let p = h.as_ref().map(Percentiles::of).unwrap_or_default();
            rows.push(Interval {
                second,
                op,
                count,
                errors,
                p50_ms: p.p50,
                p99_ms: p.p99,
                max_ms: p.max,
            });
            if let Some(h) = h {
                r.intervals.push((second, h, errors));
            }
        }
        rows
    }

    pub fn summary(&self, op: Op) -> Option<OpSummary> {
        let r = self.ops.get(&op)?;
        Some(OpSummary {
            count: r.ok,
            errors: r.errors_by_code.values().sum(),
            errors_by_code: r.errors_by_code.clone(),
            latency_ms: r
                .corrected
                .as_ref()
                .map(Percentiles::of)
                .unwrap_or_default(),
            service_time_ms: r.service.as_ref().map(Percentiles::of).unwrap_or_default(),
        })
    }

    pub fn ops(&self) -> impl Iterator<Item = Op> + '_ {
        self.ops.keys().copied()
    }

    /// Writes an operation's closed intervals as an HdrHistogram interval log (`.hlog`).
    /// `start` is when the measured window began.
    pub fn write_hlog(
        &self,
        op: Op,
        out: &mut impl std::io::Write,
        start: SystemTime,
    ) -> std::io::Result<()> {
        let mut serializer = V2DeflateSerializer::new();
        let mut writer = IntervalLogWriterBuilder::new()
            .with_start_time(start)
            .with_base_time(start)
            .with_max_value_divisor(1000.0)
            .begin_log_with(out, &mut serializer)?;
        let tag = Tag::new(op.name());
        for (second, h, _) in self.ops.get(&op).map_or(&[][..], |r| &r.intervals[..]) {
            let start = Duration::from_secs(second.saturating_sub(1));
            writer
                .write_histogram(h, start, Duration::from_secs(1), tag)
                .map_err(|e| std::io::Error::other(format!("{e:?}")))?;
        }
        Ok(())
    }
}

/// A [`Recorder`]'s histograms and counts, whole, as a worker writes them into
/// `worker.json` for `loadgen merge` (histograms in HdrHistogram's V2 encoding, base64).
#[derive(Clone, Debug, Default, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct RecorderDump {
    pub ops: BTreeMap<Op, OpDump>,
}

#[derive(Clone, Debug, Default, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct OpDump {
    pub ok: u64,
    pub errors_by_code: BTreeMap<String, u64>,
    pub corrected: Option<String>,
    pub service: Option<String>,
    /// Each closed second: (second, failed calls, histogram).
    pub intervals: Vec<(u64, u64, String)>,
}

fn encode(h: &Histogram<u64>) -> String {
    use base64::Engine;
    use hdrhistogram::serialization::{Serializer, V2Serializer};
    let mut bytes = Vec::new();
    V2Serializer::new()
        .serialize(h, &mut bytes)
        .expect("a histogram encodes");
    base64::engine::general_purpose::STANDARD.encode(bytes)
}

fn decode(text: &str) -> Result<Histogram<u64>, String> {
    use base64::Engine;
    let bytes = base64::engine::general_purpose::STANDARD
        .decode(text)
        .map_err(|e| format!("a histogram is not base64: {e}"))?;
    hdrhistogram::serialization::Deserializer::new()
        .deserialize(&mut bytes.as_slice())
        .map_err(|e| format!("a histogram does not decode: {e:?}"))
}

/// `into += from`, creating `into` as needed; the histograms keep every recorded value.
fn add(into: &mut Option<Histogram<u64>>, from: &Histogram<u64>) -> Result<(), String> {
    into.get_or_insert_with(histogram)
        .add(from)
        .map_err(|e| format!("adding histograms: {e:?}"))
}

impl Recorder {
    /// Everything recorded, for another process to merge.
    pub fn dump(&self) -> RecorderDump {
        RecorderDump {
            ops: self
                .ops
                .iter()
                .map(|(op, r)| {
                    let d = OpDump {
                        ok: r.ok,
                        errors_by_code: r.errors_by_code.clone(),
                        corrected: r.corrected.as_ref().map(encode),
                        service: r.service.as_ref().map(encode),
                        intervals: r
                            .intervals
                            .iter()
                            .map(|(s, h, e)| (*s, *e, encode(h)))
                            .collect(),
                    };
                    (*op, d)
                })
                .collect(),
        }
    }

    /// Adds another recorder's dump to this one: counts summed, whole histograms added, and
    /// interval histograms added second by second (`Histogram::add`: percentiles of the
    /// merged run come from every recorded value, never from averaging percentiles).
    pub fn add_dump(&mut self, d: &RecorderDump) -> Result<(), String> {
        for (op, od) in &d.ops {
            let r = self.op(*op);
            r.ok += od.ok;
            for (code, n) in &od.errors_by_code {
                *r.errors_by_code.entry(code.clone()).or_insert(0) += n;
            }
            if let Some(h) = &od.corrected {
                add(&mut r.corrected, &decode(h)?)?;
            }
            if let Some(h) = &od.service {
                add(&mut r.service, &decode(h)?)?;
            }
            for (second, errors, h) in &od.intervals {
                let h = decode(h)?;
                match r.intervals.iter_mut().find(|(s, _, _)| s == second) {
                    Some((_, into, e)) => {
                        into.add(&h)
                            .map_err(|e| format!("adding histograms: {e:?}"))?;
                        *e += errors;
                    }
                    None => r.intervals.push((*second, h, *errors)),
                }
            }
            r.intervals.sort_by_key(|(s, _, _)| *s);
        }
        Ok(())
    }

    /// The per-second time series of the closed intervals (a merged run's, made from its
    /// merged interval histograms).
    pub fn timeseries(&self) -> Vec<Interval> {
        let mut rows: Vec<Interval> = self
            .ops
            .iter()
            .flat_map(|(op, r)| {
                r.intervals.iter().map(|(second, h, errors)| {
                    let p = Percentiles::of(h);
                    Interval {
                        second: *second,
                        op: *op,
                        count: h.len().saturating_sub(*errors),
                        errors: *errors,
                        p50_ms: p.p50,
                        p99_ms: p.p99,
                        max_ms: p.max,
                    }
                })
            })
            .collect();
        rows.sort_by_key(|r| (r.second, r.op));
        rows
    }

    /// Calls in every closed interval of `op` (failed ones included).
    pub fn interval_calls(&self, op: Op) -> u64 {
        self.ops
            .get(&op)
            .map_or(0, |r| r.intervals.iter().map(|(_, h, _)| h.len()).sum())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn corrected_latency_includes_queueing_and_service_time_does_not() {
        // A server that takes 10 ms per call, while the schedule wanted a call every 1 ms:
        // calls queue up, so each waits longer than the last before it is even sent.
        let mut r = Recorder::new();
        for k in 0..100u64 {
            let queued = Duration::from_millis(9 * k);
            let service = Duration::from_millis(10);
            r.ok(Op::SendMessage, queued + service, service);
        }
        let s = r.summary(Op::SendMessage).unwrap();
        assert_eq!(s.count, 100);
        assert!(
            (s.service_time_ms.p99 - 10.0).abs() < 0.1,
            "{:?}",
            s.service_time_ms
        );
        assert!(
            s.latency_ms.p50 > 400.0 && s.latency_ms.max > 890.0,
            "{:?}",
            s.latency_ms
        );
        assert!(s.latency_ms.p50 <= s.latency_ms.p99 && s.latency_ms.p99 <= s.latency_ms.max);
    }

    #[test]
    fn errors_are_counted_by_code_and_intervals_close() {
        let mut r = Recorder::new();
        r.ok(
            Op::GetMessages,
            Duration::from_micros(800),
            Duration::from_micros(700),
        );
        r.error(Op::GetMessages, "Unavailable", Duration::from_micros(900));
        r.error(Op::GetMessages, "Unavailable", Duration::from_micros(900));
        r.error(
            Op::GetMessages,
            "DeadlineExceeded",
            Duration::from_micros(900),
        );
        let rows = r.close_interval(1);
        assert_eq!(rows.len(), 1);
        assert_eq!((rows[0].count, rows[0].errors), (1, 3));
        // Failed calls count in the corrected latency.
        assert!((rows[0].p50_ms - 0.9).abs() < 0.01, "{:?}", rows[0]);
        assert!(r.close_interval(2).is_empty(), "a quiet second has no rows");
        let s = r.summary(Op::GetMessages).unwrap();
        assert_eq!(s.errors, 3);
        assert_eq!(s.errors_by_code["Unavailable"], 2);
    }

    #[test]
    fn timeouts_raise_the_corrected_percentiles_and_leave_service_time_alone() {
        let mut r = Recorder::new();
        for _ in 0..90 {
            r.ok(
                Op::SendMessage,
                Duration::from_millis(2),
                Duration::from_millis(1),
            );
        }
        // A tenth of the calls were given up on after 5 s.
        for _ in 0..10 {
            r.error(Op::SendMessage, "Timeout", Duration::from_secs(5));
        }
        let s = r.summary(Op::SendMessage).unwrap();
        assert_eq!((s.count, s.errors), (90, 10));
        assert!(s.latency_ms.p99 > 4_900.0, "{:?}", s.latency_ms);
        assert!(s.latency_ms.p50 < 3.0, "{:?}", s.latency_ms);
        assert!(s.service_time_ms.max < 1.1, "{:?}", s.service_time_ms);
    }

    #[test]
    fn dumps_merge_interval_by_interval_and_counts_add_up() {
        let mut a = Recorder::new();
        let mut b = Recorder::new();
        for s in 1..=2u64 {
            for k in 0..10 * s {
                a.ok(
                    Op::SendMessage,
                    Duration::from_millis(1 + k),
                    Duration::from_millis(1),
                );
            }
            a.close_interval(s);
        }
        for k in 0..7 {
            b.ok(
                Op::SendMessage,
                Duration::from_millis(100 + k),
                Duration::from_millis(2),
            );
        }
        b.error(Op::SendMessage, "Unavailable", Duration::from_millis(500));
        b.close_interval(2);
        let mut m = Recorder::new();
        m.add_dump(&a.dump()).unwrap();
        m.add_dump(&b.dump()).unwrap();
        let s = m.summary(Op::SendMessage).unwrap();
        assert_eq!((s.count, s.errors), (30 + 7, 1));
        assert_eq!(
            m.interval_calls(Op::SendMessage),
            a.interval_calls(Op::SendMessage) + b.interval_calls(Op::SendMessage)
        );
        let rows = m.timeseries();
        assert_eq!(rows.len(), 2);
        assert_eq!((rows[0].second, rows[0].count, rows[0].errors), (1, 10, 0));
        assert_eq!((rows[1].second, rows[1].count, rows[1].errors), (2, 27, 1));
        // The merged second holds b's slow calls: its max is theirs, not an average.
        assert!(rows[1].max_ms >= 499.0, "{:?}", rows[1]);
        // A dump survives JSON.
        let json = serde_json::to_string(&a.dump()).unwrap();
        let back: RecorderDump = serde_json::from_str(&json).unwrap();
        assert_eq!(back, a.dump());
    }

    #[test]
    fn interval_log_reads_back() {
        use hdrhistogram::serialization::interval_log::{IntervalLogIterator, LogEntry};
        let mut r = Recorder::new();
        for s in 1..=3u64 {
            for _ in 0..10 * s {
                r.ok(
                    Op::SendMessage,
                    Duration::from_millis(2),
                    Duration::from_millis(1),
                );
            }
            r.close_interval(s);
        }
        let mut buf = Vec::new();
        r.write_hlog(
            Op::SendMessage,
            &mut buf,
            SystemTime::UNIX_EPOCH + Duration::from_secs(1_800_000_000),
        )
        .unwrap();
        let text = String::from_utf8(buf.clone()).unwrap();
        assert!(text.contains("#[StartTime: "), "{text}");
        let intervals = IntervalLogIterator::new(&buf)
            .filter_map(|e| match e {
                Ok(LogEntry::Interval(h)) => Some(h),
                _ => None,
            })
            .count();
        assert_eq!(intervals, 3);
    }
}
