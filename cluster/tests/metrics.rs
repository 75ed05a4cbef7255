//! `telegraft node --metrics-listen`: three real replicas started by the launcher with
//! metrics on, a few writes and reads, then a plain HTTP GET of each `/metrics`, which
//! must hold every family the cluster documents (cluster/README.md, "Metrics") with values
//! that make sense.

mod common;

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::Path;
use std::time::{Duration, Instant};

use telegraft::admin;
use telegraft::launcher::LocalCluster;
use telegraft::proto::chat::{self as api, chat_client::ChatClient};

/// Every family a replica serves, with its Prometheus type.
const FAMILIES: &[(&str, &str)] = &[
    ("telegraft_raft_term", "gauge"),
    ("telegraft_raft_role", "gauge"),
    ("telegraft_raft_leader_changes_total", "counter"),
    ("telegraft_raft_commit_index", "gauge"),
    ("telegraft_raft_applied_index", "gauge"),
    ("telegraft_raft_last_log_index", "gauge"),
    ("telegraft_raft_proposals_total", "counter"),
    ("telegraft_raft_append_batch_entries", "histogram"),
    ("telegraft_storage_fsync_seconds", "histogram"),
    ("telegraft_storage_fsync_entries", "histogram"),
    ("telegraft_storage_fsync_bytes", "histogram"),
    ("telegraft_raft_commit_seconds", "histogram"),
    ("telegraft_raft_apply_seconds", "histogram"),
    ("telegraft_raft_read_index_seconds", "histogram"),
    ("telegraft_raft_reads_per_round", "histogram"),
    ("telegraft_requests_forwarded_total", "counter"),
    ("telegraft_queue_depth", "gauge"),
    ("telegraft_snapshots_total", "counter"),
    ("telegraft_snapshot_bytes", "gauge"),
    ("telegraft_snapshot_seconds", "histogram"),
    ("telegraft_grpc_server_handling_seconds", "histogram"),
    ("process_cpu_seconds_total", "counter"),
    ("process_resident_memory_bytes", "gauge"),
    ("process_open_fds", "gauge"),
];

/// `GET /metrics` over a plain TCP connection (HTTP/1.0: the server closes when done).
fn scrape(addr: &str) -> String {
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut stream = loop {
        match TcpStream::connect(addr) {
            Ok(s) => break s,
            Err(e) if Instant::now() > deadline => panic!("metrics at {addr}: {e}"),
            Err(_) => std::thread::sleep(Duration::from_millis(50)),
        }
    };
    stream
        .write_all(b"GET /metrics HTTP/1.0\r\nHost: localhost\r\n\r\n")
        .unwrap();
    let mut response = String::new();
    stream.read_to_string(&mut response).unwrap();
    let (head, body) = response.split_once("\r\n\r\n").expect("an HTTP response");
    assert!(
        head.starts_with("HTTP/1.") && head.contains(" 200 "),
        "{head}"
    );
    assert!(
        head.to_lowercase().contains("content-type: text/plain"),
        "{head}"
    );
    body.to_string()
}

/// The value of the sample named exactly `series` (name and labels as rendered).
fn value(text: &str, series: &str) -> Option<f64> {
    text.lines().find_map(|l| {
        l.strip_prefix(series)?
            .strip_prefix(' ')?
            .trim()
            .parse()
            .ok()
    })
}

