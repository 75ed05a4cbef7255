//! Starting and stopping a local cluster of `telegraft node` processes on loopback.
//!
//! Used by `telegraft cluster`, by the benchmarks, by the real-process tests and by the load
//! generator (which starts a fresh cluster per run). Each node gets its own data directory
//! (`DIR/node-I`, with its log in `DIR/node-I/node.log`) and listens on `127.0.0.1:BASE+I-1`,
//! or on the addresses the caller chose ([`LocalCluster::start_on`]). Faults are real signals
//! to real processes: SIGKILL, SIGSTOP/SIGCONT, and a restart on the same data directory.
//! [`LocalCluster::start_etcd`] starts etcd members the same way, so that the load generator
//! runs a scenario against etcd with the same lifecycle and faults.
//! Dropping a [`LocalCluster`] kills whatever is still running, so a failing caller leaves
//! no strays; and each node runs in its own process group with a parent-death signal, so
//! that not even a caller killed with SIGKILL leaves one (see [`spawn_bound_to_this_process`]).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;

use crate::raft::NodeId;

pub struct LocalCluster {
    /// Every node's address, running or not.
    pub addrs: BTreeMap<NodeId, String>,
    /// The parent of the nodes' data directories.
    pub data_dir: PathBuf,
    children: BTreeMap<NodeId, Child>,
    exe: PathBuf,
    peers: String,
    extra: Vec<String>,
    /// Each node's `--metrics-listen` address, for the nodes started with metrics on.
    metrics: BTreeMap<NodeId, String>,
    /// Set for a cluster of etcd members: each member's peer address, and the cluster's
    /// token. Node `i` is member `n{i}`.
    etcd: Option<EtcdMembers>,
}

struct EtcdMembers {
    peer_addrs: BTreeMap<NodeId, String>,
    token: String,
}

/// Starts `cmd` as a replica that cannot outlive this process.
///
/// - **Its own process group** (`process_group(0)`): a terminal's Ctrl-C (SIGINT to the
///   foreground group) reaches only the caller, which stops its replicas in order (the load
///   generator writes its results first), instead of killing them under it.
/// - **A parent-death signal**: in the child, between fork and exec, `prctl(PR_SET_PDEATHSIG,
///   SIGKILL)`, so the kernel kills the replica when its parent dies, even by SIGKILL. If the
///   parent died before the `prctl` took effect, the signal would never come: the child then
///   sees a `getppid()` other than the pid captured before the fork and exits at once.
///
/// Linux sends the parent-death signal when the *thread* that forked the child exits, not
/// the process. A replica started from a short-lived thread (a tokio blocking-pool thread, a
/// test's helper thread) would be killed when that thread ends. So every replica is forked
/// by one spawner thread that lives as long as the process.
fn spawn_bound_to_this_process(mut cmd: Command) -> std::io::Result<Child> {
    use std::os::unix::process::CommandExt;
    use std::sync::mpsc;
    use std::sync::{Mutex, OnceLock};

    type Request = (Command, mpsc::Sender<std::io::Result<Child>>);
    static SPAWNER: OnceLock<Mutex<mpsc::Sender<Request>>> = OnceLock::new();

    let parent = nix::unistd::getpid();
    cmd.process_group(0);
    // SAFETY: the closure runs in the child between fork and exec, and only makes two
    // async-signal-safe system calls (prctl, getppid) and `_exit`; it allocates nothing and
    // takes no lock.
    unsafe {
        cmd.pre_exec(move || {
            nix::sys::prctl::set_pdeathsig(Signal::SIGKILL)?;
            if nix::unistd::getppid() != parent {
                // The parent is already gone: a replica nobody will stop.
                nix::libc::_exit(1);
            }
            Ok(())
        });
    }
    let spawner = SPAWNER.get_or_init(|| {
        let (tx, rx) = mpsc::channel::<Request>();
        std::thread::Builder::new()
            .name("replica-spawner".into())
            .spawn(move || {
                for (mut cmd, reply) in rx {
                    let _ = reply.send(cmd.spawn());
                }
            })
            .expect("start the replica spawner thread");
        Mutex::new(tx)
    });
    let (reply, answer) = mpsc::channel();
    spawner
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .send((cmd, reply))
        .map_err(|_| std::io::Error::other("the replica spawner thread is gone"))?;
    answer
        .recv()
        .map_err(|_| std::io::Error::other("the replica spawner thread is gone"))?
}

