//! `telegraft`: run a replica, a local cluster, ask for status, or chat by hand.

use std::collections::BTreeMap;
use std::future::Future;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::{Context, Result, anyhow, bail};
use clap::{Parser, Subcommand};
use telegraft::launcher::LocalCluster;
use telegraft::proto::chat::{self as api, chat_client::ChatClient};
use telegraft::proto::text::escape_hidden;
use telegraft::proto::{MAX_CHAT_REQUEST_BYTES, MAX_CHAT_RESPONSE_BYTES, time};
use telegraft::{NodeConfig, admin, run};
use tokio::sync::watch;

#[derive(Parser)]
#[command(version, about = "Telegraft: a Raft-replicated chat cluster")]
struct Cli {
    #[command(subcommand)]
    command: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Run one replica.
    Node {
        /// This node's id (a member of --peers).
        #[arg(long, required_unless_present = "id_from_hostname")]
        id: Option<u64>,
        /// Take the id from this host's name, `<name>-<ordinal>`: the ordinal plus one
        /// (`telegraft-0` is node 1), as a StatefulSet or the compose file names replicas.
        #[arg(long, conflicts_with = "id")]
        id_from_hostname: bool,
        /// Address to serve chat, Raft and admin gRPC on.
        #[arg(long, default_value = "127.0.0.1:7001")]
        listen: SocketAddr,
        /// Every member, this node included: `1=127.0.0.1:7001,2=127.0.0.1:7002,...`.
        #[arg(long)]
        peers: String,
        /// Where the log, hard state, snapshots and SQLite database live.
        #[arg(long)]
        data_dir: PathBuf,
        /// Snapshot and compact the log once N entries were applied since the last
        /// snapshot (0: no entry trigger).
        #[arg(long, default_value_t = 10_000)]
        snapshot_every: u64,
        /// ... or once this many bytes of commands were applied since the last snapshot,
        /// whichever comes first (0: no byte trigger; both 0: never snapshot).
        #[arg(long, default_value_t = 16 << 20, value_name = "BYTES")]
        snapshot_bytes: u64,
        /// Accept Admin.SetPartition, which cuts this node off from chosen peers (for fault
        /// injection in tests and benchmarks; never on a node others can reach).
        #[arg(long)]
        enable_fault_injection: bool,
        /// Client requests (writes and reads, forwarded ones included) in progress at once;
        /// one more is answered RESOURCE_EXHAUSTED without being queued.
        #[arg(long, default_value_t = 4096, value_parser = clap::value_parser!(u32).range(1..))]
        max_inflight: u32,
        /// Serve Prometheus metrics at http://ADDR/metrics (off unless given; the address is
        /// bound as given, so 0.0.0.0:PORT exposes them to the network).
        #[arg(long, value_name = "ADDR")]
        metrics_listen: Option<SocketAddr>,
        /// Group commit and batched replication (`on`), or one entry per fdatasync and one
        /// entry per append message to each follower (`off`), for experiments that measure
        /// what batching buys.
        #[arg(long, default_value = "on", value_parser = ["on", "off"])]
        batching: String,
        /// Followers serve linearizable reads themselves, with a read index from the leader
        /// (`on`), or forward each one to the leader (`off`).
        #[arg(long, default_value = "on", value_parser = ["on", "off"])]
        follower_reads: String,
        /// Time between a leader's heartbeats (a multiple of the 10 ms tick).
        #[arg(long, default_value = "50ms", value_parser = humantime::parse_duration)]
        heartbeat: Duration,
        /// The shortest election timeout; each one is drawn between it and twice it (a
        /// multiple of the 10 ms tick, above --heartbeat).
        #[arg(long, default_value = "150ms", value_parser = humantime::parse_duration)]
        election_timeout: Duration,
        #[command(flatten)]
        security: Box<NodeSecurity>,
    },
    /// Create a cluster CA and certificates for N nodes, a client and an admin (and the
    /// token key, auth.key) in DIR, for `telegraft node --tls-dir DIR`. Run again on the same
    /// DIR, it keeps the CA and auth.key and issues the certificates again.
    Certs {
        #[arg(long, value_name = "DIR")]
        out: PathBuf,
        #[arg(long, default_value_t = 3)]
        nodes: u64,
        /// The cluster the certificates are for (a-z, 0-9, '-'); nodes of another cluster
        /// are refused.
        #[arg(long, default_value = telegraft::security::DEFAULT_CLUSTER_ID)]
        cluster_id: String,
        /// More host names and IP addresses for the node certificates, beside localhost and
        /// 127.0.0.1 (comma-separated): what clients and peers dial.
        #[arg(long, value_delimiter = ',')]
        hosts: Vec<String>,
        /// How long the node, client and admin certificates are valid.
        #[arg(long, default_value_t = 365)]
        valid_days: u32,
    },
    /// Start N replicas on loopback and stop them all on Ctrl-C or SIGTERM.
    Cluster {
        #[arg(long, default_value_t = 3)]
        replicas: u64,
        /// Node i listens on base-port + i - 1.
        #[arg(long, default_value_t = 7001)]
        base_port: u16,
        /// Node i keeps its data in DATA_DIR/node-i.
        #[arg(long, default_value = "data")]
        data_dir: PathBuf,
        /// Serve Prometheus metrics from every node, each on a free loopback port (printed).
        #[arg(long)]
        metrics: bool,
    },
    /// Print each node's role, term, leader and progress.
    Status {
        /// Comma-separated node addresses.
        #[arg(long, default_value = "127.0.0.1:7001,127.0.0.1:7002,127.0.0.1:7003")]
        endpoints: String,
        /// Speak TLS, trusting DIR/ca.pem and presenting DIR/client.pem if present.
        #[arg(long, value_name = "DIR")]
        tls_dir: Option<PathBuf>,
        /// A JSON array instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// A small client for each chat RPC.
    Chat {
        /// The replica to talk to (any replica works).
        #[arg(long, default_value = "127.0.0.1:7001")]
        endpoint: String,
        /// Speak TLS, trusting DIR/ca.pem and presenting DIR/client.pem if present.
        #[arg(long, value_name = "DIR")]
        tls_dir: Option<PathBuf>,
        #[command(subcommand)]
        rpc: ChatCmd,
    },
}

/// A node's security switches (`cluster/README.md`, "Security"). TLS and authentication are
/// independent, so that each one's cost can be measured alone.
#[derive(clap::Args)]
struct NodeSecurity {
    /// Serve TLS with DIR/node-<id>.pem and .key, trust DIR/ca.pem, and accept Raft calls only
    /// from node certificates of the cluster this node's certificate names.
    #[arg(long, value_name = "DIR")]
    tls_dir: Option<PathBuf>,
    /// The cluster id sent with every peer message (without --tls-dir; with it, the one the
    /// node certificate names, which this must match if given).
    #[arg(long)]
    cluster_id: Option<String>,
    /// Serve plaintext on a non-loopback --listen address anyway (refused otherwise).
    #[arg(long)]
    insecure: bool,
    /// Chat calls other than CreateUser and Login need a token from Login, and act only as
    /// its user; CreateUser needs a password.
    #[arg(long)]
    require_auth: bool,
    /// The token key file (hex keys, one per line: the first signs, all verify). Default:
    /// DIR/auth.key with --tls-dir, when it exists.
    #[arg(long, value_name = "FILE")]
    auth_key: Option<PathBuf>,
    /// How long a token from Login is good for.
    #[arg(long, default_value = "1h", value_parser = humantime::parse_duration)]
    token_ttl: Duration,
}

impl NodeSecurity {
    /// Applies the switches to `config` (its id and listen address already set).
    fn apply(self, config: &mut NodeConfig) -> Result<()> {
        use telegraft::security::{tls::NodeTls, token::Keyring};
        if let Some(dir) = &self.tls_dir {
            let tls = NodeTls::load(dir, config.id).context("--tls-dir")?;
            if let Some(id) = &self.cluster_id
                && *id != tls.cluster_id
            {
                bail!(
                    "--cluster-id {id}: the node certificate in {} is of cluster '{}'",
                    dir.display(),
                    tls.cluster_id
                );
            }
            config.cluster_id = tls.cluster_id.clone();
            config.tls = Some(tls);
        } else if let Some(id) = self.cluster_id {
            config.cluster_id = id;
        }
        let key = self.auth_key.or_else(|| {
            self.tls_dir
                .as_ref()
                .map(|d| d.join("auth.key"))
                .filter(|k| k.exists())
        });
        if let Some(key) = key {
            config.keyring = Some(Keyring::load(&key).context("--auth-key")?);
        }
        config.require_auth = self.require_auth;
        config.token_ttl = self.token_ttl;
        config.insecure = self.insecure;
        telegraft::security::check_listen(config.listen, config.tls.is_some(), self.insecure)?;
        Ok(())
    }
}

#[derive(Subcommand)]
enum ChatCmd {
    CreateUser {
        username: String,
        /// The user's password (required by a cluster that requires authentication);
        /// TELEGRAFT_PASSWORD also gives it.
        #[arg(long, env = "TELEGRAFT_PASSWORD", hide_env_values = true)]
        password: Option<String>,
    },
    /// Log in and keep the token in this user's config directory
    /// (`~/.config/telegraft/token`), where the other commands find it; TELEGRAFT_TOKEN
    /// overrides it.
    Login {
        username: String,
        /// TELEGRAFT_PASSWORD also gives it; without either, it is read from stdin.
        #[arg(long, env = "TELEGRAFT_PASSWORD", hide_env_values = true)]
        password: Option<String>,
    },
    CreateChat {
        user_id: u64,
        chat_name: String,
    },
    JoinChat {
        user_id: u64,
        chat_id: u64,
    },
    SendMessage {
        user_id: u64,
        chat_id: u64,
        content: String,
    },
    /// Every message of the user's chats, in commit order, page by page.
    GetMessages {
        user_id: u64,
        /// Only messages committed after this many microseconds since the Unix epoch (a
        /// message's `committed_at`, printed after "at").
        #[arg(long)]
        after_us: Option<i64>,
        /// Messages per request (0: the server's default, 1,000; at most 10,000).
        #[arg(long, default_value_t = 0)]
        page_size: u32,
        /// Read this replica's own state instead of a linearizable read.
        #[arg(long)]
        local: bool,
    },
    GetChatUsers {
        chat_id: u64,
        #[arg(long)]
        local: bool,
    },
}

fn parse_peers(s: &str) -> Result<BTreeMap<u64, String>> {
    let mut peers = BTreeMap::new();
    for part in s.split(',').filter(|p| !p.is_empty()) {
        let (id, addr) = part
            .split_once('=')
            .ok_or_else(|| anyhow!("--peers: '{part}' is not ID=HOST:PORT"))?;
        let id: u64 = id
            .trim()
            .parse()
            .with_context(|| format!("--peers: bad node id '{id}'"))?;
        if id == 0 {
            bail!("--peers: node ids start at 1");
        }
        peers.insert(id, addr.trim().to_string());
    }
    if peers.is_empty() {
        bail!("--peers is empty");
    }
    Ok(peers)
}

/// Completes on Ctrl-C or SIGTERM. The handlers are installed by a task spawned here, so
/// they are in place while the caller is still starting up rather than when the returned
/// future is first polled.
fn shutdown_signal() -> impl Future<Output = ()> {
    let (tx, mut rx) = watch::channel(false);
    tokio::spawn(async move {
        let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
            .expect("signal handler");
        tokio::select! {
            _ = tokio::signal::ctrl_c() => {}
            _ = term.recv() => {}
        }
        let _ = tx.send(true);
    });
    async move {
        let _ = rx.wait_for(|stop| *stop).await;
    }
}

#[tokio::main]
async fn main() {
    if let Err(e) = real_main().await {
        eprintln!("telegraft: {e:#}");
        std::process::exit(1);
    }
}

async fn real_main() -> Result<()> {
    // A span is printed when it closes (with its fields and timings): per-request spans are
    // at debug level, so `RUST_LOG=telegraft=debug` follows each write through the actors,
    // and the default (info) prints nothing per request.
    tracing_subscriber::fmt()
        .with_span_events(tracing_subscriber::fmt::format::FmtSpan::CLOSE)
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()),
        )
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
    match Cli::parse().command {
        Cmd::Node {
            id,
            id_from_hostname: _,
            listen,
            peers,
            data_dir,
            snapshot_every,
            snapshot_bytes,
            enable_fault_injection,
            max_inflight,
            metrics_listen,
            batching,
            follower_reads,
            heartbeat,
            election_timeout,
            security,
        } => {
            let id = match id {
                Some(id) => id,
                None => {
                    let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
                        .or_else(|_| std::env::var("HOSTNAME"))
                        .context("--id-from-hostname: reading this host's name")?;
                    telegraft::id_from_hostname(&host)
                        .map_err(|e| anyhow!("--id-from-hostname: {e}"))?
                }
            };
            let peers = parse_peers(&peers)?;
            let mut config = NodeConfig::new(id, listen, peers, data_dir);
            config.snapshot_every = snapshot_every;
            config.snapshot_bytes = snapshot_bytes;
            config.fault_injection = enable_fault_injection;
            config.max_inflight = max_inflight as usize;
            config.metrics_listen = metrics_listen;
            config.set_batching(batching == "on");
            config.options.follower_reads = follower_reads == "on";
            config
                .set_timing(heartbeat, election_timeout)
                .map_err(|e| anyhow::anyhow!("{e}"))?;
            (*security).apply(&mut config)?;
            run(config, shutdown_signal())
                .await
                .context("replica failed")?;
        }
        Cmd::Cluster {
            replicas,
            base_port,
            data_dir,
            metrics,
        } => cluster(replicas, base_port, data_dir, metrics).await?,
        Cmd::Certs {
            out,
            nodes,
            cluster_id,
            hosts,
            valid_days,
        } => certs(out, nodes, cluster_id, hosts, valid_days)?,
        Cmd::Status {
            endpoints,
            json,
            tls_dir,
        } => {
            let endpoints: Vec<String> = endpoints
                .split(',')
                .filter(|e| !e.is_empty())
                .map(str::to_string)
                .collect();
            use_tls(tls_dir.as_deref(), &endpoints)?;
            status(&endpoints, json).await?
        }
        Cmd::Chat {
            endpoint,
            tls_dir,
            rpc,
        } => {
            use_tls(tls_dir.as_deref(), std::slice::from_ref(&endpoint))?;
            chat(&endpoint, rpc).await?
        }
    }
    Ok(())
}

