//! Snapshots on the wire: the two ends of a `Raft.SendSnapshot` stream, between a snapshot
//! file on the leader's disk and one on the follower's.
//!
//! A snapshot is a whole SQLite database, so neither end holds it in memory:
//! - [`outgoing`] reads the file on a blocking thread, [`SNAPSHOT_CHUNK`] bytes at a time,
//!   into a channel of [`CHUNKS_BUFFERED`] chunks that the RPC drains as HTTP/2 flow control
//!   allows. The first chunk carries the InstallSnapshot message (metadata only) and the
//!   file's size; a final chunk marked `last` carries the crc32 of the whole file.
//! - [`receive`] writes each chunk to a temporary file as it arrives (`storage::Incoming`),
//!   within a size cap (checked on the announced size before anything is written, and on
//!   every chunk) and a deadline for the whole stream. Only a stream that ends after its
//!   `last` chunk, with every announced byte and a matching crc32, becomes a snapshot file
//!   (fsync'd, renamed, directory fsync'd); the core is then handed the message. Anything
//!   else (garbage, a truncated or over-long stream, a bad checksum, a timeout) removes the
//!   temporary file and changes nothing.
//!
//! Memory per stream is a few chunks at either end, whatever the snapshot's size.

use std::time::Duration;

use futures_util::{Stream, StreamExt};
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::Status;

use super::error::RequestError;
use crate::proto::raft::SnapshotChunk;
use crate::raft::{Envelope, Message, NodeId};
use crate::storage::{Incoming, IncomingError, Outgoing, SnapshotDir, StorageError};

/// Snapshot data per streamed chunk.
pub const SNAPSHOT_CHUNK: usize = 1 << 20;
/// Chunks the sender reads ahead of the stream.
pub const CHUNKS_BUFFERED: usize = 2;

/// The chunks of an InstallSnapshot message `env` and its snapshot's file, read as the
/// stream is consumed, and the file's size. The file is opened here, so a file removed by a
/// newer compaction after this call is still sent whole (an unlinked file lives while open).
/// The reader thread stops at the end of the file, on a read error (the stream then ends
/// without its `last` chunk, which the receiver refuses), or when the stream is dropped.
pub fn outgoing(
    snapshots: &SnapshotDir,
    env: &Envelope,
    chunk_bytes: usize,
    cluster_id: &str,
) -> Result<(ReceiverStream<SnapshotChunk>, u64), StorageError> {
    let Message::InstallSnapshot { snapshot, .. } = &env.message else {
        unreachable!("outgoing is only called with an InstallSnapshot");
    };
    let mut file = Outgoing::open(snapshots, snapshot.term, snapshot.index)?;
    let header = postcard::to_allocvec(env).expect("messages encode");
    let total = file.total;
    let cluster_id = cluster_id.to_string();
    let (tx, rx) = mpsc::channel::<SnapshotChunk>(CHUNKS_BUFFERED);
    tokio::task::spawn_blocking(move || {
        let mut first = Some(header);
        loop {
            let data = match file.next_chunk(chunk_bytes) {
                Ok(d) => d,
                Err(e) => {
                    tracing::warn!("reading a snapshot file to send it: {e}");
                    return;
                }
            };
            let last = data.is_empty();
            let header = first.take();
            let chunk = SnapshotChunk {
                cluster_id: if header.is_some() {
                    cluster_id.clone()
                } else {
                    String::new()
                },
                message: header.unwrap_or_default(),
                data,
                total_bytes: total,
                last,
                crc32: if last { file.crc32() } else { 0 },
            };
            if tx.blocking_send(chunk).is_err() || last {
                return;
            }
        }
    });
    Ok((ReceiverStream::new(rx), total))
}

/// Receives one snapshot stream into a snapshot file of `snapshots`, within `max_bytes` and
/// `timeout`, and returns the InstallSnapshot message to hand the core (its file is then
/// durable). `accept` sees the first chunk's cluster id and the sender the message names,
/// and refuses a stream of another cluster, from a node the caller's certificate does not
/// name, or from a sender fault injection cuts this node off from.
///
/// Errors: [`RequestError::BadPeerMessage`] for anything the sender got wrong,
/// [`RequestError::TimedOut`] past the deadline, `accept`'s error for a refused sender, [`RequestError::Internal`] if this node's disk failed. In every case no
/// file is left behind.
pub async fn receive<S>(
    snapshots: &SnapshotDir,
    max_bytes: u64,
    timeout: Duration,
    stream: S,
    accept: impl Fn(&str, NodeId) -> Result<(), RequestError>,
) -> Result<Envelope, RequestError>
where
    S: Stream<Item = Result<SnapshotChunk, Status>> + Unpin,
{
    tokio::time::timeout(timeout, receive_all(snapshots, max_bytes, stream, accept))
        .await
        .unwrap_or(Err(RequestError::TimedOut))
}

