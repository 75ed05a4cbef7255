//! Metrics: what the actors observe about the Raft core and themselves, served in the
//! Prometheus text format at `/metrics` (`telegraft node --metrics-listen ADDR`).
//!
//! Where each family is observed (the names are listed in `cluster/README.md`, "Metrics"):
//! - the **core actor** reads `core.status()` after each round (term, role, indexes, leader
//!   changes) and the outputs it drains: entries per append sent, proposal to commit (it
//!   time-stamps proposals as it hands them to the core), ReadIndex rounds; and the depth of
//!   the queues it feeds (its inbox, the storage writer's, each peer sender's);
//! - the **storage writer** times each fdatasync and counts what it carried;
//! - the **applier** times commit to apply, snapshots taken and installed, and keeps its own
//!   queue depth (a std channel has no length: senders count up, the applier counts down);
//! - the **services** count proposals refused before the core saw them and forwarded
//!   requests, and a tower layer ([`GrpcMetricsLayer`]) times every gRPC call by method and
//!   status code.
//!
//! The Raft core knows nothing of this: it stays synchronous, deterministic and free of any
//! global state, so the simulator and the golden scripts see exactly what they did before.
//!
//! Cost on the hot path: every handle is registered once at startup ([`Metrics`]) and is an
//! atomic counter or gauge, or a histogram's lock-free sample buffer, inside the exporter's
//! registry; recording formats nothing (the buffers grow in blocks, and are folded into
//! the buckets every second whether anyone scrapes or not, so they stay small). gRPC histograms are registered on first use of a (method,
//! code) pair and then found in a fixed table. Nothing is registered in a global recorder:
//! each replica has its own ([`Exporter`]), so replicas started in one process (tests) keep
//! their numbers apart, and a replica without `--metrics-listen` records into no-op handles.

use std::collections::{BTreeMap, HashMap};
use std::convert::Infallible;
use std::future::Future;
use std::ops::Deref;
use std::pin::Pin;
use std::sync::{Arc, OnceLock};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use http_body_util::Full;
use hyper::body::Bytes;
use metrics::{
    Counter, Gauge, Histogram, NoopRecorder, Recorder, Unit, counter, describe_counter,
    describe_gauge, describe_histogram, gauge, histogram,
};
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusRecorder};
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::JoinSet;

use crate::raft::{NodeId, Role};

/// Latency buckets (seconds): 25 µs to 10 s.
const LATENCY: &[f64] = &[
    25e-6, 50e-6, 100e-6, 250e-6, 500e-6, 1e-3, 2.5e-3, 5e-3, 10e-3, 25e-3, 50e-3, 100e-3, 250e-3,
    500e-3, 1.0, 2.5, 5.0, 10.0,
];
/// Snapshot durations (seconds): 1 ms to 2 min.
const SNAPSHOT_LATENCY: &[f64] = &[
    1e-3, 5e-3, 10e-3, 50e-3, 100e-3, 250e-3, 500e-3, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0,
];
/// Counts (entries, reads): powers of two, 1 to 4096.
const COUNTS: &[f64] = &[
    1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0, 128.0, 256.0, 512.0, 1024.0, 2048.0, 4096.0,
];
/// Bytes per fdatasync: powers of four, 256 B to 64 MiB.
const BYTES: &[f64] = &[
    256.0, 1024.0, 4096.0, 16384.0, 65536.0, 262144.0, 1048576.0, 4194304.0, 16777216.0, 67108864.0,
];

const HISTOGRAMS: &[(&str, &[f64])] = &[
    ("telegraft_raft_append_batch_entries", COUNTS),
    ("telegraft_storage_fsync_seconds", LATENCY),
    ("telegraft_storage_fsync_entries", COUNTS),
    ("telegraft_storage_fsync_bytes", BYTES),
    ("telegraft_raft_commit_seconds", LATENCY),
    ("telegraft_raft_apply_seconds", LATENCY),
    ("telegraft_raft_read_index_seconds", LATENCY),
    ("telegraft_raft_reads_per_round", COUNTS),
    ("telegraft_snapshot_seconds", SNAPSHOT_LATENCY),
    ("telegraft_grpc_server_handling_seconds", LATENCY),
];

/// One replica's pre-registered metric handles. Cheap to clone (one `Arc`).
#[derive(Clone)]
pub struct Metrics(Arc<Handles>);

