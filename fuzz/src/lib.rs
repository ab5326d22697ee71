//! What the fuzz targets run. Each target in `fuzz_targets/` is one line; the
//! work is here so that the main crate's `tests/bad_input.rs` can compile this
//! file too and replay the committed seeds and regressions on stable Rust in
//! the normal test suite.
//!
//! Every target ends in [`pipeline`]: what the daemon does with a completed
//! trace (assemble, analyze with the per-trace detectors, store: aggregates,
//! findings and the call and saturation records of the window), the trace API's
//! JSON, and the cross-trace detectors over the window. A panic anywhere, a
//! broken tree or a critical path that does not partition its root is a finding.

use std::sync::Arc;
use std::time::Duration;

use arbitrary::Arbitrary;
use hopscope::analyze::{analyze, Thresholds};
use hopscope::api::{jaeger, trace_body};
use hopscope::assemble::assemble;
use hopscope::clock::Clock;
use hopscope::ingest::{decode_export, decode_export_json};
use hopscope::model::{
    AttrArena, Event, Extra, Link, Span, SpanBatch, SpanId, SpanKind, SpanSet, StatusCode, Sym,
    TraceId,
};
use hopscope::stats::Stats;
use hopscope::store::{Aggregates, FindingStore, Store, TraceStore};

#[path = "../../tests/support/checks.rs"]
mod checks;

/// OTLP protobuf bytes: undecodable bytes are an error; whatever decodes goes
/// through the pipeline.
pub fn otlp_protobuf(data: &[u8]) {
    decoded(decode_export(data).ok());
}

/// OTLP/JSON bytes, as the HTTP receiver takes them: the same.
pub fn otlp_json(data: &[u8]) {
    decoded(decode_export_json(data).ok());
}

/// A decoded batch counts its spans right and goes through the pipeline.
fn decoded(batch: Option<SpanBatch>) {
    let Some(batch) = batch else {
        return;
    };
    let spans: usize = batch.traces.iter().map(|(_, set)| set.len()).sum();
    assert_eq!(
        spans as u64, batch.accepted,
        "accepted spans are the batch's"
    );
    pipeline(batch.traces);
}

/// A structured span graph, built into span sets and run through the pipeline.
pub fn span_graph(graph: Graph) {
    let store = pipeline(graph.build());
    render(&store, RENDERED, RENDERED_MAX_SPANS);
}

/// Rendering dominates a run's time: the targets render the latest few
/// traces of at most 1,000 spans (tests/bad_input.rs renders a 100,000-span one).
const RENDERED: usize = 4;
const RENDERED_MAX_SPANS: usize = 1_000;

/// The daemon's work on completed traces, with every invariant checked; the
/// store it filled.
pub fn pipeline(traces: Vec<(TraceId, SpanSet)>) -> Store {
    let store = Store::new(
        TraceStore::new(1_000, 256 << 20),
        Aggregates::new(Duration::from_secs(24 * 3600)),
        FindingStore::new(1_000),
        Arc::new(Stats::default()),
        // The data's own time, as `hopscope analyze` keeps it.
        Clock::manual(0),
    );
    for (trace_id, set) in traces {
        let Some(trace) = assemble(trace_id, set) else {
            continue;
        };
        if let Err(e) = checks::check_tree(&trace) {
            panic!("assembled tree is broken: {e}");
        }
        let analyzed = analyze(trace);
        store.clock().advance_to(
            analyzed
                .trace
                .spans
                .iter()
                .map(|s| s.end_ns)
                .max()
                .unwrap_or(0),
        );
        if let Err(e) = checks::check_analysis(&analyzed) {
            panic!("analysis is broken: {e}");
        }
        hopscope::pipeline::keep(&store, analyzed, (false, None), None);
    }
    let thresholds = Thresholds::default();
    hopscope::pipeline::detect_window(&store, &thresholds, Default::default());
    // The API's budget map and statement shapes narrowed by time: computed
    // again over part of the pass's traces.
    let detection = store.detection();
    let traces = &detection.window.traces;
    let middle = traces.get(traces.len() / 2).map(|t| t.root.start_ns);
    hopscope::pipeline::budget_map(&detection, &thresholds, middle, None);
    hopscope::pipeline::query_shapes(&detection, middle, None);
    store.aggregates().query(None, None, None);
    store
}

