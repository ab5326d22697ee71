//! One analyzed trace as Jaeger's query API renders it (jaeger `model/json`):
//! spans with typed tags, logs and references, processes keyed by id, and
//! hopscope's analysis as `hopscope.*` tags and span warnings.

use std::collections::BTreeMap;
use std::sync::LazyLock;

use base64::Engine;
use rustc_hash::FxHashMap;
use serde::Serialize;
use serde_json::Value;

use crate::analyze::AnalyzedTrace;
use crate::api::params::ms;
use crate::api::schemas::resource_attrs;
use crate::model::{AttrValue, SpanId, SpanKind, StatusCode, Sym, TraceId, RESOURCE_ATTRS};
use crate::store::Finding;

static INSTANCE: LazyLock<Sym> = LazyLock::new(|| Sym::new("service.instance.id"));

/// The tag listing the kinds of the findings that name a span.
pub const FINDINGS_TAG: &str = "hopscope.findings";

/// The tag listing the kinds of the findings a span is part of (its calls
/// make up the pattern: an N+1's repeated calls, a cascade's chain).
pub const FINDING_TAG: &str = "hopscope.finding";

/// The ids of the findings a span is part of, as `GET /api/v1/findings/{id}` takes them.
pub const FINDING_ID_TAG: &str = "hopscope.finding_id";

/// The tags whose value is a comma-separated list: a search matches one item.
pub const LIST_TAGS: [&str; 3] = [FINDINGS_TAG, FINDING_TAG, FINDING_ID_TAG];

/// Integers beyond this lose precision in JavaScript: Jaeger UI's model writes
/// them as strings.
const MAX_SAFE_INTEGER: i64 = (1 << 53) - 1;

/// A Jaeger `KeyValue`: `type` is `string`, `bool`, `int64`, `float64` or `binary`.
#[derive(Debug, Clone, Serialize)]
pub struct Tag {
    pub key: &'static str,
    #[serde(rename = "type")]
    pub kind: &'static str,
    pub value: Value,
}

impl Tag {
    fn string(key: &'static str, value: impl Into<String>) -> Tag {
        Tag {
            key,
            kind: "string",
            value: Value::String(value.into()),
        }
    }

    fn bool(key: &'static str, value: bool) -> Tag {
        Tag {
            key,
            kind: "bool",
            value: Value::Bool(value),
        }
    }

    fn float(key: &'static str, value: f64) -> Tag {
        Tag {
            key,
            kind: "float64",
            value: value.into(),
        }
    }

    /// An `int64`, as a string beyond JavaScript's safe integers.
    fn int(key: &'static str, value: i64) -> Tag {
        Tag {
            key,
            kind: "int64",
            value: if value.unsigned_abs() > MAX_SAFE_INTEGER as u64 {
                Value::String(value.to_string())
            } else {
                value.into()
            },
        }
    }

    /// An attribute as Jaeger's OTLP translator types it: arrays and maps as
    /// their JSON text, bytes (which ingest keeps as a hex string) as base64.
    fn of(key: Sym, value: AttrValue<'_>) -> Tag {
        let key = key.as_str();
        match value {
            AttrValue::Str(s) => Tag::string(key, s),
            AttrValue::Bool(b) => Tag::bool(key, b),
            AttrValue::Double(d) => Tag::float(key, d),
            AttrValue::Int(i) => Tag::int(key, i),
            AttrValue::Json(text) => match serde_json::from_str::<Value>(text) {
                Ok(Value::String(hex_text)) => match hex::decode(&hex_text) {
                    Ok(bytes) => Tag {
                        key,
                        kind: "binary",
                        value: base64::engine::general_purpose::STANDARD
                            .encode(bytes)
                            .into(),
                    },
                    Err(_) => Tag::string(key, hex_text),
                },
                _ => Tag::string(key, text),
            },
        }
    }

    /// The value as text, as Jaeger compares a searched tag with it.
    pub fn text(&self) -> String {
        match &self.value {
            Value::String(s) => s.clone(),
            other => other.to_string(),
        }
    }
}

/// A Jaeger span reference (`CHILD_OF` for the parent, `FOLLOWS_FROM` for links).
#[derive(Debug, Serialize)]
pub struct Reference {
    #[serde(rename = "refType")]
    ref_type: &'static str,
    #[serde(rename = "traceID")]
    trace_id: TraceId,
    #[serde(rename = "spanID")]
    span_id: SpanId,
}