/// Sends `signal` to a child process we started and have not reaped.
fn signal(child: &Child, signal: Signal) -> std::io::Result<()> {
    let pid = i32::try_from(child.id()).map_err(std::io::Error::other)?;
    kill(Pid::from_raw(pid), signal)?;
    Ok(())
}

impl LocalCluster {
    /// Starts `replicas` nodes with the `telegraft` binary at `exe`, node `i` on
    /// `127.0.0.1:base_port+i-1`. `extra` arguments are passed to every `telegraft node`.
    pub fn start(
        exe: &Path,
        replicas: u64,
        base_port: u16,
        data_dir: &Path,
        extra: &[String],
    ) -> std::io::Result<LocalCluster> {
        let addrs: BTreeMap<NodeId, String> = (1..=replicas)
            .map(|i| (i, format!("127.0.0.1:{}", u64::from(base_port) + i - 1)))
            .collect();
        LocalCluster::start_on(exe, addrs, data_dir, extra)
    }

    /// Starts one node per entry of `addrs` (node id to `host:port`), each with `extra`.
    pub fn start_on(
        exe: &Path,
        addrs: BTreeMap<NodeId, String>,
        data_dir: &Path,
        extra: &[String],
    ) -> std::io::Result<LocalCluster> {
        LocalCluster::start_with_metrics(exe, addrs, data_dir, extra, BTreeMap::new())
    }

    /// [`LocalCluster::start_on`], each node also serving Prometheus metrics on a free
    /// loopback port of its own (`--metrics-listen`; see [`LocalCluster::metrics_addr`]). A
    /// restarted node keeps its metrics port.
    pub fn start_on_with_metrics(
        exe: &Path,
        addrs: BTreeMap<NodeId, String>,
        data_dir: &Path,
        extra: &[String],
    ) -> std::io::Result<LocalCluster> {
        let mut metrics = BTreeMap::new();
        for id in addrs.keys() {
            let port = std::net::TcpListener::bind("127.0.0.1:0")?
                .local_addr()?
                .port();
            metrics.insert(*id, format!("127.0.0.1:{port}"));
        }
        LocalCluster::start_with_metrics(exe, addrs, data_dir, extra, metrics)
    }

    /// Node `id`'s metrics address (`host:port`, served at `/metrics`), if it has one.
    pub fn metrics_addr(&self, id: NodeId) -> Option<&str> {
        self.metrics.get(&id).map(String::as_str)
    }

    /// [`LocalCluster::start_on`], node `id` also serving Prometheus metrics on `metrics[id]`
    /// (`host:port`). For callers that pick every port themselves, e.g. from a block outside
    /// the kernel's ephemeral range, which outgoing connections cannot take in the meantime.
    pub fn start_with_metrics(
        exe: &Path,
        addrs: BTreeMap<NodeId, String>,
        data_dir: &Path,
        extra: &[String],
        metrics: BTreeMap<NodeId, String>,
    ) -> std::io::Result<LocalCluster> {
        let peers = addrs
            .iter()
            .map(|(i, a)| format!("{i}={a}"))
            .collect::<Vec<_>>()
            .join(",");
        LocalCluster::launch(exe, addrs, data_dir, peers, extra, metrics, None)
    }