async fn cluster(replicas: u64, base_port: u16, data_dir: PathBuf, metrics: bool) -> Result<()> {
    if replicas == 0 {
        bail!("--replicas must be at least 1");
    }
    let exe = std::env::current_exe().context("finding the telegraft binary")?;
    let mut nodes = if metrics {
        let addrs = (1..=replicas)
            .map(|i| (i, format!("127.0.0.1:{}", u64::from(base_port) + i - 1)))
            .collect();
        LocalCluster::start_on_with_metrics(&exe, addrs, &data_dir, &[])
    } else {
        LocalCluster::start(&exe, replicas, base_port, &data_dir, &[])
    }
    .context("starting the nodes")?;
    for (id, addr) in &nodes.addrs {
        let (pid, dir) = (nodes.pid(*id).unwrap_or(0), nodes.node_dir(*id));
        let metrics = nodes
            .metrics_addr(*id)
            .map(|m| format!(", metrics http://{m}/metrics"))
            .unwrap_or_default();
        println!(
            "node {id}: {addr} (pid {pid}, data {}{metrics})",
            dir.display()
        );
    }
    let endpoints = nodes.addrs.values().cloned().collect::<Vec<_>>().join(",");
    println!(
        "cluster of {replicas} running; Ctrl-C stops it. Try: telegraft status --endpoints {endpoints}"
    );
    shutdown_signal().await;
    tokio::task::spawn_blocking(move || nodes.stop(Duration::from_secs(5))).await?;
    println!("cluster stopped");
    Ok(())
}