/// A span event: its time and its fields (`event` = the event's name first).
#[derive(Debug, Serialize)]
pub struct Log {
    timestamp: u64,
    fields: Vec<Tag>,
}

impl Log {
    /// The event's fields.
    pub fn fields(&self) -> &[Tag] {
        &self.fields
    }
}

/// A Jaeger span. Times are integer microseconds since the epoch.
#[derive(Debug, Serialize)]
pub struct SpanJson {
    #[serde(rename = "traceID")]
    trace_id: TraceId,
    #[serde(rename = "spanID")]
    span_id: SpanId,
    #[serde(rename = "operationName")]
    operation_name: Sym,
    references: Vec<Reference>,
    #[serde(rename = "startTime")]
    start_time: u64,
    duration: u64,
    tags: Vec<Tag>,
    logs: Vec<Log>,
    #[serde(rename = "processID")]
    process_id: String,
    warnings: Option<Vec<String>>,
}

/// What emitted spans: a service and its resource's tags.
#[derive(Debug, Serialize)]
pub struct Process {
    #[serde(rename = "serviceName")]
    service_name: Sym,
    tags: Vec<Tag>,
}

/// One trace of a Jaeger answer.
#[derive(Debug, Serialize)]
pub struct TraceJson {
    #[serde(rename = "traceID")]
    trace_id: TraceId,
    pub spans: Vec<SpanJson>,
    processes: BTreeMap<String, Process>,
    warnings: Option<Vec<String>>,
}

fn micros(ns: u64) -> u64 {
    ns / 1_000
}

fn kind_name(kind: SpanKind) -> Option<&'static str> {
    match kind {
        SpanKind::Unspecified => None,
        SpanKind::Internal => Some("internal"),
        SpanKind::Server => Some("server"),
        SpanKind::Client => Some("client"),
        SpanKind::Producer => Some("producer"),
        SpanKind::Consumer => Some("consumer"),
    }
}

/// The `spanKind` of an operation in `GET /api/operations` (`""` when unspecified).
pub fn span_kind(kind: SpanKind) -> &'static str {
    kind_name(kind).unwrap_or("")
}

/// What the findings of a trace say about one of its spans; each field is
/// comma-separated, or empty.
#[derive(Debug, Clone, Default)]
pub struct SpanFindings {
    /// The kinds of the findings that name the span ([`FINDINGS_TAG`]).
    pub named: String,
    /// The kinds of the findings whose pattern the span is part of: the
    /// repeated or serial calls of a per-trace pattern, a cascade's timed-out
    /// chain ([`FINDING_TAG`]).
    pub part_of: String,
    /// Those findings' ids ([`FINDING_ID_TAG`]).
    pub ids: String,
}

/// Per span of `t`, what its findings say about it. A finding names a span
/// when the span is part of it (its marks), when a hop of its chain is that
/// span, or when its culprit is that span's service and operation.
/// `findings` are the ones `t` contributed to
/// ([`crate::store::FindingStore::for_trace`]).
pub fn span_findings(t: &AnalyzedTrace, findings: &[Finding]) -> Vec<SpanFindings> {
    let mut part_of: FxHashMap<SpanId, Vec<&Finding>> = FxHashMap::default();
    for (f, spans) in crate::api::traces::marks(t, findings) {
        for s in spans {
            part_of.entry(*s).or_default().push(f);
        }
    }
    let join = |mut items: Vec<String>| {
        items.sort_unstable();
        items.dedup();
        items.join(",")
    };
    t.trace
        .spans
        .iter()
        .map(|s| {
            let marked = part_of.get(&s.span_id).map_or(&[][..], Vec::as_slice);
            let named = findings
                .iter()
                .filter(|f| {
                    let o = &f.latest;
                    marked.iter().any(|m| m.id == f.id)
                        || o.chain.iter().any(|h| h.span_id == Some(s.span_id))
                        || (o.culprit.service == s.service && o.culprit.operation == s.operation)
                })
                .map(|f| f.latest.kind.as_str().to_owned())
                .collect();
            SpanFindings {
                named: join(named),
                part_of: join(
                    marked
                        .iter()
                        .map(|f| f.latest.kind.as_str().to_owned())
                        .collect(),
                ),
                ids: join(marked.iter().map(|f| format!("{:016x}", f.id)).collect()),
            }
        })
        .collect()
}

