//! Starting and stopping a local cluster of `telegraft node` processes on loopback.
//!
//! Used by `telegraft cluster`, by the benchmarks, and by the load generator (which starts a
//! fresh cluster per run). Each node gets its own data directory (`DIR/node-I`, with its log
//! in `DIR/node-I/node.log`) and listens on `127.0.0.1:BASE+I-1`. Dropping a
//! [`LocalCluster`] kills whatever is still running, so a failing caller leaves no strays.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::raft::NodeId;

pub struct LocalCluster {
    pub addrs: BTreeMap<NodeId, String>,
    pub data_dir: PathBuf,
    children: BTreeMap<NodeId, Child>,
    exe: PathBuf,
    peers: String,
    extra: Vec<String>,
}

impl LocalCluster {
    /// Starts `replicas` nodes with the `telegraft` binary at `exe`. `extra` arguments are
    /// passed to every `telegraft node`.
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
        let peers = addrs
            .iter()
            .map(|(i, a)| format!("{i}={a}"))
            .collect::<Vec<_>>()
            .join(",");
        let mut cluster = LocalCluster {
            addrs,
            data_dir: data_dir.to_path_buf(),
            children: BTreeMap::new(),
            exe: exe.to_path_buf(),
            peers,
            extra: extra.to_vec(),
        };
        for id in 1..=replicas {
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
            .open(dir.join("node.log"))?;
        let child = Command::new(&self.exe)
            .args([
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
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()?;
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
        let pid = self
            .pid(id)
            .ok_or_else(|| std::io::Error::other(format!("node {id} is not running")))?;
        let signal = if paused { libc::SIGSTOP } else { libc::SIGCONT };
        // SAFETY: sending a signal to a child process we started and have not reaped.
        if unsafe { libc::kill(pid as i32, signal) } != 0 {
            return Err(std::io::Error::last_os_error());
        }
        Ok(())
    }

    /// The nodes running now (not killed).
    pub fn running(&self) -> Vec<NodeId> {
        self.children.keys().copied().collect()
    }

    pub fn node_dir(&self, id: NodeId) -> PathBuf {
        self.data_dir.join(format!("node-{id}"))
    }

    pub fn pid(&self, id: NodeId) -> Option<u32> {
        self.children.get(&id).map(|c| c.id())
    }

    /// Stops every node: SIGTERM, then SIGKILL for any still running after `grace`.
    pub fn stop(&mut self, grace: Duration) {
        for child in self.children.values() {
            // SAFETY: signalling a child process we started. A paused node is let run first,
            // or it would never see the SIGTERM.
            unsafe {
                libc::kill(child.id() as i32, libc::SIGCONT);
                libc::kill(child.id() as i32, libc::SIGTERM);
            }
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