/// The handles themselves; see the module docs for who records what.
pub struct Handles {
    pub term: Gauge,
    pub role: Gauge,
    pub leader_changes: Counter,
    pub commit_index: Gauge,
    pub applied_index: Gauge,
    pub last_log_index: Gauge,
    /// Appended to the log by the leader's core.
    pub proposals_accepted: Counter,
    /// Refused by the core: not the leader (the service then forwards or waits).
    pub proposals_not_leader: Counter,
    /// Refused before the core: its inbox was full.
    pub proposals_overloaded: Counter,
    /// Refused before the core: the command failed validation.
    pub proposals_invalid: Counter,
    pub append_batch_entries: Histogram,
    pub fsync_seconds: Histogram,
    pub fsync_entries: Histogram,
    pub fsync_bytes: Histogram,
    pub commit_seconds: Histogram,
    pub apply_seconds: Histogram,
    pub read_index_seconds: Histogram,
    pub reads_per_round: Histogram,
    pub forwarded: Counter,
    pub queue_core: Gauge,
    pub queue_storage: Gauge,
    pub queue_applier: Gauge,
    pub queue_peers: BTreeMap<NodeId, Gauge>,
    pub snapshots: Counter,
    pub snapshot_bytes: Gauge,
    pub snapshot_seconds: Histogram,
}

impl Deref for Metrics {
    type Target = Handles;
    fn deref(&self) -> &Handles {
        &self.0
    }
}

impl Metrics {
    /// Handles that record nothing (a replica without `--metrics-listen`).
    pub fn noop(peers: impl IntoIterator<Item = NodeId>) -> Metrics {
        Metrics::register(&NoopRecorder, peers)
    }

    /// Registers (and describes) every family in `recorder`, with a queue gauge per peer.
    pub fn register(recorder: &dyn Recorder, peers: impl IntoIterator<Item = NodeId>) -> Metrics {
        metrics::with_local_recorder(recorder, || {
            describe();
            let proposals = |outcome: &'static str| counter!("telegraft_raft_proposals_total", "outcome" => outcome);
            let queue = |name: String| gauge!("telegraft_queue_depth", "queue" => name);
            Metrics(Arc::new(Handles {
                term: gauge!("telegraft_raft_term"),
                role: gauge!("telegraft_raft_role"),
                leader_changes: counter!("telegraft_raft_leader_changes_total"),
                commit_index: gauge!("telegraft_raft_commit_index"),
                applied_index: gauge!("telegraft_raft_applied_index"),
                last_log_index: gauge!("telegraft_raft_last_log_index"),
                proposals_accepted: proposals("accepted"),
                proposals_not_leader: proposals("not_leader"),
                proposals_overloaded: proposals("overloaded"),
                proposals_invalid: proposals("invalid"),
                append_batch_entries: histogram!("telegraft_raft_append_batch_entries"),
                fsync_seconds: histogram!("telegraft_storage_fsync_seconds"),
                fsync_entries: histogram!("telegraft_storage_fsync_entries"),
                fsync_bytes: histogram!("telegraft_storage_fsync_bytes"),
                commit_seconds: histogram!("telegraft_raft_commit_seconds"),
                apply_seconds: histogram!("telegraft_raft_apply_seconds"),
                read_index_seconds: histogram!("telegraft_raft_read_index_seconds"),
                reads_per_round: histogram!("telegraft_raft_reads_per_round"),
                forwarded: counter!("telegraft_requests_forwarded_total"),
                queue_core: queue("core".into()),
                queue_storage: queue("storage".into()),
                queue_applier: queue("applier".into()),
                queue_peers: peers
                    .into_iter()
                    .map(|id| (id, queue(format!("peer-{id}"))))
                    .collect(),
                snapshots: counter!("telegraft_snapshots_total"),
                snapshot_bytes: gauge!("telegraft_snapshot_bytes"),
                snapshot_seconds: histogram!("telegraft_snapshot_seconds"),
            }))
        })
    }

    /// The role as the `telegraft_raft_role` gauge encodes it.
    pub fn set_role(&self, role: Role) {
        self.role.set(match role {
            Role::Follower => 0.0,
            Role::Candidate => 1.0,
            Role::Leader => 2.0,
        });
    }
}

