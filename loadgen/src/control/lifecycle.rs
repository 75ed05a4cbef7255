//! The cluster a run drives: a fresh local one `loadgen` starts on free loopback ports (and
//! stops), or a running one given with `--target`; and the interrupt that stops it early.
//!
//! **Nothing left running.** SIGINT, SIGTERM and SIGHUP do not kill `loadgen`: they set the
//! run's [`Interrupt`], which stops the load (Goose's killswitch), skips the rest of the
//! run, stops the cluster (SIGTERM to every replica, then SIGKILL after a grace), writes the
//! results folder marked `interrupted`, and exits 130. A second signal while it does so is
//! only acknowledged. The handler is installed with `ctrlc` before Goose starts, so Goose's
//! own Ctrl-C handler (which exits on a second Ctrl-C, leaving replicas behind) is never
//! installed. What no handler can cover, `loadgen` itself killed with SIGKILL, the launcher
//! does: each replica gets a parent-death signal (see the note on [`Replicas::start`]).

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use anyhow::{Context, bail};
use telegraft::launcher::LocalCluster;
use tokio::sync::watch;

use super::docker::{DockerCluster, DockerSpec};
use crate::sample::{Target, Targets};

/// The replicas `loadgen` started: local processes, or containers (`--deploy docker`).
/// Faults, the leader lookup and the sampler go through this one interface.
pub enum Cluster {
    Processes(LocalCluster),
    Docker(DockerCluster),
}

impl Cluster {
    /// Every replica's client address.
    pub fn addrs(&self) -> &std::collections::BTreeMap<u64, String> {
        match self {
            Cluster::Processes(c) => &c.addrs,
            Cluster::Docker(c) => &c.addrs,
        }
    }

    /// The replicas running now (not killed; paused or cut-off ones run).
    pub fn running(&self) -> Vec<u64> {
        match self {
            Cluster::Processes(c) => c.running(),
            Cluster::Docker(c) => c.running(),
        }
    }

    /// The addresses of the replicas running now.
    pub fn running_addrs(&self) -> Vec<String> {
        let addrs = self.addrs();
        self.running().iter().map(|id| addrs[id].clone()).collect()
    }

    /// SIGKILL (`docker kill`); the data stays.
    pub fn kill(&mut self, id: u64) -> std::io::Result<()> {
        match self {
            Cluster::Processes(c) => c.kill(id),
            Cluster::Docker(c) => c.kill(id),
        }
    }

    /// Starts a killed replica again on its data.
    pub fn restart(&mut self, id: u64) -> std::io::Result<()> {
        match self {
            Cluster::Processes(c) => c.restart(id),
            Cluster::Docker(c) => c.restart(id),
        }
    }

    /// SIGSTOP / SIGCONT (`docker pause` / `unpause`).
    pub fn pause(&self, id: u64, paused: bool) -> std::io::Result<()> {
        match self {
            Cluster::Processes(c) => c.pause(id, paused),
            Cluster::Docker(c) => c.pause(id, paused),
        }
    }

    /// The replica's main process as this host sees it.
    pub fn pid(&self, id: u64) -> Option<u32> {
        match self {
            Cluster::Processes(c) => c.pid(id),
            Cluster::Docker(c) => c.pid(id),
        }
    }

    pub fn metrics_addr(&self, id: u64) -> Option<&str> {
        match self {
            Cluster::Processes(c) => c.metrics_addr(id),
            Cluster::Docker(c) => c.metrics_addr(id),
        }
    }

    /// The containers, when the replicas are containers: a partition is then a network cut
    /// rather than the replicas' fault hook.
    pub fn docker(&mut self) -> Option<&mut DockerCluster> {
        match self {
            Cluster::Processes(_) => None,
            Cluster::Docker(c) => Some(c),
        }
    }

    /// When a kill of replica `id` took effect, where the backend knows it more exactly than
    /// the caller's clock around the call (a container's stop time).
    pub fn killed_at(&mut self, id: u64) -> Option<std::time::SystemTime> {
        self.docker()?.stopped_at(id)
    }

    /// `local` or `docker`, as `summary.json` says.
    pub fn kind(&self) -> &'static str {
        match self {
            Cluster::Processes(_) => "local",
            Cluster::Docker(_) => "docker",
        }
    }

    fn log_path(&self, id: u64) -> PathBuf {
        match self {
            Cluster::Processes(c) => c.log_path(id),
            Cluster::Docker(c) => c.log_path(id),
        }
    }

    fn data_dir(&self) -> PathBuf {
        match self {
            Cluster::Processes(c) => c.data_dir.clone(),
            Cluster::Docker(c) => c.data_dir.clone(),
        }
    }
}

