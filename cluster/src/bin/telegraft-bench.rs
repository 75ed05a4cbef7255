//! `telegraft-bench`: micro-benchmarks of the replica's building blocks, on this machine.
//!
//! - `fsync`: how many small append + fdatasync rounds the disk does per second: the ceiling
//!   of a log that syncs once per write.
//! - `log --writers N`: appends per second through the real storage writer (group commit)
//!   with N concurrent writers, each waiting for its own entry to be durable.
//! - `cluster --replicas R --clients C`: SendMessage throughput and latency through a real
//!   local cluster of `telegraft node` processes, C clients each with one request in flight.
//!
//! Figures go in cluster/README.md with the command that produced them. These are
//! benchmarks, not tests: nothing here asserts a timing.

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
        } => {
            let rt = tokio::runtime::Runtime::new()?;
            rt.block_on(cluster(
                &tmp,
                replicas,
                &clients,
                message_bytes,
                base_port,
                secs,
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
    secs: Duration,
) -> Result<()> {
    let exe = std::env::current_exe()?.with_file_name("telegraft");
    if !exe.exists() {
        bail!(
            "{} not found: build the telegraft binary first",
            exe.display()
        );
    }
    let procs = LocalCluster::start(&exe, replicas, base_port, dir, &[])?;
    let addrs: Vec<String> = procs.addrs.values().cloned().collect();
    // Wait for a leader, then drive the leader's address (followers forward anyway).
    let leader = admin::wait_for_leader(&addrs, Duration::from_secs(20))
        .await
        .map_err(anyhow::Error::msg)?;
    let ep = format!("http://{}", leader.addr);
    let mut setup = ChatClient::connect(ep.clone()).await?;
    let user = setup
        .create_user(api::CreateUserRequest {
            username: "bench".into(),
            write_id: None,
        })
        .await?
        .into_inner()
        .user_id;
    let chat = setup
        .create_chat(api::CreateChatRequest {
            user_id: user,
            chat_name: "bench".into(),
            write_id: None,
        })
        .await?
        .into_inner()
        .chat_id;
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
        println!(
            "cluster: {replicas} replicas, {n:>3} clients: {:>7.0} SendMessage/s, p50 {:.2} ms, p99 {:.2} ms, max {:.2} ms, {} errors",
            h.len() as f64 / elapsed,
            ms(0.5),
            ms(0.99),
            h.max() as f64 / 1000.0,
            errors.load(Ordering::Relaxed)
        );
    }
    drop(procs);
    Ok(())
}
