//! The chat API's contracts on real replicas (`telegraft node` processes on loopback):
//! exactly-once write ids, the server's commit clock and paging, and message size bounds.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::net::TcpListener;
use std::path::Path;
use std::time::{Duration, Instant};

use telegraft::admin;
use telegraft::launcher::LocalCluster;
use telegraft::proto::chat::{self as api, chat_client::ChatClient};
use telegraft::proto::time;
use tonic::Code;
use tonic::transport::Channel;

/// A local cluster in a temporary directory.
struct Cluster {
    /// Declared first, so the nodes are killed before their directory is removed.
    nodes: LocalCluster,
    _dir: tempfile::TempDir,
}

impl Cluster {
    /// `n` nodes on free ports, snapshotting every 16 entries (so catching up after a kill
    /// goes through a snapshot install).
    async fn start(n: u64) -> Cluster {
        let dir = tempfile::tempdir().unwrap();
        let addrs: BTreeMap<u64, String> = (1..=n)
            .map(|id| {
                let l = TcpListener::bind("127.0.0.1:0").unwrap();
                (id, format!("127.0.0.1:{}", l.local_addr().unwrap().port()))
            })
            .collect();
        let args = ["--snapshot-every".to_string(), "16".to_string()];
        let nodes = LocalCluster::start_on(
            Path::new(env!("CARGO_BIN_EXE_telegraft")),
            addrs,
            dir.path(),
            &args,
        )
        .expect("start telegraft nodes");
        let cluster = Cluster { nodes, _dir: dir };
        cluster.leader().await;
        cluster
    }

    async fn leader(&self) -> u64 {
        admin::wait_for_leader(&self.nodes.running_addrs(), Duration::from_secs(15))
            .await
            .unwrap_or_else(|e| panic!("{e}"))
            .node_id
    }

    async fn chat(&self, id: u64) -> ChatClient<Channel> {
        let ep = format!("http://{}", self.nodes.addrs[&id]);
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            match ChatClient::connect(ep.clone()).await {
                Ok(c) => return c,
                Err(e) if Instant::now() > deadline => panic!("node {id} unreachable: {e}"),
                Err(_) => tokio::time::sleep(Duration::from_millis(50)).await,
            }
        }
    }

    /// Waits (bounded) until every running node applied the same index with the same state
    /// digest.
    async fn converged(&self) {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let views = admin::statuses(&self.nodes.running_addrs()).await;
            let seen: BTreeSet<_> = views
                .iter()
                .map(|v| (v.applied_index, v.state_digest.clone()))
                .collect();
            if views.len() == self.nodes.running().len() && seen.len() == 1 {
                return;
            }
            assert!(Instant::now() < deadline, "no convergence: {views:?}");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}

/// Retries `op` while the cluster has no leader to take it (UNAVAILABLE) or its outcome is
/// unknown (DEADLINE_EXCEEDED), for a bounded time.
async fn retry<T, F, Fut>(mut op: F) -> Result<T, tonic::Status>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<T, tonic::Status>>,
{
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        match op().await {
            Err(s)
                if matches!(s.code(), Code::Unavailable | Code::DeadlineExceeded)
                    && Instant::now() < deadline =>
            {
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            r => return r,
        }
    }
}

fn get(user_id: u64, after: Option<prost_types::Timestamp>, limit: u32) -> api::GetMessagesRequest {
    api::GetMessagesRequest {
        user_id,
        messages_after: after,
        consistency: api::Consistency::Linearizable as i32,
        limit,
    }
}

/// Every message of `user`'s chats, page by page, as `(message_id, committed_at µs)`.
async fn read_all(
    c: &mut ChatClient<Channel>,
    user: u64,
    consistency: api::Consistency,
) -> Vec<(u64, i64)> {
    let mut all = Vec::new();
    let mut after = None;
    loop {
        let mut req = get(user, after, 7);
        req.consistency = consistency as i32;
        let page = c.get_messages(req).await.unwrap().into_inner();
        all.extend(page.messages.iter().map(|m| {
            let at = m.committed_at.as_ref().expect("committed_at is always set");
            (m.message_id, time::micros(at))
        }));
        match page.messages.last() {
            Some(last) if page.has_more => after = last.committed_at,
            _ => return all,
        }
    }
}

/// The bug the issue names: a `CreateChat` and then a `SendMessage` under one write id
/// returned the chat id as the message id, and stored no message.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_write_id_reused_for_another_command_is_refused() {
    let cluster = Cluster::start(1).await;
    let mut c = cluster.chat(1).await;
    let (user, _) = common::setup_chat(&mut c).await;
    let wid = api::WriteId {
        client_id: u64::MAX,
        sequence: u64::MAX,
    };
    let create = api::CreateChatRequest {
        user_id: user,
        chat_name: "mine".into(),
        write_id: Some(wid),
    };
    let chat = c
        .create_chat(create.clone())
        .await
        .unwrap()
        .into_inner()
        .chat_id;
    let send = api::SendMessageRequest {
        user_id: user,
        chat_id: chat,
        content: "hello".into(),
        sent_time: None,
        write_id: Some(wid),
    };
    let e = c.send_message(send).await.unwrap_err();
    assert_eq!(e.code(), Code::FailedPrecondition, "{e:?}");
    assert!(
        e.message()
            .contains("write id reused for a different command"),
        "{e:?}"
    );
    let page = c
        .get_messages(get(user, None, 0))
        .await
        .unwrap()
        .into_inner();
    assert!(page.messages.is_empty(), "{page:?}");
    // The true retry still gets its first answer.
    let again = c.create_chat(create).await.unwrap().into_inner().chat_id;
    assert_eq!(again, chat);
}

