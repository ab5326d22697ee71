//! Writes the seed corpus of the `otlp_protobuf` target: export requests made
//! by the load generator (several trace shapes, with attributes, errors and
//! slow queries) and the test fixtures' Jaeger traces as OTLP requests.
//!
//! `cargo run --example seeds -- seeds/otlp_protobuf` (from `fuzz/`).

use std::path::{Path, PathBuf};

use hopscope::ingest::otlp::collector::trace::v1::ExportTraceServiceRequest;
use hopscope::ingest::otlp::common::v1::{any_value, AnyValue, KeyValue};
use hopscope::ingest::otlp::resource::v1::Resource;
use hopscope::ingest::otlp::trace::v1::{ResourceSpans, ScopeSpans, Span};
use hopscope_loadgen::{Generator, Shape};
use prost::Message;

#[allow(dead_code)] // only the loader is used here
#[path = "../../tests/support/jaeger.rs"]
mod jaeger;

fn main() {
    let out = PathBuf::from(std::env::args().nth(1).expect("usage: seeds DIR"));
    std::fs::create_dir_all(&out).expect("seed directory");
    for (i, (services, depth, fan_out)) in [(2, 1, 1), (3, 2, 2), (8, 2, 3), (4, 4, 1)]
        .into_iter()
        .enumerate()
    {
        let shape = Shape {
            services,
            depth,
            fan_out,
            error_fraction: 0.3,
            slow_db_fraction: 0.3,
            instances: 1,
            entry_query: false,
        };
        let mut generator = Generator::new(i as u64, shape).expect("valid shape");
        let request = generator.request(64, 1_700_000_000_000_000_000);
        write(&out, &format!("loadgen-{i}"), &request);
    }
    let fixtures = Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/fixtures");
    for path in json_files(&fixtures) {
        let text = std::fs::read_to_string(&path).expect("fixture");
        let Ok(doc) = serde_json::from_str(&text) else {
            continue;
        };
        // Reference outputs are not traces; the loader panics on them.
        std::panic::set_hook(Box::new(|_| {}));
        let traces = std::panic::catch_unwind(|| jaeger::load_all(&doc));
        let _ = std::panic::take_hook();
        let Ok(traces) = traces else {
            continue;
        };
        let name = path.file_stem().unwrap_or_default().to_string_lossy();
        for (i, trace) in traces.iter().enumerate() {
            write(&out, &format!("fixture-{name}-{i}"), &request(trace));
        }
    }
}

fn json_files(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir).expect("fixture directory").flatten() {
        let path = entry.path();
        if path.is_dir() {
            out.extend(json_files(&path));
        } else if path.extension().is_some_and(|e| e == "json") {
            out.push(path);
        }
    }
    out.sort();
    out
}

/// One resource per service, as exporters send them.
fn request(trace: &jaeger::JaegerTrace) -> ExportTraceServiceRequest {
    let mut by_service: Vec<(String, Vec<Span>)> = Vec::new();
    for s in &trace.spans {
        let span = Span {
            trace_id: trace.trace_id.as_bytes().to_vec().into(),
            span_id: s.span_id.to_bytes().to_vec().into(),
            parent_span_id: s
                .parent_id
                .map(|p| p.to_bytes().to_vec().into())
                .unwrap_or_default(),
            name: s.operation.as_str().to_owned(),
            kind: s.kind as i32,
            start_time_unix_nano: s.start_ns,
            end_time_unix_nano: s.end_ns,
            ..Default::default()
        };
        let service = s.service.as_str();
        match by_service.iter_mut().find(|(name, _)| name == service) {
            Some((_, spans)) => spans.push(span),
            None => by_service.push((service.to_owned(), vec![span])),
        }
    }
    ExportTraceServiceRequest {
        resource_spans: by_service
            .into_iter()
            .map(|(service, spans)| ResourceSpans {
                resource: Some(Resource {
                    attributes: vec![KeyValue {
                        key: "service.name".into(),
                        value: Some(AnyValue {
                            value: Some(any_value::Value::StringValue(service)),
                        }),
                        ..Default::default()
                    }],
                    ..Default::default()
                }),
                scope_spans: vec![ScopeSpans {
                    spans,
                    ..Default::default()
                }],
                ..Default::default()
            })
            .collect(),
    }
}

fn write(dir: &Path, name: &str, request: &ExportTraceServiceRequest) {
    std::fs::write(dir.join(name), request.encode_to_vec()).expect("seed written");
}
