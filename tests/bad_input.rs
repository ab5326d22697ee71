//! Bad input, in the normal test suite: the fuzz targets' committed inputs
//! (`fuzz/seeds/`, and every crash the fuzzers found, minimized, in
//! `fuzz/regressions/`) replayed through the code the targets run
//! (`fuzz/src/lib.rs`, compiled in here), and a trace deeper than any stack.

mod support;

use std::path::{Path, PathBuf};

use arbitrary::{Arbitrary, Unstructured};
use hopscope::model::{AttrArena, Span, SpanId, SpanKind, SpanSet, Sym, TraceId};

// The fuzz crate's code includes `tests/support/checks.rs` itself, as the
// fuzz crate has no `support` module: here the file is compiled twice.
#[allow(
    clippy::duplicate_mod,
    reason = "fuzz/src/lib.rs is compiled as the fuzz crate compiles it"
)]
#[path = "../fuzz/src/lib.rs"]
mod fuzz;

/// The committed inputs of a target, in name order.
fn inputs(target: &str) -> Vec<(PathBuf, Vec<u8>)> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz");
    let mut files: Vec<PathBuf> = ["seeds", "regressions"]
        .iter()
        .filter_map(|dir| std::fs::read_dir(root.join(dir).join(target)).ok())
        .flatten()
        .flatten()
        .map(|e| e.path())
        .collect();
    files.sort();
    files
        .into_iter()
        .map(|path| {
            let bytes = std::fs::read(&path).expect("readable input");
            (path, bytes)
        })
        .collect()
}

/// Whether `path` is a seed (made to be valid input), not a regression.
fn seed(path: &Path) -> bool {
    path.components().any(|c| c.as_os_str() == "seeds")
}

#[test]
fn otlp_protobuf_inputs_replay() {
    let inputs = inputs("otlp_protobuf");
    assert!(inputs.len() >= 40, "the seed corpus is committed");
    for (path, bytes) in inputs {
        eprintln!("{}", path.display());
        // A seed is a real export request: it decodes, with spans, so the
        // fuzzer starts from inputs that reach the pipeline.
        if seed(&path) {
            let batch = hopscope::ingest::decode_export(&bytes)
                .unwrap_or_else(|e| panic!("{}: {e}", path.display()));
            assert!(batch.accepted > 0, "{}: no spans", path.display());
        }
        fuzz::otlp_protobuf(&bytes);
    }
}

#[test]
fn otlp_json_inputs_replay() {
    let inputs = inputs("otlp_json");
    assert!(inputs.len() >= 6, "the seed corpus is committed");
    let mut decoded = 0;
    for (path, bytes) in inputs {
        eprintln!("{}", path.display());
        // The edge cases may be refused as a whole (malformed ids); the
        // examples decode.
        if seed(&path) && hopscope::ingest::decode_export_json(&bytes).is_ok() {
            decoded += 1;
        }
        fuzz::otlp_json(&bytes);
    }
    assert!(decoded >= 4, "the OTLP/JSON examples decode: {decoded}");
}

#[test]
fn span_graph_inputs_replay() {
    let inputs = inputs("span_graph");
    assert!(inputs.len() >= 8, "the seed corpus is committed");
    for (path, bytes) in inputs {
        eprintln!("{}", path.display());
        // As libfuzzer-sys builds a target's structured input: every seed
        // makes a graph, so none is skipped.
        let graph = fuzz::Graph::arbitrary_take_rest(Unstructured::new(&bytes));
        assert!(graph.is_ok() || !seed(&path), "{}", path.display());
        if let Ok(graph) = graph {
            fuzz::span_graph(graph);
        }
    }
}

const DEEP: u64 = 100_000;