fn certs(
    out: PathBuf,
    nodes: u64,
    cluster_id: String,
    hosts: Vec<String>,
    valid_days: u32,
) -> Result<()> {
    use telegraft::security::certs::{CertsRequest, issue};
    let hosts = hosts
        .into_iter()
        .map(|h| h.trim().to_string())
        .filter(|h| !h.is_empty())
        .collect();
    let issued = issue(&CertsRequest {
        out: out.clone(),
        nodes,
        cluster_id: cluster_id.clone(),
        hosts,
        valid_days,
    })?;
    if issued.reused_ca {
        println!("kept the CA in {}", out.display());
    }
    if issued.reused_auth_key {
        println!("kept the token key {}", out.join("auth.key").display());
    }
    for f in &issued.files {
        println!("wrote {}", f.display());
    }
    println!(
        "cluster '{cluster_id}': start node N with --tls-dir {} (keep ca.key elsewhere in \
         production: nodes need only ca.pem, their own node-N files and auth.key)",
        out.display()
    );
    Ok(())
}

/// Registers `endpoints` as TLS endpoints when `--tls-dir` is given: trust `ca.pem`, and
/// present the admin certificate if the directory holds one, else the client's.
fn use_tls(dir: Option<&std::path::Path>, endpoints: &[String]) -> Result<()> {
    let Some(dir) = dir else { return Ok(()) };
    let tls = telegraft::security::tls::operator_config(dir).context("--tls-dir")?;
    admin::use_tls_for(endpoints, &tls);
    Ok(())
}