/// Renders the trace API's JSON of the latest `limit` stored traces of at
/// most `max_spans` spans; returns how many it rendered.
pub fn render(store: &Store, limit: usize, max_spans: usize) -> usize {
    let traces = store.traces().recent(limit, |t| t.trace.len() <= max_spans);
    for t in &traces {
        if let Err(e) = serde_json::to_vec(&trace_body(t, store.findings())) {
            panic!("trace {} does not render: {e}", t.trace.trace_id);
        }
        // The Jaeger query API's rendering, which Grafana reads.
        let jaeger = jaeger::render(t, store.findings());
        assert!(!jaeger.spans.is_empty(), "a Jaeger trace without spans");
        if let Err(e) = serde_json::to_vec(&jaeger) {
            panic!("trace {} does not render for Jaeger: {e}", t.trace.trace_id);
        }
    }
    jaeger::dependency_edges(store, (0, u64::MAX));
    traces.len()
}

/// Traces of arbitrary spans, each possibly repeated (with new ids, later) so
/// the cross-trace detectors see enough calls to judge.
#[derive(Debug, Arbitrary)]
pub struct Graph {
    traces: Vec<TraceInput>,
}

#[derive(Debug, Arbitrary)]
struct TraceInput {
    spans: Vec<SpanInput>,
    /// Many generated spans on top (huge and deep traces).
    bulk: Option<Bulk>,
    /// Extra copies of this trace (0 to 7).
    copies: u8,
}

#[derive(Debug, Arbitrary)]
struct Bulk {
    shape: BulkShape,
    /// Up to 63 spans, or up to 65,535 when `huge` is 255 (so that most
    /// runs stay quick).
    len: u16,
    huge: u8,
    /// Generated spans arrive last-first.
    reversed: bool,
    start: Time,
}

#[derive(Debug, Clone, Copy, Arbitrary)]
enum BulkShape {
    /// Each span the child of the one before, nested inside it.
    Chain,
    /// A chain of CLIENT → SERVER hops alternating between two services, the
    /// servers a little early (clock skew at every level).
    ClientServerChain,
    /// Every span a child of the first.
    Star,
    /// Each span the child of the next, the last of the first: one long cycle.
    Cycle,
}

#[derive(Debug, Arbitrary)]
struct SpanInput {
    /// A small id space, so ids repeat (duplicates).
    id: u8,
    parent: Parent,
    start: Time,
    length: Length,
    kind: u8,
    service: Name,
    operation: Name,
    status: u8,
    status_message: Option<Name>,
    http_status: Option<u16>,
    grpc_status: Option<u8>,
    attrs: Attrs,
    events: Vec<(Time, Name, Attrs)>,
    link: Option<(u8, u8)>,
}

/// Attributes: keys and values.
type Attrs = Vec<(Name, Value)>;

#[derive(Debug, Arbitrary)]
enum Parent {
    None,
    Itself,
    Span(u8),
    /// An id no span of the trace has (an orphan), or one of the bulk's.
    Other(u64),
}

#[derive(Debug, Clone, Copy, Arbitrary)]
enum Time {
    Zero,
    FarFuture,
    /// Milliseconds after a realistic epoch.
    Millis(u16),
    /// Microseconds after a realistic epoch.
    Micros(u32),
    Raw(u64),
}

/// A realistic start of the epoch the generated times are offsets of.
const EPOCH_NS: u64 = 1_700_000_000_000_000_000;

impl Time {
    fn ns(self) -> u64 {
        match self {
            Time::Zero => 0,
            Time::FarFuture => u64::MAX,
            Time::Millis(ms) => EPOCH_NS + u64::from(ms) * 1_000_000,
            Time::Micros(us) => EPOCH_NS + u64::from(us) * 1_000,
            Time::Raw(ns) => ns,
        }
    }
}