/// The HELP lines (and units) of every telegraft family.
fn describe() {
    describe_gauge!("telegraft_raft_term", "Current Raft term");
    describe_gauge!(
        "telegraft_raft_role",
        "Raft role: 0 follower, 1 candidate, 2 leader"
    );
    describe_counter!(
        "telegraft_raft_leader_changes_total",
        "Times the leader this replica knows of changed to another node"
    );
    describe_gauge!("telegraft_raft_commit_index", "Highest committed log index");
    describe_gauge!(
        "telegraft_raft_applied_index",
        "Highest log index handed to the applier"
    );
    describe_gauge!("telegraft_raft_last_log_index", "Last index in the log");
    describe_counter!(
        "telegraft_raft_proposals_total",
        "Client writes proposed here, by outcome: accepted, or refused (not_leader, overloaded, invalid)"
    );
    describe_histogram!(
        "telegraft_raft_append_batch_entries",
        "Entries per Append message sent to a follower (heartbeats not counted)"
    );
    describe_histogram!(
        "telegraft_storage_fsync_seconds",
        Unit::Seconds,
        "Latency of each fdatasync of appended entries"
    );
    describe_histogram!(
        "telegraft_storage_fsync_entries",
        "Entries made durable per fdatasync (group commit)"
    );
    describe_histogram!(
        "telegraft_storage_fsync_bytes",
        Unit::Bytes,
        "Log bytes made durable per fdatasync"
    );
    describe_histogram!(
        "telegraft_raft_commit_seconds",
        Unit::Seconds,
        "From a proposal accepted by the leader's core to its entry committed"
    );
    describe_histogram!(
        "telegraft_raft_apply_seconds",
        Unit::Seconds,
        "From an entry committed to it applied to SQLite (one sample per entry)"
    );
    describe_histogram!(
        "telegraft_raft_read_index_seconds",
        Unit::Seconds,
        "From a linearizable read handed to the core to it confirmed (ReadIndex)"
    );
    describe_histogram!(
        "telegraft_raft_reads_per_round",
        "Linearizable reads confirmed together by one ReadIndex round"
    );
    describe_counter!(
        "telegraft_requests_forwarded_total",
        "Client requests this follower forwarded to the leader"
    );
    describe_gauge!(
        "telegraft_queue_depth",
        "Messages waiting in an actor's queue (core, storage, applier, peer-N)"
    );
    describe_counter!(
        "telegraft_snapshots_total",
        "Snapshots taken here or installed from the leader"
    );
    describe_gauge!(
        "telegraft_snapshot_bytes",
        Unit::Bytes,
        "Size of the newest snapshot file taken or installed"
    );
    describe_histogram!(
        "telegraft_snapshot_seconds",
        Unit::Seconds,
        "Time to take a snapshot (VACUUM INTO and fsync) or restore one into SQLite"
    );
    describe_histogram!(
        "telegraft_grpc_server_handling_seconds",
        Unit::Seconds,
        "Server-side time of each gRPC call, until its response headers, by method and status code"
    );
}

/// One replica's registry and what renders it: the Prometheus recorder every handle lives
/// in, and the standard process metrics, collected at each scrape.
pub struct Exporter {
    recorder: PrometheusRecorder,
    process: metrics_process::Collector,
}

impl Exporter {
    pub fn new() -> Exporter {
        let mut builder = PrometheusBuilder::new();
        for (name, buckets) in HISTOGRAMS {
            builder = builder
                .set_buckets_for_metric(Matcher::Full((*name).into()), buckets)
                .expect("buckets are not empty");
        }
        let recorder = builder.build_recorder();
        let process = metrics_process::Collector::default();
        metrics::with_local_recorder(&recorder, || process.describe());
        Exporter { recorder, process }
    }

    pub fn recorder(&self) -> &PrometheusRecorder {
        &self.recorder
    }

    /// Moves the samples recorded since the last call into the histograms' buckets. The
    /// exporter buffers every sample until then, so this must run even when nobody scrapes:
    /// [`serve`] runs it every [`UPKEEP`].
    pub fn upkeep(&self) {
        self.recorder.handle().run_upkeep();
    }

    /// The text format, with the process metrics as of now.
    pub fn render(&self) -> String {
        metrics::with_local_recorder(&self.recorder, || self.process.collect());
        self.upkeep();
        self.recorder.handle().render()
    }
}

