//! What the integration tests share (test-only code): a daemon on ephemeral
//! ports, real OTLP exporters and an HTTP client for the API (this file), the
//! `hopscope serve` binary as a child process ([`process`]), hand-built OTLP
//! messages ([`wire`]), shared traces ([`scenarios`]), the tree and
//! critical-path invariants ([`checks`]) and Jaeger JSON fixtures ([`jaeger`]).
//!
//! Each test binary compiles this module on its own (`mod support;`) and uses
//! only part of it.
#![allow(dead_code)] // each test binary uses a different part

pub mod checks;
pub mod jaeger;
pub mod process;
pub mod scenarios;
pub mod wire;

use std::borrow::Cow;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use hopscope::clock::Clock;
use hopscope::config::{Config, Settings};
use hopscope::daemon::{self, Running};
use hopscope::store::Store;
use opentelemetry::trace::{
    SpanContext, SpanId, SpanKind, Status, TraceFlags, TraceId, TraceState,
};
use opentelemetry::{InstrumentationScope, KeyValue};
use opentelemetry_otlp::{WithExportConfig, WithTonicConfig};
use opentelemetry_sdk::trace::{SpanData, SpanEvents, SpanExporter, SpanLinks};
use opentelemetry_sdk::Resource;
use serde_json::Value;

pub struct TestDaemon {
    running: Option<Running>,
    pub grpc_endpoint: String,
    /// The OTLP/HTTP receiver's base URL (exporters append `/v1/traces`).
    pub http_endpoint: String,
    pub api: String,
    /// The Jaeger query API's base URL.
    pub jaeger: String,
    http: reqwest::Client,
}

/// Starts a daemon on ephemeral ports with a short idle timeout.
pub async fn start(settings: Settings) -> TestDaemon {
    start_at(settings, Clock::System).await
}

/// [`start`] with the daemon's clock at `clock` (recorded traces replayed at
/// the time they were recorded, so windows and retention keep them).
pub async fn start_at(settings: Settings, clock: Clock) -> TestDaemon {
    let defaults = Settings {
        otlp_grpc_addr: Some("127.0.0.1:0".parse().unwrap()),
        otlp_http_addr: Some("127.0.0.1:0".parse().unwrap()),
        api_addr: Some("127.0.0.1:0".parse().unwrap()),
        jaeger_addr: Some("127.0.0.1:0".parse().unwrap()),
        trace_idle: Some("300ms".parse().unwrap()),
        ..Settings::default()
    };
    let config = Config {
        clock,
        ..Config::try_from(settings.or(defaults)).expect("valid test config")
    };
    let running = daemon::start(config).await.expect("daemon starts");
    TestDaemon {
        grpc_endpoint: format!("http://{}", running.otlp_grpc_addr),
        http_endpoint: format!("http://{}", running.otlp_http_addr),
        api: format!("http://{}", running.api_addr),
        jaeger: format!("http://{}", running.jaeger_addr),
        running: Some(running),
        http: reqwest::Client::new(),
    }
}

/// A daemon whose cross-trace detectors run every 50 ms; traces complete after
/// 1 s without spans, so the services' exports of one trace always meet.
pub async fn start_detecting() -> TestDaemon {
    start(detecting()).await
}

/// The settings of [`start_detecting`].
pub fn detecting() -> Settings {
    detect_often(Settings {
        trace_idle: Some("1s".parse().unwrap()),
        ..Settings::default()
    })
}

/// `settings` with the cross-trace detectors running every 50 ms: what a
/// test reads of them (findings, `/api/v1/timeouts`, `/api/v1/queries`) is
/// as of their last pass, which [`TestDaemon::detected`] awaits.
pub fn detect_often(settings: Settings) -> Settings {
    Settings {
        detect_interval: Some("50ms".parse().unwrap()),
        ..settings
    }
}

/// `GET {api}{path}` on any daemon's API: the status and the JSON body.
pub async fn api_get(http: &reqwest::Client, api: &str, path: &str) -> (u16, Value) {
    let resp = http
        .get(format!("{api}{path}"))
        .send()
        .await
        .expect("API answers");
    let status = resp.status().as_u16();
    let body = resp.json().await.expect("API answers JSON");
    (status, body)
}

