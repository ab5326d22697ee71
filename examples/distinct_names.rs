//! Sends two-span traces whose span names are all distinct, as an application
//! that puts ids in its span names does, to measure what that costs a running
//! daemon (`docs/PERFORMANCE.md`, "Span names that carry ids"):
//!
//! ```text
//! cargo run --release --example distinct_names -- [ENDPOINT] [TRACES] [ids|words]
//! ```
//!
//! `ids` (the default): `GET /users/{n}` (SERVER) calling `SELECT users {n}`
//! (a postgresql CLIENT span), names hopscope folds into placeholders;
//! `words`: `GET /by-name/{n in letters}` calling `lookup {n in letters}`,
//! names nothing can fold, which only the aggregates' limits bound. Traces
//! go out over OTLP/gRPC (default `http://127.0.0.1:4317`, 300,000 traces) in
//! requests of 1,000 on four connections; a refused request (the memory
//! budget) is sent again after 50 ms. Prints the traces sent and the time.

use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use hopscope::ingest::otlp::collector::trace::v1::trace_service_client::TraceServiceClient;
use hopscope::ingest::otlp::collector::trace::v1::ExportTraceServiceRequest;
use hopscope::ingest::otlp::common::v1::{any_value, AnyValue, KeyValue};
use hopscope::ingest::otlp::resource::v1::Resource;
use hopscope::ingest::otlp::trace::v1::{ResourceSpans, ScopeSpans, Span};

const PER_REQUEST: u64 = 1_000;
const CONNECTIONS: u64 = 4;

fn text(key: &str, value: &str) -> KeyValue {
    KeyValue {
        key: key.into(),
        value: Some(AnyValue {
            value: Some(any_value::Value::StringValue(value.into())),
        }),
        ..Default::default()
    }
}

/// `n` in letters: a name part without digits, different for each `n`.
fn word(mut n: u64) -> String {
    let mut out = String::new();
    loop {
        out.push((b'a' + (n % 26) as u8) as char);
        n /= 26;
        if n == 0 {
            return out;
        }
    }
}

/// Trace `n`: a SERVER span and a CLIENT span for its second half, 10 ms.
fn trace(n: u64, words: bool, now_ns: u64) -> [Span; 2] {
    let (server, client) = if words {
        (
            format!("GET /by-name/{}", word(n)),
            format!("lookup {}", word(n)),
        )
    } else {
        (format!("GET /users/{n}"), format!("SELECT users {n}"))
    };
    let id = |k: u64| (2 * n + k).to_be_bytes().to_vec().into();
    let trace_id: Vec<u8> = [n.to_be_bytes(), now_ns.to_be_bytes()].concat();
    let root = Span {
        trace_id: trace_id.clone().into(),
        span_id: id(1),
        name: server,
        kind: 2,
        start_time_unix_nano: now_ns - 10_000_000,
        end_time_unix_nano: now_ns,
        ..Default::default()
    };
    let query = Span {
        trace_id: trace_id.into(),
        span_id: id(2),
        parent_span_id: id(1),
        name: client,
        kind: 3,
        start_time_unix_nano: now_ns - 5_000_000,
        end_time_unix_nano: now_ns,
        attributes: vec![text("db.system", "postgresql")],
        ..Default::default()
    };
    [root, query]
}

fn request(first: u64, words: bool) -> ExportTraceServiceRequest {
    let now_ns = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("after 1970")
        .as_nanos() as u64;
    ExportTraceServiceRequest {
        resource_spans: vec![ResourceSpans {
            resource: Some(Resource {
                attributes: vec![text("service.name", "users")],
                ..Default::default()
            }),
            scope_spans: vec![ScopeSpans {
                spans: (first..first + PER_REQUEST)
                    .flat_map(|n| trace(n, words, now_ns))
                    .collect(),
                ..Default::default()
            }],
            ..Default::default()
        }],
    }
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let endpoint = args
        .first()
        .cloned()
        .unwrap_or_else(|| "http://127.0.0.1:4317".to_owned());
    let traces: u64 = match args.get(1) {
        Some(n) => n.parse()?,
        None => 300_000,
    };
    let words = match args.get(2).map(String::as_str) {
        None | Some("ids") => false,
        Some("words") => true,
        Some(other) => return Err(format!("ids or words, not {other}").into()),
    };
    let started = Instant::now();
    let mut tasks = Vec::new();
    for c in 0..CONNECTIONS {
        let mut client = TraceServiceClient::connect(endpoint.clone()).await?;
        tasks.push(tokio::spawn(async move {
            let mut first = c * PER_REQUEST;
            while first < traces {
                while let Err(status) = client.export(request(first, words)).await {
                    if status.code() != tonic::Code::Unavailable {
                        return Err(status);
                    }
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
                first += CONNECTIONS * PER_REQUEST;
            }
            Ok(())
        }));
    }
    for t in tasks {
        t.await??;
    }
    println!(
        "sent {} traces ({} names) in {:.1} s",
        traces.div_ceil(PER_REQUEST) * PER_REQUEST,
        if words { "words" } else { "ids" },
        started.elapsed().as_secs_f64()
    );
    Ok(())
}
