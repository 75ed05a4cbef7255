//! The container backend (`--deploy docker`): each replica is a container from the
//! `telegraft:latest` image (`telegraft-etcd:latest` for `system: etcd`) on a private Docker
//! network, started with Docker Compose from `deploy/compose.yaml`, the same file `just up`
//! uses (embedded here, so that a run needs no checkout).
//!
//! **One project per run.** Each run is a Compose project of its own (`tg<hex>`), with its
//! own container names, volumes and network. Its /24 subnet is one no other network on the
//! engine overlaps, and every replica has a fixed address in it (`.10` and up, `.30` and up
//! for etcd). `loadgen` runs on the host and reaches the replicas at those addresses, which
//! survive a restart and a network cut; the replicas find each other by name.
//!
//! **The same lifecycle as local processes**, through the engine: `kill` is `docker kill`
//! (SIGKILL; the volume stays), `restart` is `docker start`, `pause` is `docker pause` (the
//! cgroup freezer), and a partition is a real network cut: `docker network disconnect` of
//! the side that is cut off, `docker network connect` at the same address to heal. At the
//! end each container's output is kept as its replica's `node.log`, and the project is taken
//! down with its volumes (`--keep-data` keeps them).
//!
//! Every engine call is a blocking `docker` command (tens to hundreds of milliseconds); on a
//! multi-threaded runtime it runs in `block_in_place`, so the load's tasks move to the other
//! workers meanwhile.

use std::collections::{BTreeMap, BTreeSet};
use std::io;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use anyhow::{Context, bail};

use crate::scenario::{Resources, System};

/// `deploy/compose.yaml`, written into each run's data folder and started from there.
pub const COMPOSE_FILE: &str = include_str!("../../../deploy/compose.yaml");

/// The most replicas the compose file has slots for.
pub const MAX_REPLICAS: u32 = 7;

/// The image the replicas (and worker containers) run.
pub const IMAGE: &str = "telegraft:latest";
/// The image etcd members run.
pub const ETCD_IMAGE: &str = "telegraft-etcd:latest";

/// The replicas' gRPC port, and their metrics port, inside each container.
const GRPC_PORT: u16 = 7001;
const METRICS_PORT: u16 = 9100;
const ETCD_CLIENT_PORT: u16 = 2379;

/// Runs `docker ARGS`, blocking; on a multi-threaded runtime, without holding up its other
/// tasks. Fails with the command's stderr when it exits non-zero.
pub fn docker(args: &[&str]) -> io::Result<String> {
    run(Command::new("docker").args(args))
}

fn run(cmd: &mut Command) -> io::Result<String> {
    let mut go = || -> io::Result<Output> { cmd.stdin(Stdio::null()).output() };
    let out = match tokio::runtime::Handle::try_current() {
        Ok(h) if h.runtime_flavor() == tokio::runtime::RuntimeFlavor::MultiThread => {
            tokio::task::block_in_place(go)?
        }
        _ => go()?,
    };
    if out.status.success() {
        Ok(String::from_utf8_lossy(&out.stdout).trim().to_string())
    } else {
        let err = String::from_utf8_lossy(&out.stderr);
        Err(io::Error::other(format!(
            "{:?} failed ({}): {}",
            cmd.get_args().collect::<Vec<_>>(),
            out.status,
            err.trim()
        )))
    }
}

/// Whether a Docker Engine answers here, and if not, why (for tests that skip, and for a
/// clear error).
pub fn engine() -> Result<(), String> {
    docker(&["version", "--format", "{{.Server.Version}}"])
        .map(|_| ())
        .map_err(|e| format!("no Docker Engine is reachable: {e}"))
}

/// The Compose command: the `docker compose` plugin, or the standalone `docker-compose`.
fn compose_command() -> anyhow::Result<Vec<String>> {
    if docker(&["compose", "version"]).is_ok() {
        return Ok(vec!["docker".into(), "compose".into()]);
    }
    if Command::new("docker-compose")
        .arg("version")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
    {
        return Ok(vec!["docker-compose".into()]);
    }
    bail!(
        "--deploy docker needs Docker Compose: neither `docker compose` nor `docker-compose` \
         runs (Debian: apt-get install docker-compose)"
    )
}