/// How often the samples histograms buffer are folded into their buckets, scraped or not
/// (at 15,000 writes a second, about 100,000 samples, under a millisecond of work).
const UPKEEP: Duration = Duration::from_secs(1);

/// Serves `GET /metrics` on `listener` until the stop notice, and keeps the histograms'
/// buffers drained; every connection it accepted is closed when it returns.
pub async fn serve(
    listener: TcpListener,
    exporter: Arc<Exporter>,
    mut stop: watch::Receiver<bool>,
) {
    use hyper::service::service_fn;
    use hyper::{Request, Response, StatusCode, body::Incoming};

    let mut connections = JoinSet::new();
    let mut upkeep = tokio::time::interval(UPKEEP);
    upkeep.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        let stream = tokio::select! {
            _ = stop.changed() => break,
            _ = upkeep.tick() => {
                exporter.upkeep();
                continue;
            }
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => stream,
                Err(e) => {
                    tracing::debug!("metrics listener: accept failed: {e}");
                    continue;
                }
            },
        };
        while connections.try_join_next().is_some() {}
        let exporter = exporter.clone();
        let service = service_fn(move |req: Request<Incoming>| {
            let exporter = exporter.clone();
            async move {
                let response = if req.uri().path() == "/metrics" {
                    let body = tokio::task::spawn_blocking(move || exporter.render())
                        .await
                        .unwrap_or_default();
                    Response::builder()
                        .header("content-type", "text/plain; version=0.0.4; charset=utf-8")
                        .body(Full::new(Bytes::from(body)))
                } else {
                    Response::builder()
                        .status(StatusCode::NOT_FOUND)
                        .body(Full::new(Bytes::from_static(b"try /metrics\n")))
                };
                Ok::<_, Infallible>(response.expect("a valid response"))
            }
        });
        connections.spawn(async move {
            let io = hyper_util::rt::TokioIo::new(stream);
            if let Err(e) = hyper::server::conn::http1::Builder::new()
                .serve_connection(io, service)
                .await
            {
                tracing::debug!("metrics connection: {e}");
            }
        });
    }
    connections.shutdown().await;
}

/// Every gRPC method a replica serves, as `/package.Service/Method` paths.
const METHODS: &[(&str, &str)] = &[
    ("telegraft.chat.v1.Chat", "CreateUser"),
    ("telegraft.chat.v1.Chat", "CreateChat"),
    ("telegraft.chat.v1.Chat", "JoinChat"),
    ("telegraft.chat.v1.Chat", "SendMessage"),
    ("telegraft.chat.v1.Chat", "GetMessages"),
    ("telegraft.chat.v1.Chat", "GetChatUsers"),
    ("telegraft.raft.v1.Raft", "Send"),
    ("telegraft.raft.v1.Raft", "SendSnapshot"),
    ("telegraft.admin.v1.Admin", "Status"),
    ("telegraft.admin.v1.Admin", "SetPartition"),
    (
        "grpc.reflection.v1.ServerReflection",
        "ServerReflectionInfo",
    ),
];

/// gRPC status codes by number, as the `code` label spells them.
const CODES: [&str; 17] = [
    "OK",
    "CANCELLED",
    "UNKNOWN",
    "INVALID_ARGUMENT",
    "DEADLINE_EXCEEDED",
    "NOT_FOUND",
    "ALREADY_EXISTS",
    "PERMISSION_DENIED",
    "RESOURCE_EXHAUSTED",
    "FAILED_PRECONDITION",
    "ABORTED",
    "OUT_OF_RANGE",
    "UNIMPLEMENTED",
    "INTERNAL",
    "UNAVAILABLE",
    "DATA_LOSS",
    "UNAUTHENTICATED",
];

/// `telegraft_grpc_server_handling_seconds`, one histogram per (method, code), registered
/// on first use: an error code that never happens adds no series.
struct GrpcTable {
    exporter: Arc<Exporter>,
    paths: HashMap<String, usize>,
    cells: Vec<[OnceLock<Histogram>; 17]>,
}

impl GrpcTable {
    fn histogram(&self, method: usize, code: usize) -> &Histogram {
        self.cells[method][code].get_or_init(|| {
            let (service, name) = METHODS[method];
            metrics::with_local_recorder(self.exporter.recorder(), || {
                histogram!("telegraft_grpc_server_handling_seconds",
                    "service" => service, "method" => name, "code" => CODES[code])
            })
        })
    }
}

