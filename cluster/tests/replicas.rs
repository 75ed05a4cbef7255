//! Real replicas: `telegraft node` processes on loopback, with real fsync'd files, real
//! SQLite and real gRPC, killed with real signals. Every wait is bounded.
//!
//! The processes are the launcher's ([`LocalCluster`]); who leads and what each replica
//! reports come from [`telegraft::admin`], the same code the load generator uses.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::setup_chat;
use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use telegraft::admin::{self, AdminError, NodeView};
use telegraft::launcher::LocalCluster;
use telegraft::proto::chat::{self as api, chat_client::ChatClient};
use telegraft::proto::time;
use tonic::Code;
use tonic::transport::Channel;

/// A local cluster in a temporary directory, with the helpers the tests share.
struct Cluster {
    /// Declared first, so the nodes are killed before their directory is removed.
    nodes: LocalCluster,
    _dir: tempfile::TempDir,
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

impl Cluster {
    fn start(n: u64) -> Cluster {
        Cluster::start_with(n, &[])
    }

    /// Starts `n` nodes on free ports, each snapshotting every 16 entries and with the
    /// `extra` arguments.
    fn start_with(n: u64, extra: &[&str]) -> Cluster {
        let dir = tempfile::tempdir().unwrap();
        let addrs: BTreeMap<u64, String> = (1..=n)
            .map(|id| (id, format!("127.0.0.1:{}", free_port())))
            .collect();
        let mut args = vec!["--snapshot-every".to_string(), "16".to_string()];
        args.extend(extra.iter().map(|a| a.to_string()));
        let nodes = LocalCluster::start_on(
            Path::new(env!("CARGO_BIN_EXE_telegraft")),
            addrs,
            dir.path(),
            &args,
        )
        .expect("start telegraft nodes");
        Cluster { nodes, _dir: dir }
    }

    fn addr(&self, id: u64) -> &str {
        &self.nodes.addrs[&id]
    }

    /// SIGKILL: no chance to flush anything.
    fn kill(&mut self, id: u64) {
        self.nodes.kill(id).expect("kill a running node");
    }

    /// Starts a killed node again on its data directory.
    fn restart(&mut self, id: u64) {
        self.nodes.restart(id).expect("restart a killed node");
    }

    fn log(&self, id: u64) -> String {
        std::fs::read_to_string(self.nodes.log_path(id)).unwrap()
    }

    async fn chat(&self, id: u64) -> ChatClient<Channel> {
        let ep = format!("http://{}", self.addr(id));
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            match ChatClient::connect(ep.clone()).await {
                Ok(c) => return c,
                Err(e) if Instant::now() > deadline => panic!("node {id} unreachable: {e}"),
                Err(_) => tokio::time::sleep(Duration::from_millis(50)).await,
            }
        }
    }

    async fn status(&self, id: u64) -> Option<NodeView> {
        admin::status(self.addr(id)).await.ok()
    }

    /// Waits (bounded) until the running nodes agree on a leader; returns its id.
    async fn leader(&self) -> u64 {
        admin::wait_for_leader(&self.nodes.running_addrs(), Duration::from_secs(15))
            .await
            .unwrap_or_else(|e| panic!("{e}"))
            .node_id
    }

