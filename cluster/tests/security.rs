//! Security on real replicas (issue 18): TLS between everyone, peers authenticated by their
//! node certificates and cluster id, chat users by password and token, and the safe default
//! of no plaintext off loopback. Every cluster here is `telegraft node` processes on
//! loopback, with certificates made by `telegraft certs`.

use std::collections::BTreeMap;
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use telegraft::admin;
use telegraft::launcher::LocalCluster;
use telegraft::proto::admin::SetPartitionRequest;
use telegraft::proto::admin::admin_client::AdminClient;
use telegraft::proto::chat::{self as api, chat_client::ChatClient};
use telegraft::security::tls::{Role, client_config};
use telegraft::security::token::{Keyring, now_unix};
use tonic::Code;
use tonic::transport::{Channel, ClientTlsConfig, Endpoint};

fn exe() -> &'static Path {
    Path::new(env!("CARGO_BIN_EXE_telegraft"))
}

fn free_addr() -> String {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    format!("127.0.0.1:{}", l.local_addr().unwrap().port())
}

/// `telegraft certs --out DIR --nodes 3 [more args]`.
fn certs(dir: &Path, more: &[&str]) {
    let out = Command::new(exe())
        .args(["certs", "--out"])
        .arg(dir)
        .args(["--nodes", "3"])
        .args(more)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "telegraft certs: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A local cluster of 3 in a temporary directory, started with `args`.
struct Cluster {
    nodes: LocalCluster,
    dir: tempfile::TempDir,
    /// The certificates, when the cluster runs TLS.
    certs: Option<PathBuf>,
}

impl Cluster {
    /// `tls`: certificates from `telegraft certs` and `--tls-dir`; `auth`: `--require-auth`
    /// (with the token key from the certificate directory, or `--auth-key`).
    async fn start(tls: bool, auth: bool, more: &[&str]) -> Cluster {
        let dir = tempfile::tempdir().unwrap();
        let certs_dir = dir.path().join("certs");
        certs(&certs_dir, &[]);
        let mut args: Vec<String> = more.iter().map(|s| s.to_string()).collect();
        if tls {
            args.extend(["--tls-dir".into(), certs_dir.display().to_string()]);
        }
        if auth {
            args.push("--require-auth".into());
            if !tls {
                args.extend([
                    "--auth-key".into(),
                    certs_dir.join("auth.key").display().to_string(),
                ]);
            }
        }
        let addrs: BTreeMap<u64, String> = (1..=3).map(|id| (id, free_addr())).collect();
        if tls {
            // The admin certificate: status calls, and fault injection where a test asks.
            let c = client_config(&certs_dir, Role::Admin).unwrap();
            admin::use_tls_for(addrs.values(), &c);
        }
        let nodes = LocalCluster::start_on(exe(), addrs, &dir.path().join("data"), &args)
            .expect("start telegraft nodes");
        let cluster = Cluster {
            nodes,
            certs: tls.then_some(certs_dir),
            dir,
        };
        cluster.leader().await;
        cluster
    }

    async fn leader(&self) -> u64 {
        admin::wait_for_leader(&self.nodes.running_addrs(), Duration::from_secs(20))
            .await
            .unwrap_or_else(|e| panic!("{e}; logs in {}", self.dir.path().display()))
            .node_id
    }

    fn addr(&self, id: u64) -> &str {
        &self.nodes.addrs[&id]
    }

    fn key(&self) -> Keyring {
        Keyring::load(&self.dir.path().join("certs").join("auth.key")).unwrap()
    }

    /// A chat client to node `id`, over TLS (trusting the CA only) when the cluster runs it.
    async fn chat(&self, id: u64) -> ChatClient<Channel> {
        let tls = self
            .certs
            .as_ref()
            .map(|d| ClientTlsConfig::new().ca_certificate(ca(d)));
        ChatClient::new(connect(self.addr(id), tls).await.unwrap())
    }
}

fn ca(dir: &Path) -> tonic::transport::Certificate {
    tonic::transport::Certificate::from_pem(std::fs::read(dir.join("ca.pem")).unwrap())
}

/// Connects to `addr` (TLS with `tls`), retrying for a few seconds while it starts.
async fn connect(addr: &str, tls: Option<ClientTlsConfig>) -> Result<Channel, String> {
    telegraft::security::tls::install_crypto_provider();
    let scheme = if tls.is_some() { "https" } else { "http" };
    let mut e = Endpoint::from_shared(format!("{scheme}://{addr}")).unwrap();
    if let Some(tls) = tls {
        e = e.tls_config(tls).unwrap();
    }
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        match e.connect().await {
            Ok(c) => return Ok(c),
            Err(err) if Instant::now() > deadline => return Err(format!("{err:?}")),
            Err(_) => tokio::time::sleep(Duration::from_millis(50)).await,
        }
    }
}

