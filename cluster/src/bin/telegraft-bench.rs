//! `telegraft-bench`: micro-benchmarks of the replica's building blocks, on this machine.
//!
//! - `fsync`: how many small append + fdatasync rounds the disk does per second: the ceiling
//!   of a log that syncs once per write.
//! - `log --writers N`: appends per second through the real storage writer (group commit)
//!   with N concurrent writers, each waiting for its own entry to be durable.
//! - `cluster --replicas R --clients C`: SendMessage throughput and latency through a real
//!   local cluster of `telegraft node` processes, C clients each with one request in flight.
//!   With `--metrics`, every replica serves `/metrics` and is scraped once a second, as a
//!   monitored cluster would be: run it with and without to see what metrics cost.
//! - `overload --rate N`: SendMessage offered at N calls a second whatever the answers (an
//!   open loop), to the leader of a local cluster; every second, each replica's RSS and the
//!   calls admitted and refused; at the end, the latency of the admitted calls, the count of
//!   RESOURCE_EXHAUSTED, and how far each replica's RSS moved after the warm-up. At most
//!   `--outstanding` calls are open in the generator (default: what the replicas accept on
//!   `--connections`); a scheduled call beyond that is skipped and counted, not queued, so
//!   latency from the intended send is not the generator's own queue.
//! - `snapshot --mb M`: a follower is frozen (SIGSTOP) while the others fill the chat
//!   database to about M MB with large messages and compact their logs; it is then let go
//!   and catches up by a streamed snapshot. Reports the leader's and the follower's RSS
//!   before, and their peak while the snapshot is sent, received and installed.
//!
//! Figures go in cluster/README.md with the command that produced them. These are
//! benchmarks, not tests: nothing here asserts a timing.

use std::collections::BTreeMap;
use std::io::Write as _;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use clap::{Parser, Subcommand};
use hdrhistogram::Histogram;
use telegraft::launcher::LocalCluster;
use telegraft::proto::chat::{self as api, chat_client::ChatClient};
use telegraft::raft::Entry;
use telegraft::{Completion, RaftStorage, StorageWriter, admin};
use tokio::sync::Mutex;
use tonic::transport::Channel;

#[derive(Parser)]
#[command(about = "Micro-benchmarks of Telegraft's storage and cluster")]
struct Cli {
    /// Directory for benchmark data (default: a fresh temporary directory).
    #[arg(long, global = true)]
    dir: Option<PathBuf>,
    /// Seconds to measure each configuration.
    #[arg(long, global = true, default_value_t = 5)]
    seconds: u64,
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Small append + fdatasync rounds per second.
    Fsync,
    /// Log appends per second with group commit, at each writer count.
    Log {
        #[arg(long, value_delimiter = ',', default_value = "1,16,256")]
        writers: Vec<usize>,
        /// Bytes per entry.
        #[arg(long, default_value_t = 128)]
        entry_bytes: usize,
    },
    /// SendMessage throughput and latency through a local cluster, at each client count.
    Cluster {
        #[arg(long, default_value_t = 3)]
        replicas: u64,
        #[arg(long, value_delimiter = ',', default_value = "1,64")]
        clients: Vec<usize>,
        /// Message content bytes.
        #[arg(long, default_value_t = 128)]
        message_bytes: usize,
        #[arg(long, default_value_t = 27100)]
        base_port: u16,
        /// Turn on `--metrics-listen` on every replica and scrape each once a second.
        #[arg(long)]
        metrics: bool,
    },
    /// SendMessage offered at a fixed rate (open loop) beyond what the cluster keeps: RSS of
    /// each replica per second, p99 of the admitted calls, RESOURCE_EXHAUSTED count.
    Overload {
        #[arg(long, default_value_t = 3)]
        replicas: u64,
        /// Calls offered per second, answered or not.
        #[arg(long)]
        rate: u64,
        /// gRPC connections the calls are spread over.
        #[arg(long, default_value_t = 16)]
        connections: usize,
        /// Message content bytes.
        #[arg(long, default_value_t = 128)]
        message_bytes: usize,
        /// `--max-inflight` for every replica (default: the replica's own default).
        #[arg(long)]
        max_inflight: Option<usize>,
        /// Calls outstanding in the generator before it skips a scheduled call and counts it
        /// (default: `--connections` x 1,024, what the replicas accept on that many connections,
        /// so no call waits inside the client and latency is the server's).
        #[arg(long)]
        outstanding: Option<u64>,
        /// Seconds of warm-up: RSS afterwards is compared with RSS at this second.
        #[arg(long, default_value_t = 10)]
        warmup: u64,
        #[arg(long, default_value_t = 27200)]
        base_port: u16,
    },
    /// A lagging follower catches up by snapshot from a chat database of about `--mb` MB:
    /// RSS of the leader and of the follower before and during.
    Snapshot {
        /// Size to fill the chat database to, in MB of message content.
        #[arg(long, default_value_t = 200)]
        mb: u64,
        /// Message content bytes (at most 64 KiB).
        #[arg(long, default_value_t = 60_000)]
        message_bytes: usize,
        /// `--snapshot-every` for every replica.
        #[arg(long, default_value_t = 500)]
        snapshot_every: u64,
        /// Concurrent SendMessage calls while filling.
        #[arg(long, default_value_t = 16)]
        clients: usize,
        #[arg(long, default_value_t = 27300)]
        base_port: u16,
    },
}

