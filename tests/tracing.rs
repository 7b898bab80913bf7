//! Tracing across the push path (issue 11 §3): one AUTO_ACK push, followed through the spans
//! a `tracing-subscriber` layer captures, from the SDK's send through the gateway, the route
//! lookup and the connection write to the ACK, all tied by one trace id that the SDK and
//! the server derive independently.
//!
//! One test in this binary: it installs the global subscriber.

#![allow(clippy::unwrap_used)]

mod common;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use common::*;
use mpush::AckModel;
use mpush::sender::ResultCode;
use tracing::field::{Field, Visit};
use tracing::span::{Attributes, Id, Record};
use tracing_subscriber::layer::{Context, SubscriberExt};
use tracing_subscriber::registry::LookupSpan;

/// One captured span: name, fields (as text) and its parent's index.
#[derive(Debug, Clone)]
struct Captured {
    name: &'static str,
    fields: HashMap<String, String>,
    parent: Option<usize>,
}

/// Records every span's fields, including those recorded after creation.
#[derive(Clone, Default)]
struct Capture(Arc<Mutex<Vec<Captured>>>);

/// The index of a span in [`Capture`], kept in the span's extensions.
struct Index(usize);

struct Fields<'a>(&'a mut HashMap<String, String>);

impl Visit for Fields<'_> {
    fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
        self.0
            .insert(field.name().to_string(), format!("{value:?}"));
    }
    fn record_str(&mut self, field: &Field, value: &str) {
        self.0.insert(field.name().to_string(), value.to_string());
    }
}

impl<S: tracing::Subscriber + for<'a> LookupSpan<'a>> tracing_subscriber::Layer<S> for Capture {
    fn on_new_span(&self, attrs: &Attributes<'_>, id: &Id, ctx: Context<'_, S>) {
        let span = ctx.span(id).unwrap();
        let parent = span
            .parent()
            .and_then(|p| p.extensions().get::<Index>().map(|i| i.0));
        let mut fields = HashMap::new();
        attrs.record(&mut Fields(&mut fields));
        let mut all = self.0.lock().unwrap();
        all.push(Captured {
            name: attrs.metadata().name(),
            fields,
            parent,
        });
        span.extensions_mut().insert(Index(all.len() - 1));
    }

    fn on_record(&self, id: &Id, values: &Record<'_>, ctx: Context<'_, S>) {
        let span = ctx.span(id).unwrap();
        let index = span.extensions().get::<Index>().map(|i| i.0);
        if let Some(i) = index {
            values.record(&mut Fields(&mut self.0.lock().unwrap()[i].fields));
        }
    }
}

impl Capture {
    fn spans(&self) -> Vec<Captured> {
        self.0.lock().unwrap().clone()
    }
}

/// The nearest `field` on `i` or one of its ancestors.
fn inherited<'a>(spans: &'a [Captured], mut i: usize, field: &str) -> Option<&'a str> {
    loop {
        if let Some(v) = spans[i].fields.get(field) {
            return Some(v);
        }
        i = spans[i].parent?;
    }
}

/// The spans named `name` whose (inherited) trace id is `trace_id`.
fn with_trace<'a>(spans: &'a [Captured], name: &str, trace_id: &str) -> Vec<&'a Captured> {
    (0..spans.len())
        .filter(|&i| spans[i].name == name && inherited(spans, i, "trace_id") == Some(trace_id))
        .map(|i| &spans[i])
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_push_is_followed_by_its_trace_id_from_the_sdk_to_the_ack() {
    let capture = Capture::default();
    tracing::subscriber::set_global_default(tracing_subscriber::registry().with(capture.clone()))
        .unwrap();

    let c = start_cluster(1, test_config()).await;
    let mut rx = spawn_receiver(
        bound_client(c.addr(0), "d1", "android", "traced", None).await,
        AckPolicy::All,
    );
    assert_eq!(
        push(&c.sender, "traced", AckModel::AutoAck, 5000).await,
        [ResultCode::Success]
    );
    assert_eq!(&rx.recv().await.unwrap().content[..], b"hello");

    let spans = capture.spans();
    // The SDK side: the request span learnt its ids when the packet was built.
    let requests: Vec<_> = spans
        .iter()
        .enumerate()
        .filter(|(_, s)| s.name == "mpush.push.request")
        .collect();
    assert_eq!(requests.len(), 1, "{requests:?}");
    let (ri, request) = requests[0];
    assert_eq!(request.fields["user_id"], "traced");
    let trace_id = request
        .fields
        .get("trace_id")
        .expect("trace id recorded")
        .clone();
    let session_id = &request.fields["session_id"];
    assert!(
        trace_id.ends_with(&format!("/{session_id}")),
        "{trace_id} vs sessionId {session_id}"
    );
    let send = request.parent.map(|p| spans[p].name);
    assert_eq!(send, Some("mpush.push.send"));
    let results: Vec<_> = spans
        .iter()
        .filter(|s| s.name == "mpush.push.result" && s.parent == Some(ri))
        .collect();
    assert_eq!(results.len(), 1);
    assert_eq!(results[0].fields["code"], "Success");

    // The server side derived the same id from the connection's peer and the sessionId.
    let gateway = with_trace(&spans, "mpush.gateway.push", &trace_id);
    assert_eq!(
        gateway.len(),
        1,
        "no gateway span with {trace_id}: {spans:#?}"
    );
    assert_eq!(gateway[0].fields["user_id"], "traced");
    assert_eq!(&gateway[0].fields["session_id"], session_id);
    assert_eq!(gateway[0].fields["outcome"], "ok");
    let lookup = with_trace(&spans, "mpush.route.lookup", &trace_id);
    assert_eq!(lookup.len(), 1);
    assert_eq!(lookup[0].fields["found"], "here");
    let write = with_trace(&spans, "mpush.connection.write", &trace_id);
    assert_eq!(write.len(), 1);
    let ack = with_trace(&spans, "mpush.push.ack", &trace_id);
    assert_eq!(ack.len(), 1);
    assert_eq!(ack[0].fields["outcome"], "AckSuccess");
    // The write and the ACK name the same push id on the connection.
    assert_eq!(write[0].fields["push_id"], ack[0].fields["push_id"]);
    assert_eq!(write[0].fields["conn"], ack[0].fields["conn"]);

    c.shutdown().await;
}