/// The sum over every sample of `name` whose labels contain `label` (e.g. `code="OK"`).
fn sum(text: &str, name: &str, label: &str) -> f64 {
    text.lines()
        .filter(|l| l.starts_with(name) && l.contains(label))
        .filter_map(|l| l.rsplit_once(' ')?.1.parse::<f64>().ok())
        .sum()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_replica_serves_every_metric_family() {
    let dir = tempfile::tempdir().unwrap();
    let addrs: BTreeMap<u64, String> = (1..=3)
        .map(|id| {
            let l = TcpListener::bind("127.0.0.1:0").unwrap();
            (id, format!("127.0.0.1:{}", l.local_addr().unwrap().port()))
        })
        .collect();
    // A snapshot every 8 entries, so the snapshot families have samples.
    let args = ["--snapshot-every".to_string(), "8".to_string()];
    let nodes = LocalCluster::start_on_with_metrics(
        Path::new(env!("CARGO_BIN_EXE_telegraft")),
        addrs.clone(),
        dir.path(),
        &args,
    )
    .expect("start telegraft nodes");
    let leader = admin::wait_for_leader(&nodes.running_addrs(), Duration::from_secs(15))
        .await
        .unwrap_or_else(|e| panic!("{e}"))
        .node_id;
    let follower = (1..=3).find(|id| *id != leader).unwrap();

    // Writes through a follower are forwarded to the leader; linearizable reads are served
    // by the follower, with a read index from the leader.
    let mut c = ChatClient::connect(format!("http://{}", addrs[&follower]))
        .await
        .unwrap();
    let (user, chat) = common::setup_chat(&mut c).await;
    for i in 0..12 {
        c.send_message(api::SendMessageRequest {
            user_id: user,
            chat_id: chat,
            content: format!("hello {i}"),
            sent_time: None,
            write_id: Some(api::WriteId {
                client_id: 7,
                sequence: i + 1,
            }),
        })
        .await
        .unwrap();
    }
    let page = c
        .get_messages(api::GetMessagesRequest {
            user_id: user,
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(page.messages.len(), 12);
    // An error code of its own: an unknown chat.
    let missing = c
        .get_chat_users(api::GetChatUsersRequest {
            chat_id: 999,
            ..Default::default()
        })
        .await;
    assert!(missing.is_err());
    // Every replica applied everything (15 entries: the leader's no-op and 14 writes).
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let views = admin::statuses(&nodes.running_addrs()).await;
        if views.len() == 3 && views.iter().all(|v| v.applied_index >= 15) {
            break;
        }
        assert!(Instant::now() < deadline, "no convergence: {views:?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    for id in 1..=3u64 {
        let addr = nodes.metrics_addr(id).expect("started with metrics");
        let text = scrape(addr);
        for (family, kind) in FAMILIES {
            assert!(
                text.contains(&format!("# TYPE {family} {kind}")),
                "node {id}: no {kind} {family} in\n{text}"
            );
        }
        assert!(
            value(&text, "telegraft_raft_term").unwrap() >= 1.0,
            "{text}"
        );
        let role = value(&text, "telegraft_raft_role").unwrap();
        assert_eq!(role, if id == leader { 2.0 } else { 0.0 }, "node {id}");
        assert!(value(&text, "telegraft_raft_leader_changes_total").unwrap() >= 1.0);
        assert!(
            value(&text, "telegraft_raft_commit_index").unwrap() >= 14.0,
            "{text}"
        );
        assert!(value(&text, "telegraft_storage_fsync_seconds_count").unwrap() > 0.0);
        assert!(value(&text, "telegraft_storage_fsync_entries_sum").unwrap() >= 14.0);
        assert!(
            value(&text, "telegraft_snapshots_total").unwrap() >= 1.0,
            "{text}"
        );
        assert!(
            value(&text, "telegraft_snapshot_bytes").unwrap() > 0.0,
            "{text}"
        );
        assert!(value(&text, "process_resident_memory_bytes").unwrap() > 0.0);
        assert!(value(&text, "process_open_fds").unwrap() > 0.0);
        for queue in ["core", "storage", "applier"] {
            let series = format!("telegraft_queue_depth{{queue=\"{queue}\"}}");
            assert!(value(&text, &series).is_some(), "node {id}: {series}");
        }
        for peer in (1..=3).filter(|p| *p != id) {
            let series = format!("telegraft_queue_depth{{queue=\"peer-{peer}\"}}");
            assert!(value(&text, &series).is_some(), "node {id}: {series}");
        }
        if id == leader {
            let accepted = "telegraft_raft_proposals_total{outcome=\"accepted\"}";
            assert!(value(&text, accepted).unwrap() >= 14.0, "{text}");
            assert!(value(&text, "telegraft_raft_commit_seconds_count").unwrap() >= 14.0);
            assert!(value(&text, "telegraft_raft_append_batch_entries_count").unwrap() >= 1.0);
            let sends = sum(
                &text,
                "telegraft_grpc_server_handling_seconds_count",
                "method=\"SendMessage\"",
            );
            assert!(sends >= 12.0, "{text}");
        }
        if id == follower {
            // 14 writes; the two reads are not forwarded.
            let forwarded = value(&text, "telegraft_requests_forwarded_total").unwrap();
            assert!((14.0..16.0).contains(&forwarded), "forwarded {forwarded}");
            let reads = value(&text, "telegraft_raft_read_index_seconds_count").unwrap();
            assert!(reads >= 2.0, "{text}");
            assert!(value(&text, "telegraft_raft_apply_seconds_count").unwrap() >= 14.0);
            let not_found = sum(
                &text,
                "telegraft_grpc_server_handling_seconds_count",
                "code=\"NOT_FOUND\"",
            );
            assert!(not_found >= 1.0, "{text}");
        }
    }
}

/// Without `--metrics-listen` nothing listens, and the launcher names no metrics address.
#[test]
fn metrics_are_off_unless_asked_for() {
    let dir = tempfile::tempdir().unwrap();
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let addrs = BTreeMap::from([(1, format!("127.0.0.1:{}", l.local_addr().unwrap().port()))]);
    drop(l);
    let nodes = LocalCluster::start_on(
        Path::new(env!("CARGO_BIN_EXE_telegraft")),
        addrs,
        dir.path(),
        &[],
    )
    .unwrap();
    assert_eq!(nodes.metrics_addr(1), None);
}