/// A 100,000-deep chain of CLIENT → SERVER hops between two services, each
/// nested in its parent, the servers with an instance (request records) and
/// a statement every tenth span (query records).
fn deep_chain() -> SpanSet {
    let mut set = SpanSet::default();
    let mut scratch = AttrArena::default();
    let (instance, system, statement) = (
        Sym::new("service.instance.id"),
        Sym::new("db.system.name"),
        Sym::new("db.query.text"),
    );
    let epoch = 1_700_000_000_000_000_000u64;
    for i in 1..=DEEP {
        let server = i % 2 == 0;
        let mut span = Span::new(
            SpanId::from_u64(i).expect("not zero"),
            (i > 1).then(|| SpanId::from_u64(i - 1).expect("not zero")),
            if server { "orders" } else { "frontend" },
            if i % 10 == 0 { "SELECT" } else { "call" },
            if server {
                SpanKind::Server
            } else {
                SpanKind::Client
            },
            (epoch + i * 1_000, epoch + (2 * DEEP - i) * 1_000 + 1_000),
        );
        let mark = scratch.mark();
        if server {
            scratch.str(instance, "orders-1");
        }
        if i % 10 == 0 {
            scratch.str(system, "postgresql");
            scratch.str(statement, "SELECT * FROM t WHERE id = 1");
        }
        span.attrs = scratch.finish(mark);
        set.push(span, &mut scratch);
    }
    set
}

/// Assembly, analysis, every detector, the call and saturation records, and
/// the trace API's JSON of a 100,000-deep trace, on a thread with a 256 KiB
/// stack: nothing recurses over the tree.
#[test]
fn hundred_thousand_deep_trace_runs_on_a_small_stack() {
    let set = deep_chain();
    let trace_id = TraceId::parse_hex("4bf92f3577b34da6a3ce929d0e0e4736").expect("valid");
    let rendered = std::thread::Builder::new()
        .stack_size(256 * 1024)
        .spawn(move || {
            let store = fuzz::pipeline(vec![(trace_id, set)]);
            fuzz::render(&store, 1, usize::MAX)
        })
        .expect("thread starts")
        .join()
        .expect("the pipeline finishes without overflowing a 256 KiB stack");
    assert_eq!(rendered, 1, "the trace was stored and rendered");
}

/// Not an export request: its `resource_spans` holds a `resource` that claims
/// 127 bytes and has 1.
#[derive(Clone, PartialEq, prost::Message)]
struct NotAnExport {
    #[prost(bytes = "vec", tag = "1")]
    resource_spans: Vec<u8>,
}

#[tokio::test]
async fn undecodable_requests_are_refused_and_counted_on_both_receivers() {
    use hopscope::ingest::otlp::collector::trace::v1::ExportTraceServiceResponse;
    use tonic::codegen::http::uri::PathAndQuery;

    let d = support::start(Default::default()).await;
    let channel = tonic::transport::Endpoint::from_shared(d.grpc_endpoint.clone())
        .unwrap()
        .connect()
        .await
        .unwrap();
    let mut grpc = tonic::client::Grpc::new(channel);
    grpc.ready().await.unwrap();
    let status = grpc
        .unary::<NotAnExport, ExportTraceServiceResponse, _>(
            tonic::Request::new(NotAnExport {
                resource_spans: vec![0x0a, 0x7f, 0x01],
            }),
            PathAndQuery::from_static(
                "/opentelemetry.proto.collector.trace.v1.TraceService/Export",
            ),
            tonic_prost::ProstCodec::default(),
        )
        .await
        .expect_err("not an export request");
    assert_eq!(status.code(), tonic::Code::InvalidArgument, "{status:?}");

    let answer = reqwest::Client::new()
        .post(format!("{}/v1/traces", d.http_endpoint))
        .header("content-type", "application/json")
        .body("{\"resourceSpans\": 7}")
        .send()
        .await
        .unwrap();
    assert_eq!(answer.status().as_u16(), 400);

    let (_, stats) = d.get("/api/v1/stats").await;
    assert_eq!(stats["counters"]["otlp_malformed"], 2, "{stats}");
    assert_eq!(stats["counters"]["spans_accepted"], 0);
    d.stop().await;
}