fn main() -> Result<()> {
    let cli = Cli::parse();
    let tmp = tempfile_dir(&cli.dir)?;
    let secs = Duration::from_secs(cli.seconds);
    match cli.cmd {
        Cmd::Fsync => fsync(&tmp, secs),
        Cmd::Log {
            writers,
            entry_bytes,
        } => {
            for w in writers {
                log(&tmp.join(format!("log-{w}")), w, entry_bytes, secs)?;
            }
            Ok(())
        }
        Cmd::Cluster {
            replicas,
            clients,
            message_bytes,
            base_port,
            metrics,
        } => {
            let rt = tokio::runtime::Runtime::new()?;
            rt.block_on(cluster(
                &tmp,
                replicas,
                &clients,
                message_bytes,
                base_port,
                metrics,
                secs,
            ))
        }
        Cmd::Overload {
            replicas,
            rate,
            connections,
            message_bytes,
            max_inflight,
            outstanding,
            warmup,
            base_port,
        } => {
            let rt = tokio::runtime::Runtime::new()?;
            let load = Overload {
                replicas,
                rate,
                connections: connections.max(1),
                message_bytes,
                max_inflight,
                outstanding: outstanding
                    .unwrap_or(connections.max(1) as u64 * CLIENT_STREAMS_PER_CONNECTION),
                warmup: Duration::from_secs(warmup),
                base_port,
                secs,
            };
            rt.block_on(overload(&tmp, load))
        }
        Cmd::Snapshot {
            mb,
            message_bytes,
            snapshot_every,
            clients,
            base_port,
        } => {
            let rt = tokio::runtime::Runtime::new()?;
            rt.block_on(snapshot(
                &tmp,
                mb << 20,
                message_bytes,
                snapshot_every,
                clients.max(1),
                base_port,
            ))
        }
    }
}

fn tempfile_dir(dir: &Option<PathBuf>) -> Result<PathBuf> {
    let d = match dir {
        Some(d) => d.clone(),
        None => std::env::temp_dir().join(format!("telegraft-bench-{}", std::process::id())),
    };
    if d.exists() {
        std::fs::remove_dir_all(&d).with_context(|| format!("clearing {}", d.display()))?;
    }
    std::fs::create_dir_all(&d)?;
    Ok(d)
}

fn fsync(dir: &std::path::Path, secs: Duration) -> Result<()> {
    let path = dir.join("fsync.bin");
    let mut f = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(&path)?;
    let record = [7u8; 64];
    let start = Instant::now();
    let mut n = 0u64;
    let mut hist = Histogram::<u64>::new_with_bounds(1, 10_000_000, 3)?;
    while start.elapsed() < secs {
        let t = Instant::now();
        f.write_all(&record)?;
        f.sync_data()?;
        hist.record(t.elapsed().as_micros().max(1) as u64)?;
        n += 1;
    }
    let rate = n as f64 / start.elapsed().as_secs_f64();
    println!(
        "fsync: {rate:.0} append+fdatasync/s (p50 {:.2} ms, p99 {:.2} ms) on {}",
        hist.value_at_quantile(0.5) as f64 / 1000.0,
        hist.value_at_quantile(0.99) as f64 / 1000.0,
        dir.display()
    );
    std::fs::remove_file(&path)?;
    Ok(())
}

