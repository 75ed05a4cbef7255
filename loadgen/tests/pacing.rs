//! The open model against a deliberately slow fake server (a real tonic server on loopback
//! that answers every call after a fixed delay).
//!
//! One generator user can finish at most 1 / delay calls per second. Offered twice that, it
//! falls further behind with every call: latency measured from the intended send times must
//! grow with the queue, while the service time stays at the server's delay, and the run must
//! say the generator did not keep the schedule. Offered a fraction of it, the two agree.
//! A call slower than `load.timeout` is counted as a `Timeout` error, not dropped.
//!
//! All Goose runs are in one test: Goose keeps process-wide state (its Ctrl-C handler).

use std::sync::Arc;
use std::time::Duration;

use loadgen::load::{self, ChatInfo, Population, RunOutput, RunPlan};
use loadgen::{Op, Scenario};

mod common;
use common::serve;

async fn run(addr: &str, yaml: &str) -> RunOutput {
    let scenario = Scenario::parse("pacing.yaml", yaml, &[]).unwrap();
    let population = Population::new(
        vec![1, 2],
        vec![ChatInfo {
            chat_id: 1,
            members: vec![1, 2],
            joining: vec![],
        }],
    );
    load::run(RunPlan {
        scenario,
        endpoints: vec![addr.to_string()],
        leader: None,
        population: Arc::new(population),
        tag: "t".into(),
        client_base: 1 << 20,
        goose_reports: vec![],
        progress: false,
        start: Default::default(),
        topology: tokio::sync::watch::channel(Default::default()).1,
        cancel: Default::default(),
        ticks: None,
        start_cursor: telegraft::proto::time::now(),
        share: None,
    })
    .await
    .unwrap()
}

fn scenario(rate: u32, mix: &str, timeout: &str) -> String {
    format!(
        "name: pacing\ndataset: {{users: 2, chats: 1, members_per_chat: 2}}\n\
         load: {{model: open, rate: {rate}, users: 1, duration: 2s, timeout: {timeout}}}\n\
         mix: {mix}\n"
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn corrected_latency_grows_with_queueing_while_service_time_does_not() {
    let addr = serve(Duration::from_millis(20), Duration::from_millis(400)).await;

    // Overloaded: 100/s offered to one user that can do at most 50/s.
    let out = run(&addr, &scenario(100, "{send_message: 1}", "5s")).await;
    let s = out.recorder.summary(Op::SendMessage).unwrap();
    let (corrected, service) = (s.latency_ms, s.service_time_ms);
    assert!(s.count > 20, "{s:?}");
    assert!(
        service.p50 >= 20.0 && service.p99 < 200.0,
        "service time stays near the server's 20 ms: {service:?}"
    );
    assert!(
        corrected.p50 > 5.0 * service.p50 && corrected.max > 400.0,
        "corrected latency includes the growing queue: {corrected:?} vs service {service:?}"
    );
    // The queue grows: each second's median is above the one before.
    let p50s: Vec<f64> = out.timeseries.iter().map(|r| r.p50_ms).collect();
    assert!(p50s.len() >= 2 && p50s[1] > p50s[0], "{p50s:?}");
    let pacing = out.pacing.unwrap();
    assert_eq!(pacing.intended, 200);
    assert!(pacing.late > pacing.sent / 2, "{pacing:?}");
    let warning = pacing.warning().expect("the run says it fell behind");
    assert!(warning.contains("did not keep the schedule"), "{warning}");

    // Within capacity: 10/s offered. Latency from the intended time is the service time
    // plus the timer's wake-up delay.
    let out = run(&addr, &scenario(10, "{send_message: 1}", "5s")).await;
    let s = out.recorder.summary(Op::SendMessage).unwrap();
    assert_eq!(s.count, 20);
    assert!(
        s.latency_ms.p50 < 2.0 * s.service_time_ms.p50 + 5.0,
        "{:?} vs {:?}",
        s.latency_ms,
        s.service_time_ms
    );
    let pacing = out.pacing.unwrap();
    assert_eq!((pacing.intended, pacing.sent), (20, 20));

    // At a quiet rate the generator sends on time: sends go out well inside a millisecond
    // of their intended time (the loose bound is for shared CI machines; the README has the
    // figures).
    assert!(
        pacing.lateness_ms.p50 < 1.0,
        "lateness {:?}",
        pacing.lateness_ms
    );

    // Reads slower than the timeout are counted as timeouts, and enter the corrected
    // latency at the time they were given up; writes still succeed.
    let out = run(
        &addr,
        &scenario(10, "{send_message: 1, get_messages: 1}", "100ms"),
    )
    .await;
    let reads = out.recorder.summary(Op::GetMessages).unwrap();
    assert_eq!(reads.count, 0);
    assert_eq!(reads.errors, 10, "{reads:?}");
    assert_eq!(reads.errors_by_code.get("Timeout"), Some(&10));
    assert!(
        reads.latency_ms.p50 >= 100.0 && reads.latency_ms.p50 < 150.0,
        "{:?}",
        reads.latency_ms
    );
    assert_eq!(reads.service_time_ms.max, 0.0, "no successful call");
    assert_eq!(out.recorder.summary(Op::SendMessage).unwrap().count, 10);

    // The closed model: two users, each calls, waits, thinks 50 ms. No schedule, so the
    // latency is the service time, and each user makes at most one call per 70 ms.
    let closed = "name: closed\ndataset: {users: 2, chats: 1, members_per_chat: 2}\n\
                  load: {model: closed, users: 2, think_time: 50ms, duration: 1s}\n\
                  mix: {send_message: 1, get_chat_users: 1}\n";
    let out = run(&addr, closed).await;
    assert!(out.pacing.is_none());
    let mut calls = 0;
    for op in [Op::SendMessage, Op::GetChatUsers] {
        let s = out.recorder.summary(op).unwrap();
        assert!(
            (s.latency_ms.p50 - s.service_time_ms.p50).abs() < 1.0,
            "{op:?}: {:?} vs {:?}",
            s.latency_ms,
            s.service_time_ms
        );
        calls += s.count;
    }
    assert!((4..=2 * 15).contains(&calls), "{calls} calls in 1 s");
}