#[derive(Debug, Clone, Copy, Arbitrary)]
enum Length {
    Zero,
    /// Ends this many microseconds before it starts.
    Negative(u32),
    Millis(u16),
    Micros(u32),
    Raw(u64),
}

impl Length {
    fn end(self, start: u64) -> u64 {
        match self {
            Length::Zero => start,
            Length::Negative(us) => start.saturating_sub(u64::from(us) * 1_000 + 1),
            Length::Millis(ms) => start.saturating_add(u64::from(ms) * 1_000_000),
            Length::Micros(us) => start.saturating_add(u64::from(us) * 1_000),
            Length::Raw(ns) => start.saturating_add(ns),
        }
    }
}

/// A name the detectors know (services, routes, attribute keys and values,
/// timeout messages), or any text.
#[derive(Debug, Arbitrary)]
enum Name {
    Known(u8),
    Text(String),
}

const KNOWN: &[&str] = &[
    "gateway",
    "frontend",
    "orders",
    "inventory",
    "GET /checkout",
    "/healthz",
    "grpc.health.v1.Health/Check",
    "acquire connection",
    "SELECT * FROM orders WHERE id = 42",
    "postgresql",
    "db.internal",
    "shop",
    "pool-a",
    "orders-1",
    "orders-2",
    "context deadline exceeded",
    "java.net.SocketTimeoutException",
    "exception",
    "http.response.status_code",
    "http.status_code",
    "rpc.grpc.status_code",
    "http.route",
    "rpc.system",
    "db.system.name",
    "db.system",
    "db.namespace",
    "db.name",
    "db.query.text",
    "db.statement",
    "server.address",
    "net.peer.name",
    "peer.service",
    "error.type",
    "exception.type",
    "exception.message",
    "service.instance.id",
    "db.client.connection.pool.name",
];

impl Name {
    fn text(&self) -> &str {
        match self {
            Name::Known(i) => KNOWN[usize::from(*i) % KNOWN.len()],
            Name::Text(text) => text,
        }
    }

    fn sym(&self) -> Sym {
        Sym::new(self.text())
    }
}

#[derive(Debug, Arbitrary)]
enum Value {
    Name(Name),
    Int(i64),
    Double(f64),
    Bool(bool),
    Json(String),
}

fn put_attrs(arena: &mut AttrArena, attrs: &[(Name, Value)]) -> hopscope::model::AttrRange {
    let mark = arena.mark();
    for (key, value) in attrs {
        let key = key.sym();
        match value {
            Value::Name(name @ Name::Known(_)) => arena.sym(key, name.sym()),
            Value::Name(Name::Text(text)) => arena.str(key, text),
            Value::Int(v) => arena.int(key, *v),
            Value::Double(v) => arena.double(key, *v),
            Value::Bool(v) => arena.bool(key, *v),
            Value::Json(text) => arena.json(key, text),
        }
    }
    arena.finish(mark)
}

/// Ids of hand-written spans are 1 to 256; bulk spans start above them.
const BULK_FIRST_ID: u64 = 1_000;

fn span_id(n: u64) -> SpanId {
    SpanId::from_u64(n.max(1)).expect("not zero")
}

impl SpanInput {
    fn push(&self, set: &mut SpanSet, scratch: &mut AttrArena) {
        let own = u64::from(self.id) + 1;
        let parent = match self.parent {
            Parent::None => None,
            Parent::Itself => Some(own),
            Parent::Span(p) => Some(u64::from(p) + 1),
            Parent::Other(p) => Some(p),
        };
        let start = self.start.ns();
        let mut span = Span::new(
            span_id(own),
            parent.map(span_id),
            self.service.text(),
            self.operation.text(),
            SpanKind::ALL[usize::from(self.kind) % SpanKind::ALL.len()],
            (start, self.length.end(start)),
        );
        span.status = StatusCode::ALL[usize::from(self.status) % StatusCode::ALL.len()];
        span.http_status = self.http_status.and_then(std::num::NonZeroU16::new);
        span.grpc_status = self.grpc_status;
        span.has_error_type = self.attrs.iter().any(|(k, _)| k.text() == "error.type");
        span.attrs = put_attrs(scratch, &self.attrs);
        let events: Vec<Event> = self
            .events
            .iter()
            .map(|(time, name, attrs)| Event {
                time_ns: time.ns(),
                name: name.sym(),
                attrs: put_attrs(scratch, attrs),
            })
            .collect();
        let links: Vec<Link> = self
            .link
            .iter()
            .map(|&(trace, span)| Link {
                trace_id: trace_id(trace, 0),
                span_id: span_id(u64::from(span) + 1),
                attrs: Default::default(),
            })
            .collect();
        if self.status_message.is_some() || !events.is_empty() || !links.is_empty() {
            span.extra = Some(Box::new(Extra {
                status_message: self.status_message.as_ref().map(|m| m.text().into()),
                events,
                links,
            }));
        }
        set.push(span, scratch);
    }
}