/// A span's tags, and the resource they leave to its process.
pub struct SpanTags {
    /// Its attributes, Jaeger's kind and status tags, and the analysis.
    pub tags: Vec<Tag>,
    /// The resource's `service.instance.id`.
    pub instance: Option<Sym>,
    /// The resource's other attributes ([`RESOURCE_ATTRS`]).
    pub resource: Option<Sym>,
}

/// The tags of span `i` of `t`: its own attributes, `span.kind`, the status
/// tags, and the analysis (`hopscope.*`, with `findings` what its findings
/// say about it, [`span_findings`]). What a user sees is what a search
/// matches: both come from here.
pub fn span_tags(t: &AnalyzedTrace, i: usize, findings: &SpanFindings) -> SpanTags {
    let s = &t.trace.spans[i];
    let (mut instance, mut resource) = (None, None);
    let mut tags: Vec<Tag> = t
        .trace
        .attrs(i as u32)
        .filter_map(|(k, v)| {
            // The resource's attributes (ingest interns them) belong to the process.
            if k == *RESOURCE_ATTRS {
                if let AttrValue::Str(text) = v {
                    resource = Sym::lookup(text);
                }
                return None;
            }
            if k == *INSTANCE && instance.is_none() {
                if let AttrValue::Str(text) = v {
                    instance = Sym::lookup(text);
                    if instance.is_some() {
                        return None;
                    }
                }
            }
            Some(Tag::of(k, v))
        })
        .collect();
    tags.extend(status_tags(s.status, s.status_message()));
    if let Some(kind) = kind_name(s.kind) {
        tags.push(Tag::string("span.kind", kind));
    }
    let critical_ns = t.path.critical_ns[i];
    tags.push(Tag::float("hopscope.critical_ms", ms(critical_ns)));
    tags.push(Tag::float("hopscope.self_ms", ms(t.path.self_ns[i])));
    tags.push(Tag::bool("hopscope.on_critical_path", critical_ns > 0));
    for (key, value) in [
        (FINDINGS_TAG, &findings.named),
        (FINDING_TAG, &findings.part_of),
        (FINDING_ID_TAG, &findings.ids),
    ] {
        if !value.is_empty() {
            tags.push(Tag::string(key, value.as_str()));
        }
    }
    SpanTags {
        tags,
        instance,
        resource,
    }
}

/// The events of span `i` of `t` as Jaeger logs, at the span's (skew-adjusted) times.
pub fn logs(t: &AnalyzedTrace, i: usize) -> Vec<Log> {
    let trace = &t.trace;
    let shift = trace.shift_ns[i];
    trace.spans[i]
        .events()
        .iter()
        .map(|e| {
            let mut fields: Vec<Tag> = trace
                .arena
                .iter(e.attrs)
                .map(|(k, v)| Tag::of(k, v))
                .collect();
            if !e.name.as_str().is_empty() && !fields.iter().any(|f| f.key == "event") {
                fields.insert(0, Tag::string("event", e.name.as_str()));
            }
            Log {
                timestamp: micros(e.time_ns.saturating_add_signed(shift)),
                fields,
            }
        })
        .collect()
}

/// Renders one analyzed trace. `findings` is [`span_findings`]' answer.
/// Flat loops only, so rendering
/// takes the same stack however deep the trace is. Times are the ones the
/// analysis used: a span shifted for clock skew is shown shifted (as Jaeger's
/// own adjuster does) and says so in its warnings.
pub fn trace_json(t: &AnalyzedTrace, findings: &[SpanFindings]) -> TraceJson {
    let trace = &t.trace;
    let index: FxHashMap<SpanId, usize> = trace
        .spans
        .iter()
        .enumerate()
        .map(|(i, s)| (s.span_id, i))
        .collect();
    let mut span_warnings: Vec<Vec<String>> = vec![Vec::new(); trace.len()];
    let mut trace_warnings = Vec::new();
    for w in &t.warnings {
        match w.span_id.and_then(|id| index.get(&id)) {
            Some(&i) => span_warnings[i].push(w.message.clone()),
            None => trace_warnings.push(w.message.clone()),
        }
    }
    let mut process_ids: FxHashMap<(Sym, Option<Sym>, Option<Sym>), String> = FxHashMap::default();
    let mut processes = BTreeMap::new();
    let spans = (0..trace.len())
        .map(|i| {
            let s = &trace.spans[i];
            let SpanTags {
                tags,
                instance,
                resource,
            } = span_tags(t, i, findings.get(i).unwrap_or(&SpanFindings::default()));
            let next = format!("p{}", process_ids.len() + 1);
            let process_id = process_ids
                .entry((s.service, instance, resource))
                .or_insert_with(|| {
                    processes.insert(
                        next.clone(),
                        Process {
                            service_name: s.service,
                            tags: process_tags(instance, resource),
                        },
                    );
                    next
                })
                .clone();
            let references = s
                .parent_id
                .map(|p| Reference {
                    ref_type: "CHILD_OF",
                    trace_id: trace.trace_id,
                    span_id: p,
                })
                .into_iter()
                .chain(s.links().iter().map(|l| Reference {
                    ref_type: "FOLLOWS_FROM",
                    trace_id: l.trace_id,
                    span_id: l.span_id,
                }))
                .collect();
            let logs = logs(t, i);
            let warnings = std::mem::take(&mut span_warnings[i]);
            SpanJson {
                trace_id: trace.trace_id,
                span_id: s.span_id,
                operation_name: s.operation,
                references,
                start_time: micros(trace.start(i as u32)),
                duration: micros(s.duration_ns()),
                tags,
                logs,
                process_id,
                warnings: (!warnings.is_empty()).then_some(warnings),
            }
        })
        .collect();
    TraceJson {
        trace_id: trace.trace_id,
        spans,
        processes,
        warnings: (!trace_warnings.is_empty()).then_some(trace_warnings),
    }
}