/// An interrupt (SIGINT, SIGTERM or SIGHUP) of this process; see the module docs.
#[derive(Clone)]
pub struct Interrupt {
    flag: Arc<AtomicBool>,
    rx: watch::Receiver<bool>,
}

/// The process's one interrupt, set up by the first [`Interrupt::install`].
static INTERRUPT: OnceLock<Option<(Arc<AtomicBool>, watch::Receiver<bool>)>> = OnceLock::new();

impl Interrupt {
    /// Installs the handler once per process and returns the interrupt. If another handler
    /// was installed first (nothing in `loadgen` does), signals keep their old effect and
    /// this interrupt never fires.
    pub fn install() -> Interrupt {
        let installed = INTERRUPT.get_or_init(|| {
            let flag = Arc::new(AtomicBool::new(false));
            let (tx, rx) = watch::channel(false);
            let f = flag.clone();
            let handler = move || {
                if f.swap(true, Ordering::SeqCst) {
                    eprintln!("loadgen: still stopping the replicas and writing the results");
                    return;
                }
                eprintln!(
                    "loadgen: interrupted: stopping the load and the cluster; the results \
                     folder is written and marked interrupted"
                );
                let _ = tx.send(true);
                goose::trigger_killswitch("interrupted");
            };
            match ctrlc::set_handler(handler) {
                Ok(()) => Some((flag, rx)),
                Err(e) => {
                    eprintln!("loadgen: cannot handle SIGINT/SIGTERM: {e}");
                    None
                }
            }
        });
        match installed {
            Some((flag, rx)) => Interrupt {
                flag: flag.clone(),
                rx: rx.clone(),
            },
            None => Interrupt {
                flag: Arc::new(AtomicBool::new(false)),
                rx: watch::channel(false).1,
            },
        }
    }

    /// Whether it has fired.
    pub fn is_set(&self) -> bool {
        self.flag.load(Ordering::SeqCst)
    }

    /// The flag, for loops that poll it (the load's users).
    pub fn flag(&self) -> Arc<AtomicBool> {
        self.flag.clone()
    }

    /// Follows it, for tasks that wait on it.
    pub fn receiver(&self) -> watch::Receiver<bool> {
        self.rx.clone()
    }

    /// Returns once it has fired (never, if it cannot).
    pub async fn fired(&self) {
        let mut rx = self.rx.clone();
        let _ = rx.wait_for(|set| *set).await;
        if !self.is_set() {
            std::future::pending::<()>().await;
        }
    }
}

/// The replicas of one run.
pub struct Replicas {
    endpoints: Vec<String>,
    /// Set when `loadgen` started them: faults go through it, and it is stopped at the end.
    local: Option<Arc<Mutex<Cluster>>>,
    /// A given cluster's metrics endpoints (`--target-metrics`), in replica order.
    metrics: Vec<String>,
    /// A given cluster's certificate directory (`--tls-dir`): local workers get it too.
    tls_dir: Option<PathBuf>,
}

/// What is left of a local cluster once stopped: its replicas' logs and its data.
pub struct Stopped {
    /// Each replica's log file (`node.log` in its data directory).
    pub logs: Vec<(u64, PathBuf)>,
    pub data_dir: PathBuf,
}

impl Stopped {
    /// Removes the replicas' data directories.
    pub fn remove_data(&self) -> anyhow::Result<()> {
        std::fs::remove_dir_all(&self.data_dir)
            .with_context(|| format!("removing {}", self.data_dir.display()))
    }
}

impl Replicas {
    /// A running cluster, at these addresses, with these metrics endpoints (none, or one per
    /// replica in the same order).
    pub fn given(endpoints: Vec<String>, metrics: Vec<String>) -> Replicas {
        Replicas {
            endpoints,
            local: None,
            metrics,
            tls_dir: None,
        }
    }

    /// A given cluster reached over TLS with the certificates of `dir`.
    pub fn with_tls_dir(mut self, dir: Option<PathBuf>) -> Replicas {
        self.tls_dir = dir;
        self
    }

    /// The certificate directory a given cluster is reached with, if any.
    pub fn tls_dir(&self) -> Option<&Path> {
        self.tls_dir.as_deref()
    }