/// A /24 no network of the engine overlaps, as its first three bytes (`172.30.17`), from
/// 172.30.0.0/15; drawn at random so that concurrent runs rarely try the same one.
fn free_subnet() -> anyhow::Result<String> {
    let ids = docker(&["network", "ls", "-q"])?;
    let mut used: Vec<(u32, u32)> = Vec::new();
    if !ids.is_empty() {
        let mut args = vec![
            "network",
            "inspect",
            "-f",
            "{{range .IPAM.Config}}{{.Subnet}} {{end}}",
        ];
        args.extend(ids.lines());
        for cidr in docker(&args)?.split_whitespace() {
            if let Some(r) = cidr_range(cidr) {
                used.push(r);
            }
        }
    }
    let seed = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default()
        .subsec_nanos()
        ^ std::process::id().wrapping_mul(2_654_435_761);
    for attempt in 0..512u32 {
        let third = (seed.wrapping_add(attempt.wrapping_mul(97))) % 512;
        let (b, c) = (30 + third / 256, third % 256);
        let start = (172 << 24) | (b << 16) | (c << 8);
        let end = start + 255;
        if used.iter().all(|(s, e)| end < *s || start > *e) {
            return Ok(format!("172.{b}.{c}"));
        }
    }
    bail!("no free /24 in 172.30.0.0/15 for the run's network")
}

/// An IPv4 CIDR's first and last address.
fn cidr_range(cidr: &str) -> Option<(u32, u32)> {
    let (ip, bits) = cidr.split_once('/')?;
    let ip: std::net::Ipv4Addr = ip.parse().ok()?;
    let bits: u32 = bits.parse().ok()?;
    if bits > 32 {
        return None;
    }
    let mask = if bits == 0 {
        0
    } else {
        u32::MAX << (32 - bits)
    };
    let start = u32::from(ip) & mask;
    Some((start, start | !mask))
}

/// The slots' certificates for a run's containers (`telegraft certs`, in `DIR/certs`): node
/// certificates name every slot's host name (`telegraft-<i>`) and address on `subnet`, so
/// that peers (by name) and this host (by address) verify them. The replicas run as uid
/// 10001 and read the directory through a bind mount, which keeps the host's ownership: as
/// root, the files are given to 10001 (keys stay 0600); otherwise the keys are made
/// readable by all, since nothing else lets another uid read them (a test cluster's keys).
pub fn container_certs(data_dir: &Path, subnet: &str) -> anyhow::Result<PathBuf> {
    use std::os::unix::fs::PermissionsExt;
    let dir = data_dir.join("certs");
    let _ = std::fs::remove_dir_all(&dir);
    let mut hosts: Vec<String> = (0..MAX_REPLICAS)
        .map(|i| format!("telegraft-{i}"))
        .collect();
    hosts.extend((0..MAX_REPLICAS).map(|i| format!("{subnet}.{}", 10 + i)));
    telegraft::security::certs::issue(&telegraft::security::certs::CertsRequest {
        out: dir.clone(),
        nodes: u64::from(MAX_REPLICAS),
        cluster_id: telegraft::security::DEFAULT_CLUSTER_ID.into(),
        hosts,
        valid_days: 2,
    })
    .with_context(|| format!("making the containers' certificates in {}", dir.display()))?;
    // SAFETY: geteuid has no arguments and cannot fail.
    let as_root = unsafe { nix::libc::geteuid() } == 0;
    for path in std::iter::once(dir.clone()).chain(
        std::fs::read_dir(&dir)?
            .filter_map(Result::ok)
            .map(|e| e.path()),
    ) {
        if as_root {
            std::os::unix::fs::chown(&path, Some(CONTAINER_UID), Some(CONTAINER_UID))
                .with_context(|| format!("giving {} to uid {CONTAINER_UID}", path.display()))?;
        } else if path.extension().is_some_and(|e| e == "key") {
            std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644))?;
        }
    }
    Ok(dir)
}