async fn receive_all<S>(
    snapshots: &SnapshotDir,
    max_bytes: u64,
    mut stream: S,
    accept: impl Fn(&str, NodeId) -> Result<(), RequestError>,
) -> Result<Envelope, RequestError>
where
    S: Stream<Item = Result<SnapshotChunk, Status>> + Unpin,
{
    let bad = |m: String| RequestError::BadPeerMessage(m);
    let mut env: Option<Envelope> = None;
    let mut file: Option<Incoming> = None;
    let mut crc32: Option<u32> = None;
    let mut chunks = 0u64;
    while let Some(chunk) = stream.next().await {
        let chunk = chunk.map_err(|s| bad(format!("snapshot stream: {}", s.message())))?;
        chunks += 1;
        if crc32.is_some() {
            return Err(bad("snapshot data after the last chunk".into()));
        }
        let mut incoming = match file.take() {
            Some(f) => f,
            None => {
                let e: Envelope = postcard::from_bytes(&chunk.message)
                    .map_err(|e| bad(format!("bad snapshot header: {e}")))?;
                accept(&chunk.cluster_id, e.from)?;
                if !matches!(e.message, Message::InstallSnapshot { .. }) {
                    return Err(bad("not an InstallSnapshot message".into()));
                }
                if chunk.total_bytes > max_bytes {
                    return Err(bad(format!(
                        "snapshot of {} bytes is larger than the {max_bytes} allowed",
                        chunk.total_bytes
                    )));
                }
                env = Some(e);
                let (dir, total) = (snapshots.clone(), chunk.total_bytes);
                blocking(move || Ok(dir.incoming(total)?)).await?
            }
        };
        if !chunk.data.is_empty() {
            let data = chunk.data;
            incoming = blocking(move || {
                incoming.write(&data)?;
                Ok(incoming)
            })
            .await?;
        }
        if chunk.last {
            crc32 = Some(chunk.crc32);
        }
        file = Some(incoming);
    }
    let env = env.ok_or_else(|| bad("empty snapshot stream".into()))?;
    let (Some(incoming), Some(crc32)) = (file, crc32) else {
        return Err(bad("snapshot stream ended before its last chunk".into()));
    };
    let Message::InstallSnapshot { snapshot, .. } = &env.message else {
        unreachable!("checked with the header");
    };
    let (term, index, bytes) = (snapshot.term, snapshot.index, incoming.written());
    blocking(move || incoming.finish(crc32, term, index)).await?;
    tracing::info!(index, bytes, chunks, "snapshot received");
    Ok(env)
}

