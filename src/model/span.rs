//! The compact span every later stage reads.

use std::num::NonZeroU16;

use super::{Attrs, SpanId, Sym, TraceId};

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

/// OTLP span status code.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
#[repr(u8)]
pub enum StatusCode {
    Unset,
    Ok,
    Error,
}

/// Typed copies of the semantic-convention attributes the detectors read, filled
/// from current and legacy names alike (`http.response.status_code` or
/// `http.status_code`, `db.system.name` or `db.system`, ...). Strings are interned
/// and also kept in [`Span::attrs`], so nothing is stored twice.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Semantics {
    pub http_status: Option<NonZeroU16>,
    pub http_method: Option<Sym>,
    pub http_route: Option<Sym>,
    /// `rpc.grpc.status_code`.
    pub grpc_status: Option<u8>,
    pub rpc_system: Option<Sym>,
    pub rpc_service: Option<Sym>,
    pub rpc_method: Option<Sym>,
    pub db_system: Option<Sym>,
    pub db_namespace: Option<Sym>,
    /// `server.address`, or legacy `net.peer.name`.
    pub server_address: Option<Sym>,
    pub peer_service: Option<Sym>,
    pub error_type: Option<Sym>,
}

/// A span event (`exception` events carry the error type and message).
#[derive(Debug, Clone, PartialEq)]
pub struct Event {
    pub time_ns: u64,
    pub name: Sym,
    pub attrs: Attrs,
}

/// A link to another span (OTLP links; OpenTracing FOLLOWS_FROM arrives as one).
#[derive(Debug, Clone, PartialEq)]
pub struct Link {
    pub trace_id: TraceId,
    pub span_id: SpanId,
    pub attrs: Attrs,
}

/// One span, as assembled and analyzed. Times are unix nanoseconds.
#[derive(Debug, Clone, PartialEq)]
pub struct Span {
    pub span_id: SpanId,
    pub parent_id: Option<SpanId>,
    pub start_ns: u64,
    pub end_ns: u64,
    pub service: Sym,
    /// The resource's `service.instance.id`.
    pub instance: Option<Sym>,
    pub operation: Sym,
    pub kind: SpanKind,
    pub status: StatusCode,
    pub status_message: Option<Box<str>>,
    pub sem: Semantics,
    pub attrs: Attrs,
    pub events: Box<[Event]>,
    pub links: Box<[Link]>,
}

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
            instance: None,
            operation: Sym::new(operation),
            kind,
            status: StatusCode::Unset,
            status_message: None,
            sem: Semantics::default(),
            attrs: Attrs::default(),
            events: Box::default(),
            links: Box::default(),
        }
    }

    pub fn duration_ns(&self) -> u64 {
        self.end_ns.saturating_sub(self.start_ns)
    }

    /// Approximate bytes this span holds, inline and on the heap.
    pub fn size_bytes(&self) -> usize {
        std::mem::size_of::<Span>()
            + self.attrs.heap_bytes()
            + self.status_message.as_ref().map_or(0, |m| m.len())
            + self
                .events
                .iter()
                .map(|e| std::mem::size_of::<Event>() + e.attrs.heap_bytes())
                .sum::<usize>()
            + self
                .links
                .iter()
                .map(|l| std::mem::size_of::<Link>() + l.attrs.heap_bytes())
                .sum::<usize>()
    }
}

/// The hand-off from ingest to assembly: the spans of one export request, grouped
/// by trace id, and what was refused.
#[derive(Debug, Default)]
pub struct SpanBatch {
    pub traces: Vec<(TraceId, Vec<Span>)>,
    pub accepted: u64,
    pub rejected: u64,
    /// Why spans were refused (the first few reasons), for the partial-success message.
    pub errors: Vec<String>,
}