/// The uid the image runs as (`deploy/image/Dockerfile`).
const CONTAINER_UID: u32 = 10001;

/// What a docker cluster is started with.
#[derive(Clone, Copy)]
pub struct DockerSpec<'a> {
    pub system: System,
    pub replicas: u32,
    /// Where the compose file and, at the end, the replicas' logs go.
    pub data_dir: &'a Path,
    /// More `telegraft node` (or `etcd`) flags for every replica.
    pub node_args: &'a [String],
    /// Serve and sample each replica's metrics.
    pub metrics: bool,
    pub resources: Resources,
}

/// A run's replicas as containers; see the module docs.
pub struct DockerCluster {
    compose: Vec<String>,
    project: String,
    file: PathBuf,
    env: Vec<(String, String)>,
    /// The compose network's name on the engine.
    network: String,
    pub addrs: BTreeMap<u64, String>,
    metrics: BTreeMap<u64, String>,
    containers: BTreeMap<u64, String>,
    ips: BTreeMap<u64, String>,
    /// Replicas killed and not restarted.
    killed: BTreeSet<u64>,
    /// Replicas disconnected from the network.
    cut: BTreeSet<u64>,
    /// Each running container's main process, as the host sees it (for CPU and memory).
    pids: BTreeMap<u64, u32>,
    pub data_dir: PathBuf,
    /// Taken down ([`DockerCluster::stop`]); otherwise dropping takes it down.
    stopped: bool,
}

impl Drop for DockerCluster {
    /// A run that ends early (an error, a panic) takes its containers, network and volumes
    /// down all the same: nothing is left running.
    fn drop(&mut self) {
        if !self.stopped {
            self.stop(Duration::from_secs(2), false);
        }
    }
}

impl DockerCluster {
    /// Starts the project and waits until every container runs. Another run may take the
    /// /24 drawn for this one between the draw and `up` (the engine then refuses an
    /// overlapping pool): a fresh one is drawn, up to three times.
    pub fn start(spec: DockerSpec<'_>) -> anyhow::Result<DockerCluster> {
        let mut tries = 0;
        loop {
            tries += 1;
            match DockerCluster::start_once(spec) {
                Err(e) if tries < 3 && format!("{e:#}").contains("overlaps") => {
                    eprintln!("loadgen: the run's subnet was taken meanwhile; drawing another");
                }
                r => return r,
            }
        }
    }