/// A tower layer for the tonic server that times every call from its request to its
/// response headers (for a unary call, the whole handler) and labels it with the gRPC code
/// in those headers (an error's trailers-only response carries it there; a call without
/// one answered OK). Without an exporter it passes calls through untouched.
#[derive(Clone, Default)]
pub struct GrpcMetricsLayer {
    table: Option<Arc<GrpcTable>>,
}

impl GrpcMetricsLayer {
    pub fn new(exporter: Option<Arc<Exporter>>) -> GrpcMetricsLayer {
        let table = exporter.map(|exporter| {
            Arc::new(GrpcTable {
                exporter,
                paths: METHODS
                    .iter()
                    .enumerate()
                    .map(|(i, (s, m))| (format!("/{s}/{m}"), i))
                    .collect(),
                cells: METHODS.iter().map(|_| Default::default()).collect(),
            })
        });
        GrpcMetricsLayer { table }
    }
}

impl<S> tower_layer::Layer<S> for GrpcMetricsLayer {
    type Service = GrpcMetrics<S>;
    fn layer(&self, inner: S) -> GrpcMetrics<S> {
        GrpcMetrics {
            inner,
            table: self.table.clone(),
        }
    }
}

/// The service [`GrpcMetricsLayer`] wraps around the tonic routes.
#[derive(Clone)]
pub struct GrpcMetrics<S> {
    inner: S,
    table: Option<Arc<GrpcTable>>,
}

impl<S, B, R> tower_service::Service<http::Request<B>> for GrpcMetrics<S>
where
    S: tower_service::Service<http::Request<B>, Response = http::Response<R>>,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = Timed<S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), S::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: http::Request<B>) -> Self::Future {
        let observe = self.table.as_ref().and_then(|t| {
            let method = *t.paths.get(req.uri().path())?;
            Some((t.clone(), method, Instant::now()))
        });
        Timed {
            inner: self.inner.call(req),
            observe,
        }
    }
}

pin_project_lite::pin_project! {
    /// A call's response future, timed.
    pub struct Timed<F> {
        #[pin]
        inner: F,
        observe: Option<(Arc<GrpcTable>, usize, Instant)>,
    }
}

impl<F, R, E> Future for Timed<F>
where
    F: Future<Output = Result<http::Response<R>, E>>,
{
    type Output = F::Output;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<F::Output> {
        let this = self.project();
        let out = std::task::ready!(this.inner.poll(cx));
        if let Some((table, method, start)) = this.observe.take() {
            let code = match &out {
                Ok(resp) => resp
                    .headers()
                    .get("grpc-status")
                    .and_then(|v| v.to_str().ok()?.parse::<usize>().ok())
                    .filter(|c| *c < CODES.len())
                    .unwrap_or(0),
                Err(_) => 2, // UNKNOWN: the transport failed the call
            };
            table
                .histogram(method, code)
                .record(start.elapsed().as_secs_f64());
        }
        Poll::Ready(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_family_renders_with_its_buckets() {
        let exporter = Exporter::new();
        let m = Metrics::register(exporter.recorder(), [2, 3]);
        m.term.set(3.0);
        m.set_role(Role::Leader);
        m.proposals_accepted.increment(2);
        m.fsync_seconds.record(0.002);
        m.fsync_entries.record(17.0);
        m.queue_peers[&2].set(5.0);
        let text = exporter.render();
        assert!(text.contains("telegraft_raft_term 3"), "{text}");
        assert!(text.contains("telegraft_raft_role 2"), "{text}");
        assert!(
            text.contains("telegraft_raft_proposals_total{outcome=\"accepted\"} 2"),
            "{text}"
        );
        assert!(text.contains("telegraft_storage_fsync_seconds_bucket{le=\"0.0025\"} 1"));
        assert!(text.contains("telegraft_storage_fsync_entries_bucket{le=\"32\"} 1"));
        assert!(text.contains("telegraft_queue_depth{queue=\"peer-2\"} 5"));
        assert!(text.contains("process_resident_memory_bytes"), "{text}");
    }

    #[test]
    fn noop_handles_record_nothing_anywhere() {
        let m = Metrics::noop([2]);
        m.term.set(1.0);
        m.commit_seconds.record(1.0);
    }
}