/// Writers propose one entry each and wait until the storage writer reports it durable.
fn log(dir: &std::path::Path, writers: usize, entry_bytes: usize, secs: Duration) -> Result<()> {
    let (storage, _) = RaftStorage::open(dir, 64 << 20)?;
    // The durable index, published by the writer's thread as it reports.
    let durable = Arc::new((std::sync::Mutex::new(0u64), std::sync::Condvar::new()));
    let writer = {
        let durable = durable.clone();
        StorageWriter::spawn(storage, move |done| {
            if let Completion::Persisted { up_to } = done {
                *durable.0.lock().expect("lock") = up_to;
                durable.1.notify_all();
            }
        })
    };
    // Index assignment and enqueueing happen under one lock, so appends stay contiguous.
    let next = Arc::new(std::sync::Mutex::new((1u64, writer)));
    let done = Arc::new(AtomicU64::new(0));
    let start = Instant::now();
    let deadline = start + secs;
    let mut handles = Vec::new();
    for _ in 0..writers {
        let (next, done, durable) = (next.clone(), done.clone(), durable.clone());
        let payload = vec![b'x'; entry_bytes];
        handles.push(std::thread::spawn(move || {
            while Instant::now() < deadline {
                let index = {
                    let mut g = next.lock().expect("lock");
                    let index = g.0;
                    g.0 += 1;
                    let entry = Entry {
                        index,
                        term: 1,
                        command: Some(payload.clone()),
                    };
                    g.1.append(index, vec![entry]);
                    index
                };
                let mut d = durable.0.lock().expect("lock");
                while *d < index {
                    d = durable.1.wait(d).expect("lock");
                }
                done.fetch_add(1, Ordering::Relaxed);
            }
        }));
    }
    for h in handles {
        h.join().expect("writer thread");
    }
    let elapsed = start.elapsed().as_secs_f64();
    let n = done.load(Ordering::Relaxed);
    let (_, writer) = Arc::into_inner(next)
        .expect("every writer thread joined")
        .into_inner()
        .expect("lock");
    let stats = writer
        .join()
        .map_err(|_| anyhow::anyhow!("the storage writer panicked"))?;
    println!(
        "log: {writers:>4} writers: {:>8.0} durable appends/s, {:>6.0} fdatasync/s, {:.1} entries ({:.0} bytes) per sync",
        n as f64 / elapsed,
        stats.syncs as f64 / elapsed,
        stats.entries_per_sync(),
        stats.bytes_per_sync()
    );
    Ok(())
}

