//! The compact span every later stage reads, and the sets spans travel in.

use std::num::NonZeroU16;

use super::{AttrArena, AttrRange, SpanId, Sym, TraceId};

/// OTLP span kind.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize)]
#[serde(rename_all = "snake_case")]
#[repr(u8)]
pub enum SpanKind {
    Unspecified,
    Internal,
    Server,
    Client,
    Producer,
    Consumer,
}

impl SpanKind {
    /// Every kind, in OTLP's order.
    pub const ALL: [SpanKind; 6] = [
        SpanKind::Unspecified,
        SpanKind::Internal,
        SpanKind::Server,
        SpanKind::Client,
        SpanKind::Producer,
        SpanKind::Consumer,
    ];
}

/// OTLP span status code.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
#[repr(u8)]
pub enum StatusCode {
    Unset,
    Ok,
    Error,
}

impl StatusCode {
    /// Every code, in OTLP's order.
    pub const ALL: [StatusCode; 3] = [StatusCode::Unset, StatusCode::Ok, StatusCode::Error];
}

/// A span event (`exception` events carry the error type and message).
#[derive(Debug, Clone, PartialEq)]
pub struct Event {
    pub time_ns: u64,
    pub name: Sym,
    pub attrs: AttrRange,
}

/// A link to another span (OTLP links; OpenTracing FOLLOWS_FROM arrives as one).
#[derive(Debug, Clone, PartialEq)]
pub struct Link {
    pub trace_id: TraceId,
    pub span_id: SpanId,
    pub attrs: AttrRange,
}

/// What few spans have, kept out of line so the common span stays small.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Extra {
    pub status_message: Option<Box<str>>,
    pub events: Vec<Event>,
    pub links: Vec<Link>,
}

/// One span: 64 bytes. Times are unix nanoseconds; attributes live in the arena
/// of the [`SpanSet`] or [`crate::model::Trace`] that holds the span, and the
/// typed semantic-convention fields the detectors read are derived from them by
/// [`crate::model::Semantics::of`]. The two status codes a timeout check needs
/// first are kept inline.
#[derive(Debug, Clone, PartialEq)]
pub struct Span {
    pub span_id: SpanId,
    pub parent_id: Option<SpanId>,
    pub start_ns: u64,
    pub end_ns: u64,
    pub service: Sym,
    pub operation: Sym,
    pub attrs: AttrRange,
    pub extra: Option<Box<Extra>>,
    /// `http.response.status_code` (or legacy `http.status_code`).
    pub http_status: Option<NonZeroU16>,
    /// `rpc.grpc.status_code`.
    pub grpc_status: Option<u8>,
    pub kind: SpanKind,
    pub status: StatusCode,
    /// Whether an `error.type` attribute is present (a cheap check before a lookup).
    pub has_error_type: bool,
}

// The span's size is a design decision (docs/PERFORMANCE.md): keep it.
const _: () = assert!(size_of::<Span>() == 64);

impl Span {
    /// A span with identity and timing only: no attributes, events or links, status unset.
    pub fn new(
        span_id: SpanId,
        parent_id: Option<SpanId>,
        service: &str,
        operation: &str,
        kind: SpanKind,
        (start_ns, end_ns): (u64, u64),
    ) -> Span {
        Span {
            span_id,
            parent_id,
            start_ns,
            end_ns,
            service: Sym::new(service),
            operation: Sym::new(operation),
            attrs: AttrRange::default(),
            extra: None,
            http_status: None,
            grpc_status: None,
            kind,
            status: StatusCode::Unset,
            has_error_type: false,
        }
    }

    pub fn duration_ns(&self) -> u64 {
        self.end_ns.saturating_sub(self.start_ns)
    }

    pub fn status_message(&self) -> Option<&str> {
        self.extra.as_ref()?.status_message.as_deref()
    }

    pub fn events(&self) -> &[Event] {
        self.extra.as_ref().map_or(&[], |e| &e.events)
    }

    pub fn links(&self) -> &[Link] {
        self.extra.as_ref().map_or(&[], |e| &e.links)
    }

    /// Moves every attribute range by `offset` (its arena was appended to another).
    fn shift(&mut self, offset: u32) {
        self.attrs = self.attrs.shifted(offset);
        if let Some(extra) = &mut self.extra {
            for e in &mut extra.events {
                e.attrs = e.attrs.shifted(offset);
            }
            for l in &mut extra.links {
                l.attrs = l.attrs.shifted(offset);
            }
        }
    }

    /// Heap bytes held out of line (the `Extra`), not counting the arena.
    fn extra_bytes(&self) -> usize {
        self.extra.as_ref().map_or(0, |e| {
            size_of::<Extra>()
                + e.status_message.as_ref().map_or(0, |m| m.len())
                + e.events.capacity() * size_of::<Event>()
                + e.links.capacity() * size_of::<Link>()
        })
    }
}

/// Spans of one trace with the arena their attributes live in.
#[derive(Debug, Clone, Default)]
pub struct SpanSet {
    pub spans: Vec<Span>,
    pub arena: AttrArena,
}

impl SpanSet {
    /// Moves `other`'s spans and attributes into this set.
    pub fn append(&mut self, other: SpanSet) {
        if self.spans.is_empty() && self.arena.mark() == 0 {
            *self = other;
            return;
        }
        let offset = self.arena.append(&other.arena);
        super::attrs::reserve_modestly(&mut self.spans, other.spans.len());
        self.spans.extend(other.spans.into_iter().map(|mut s| {
            s.shift(offset);
            s
        }));
    }

    /// Adds one span whose attributes are in `scratch` (which is then cleared).
    /// The set grows as a `Vec` does (doubling): a set being built takes one
    /// span at a time, and growing it by a quarter would copy its arena at
    /// nearly every span; [`SpanSet::shrink_to_fit`] gives the slack back.
    pub fn push(&mut self, mut span: Span, scratch: &mut AttrArena) {
        let offset = self.arena.extend(scratch);
        scratch.clear();
        span.shift(offset);
        self.spans.push(span);
    }

    /// Gives back spare capacity (a set about to wait in the buffer).
    pub fn shrink_to_fit(&mut self) {
        self.spans.shrink_to_fit();
        self.arena.shrink_to_fit();
    }

    pub fn len(&self) -> usize {
        self.spans.len()
    }

    pub fn is_empty(&self) -> bool {
        self.spans.is_empty()
    }

    /// Heap bytes held (spans, arena, out-of-line extras).
    pub fn size_bytes(&self) -> usize {
        self.spans.capacity() * size_of::<Span>()
            + self.arena.heap_bytes()
            + self.spans.iter().map(Span::extra_bytes).sum::<usize>()
    }
}

/// Spans without attributes (tests, synthetic traces).
impl FromIterator<Span> for SpanSet {
    fn from_iter<I: IntoIterator<Item = Span>>(iter: I) -> Self {
        SpanSet {
            spans: iter.into_iter().collect(),
            arena: AttrArena::default(),
        }
    }
}

/// The hand-off from ingest to assembly: the spans of one export request, grouped
/// by trace id, and what was refused.
#[derive(Debug, Default)]
pub struct SpanBatch {
    pub traces: Vec<(TraceId, SpanSet)>,
    pub accepted: u64,
    pub rejected: u64,
    /// Why spans were refused (the first few reasons), for the partial-success message.
    pub errors: Vec<String>,
}
