//! What both OTLP decoders share: decoded fields → the span model.
//!
//! [`super::convert`] walks protobuf bytes and [`super::json`] the OTLP JSON
//! mapping; both hand each resource's attributes, each span attribute and each
//! span's fields to a [`Builder`], which interns names and keys, packs attributes
//! into a per-span scratch arena, checks ids (a span with a malformed one is
//! refused and counted), and groups accepted spans into one [`SpanSet`] per trace.
//! The offline readers of Jaeger and Zipkin JSON ([`crate::offline`]) build
//! their spans through it too.

use std::num::NonZeroU16;
use std::sync::LazyLock;

use rustc_hash::FxHashMap;

use crate::model::{
    field, AttrArena, AttrRange, Event, Extra, Field, IdError, Link, Span, SpanBatch, SpanId,
    SpanKind, SpanSet, StatusCode, Sym, TraceId, RESOURCE_ATTRS,
};

/// How many refusal reasons a partial-success message quotes.
const MAX_REASONS: usize = 3;

/// Deepest nesting of array/map attribute values accepted.
pub(crate) const MAX_VALUE_DEPTH: usize = 32;

/// String values up to this long are interned while their key's values repeat.
const MAX_INTERNED_VALUE: usize = 512;

/// New values a key may intern on one thread before its values are stored inline
/// (a key with many distinct values, such as `url.full`, never fills the interner).
const MAX_INTERNED_PER_KEY: u32 = 1024;

/// Longest text of a resource's other attributes ([`RESOURCE_ATTRS`]);
/// attributes that would make it longer are left out.
const MAX_RESOURCE_TEXT: usize = 4096;

thread_local! {
    /// Per attribute key: how many of its values missed the interning cache.
    static KEY_MISSES: std::cell::RefCell<FxHashMap<Sym, u32>> =
        std::cell::RefCell::new(FxHashMap::default());
}

/// Interns a string value of at most `max_len` bytes while its key's values
/// keep repeating; `None` means store it inline.
fn intern_value(key: Sym, value: &[u8], max_len: usize) -> Option<Sym> {
    if value.len() > max_len {
        return None;
    }
    // A value seen lately (the common case) costs one lookup.
    if let Some(sym) = Sym::cache_hit(value) {
        return Some(sym);
    }
    KEY_MISSES.with(|misses| {
        let mut misses = misses.borrow_mut();
        let count = misses.entry(key).or_default();
        if *count >= MAX_INTERNED_PER_KEY {
            return None;
        }
        let (sym, hit) = Sym::cached(value);
        if !hit {
            *count += 1;
        }
        Some(sym)
    })
}

static SERVICE_NAME: LazyLock<Sym> = LazyLock::new(|| Sym::new("service.name"));
static SERVICE_INSTANCE: LazyLock<Sym> = LazyLock::new(|| Sym::new("service.instance.id"));
/// The SDK specification's fallback when a resource names no service.
static UNKNOWN_SERVICE: LazyLock<Sym> = LazyLock::new(|| Sym::new("unknown_service"));

/// Text from the wire: UTF-8 as is, anything else repaired.
pub(crate) fn lossy(bytes: &[u8]) -> std::borrow::Cow<'_, str> {
    match std::str::from_utf8(bytes) {
        Ok(text) => text.into(),
        Err(_) => String::from_utf8_lossy(bytes),
    }
}

/// An attribute value as a decoder found it.
pub(crate) enum Value<'a> {
    Str(&'a [u8]),
    Bool(bool),
    Int(i64),
    Double(f64),
    /// Arrays, maps and bytes, rendered as JSON (bytes as a hex string).
    Json(serde_json::Value),
}

impl Value<'_> {
    /// The value as an integer status code: an int, a decimal string or a whole double.
    fn as_int(&self) -> Option<i64> {
        match self {
            Value::Int(i) => Some(*i),
            Value::Str(s) => std::str::from_utf8(s).ok()?.trim().parse().ok(),
            Value::Double(d) => (d.fract() == 0.0).then_some(*d as i64),
            _ => None,
        }
    }
}

/// What a span keeps inline from its attributes.
#[derive(Default)]
pub(crate) struct Codes {
    http: Option<NonZeroU16>,
    grpc: Option<u8>,
    error_type: bool,
}

/// What every span of a resource carries: its service and instance, and its
/// other attributes as one interned text ([`RESOURCE_ATTRS`]).
#[derive(Clone, Copy)]
pub(crate) struct Resource {
    pub(crate) service: Sym,
    pub(crate) instance: Option<Sym>,
    pub(crate) attrs: Option<Sym>,
}