async fn cluster(
    dir: &std::path::Path,
    replicas: u64,
    clients: &[usize],
    message_bytes: usize,
    base_port: u16,
    metrics: bool,
    secs: Duration,
) -> Result<()> {
    let exe = telegraft_exe()?;
    let procs = if metrics {
        let addrs = (1..=replicas)
            .map(|i| (i, format!("127.0.0.1:{}", u64::from(base_port) + i - 1)))
            .collect();
        LocalCluster::start_on_with_metrics(&exe, addrs, dir, &[])?
    } else {
        LocalCluster::start(&exe, replicas, base_port, dir, &[])?
    };
    let scraper = metrics.then(|| {
        let targets: Vec<String> = (1..=replicas)
            .filter_map(|i| procs.metrics_addr(i).map(str::to_string))
            .collect();
        tokio::spawn(scrape_every_second(targets))
    });
    let addrs: Vec<String> = procs.addrs.values().cloned().collect();
    // Wait for a leader, then drive the leader's address (followers forward anyway).
    let leader = admin::wait_for_leader(&addrs, Duration::from_secs(20))
        .await
        .map_err(anyhow::Error::msg)?;
    let ep = format!("http://{}", leader.addr);
    let mut setup = ChatClient::connect(ep.clone()).await?;
    let (user, chat) = bench_chat(&mut setup, "bench").await?;
    let content = "m".repeat(message_bytes);
    for &n in clients {
        let hist = Arc::new(Mutex::new(Histogram::<u64>::new_with_bounds(
            1, 60_000_000, 3,
        )?));
        let errors = Arc::new(AtomicU64::new(0));
        let start = Instant::now();
        let deadline = start + secs;
        let mut tasks = Vec::new();
        for _ in 0..n {
            let (hist, errors, content, ep) =
                (hist.clone(), errors.clone(), content.clone(), ep.clone());
            tasks.push(tokio::spawn(async move {
                let mut c = ChatClient::connect(ep).await.expect("connect");
                let mut local =
                    Histogram::<u64>::new_with_bounds(1, 60_000_000, 3).expect("histogram");
                while Instant::now() < deadline {
                    let t = Instant::now();
                    let req = api::SendMessageRequest {
                        user_id: user,
                        chat_id: chat,
                        content: content.clone(),
                        sent_time: None,
                        write_id: None,
                    };
                    match c.send_message(req).await {
                        Ok(_) => local
                            .record(t.elapsed().as_micros().max(1) as u64)
                            .expect("record"),
                        Err(_) => {
                            errors.fetch_add(1, Ordering::Relaxed);
                        }
                    }
                }
                hist.lock().await.add(&local).expect("merge");
            }));
        }
        for t in tasks {
            t.await?;
        }
        let elapsed = start.elapsed().as_secs_f64();
        let h = hist.lock().await;
        let ms = |q: f64| h.value_at_quantile(q) as f64 / 1000.0;
        let scraped = if metrics { " (metrics on)" } else { "" };
        println!(
            "cluster{scraped}: {replicas} replicas, {n:>3} clients: {:>7.0} SendMessage/s, p50 {:.2} ms, p99 {:.2} ms, max {:.2} ms, {} errors",
            h.len() as f64 / elapsed,
            ms(0.5),
            ms(0.99),
            h.max() as f64 / 1000.0,
            errors.load(Ordering::Relaxed)
        );
    }
    if let Some(s) = scraper {
        s.abort();
    }
    drop(procs);
    Ok(())
}

/// GETs `/metrics` from every target once a second, as Prometheus or `loadgen` would, until
/// aborted. A failed scrape is reported, not fatal.
async fn scrape_every_second(targets: Vec<String>) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut ticker = tokio::time::interval(Duration::from_secs(1));
    loop {
        ticker.tick().await;
        for addr in &targets {
            let scraped = async {
                let mut s = tokio::net::TcpStream::connect(addr).await?;
                s.write_all(b"GET /metrics HTTP/1.0\r\n\r\n").await?;
                let mut body = Vec::new();
                s.read_to_end(&mut body).await?;
                std::io::Result::Ok(body.len())
            };
            if let Err(e) = scraped.await {
                eprintln!("scraping {addr}: {e}");
            }
        }
    }
}

/// What `telegraft-bench overload` offers.
struct Overload {
    replicas: u64,
    rate: u64,
    connections: usize,
    message_bytes: usize,
    max_inflight: Option<usize>,
    /// Calls outstanding in the generator before it skips a scheduled call (and counts it).
    outstanding: u64,
    warmup: Duration,
    base_port: u16,
    secs: Duration,
}

/// The HTTP/2 streams a replica accepts per connection (`MAX_STREAMS_PER_CONNECTION` in
/// `server/mailbox.rs`). A call beyond them waits inside the client, and an open loop timed
/// from the intended send would then measure the client's own queue: by default the
/// generator keeps at most this many calls per connection outstanding and skips the rest.
const CLIENT_STREAMS_PER_CONNECTION: u64 = 1024;

/// Counts shared by the calls in flight and the per-second sampler.
#[derive(Default)]
struct Counts {
    offered: AtomicU64,
    ok: AtomicU64,
    exhausted: AtomicU64,
    other: AtomicU64,
    skipped: AtomicU64,
    outstanding: AtomicU64,
}