    fn start_once(spec: DockerSpec<'_>) -> anyhow::Result<DockerCluster> {
        engine().map_err(|e| anyhow::anyhow!("--deploy docker: {e}"))?;
        let n = spec.replicas;
        if n == 0 || n > MAX_REPLICAS {
            bail!(
                "--deploy docker runs 1 to {MAX_REPLICAS} replicas (the compose file's slots), not {n}"
            );
        }
        let image = match spec.system {
            System::Telegraft => IMAGE,
            System::Etcd => ETCD_IMAGE,
        };
        if docker(&["image", "inspect", image]).is_err() {
            bail!("--deploy docker: no image {image} on this engine: build it with `just image`");
        }
        let compose = compose_command()?;
        std::fs::create_dir_all(spec.data_dir)
            .with_context(|| format!("creating {}", spec.data_dir.display()))?;
        let file = spec.data_dir.join("compose.yaml");
        std::fs::write(&file, COMPOSE_FILE)
            .with_context(|| format!("writing {}", file.display()))?;
        let nanos = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap_or_default()
            .as_nanos();
        let project = format!(
            "tg{:x}",
            (nanos as u64 ^ u64::from(std::process::id())) & 0xFFFF_FFFF
        );
        let subnet = free_subnet()?;
        let ids: Vec<u64> = (1..=u64::from(n)).collect();
        let certs = container_certs(spec.data_dir, &subnet)?;
        let mut env = vec![
            ("TG_CERTS".to_string(), certs.display().to_string()),
            ("TG_PROJECT".to_string(), project.clone()),
            ("TG_SUBNET".to_string(), subnet.clone()),
            (
                "TG_REPLICA_CPUS".to_string(),
                cpus(spec.resources.replica_cpus),
            ),
            (
                "TG_LOADGEN_CPUS".to_string(),
                cpus(spec.resources.loadgen_cpus),
            ),
        ];
        let (mut addrs, mut metrics, mut containers, mut ips) = (
            BTreeMap::new(),
            BTreeMap::new(),
            BTreeMap::new(),
            BTreeMap::new(),
        );
        let profile = match spec.system {
            System::Telegraft => {
                let peers = ids
                    .iter()
                    .map(|i| format!("{i}=telegraft-{}:{GRPC_PORT}", i - 1))
                    .collect::<Vec<_>>()
                    .join(",");
                let mut args = spec.node_args.to_vec();
                if spec.metrics {
                    args.push(format!("--metrics-listen 0.0.0.0:{METRICS_PORT}"));
                }
                env.push(("TG_PEERS".into(), peers));
                env.push(("TG_NODE_ARGS".into(), args.join(" ")));
                for &i in &ids {
                    let ip = format!("{subnet}.{}", 9 + i);
                    addrs.insert(i, format!("{ip}:{GRPC_PORT}"));
                    // Every replica serves TLS (the compose file's --tls-dir /certs); this
                    // process reaches it as the admin (fault injection, status, chat).
                    let tls = telegraft::security::tls::client_config(
                        &certs,
                        telegraft::security::tls::Role::Admin,
                    )?;
                    telegraft::admin::use_tls_for([&addrs[&i]], &tls);
                    if spec.metrics {
                        metrics.insert(i, format!("{ip}:{METRICS_PORT}"));
                    }
                    containers.insert(i, format!("{project}-{}", i - 1));
                    ips.insert(i, ip);
                }
                format!("r{n}")
            }
            System::Etcd => {
                let cluster = ids
                    .iter()
                    .map(|i| format!("n{i}=http://etcd-{}:2380", i - 1))
                    .collect::<Vec<_>>()
                    .join(",");
                env.push(("TG_ETCD_CLUSTER".into(), cluster));
                env.push(("TG_ETCD_ARGS".into(), spec.node_args.join(" ")));
                for &i in &ids {
                    let ip = format!("{subnet}.{}", 29 + i);
                    addrs.insert(i, format!("{ip}:{ETCD_CLIENT_PORT}"));
                    containers.insert(i, format!("{project}-etcd-{}", i - 1));
                    ips.insert(i, ip);
                }
                format!("e{n}")
            }
        };
        env.push(("COMPOSE_PROFILES".into(), profile));
        let mut c = DockerCluster {
            compose,
            project,
            file,
            env,
            network: String::new(),
            addrs,
            metrics,
            containers,
            ips,
            killed: BTreeSet::new(),
            cut: BTreeSet::new(),
            pids: BTreeMap::new(),
            data_dir: spec.data_dir.to_path_buf(),
            stopped: false,
        };
        if let Err(e) = c.compose(&["up", "-d", "--no-color"]) {
            // Whatever did start goes.
            let _ = c.compose(&["down", "-v", "--remove-orphans"]);
            c.stopped = true;
            return Err(e).context("starting the containers with Docker Compose");
        }
        let first = c.containers[&1].clone();
        // From here on, dropping `c` on an error takes the project down (`Drop`).
        c.network = docker(&[
            "inspect",
            "-f",
            "{{range $k, $v := .NetworkSettings.Networks}}{{$k}}{{end}}",
            &first,
        ])?;
        for id in ids {
            c.refresh_pid(id);
        }
        Ok(c)
    }