impl Bulk {
    fn push(&self, set: &mut SpanSet) {
        let n = u64::from(if self.huge == u8::MAX {
            self.len
        } else {
            self.len % 64
        });
        let start = self.start.ns();
        let mut spans: Vec<Span> = (0..n)
            .map(|i| {
                let id = BULK_FIRST_ID + i;
                let (parent, begin, end) = match self.shape {
                    BulkShape::Chain | BulkShape::ClientServerChain => (
                        (i > 0).then(|| id - 1),
                        start.saturating_add(i * 10),
                        start.saturating_add((2 * n - i) * 10),
                    ),
                    BulkShape::Star => (
                        (i > 0).then_some(BULK_FIRST_ID),
                        start.saturating_add(i),
                        start.saturating_add(i + 5),
                    ),
                    BulkShape::Cycle => (
                        Some(BULK_FIRST_ID + (i + 1) % n),
                        start.saturating_add(i * 10),
                        start.saturating_add(i * 10 + 5),
                    ),
                };
                let (service, kind, skew) = match (self.shape, i % 2) {
                    (BulkShape::ClientServerChain, 0) => ("frontend", SpanKind::Client, 0),
                    (BulkShape::ClientServerChain, _) => ("orders", SpanKind::Server, 3),
                    _ => ("frontend", SpanKind::Internal, 0),
                };
                Span::new(
                    span_id(id),
                    parent.map(span_id),
                    service,
                    "op",
                    kind,
                    (begin.saturating_add(skew), end.saturating_add(skew)),
                )
            })
            .collect();
        if self.reversed {
            spans.reverse();
        }
        set.append(spans.into_iter().collect());
    }
}

/// Most spans the copies of one trace may add.
const MAX_COPIED_SPANS: usize = 20_000;

/// Trace ids of the graph: distinct per trace and copy, never zero.
fn trace_id(trace: u8, copy: u8) -> TraceId {
    let mut bytes = [0u8; 16];
    bytes[0] = 1;
    bytes[1] = trace;
    bytes[2] = copy;
    TraceId::from_bytes(&bytes).expect("16 bytes, not zero")
}

impl Graph {
    /// At most 32 traces, each with at most 7 copies shifted a second apart
    /// (while the copies add up to at most [`MAX_COPIED_SPANS`]).
    fn build(&self) -> Vec<(TraceId, SpanSet)> {
        let mut out = Vec::new();
        for (t, input) in self.traces.iter().take(32).enumerate() {
            let mut scratch = AttrArena::default();
            let mut set = SpanSet::default();
            for s in &input.spans {
                s.push(&mut set, &mut scratch);
            }
            if let Some(bulk) = &input.bulk {
                bulk.push(&mut set);
            }
            let mut copies = input.copies % 8;
            if set.len() * usize::from(copies) > MAX_COPIED_SPANS {
                copies = 0;
            }
            for copy in 1..=copies {
                let shift = u64::from(copy) * 1_000_000_000;
                let mut later = set.clone();
                for s in &mut later.spans {
                    s.start_ns = s.start_ns.saturating_add(shift);
                    s.end_ns = s.end_ns.saturating_add(shift);
                }
                out.push((trace_id(t as u8, copy), later));
            }
            out.push((trace_id(t as u8, 0), set));
        }
        out
    }
}