    /// Starts `replicas` replicas of `exe` with their data under `data_dir`. Partitions go
    /// through an admin RPC each replica refuses unless started with fault injection on.
    /// With `metrics`, each replica serves its Prometheus metrics on a port of its own;
    /// without, it has no metrics endpoint and records nothing. `node_args` are more
    /// `telegraft node` flags for every replica (the scenario's `cluster:` settings).
    ///
    /// The launcher (`telegraft::launcher::LocalCluster`) starts each replica in its own
    /// process group, so a terminal's Ctrl-C reaches only `loadgen` ([`Interrupt`] then stops
    /// them in order), and with a parent-death signal (SIGKILL), so that if `loadgen` is
    /// killed with SIGKILL, or dies any other way, the kernel kills its replicas too.
    pub fn start(
        exe: &Path,
        replicas: u32,
        data_dir: &Path,
        fault_injection: bool,
        metrics: bool,
        node_args: &[String],
    ) -> anyhow::Result<Replicas> {
        // One block of free ports: the replicas' gRPC ports, then their metrics ports (each
        // replica serves its metrics on one, which the run samples).
        let base = u64::from(free_ports(2 * replicas as u16)?);
        let extra: Vec<String> = fault_injection
            .then(|| "--enable-fault-injection".to_string())
            .into_iter()
            .chain(node_args.iter().cloned())
            .collect();
        let n = u64::from(replicas);
        let port = |p: u64| format!("127.0.0.1:{p}");
        let addrs = (1..=n).map(|i| (i, port(base + i - 1))).collect();
        let metrics = (1..=n)
            .filter(|_| metrics)
            .map(|i| (i, port(base + n + i - 1)))
            .collect();
        let c = LocalCluster::start_with_metrics(exe, addrs, data_dir, &extra, metrics)
            .with_context(|| format!("starting {replicas} replicas of {}", exe.display()))?;
        Ok(Replicas::started(Cluster::Processes(c)))
    }

    /// Starts `replicas` etcd members (the `etcd` binary at `exe`) with their data under
    /// `data_dir`, on free loopback ports: a block of client ports, then one of peer ports.
    /// Member `i` is named `n{i}` (node `i` in faults). Same lifecycle as [`Replicas::start`]:
    /// own process groups, parent-death signal, SIGTERM then SIGKILL at the end. `args` are
    /// more `etcd` flags for every member (the scenario's `cluster:` timings).
    pub fn start_etcd(
        exe: &Path,
        replicas: u32,
        data_dir: &Path,
        args: &[String],
    ) -> anyhow::Result<Replicas> {
        let base = u64::from(free_ports(2 * replicas as u16)?);
        let n = u64::from(replicas);
        let port = |p: u64| format!("127.0.0.1:{p}");
        let addrs = (1..=n).map(|i| (i, port(base + i - 1))).collect();
        let peers = (1..=n).map(|i| (i, port(base + n + i - 1))).collect();
        let c = LocalCluster::start_etcd(exe, addrs, peers, data_dir, args)
            .with_context(|| format!("starting {replicas} etcd members ({})", exe.display()))?;
        Ok(Replicas::started(Cluster::Processes(c)))
    }

    fn started(c: Cluster) -> Replicas {
        Replicas {
            endpoints: c.addrs().values().cloned().collect(),
            local: Some(Arc::new(Mutex::new(c))),
            metrics: Vec::new(),
            tls_dir: None,
        }
    }

    /// Starts the replicas as containers (`--deploy docker`; [`super::docker`]).
    pub fn start_docker(spec: DockerSpec<'_>) -> anyhow::Result<Replicas> {
        let (n, system) = (spec.replicas, spec.system);
        let c = DockerCluster::start(spec)
            .with_context(|| format!("starting {n} {system} replicas as containers"))?;
        Ok(Replicas::started(Cluster::Docker(c)))
    }

    pub fn endpoints(&self) -> &[String] {
        &self.endpoints
    }

    /// The local cluster, when `loadgen` started it.
    pub fn local(&self) -> Option<Arc<Mutex<Cluster>>> {
        self.local.clone()
    }

    /// The network and project of the containers, when `loadgen` started the replicas as
    /// containers: worker containers join them.
    pub fn docker_network(&self) -> Option<(String, String)> {
        let c = self.local.as_ref()?;
        let mut c = c.lock().unwrap();
        let d = c.docker()?;
        Some((d.network().to_string(), d.project().to_string()))
    }

    /// The containers' certificate directory (they serve TLS), when `loadgen` started the
    /// replicas as containers of Telegraft: worker containers mount it.
    pub fn docker_certs(&self) -> Option<std::path::PathBuf> {
        let c = self.local.as_ref()?;
        let mut c = c.lock().unwrap();
        let d = c.docker()?;
        Some(d.data_dir.join("certs")).filter(|p| p.join("ca.pem").is_file())
    }

    /// What the run's sampler samples each second: every replica of a local cluster (its
    /// pid while it runs, its metrics address); a given one's metrics endpoints, if any (no
    /// process to sample: it may run on another host).
    pub fn sample_targets(&self) -> Targets {
        let local = self.local.clone();
        let given: Vec<Target> = self
            .metrics
            .iter()
            .enumerate()
            .map(|(i, m)| Target {
                process: format!("node-{}", i + 1),
                pid: None,
                metrics: Some(m.clone()),
            })
            .collect();
        Box::new(move || {
            let Some(c) = &local else {
                return Some(given.clone());
            };
            // Busy (a fault is being injected): the last targets are kept this second.
            let c = c.try_lock().ok()?;
            Some(
                c.addrs()
                    .keys()
                    .map(|id| Target {
                        process: format!("node-{id}"),
                        pid: c.pid(*id),
                        metrics: c.metrics_addr(*id).map(String::from),
                    })
                    .collect(),
            )
        })
    }