/// Messages are ordered by the server's commit clock: one without `sent_time`, one dated in
/// the future and one in the past are all read once by a poller that asks with the last
/// `committed_at` it saw, also across a leader change; and every replica reports the same
/// `committed_at` for every message.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn polling_by_committed_at_gets_every_message_once_across_a_leader_change() {
    let mut cluster = Cluster::start(3).await;
    let leader = cluster.leader().await;
    let mut c = cluster.chat(leader).await;
    let (user, chat) = common::setup_chat(&mut c).await;
    let now = time::unix_micros(std::time::SystemTime::now());
    let sent_times = [
        None,
        Some(now + 3_600_000_000),
        Some(now - 3_600_000_000),
        Some(0),
    ];

    let mut acked = Vec::new();
    let mut seen = Vec::new();
    let mut cursor: Option<prost_types::Timestamp> = None;
    let mut poller = cluster.chat(leader).await;
    for i in 0..60u64 {
        if i == 30 {
            cluster.nodes.kill(leader).unwrap();
            let survivor = cluster.nodes.running()[0];
            c = cluster.chat(survivor).await;
            poller = cluster.chat(survivor).await;
        }
        let req = api::SendMessageRequest {
            user_id: user,
            chat_id: chat,
            content: format!("m{i}"),
            sent_time: sent_times[i as usize % 4].map(time::from_micros),
            write_id: Some(api::WriteId {
                client_id: 42,
                sequence: i + 1,
            }),
        };
        let id = retry(|| {
            let mut c = c.clone();
            let req = req.clone();
            async move { c.send_message(req).await }
        })
        .await
        .unwrap()
        .into_inner()
        .message_id;
        acked.push(id);
        // Poll in small pages until caught up.
        loop {
            let req = get(user, cursor, 2);
            let page = retry(|| {
                let mut p = poller.clone();
                async move { p.get_messages(req).await }
            })
            .await
            .unwrap()
            .into_inner();
            for m in &page.messages {
                seen.push(m.message_id);
                if m.content == "m0" {
                    assert!(m.sent_time.is_none(), "no sent_time stays none");
                }
            }
            if let Some(last) = page.messages.last() {
                cursor = last.committed_at;
            }
            if !page.has_more {
                break;
            }
        }
    }
    assert_eq!(seen, acked, "every message once, in commit order");

    // Every replica, the killed one back after catching up, agrees on each committed_at.
    cluster.nodes.restart(leader).unwrap();
    cluster.converged().await;
    let mut lists = Vec::new();
    for id in 1..=3 {
        let mut c = cluster.chat(id).await;
        lists.push(read_all(&mut c, user, api::Consistency::Local).await);
    }
    assert_eq!(lists[0].len(), 60);
    assert!(lists.iter().all(|l| *l == lists[0]), "{lists:?}");
    assert!(
        lists[0].windows(2).all(|w| w[0].1 < w[1].1),
        "strictly increasing: {:?}",
        lists[0]
    );
}

/// A request over the server's bound is refused before it is read; pages say when more
/// follow.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn requests_are_bounded_and_responses_are_paged() {
    let cluster = Cluster::start(1).await;
    let mut c = cluster.chat(1).await;
    let (user, chat) = common::setup_chat(&mut c).await;
    let huge = api::SendMessageRequest {
        user_id: user,
        chat_id: chat,
        content: "x".repeat(2 << 20),
        sent_time: None,
        write_id: None,
    };
    let e = c.send_message(huge).await.unwrap_err();
    assert_eq!(e.code(), Code::OutOfRange, "{e:?}");

    for i in 0..5 {
        let req = api::SendMessageRequest {
            user_id: user,
            chat_id: chat,
            content: format!("m{i}"),
            sent_time: None,
            write_id: None,
        };
        c.send_message(req).await.unwrap();
    }
    let first = c
        .get_messages(get(user, None, 3))
        .await
        .unwrap()
        .into_inner();
    assert_eq!((first.messages.len(), first.has_more), (3, true));
    let after = first.messages[2].committed_at;
    let rest = c
        .get_messages(get(user, after, 3))
        .await
        .unwrap()
        .into_inner();
    assert_eq!((rest.messages.len(), rest.has_more), (2, false));
    let all = read_all(&mut c, user, api::Consistency::Linearizable).await;
    assert_eq!(all.len(), 5);
}