/// Polls any daemon's API until `check` accepts the answer to `path` (at
/// most 30 s).
pub async fn api_wait_for(
    http: &reqwest::Client,
    api: &str,
    path: &str,
    check: impl Fn(u16, &Value) -> bool,
) -> Value {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    loop {
        let (status, body) = api_get(http, api, path).await;
        if check(status, &body) {
            return body;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "gave up waiting on {path}; last answer {status}: {body}"
        );
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
}

impl TestDaemon {
    pub async fn get(&self, path: &str) -> (u16, Value) {
        api_get(&self.http, &self.api, path).await
    }

    /// Polls the API until `check` accepts the answer to `path` (at most 30 s).
    pub async fn wait_for(&self, path: &str, check: impl Fn(u16, &Value) -> bool) -> Value {
        api_wait_for(&self.http, &self.api, path, check).await
    }

    /// Waits until the trace is analyzed and has `spans` spans.
    pub async fn wait_trace(&self, trace_id: TraceId, spans: usize) -> Value {
        self.wait_for(&format!("/api/v1/traces/{trace_id}"), |status, body| {
            status == 200 && body["span_count"] == spans
        })
        .await
    }

    /// Waits until the cross-trace detectors have run over a window of
    /// `traces` traces (what `/api/v1/timeouts` describes) and the window is
    /// still as they saw it.
    pub async fn detected(&self, traces: usize) {
        self.wait_for("/api/v1/timeouts", |status, body| {
            status == 200 && body["window"]["traces"] == traces
        })
        .await;
        self.wait_for("/api/v1/stats", |status, body| {
            status == 200 && body["detectors_current"] == true
        })
        .await;
    }

    /// Waits until nothing is buffered or being analyzed and the cross-trace
    /// detectors have run over the window as it is: findings,
    /// `/api/v1/timeouts` and `/api/v1/queries` are then current.
    pub async fn settled_and_detected(&self) {
        self.wait_for("/api/v1/stats", |status, s| {
            status == 200
                && s["buffered_spans"] == 0
                && s["analysis_pending"] == 0
                && s["detectors_current"] == true
        })
        .await;
    }

    /// Waits until `GET /api/v1/findings?kind=KIND` lists at least one
    /// finding, and returns the answer.
    pub async fn wait_findings(&self, kind: &str) -> Value {
        self.wait_for(&format!("/api/v1/findings?kind={kind}"), |s, b| {
            s == 200 && b["findings"].as_array().is_some_and(|f| !f.is_empty())
        })
        .await
    }

    /// Every finding the API answers now.
    pub async fn findings(&self) -> Vec<Value> {
        self.get("/api/v1/findings").await.1["findings"]
            .as_array()
            .expect("findings")
            .clone()
    }

    pub fn store(&self) -> Arc<Store> {
        self.running.as_ref().expect("running").store()
    }

    pub async fn stop(mut self) {
        let running = self.running.take().expect("running");
        running.shutdown();
        running.wait().await.expect("clean shutdown");
    }
}

impl Drop for TestDaemon {
    fn drop(&mut self) {
        if let Some(r) = &self.running {
            r.shutdown();
        }
    }
}

/// A real OTLP/gRPC span exporter for one service.
pub fn exporter(endpoint: &str, service: &str, gzip: bool) -> opentelemetry_otlp::SpanExporter {
    let mut builder = opentelemetry_otlp::SpanExporter::builder()
        .with_tonic()
        .with_endpoint(endpoint)
        .with_timeout(Duration::from_secs(10));
    if gzip {
        builder = builder.with_compression(opentelemetry_otlp::Compression::Gzip);
    }
    let mut exporter = builder.build().expect("exporter builds");
    exporter.set_resource(&resource(service));
    exporter
}

pub fn resource(service: &str) -> Resource {
    Resource::builder_empty()
        .with_service_name(service.to_owned())
        .with_attribute(KeyValue::new("service.instance.id", format!("{service}-1")))
        .build()
}

/// A trace id no other test uses.
pub fn random_trace_id() -> TraceId {
    use std::collections::hash_map::RandomState;
    use std::hash::{BuildHasher, Hasher};
    let mut out = [0u8; 16];
    for chunk in out.chunks_mut(8) {
        let mut h = RandomState::new().build_hasher();
        h.write_u128(
            SystemTime::now()
                .duration_since(SystemTime::UNIX_EPOCH)
                .unwrap()
                .as_nanos(),
        );
        chunk.copy_from_slice(&h.finish().to_be_bytes());
    }
    TraceId::from_bytes(out)
}

/// Hand-written span data, for exporting in any batching and order.
pub struct SpanSpec {
    pub id: u64,
    pub parent: u64,
    pub name: &'static str,
    pub kind: SpanKind,
    pub start_ms: u64,
    pub end_ms: u64,
}

/// A span spec: ids `(id, parent)` as in [`sp`], times in ms after the base.
pub fn spec(
    id: u64,
    parent: u64,
    name: &'static str,
    kind: SpanKind,
    (start_ms, end_ms): (u64, u64),
) -> SpanSpec {
    SpanSpec {
        id,
        parent,
        name,
        kind,
        start_ms,
        end_ms,
    }
}

pub fn span_data(trace_id: TraceId, base: SystemTime, s: &SpanSpec) -> SpanData {
    SpanData {
        span_context: SpanContext::new(
            trace_id,
            SpanId::from_bytes(s.id.to_be_bytes()),
            TraceFlags::SAMPLED,
            false,
            TraceState::default(),
        ),
        parent_span_id: SpanId::from_bytes(s.parent.to_be_bytes()),
        parent_span_is_remote: false,
        span_kind: s.kind.clone(),
        name: Cow::Borrowed(s.name),
        start_time: base + Duration::from_millis(s.start_ms),
        end_time: base + Duration::from_millis(s.end_ms),
        attributes: Vec::new(),
        dropped_attributes_count: 0,
        events: SpanEvents::default(),
        links: SpanLinks::default(),
        status: Status::Unset,
        instrumentation_scope: InstrumentationScope::builder("hopscope-tests").build(),
    }
}

/// [`base_time`] in unix nanoseconds, for spans built by hand: the daemon
/// refuses spans far from its clock, so fixed old stamps would not do.
pub fn base_ns() -> u64 {
    base_time()
        .duration_since(SystemTime::UNIX_EPOCH)
        .unwrap()
        .as_nanos() as u64
}

/// A base time a minute ago, on a whole second, so offsets are exact in the API.
pub fn base_time() -> SystemTime {
    let now = SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    SystemTime::UNIX_EPOCH + Duration::from_secs(now - 60)
}

/// The hops of an API trace or entry as `(service, operation, kind, critical_ms)`.
pub fn hops(body: &Value) -> Vec<(String, String, String, f64)> {
    body["hops"]
        .as_array()
        .expect("hops")
        .iter()
        .map(|h| {
            (
                h["service"].as_str().unwrap().to_owned(),
                h["operation"].as_str().unwrap().to_owned(),
                h["kind"].as_str().unwrap().to_owned(),
                h["critical_ms"].as_f64().unwrap(),
            )
        })
        .collect()
}

pub fn approx(a: f64, b: f64) -> bool {
    (a - b).abs() < 1e-6
}

/// One span of a hand-written trace: who sent it, when, and what it says.
pub struct Sp {
    pub service: &'static str,
    /// `service.instance.id` of the resource that exports it, if any.
    pub instance: Option<String>,
    pub spec: SpanSpec,
    /// Microseconds added to its start and end (timestamps off the whole
    /// millisecond, as most SDKs' clocks give them).
    pub shift_us: u64,
    pub http_status: Option<i64>,
    /// An error status message (the span failed).
    pub error: Option<&'static str>,
    pub attrs: Vec<KeyValue>,
    /// `exception` events: (`exception.type`, `exception.message`).
    pub exceptions: Vec<(&'static str, &'static str)>,
    /// Microseconds added to the end (the spec's times are whole milliseconds).
    pub end_extra_us: u64,
}

/// A span of `service` (instance `{service}-1`) with id and parent, at offsets
/// in milliseconds from the trace's base time.
pub fn sp(
    service: &'static str,
    (id, parent): (u64, u64),
    name: &'static str,
    kind: SpanKind,
    (start_ms, end_ms): (u64, u64),
) -> Sp {
    Sp {
        service,
        instance: Some(format!("{service}-1")),
        spec: SpanSpec {
            id,
            parent,
            name,
            kind,
            start_ms,
            end_ms,
        },
        shift_us: 0,
        http_status: None,
        error: None,
        attrs: Vec::new(),
        exceptions: Vec::new(),
        end_extra_us: 0,
    }
}

impl Sp {
    pub fn http(mut self, code: i64) -> Sp {
        self.http_status = Some(code);
        self
    }

    pub fn error(mut self, message: &'static str) -> Sp {
        self.error = Some(message);
        self
    }

    /// Failed with `message`, answering HTTP `code`.
    pub fn failed(self, message: &'static str, code: i64) -> Sp {
        self.error(message).http(code)
    }

    /// A client that gave up: Go's message for it.
    pub fn deadline(self) -> Sp {
        self.error("context deadline exceeded")
    }

    pub fn attr(mut self, key: &'static str, value: impl Into<opentelemetry::Value>) -> Sp {
        self.attrs.push(KeyValue::new(key, value));
        self
    }

    /// Records an `exception` event, as SDKs do for an exception that went
    /// through the span (whether or not the span then failed).
    pub fn exception(mut self, kind: &'static str, message: &'static str) -> Sp {
        self.exceptions.push((kind, message));
        self
    }

    /// Ends `us` microseconds after the spec's end: a clock finer than the
    /// whole-millisecond start (Node's SDK stamps starts with `Date.now()`).
    pub fn end_extra_us(mut self, us: u64) -> Sp {
        self.end_extra_us = us;
        self
    }

    pub fn instance(mut self, instance: &str) -> Sp {
        self.instance = Some(instance.to_owned());
        self
    }

    /// Exported by a resource without `service.instance.id`.
    pub fn no_instance(mut self) -> Sp {
        self.instance = None;
        self
    }

    /// Starts and ends `us` microseconds later.
    pub fn shift_us(mut self, us: u64) -> Sp {
        self.shift_us = us;
        self
    }
}

/// Exports the traces (each gets a new trace id), one exporter per service
/// instance, as real services do; returns the trace ids.
pub async fn send(d: &TestDaemon, traces: Vec<Vec<Sp>>) -> Vec<TraceId> {
    use std::collections::BTreeMap;
    let base = base_time();
    let mut ids = Vec::new();
    let mut by_instance: BTreeMap<(&str, Option<String>), Vec<SpanData>> = BTreeMap::new();
    for trace in traces {
        let trace_id = random_trace_id();
        ids.push(trace_id);
        for s in trace {
            let mut data = span_data(trace_id, base, &s.spec);
            data.start_time += Duration::from_micros(s.shift_us);
            data.end_time += Duration::from_micros(s.shift_us + s.end_extra_us);
            data.attributes = s.attrs;
            data.events.events = s
                .exceptions
                .iter()
                .map(|&(kind, message)| {
                    opentelemetry::trace::Event::new(
                        "exception",
                        data.end_time,
                        vec![
                            KeyValue::new("exception.type", kind),
                            KeyValue::new("exception.message", message),
                        ],
                        0,
                    )
                })
                .collect();
            if let Some(code) = s.http_status {
                data.attributes
                    .push(KeyValue::new("http.response.status_code", code));
            }
            if let Some(message) = s.error {
                data.status = Status::error(message);
            }
            by_instance
                .entry((s.service, s.instance))
                .or_default()
                .push(data);
        }
    }
    for ((service, instance), spans) in by_instance {
        let mut exporter = exporter(&d.grpc_endpoint, service, false);
        let mut resource = Resource::builder_empty().with_service_name(service);
        if let Some(instance) = instance {
            resource = resource.with_attribute(KeyValue::new("service.instance.id", instance));
        }
        exporter.set_resource(&resource.build());
        exporter.export(spans).await.expect("export accepted");
    }
    ids
}