/// Collects a resource's service name, instance id and other attributes.
#[derive(Default)]
pub(crate) struct ResourceAttrs {
    service: Option<Sym>,
    instance: Option<Sym>,
    /// The other attributes as JSON `[key, value]` pairs, comma-separated.
    others: String,
}

impl ResourceAttrs {
    /// Notes one resource attribute.
    pub(crate) fn attribute(&mut self, key: &[u8], value: Value<'_>) {
        let key = Sym::from_utf8_lossy(key);
        let json = match value {
            Value::Str(v) if key == *SERVICE_NAME => {
                self.service = Some(Sym::from_utf8_lossy(v));
                return;
            }
            Value::Str(v) if key == *SERVICE_INSTANCE => {
                self.instance = Some(Sym::from_utf8_lossy(v));
                return;
            }
            Value::Str(v) => serde_json::Value::from(lossy(v).as_ref()),
            Value::Bool(b) => b.into(),
            Value::Int(i) => i.into(),
            Value::Double(d) => {
                serde_json::Number::from_f64(d).map_or(serde_json::Value::Null, Into::into)
            }
            Value::Json(v) => v,
        };
        let Ok(pair) = serde_json::to_string(&(key.as_str(), json)) else {
            return;
        };
        // Two brackets and a comma around it.
        if self.others.len() + pair.len() + 3 > MAX_RESOURCE_TEXT {
            return;
        }
        if !self.others.is_empty() {
            self.others.push(',');
        }
        self.others.push_str(&pair);
    }

    pub(crate) fn finish(self) -> Resource {
        let attrs = (!self.others.is_empty())
            .then(|| format!("[{}]", self.others))
            .and_then(|text| intern_value(*RESOURCE_ATTRS, text.as_bytes(), MAX_RESOURCE_TEXT));
        Resource {
            service: self.service.unwrap_or(*UNKNOWN_SERVICE),
            instance: self.instance,
            attrs,
        }
    }
}

/// A span's fields other than ids, attributes, events and links, as decoded.
#[derive(Default)]
pub(crate) struct SpanFields<'a> {
    pub(crate) name: &'a [u8],
    /// The OTLP `SpanKind` number.
    pub(crate) kind: u64,
    pub(crate) start_ns: u64,
    pub(crate) end_ns: u64,
    /// The OTLP `Status.code` number.
    pub(crate) status: u64,
    pub(crate) status_message: &'a [u8],
    pub(crate) codes: Codes,
}

/// A span's validated ids, or why they are malformed. An empty parent id means
/// a root; any other parent id must be valid.
pub(crate) fn span_ids(
    trace_id: Result<TraceId, IdError>,
    span_id: Result<SpanId, IdError>,
    parent_id: Option<Result<SpanId, IdError>>,
) -> Result<(TraceId, SpanId, Option<SpanId>), String> {
    let trace_id = trace_id.map_err(|e| e.to_string())?;
    let span_id = span_id.map_err(|e| e.to_string())?;
    let parent_id = parent_id.transpose().map_err(|e| format!("parent {e}"))?;
    Ok((trace_id, span_id, parent_id))
}

/// Builds one request's [`SpanBatch`].
#[derive(Default)]
pub(crate) struct Builder {
    batch: SpanBatch,
    /// Where each trace's spans are in `batch.traces`: one set per trace, however
    /// its spans are spread over the request's resources.
    groups: FxHashMap<TraceId, usize>,
    /// The attributes of the span being decoded (and its events and links).
    scratch: AttrArena,
}

impl Builder {
    pub(crate) fn finish(self) -> SpanBatch {
        self.batch
    }

    /// Starts a span of `resource`: its instance id and its other attributes
    /// travel with it, as attributes (interned: a few bytes per span).
    pub(crate) fn begin_span(&mut self, resource: Resource) {
        self.scratch.clear();
        if let Some(instance) = resource.instance {
            self.scratch.sym(*SERVICE_INSTANCE, instance);
        }
        if let Some(attrs) = resource.attrs {
            self.scratch.sym(*RESOURCE_ATTRS, attrs);
        }
    }

    /// Where the next attribute list starts (an event's or a link's).
    pub(crate) fn mark(&self) -> u32 {
        self.scratch.mark()
    }

    /// The attributes added since `mark`.
    pub(crate) fn attrs_since(&self, mark: u32) -> AttrRange {
        self.scratch.finish(mark)
    }