/// The TLS client configuration presenting `stem.pem` of `dir`, trusting `trust`'s CA.
fn identity(dir: &Path, stem: &str, trust: &Path) -> ClientTlsConfig {
    let read = |f: String| std::fs::read(dir.join(f)).unwrap();
    ClientTlsConfig::new()
        .ca_certificate(ca(trust))
        .identity(tonic::transport::Identity::from_pem(
            read(format!("{stem}.pem")),
            read(format!("{stem}.key")),
        ))
}

fn bearer<T>(msg: T, token: &str) -> tonic::Request<T> {
    let mut r = tonic::Request::new(msg);
    r.metadata_mut()
        .insert("authorization", format!("Bearer {token}").parse().unwrap());
    r
}

fn create(name: &str, password: &str) -> api::CreateUserRequest {
    api::CreateUserRequest {
        username: name.into(),
        write_id: None,
        password: password.into(),
    }
}

#[path = "common/raw_raft.rs"]
mod raw_raft;

/// A harmless message from node `from` (a pre-vote answer of term 0, which the core
/// ignores as stale), encoded as a peer sends it.
fn message_from(from: u64, to: u64) -> Vec<u8> {
    use telegraft::raft::{Envelope, Message};
    let env = Envelope {
        from,
        to,
        term: 0,
        message: Message::PreVoteResponse { granted: false },
    };
    postcard::to_allocvec(&env).unwrap()
}