/// A process's resident set size in bytes, from /proc (Linux).
fn rss_bytes(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
    let kb: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kb * 1024)
}

async fn overload(dir: &std::path::Path, load: Overload) -> Result<()> {
    let exe = telegraft_exe()?;
    let extra: Vec<String> = load
        .max_inflight
        .map(|n| vec!["--max-inflight".to_string(), n.to_string()])
        .unwrap_or_default();
    let procs = LocalCluster::start(&exe, load.replicas, load.base_port, dir, &extra)?;
    let addrs: Vec<String> = procs.addrs.values().cloned().collect();
    let leader = admin::wait_for_leader(&addrs, Duration::from_secs(20))
        .await
        .map_err(anyhow::Error::msg)?;
    let ep = format!("http://{}", leader.addr);
    let mut clients = Vec::new();
    for _ in 0..load.connections {
        clients.push(ChatClient::connect(ep.clone()).await?);
    }
    let (user, chat) = bench_chat(&mut clients[0], "overload").await?;
    let pids: BTreeMap<u64, u32> = procs
        .addrs
        .keys()
        .filter_map(|id| procs.pid(*id).map(|pid| (*id, pid)))
        .collect();
    println!(
        "overload: {} replicas, leader node {}, offering {} SendMessage/s for {:?} over {} connections (max-inflight {}, at most {} calls outstanding in the client)",
        load.replicas,
        leader.node_id,
        load.rate,
        load.secs,
        load.connections,
        load.max_inflight
            .map_or("replica default".to_string(), |n| n.to_string()),
        load.outstanding
    );

    let counts = Arc::new(Counts::default());
    let hist = Arc::new(std::sync::Mutex::new(Histogram::<u64>::new_with_bounds(
        1, 60_000_000, 3,
    )?));
    // RSS per replica per second, sampled alongside the counts.
    let sampler = {
        let (counts, pids) = (counts.clone(), pids.clone());
        let total = load.secs;
        tokio::spawn(async move {
            let start = Instant::now();
            let mut samples: BTreeMap<u64, Vec<(u64, u64)>> = BTreeMap::new();
            let mut last = (0, 0, 0, 0);
            let mut tick = tokio::time::interval(Duration::from_secs(1));
            tick.tick().await;
            for second in 1..=total.as_secs() {
                tick.tick().await;
                let now = (
                    counts.offered.load(Ordering::Relaxed),
                    counts.ok.load(Ordering::Relaxed),
                    counts.exhausted.load(Ordering::Relaxed),
                    counts.other.load(Ordering::Relaxed),
                );
                let mut rss = Vec::new();
                for (id, pid) in &pids {
                    let bytes = rss_bytes(*pid).unwrap_or(0);
                    samples.entry(*id).or_default().push((second, bytes));
                    rss.push(format!("n{id} {:>4} MB", bytes >> 20));
                }
                println!(
                    "  {:>3}s offered {:>6}/s ok {:>6}/s exhausted {:>6}/s other {:>4}/s outstanding {:>6} | RSS {}",
                    start.elapsed().as_secs(),
                    now.0 - last.0,
                    now.1 - last.1,
                    now.2 - last.2,
                    now.3 - last.3,
                    counts.outstanding.load(Ordering::Relaxed),
                    rss.join(", ")
                );
                last = now;
            }
            samples
        })
    };

    let content = "m".repeat(load.message_bytes);
    let errors: Arc<std::sync::Mutex<BTreeMap<String, u64>>> = Arc::default();
    let start = Instant::now();
    let mut ticker = tokio::time::interval(Duration::from_millis(1));
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
    let mut issued: u64 = 0;
    loop {
        ticker.tick().await;
        let elapsed = start.elapsed();
        if elapsed >= load.secs {
            break;
        }
        let due = (elapsed.as_secs_f64() * load.rate as f64) as u64;
        while issued < due {
            issued += 1;
            counts.offered.fetch_add(1, Ordering::Relaxed);
            if counts.outstanding.load(Ordering::Relaxed) >= load.outstanding {
                counts.skipped.fetch_add(1, Ordering::Relaxed);
                continue;
            }
            counts.outstanding.fetch_add(1, Ordering::Relaxed);
            let mut c = clients[issued as usize % clients.len()].clone();
            let (counts, hist, errors) = (counts.clone(), hist.clone(), errors.clone());
            let req = api::SendMessageRequest {
                user_id: user,
                chat_id: chat,
                content: content.clone(),
                sent_time: None,
                write_id: None,
            };
            tokio::spawn(async move {
                let t = Instant::now();
                match c.send_message(req).await {
                    Ok(_) => {
                        counts.ok.fetch_add(1, Ordering::Relaxed);
                        let us = t.elapsed().as_micros().max(1) as u64;
                        let _ = hist.lock().expect("lock").record(us);
                    }
                    Err(s) if s.code() == tonic::Code::ResourceExhausted => {
                        counts.exhausted.fetch_add(1, Ordering::Relaxed);
                    }
                    Err(s) => {
                        counts.other.fetch_add(1, Ordering::Relaxed);
                        *errors
                            .lock()
                            .expect("lock")
                            .entry(format!("{:?}", s.code()))
                            .or_default() += 1;
                    }
                }
                counts.outstanding.fetch_sub(1, Ordering::Relaxed);
            });
        }
    }
    let samples = sampler.await?;
    // Let the calls still in flight finish (bounded), so every offered call is counted.
    let drain = Instant::now();
    while counts.outstanding.load(Ordering::Relaxed) > 0
        && drain.elapsed() < Duration::from_secs(10)
    {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let elapsed = load.secs.as_secs_f64();
    let h = hist.lock().expect("lock").clone();
    let ms = |q: f64| h.value_at_quantile(q) as f64 / 1000.0;
    let (offered, ok, exhausted, other, skipped) = (
        counts.offered.load(Ordering::Relaxed),
        counts.ok.load(Ordering::Relaxed),
        counts.exhausted.load(Ordering::Relaxed),
        counts.other.load(Ordering::Relaxed),
        counts.skipped.load(Ordering::Relaxed),
    );
    println!(
        "overload: offered {:.0}/s; admitted and answered {:.0}/s (from the intended send: p50 {:.2} ms, p99 {:.2} ms, max {:.2} ms); RESOURCE_EXHAUSTED {exhausted} ({:.0}%); other errors {other} {:?}; skipped by the client {skipped}",
        offered as f64 / elapsed,
        ok as f64 / elapsed,
        ms(0.5),
        ms(0.99),
        h.max() as f64 / 1000.0,
        100.0 * exhausted as f64 / offered.max(1) as f64,
        errors.lock().expect("lock"),
    );
    // Under this load on a small machine a leader can lose its term (its followers stop
    // hearing from it in time): the old leader then forwards every call it is sent, and
    // the RSS figures are those of a different cluster. Say so.
    let end = admin::statuses(&addrs).await;
    match admin::newest_leader(&end) {
        Some(now) if now.node_id == leader.node_id && now.term == leader.term => println!(
            "leader: node {} in term {} from start to end",
            now.node_id, now.term
        ),
        Some(now) => println!(
            "leader: node {} in term {} at the start, node {} in term {} at the end: leadership changed during the run, node {} forwarded what it was sent from then on",
            leader.node_id, leader.term, now.node_id, now.term, leader.node_id
        ),
        None => println!("leader: none answered at the end"),
    }
    let warmup = load.warmup.as_secs();
    for (id, series) in &samples {
        let Some(&(_, base)) = series.iter().find(|(s, _)| *s == warmup.max(1)) else {
            continue;
        };
        let after: Vec<u64> = series
            .iter()
            .filter(|(s, _)| *s >= warmup)
            .map(|(_, b)| *b)
            .collect();
        let (min, max) = (
            *after.iter().min().unwrap_or(&base),
            *after.iter().max().unwrap_or(&base),
        );
        let pct = |v: u64| 100.0 * (v as f64 - base as f64) / base.max(1) as f64;
        println!(
            "RSS node {id}: {} MB at {warmup} s; after it min {} MB ({:+.0}%), max {} MB ({:+.0}%), last {} MB",
            base >> 20,
            min >> 20,
            pct(min),
            max >> 20,
            pct(max),
            series.last().map_or(0, |s| s.1 >> 20)
        );
    }
    drop(procs);
    Ok(())
}

/// The largest `snap-*.db` file in `dir/snapshots`, in bytes.
fn snapshot_file_bytes(dir: &std::path::Path) -> u64 {
    std::fs::read_dir(dir.join("snapshots"))
        .into_iter()
        .flatten()
        .flatten()
        .filter(|e| e.file_name().to_string_lossy().ends_with(".db"))
        .filter_map(|e| e.metadata().ok().map(|m| m.len()))
        .max()
        .unwrap_or(0)
}

async fn snapshot(
    dir: &std::path::Path,
    fill_bytes: u64,
    message_bytes: usize,
    snapshot_every: u64,
    clients: usize,
    base_port: u16,
) -> Result<()> {
    let exe = telegraft_exe()?;
    let extra = vec!["--snapshot-every".to_string(), snapshot_every.to_string()];
    let procs = LocalCluster::start(&exe, 3, base_port, dir, &extra)?;
    let addrs: Vec<String> = procs.addrs.values().cloned().collect();
    let leader = admin::wait_for_leader(&addrs, Duration::from_secs(20))
        .await
        .map_err(anyhow::Error::msg)?;
    let lagging = *procs
        .addrs
        .keys()
        .find(|id| **id != leader.node_id)
        .expect("3 replicas");
    let (leader_pid, lagging_pid) = (
        procs.pid(leader.node_id).context("leader pid")?,
        procs.pid(lagging).context("follower pid")?,
    );
    let ep = format!("http://{}", leader.addr);
    let mut c = ChatClient::connect(ep.clone()).await?;
    let (user, chat) = bench_chat(&mut c, "snapshot").await?;
    // The follower has the chat, then falls behind for good.
    let lagging_addr = procs.addrs[&lagging].clone();
    let deadline = Instant::now() + Duration::from_secs(10);
    while admin::status(&lagging_addr).await?.applied_index < 3 {
        if Instant::now() > deadline {
            bail!("node {lagging} did not apply the setup");
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    procs.pause(lagging, true)?;
    println!(
        "snapshot: leader node {}, node {lagging} frozen (SIGSTOP); filling the chat database with {} MB of {} B messages, snapshot every {snapshot_every} entries",
        leader.node_id,
        fill_bytes >> 20,
        message_bytes
    );

    // Fill: `clients` calls in flight until `fill_bytes` of content were written.
    let sent = Arc::new(AtomicU64::new(0));
    let start = Instant::now();
    let mut tasks = Vec::new();
    for _ in 0..clients {
        let mut c = ChatClient::connect(ep.clone()).await?;
        let sent = sent.clone();
        let content = "s".repeat(message_bytes);
        tasks.push(tokio::spawn(async move {
            while sent.fetch_add(message_bytes as u64, Ordering::Relaxed) < fill_bytes {
                c.send_message(api::SendMessageRequest {
                    user_id: user,
                    chat_id: chat,
                    content: content.clone(),
                    sent_time: None,
                    write_id: None,
                })
                .await?;
            }
            anyhow::Ok(())
        }));
    }
    for t in tasks {
        t.await??;
    }
    // Small messages past one more snapshot interval: the newest snapshot then covers every
    // large message, and the follower catches up by it, not by the log.
    for i in 0..snapshot_every + 10 {
        c.send_message(api::SendMessageRequest {
            user_id: user,
            chat_id: chat,
            content: format!("tail {i}"),
            sent_time: None,
            write_id: None,
        })
        .await?;
    }
    let leader_dir = procs.node_dir(leader.node_id);
    let db = std::fs::metadata(leader_dir.join("chat.sqlite"))
        .map(|m| m.len())
        .unwrap_or(0);
    // Let the leader's newest snapshot land on disk.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let snap = snapshot_file_bytes(&leader_dir);
    let target = admin::status(&leader.addr).await?.commit_index;
    println!(
        "  filled in {:.1} s: commit index {target}, leader's chat.sqlite {} MB, its snapshot file {} MB",
        start.elapsed().as_secs_f64(),
        db >> 20,
        snap >> 20
    );

    let (leader_base, lagging_base) = (
        rss_bytes(leader_pid).context("leader RSS")?,
        rss_bytes(lagging_pid).context("follower RSS")?,
    );
    println!(
        "  before: leader RSS {} MB, node {lagging} RSS {} MB; letting node {lagging} go (SIGCONT)",
        leader_base >> 20,
        lagging_base >> 20
    );
    procs.pause(lagging, false)?;
    let start = Instant::now();
    let (mut leader_peak, mut lagging_peak) = (leader_base, lagging_base);
    let mut last_print = Instant::now();
    let mut last_status = Instant::now() - Duration::from_secs(1);
    loop {
        leader_peak = leader_peak.max(rss_bytes(leader_pid).unwrap_or(0));
        lagging_peak = lagging_peak.max(rss_bytes(lagging_pid).unwrap_or(0));
        if last_status.elapsed() >= Duration::from_millis(250) {
            last_status = Instant::now();
            if let Ok(s) = admin::status(&lagging_addr).await
                && s.applied_index >= target
            {
                break;
            }
        }
        if last_print.elapsed() >= Duration::from_secs(1) {
            last_print = Instant::now();
            println!(
                "  {:>5.1} s: leader RSS {} MB (peak {} MB), node {lagging} RSS {} MB (peak {} MB)",
                start.elapsed().as_secs_f64(),
                rss_bytes(leader_pid).unwrap_or(0) >> 20,
                leader_peak >> 20,
                rss_bytes(lagging_pid).unwrap_or(0) >> 20,
                lagging_peak >> 20
            );
        }
        if start.elapsed() > Duration::from_secs(600) {
            bail!("node {lagging} did not catch up within 600 s");
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let took = start.elapsed();
    // A few more samples after the catch-up, for whatever the install left behind.
    for _ in 0..25 {
        leader_peak = leader_peak.max(rss_bytes(leader_pid).unwrap_or(0));
        lagging_peak = lagging_peak.max(rss_bytes(lagging_pid).unwrap_or(0));
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let log = std::fs::read_to_string(procs.log_path(lagging)).unwrap_or_default();
    let by_snapshot = log.contains("installing a snapshot from the leader");
    let mb = |b: u64| b as f64 / (1 << 20) as f64;
    println!(
        "snapshot: node {lagging} caught up to index {target} in {:.1} s ({}); snapshot file {:.0} MB",
        took.as_secs_f64(),
        if by_snapshot {
            "by snapshot"
        } else {
            "by the log: NO SNAPSHOT WAS SENT"
        },
        mb(snapshot_file_bytes(&procs.node_dir(lagging)))
    );
    println!(
        "RSS leader (node {}): {:.0} MB before, peak {:.0} MB: grew {:+.1} MB",
        leader.node_id,
        mb(leader_base),
        mb(leader_peak),
        mb(leader_peak) - mb(leader_base)
    );
    println!(
        "RSS follower (node {lagging}): {:.0} MB before, peak {:.0} MB: grew {:+.1} MB",
        mb(lagging_base),
        mb(lagging_peak),
        mb(lagging_peak) - mb(lagging_base)
    );
    drop(procs);
    Ok(())
}

/// The `telegraft` binary beside this one (both come from one `cargo build`).
fn telegraft_exe() -> Result<PathBuf> {
    let exe = std::env::current_exe()?.with_file_name("telegraft");
    if !exe.exists() {
        bail!(
            "{} not found: build the telegraft binary first",
            exe.display()
        );
    }
    Ok(exe)
}

/// Creates the benchmark's user and chat, both called `name`; returns their ids.
async fn bench_chat(c: &mut ChatClient<Channel>, name: &str) -> Result<(u64, u64)> {
    let user = c
        .create_user(api::CreateUserRequest {
            username: name.into(),
            write_id: None,
            password: String::new(),
        })
        .await?
        .into_inner()
        .user_id;
    let chat = c
        .create_chat(api::CreateChatRequest {
            user_id: user,
            chat_name: name.into(),
            write_id: None,
        })
        .await?
        .into_inner()
        .chat_id;
    Ok((user, chat))
}