/// Runs file work on a blocking thread. A refused stream is the sender's fault; a failed
/// disk is this node's.
async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, IncomingError> + Send + 'static,
) -> Result<T, RequestError> {
    match tokio::task::spawn_blocking(f).await {
        Ok(Ok(t)) => Ok(t),
        Ok(Err(IncomingError::Storage(e))) => Err(RequestError::Internal(format!(
            "writing a received snapshot: {e}"
        ))),
        Ok(Err(e)) => Err(RequestError::BadPeerMessage(format!(
            "snapshot refused: {e}"
        ))),
        Err(e) => Err(RequestError::Internal(format!(
            "writing a received snapshot: {e}"
        ))),
    }
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use super::*;
    use crate::chat::{ChatStore, Command, Write};
    use crate::raft::{Entry, Snapshot};

    fn files(dir: &Path) -> Vec<String> {
        let mut v: Vec<String> = std::fs::read_dir(dir.join("snapshots"))
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        v.sort();
        v
    }

    fn install(term: u64, index: u64) -> Envelope {
        Envelope {
            from: 1,
            to: 2,
            term,
            message: Message::InstallSnapshot {
                snapshot: Snapshot {
                    index,
                    term,
                    data: vec![],
                },
                read_seq: 0,
            },
        }
    }

    /// A chat store with `n` users and a few hundred KiB of messages, snapshotted as the
    /// applier does: (leader data dir, store, snapshot dir).
    fn leader(n: u64) -> (tempfile::TempDir, ChatStore, SnapshotDir) {
        let dir = tempfile::tempdir().unwrap();
        let mut store = ChatStore::open(&dir.path().join("chat.sqlite")).unwrap();
        let entries: Vec<Entry> = (1..=n)
            .map(|index| Entry {
                index,
                term: 3,
                command: Some(
                    Write {
                        session: None,
                        command: Command::CreateUser {
                            username: format!("user{index}-{}", "x".repeat(50)),
                        },
                        proposed_at_us: 0,
                    }
                    .encode(),
                ),
            })
            .collect();
        store.apply(&entries).unwrap();
        let snapshots = SnapshotDir::open(dir.path(), 0, 0).unwrap();
        snapshots
            .create::<crate::server::fatal::Fatal>(3, n, |tmp| Ok(store.snapshot_to(tmp)?))
            .unwrap();
        (dir, store, snapshots)
    }

    async fn chunks(snapshots: &SnapshotDir, env: &Envelope, chunk: usize) -> Vec<SnapshotChunk> {
        let (stream, _) = outgoing(snapshots, env, chunk, "c").unwrap();
        stream.collect::<Vec<_>>().await
    }

    async fn recv(
        snapshots: &SnapshotDir,
        chunks: Vec<SnapshotChunk>,
    ) -> Result<Envelope, RequestError> {
        let stream = futures_util::stream::iter(chunks.into_iter().map(Ok));
        receive(
            snapshots,
            1 << 30,
            Duration::from_secs(10),
            stream,
            |_, _| Ok(()),
        )
        .await
    }

    /// Made by the leader's store, streamed in small chunks, received and installed by a
    /// follower's store: the follower ends with the leader's state.
    #[tokio::test]
    async fn a_snapshot_is_made_streamed_received_and_installed() {
        let (_l, store, leader) = leader(2000);
        let env = install(3, 2000);
        let (stream, total) = outgoing(&leader, &env, 16 << 10, "c").unwrap();
        assert!(total > 64 << 10, "several chunks: {total}");
        let f = tempfile::tempdir().unwrap();
        let follower = SnapshotDir::open(f.path(), 0, 0).unwrap();
        let got = receive(
            &follower,
            1 << 30,
            Duration::from_secs(10),
            stream.map(Ok::<_, Status>),
            |_, _| Ok(()),
        )
        .await
        .unwrap();
        assert_eq!(got, env);
        assert_eq!(files(f.path()), vec!["snap-3-2000.db"]);
        let mut fstore = ChatStore::open(&f.path().join("chat.sqlite")).unwrap();
        fstore.restore_from(&follower.path(3, 2000)).unwrap();
        assert_eq!(fstore.applied_index().unwrap(), 2000);
        assert_eq!(fstore.digest(), store.digest());
        assert_eq!(fstore.digest(), fstore.recompute_digest().unwrap());
    }

    /// Every way a stream can be wrong is refused, and leaves no file behind.
    #[tokio::test]
    async fn a_truncated_corrupt_or_oversized_stream_is_refused_and_changes_nothing() {
        let (_l, _store, leader) = leader(300);
        let env = install(3, 300);
        let good = chunks(&leader, &env, 4 << 10).await;
        assert!(good.len() > 4);
        let f = tempfile::tempdir().unwrap();
        let follower = SnapshotDir::open(f.path(), 0, 0).unwrap();
        let refused = |r: Result<Envelope, RequestError>| match r {
            Err(RequestError::BadPeerMessage(m)) => m,
            other => panic!("expected a refusal, got {other:?}"),
        };
        let n = good.len();
        // Truncated: the last chunk missing, or a data chunk missing.
        refused(recv(&follower, good[..n - 1].to_vec()).await);
        let mut gap = good.clone();
        gap.remove(2);
        assert!(refused(recv(&follower, gap).await).contains("received"));
        // A flipped bit in the data.
        let mut flipped = good.clone();
        flipped[1].data[100] ^= 1;
        assert!(refused(recv(&follower, flipped).await).contains("checksum"));
        // A wrong checksum.
        let mut wrong = good.clone();
        wrong[n - 1].crc32 ^= 1;
        assert!(refused(recv(&follower, wrong).await).contains("checksum"));
        // More data than announced.
        let mut long = good.clone();
        long.insert(1, long[1].clone());
        assert!(refused(recv(&follower, long).await).contains("more data"));
        // Chunks after the last one.
        let mut after = good.clone();
        after.push(good[1].clone());
        refused(recv(&follower, after).await);
        // Larger than the cap, refused on the announced size before anything is written.
        let mut huge = good.clone();
        huge[0].total_bytes = 1 << 40;
        assert!(refused(recv(&follower, huge).await).contains("larger than"));
        let small_cap = receive(
            &follower,
            1000,
            Duration::from_secs(10),
            futures_util::stream::iter(good.clone().into_iter().map(Ok)),
            |_, _| Ok(()),
        )
        .await;
        assert!(refused(small_cap).contains("larger than"));
        assert!(files(f.path()).is_empty(), "{:?}", files(f.path()));
        // The good stream, after all that, is taken.
        assert_eq!(recv(&follower, good).await.unwrap(), env);
        assert_eq!(files(f.path()), vec!["snap-3-300.db"]);
    }

    /// A stream that stops sending is cut at the deadline, and its partial file removed.
    #[tokio::test]
    async fn a_stalled_stream_times_out_and_changes_nothing() {
        let (_l, _store, leader) = leader(300);
        let good = chunks(&leader, &install(3, 300), 4 << 10).await;
        let f = tempfile::tempdir().unwrap();
        let follower = SnapshotDir::open(f.path(), 0, 0).unwrap();
        let stalled = futures_util::stream::iter(good[..3].iter().cloned().map(Ok))
            .chain(futures_util::stream::pending());
        let r = receive(
            &follower,
            1 << 30,
            Duration::from_millis(300),
            stalled,
            |_, _| Ok(()),
        )
        .await;
        assert!(matches!(r, Err(RequestError::TimedOut)), "{r:?}");
        // The abandoned write may still be finishing on its blocking thread.
        for _ in 0..100 {
            if files(f.path()).is_empty() {
                break;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        assert!(files(f.path()).is_empty(), "{:?}", files(f.path()));
    }
}
