//! Realistic OTLP export requests for benchmarks and load tests.
//!
//! A trace is an entry span on `frontend` that fans out to `fan_out` backend
//! services, each answering from a database: per call a CLIENT span, the callee's
//! SERVER span and its DB CLIENT span. Every span carries about ten attributes
//! with semantic-convention keys and values of realistic length. Deterministic for
//! a seed.

use crate::ingest::otlp::collector::trace::v1::ExportTraceServiceRequest;
use crate::ingest::otlp::common::v1::{any_value, AnyValue, InstrumentationScope, KeyValue};
use crate::ingest::otlp::resource::v1::Resource;
use crate::ingest::otlp::trace::v1::{span, ResourceSpans, ScopeSpans, Span, Status};

const BACKENDS: [&str; 6] = [
    "checkout",
    "cart",
    "payments",
    "inventory",
    "pricing",
    "shipping",
];

/// Generates traces; see the module documentation for their shape.
pub struct Generator {
    state: u64,
    fan_out: usize,
}

fn kv(key: &str, value: any_value::Value) -> KeyValue {
    KeyValue {
        key: key.to_owned(),
        value: Some(AnyValue { value: Some(value) }),
        ..Default::default()
    }
}

fn text(s: impl Into<String>) -> any_value::Value {
    any_value::Value::StringValue(s.into())
}

fn int(i: i64) -> any_value::Value {
    any_value::Value::IntValue(i)
}

impl Generator {
    pub fn new(seed: u64, fan_out: usize) -> Self {
        Generator {
            state: seed | 1,
            fan_out: fan_out.clamp(1, BACKENDS.len()),
        }
    }

    /// Spans per trace.
    pub fn spans_per_trace(&self) -> usize {
        1 + 3 * self.fan_out
    }