    /// Starts one etcd member per entry of `addrs` (node id to the client `host:port`),
    /// member `i` named `n{i}`, talking to the others on `peer_addrs[i]`, with its data in
    /// `DIR/node-I/etcd` and its log in `DIR/node-I/node.log`, as one new cluster. A member
    /// restarted after a kill finds its data and rejoins (etcd ignores the initial-cluster
    /// flags then). `exe` is the `etcd` binary (Debian's `etcd-server`: `/usr/bin/etcd`);
    /// `extra` arguments are passed to every member (`--heartbeat-interval 50`, ...).
    pub fn start_etcd(
        exe: &Path,
        addrs: BTreeMap<NodeId, String>,
        peer_addrs: BTreeMap<NodeId, String>,
        data_dir: &Path,
        extra: &[String],
    ) -> std::io::Result<LocalCluster> {
        if addrs.keys().ne(peer_addrs.keys()) {
            return Err(std::io::Error::other(
                "every etcd member needs a client and a peer address",
            ));
        }
        let peers = peer_addrs
            .iter()
            .map(|(i, a)| format!("n{i}=http://{a}"))
            .collect::<Vec<_>>()
            .join(",");
        // A token of its own, so that members of two clusters started one after the other
        // on reused ports never take each other's messages.
        let token = format!(
            "telegraft-{}-{}",
            std::process::id(),
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_nanos())
        );
        let members = Some(EtcdMembers { peer_addrs, token });
        LocalCluster::launch(exe, addrs, data_dir, peers, extra, BTreeMap::new(), members)
    }

    /// Whether the nodes are etcd members ([`LocalCluster::start_etcd`]).
    pub fn is_etcd(&self) -> bool {
        self.etcd.is_some()
    }

    /// The command line of etcd member `id`.
    fn etcd_command(&self, id: NodeId, members: &EtcdMembers, dir: &Path) -> Command {
        let client = format!("http://{}", self.addrs[&id]);
        let peer = format!("http://{}", members.peer_addrs[&id]);
        let mut cmd = Command::new(&self.exe);
        cmd.arg("--name")
            .arg(format!("n{id}"))
            .arg("--data-dir")
            .arg(dir.join("etcd"))
            .args(["--listen-client-urls", &client])
            .args(["--advertise-client-urls", &client])
            .args(["--listen-peer-urls", &peer])
            .args(["--initial-advertise-peer-urls", &peer])
            .args(["--initial-cluster", &self.peers])
            .args(["--initial-cluster-token", &members.token])
            .args(["--initial-cluster-state", "new"])
            .args(&self.extra);
        cmd
    }

    /// Starts every node of a new cluster (replicas, or etcd members with `etcd`).
    fn launch(
        exe: &Path,
        addrs: BTreeMap<NodeId, String>,
        data_dir: &Path,
        peers: String,
        extra: &[String],
        metrics: BTreeMap<NodeId, String>,
        etcd: Option<EtcdMembers>,
    ) -> std::io::Result<LocalCluster> {
        let mut cluster = LocalCluster {
            addrs,
            data_dir: data_dir.to_path_buf(),
            children: BTreeMap::new(),
            exe: exe.to_path_buf(),
            peers,
            extra: extra.to_vec(),
            metrics,
            etcd,
        };
        let ids: Vec<NodeId> = cluster.addrs.keys().copied().collect();
        for id in ids {
            cluster.spawn(id)?;
        }
        Ok(cluster)
    }

    /// Starts node `id` (again), on its own data directory, appending to its log.
    fn spawn(&mut self, id: NodeId) -> std::io::Result<()> {
        let dir = self.node_dir(id);
        std::fs::create_dir_all(&dir)?;
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.log_path(id))?;
        if let Some(members) = &self.etcd {
            let mut cmd = self.etcd_command(id, members, &dir);
            cmd.stdout(Stdio::null()).stderr(log);
            let child = spawn_bound_to_this_process(cmd)?;
            self.children.insert(id, child);
            return Ok(());
        }
        let mut cmd = Command::new(&self.exe);
        cmd.args([
            "node",
            "--id",
            &id.to_string(),
            "--listen",
            &self.addrs[&id],
            "--peers",
            &self.peers,
        ])
        .arg("--data-dir")
        .arg(&dir)
        .args(&self.extra)
        .args(
            self.metrics
                .get(&id)
                .map(|addr| ["--metrics-listen", addr.as_str()])
                .into_iter()
                .flatten(),
        )
        .stdout(Stdio::null())
        .stderr(log);
        let child = spawn_bound_to_this_process(cmd)?;
        self.children.insert(id, child);
        Ok(())
    }

    /// Kills node `id` with SIGKILL and reaps it. Its data directory stays.
    pub fn kill(&mut self, id: NodeId) -> std::io::Result<()> {
        let mut child = self
            .children
            .remove(&id)
            .ok_or_else(|| std::io::Error::other(format!("node {id} is not running")))?;
        child.kill()?;
        child.wait()?;
        Ok(())
    }

    /// Restarts a killed node on the same data directory.
    pub fn restart(&mut self, id: NodeId) -> std::io::Result<()> {
        if self.children.contains_key(&id) {
            return Err(std::io::Error::other(format!("node {id} is running")));
        }
        if !self.addrs.contains_key(&id) {
            return Err(std::io::Error::other(format!("there is no node {id}")));
        }
        self.spawn(id)
    }

    /// Freezes node `id` (SIGSTOP) or lets it run again (SIGCONT).
    pub fn pause(&self, id: NodeId, paused: bool) -> std::io::Result<()> {
        let child = self
            .children
            .get(&id)
            .ok_or_else(|| std::io::Error::other(format!("node {id} is not running")))?;
        signal(
            child,
            if paused {
                Signal::SIGSTOP
            } else {
                Signal::SIGCONT
            },
        )
    }

    /// Sends `sig` to node `id`. With `--enable-fault-injection`, SIGUSR1 makes the node's
    /// core actor panic and SIGUSR2 its storage writer (either stops the process).
    pub fn signal(&self, id: NodeId, sig: Signal) -> std::io::Result<()> {
        let child = self
            .children
            .get(&id)
            .ok_or_else(|| std::io::Error::other(format!("node {id} is not running")))?;
        signal(child, sig)
    }

    /// Waits up to `timeout` for node `id` to exit on its own. If it did, reaps it, forgets
    /// it (it can be restarted) and returns its exit status; `None` if it is still running.
    pub fn wait_exit(
        &mut self,
        id: NodeId,
        timeout: Duration,
    ) -> std::io::Result<Option<ExitStatus>> {
        let deadline = Instant::now() + timeout;
        loop {
            let child = self
                .children
                .get_mut(&id)
                .ok_or_else(|| std::io::Error::other(format!("node {id} is not running")))?;
            if let Some(status) = child.try_wait()? {
                self.children.remove(&id);
                return Ok(Some(status));
            }
            if Instant::now() >= deadline {
                return Ok(None);
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// The nodes running now (not killed).
    pub fn running(&self) -> Vec<NodeId> {
        self.children.keys().copied().collect()
    }

    /// Node `id`'s data directory.
    pub fn node_dir(&self, id: NodeId) -> PathBuf {
        self.data_dir.join(format!("node-{id}"))
    }

    /// Node `id`'s log (its stderr, appended to across restarts).
    pub fn log_path(&self, id: NodeId) -> PathBuf {
        self.node_dir(id).join("node.log")
    }

    /// The addresses of the nodes running now.
    pub fn running_addrs(&self) -> Vec<String> {
        self.children
            .keys()
            .map(|id| self.addrs[id].clone())
            .collect()
    }

    pub fn pid(&self, id: NodeId) -> Option<u32> {
        self.children.get(&id).map(|c| c.id())
    }

    /// Stops every node: SIGTERM, then SIGKILL for any still running after `grace`.
    pub fn stop(&mut self, grace: Duration) {
        for child in self.children.values() {
            // A paused node is let run first, or it would never see the SIGTERM. A node that
            // already exited fails both; the wait below reaps it.
            let _ = signal(child, Signal::SIGCONT);
            let _ = signal(child, Signal::SIGTERM);
        }
        let deadline = Instant::now() + grace;
        for child in self.children.values_mut() {
            while Instant::now() < deadline {
                if let Ok(Some(_)) = child.try_wait() {
                    break;
                }
                std::thread::sleep(Duration::from_millis(20));
            }
            let _ = child.kill();
            let _ = child.wait();
        }
        self.children.clear();
    }
}

impl Drop for LocalCluster {
    fn drop(&mut self) {
        for child in self.children.values_mut() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    /// A stand-in for `telegraft`: ignores its arguments and sleeps.
    fn sleeper(dir: &Path) -> PathBuf {
        let exe = dir.join("sleeper");
        std::fs::write(&exe, "#!/bin/sh\nexec sleep 30\n").unwrap();
        std::fs::set_permissions(&exe, std::fs::Permissions::from_mode(0o755)).unwrap();
        exe
    }

    /// The process's state letter (`R`, `S`, `Z`, ...), or `None` once it is gone.
    fn state(pid: u32) -> Option<char> {
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
        stat.rsplit_once(')')?.1.trim_start().chars().next()
    }

    #[test]
    fn a_node_outlives_the_thread_that_started_it_in_its_own_process_group() {
        let dir = tempfile::tempdir().unwrap();
        let exe = sleeper(dir.path());
        let data = dir.path().to_path_buf();
        // Started from a thread that ends at once: the parent-death signal follows the
        // forking thread, so a node forked by this thread would be killed with it.
        let mut cluster =
            std::thread::spawn(move || LocalCluster::start(&exe, 1, 1, &data, &[]).unwrap())
                .join()
                .unwrap();
        let pid = cluster.pid(1).unwrap();
        std::thread::sleep(Duration::from_millis(300));
        assert!(
            matches!(state(pid), Some(s) if s != 'Z'),
            "node {pid} died with the thread that started it: {:?}",
            state(pid)
        );
        // Its own process group, led by itself.
        let pgid = nix::unistd::getpgid(Some(Pid::from_raw(pid as i32))).unwrap();
        assert_eq!(pgid.as_raw(), pid as i32);
        assert_ne!(pgid, nix::unistd::getpgrp());
        cluster.kill(1).unwrap();
        assert_eq!(state(pid), None);
    }
}