    /// One attribute into the scratch arena; with `codes`, a span's attribute, whose
    /// HTTP and gRPC status codes are also kept inline.
    pub(crate) fn attribute(&mut self, key: &[u8], value: Value<'_>, codes: Option<&mut Codes>) {
        let key = Sym::from_utf8_lossy(key);
        let semantic = field(key);
        if let Some(codes) = codes {
            match semantic {
                Some(Field::HttpStatus) => {
                    codes.http = value
                        .as_int()
                        .and_then(|c| u16::try_from(c).ok())
                        .and_then(NonZeroU16::new)
                }
                Some(Field::GrpcStatus) => {
                    codes.grpc = value.as_int().and_then(|c| u8::try_from(c).ok())
                }
                Some(Field::ErrorType) => codes.error_type = true,
                _ => {}
            }
        }
        match value {
            // Semantic-convention values are always interned: the detectors look them up.
            Value::Str(v) if semantic.is_some() => self.scratch.sym(key, Sym::from_utf8_lossy(v)),
            Value::Str(v) => match intern_value(key, v, MAX_INTERNED_VALUE) {
                Some(sym) => self.scratch.sym(key, sym),
                None => self.scratch.str(key, &lossy(v)),
            },
            Value::Bool(b) => self.scratch.bool(key, b),
            Value::Int(i) => self.scratch.int(key, i),
            Value::Double(d) => self.scratch.double(key, d),
            Value::Json(json) => self.scratch.json(key, &json.to_string()),
        }
    }

    /// Refuses the span being decoded (`at`: where it is in the input), with
    /// the reason quoted in partial success.
    pub(crate) fn reject(&mut self, at: std::fmt::Arguments<'_>, why: &str) {
        self.scratch.clear();
        self.batch.rejected += 1;
        if self.batch.errors.len() < MAX_REASONS {
            self.batch.errors.push(format!("{at}: {why}"));
        }
    }

    /// Accepts the span being decoded, its attributes being those in the scratch
    /// arena (`attrs` for the span's own, and its events' and links').
    pub(crate) fn accept(
        &mut self,
        (trace_id, span_id, parent_id): (TraceId, SpanId, Option<SpanId>),
        resource: Resource,
        fields: SpanFields<'_>,
        attrs: AttrRange,
        events: Vec<Event>,
        links: Vec<Link>,
    ) {
        let status_message = (!fields.status_message.is_empty())
            .then(|| Box::<str>::from(lossy(fields.status_message)));
        let extra =
            (status_message.is_some() || !events.is_empty() || !links.is_empty()).then(|| {
                Box::new(Extra {
                    status_message,
                    events,
                    links,
                })
            });
        let span = Span {
            span_id,
            parent_id,
            start_ns: fields.start_ns,
            end_ns: fields.end_ns,
            service: resource.service,
            operation: Sym::from_utf8_lossy(fields.name),
            kind: match fields.kind {
                1 => SpanKind::Internal,
                2 => SpanKind::Server,
                3 => SpanKind::Client,
                4 => SpanKind::Producer,
                5 => SpanKind::Consumer,
                _ => SpanKind::Unspecified,
            },
            status: match fields.status {
                1 => StatusCode::Ok,
                2 => StatusCode::Error,
                _ => StatusCode::Unset,
            },
            attrs,
            extra,
            http_status: fields.codes.http,
            grpc_status: fields.codes.grpc,
            has_error_type: fields.codes.error_type,
        };
        self.batch.accepted += 1;
        let next = self.batch.traces.len();
        let at = *self.groups.entry(trace_id).or_insert(next);
        if at == next {
            self.batch.traces.push((trace_id, SpanSet::default()));
        }
        let (_, set) = &mut self.batch.traces[at];
        set.push(span, &mut self.scratch);
    }
}

/// An event whose attributes were added since `mark`.
pub(crate) fn event(b: &Builder, mark: u32, time_ns: u64, name: &[u8]) -> Event {
    Event {
        time_ns,
        name: Sym::from_utf8_lossy(name),
        attrs: b.attrs_since(mark),
    }
}

/// A link whose attributes were added since `mark`; `None` when its ids are
/// malformed (a link is context, not a span: it is dropped, the span kept).
pub(crate) fn link(
    b: &Builder,
    mark: u32,
    trace_id: Result<TraceId, IdError>,
    span_id: Result<SpanId, IdError>,
) -> Option<Link> {
    let attrs = b.attrs_since(mark);
    Some(Link {
        trace_id: trace_id.ok()?,
        span_id: span_id.ok()?,
        attrs,
    })
}