    /// `docker compose -p PROJECT -f FILE ARGS` with the run's variables.
    fn compose(&self, args: &[&str]) -> io::Result<String> {
        let mut cmd = Command::new(&self.compose[0]);
        cmd.args(&self.compose[1..])
            .args(["-p", &self.project, "-f"])
            .arg(&self.file)
            .args(args)
            .envs(self.env.iter().map(|(k, v)| (k, v)));
        run(&mut cmd)
    }

    fn refresh_pid(&mut self, id: u64) {
        let pid = docker(&["inspect", "-f", "{{.State.Pid}}", &self.containers[&id]])
            .ok()
            .and_then(|p| p.parse::<u32>().ok())
            .filter(|p| *p != 0);
        match pid {
            Some(p) => self.pids.insert(id, p),
            None => self.pids.remove(&id),
        };
    }

    /// The network the replicas share (worker containers join it).
    pub fn network(&self) -> &str {
        &self.network
    }

    /// The compose project's name: containers started beside the replicas take it as a
    /// prefix.
    pub fn project(&self) -> &str {
        &self.project
    }

    pub fn kill(&mut self, id: u64) -> io::Result<()> {
        let c = self.name(id)?;
        docker(&["kill", &c])?;
        self.killed.insert(id);
        self.pids.remove(&id);
        Ok(())
    }

    /// When replica `id`'s container last stopped, by the engine (same host clock): `docker
    /// kill` returns tens of milliseconds after the process died, and a fault is timed from
    /// the death.
    pub fn stopped_at(&self, id: u64) -> Option<std::time::SystemTime> {
        let at = docker(&[
            "inspect",
            "-f",
            "{{.State.FinishedAt}}",
            self.containers.get(&id)?,
        ])
        .ok()?;
        humantime::parse_rfc3339_weak(at.trim().trim_end_matches('Z').split('.').next()?)
            .ok()
            .map(|whole| {
                // parse_rfc3339_weak takes no more than 9 fraction digits: add them back.
                let frac = at
                    .trim()
                    .trim_end_matches('Z')
                    .split_once('.')
                    .map(|(_, f)| f)
                    .unwrap_or("");
                let nanos: u64 = format!("{:0<9}", &frac[..frac.len().min(9)])
                    .parse()
                    .unwrap_or(0);
                whole + Duration::from_nanos(nanos)
            })
    }

    pub fn restart(&mut self, id: u64) -> io::Result<()> {
        let c = self.name(id)?;
        docker(&["start", &c])?;
        self.killed.remove(&id);
        self.refresh_pid(id);
        Ok(())
    }

    pub fn pause(&self, id: u64, paused: bool) -> io::Result<()> {
        let c = self.name(id)?;
        docker(&[if paused { "pause" } else { "unpause" }, &c]).map(|_| ())
    }

    /// Cuts `ids` off the network: each can reach no one, nor be reached, until
    /// [`DockerCluster::reconnect`]. One cut at a time: a second while one is in force is
    /// refused (its heal would end the first early).
    pub fn disconnect(&mut self, ids: &[u64]) -> io::Result<()> {
        if !self.cut.is_empty() {
            return Err(io::Error::other(format!(
                "nodes {:?} are still cut off: on containers, one partition at a time",
                self.cut
            )));
        }
        for &id in ids {
            let c = self.name(id)?;
            docker(&["network", "disconnect", "-f", &self.network, &c])?;
            self.cut.insert(id);
        }
        Ok(())
    }

    /// Puts every cut-off replica back on the network at its own address; returns the ones
    /// that could not be.
    pub fn reconnect(&mut self) -> Vec<u64> {
        let mut failed = Vec::new();
        for id in std::mem::take(&mut self.cut) {
            let (c, ip) = (self.containers[&id].clone(), self.ips[&id].clone());
            if let Err(e) = docker(&["network", "connect", "--ip", &ip, &self.network, &c]) {
                eprintln!("loadgen: reconnecting node {id}: {e}");
                failed.push(id);
            }
        }
        self.cut.extend(failed.iter().copied());
        failed
    }