    /// `local` (processes loadgen started), `docker` (containers it started) or `external`
    /// (`--target`), as `summary.json` says.
    pub fn kind(&self) -> &'static str {
        match &self.local {
            Some(c) => c.lock().unwrap().kind(),
            None => "external",
        }
    }

    /// Stops a cluster loadgen started (SIGTERM, then SIGKILL after `grace`); `None` for a
    /// given one. Containers are removed with their volumes unless `keep_data`.
    pub async fn stop(self, grace: Duration, keep_data: bool) -> anyhow::Result<Option<Stopped>> {
        let Some(c) = self.local else {
            return Ok(None);
        };
        let stopped = tokio::task::spawn_blocking(move || {
            let mut c = c.lock().unwrap();
            match &mut *c {
                Cluster::Processes(p) => p.stop(grace),
                Cluster::Docker(d) => d.stop(grace, keep_data),
            }
            Stopped {
                logs: c.addrs().keys().map(|id| (*id, c.log_path(*id))).collect(),
                data_dir: c.data_dir(),
            }
        })
        .await?;
        Ok(Some(stopped))
    }
}

/// The `telegraft` binary: `--telegraft`, or the one built next to `loadgen`.
pub fn find_telegraft(given: Option<&Path>) -> anyhow::Result<PathBuf> {
    if let Some(p) = given {
        if p.is_file() {
            return Ok(p.to_path_buf());
        }
        bail!("--telegraft {}: no such file", p.display());
    }
    let exe = std::env::current_exe().context("locating loadgen")?;
    let mut dirs: Vec<PathBuf> = exe.parent().map(Path::to_path_buf).into_iter().collect();
    // Test binaries live one level down, in `deps/`.
    if let Some(up) = exe.parent().and_then(Path::parent) {
        dirs.push(up.to_path_buf());
    }
    dirs.into_iter()
        .map(|d| d.join("telegraft"))
        .find(|p| p.is_file())
        .with_context(|| {
            format!(
                "cannot find the telegraft binary next to {}: build it with \
                 `cargo build --release --bin telegraft` or pass --telegraft PATH",
                exe.display()
            )
        })
}

/// The `etcd` binary: `--etcd`, else `$ETCD`, else `etcd` on the `PATH` (Debian's
/// `etcd-server` installs `/usr/bin/etcd`; `just bench system=etcd` installs it).
pub fn find_etcd(given: Option<&Path>) -> anyhow::Result<PathBuf> {
    let given = given
        .map(Path::to_path_buf)
        .or_else(|| std::env::var_os("ETCD").map(PathBuf::from));
    if let Some(p) = given {
        if p.is_file() {
            return Ok(p);
        }
        bail!("etcd binary {}: no such file", p.display());
    }
    std::env::var_os("PATH")
        .iter()
        .flat_map(std::env::split_paths)
        .map(|d| d.join("etcd"))
        .find(|p| p.is_file())
        .context(
            "system: etcd needs the etcd server: install Debian's etcd-server \
             (`apt-get install etcd-server`; `just bench system=etcd` does it), or pass --etcd PATH",
        )
}

/// A base port with `n` free consecutive loopback ports after it. Hand-written: the
/// launcher needs a consecutive block (replica `i` listens on `base + i - 1`), which port
/// pickers that hand out one port at a time do not offer.
///
/// The block lies below the kernel's ephemeral range (`ip_local_port_range`), from which
/// every outgoing connection (the generator's, the sampler's scrapes, other runs') takes its
/// local port: a port found free there could be taken by one before the replica binds it,
/// and the replica would fail to start.
fn free_ports(n: u16) -> anyhow::Result<u16> {
    let seed = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default()
        .subsec_nanos();
    let ephemeral = std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range")
        .ok()
        .and_then(|r| r.split_whitespace().next()?.parse::<u32>().ok())
        .unwrap_or(32_768);
    let (lo, hi) = if ephemeral > 10_000 + u32::from(n) + 1_000 {
        (10_000, ephemeral - u32::from(n))
    } else {
        (20_000, 50_000)
    };
    for attempt in 0..200u32 {
        let base = (lo + (seed / 7 + attempt * 7_919) % (hi - lo)) as u16;
        let free = (0..n).all(|i| TcpListener::bind(("127.0.0.1", base + i)).is_ok());
        if free {
            return Ok(base);
        }
    }
    bail!("no {n} free consecutive loopback ports found")
}