async fn status(endpoints: &[String], json: bool) -> Result<()> {
    let mut rows = Vec::new();
    for ep in endpoints {
        rows.push(admin::status(ep).await?);
    }
    if json {
        let arr: Vec<serde_json::Value> = rows
            .iter()
            .map(|s| {
                serde_json::json!({
                    "node_id": s.node_id,
                    "role": s.role_name(),
                    "term": s.term,
                    "leader_id": if s.leader_id == 0 { serde_json::Value::Null } else { s.leader_id.into() },
                    "commit_index": s.commit_index,
                    "applied_index": s.applied_index,
                    "last_log_index": s.last_log_index,
                    "pid": s.pid,
                })
            })
            .collect();
        println!("{}", serde_json::to_string_pretty(&arr)?);
    } else {
        println!(
            "{:>4} {:<9} {:>6} {:>6} {:>8} {:>8} {:>8} {:>8}",
            "node", "role", "term", "leader", "commit", "applied", "last", "pid"
        );
        for s in rows {
            println!(
                "{:>4} {:<9} {:>6} {:>6} {:>8} {:>8} {:>8} {:>8}",
                s.node_id,
                s.role_name(),
                s.term,
                s.leader_id,
                s.commit_index,
                s.applied_index,
                s.last_log_index,
                s.pid
            );
        }
    }
    Ok(())
}

