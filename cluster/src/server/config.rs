//! What one replica is told at startup.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use crate::raft::{NodeId, Options};
use crate::security::DEFAULT_CLUSTER_ID;
use crate::security::tls::NodeTls;
use crate::security::token::Keyring;

/// Everything needed to run one replica.
#[derive(Clone, Debug)]
pub struct NodeConfig {
    pub id: NodeId,
    pub listen: SocketAddr,
    /// Every member's address, this node included.
    pub peers: BTreeMap<NodeId, String>,
    pub data_dir: PathBuf,
    /// Real time per Raft tick (the core's timeouts are in ticks).
    pub tick: Duration,
    /// Take a snapshot and compact the log once this many entries were applied since the
    /// last one (0: no entry trigger).
    pub snapshot_every: u64,
    /// ... or once this many bytes of commands were applied since the last one (0: no byte
    /// trigger). Both 0: never.
    pub snapshot_bytes: u64,
    /// Log segment size in bytes.
    pub segment_bytes: u64,
    pub options: Options,
    /// Accept Admin.SetPartition (off unless asked for: it lets anyone who reaches the port
    /// cut this node off).
    pub fault_injection: bool,
    /// Client proposals and reads inside this replica at once (including those it forwards
    /// to the leader); one more is answered RESOURCE_EXHAUSTED without being queued.
    pub max_inflight: usize,
    /// Where to serve Prometheus metrics at `/metrics` (`--metrics-listen`); `None`: no
    /// listener, and every metric records into a no-op handle.
    pub metrics_listen: Option<SocketAddr>,
    /// Group commit (one fdatasync for every append queued) and replication of up to
    /// `options.max_append_entries` entries per message; off (`--batching off`): one
    /// fdatasync per entry and one entry per message, the baseline that shows what
    /// batching buys.
    pub batching: bool,
    /// The cluster this node belongs to: sent with every peer message, and a peer of
    /// another cluster is refused. With TLS, the one the node certificate names.
    pub cluster_id: String,
    /// TLS (`--tls-dir`): served to every caller, and presented to peers.
    pub tls: Option<NodeTls>,
    /// The keys chat tokens are signed and checked with (`--auth-key`).
    pub keyring: Option<Keyring>,
    /// Chat calls need a token (`--require-auth`).
    pub require_auth: bool,
    /// How long a token from `Login` is good for.
    pub token_ttl: Duration,
    /// Serve plaintext on a non-loopback address (`--insecure`); otherwise refused.
    pub insecure: bool,
}

impl NodeConfig {
    /// A configuration with the defaults: 10 ms ticks, a snapshot every 10,000 entries or 16 MiB,
    /// 64 MiB log segments, no fault injection, 4,096 client requests in flight, no metrics,
    /// cluster id `telegraft`, no TLS, no authentication (tokens good for an hour once on).
    pub fn new(
        id: NodeId,
        listen: SocketAddr,
        peers: BTreeMap<NodeId, String>,
        data_dir: PathBuf,
    ) -> NodeConfig {
        NodeConfig {
            id,
            listen,
            peers,
            data_dir,
            tick: Duration::from_millis(10),
            snapshot_every: 10_000,
            snapshot_bytes: 16 << 20,
            segment_bytes: 64 << 20,
            options: Options::default(),
            fault_injection: false,
            max_inflight: 4096,
            metrics_listen: None,
            batching: true,
            cluster_id: DEFAULT_CLUSTER_ID.to_string(),
            tls: None,
            keyring: None,
            require_auth: false,
            token_ttl: Duration::from_secs(3600),
            insecure: false,
        }
    }

    /// How this node reaches its peers (cluster id, TLS).
    pub(super) fn transport(&self) -> super::peer::Transport {
        super::peer::Transport {
            cluster_id: self.cluster_id.as_str().into(),
            tls: self.tls.as_ref().map(|t| t.client.clone()),
        }
    }

    /// Turns batching on or off (see [`NodeConfig::batching`]).
    pub fn set_batching(&mut self, on: bool) {
        self.batching = on;
        self.options.max_append_entries = if on {
            Options::default().max_append_entries
        } else {
            1
        };
    }

