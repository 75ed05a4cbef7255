//! JUnit XML of a run's verdicts (`loadgen bench --junit FILE`), which CI systems show
//! natively: one suite, `loadgen`, with one test case per objective of the scenario, named
//! as the objective reads (`send_message p99 <= 50ms`, `run schedule: kept`), and one named
//! `history check`. A missed objective is a failure whose message gives the measured value
//! (a met one gives it in its `system-out`); an anomaly fails the history check, an
//! incomplete check is an error, and `check: off` skips it. Written with `quick-junit`.

use quick_junit::{NonSuccessKind, Property, Report, TestCase, TestCaseStatus, TestSuite};

use crate::history::Verdict;
use crate::results::Summary;

/// The name of the suite, and of the history check's test case.
pub const SUITE: &str = "loadgen";
pub const HISTORY_CHECK: &str = "history check";

/// The run's verdicts as a JUnit XML document.
pub fn junit(s: &Summary) -> anyhow::Result<String> {
    let mut suite = TestSuite::new(SUITE);
    suite.add_property(Property::new("run_id", s.run_id.as_str()));
    suite.add_property(Property::new("scenario", s.scenario.as_str()));
    suite.add_property(Property::new("replicas", s.replicas.to_string()));
    if s.interrupted {
        suite.add_property(Property::new("interrupted", "true"));
    }
    for slo in &s.slo {
        let measured = format!("measured {}", slo.measured());
        let mut case = if slo.passed() {
            let mut c = TestCase::new(slo.name(), TestCaseStatus::success());
            c.set_system_out(measured);
            c
        } else {
            let mut status = TestCaseStatus::non_success(NonSuccessKind::Failure);
            status.set_message(measured).set_type("objective missed");
            TestCase::new(slo.name(), status)
        };
        case.set_classname(format!("{SUITE}.{}", slo.op));
        suite.add_test_case(case);
    }
    suite.add_test_case(history_case(s));
    let mut report = Report::new(SUITE);
    report.add_test_suite(suite);
    Ok(report.to_string()?)
}

fn history_case(s: &Summary) -> TestCase {
    let c = &s.check;
    let counts = format!(
        "{} sends acknowledged, {} indeterminate, {} reads, {} messages in the final state, \
         {} chats unread, {} replicas lagging",
        c.counts.sends_ok,
        c.counts.sends_unknown,
        c.counts.reads,
        c.counts.final_messages,
        c.unread_chats,
        c.lagging.len()
    );
    let reason = c.reason.clone().unwrap_or_default();
    let status = match c.verdict {
        Verdict::Pass => TestCaseStatus::success(),
        Verdict::Fail => {
            let kinds: Vec<String> = c
                .counts
                .anomalies
                .iter()
                .map(|(k, n)| format!("{k} {n}"))
                .collect();
            let mut st = TestCaseStatus::non_success(NonSuccessKind::Failure);
            st.set_message(format!(
                "{} anomalies: {}",
                c.anomalies_total,
                kinds.join(", ")
            ))
            .set_type("anomaly")
            .set_description(
                c.anomalies
                    .iter()
                    .take(20)
                    .map(|a| {
                        format!(
                            "{} in chat {}: {} {}",
                            a.kind.name(),
                            a.chat,
                            a.key,
                            a.detail
                        )
                    })
                    .collect::<Vec<_>>()
                    .join("\n"),
            );
            st
        }
        Verdict::Incomplete => {
            let mut st = TestCaseStatus::non_success(NonSuccessKind::Error);
            st.set_message(format!("incomplete: {reason}"))
                .set_type("incomplete");
            st
        }
        Verdict::Skipped => {
            let mut st = TestCaseStatus::skipped();
            st.set_message(reason);
            st
        }
    };
    let mut case = TestCase::new(HISTORY_CHECK, status);
    case.set_classname(format!("{SUITE}.history"));
    case.set_system_out(counts);
    case
}