/// Where `telegraft chat login` keeps the token.
fn token_file() -> Option<PathBuf> {
    dirs::config_dir().map(|d| d.join("telegraft").join("token"))
}

/// The token to send: TELEGRAFT_TOKEN, else the one `telegraft chat login` stored.
fn stored_token() -> Option<String> {
    if let Ok(t) = std::env::var("TELEGRAFT_TOKEN")
        && !t.trim().is_empty()
    {
        return Some(t.trim().to_string());
    }
    let t = std::fs::read_to_string(token_file()?).ok()?;
    Some(t.trim().to_string()).filter(|t| !t.is_empty())
}

/// Keeps a token where [`stored_token`] finds it, readable by this user only.
fn store_token(token: &str) -> Result<PathBuf> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let path = token_file().ok_or_else(|| anyhow!("no config directory (set HOME)"))?;
    let dir = path.parent().expect("a parent");
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(&path)
        .with_context(|| format!("writing {}", path.display()))?;
    writeln!(f, "{token}")?;
    Ok(path)
}

/// A password from the flag or TELEGRAFT_PASSWORD, else one line of stdin.
fn password_or_stdin(password: Option<String>) -> Result<String> {
    if let Some(p) = password {
        return Ok(p);
    }
    eprint!("password: ");
    let mut line = String::new();
    std::io::stdin().read_line(&mut line)?;
    Ok(line.trim_end_matches(['\n', '\r']).to_string())
}

/// Adds the bearer token, if there is one, to every call.
#[derive(Clone)]
struct Bearer(Option<tonic::metadata::AsciiMetadataValue>);

impl tonic::service::Interceptor for Bearer {
    fn call(&mut self, mut req: tonic::Request<()>) -> Result<tonic::Request<()>, tonic::Status> {
        if let Some(v) = &self.0 {
            req.metadata_mut().insert("authorization", v.clone());
        }
        Ok(req)
    }
}