    /// Waits (bounded) until every running node applied the same index and reports the same
    /// state digest; returns the digest.
    async fn converged(&self) -> String {
        let deadline = Instant::now() + Duration::from_secs(15);
        let mut last = Vec::new();
        while Instant::now() < deadline {
            let mut seen = BTreeSet::new();
            last.clear();
            for id in self.nodes.running() {
                match self.status(id).await {
                    Some(s) => {
                        seen.insert((s.applied_index, s.state_digest.clone()));
                        last.push(s);
                    }
                    None => {
                        seen.insert((0, String::new()));
                    }
                }
            }
            if seen.len() == 1 && seen.iter().next().unwrap().0 > 0 {
                return seen.into_iter().next().unwrap().1;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        panic!("replicas did not converge: {last:?}");
    }
}

/// Retries a write on UNAVAILABLE/DEADLINE_EXCEEDED for a bounded time, with the same write
/// id, so that a retry after a failover is applied at most once.
async fn send(
    c: &mut ChatClient<Channel>,
    user: u64,
    chat: u64,
    content: &str,
    write_id: api::WriteId,
) -> u64 {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let req = api::SendMessageRequest {
            user_id: user,
            chat_id: chat,
            content: content.into(),
            sent_time: Some(time::now()),
            write_id: Some(write_id),
        };
        match c.send_message(req).await {
            Ok(r) => return r.into_inner().message_id,
            Err(s)
                if matches!(s.code(), Code::Unavailable | Code::DeadlineExceeded)
                    && Instant::now() < deadline =>
            {
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            Err(s) => panic!("send_message failed: {s:?}"),
        }
    }
}

/// Sends messages `m{i}` padded to 16 KiB (so that snapshots span several streamed chunks),
/// with client 7's write ids, and records them as acknowledged.
async fn send_padded(
    c: &mut ChatClient<Channel>,
    user: u64,
    chat: u64,
    range: std::ops::Range<u64>,
    acked: &mut Vec<String>,
) {
    let pad = "x".repeat(16 * 1024);
    for i in range {
        let text = format!("m{i}{pad}");
        send(
            c,
            user,
            chat,
            &text,
            api::WriteId {
                client_id: 7,
                sequence: i + 1,
            },
        )
        .await;
        acked.push(text);
    }
}

async fn messages(c: &mut ChatClient<Channel>, user: u64, local: bool) -> Vec<String> {
    let consistency = if local {
        api::Consistency::Local
    } else {
        api::Consistency::Linearizable
    } as i32;
    let req = api::GetMessagesRequest {
        user_id: user,
        messages_after: None,
        consistency,
        limit: 0,
    };
    c.get_messages(req)
        .await
        .unwrap()
        .into_inner()
        .messages
        .into_iter()
        .map(|m| m.content)
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn writes_and_reads_through_every_node_and_invalid_requests_change_nothing() {
    let cluster = Cluster::start(3);
    cluster.leader().await;
    let mut c1 = cluster.chat(1).await;
    let (user, chat) = setup_chat(&mut c1).await;
    for id in 1..=3 {
        let mut c = cluster.chat(id).await;
        let wid = api::WriteId {
            client_id: 100 + id,
            sequence: 1,
        };
        send(&mut c, user, chat, &format!("via node {id}"), wid).await;
    }
    for id in 1..=3 {
        let mut c = cluster.chat(id).await;
        assert_eq!(
            messages(&mut c, user, false).await,
            vec!["via node 1", "via node 2", "via node 3"]
        );
    }
    let users = c1
        .get_chat_users(api::GetChatUsersRequest {
            chat_id: chat,
            consistency: 0,
        })
        .await
        .unwrap()
        .into_inner()
        .users;
    assert_eq!(
        users
            .iter()
            .map(|u| u.username.as_str())
            .collect::<Vec<_>>(),
        vec!["ann"]
    );

    let mut c2 = cluster.chat(2).await;
    let bob = c2
        .create_user(api::CreateUserRequest {
            username: "bob".into(),
            write_id: None,
            password: String::new(),
        })
        .await
        .unwrap()
        .into_inner()
        .user_id;
    let before = cluster.converged().await;

    // Every invalid request gets its status code and changes nothing, on any replica.
    let e = c2
        .create_user(api::CreateUserRequest {
            username: "".into(),
            write_id: None,
            password: String::new(),
        })
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::InvalidArgument);
    let e = c2
        .create_user(api::CreateUserRequest {
            username: "x".repeat(65),
            write_id: None,
            password: String::new(),
        })
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::InvalidArgument);
    let e = c2
        .create_user(api::CreateUserRequest {
            username: "ann".into(),
            write_id: None,
            password: String::new(),
        })
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::AlreadyExists);
    let e = c2
        .create_chat(api::CreateChatRequest {
            user_id: 999_999,
            chat_name: "x".into(),
            write_id: None,
        })
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::NotFound);
    let e = c2
        .join_chat(api::JoinChatRequest {
            user_id: user,
            chat_id: 999_999,
            write_id: None,
        })
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::NotFound);
    let req = api::SendMessageRequest {
        user_id: bob,
        chat_id: chat,
        content: "hi".into(),
        sent_time: Some(time::now()),
        write_id: None,
    };
    assert_eq!(
        c2.send_message(req).await.unwrap_err().code(),
        Code::FailedPrecondition
    );
    let req = api::SendMessageRequest {
        user_id: user,
        chat_id: chat,
        content: "x".repeat(64 * 1024 + 1),
        sent_time: Some(time::now()),
        write_id: None,
    };
    assert_eq!(
        c2.send_message(req).await.unwrap_err().code(),
        Code::InvalidArgument
    );
    let e = c2
        .get_messages(api::GetMessagesRequest {
            user_id: 999_999,
            messages_after: None,
            consistency: 0,
            limit: 0,
        })
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::NotFound);
    let e = c2
        .get_chat_users(api::GetChatUsersRequest {
            chat_id: 999_999,
            consistency: 0,
        })
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::NotFound);
    // Rejected writes still take log entries: once every replica applied them, the chat
    // state is exactly what it was.
    let after = cluster.converged().await;
    assert_eq!(before, after);
    for id in 1..=3 {
        let mut c = cluster.chat(id).await;
        assert_eq!(messages(&mut c, user, true).await.len(), 3);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn survives_kill_9_of_the_leader_and_of_every_node() {
    let mut cluster = Cluster::start(3);
    let leader = cluster.leader().await;
    let mut c = cluster.chat(leader).await;
    let (user, chat) = setup_chat(&mut c).await;
    let mut acked = Vec::new();
    send_padded(&mut c, user, chat, 0..20, &mut acked).await;

    // Kill the leader: a survivor takes over and accepts writes.
    cluster.kill(leader);
    let survivor = cluster.nodes.running()[0];
    let mut c = cluster.chat(survivor).await;
    send_padded(&mut c, user, chat, 20..40, &mut acked).await;
    let new_leader = cluster.leader().await;
    assert_ne!(new_leader, leader);

    // The killed node restarts and catches up: from a snapshot, since the others compacted
    // their logs past the point where it stopped (they snapshot every 16 entries).
    cluster.restart(leader);
    cluster.converged().await;
    let mut c = cluster.chat(leader).await;
    assert_eq!(messages(&mut c, user, true).await, acked);
    let log = cluster.log(leader);
    assert!(
        log.contains("installing a snapshot from the leader"),
        "caught up by snapshot:\n{log}"
    );
    // The snapshot arrived as a file (whole, checksummed) and stays as the node's own;
    // nothing half-received is left behind.
    assert!(log.contains("snapshot received"), "{log}");
    let files: Vec<String> = std::fs::read_dir(cluster.nodes.node_dir(leader).join("snapshots"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert!(
        files
            .iter()
            .any(|f| f.starts_with("snap-") && f.ends_with(".db")),
        "{files:?}"
    );
    assert!(!files.iter().any(|f| f.ends_with(".tmp")), "{files:?}");

    // Kill everything at once, restart: nothing acknowledged lost, nothing duplicated.
    for id in 1..=3 {
        cluster.kill(id);
    }
    for id in 1..=3 {
        cluster.restart(id);
    }
    cluster.leader().await;
    let digest = cluster.converged().await;
    for id in 1..=3 {
        let mut c = cluster.chat(id).await;
        assert_eq!(messages(&mut c, user, false).await, acked, "node {id}");
    }
    assert!(!digest.is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_whose_log_tail_is_torn_restarts_cleanly() {
    let mut cluster = Cluster::start(3);
    let leader = cluster.leader().await;
    let mut c = cluster.chat(leader).await;
    let (user, chat) = setup_chat(&mut c).await;
    for i in 0..10 {
        send(
            &mut c,
            user,
            chat,
            &format!("m{i}"),
            api::WriteId {
                client_id: 9,
                sequence: i + 1,
            },
        )
        .await;
    }
    let victim = if leader == 1 { 2 } else { 1 };
    cluster.converged().await;
    cluster.kill(victim);
    // Cut the last record of the newest log segment in half.
    let seg = newest_segment(&cluster.nodes.node_dir(victim).join("raft/log"));
    let len = std::fs::metadata(&seg).unwrap().len();
    assert!(len > 10, "segment has records");
    std::fs::OpenOptions::new()
        .write(true)
        .open(&seg)
        .unwrap()
        .set_len(len - 3)
        .unwrap();
    cluster.restart(victim);
    let digest = cluster.converged().await;
    let mut c = cluster.chat(victim).await;
    assert_eq!(messages(&mut c, user, true).await.len(), 10);
    let log = cluster.log(victim);
    assert!(
        log.contains("torn write"),
        "the truncation is logged:\n{log}"
    );
    assert!(!digest.is_empty());
}

fn newest_segment(dir: &Path) -> PathBuf {
    let mut segs: Vec<PathBuf> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    segs.sort();
    segs.pop().expect("a segment")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reflection_lists_the_services() {
    use tonic_reflection::pb::v1::ServerReflectionRequest;
    use tonic_reflection::pb::v1::server_reflection_client::ServerReflectionClient;
    use tonic_reflection::pb::v1::server_reflection_request::MessageRequest;
    use tonic_reflection::pb::v1::server_reflection_response::MessageResponse;

    let cluster = Cluster::start(1);
    cluster.leader().await;
    let channel = Channel::from_shared(format!("http://{}", cluster.addr(1)))
        .unwrap()
        .connect()
        .await
        .unwrap();
    let mut client = ServerReflectionClient::new(channel);
    let req = ServerReflectionRequest {
        host: String::new(),
        message_request: Some(MessageRequest::ListServices(String::new())),
    };
    let mut stream = client
        .server_reflection_info(tokio_stream::iter(vec![req]))
        .await
        .unwrap()
        .into_inner();
    let resp = stream.message().await.unwrap().expect("a response");
    let Some(MessageResponse::ListServicesResponse(list)) = resp.message_response else {
        panic!("unexpected {resp:?}")
    };
    let names: Vec<String> = list.service.into_iter().map(|s| s.name).collect();
    for want in [
        "telegraft.chat.v1.Chat",
        "telegraft.raft.v1.Raft",
        "telegraft.admin.v1.Admin",
    ] {
        assert!(
            names.iter().any(|n| n == want),
            "{want} missing from {names:?}"
        );
    }
}

/// `telegraft cluster` starts N nodes, `telegraft status --json` reports exactly the agreed
/// keys, and SIGTERM stops every node.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cluster_command_and_status_json() {
    let dir = tempfile::tempdir().unwrap();
    let base = free_port_block(3);
    let mut cluster = Command::new(env!("CARGO_BIN_EXE_telegraft"))
        .args([
            "cluster",
            "--replicas",
            "3",
            "--base-port",
            &base.to_string(),
            "--data-dir",
        ])
        .arg(dir.path())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let endpoints = (0..3)
        .map(|i| format!("127.0.0.1:{}", base + i))
        .collect::<Vec<_>>()
        .join(",");
    let deadline = Instant::now() + Duration::from_secs(15);
    let statuses = loop {
        let out = Command::new(env!("CARGO_BIN_EXE_telegraft"))
            .args(["status", "--json", "--endpoints", &endpoints])
            .output()
            .unwrap();
        if out.status.success() {
            let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
            let arr = v.as_array().unwrap().clone();
            // The JSON carries the role by name: that is the command's documented output.
            if arr.iter().any(|s| s["role"] == "leader") {
                break arr;
            }
        }
        assert!(Instant::now() < deadline, "no leader via telegraft status");
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert_eq!(statuses.len(), 3);
    let keys: BTreeSet<String> = statuses[0].as_object().unwrap().keys().cloned().collect();
    let want: BTreeSet<String> = [
        "node_id",
        "role",
        "term",
        "leader_id",
        "commit_index",
        "applied_index",
        "last_log_index",
        "pid",
    ]
    .into_iter()
    .map(String::from)
    .collect();
    assert_eq!(keys, want);
    let pids: Vec<i32> = statuses
        .iter()
        .map(|s| s["pid"].as_i64().unwrap() as i32)
        .collect();
    kill(Pid::from_raw(cluster.id() as i32), Signal::SIGTERM).unwrap();
    let status = cluster.wait().unwrap();
    assert!(
        status.success(),
        "cluster exits cleanly on SIGTERM: {status:?}"
    );
    for pid in pids {
        // No signal: only asks whether the process exists.
        let alive = kill(Pid::from_raw(pid), None).is_ok();
        assert!(
            !alive,
            "node pid {pid} still running after the cluster stopped"
        );
    }
}

/// A run of `n` consecutive free ports (the cluster command takes a base port).
fn free_port_block(n: u16) -> u16 {
    for _ in 0..50 {
        let base = free_port();
        if base > 60000 {
            continue;
        }
        if (1..n).all(|i| TcpListener::bind(("127.0.0.1", base + i)).is_ok()) {
            return base;
        }
    }
    panic!("no block of {n} free ports");
}

async fn set_partition(cluster: &Cluster, id: u64, blocked: Vec<u64>) -> Result<(), AdminError> {
    admin::set_partition(cluster.addr(id), blocked).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_partition_needs_the_flag_and_cuts_the_leader_off_until_healed() {
    // Without --enable-fault-injection the admin RPC is refused.
    let plain = Cluster::start(1);
    plain.leader().await;
    let err = set_partition(&plain, 1, vec![2]).await.unwrap_err();
    assert!(
        matches!(&err, AdminError::Call { status, .. } if status.code() == Code::PermissionDenied),
        "{err}"
    );
    drop(plain);

    let cluster = Cluster::start_with(3, &["--enable-fault-injection"]);
    let old = cluster.leader().await;
    let others: Vec<u64> = (1..=3).filter(|id| *id != old).collect();
    let old_term = cluster.status(old).await.unwrap().term;
    // Cut the leader off in both directions: it drops the others, they drop it.
    set_partition(&cluster, old, others.clone()).await.unwrap();
    for &id in &others {
        set_partition(&cluster, id, vec![old]).await.unwrap();
    }
    // The majority elects a new leader in a later term; the old one cannot commit.
    let deadline = Instant::now() + Duration::from_secs(10);
    let majority: Vec<String> = others
        .iter()
        .map(|id| cluster.addr(*id).to_string())
        .collect();
    let new = loop {
        let views = admin::statuses(&majority).await;
        if let Some(leader) = admin::newest_leader(&views)
            && leader.term > old_term
        {
            break leader.node_id;
        }
        assert!(
            Instant::now() < deadline,
            "no new leader behind the partition"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    let mut c = cluster.chat(new).await;
    let (user, chat) = setup_chat(&mut c).await;
    send(
        &mut c,
        user,
        chat,
        "while partitioned",
        api::WriteId {
            client_id: 7,
            sequence: 1,
        },
    )
    .await;
    // A write sent to the cut-off node does not succeed.
    let mut cut = cluster.chat(old).await;
    let r = tokio::time::timeout(
        Duration::from_secs(5),
        cut.create_user(api::CreateUserRequest {
            username: "cut-off".into(),
            write_id: None,
            password: String::new(),
        }),
    )
    .await;
    assert!(
        !matches!(r, Ok(Ok(_))),
        "the isolated node acknowledged a write: {r:?}"
    );
    // Heal: everyone converges on the same state, which has the message.
    for id in 1..=3 {
        set_partition(&cluster, id, vec![]).await.unwrap();
    }
    cluster.converged().await;
    let mut c = cluster.chat(old).await;
    assert!(
        messages(&mut c, user, true)
            .await
            .contains(&"while partitioned".to_string())
    );
}

// Bad input and overload: what reaches a replica from outside cannot stop it, a replica
// whose actor died does not linger, and overload is refused rather than queued.

#[path = "common/raw_raft.rs"]
mod raw_raft;

/// Peer messages that no correct peer sends, encoded as the transport encodes messages.
fn forged_envelopes(term: u64) -> Vec<Vec<u8>> {
    use telegraft::raft::{AppendOutcome, Entry, Envelope, MAX_INDEX, MAX_TERM, Message, Snapshot};
    let env = |from: u64, to: u64, term: u64, message: Message| {
        postcard::to_allocvec(&Envelope {
            from,
            to,
            term,
            message,
        })
        .unwrap()
    };
    let accepted = |matched, durable| Message::AppendResponse {
        read_seq: 0,
        outcome: AppendOutcome::Accepted { matched, durable },
    };
    let mut out = Vec::new();
    for to in 1..=3 {
        for from in 1..=3 {
            // The example: a matched index the leader never sent.
            out.push(env(from, to, term, accepted(1 << 40, 1 << 40)));
            out.push(env(from, to, term, accepted(3, 7)));
            out.push(env(
                from,
                to,
                term,
                Message::Append {
                    prev_index: u64::MAX,
                    prev_term: term,
                    entries: vec![Entry {
                        index: 1,
                        term: u64::MAX,
                        command: None,
                    }],
                    commit: u64::MAX,
                    read_seq: u64::MAX,
                },
            ));
            out.push(env(
                from,
                to,
                term,
                Message::Vote {
                    last_index: 0,
                    last_term: term + 1,
                },
            ));
            out.push(env(
                from,
                to,
                MAX_TERM + 1,
                Message::VoteResponse { granted: true },
            ));
            out.push(env(
                from,
                to,
                1 << 60,
                Message::PreVote {
                    last_index: MAX_INDEX,
                    last_term: 1,
                },
            ));
            out.push(env(
                from,
                to,
                term,
                Message::InstallSnapshot {
                    snapshot: Snapshot {
                        index: 0,
                        term: 5,
                        data: vec![1, 2, 3],
                    },
                    read_seq: 0,
                },
            ));
        }
        out.push(env(0, to, term, accepted(1, 1)));
        out.push(env(99, to, term, accepted(1, 1)));
        out.push(env(1, 99, term, accepted(1, 1)));
    }
    out
}

/// Garbage on the Raft port of every replica (the seven zero bytes, random bytes,
/// forged messages, bad snapshot streams) is dropped with a rate-limited warning; the
/// replicas stay up and keep answering chat calls, and nothing they hold changes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn garbage_on_the_raft_port_changes_nothing() {
    use rand::{Rng, SeedableRng};

    let cluster = Cluster::start(3);
    let leader = cluster.leader().await;
    let mut c = cluster.chat(leader).await;
    let (user, chat) = setup_chat(&mut c).await;
    let wid = |sequence| api::WriteId {
        client_id: 11,
        sequence,
    };
    send(&mut c, user, chat, "before", wid(1)).await;
    let term = cluster.status(leader).await.unwrap().term;
    let before = cluster.converged().await;

    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(11);
    for id in 1..=3 {
        let addr = cluster.addr(id).to_string();
        // The reproduction: one batch, one message of seven zero bytes.
        raw_raft::send(&addr, vec![vec![0u8; 7]]).await.unwrap();
        for _ in 0..20 {
            let batch: Vec<Vec<u8>> = (0..rng.random_range(1..50))
                .map(|_| {
                    let len = rng.random_range(0..64);
                    (0..len).map(|_| rng.random()).collect()
                })
                .collect();
            raw_raft::send(&addr, batch).await.unwrap();
        }
        raw_raft::send(&addr, forged_envelopes(term)).await.unwrap();
        // Snapshot streams: no header, a garbage header, a header that is not a snapshot.
        let chunk = |message: Vec<u8>| raw_raft::SnapshotChunk {
            message,
            data: vec![7; 1000],
            cluster_id: raw_raft::DEFAULT_CLUSTER.into(),
        };
        for chunks in [
            vec![],
            vec![chunk(vec![0xff; 9])],
            vec![chunk(forged_envelopes(term)[0].clone())],
        ] {
            let e = raw_raft::send_snapshot(&addr, chunks).await.unwrap_err();
            assert_eq!(e.code(), Code::InvalidArgument, "{e:?}");
        }
    }

    // Every replica is still up and serves writes and reads; the forged messages changed no
    // one's state: the only change since is the new message.
    for id in 1..=3 {
        let mut c = cluster.chat(id).await;
        send(&mut c, user, chat, &format!("after {id}"), wid(1 + id)).await;
        assert_eq!(messages(&mut c, user, false).await.len(), 1 + id as usize);
    }
    let after = cluster.converged().await;
    assert_ne!(before, after);
    assert_eq!(cluster.nodes.running().len(), 3);
    for id in 1..=3 {
        let log = cluster.log(id);
        let undecodable = log.matches("undecodable peer message").count();
        assert!(
            (1..=5).contains(&undecodable),
            "node {id}: one warning per second, not one per message ({undecodable}):\n{log}"
        );
        assert!(log.contains("peer message dropped"), "node {id}:\n{log}");
        assert!(!log.contains("panicked"), "node {id}:\n{log}");
    }
}

/// Waits (bounded) for node `id` to exit on its own; returns its exit code.
fn exit_code(cluster: &mut Cluster, id: u64) -> i32 {
    let status = cluster
        .nodes
        .wait_exit(id, Duration::from_secs(10))
        .unwrap()
        .unwrap_or_else(|| panic!("node {id} still running: {}", cluster.log(id)));
    status.code().expect("exited, not killed by a signal")
}

/// A replica whose core actor panics stops at once, with the fatal exit code, and stops
/// listening; a supervisor restarting it gets it back from its durable state.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dead_core_ends_the_process() {
    let mut cluster = Cluster::start_with(1, &["--enable-fault-injection"]);
    cluster.leader().await;
    let mut c = cluster.chat(1).await;
    let (user, chat) = setup_chat(&mut c).await;
    let wid = api::WriteId {
        client_id: 5,
        sequence: 1,
    };
    send(&mut c, user, chat, "durable", wid).await;

    cluster.nodes.signal(1, Signal::SIGUSR1).unwrap();
    assert_eq!(exit_code(&mut cluster, 1), 70);
    let log = cluster.log(1);
    assert!(log.contains("the core actor panicked"), "{log}");
    assert!(
        std::net::TcpStream::connect(cluster.addr(1)).is_err(),
        "nothing listens on the port any more"
    );

    cluster.restart(1);
    cluster.leader().await;
    let mut c = cluster.chat(1).await;
    assert_eq!(messages(&mut c, user, false).await, vec!["durable"]);
}

/// SIGTERM stops a replica cleanly (exit code 0): its core thread, which runs the core actor
/// and the peer senders, ends at the stop notice and is joined before the storage writer,
/// whose last sender it holds.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_joins_the_core_thread() {
    let mut cluster = Cluster::start(3);
    let leader = cluster.leader().await;
    let mut c = cluster.chat(leader).await;
    setup_chat(&mut c).await;
    cluster.nodes.signal(leader, Signal::SIGTERM).unwrap();
    assert_eq!(exit_code(&mut cluster, leader), 0);
    let log = cluster.log(leader);
    let core = log.find("core thread stopped");
    let writer = log.find("storage writer stopped");
    assert!(
        matches!((core, writer), (Some(c), Some(w)) if c < w),
        "the core thread is joined, then the storage writer:\n{log}"
    );
}

/// The same for the storage writer's thread: its panic stops the process at once, even with
/// no write waiting for it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dead_storage_writer_ends_the_process() {
    let mut cluster = Cluster::start_with(1, &["--enable-fault-injection"]);
    cluster.leader().await;
    cluster.nodes.signal(1, Signal::SIGUSR2).unwrap();
    assert_eq!(exit_code(&mut cluster, 1), 70);
    let log = cluster.log(1);
    assert!(log.contains("the storage writer panicked"), "{log}");
}

/// With `--max-inflight 2`, concurrent writes beyond two at a replica are answered
/// RESOURCE_EXHAUSTED at once, at the leader and at a follower that forwards to it; every
/// other write succeeds, and the cluster serves normally once the burst is over.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn overload_is_refused_with_resource_exhausted() {
    let cluster = Cluster::start_with(3, &["--max-inflight", "2"]);
    let leader = cluster.leader().await;
    let follower = (1..=3).find(|id| *id != leader).unwrap();
    let mut c = cluster.chat(leader).await;
    let (user, chat) = setup_chat(&mut c).await;
    for target in [leader, follower] {
        let c = cluster.chat(target).await;
        let content = "x".repeat(32 * 1024);
        let calls = (0..64).map(|_| {
            let mut c = c.clone();
            let content = content.clone();
            async move {
                c.send_message(api::SendMessageRequest {
                    user_id: user,
                    chat_id: chat,
                    content,
                    sent_time: Some(time::now()),
                    write_id: None,
                })
                .await
            }
        });
        let results = futures_util::future::join_all(calls).await;
        let ok = results.iter().filter(|r| r.is_ok()).count();
        let exhausted = results
            .iter()
            .filter(|r| matches!(r, Err(s) if s.code() == Code::ResourceExhausted))
            .count();
        assert_eq!(
            ok + exhausted,
            results.len(),
            "node {target}: only OK or RESOURCE_EXHAUSTED: {:?}",
            results
                .iter()
                .filter_map(|r| r.as_ref().err())
                .collect::<Vec<_>>()
        );
        assert!(ok >= 1, "node {target}: some writes were admitted");
        assert!(exhausted >= 1, "node {target}: some writes were refused");
    }
    let mut c = cluster.chat(follower).await;
    let wid = api::WriteId {
        client_id: 3,
        sequence: 1,
    };
    send(&mut c, user, chat, "after the burst", wid).await;
    cluster.converged().await;
}

/// A follower that forwarded a request to a leader which then froze (SIGSTOP) does not wait
/// out its timeout: when it learns of the election, it abandons the call and sends it to the
/// new leader. One call, no client retry, succeeds; before, it failed with DEADLINE_EXCEEDED
/// after the forwarded call's 5 s timeout. The write carries a write id, so the one the frozen
/// leader may still append is applied once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_forwarded_to_a_frozen_leader_follows_the_new_one() {
    let cluster = Cluster::start(3);
    let leader = cluster.leader().await;
    let follower = (1..=3).find(|&id| id != leader).unwrap();
    let mut c = cluster.chat(follower).await;
    let (user, chat) = setup_chat(&mut c).await;

    cluster.nodes.pause(leader, true).unwrap();
    let req = api::SendMessageRequest {
        user_id: user,
        chat_id: chat,
        content: "after the freeze".into(),
        sent_time: None,
        write_id: Some(api::WriteId {
            client_id: 9,
            sequence: 1,
        }),
    };
    let mut call = tonic::Request::new(req);
    call.set_timeout(Duration::from_secs(20));
    let sent = c.send_message(call).await;
    // A linearizable read through the follower follows the new leader as well.
    let read = tokio::time::timeout(Duration::from_secs(20), messages(&mut c, user, false)).await;
    cluster.nodes.pause(leader, false).unwrap();

    let id = sent
        .expect("forwarded write follows the new leader")
        .into_inner();
    assert!(id.message_id > 0);
    assert_eq!(read.expect("read answered"), vec!["after the freeze"]);
    let new_leader = cluster.leader().await;
    assert_ne!(new_leader, leader, "the frozen leader was replaced");
    cluster.converged().await;
    let mut old = cluster.chat(leader).await;
    assert_eq!(
        messages(&mut old, user, true).await,
        vec!["after the freeze"]
    );
}

/// A follower whose leader was just cut off (fault injection) does not fail a write at once:
/// it waits, bounded, for the majority to elect a leader it can reach, as behind a real
/// partition, and the one call succeeds. Before, it answered UNAVAILABLE "partitioned from
/// the leader" at once, and a client moving elsewhere could land on the cut-off leader.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_follower_cut_off_from_its_leader_waits_for_the_new_one() {
    let cluster = Cluster::start_with(3, &["--enable-fault-injection"]);
    let old = cluster.leader().await;
    let others: Vec<u64> = (1..=3).filter(|id| *id != old).collect();
    let mut c = cluster.chat(others[0]).await;
    let (user, chat) = setup_chat(&mut c).await;

    set_partition(&cluster, old, others.clone()).await.unwrap();
    for &id in &others {
        set_partition(&cluster, id, vec![old]).await.unwrap();
    }
    let mut call = tonic::Request::new(api::SendMessageRequest {
        user_id: user,
        chat_id: chat,
        content: "behind the cut".into(),
        sent_time: None,
        write_id: Some(api::WriteId {
            client_id: 11,
            sequence: 1,
        }),
    });
    call.set_timeout(Duration::from_secs(20));
    let sent = c.send_message(call).await;
    for id in 1..=3 {
        set_partition(&cluster, id, vec![]).await.unwrap();
    }
    sent.expect("the follower waited for a leader it can reach");
    cluster.converged().await;
    let mut c = cluster.chat(old).await;
    assert_eq!(messages(&mut c, user, true).await, vec!["behind the cut"]);
}

/// A follower whose forwarded call finds the leader dead (SIGKILL: connection refused) does
/// not pass the failure on: the request is safe to send again (it has a write id), so the
/// follower waits for the election and sends it to the new leader. One call succeeds.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_forwarded_to_a_dead_leader_waits_for_the_new_one() {
    let mut cluster = Cluster::start(3);
    let leader = cluster.leader().await;
    let follower = (1..=3).find(|&id| id != leader).unwrap();
    let mut c = cluster.chat(follower).await;
    let (user, chat) = setup_chat(&mut c).await;

    cluster.kill(leader);
    let mut call = tonic::Request::new(api::SendMessageRequest {
        user_id: user,
        chat_id: chat,
        content: "after the kill".into(),
        sent_time: None,
        write_id: Some(api::WriteId {
            client_id: 12,
            sequence: 1,
        }),
    });
    call.set_timeout(Duration::from_secs(20));
    c.send_message(call)
        .await
        .expect("the follower waited for the new leader");
    // A linearizable read too.
    assert_eq!(messages(&mut c, user, false).await, vec!["after the kill"]);
}

/// The server advertises its cap on concurrent HTTP/2 streams per connection (1,024,
/// `MAX_STREAMS_PER_CONNECTION`) in its SETTINGS frame: without one (tonic's default) a client
/// may open any number of streams, and a replica short of CPU accepts and buffers them all
/// before admission runs. Read with a raw HTTP/2 handshake, so the test sees what any client
/// is told.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_server_caps_http2_streams_per_connection() {
    use std::io::{Read, Write};
    let cluster = Cluster::start(1);
    let _ = cluster.chat(1).await; // listening
    let mut s = std::net::TcpStream::connect(cluster.addr(1)).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    // Connection preface, then an empty SETTINGS frame (length 0, type 4, flags 0, stream 0).
    s.write_all(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n").unwrap();
    s.write_all(&[0, 0, 0, 4, 0, 0, 0, 0, 0]).unwrap();
    let max_streams = loop {
        let mut head = [0u8; 9];
        s.read_exact(&mut head).unwrap();
        let len = u32::from_be_bytes([0, head[0], head[1], head[2]]) as usize;
        let mut payload = vec![0u8; len];
        s.read_exact(&mut payload).unwrap();
        let (kind, ack) = (head[3], head[4] & 1 == 1);
        if kind == 4 && !ack {
            // SETTINGS_MAX_CONCURRENT_STREAMS is parameter 0x3; absent means unlimited.
            break payload
                .chunks_exact(6)
                .find(|p| u16::from_be_bytes([p[0], p[1]]) == 3)
                .map(|p| u32::from_be_bytes([p[2], p[3], p[4], p[5]]));
        }
    };
    assert_eq!(max_streams, Some(1024));
}