#[tokio::test(flavor = "multi_thread")]
async fn a_plaintext_client_is_refused_when_tls_is_on() {
    let c = Cluster::start(true, false, &[]).await;
    // Over TLS (trusting the CA, no client certificate): served, and replicated between
    // peers that authenticate each other.
    let mut chat = c.chat(1).await;
    let id = chat
        .create_user(create("ann", ""))
        .await
        .expect("a TLS client is served")
        .into_inner()
        .user_id;
    assert!(id > 0);
    // Plaintext to the same port: the call fails, nothing is served.
    match connect(c.addr(1), None).await {
        Err(_) => {}
        Ok(channel) => {
            let e = ChatClient::new(channel)
                .create_user(create("bob", ""))
                .await
                .unwrap_err();
            assert_ne!(e.code(), Code::Ok);
        }
    }
    // A client that trusts another CA refuses the replica's certificate.
    let other = c.dir.path().join("other");
    certs(&other, &[]);
    let tls = ClientTlsConfig::new().ca_certificate(ca(&other));
    if let Ok(channel) = connect(c.addr(1), Some(tls)).await {
        assert!(
            ChatClient::new(channel)
                .create_user(create("carl", ""))
                .await
                .is_err()
        );
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_peer_of_another_ca_or_another_cluster_id_is_refused() {
    let c = Cluster::start(true, false, &[]).await;
    let certs_dir = c.certs.clone().unwrap();
    let leader = c.leader().await;
    let target = c.addr(leader).to_string();
    let from = if leader == 1 { 2 } else { 1 };

    // The genuine node certificate of another member: accepted.
    let good = identity(&certs_dir, &format!("node-{from}"), &certs_dir);
    let ch = connect(&target, Some(good)).await.unwrap();
    raw_raft::send_on(ch.clone(), "telegraft", vec![])
        .await
        .expect("a member's node certificate is accepted");
    // ... but it speaks for its own node only.
    let other_node = 6 - leader - from;
    let e = raw_raft::send_on(
        ch.clone(),
        "telegraft",
        vec![message_from(other_node, leader)],
    )
    .await
    .unwrap_err();
    assert_eq!(e.code(), Code::PermissionDenied, "{e:?}");
    // ... and only for its own cluster.
    let e = raw_raft::send_on(ch, "elsewhere", vec![])
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::PermissionDenied, "{e:?}");

    // A node certificate of another CA: the handshake fails.
    let foreign = c.dir.path().join("foreign");
    certs(&foreign, &[]);
    let tls = identity(&foreign, &format!("node-{from}"), &certs_dir);
    if let Ok(ch) = connect(&target, Some(tls)).await {
        let e = raw_raft::send_on(ch, "telegraft", vec![message_from(from, leader)])
            .await
            .unwrap_err();
        assert_ne!(e.code(), Code::Ok);
    }

    // A node certificate of this CA but of another cluster id (`telegraft certs` run again
    // on a copy of the directory keeps the CA).
    let sibling = c.dir.path().join("sibling");
    std::fs::create_dir_all(&sibling).unwrap();
    for f in ["ca.pem", "ca.key"] {
        std::fs::copy(certs_dir.join(f), sibling.join(f)).unwrap();
    }
    certs(&sibling, &["--cluster-id", "other"]);
    let tls = identity(&sibling, &format!("node-{from}"), &certs_dir);
    let ch = connect(&target, Some(tls)).await.unwrap();
    for cluster in ["telegraft", "other"] {
        let e = raw_raft::send_on(ch.clone(), cluster, vec![message_from(from, leader)])
            .await
            .unwrap_err();
        assert_eq!(e.code(), Code::PermissionDenied, "{e:?}");
        assert!(e.message().contains("cluster"), "{e:?}");
    }
    // The cluster is unharmed.
    let mut chat = c.chat(leader).await;
    chat.create_user(create("ann", "")).await.unwrap();
}

#[tokio::test(flavor = "multi_thread")]
async fn plaintext_peers_of_another_cluster_id_are_refused() {
    let c = Cluster::start(false, false, &["--cluster-id", "blue"]).await;
    let leader = c.leader().await;
    let ch = connect(c.addr(leader), None).await.unwrap();
    raw_raft::send_on(ch.clone(), "blue", vec![]).await.unwrap();
    // No cluster id (a peer built before them) is the default cluster, not this one.
    for cluster in ["red", "", "telegraft"] {
        let e = raw_raft::send_on(ch.clone(), cluster, vec![])
            .await
            .unwrap_err();
        assert_eq!(e.code(), Code::PermissionDenied, "{e:?}");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_raft_message_from_a_client_certificate_is_refused() {
    let c = Cluster::start(true, false, &["--enable-fault-injection"]).await;
    let certs_dir = c.certs.clone().unwrap();
    let leader = c.leader().await;
    let target = c.addr(leader).to_string();
    for stem in ["client", "admin"] {
        let ch = connect(&target, Some(identity(&certs_dir, stem, &certs_dir)))
            .await
            .unwrap();
        let e = raw_raft::send_on(ch, "telegraft", vec![message_from(1, leader)])
            .await
            .unwrap_err();
        assert_eq!(e.code(), Code::PermissionDenied, "{stem}: {e:?}");
        assert!(e.message().contains("node certificate"), "{e:?}");
    }
    // No certificate at all.
    let ch = connect(
        &target,
        Some(ClientTlsConfig::new().ca_certificate(ca(&certs_dir))),
    )
    .await
    .unwrap();
    let e = raw_raft::send_on(ch, "telegraft", vec![])
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::PermissionDenied, "{e:?}");

    // Fault injection: only the admin certificate.
    for (stem, allowed) in [("client", false), ("node-1", false), ("admin", true)] {
        let ch = connect(&target, Some(identity(&certs_dir, stem, &certs_dir)))
            .await
            .unwrap();
        let r = AdminClient::new(ch)
            .set_partition(SetPartitionRequest { blocked: vec![] })
            .await;
        match allowed {
            true => assert!(r.is_ok(), "{stem}: {r:?}"),
            false => assert_eq!(r.unwrap_err().code(), Code::PermissionDenied, "{stem}"),
        }
    }
}

/// What a token-holding user may do, on a cluster with `--require-auth`.
async fn tokens_and_users(c: &Cluster) {
    let leader = c.leader().await;
    let follower = if leader == 1 { 2 } else { 1 };
    // Through a follower too, so that forwarding passes the token on.
    for node in [leader, follower] {
        let mut chat = c.chat(node).await;
        let (ann, bob) = (format!("ann-{node}"), format!("bob-{node}"));
        // A password is required, and a login needs the right one.
        let e = chat.create_user(create(&ann, "")).await.unwrap_err();
        assert_eq!(e.code(), Code::InvalidArgument, "{e:?}");
        let ann_id = chat
            .create_user(create(&ann, "ann-pw"))
            .await
            .unwrap()
            .into_inner()
            .user_id;
        let bob_id = chat
            .create_user(create(&bob, "bob-pw"))
            .await
            .unwrap()
            .into_inner()
            .user_id;
        for (user, pw) in [(ann.as_str(), "wrong"), ("nobody", "ann-pw")] {
            let e = chat
                .login(api::LoginRequest {
                    username: user.into(),
                    password: pw.into(),
                })
                .await
                .unwrap_err();
            assert_eq!(e.code(), Code::Unauthenticated, "{user}: {e:?}");
        }
        let login = |username: &str, password: &str| api::LoginRequest {
            username: username.into(),
            password: password.into(),
        };
        let a = chat
            .login(login(&ann, "ann-pw"))
            .await
            .unwrap()
            .into_inner();
        assert_eq!(a.user_id, ann_id);
        let expires = a.expires_at.unwrap().seconds as u64;
        assert!(
            expires > now_unix() && expires <= now_unix() + 3600 + 5,
            "{expires}"
        );
        let b = chat
            .login(login(&bob, "bob-pw"))
            .await
            .unwrap()
            .into_inner();

        // Missing, forged and expired tokens: UNAUTHENTICATED.
        let make_chat = |user_id: u64| api::CreateChatRequest {
            user_id,
            chat_name: "room".into(),
            write_id: None,
        };
        let e = chat.create_chat(make_chat(ann_id)).await.unwrap_err();
        assert_eq!(e.code(), Code::Unauthenticated, "missing: {e:?}");
        let forged = {
            let mut parts: Vec<String> = a.token.split('.').map(str::to_string).collect();
            // Bob's payload under Ann's signature.
            parts[2] = b.token.split('.').nth(2).unwrap().to_string();
            parts.join(".")
        };
        let expired = c.key().mint("telegraft", ann_id, now_unix() - 1);
        let other_key =
            Keyring::parse(&"ab".repeat(32))
                .unwrap()
                .mint("telegraft", ann_id, now_unix() + 60);
        // The cluster's own key, but signed for another cluster.
        let other_cluster = c.key().mint("elsewhere", ann_id, now_unix() + 60);
        for (what, t) in [
            ("forged", &forged),
            ("expired", &expired),
            ("other key", &other_key),
            ("other cluster", &other_cluster),
        ] {
            let e = chat
                .create_chat(bearer(make_chat(ann_id), t))
                .await
                .unwrap_err();
            assert_eq!(e.code(), Code::Unauthenticated, "{what}: {e:?}");
        }

        // Ann's own chat, with her token; Bob cannot send in it as Ann, nor read it.
        let room = chat
            .create_chat(bearer(make_chat(ann_id), &a.token))
            .await
            .unwrap()
            .into_inner()
            .chat_id;
        // user_id 0: the token's user.
        let send = |user_id: u64, content: &str| api::SendMessageRequest {
            user_id,
            chat_id: room,
            content: content.into(),
            sent_time: None,
            write_id: None,
        };
        chat.send_message(bearer(send(0, "hello"), &a.token))
            .await
            .unwrap();
        let e = chat
            .send_message(bearer(send(ann_id, "as ann"), &b.token))
            .await
            .unwrap_err();
        assert_eq!(e.code(), Code::PermissionDenied, "{e:?}");
        let read = |user_id: u64| api::GetMessagesRequest {
            user_id,
            messages_after: None,
            consistency: api::Consistency::Linearizable as i32,
            limit: 0,
        };
        let e = chat
            .get_messages(bearer(read(ann_id), &b.token))
            .await
            .unwrap_err();
        assert_eq!(e.code(), Code::PermissionDenied, "{e:?}");
        // Bob's own messages: none of Ann's chat.
        let mine = chat
            .get_messages(bearer(read(0), &b.token))
            .await
            .unwrap()
            .into_inner();
        assert!(mine.messages.is_empty(), "{mine:?}");
        let hers = chat
            .get_messages(bearer(read(0), &a.token))
            .await
            .unwrap()
            .into_inner();
        assert_eq!(hers.messages.len(), 1);
        let users = |t: &str| {
            bearer(
                api::GetChatUsersRequest {
                    chat_id: room,
                    consistency: 0,
                },
                t,
            )
        };
        let e = chat.get_chat_users(users(&b.token)).await.unwrap_err();
        assert_eq!(e.code(), Code::PermissionDenied, "{e:?}");
        let members = chat
            .get_chat_users(users(&a.token))
            .await
            .unwrap()
            .into_inner();
        assert_eq!(members.users.len(), 1);
        // Bob may join as himself, not add Ann elsewhere; then he reads the chat.
        let join = |user_id: u64| api::JoinChatRequest {
            user_id,
            chat_id: room,
            write_id: None,
        };
        let e = chat
            .join_chat(bearer(join(ann_id), &b.token))
            .await
            .unwrap_err();
        assert_eq!(e.code(), Code::PermissionDenied, "{e:?}");
        chat.join_chat(bearer(join(bob_id), &b.token))
            .await
            .unwrap();
        let members = chat
            .get_chat_users(users(&b.token))
            .await
            .unwrap()
            .into_inner();
        assert_eq!(members.users.len(), 2);
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn tokens_decide_who_a_call_acts_as() {
    let c = Cluster::start(false, true, &[]).await;
    tokens_and_users(&c).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn tls_and_tokens_together() {
    let c = Cluster::start(true, true, &[]).await;
    tokens_and_users(&c).await;
}

/// Without `--require-auth` the API stays open (for benchmarking the bare cluster); a user
/// may still be given a password, and a replica without a token key says login is
/// unavailable (FAILED_PRECONDITION).
#[tokio::test(flavor = "multi_thread")]
async fn without_auth_the_api_is_open() {
    let c = Cluster::start(false, false, &[]).await;
    let mut chat = c.chat(1).await;
    let ann = chat
        .create_user(create("ann", ""))
        .await
        .unwrap()
        .into_inner()
        .user_id;
    chat.create_chat(api::CreateChatRequest {
        user_id: ann,
        chat_name: "open".into(),
        write_id: None,
    })
    .await
    .unwrap();
    // No token key: login is unavailable, and says so.
    chat.create_user(create("bob", "pw")).await.unwrap();
    let e = chat
        .login(api::LoginRequest {
            username: "bob".into(),
            password: "pw".into(),
        })
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::FailedPrecondition, "{e:?}");
}

/// `telegraft node` on a non-loopback address: refused without TLS, unless `--insecure`.
#[tokio::test(flavor = "multi_thread")]
async fn a_node_refuses_a_non_loopback_listen_without_tls() {
    let dir = tempfile::tempdir().unwrap();
    let port = free_addr().rsplit_once(':').unwrap().1.to_string();
    let node = |extra: &[&str]| {
        let mut cmd = Command::new(exe());
        cmd.args(["node", "--id", "1", "--listen"])
            .arg(format!("0.0.0.0:{port}"))
            .args(["--peers", &format!("1=127.0.0.1:{port}"), "--data-dir"])
            .arg(dir.path().join("data"))
            .args(extra);
        cmd
    };
    let out = node(&[]).output().unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("without TLS") && err.contains("--insecure"),
        "{err}"
    );

    // With --insecure it serves (stopped at once).
    let mut child = node(&["--insecure"])
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let addr = format!("127.0.0.1:{port}");
    let up = admin::wait_for_leader(&[addr], Duration::from_secs(10)).await;
    child.kill().unwrap();
    child.wait().unwrap();
    up.expect("an --insecure node serves");

    // With TLS it is allowed too (the certificate is checked first: a missing one fails).
    let certs_dir = dir.path().join("certs");
    certs(&certs_dir, &[]);
    let out = node(&["--tls-dir", "/nonexistent"]).output().unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("ca.pem"));
}

/// `telegraft chat login` keeps the token in the user's config directory; the other chat
/// commands send it, and TELEGRAFT_TOKEN overrides it.
#[tokio::test(flavor = "multi_thread")]
async fn the_cli_logs_in_and_sends_its_token() {
    let c = Cluster::start(true, true, &[]).await;
    let home = c.dir.path().join("home");
    let certs_dir = c.certs.clone().unwrap();
    let cli = |args: &[&str], token: Option<&str>| {
        let mut cmd = Command::new(exe());
        cmd.env("HOME", &home)
            .env("XDG_CONFIG_HOME", home.join(".config"))
            .env_remove("TELEGRAFT_TOKEN")
            .env_remove("TELEGRAFT_PASSWORD")
            .args(["chat", "--endpoint", c.addr(1), "--tls-dir"])
            .arg(&certs_dir)
            .args(args);
        if let Some(t) = token {
            cmd.env("TELEGRAFT_TOKEN", t);
        }
        let out = cmd.output().unwrap();
        (
            out.status.success(),
            String::from_utf8_lossy(&out.stdout).to_string()
                + &String::from_utf8_lossy(&out.stderr),
        )
    };
    let (ok, out) = cli(&["create-user", "ann", "--password", "s3cret"], None);
    assert!(ok, "{out}");
    let (ok, out) = cli(&["login", "ann", "--password", "wrong"], None);
    assert!(!ok && out.contains("Unauthenticated"), "{out}");
    let (ok, out) = cli(&["create-chat", "0", "general"], None);
    assert!(!ok && out.contains("Unauthenticated"), "{out}");
    let (ok, out) = cli(&["login", "ann", "--password", "s3cret"], None);
    assert!(ok, "{out}");
    let file = home.join(".config/telegraft/token");
    let token = std::fs::read_to_string(&file).unwrap();
    assert!(token.starts_with("tg1."), "{token}");
    use std::os::unix::fs::PermissionsExt;
    assert_eq!(
        std::fs::metadata(&file).unwrap().permissions().mode() & 0o777,
        0o600
    );
    let (ok, out) = cli(&["create-chat", "0", "general"], None);
    assert!(ok && out.contains("chat_id"), "{out}");
    // TELEGRAFT_TOKEN wins over the stored token.
    let (ok, out) = cli(&["create-chat", "0", "other"], Some("tg1.bad.bad.bad"));
    assert!(!ok && out.contains("Unauthenticated"), "{out}");
    // And the status command speaks TLS.
    let status = Command::new(exe())
        .args(["status", "--endpoints", c.addr(1), "--tls-dir"])
        .arg(&certs_dir)
        .output()
        .unwrap();
    assert!(
        status.status.success(),
        "{}",
        String::from_utf8_lossy(&status.stderr)
    );
}
