//! What the replicas and the generator did while the load ran: once a second, through
//! warm-up and the measured window, every replica's `/metrics` is scraped and every replica
//! process, and `loadgen` itself, is sampled (CPU %, RSS, disk bytes read and written, with
//! `sysinfo`). [`crate::results`] writes them as `resources.csv` and `metrics.csv`.
//!
//! **It must not disturb the load.** The sampler is one OS thread of its own, outside the
//! tokio runtime the load runs on; each second it refreshes only the processes it samples
//! and scrapes every replica at once (one short-lived thread each, [`SCRAPE_TIMEOUT`] at
//! most), so a replica that is paused or dead costs that second its rows and nothing more.
//! What it keeps is bounded by the run's length (a few hundred rows a second at most).
//!
//! **Times.** Row `t_s = n` is taken `n` seconds after the measured window began, and covers
//! the second before it, as `timeseries.csv`'s `second` does; warm-up rows have `t_s <= 0`.
//! CPU % and disk bytes are over that second; RSS is at the sample.

mod prom;

use std::collections::HashMap;
use std::io::{Read, Write};
use std::net::{TcpStream, ToSocketAddrs};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, OnceLock};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use serde::Serialize;
use sysinfo::{Pid, ProcessRefreshKind, ProcessStatus, ProcessesToUpdate, System};

pub use prom::{Scrape, Values, parse};

/// How long one scrape may take, connection included.
pub const SCRAPE_TIMEOUT: Duration = Duration::from_millis(400);

/// The largest `/metrics` body read (a replica's is tens of kilobytes).
const MAX_BODY: u64 = 8 << 20;

/// `process` of the generator's own rows.
pub const LOADGEN: &str = "loadgen";

/// One process to sample: `node-N` (its pid, when running, and its metrics address, when it
/// has one).
#[derive(Clone, Debug, PartialEq)]
pub struct Target {
    pub process: String,
    pub pid: Option<u32>,
    pub metrics: Option<String>,
}

/// The replicas to sample now; `None` when they cannot be known this second (the last ones
/// are kept).
pub type Targets = Box<dyn FnMut() -> Option<Vec<Target>> + Send>;

/// One row of `resources.csv`.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct ResourceRow {
    pub t_s: i64,
    pub process: String,
    pub pid: u32,
    /// Of one core (a process using two whole cores is at 200).
    pub cpu_pct: f64,
    pub rss_bytes: u64,
    /// Read and written during the second.
    pub read_bytes: u64,
    pub written_bytes: u64,
}

/// One row of `metrics.csv`.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct MetricRow {
    pub t_s: i64,
    pub node: String,
    pub metric: String,
    pub value: f64,
}

/// Everything sampled.
#[derive(Clone, Debug, Default)]
pub struct Samples {
    pub resources: Vec<ResourceRow>,
    pub metrics: Vec<MetricRow>,
    /// The machine's logical CPUs.
    pub cpus: usize,
}

/// The sampling thread.
pub struct Sampler {
    stop: Arc<AtomicBool>,
    thread: JoinHandle<Samples>,
}

impl Sampler {
    /// Starts sampling once `start` is set (the load's zero), from then to `warmup +
    /// duration` later, or until [`Sampler::finish`].
    pub fn start(
        targets: Targets,
        start: Arc<OnceLock<Instant>>,
        warmup: Duration,
        duration: Duration,
    ) -> anyhow::Result<Sampler> {
        let stop = Arc::new(AtomicBool::new(false));
        let s = stop.clone();
        let thread = std::thread::Builder::new()
            .name("loadgen-sampler".into())
            .spawn(move || run(targets, &start, warmup, duration, &s))?;
        Ok(Sampler { stop, thread })
    }

    /// Stops sampling after at most one more second (the load's last, when it ended on
    /// time) and returns the samples.
    pub async fn finish(self) -> Samples {
        self.stop.store(true, Ordering::SeqCst);
        let thread = self.thread;
        tokio::task::spawn_blocking(move || thread.join().unwrap_or_default())
            .await
            .unwrap_or_default()
    }
}