    fn name(&self, id: u64) -> io::Result<String> {
        self.containers
            .get(&id)
            .cloned()
            .ok_or_else(|| io::Error::other(format!("no node {id}")))
    }

    /// Replicas not killed (paused and cut-off ones run).
    pub fn running(&self) -> Vec<u64> {
        self.addrs
            .keys()
            .filter(|id| !self.killed.contains(id))
            .copied()
            .collect()
    }

    pub fn pid(&self, id: u64) -> Option<u32> {
        self.pids.get(&id).copied()
    }

    pub fn metrics_addr(&self, id: u64) -> Option<&str> {
        self.metrics.get(&id).map(String::as_str)
    }

    /// Replica `id`'s log: its container's output, kept at the end.
    pub fn log_path(&self, id: u64) -> PathBuf {
        self.data_dir.join(format!("node-{id}")).join("node.log")
    }

    /// Keeps every container's output as its replica's log, then takes the project down
    /// (SIGTERM, SIGKILL after `grace`), with its volumes unless `keep_volumes`.
    pub fn stop(&mut self, grace: Duration, keep_volumes: bool) {
        for (id, c) in &self.containers {
            let path = self.log_path(*id);
            let _ = std::fs::create_dir_all(path.parent().unwrap_or(Path::new(".")));
            let out = Command::new("docker")
                .args(["logs", "--timestamps", c])
                .output();
            if let Ok(out) = out {
                let mut log = out.stdout;
                log.extend_from_slice(&out.stderr);
                let _ = std::fs::write(&path, log);
            }
        }
        // Worker containers started beside the replicas (`--workers`), if any are left.
        if let Ok(ids) = docker(&[
            "ps",
            "-aq",
            "--filter",
            &format!("name=^{}-loadgen-", self.project),
        ]) && !ids.is_empty()
        {
            let mut args = vec!["rm", "-f"];
            args.extend(ids.lines());
            let _ = docker(&args);
        }
        // A paused container cannot be stopped.
        for c in self.containers.values() {
            let _ = Command::new("docker")
                .args(["unpause", c])
                .stderr(Stdio::null())
                .stdout(Stdio::null())
                .status();
        }
        let t = grace.as_secs().max(1).to_string();
        let mut args = vec!["down", "--remove-orphans", "--timeout", &t];
        if !keep_volumes {
            args.push("-v");
        }
        if let Err(e) = self.compose(&args) {
            eprintln!("loadgen: taking the containers down: {e}");
            for c in self.containers.values() {
                let _ = docker(&["rm", "-f", "-v", c]);
            }
        }
        self.stopped = true;
        if keep_volumes {
            eprintln!(
                "loadgen: kept the replicas' volumes ({}_data-0 ...); remove them with \
                 `docker volume rm`",
                self.project
            );
        }
    }
}

/// A CPU limit as compose takes it (`0`: none).
fn cpus(v: Option<f64>) -> String {
    v.map_or_else(|| "0".to_string(), |c| format!("{c}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cidr_ranges() {
        assert_eq!(
            cidr_range("172.30.5.0/24"),
            Some((0xAC1E_0500, 0xAC1E_05FF))
        );
        assert_eq!(cidr_range("10.0.0.0/8"), Some((0x0A00_0000, 0x0AFF_FFFF)));
        assert_eq!(cidr_range("fd00::/64"), None);
        assert_eq!(cidr_range("1.2.3.4/33"), None);
    }

    #[test]
    fn the_compose_file_has_a_slot_per_replica_and_member() {
        for i in 0..MAX_REPLICAS {
            assert!(
                COMPOSE_FILE.contains(&format!("  telegraft-{i}:\n")),
                "telegraft-{i}"
            );
            assert!(COMPOSE_FILE.contains(&format!("  etcd-{i}:\n")), "etcd-{i}");
            assert!(COMPOSE_FILE.contains(&format!(".{}\n", 10 + i)));
            assert!(COMPOSE_FILE.contains(&format!(".{}\n", 30 + i)));
        }
    }
}