async fn chat(endpoint: &str, rpc: ChatCmd) -> Result<()> {
    let channel = admin::endpoint_for(endpoint)
        .with_context(|| format!("bad endpoint {endpoint}"))?
        .connect()
        .await
        .with_context(|| format!("connecting to {endpoint}"))?;
    let bearer = match stored_token() {
        Some(t) => Some(
            format!("Bearer {t}")
                .parse()
                .map_err(|_| anyhow!("the stored token is not ASCII"))?,
        ),
        None => None,
    };
    let mut c = ChatClient::with_interceptor(channel, Bearer(bearer))
        .max_decoding_message_size(MAX_CHAT_RESPONSE_BYTES)
        .max_encoding_message_size(MAX_CHAT_REQUEST_BYTES);
    let consistency = |local: bool| {
        (if local {
            api::Consistency::Local
        } else {
            api::Consistency::Linearizable
        }) as i32
    };
    // Everything a server sends back is printed through `escape_hidden`: a name or message
    // can never move the cursor, recolour the terminal or reorder the text around it.
    let fail = |s: tonic::Status| anyhow!("{:?}: {}", s.code(), escape_hidden(s.message()));
    match rpc {
        ChatCmd::CreateUser { username, password } => {
            let r = c
                .create_user(api::CreateUserRequest {
                    username,
                    write_id: None,
                    password: password.unwrap_or_default(),
                })
                .await
                .map_err(fail)?;
            println!("user_id {}", r.into_inner().user_id);
        }
        ChatCmd::Login { username, password } => {
            let password = password_or_stdin(password)?;
            let r = c
                .login(api::LoginRequest { username, password })
                .await
                .map_err(fail)?
                .into_inner();
            let path = store_token(&r.token)?;
            let expires = r.expires_at.map_or(0, |t| t.seconds);
            println!(
                "user_id {} logged in; token kept in {} (expires at {expires}, Unix seconds)",
                r.user_id,
                path.display()
            );
        }
        ChatCmd::CreateChat { user_id, chat_name } => {
            let r = c
                .create_chat(api::CreateChatRequest {
                    user_id,
                    chat_name,
                    write_id: None,
                })
                .await
                .map_err(fail)?;
            println!("chat_id {}", r.into_inner().chat_id);
        }
        ChatCmd::JoinChat { user_id, chat_id } => {
            c.join_chat(api::JoinChatRequest {
                user_id,
                chat_id,
                write_id: None,
            })
            .await
            .map_err(fail)?;
            println!("joined");
        }
        ChatCmd::SendMessage {
            user_id,
            chat_id,
            content,
        } => {
            let req = api::SendMessageRequest {
                user_id,
                chat_id,
                content,
                sent_time: Some(time::now()),
                write_id: None,
            };
            let r = c.send_message(req).await.map_err(fail)?;
            println!("message_id {}", r.into_inner().message_id);
        }
        ChatCmd::GetMessages {
            user_id,
            after_us,
            page_size,
            local,
        } => {
            // Page through everything: ask again after the last message's committed_at
            // while the server says more follow.
            let mut after = after_us.map(time::from_micros);
            loop {
                let req = api::GetMessagesRequest {
                    user_id,
                    messages_after: after,
                    consistency: consistency(local),
                    limit: page_size,
                };
                let page = c.get_messages(req).await.map_err(fail)?.into_inner();
                for m in &page.messages {
                    let at = m.committed_at.as_ref().map_or(0, time::micros);
                    let sent = m.sent_time.as_ref().map_or(String::new(), |t| {
                        format!(" (sent {})", seconds(time::micros(t)))
                    });
                    println!(
                        "[{}] chat {} user {} at {}{sent}: {}",
                        m.message_id,
                        m.chat_id,
                        m.user_id,
                        seconds(at),
                        escape_hidden(&m.content)
                    );
                }
                match page.messages.last() {
                    Some(last) if page.has_more => after = last.committed_at,
                    _ => break,
                }
            }
        }
        ChatCmd::GetChatUsers { chat_id, local } => {
            let req = api::GetChatUsersRequest {
                chat_id,
                consistency: consistency(local),
            };
            for u in c
                .get_chat_users(req)
                .await
                .map_err(fail)?
                .into_inner()
                .users
            {
                println!("{} {}", u.user_id, escape_hidden(&u.username));
            }
        }
    }
    Ok(())
}

/// Microseconds since the epoch as `seconds.micros`.
fn seconds(us: i64) -> String {
    format!(
        "{}.{:06}",
        us.div_euclid(1_000_000),
        us.rem_euclid(1_000_000)
    )
}
