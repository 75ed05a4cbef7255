//! Tracing: one SendMessage followed through a replica's actors. A replica runs in this
//! process (`telegraft::run`) under a subscriber that keeps every closed span with its
//! fields; the write's id (client id, sequence) and its log index must be on the service's
//! span (`chat_write`), the core actor's (`node_propose`), the storage writer's
//! (`storage_append`) and the applier's (`apply`). And nothing is logged per request at
//! the default level (info).
//!
//! Its own test binary: the subscriber is the process's global default, which the
//! replica's threads (storage writer, applier) need to see.

mod common;

use std::collections::{BTreeMap, HashMap};
use std::net::TcpListener;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use telegraft::proto::chat::{self as api, chat_client::ChatClient};
use telegraft::{NodeConfig, admin};
use tracing::field::{Field, Visit};
use tracing::span::{Attributes, Id, Record};
use tracing::{Event, Level, Subscriber};
use tracing_subscriber::layer::{Context, SubscriberExt};
use tracing_subscriber::registry::LookupSpan;
use tracing_subscriber::{Layer, Registry};

type Fields = BTreeMap<String, String>;

/// What the capture layer saw: closed spans (name and fields) and events' levels.
#[derive(Default)]
struct Seen {
    spans: Vec<(String, Fields)>,
    events: Vec<Level>,
}

struct Capture(Arc<Mutex<Seen>>);

struct Visitor<'a>(&'a mut Fields);

impl Visit for Visitor<'_> {
    fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
        self.0.insert(field.name().into(), format!("{value:?}"));
    }
}

impl<S: Subscriber + for<'a> LookupSpan<'a>> Layer<S> for Capture {
    fn on_new_span(&self, attrs: &Attributes<'_>, id: &Id, ctx: Context<'_, S>) {
        let mut fields = Fields::new();
        attrs.record(&mut Visitor(&mut fields));
        ctx.span(id).unwrap().extensions_mut().insert(fields);
    }

    fn on_record(&self, id: &Id, values: &Record<'_>, ctx: Context<'_, S>) {
        let span = ctx.span(id).unwrap();
        let mut ext = span.extensions_mut();
        values.record(&mut Visitor(ext.get_mut::<Fields>().unwrap()));
    }

    fn on_event(&self, event: &Event<'_>, _: Context<'_, S>) {
        self.0
            .lock()
            .unwrap()
            .events
            .push(*event.metadata().level());
    }

    fn on_close(&self, id: Id, ctx: Context<'_, S>) {
        let span = ctx.span(&id).unwrap();
        let fields = span
            .extensions()
            .get::<Fields>()
            .cloned()
            .unwrap_or_default();
        let mut seen = self.0.lock().unwrap();
        seen.spans.push((span.name().to_string(), fields));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_send_message_is_followed_through_the_actors() {
    let seen = Arc::new(Mutex::new(Seen::default()));
    let filter = tracing_subscriber::EnvFilter::new("telegraft=debug");
    let subscriber = Registry::default().with(Capture(seen.clone())).with(filter);
    tracing::subscriber::set_global_default(subscriber).unwrap();

    let dir = tempfile::tempdir().unwrap();
    let addr = TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let peers = BTreeMap::from([(1, addr.to_string())]);
    let config = NodeConfig::new(1, addr, peers, dir.path().to_path_buf());
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let replica = tokio::spawn(telegraft::run(config, async {
        let _ = stop_rx.await;
    }));
    admin::wait_for_leader(&[addr.to_string()], Duration::from_secs(10))
        .await
        .unwrap_or_else(|e| panic!("{e}"));

    let mut c = ChatClient::connect(format!("http://{addr}")).await.unwrap();
    let (user, chat) = common::setup_chat(&mut c).await;
    let send = |sequence| api::SendMessageRequest {
        user_id: user,
        chat_id: chat,
        content: "hello".into(),
        sent_time: None,
        write_id: Some(api::WriteId {
            client_id: 4242,
            sequence,
        }),
    };
    let before = seen.lock().unwrap().events.clone();
    c.send_message(send(7)).await.unwrap();
    for sequence in 8..28 {
        c.send_message(send(sequence)).await.unwrap();
    }
    let after = seen.lock().unwrap().events.clone();
    stop_tx.send(()).unwrap();
    replica.await.unwrap().unwrap();

    // Nothing at info or above for 21 requests (debug events are fine).
    let loud = |events: &[Level]| events.iter().filter(|l| **l <= Level::INFO).count();
    assert_eq!(
        loud(&after),
        loud(&before),
        "a request logged at info or above"
    );

    let seen = seen.lock().unwrap();
    let of_write: HashMap<&str, &Fields> = seen
        .spans
        .iter()
        .filter(|(_, f)| {
            f.get("client_id").map(String::as_str) == Some("4242")
                && f.get("sequence").map(String::as_str) == Some("7")
        })
        .map(|(name, f)| (name.as_str(), f))
        .collect();
    let service = of_write
        .get("chat_write")
        .unwrap_or_else(|| panic!("no service span: {:?}", seen.spans));
    assert_eq!(service["rpc"], "\"SendMessage\"");
    let index = service
        .get("index")
        .unwrap_or_else(|| panic!("the service span has no log index: {service:?}"));
    // The no-op of the leader's term, the user and the chat come first.
    assert!(index.parse::<u64>().unwrap() >= 4, "{index}");
    for name in ["node_propose", "storage_append", "apply"] {
        let span = of_write
            .get(name)
            .unwrap_or_else(|| panic!("no {name} span for the write: {of_write:?}"));
        assert_eq!(&span["index"], index, "{name}: {span:?}");
    }
}