    /// Sets the heartbeat interval and the shortest election timeout (each timeout is drawn
    /// between it and twice it), as whole ticks. Refuses what the core cannot run with: a
    /// time that is not a whole number of ticks, or an election timeout not above the
    /// heartbeat.
    pub fn set_timing(&mut self, heartbeat: Duration, election: Duration) -> Result<(), String> {
        let ticks = |what: &str, d: Duration| -> Result<u64, String> {
            let tick = self.tick.as_nanos();
            if d.is_zero() || !d.as_nanos().is_multiple_of(tick) {
                return Err(format!(
                    "{what} {d:?} is not a whole number of {:?} ticks",
                    self.tick
                ));
            }
            Ok((d.as_nanos() / tick) as u64)
        };
        let (h, e) = (
            ticks("--heartbeat", heartbeat)?,
            ticks("--election-timeout", election)?,
        );
        if e <= h {
            return Err(format!(
                "--election-timeout {election:?} must be longer than --heartbeat {heartbeat:?}"
            ));
        }
        self.options.heartbeat_ticks = h;
        self.options.election_ticks_min = e;
        self.options.election_ticks_max = 2 * e;
        Ok(())
    }

    /// The members other than this node.
    pub(super) fn other_peers(&self) -> impl Iterator<Item = (NodeId, &str)> {
        self.peers
            .iter()
            .filter(|(id, _)| **id != self.id)
            .map(|(id, addr)| (*id, addr.as_str()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config() -> NodeConfig {
        NodeConfig::new(
            1,
            "127.0.0.1:0".parse().unwrap(),
            BTreeMap::new(),
            PathBuf::from("unused"),
        )
    }

    #[test]
    fn timing_is_set_in_whole_ticks_with_elections_above_heartbeats() {
        let mut c = config();
        c.set_timing(Duration::from_millis(100), Duration::from_millis(500))
            .unwrap();
        let o = &c.options;
        assert_eq!(
            (
                o.heartbeat_ticks,
                o.election_ticks_min,
                o.election_ticks_max
            ),
            (10, 50, 100)
        );
        let err = c
            .set_timing(Duration::from_millis(15), Duration::from_millis(150))
            .unwrap_err();
        assert!(err.contains("whole number"), "{err}");
        let err = c
            .set_timing(Duration::from_millis(50), Duration::from_millis(50))
            .unwrap_err();
        assert!(err.contains("longer than --heartbeat"), "{err}");
        assert!(
            c.set_timing(Duration::ZERO, Duration::from_millis(50))
                .is_err()
        );
    }

    #[test]
    fn batching_off_sends_one_entry_per_append() {
        let mut c = config();
        assert!(c.batching);
        c.set_batching(false);
        assert_eq!((c.batching, c.options.max_append_entries), (false, 1));
        c.set_batching(true);
        assert_eq!(
            c.options.max_append_entries,
            Options::default().max_append_entries
        );
    }
}

/// The node id a host name gives (`telegraft node --id-from-hostname`): the ordinal after
/// the last `-` of its first label, plus one. A StatefulSet names its pods `<name>-0`,
/// `<name>-1`, ... and the compose file its replicas the same way, so one manifest serves
/// every replica, and ids start at 1 as Raft's do here.
pub fn id_from_hostname(host: &str) -> Result<NodeId, String> {
    let label = host.trim().split('.').next().unwrap_or_default();
    let ordinal = label
        .rsplit_once('-')
        .map(|(_, n)| n)
        .filter(|n| !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit()))
        .ok_or_else(|| {
            format!("host name '{host}' does not end in -<ordinal> (such as telegraft-0)")
        })?;
    let ordinal: NodeId = ordinal
        .parse()
        .map_err(|_| format!("host name '{host}': ordinal out of range"))?;
    ordinal
        .checked_add(1)
        .ok_or_else(|| format!("host name '{host}': ordinal out of range"))
}

#[cfg(test)]
mod hostname_tests {
    use super::id_from_hostname;

    #[test]
    fn the_ordinal_plus_one_is_the_id() {
        assert_eq!(id_from_hostname("telegraft-0"), Ok(1));
        assert_eq!(id_from_hostname("telegraft-4\n"), Ok(5));
        assert_eq!(id_from_hostname("my-chat-12.telegraft.default.svc"), Ok(13));
    }

    #[test]
    fn a_name_without_an_ordinal_is_refused() {
        for bad in [
            "telegraft",
            "telegraft-",
            "telegraft-x1",
            "",
            "a-1x",
            "t-99999999999999999999",
        ] {
            assert!(id_from_hostname(bad).is_err(), "{bad}");
        }
    }
}