/// The sampling loop; see the module docs.
fn run(
    mut targets: Targets,
    start: &OnceLock<Instant>,
    warmup: Duration,
    duration: Duration,
    stop: &AtomicBool,
) -> Samples {
    let mut samples = Samples::default();
    let start = loop {
        if let Some(s) = start.get() {
            break *s;
        }
        if stop.load(Ordering::SeqCst) {
            return samples;
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    let measured = start + warmup;
    let mut sys = System::new();
    let mut now = targets().unwrap_or_default();
    refresh(&mut sys, &now);
    samples.cpus = sys.cpus().len().max(1);
    let mut last: HashMap<String, (Instant, Values)> = HashMap::new();
    for (process, at, text) in scrape_all(&now) {
        if let Some(text) = text {
            last.insert(process, (at, Values::of(&parse(&text))));
        }
    }
    let first = (-warmup.as_secs_f64()).floor() as i64 + 1;
    let end = duration.as_secs_f64().ceil() as i64;
    let mut deadline: Option<Instant> = None;
    'seconds: for n in first..=end {
        let at = if n >= 0 {
            measured + Duration::from_secs(n as u64)
        } else {
            measured - Duration::from_secs((-n) as u64)
        };
        loop {
            let t = Instant::now();
            if deadline.is_none() && stop.load(Ordering::SeqCst) {
                deadline = Some(t + Duration::from_millis(1100));
            }
            if deadline.is_some_and(|d| at > d) {
                break 'seconds;
            }
            if t >= at {
                break;
            }
            std::thread::sleep((at - t).min(Duration::from_millis(50)));
        }
        if let Some(t) = targets() {
            now = t;
        }
        refresh(&mut sys, &now);
        let own = [(LOADGEN.to_string(), Some(std::process::id()))];
        let procs = now.iter().map(|t| (t.process.clone(), t.pid)).chain(own);
        for (process, pid) in procs {
            let Some(pid) = pid else { continue };
            let Some(p) = sys.process(Pid::from_u32(pid)) else {
                continue;
            };
            if matches!(p.status(), ProcessStatus::Zombie | ProcessStatus::Dead) {
                continue;
            }
            let disk = p.disk_usage();
            samples.resources.push(ResourceRow {
                t_s: n,
                process,
                pid,
                cpu_pct: (f64::from(p.cpu_usage()) * 10.0).round() / 10.0,
                rss_bytes: p.memory(),
                read_bytes: disk.read_bytes,
                written_bytes: disk.written_bytes,
            });
        }
        for (process, at, text) in scrape_all(&now) {
            let Some(text) = text else { continue };
            let values = Values::of(&parse(&text));
            let prev = last.get(&process);
            let dt = prev.map_or(0.0, |(t, _)| at.duration_since(*t).as_secs_f64());
            for (metric, value) in values.second(prev.map(|(_, v)| v), dt) {
                samples.metrics.push(MetricRow {
                    t_s: n,
                    node: process.clone(),
                    metric,
                    value,
                });
            }
            last.insert(process, (at, values));
        }
    }
    samples
}

/// Refreshes CPU, memory and disk use of the targets and of this process only.
fn refresh(sys: &mut System, targets: &[Target]) {
    let pids: Vec<Pid> = targets
        .iter()
        .filter_map(|t| t.pid)
        .chain([std::process::id()])
        .map(Pid::from_u32)
        .collect();
    sys.refresh_processes_specifics(
        ProcessesToUpdate::Some(&pids),
        true,
        ProcessRefreshKind::nothing()
            .with_cpu()
            .with_memory()
            .with_disk_usage(),
    );
}

/// Scrapes every target with a metrics address at once: `(process, when, body)`. A target
/// without a pid is scraped too: a given cluster's replicas (`--target-metrics`) have none
/// here, and a local replica that is down refuses the connection at once.
fn scrape_all(targets: &[Target]) -> Vec<(String, Instant, Option<String>)> {
    std::thread::scope(|s| {
        let running: Vec<_> = targets
            .iter()
            .filter_map(|t| Some((t.process.clone(), t.metrics.clone()?)))
            .map(|(process, addr)| {
                s.spawn(move || {
                    let body = scrape(&addr, SCRAPE_TIMEOUT);
                    (process, Instant::now(), body)
                })
            })
            .collect();
        running.into_iter().filter_map(|h| h.join().ok()).collect()
    })
}

/// `GET http://addr/metrics` within `timeout`; `None` on any failure. HTTP/1.0, so the
/// answer is never chunked and the connection closes after it.
pub fn scrape(addr: &str, timeout: Duration) -> Option<String> {
    let deadline = Instant::now() + timeout;
    let sock = addr.to_socket_addrs().ok()?.next()?;
    let mut stream = TcpStream::connect_timeout(&sock, timeout).ok()?;
    let left = || {
        deadline
            .checked_duration_since(Instant::now())
            .filter(|d| !d.is_zero())
    };
    stream.set_write_timeout(Some(left()?)).ok()?;
    stream
        .write_all(format!("GET /metrics HTTP/1.0\r\nHost: {addr}\r\n\r\n").as_bytes())
        .ok()?;
    let mut response = Vec::new();
    let mut buf = [0u8; 16 * 1024];
    let mut stream = stream.take(MAX_BODY);
    loop {
        stream.get_ref().set_read_timeout(Some(left()?)).ok()?;
        match stream.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => response.extend_from_slice(&buf[..n]),
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(_) => return None,
        }
    }
    let text = String::from_utf8(response).ok()?;
    let (head, body) = text.split_once("\r\n\r\n")?;
    let status = head.lines().next()?;
    (status.split_whitespace().nth(1) == Some("200")).then(|| body.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::TcpListener;

    /// A one-shot HTTP server answering `answer` to the first connection.
    fn serve_once(answer: &'static str) -> String {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = l.local_addr().unwrap().to_string();
        std::thread::spawn(move || {
            let (mut c, _) = l.accept().unwrap();
            let mut req = [0u8; 1024];
            let n = c.read(&mut req).unwrap();
            assert!(String::from_utf8_lossy(&req[..n]).starts_with("GET /metrics HTTP/1.0"));
            c.write_all(answer.as_bytes()).unwrap();
        });
        addr
    }

    #[test]
    fn a_scrape_reads_the_body_of_a_200_and_nothing_else() {
        let ok = serve_once("HTTP/1.0 200 OK\r\ncontent-type: text/plain\r\n\r\nx 1\n");
        assert_eq!(scrape(&ok, SCRAPE_TIMEOUT).as_deref(), Some("x 1\n"));
        let missing = serve_once("HTTP/1.0 404 Not Found\r\n\r\nno");
        assert_eq!(scrape(&missing, SCRAPE_TIMEOUT), None);
        // Nothing listening.
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        let closed = l.local_addr().unwrap().to_string();
        drop(l);
        assert_eq!(scrape(&closed, SCRAPE_TIMEOUT), None);
    }

    #[test]
    fn a_replica_that_never_answers_costs_one_timeout() {
        // Accepts (the kernel does, as for a paused replica) but never answers.
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = l.local_addr().unwrap().to_string();
        let t = Instant::now();
        assert_eq!(scrape(&addr, Duration::from_millis(200)), None);
        let took = t.elapsed();
        // The property is that the scrape gives up rather than waiting for ever (a paused
        // replica never answers); the bound is far above the timeout so that a busy shared
        // machine cannot fail it.
        assert!(took < Duration::from_secs(5), "{took:?}");
        drop(l);
    }

    #[tokio::test]
    async fn the_sampler_samples_itself_every_second_of_warm_up_and_window() {
        let start = Arc::new(OnceLock::new());
        let sampler = Sampler::start(
            Box::new(|| Some(Vec::new())),
            start.clone(),
            Duration::from_millis(1500),
            Duration::from_secs(1),
        )
        .unwrap();
        start.set(Instant::now()).unwrap();
        tokio::time::sleep(Duration::from_millis(2600)).await;
        let s = sampler.finish().await;
        let seconds: Vec<i64> = s.resources.iter().map(|r| r.t_s).collect();
        assert_eq!(seconds, [-1, 0, 1]);
        assert!(
            s.resources
                .iter()
                .all(|r| r.process == LOADGEN && r.pid == std::process::id() && r.rss_bytes > 0)
        );
        assert!(s.metrics.is_empty());
        assert!(s.cpus >= 1);
    }
}