/// A process's tags: the resource's instance and its other attributes, typed
/// as Jaeger types them (strings, bools, integers, floats; arrays and maps as
/// their JSON text).
pub fn process_tags(instance: Option<Sym>, resource: Option<Sym>) -> Vec<Tag> {
    let mut tags: Vec<Tag> = instance
        .map(|i| Tag::string(INSTANCE.as_str(), i.as_str()))
        .into_iter()
        .collect();
    for (key, value) in resource
        .map(|r| resource_attrs(r.as_str()))
        .unwrap_or_default()
    {
        // Keys were interned at ingest, so this finds them.
        let Some(key) = Sym::lookup(&key) else {
            continue;
        };
        let key = key.as_str();
        tags.push(match value {
            Value::String(s) => Tag::string(key, s),
            Value::Bool(b) => Tag::bool(key, b),
            Value::Number(n) => match (n.as_i64(), n.as_f64()) {
                (Some(i), _) => Tag::int(key, i),
                (None, Some(f)) => Tag::float(key, f),
                (None, None) => Tag::string(key, n.to_string()),
            },
            other => Tag::string(key, other.to_string()),
        });
    }
    tags
}

/// Jaeger's status tags: `otel.status_code` (`OK`/`ERROR`), `error=true` on
/// an error, and `otel.status_description` with the message.
fn status_tags(status: StatusCode, message: Option<&str>) -> Vec<Tag> {
    let mut tags = Vec::new();
    match status {
        StatusCode::Unset => {}
        StatusCode::Ok => tags.push(Tag::string("otel.status_code", "OK")),
        StatusCode::Error => {
            tags.push(Tag::string("otel.status_code", "ERROR"));
            tags.push(Tag::bool("error", true));
        }
    }
    if let Some(m) = message {
        tags.push(Tag::string("otel.status_description", m));
    }
    tags
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn attribute_values_get_jaegers_types() {
        let k = Sym::new("k");
        let cases = [
            (AttrValue::Str("x"), "string", Value::from("x")),
            (AttrValue::Int(-7), "int64", Value::from(-7)),
            (
                AttrValue::Int(i64::MAX),
                "int64",
                Value::from("9223372036854775807"),
            ),
            (
                AttrValue::Int(i64::MIN),
                "int64",
                Value::from("-9223372036854775808"),
            ),
            (AttrValue::Double(0.5), "float64", Value::from(0.5)),
            (AttrValue::Bool(true), "bool", Value::from(true)),
            (AttrValue::Json("[1,2]"), "string", Value::from("[1,2]")),
            (
                AttrValue::Json("\"00003039\""),
                "binary",
                Value::from("AAAwOQ=="),
            ),
        ];
        for (value, kind, expected) in cases {
            let tag = Tag::of(k, value);
            assert_eq!((tag.kind, &tag.value), (kind, &expected), "{value:?}");
        }
        assert_eq!(Tag::of(k, AttrValue::Bool(false)).text(), "false");
        assert_eq!(Tag::of(k, AttrValue::Int(42)).text(), "42");
    }
}
