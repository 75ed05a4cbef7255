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
        };
        for id in 1..=replicas {
            let dir = cluster.node_dir(id);
            std::fs::create_dir_all(&dir)?;
            let log = std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(dir.join("node.log"))?;
            let child = Command::new(exe)
                .args([
                    "node",
                    "--id",
                    &id.to_string(),
                    "--listen",
                    &cluster.addrs[&id],
                    "--peers",
                    &peers,
                ])
                .arg("--data-dir")
                .arg(&dir)
                .args(extra)
                .stdout(Stdio::null())
                .stderr(log)
                .spawn()?;
            cluster.children.insert(id, child);
        }
        Ok(cluster)
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
            // SAFETY: sending SIGTERM to a child process we started.
            unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
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