    fn next(&mut self) -> u64 {
        // xorshift64*
        self.state ^= self.state >> 12;
        self.state ^= self.state << 25;
        self.state ^= self.state >> 27;
        self.state.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    fn id(&mut self, len: usize) -> bytes::Bytes {
        let mut out = Vec::with_capacity(len);
        while out.len() < len {
            out.extend_from_slice(&(self.next() | 1).to_be_bytes());
        }
        out.truncate(len);
        out.into()
    }

    #[allow(clippy::too_many_arguments)]
    fn span(
        &mut self,
        trace_id: &bytes::Bytes,
        parent: &bytes::Bytes,
        name: &str,
        kind: span::SpanKind,
        start: u64,
        end: u64,
        attributes: Vec<KeyValue>,
    ) -> Span {
        Span {
            trace_id: trace_id.clone(),
            span_id: self.id(8),
            parent_span_id: parent.clone(),
            name: name.to_owned(),
            kind: kind as i32,
            start_time_unix_nano: start,
            end_time_unix_nano: end,
            attributes,
            status: Some(Status::default()),
            ..Default::default()
        }
    }

    fn http_attrs(&mut self, method: &str, route: &str, host: &str, status: i64) -> Vec<KeyValue> {
        let order = self.next() % 1_000_000;
        vec![
            kv("http.request.method", text(method)),
            kv("http.route", text(route)),
            kv("url.full", text(format!("https://{host}.internal.example.com:8443{route}?order={order}&locale=en-US"))),
            kv("http.response.status_code", int(status)),
            kv("server.address", text(format!("{host}.internal.example.com"))),
            kv("server.port", int(8443)),
            kv("network.protocol.version", text("1.1")),
            kv("user_agent.original", text("Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/120.0")),
            kv("client.address", text(format!("10.{}.{}.{}", order % 250, order % 200, order % 100))),
            kv("thread.name", text("tokio-runtime-worker")),
        ]
    }

    fn db_attrs(&mut self, table: &str) -> Vec<KeyValue> {
        let id = self.next() % 1_000_000;
        vec![
            kv("db.system.name", text("postgresql")),
            kv("db.namespace", text("shop")),
            kv("db.operation.name", text("SELECT")),
            kv("db.collection.name", text(table)),
            kv("db.query.text", text(format!("SELECT id, status, total, updated_at FROM {table} WHERE customer_id = {id} ORDER BY updated_at DESC LIMIT 20"))),
            kv("server.address", text("postgres-primary.internal.example.com")),
            kv("server.port", int(5432)),
            kv("db.response.returned_rows", int((id % 20) as i64)),
            kv("network.peer.address", text("10.0.3.17")),
            kv("thread.name", text("tokio-runtime-worker")),
        ]
    }

    /// The spans of one trace starting at `start_ns`, grouped by service.
    fn trace(&mut self, start_ns: u64) -> Vec<(&'static str, Vec<Span>)> {
        let trace_id = self.id(16);
        let none = bytes::Bytes::new();
        let ms = 1_000_000;
        let total = 20 * ms + (self.next() % 80) * ms;
        let attrs = self.http_attrs("GET", "/api/checkout/{id}", "frontend", 200);
        let root = self.span(
            &trace_id,
            &none,
            "GET /api/checkout/{id}",
            span::SpanKind::Server,
            start_ns,
            start_ns + total,
            attrs,
        );
        let mut out = vec![("frontend", vec![root.clone()])];
        for (k, service) in BACKENDS.iter().take(self.fan_out).enumerate() {
            let call_start = start_ns + ms + k as u64 * ms / 2;
            let call_end = call_start + ms + self.next() % (total - 3 * ms);
            let route = format!("/v1/{service}/{{id}}");
            let attrs = self.http_attrs("POST", &route, service, 200);
            let client = self.span(
                &trace_id,
                &root.span_id,
                &format!("POST {route}"),
                span::SpanKind::Client,
                call_start,
                call_end,
                attrs,
            );
            let attrs = self.http_attrs("POST", &route, service, 200);
            let server = self.span(
                &trace_id,
                &client.span_id,
                &format!("POST {route}"),
                span::SpanKind::Server,
                call_start + ms / 10,
                call_end - ms / 10,
                attrs,
            );
            let attrs = self.db_attrs(service);
            let db = self.span(
                &trace_id,
                &server.span_id,
                "SELECT shop",
                span::SpanKind::Client,
                call_start + ms / 5,
                call_end - ms / 5,
                attrs,
            );
            out[0].1.push(client);
            out.push((service, vec![server, db]));
        }
        out
    }

    /// One export request with whole traces, about `spans` spans, one
    /// `ResourceSpans` per service as an SDK or a collector batches them.
    pub fn request(&mut self, spans: usize, start_ns: u64) -> ExportTraceServiceRequest {
        let traces = spans.div_ceil(self.spans_per_trace()).max(1);
        let mut by_service: Vec<(&'static str, Vec<Span>)> = Vec::new();
        for t in 0..traces {
            for (service, spans) in self.trace(start_ns + t as u64 * 1_000) {
                match by_service.iter_mut().find(|(s, _)| *s == service) {
                    Some((_, list)) => list.extend(spans),
                    None => by_service.push((service, spans)),
                }
            }
        }
        ExportTraceServiceRequest {
            resource_spans: by_service
                .into_iter()
                .map(|(service, spans)| ResourceSpans {
                    resource: Some(Resource {
                        attributes: vec![
                            kv("service.name", text(service)),
                            kv(
                                "service.instance.id",
                                text(format!("{service}-7d9f8c6b5-x2k4q")),
                            ),
                            kv("telemetry.sdk.language", text("rust")),
                        ],
                        ..Default::default()
                    }),
                    scope_spans: vec![ScopeSpans {
                        scope: Some(InstrumentationScope {
                            name: "hopscope-loadgen".into(),
                            ..Default::default()
                        }),
                        spans,
                        ..Default::default()
                    }],
                    ..Default::default()
                })
                .collect(),
        }
    }
}
