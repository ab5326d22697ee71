//! Unbounded names stay bounded: a service that puts ids in its span names
//! (`GET /users/48213`, `SELECT users 48213`) gets one entry point `GET
//! /users/{id}` that carries its traffic, the raw names stay on the spans,
//! names nothing can fold are counted under the entry point `(overflow)`
//! past `aggregate_max_entries`, the answer of `GET /api/v1/hops` stays
//! small, and the coverage entry names the service and the attributes that
//! would fix its names.

mod support;

use hopscope::config::Settings;
use hopscope::ingest::otlp::collector::trace::v1::trace_service_client::TraceServiceClient;
use hopscope::ingest::otlp::trace::v1::Span;
use serde_json::Value;
use support::wire::{export, text};

/// Two-span traces of `users` with an id in both names, per request and in all.
const PER_REQUEST: u64 = 2_000;
const ID_TRACES: u64 = 20_000;
/// Single-span traces of `catalog` whose names carry no digits (nothing to fold).
const WORD_TRACES: u64 = 1_000;
const MAX_ENTRIES: u64 = 50;

fn span(n: u64, id: u64, parent: Option<u64>, name: String, kind: i32) -> Span {
    Span {
        trace_id: [n.to_be_bytes(), n.to_be_bytes()].concat().into(),
        span_id: id.to_be_bytes().to_vec().into(),
        parent_span_id: parent
            .map_or_else(Vec::new, |p| p.to_be_bytes().to_vec())
            .into(),
        name,
        kind,
        start_time_unix_nano: support::base_ns(),
        end_time_unix_nano: support::base_ns() + 10_000_000,
        ..Default::default()
    }
}

/// Trace `n` of `users`: `GET /users/{n}` (SERVER) calling `SELECT users {n}`
/// (a postgresql CLIENT span) for its second half.
fn id_trace(n: u64) -> Vec<Span> {
    let root = span(n, 2 * n, None, format!("GET /users/{n}"), 2);
    let mut query = span(n, 2 * n + 1, Some(2 * n), format!("SELECT users {n}"), 3);
    query.start_time_unix_nano += 5_000_000;
    query.attributes = vec![text("db.system", "postgresql")];
    vec![root, query]
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

async fn body_text(d: &support::TestDaemon, path: &str) -> String {
    reqwest::get(format!("{}{path}", d.api))
        .await
        .unwrap()
        .text()
        .await
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn names_with_ids_fold_into_one_entry_point_and_the_rest_overflow_counted() {
    let d = support::start(support::detect_often(Settings {
        aggregate_max_entries: Some(MAX_ENTRIES as usize),
        ..Settings::default()
    }))
    .await;
    let mut client = TraceServiceClient::connect(d.grpc_endpoint.clone())
        .await
        .unwrap();
    for r in 0..ID_TRACES / PER_REQUEST {
        let spans = (1..=PER_REQUEST)
            .flat_map(|i| id_trace(r * PER_REQUEST + i))
            .collect();
        client
            .export(export("users", spans))
            .await
            .expect("accepted");
    }
    let analyzed = |want: u64| {
        move |_: u16, s: &Value| {
            s["counters"]["traces_analyzed"] == want && s["analysis_pending"] == 0
        }
    };
    d.wait_for("/api/v1/stats", analyzed(ID_TRACES)).await;
    // Then names nothing can fold: past the limit, into the overflow.
    let words = (0..WORD_TRACES)
        .map(|i| {
            span(
                ID_TRACES + 1 + i,
                1,
                None,
                format!("GET /by-name/{}", word(i)),
                2,
            )
        })
        .collect();
    client
        .export(export("catalog", words))
        .await
        .expect("accepted");
    let stats = d
        .wait_for("/api/v1/stats", analyzed(ID_TRACES + WORD_TRACES))
        .await;

    let text = body_text(&d, "/api/v1/hops").await;
    assert!(
        text.len() < 64 * 1024,
        "a bounded answer: {} bytes",
        text.len()
    );
    let hops: Value = serde_json::from_str(&text).unwrap();
    let entries = hops["entries"].as_array().unwrap();
    assert_eq!(
        entries.len() as u64,
        MAX_ENTRIES + 1,
        "the limit and the overflow"
    );
    let users = &entries[0];
    assert_eq!(users["entry"]["service"], "users", "the busiest: {users}");
    assert_eq!(users["entry"]["operation"], "GET /users/{id}");
    assert_eq!(users["traces"], ID_TRACES);
    assert_eq!(users["overflow"], false);
    let hop_names: Vec<&str> = users["hops"]
        .as_array()
        .unwrap()
        .iter()
        .map(|h| h["operation"].as_str().unwrap())
        .collect();
    assert_eq!(hop_names.len(), 2, "{hop_names:?}");
    assert!(
        hop_names.contains(&"GET /users/{id}") && hop_names.contains(&"SELECT users ?"),
        "{hop_names:?}"
    );

    // One entry point of users is admitted, MAX_ENTRIES - 1 of catalog.
    let overflowed = WORD_TRACES - (MAX_ENTRIES - 1);
    let overflow = entries
        .iter()
        .find(|e| e["overflow"] == true)
        .expect("an overflow entry point");
    assert_eq!(overflow["entry"]["operation"], "(overflow)");
    assert_eq!(overflow["traces"], overflowed);
    assert_eq!(overflow["hops"][0]["operation"], "(overflow)");
    assert_eq!(overflow["hops"][0]["overflow"], true);
    // Each overflowed trace and its one hop.
    assert_eq!(stats["counters"]["aggregate_overflow"], 2 * overflowed);
    let metrics = body_text(&d, "/metrics").await;
    assert!(
        metrics.contains(&format!(
            "hopscope_aggregate_overflow_total {}",
            2 * overflowed
        )),
        "{metrics}"
    );

    // The call window's entry points are bounded alike.
    d.detected((ID_TRACES + WORD_TRACES) as usize).await;
    let text = body_text(&d, "/api/v1/timeouts").await;
    assert!(
        text.len() < 64 * 1024,
        "a bounded answer: {} bytes",
        text.len()
    );
    let timeouts: Value = serde_json::from_str(&text).unwrap();
    let entries = timeouts["entries"].as_array().unwrap();
    assert_eq!(entries.len() as u64, MAX_ENTRIES + 1);
    let overflow = entries
        .iter()
        .find(|e| e["entry"]["operation"] == "(overflow)")
        .expect("an overflow entry point");
    assert_eq!(overflow["traces"], overflowed);

    // The span keeps its raw name (a trace still in the store).
    let n = ID_TRACES;
    let (_, trace) = d.get(&format!("/api/v1/traces/{n:016x}{n:016x}")).await;
    let operations: Vec<&str> = trace["spans"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["operation"].as_str().unwrap())
        .collect();
    assert!(
        operations.contains(&format!("GET /users/{n}").as_str()),
        "{trace}"
    );

    // Coverage says who sends such names and what would fix them.
    let (_, coverage) = d.get("/api/v1/coverage?service=users").await;
    let users = &coverage["services"][0];
    assert_eq!(users["ids_in_names"], ID_TRACES, "{users}");
    assert_eq!(users["ids_in_statement_names"], ID_TRACES, "{users}");
    let hops_entry = users["blind"]
        .as_array()
        .unwrap()
        .iter()
        .find(|b| b["detector"] == "hops")
        .unwrap_or_else(|| panic!("a hops entry: {users}"));
    assert_eq!(hops_entry["level"], "weakened");
    let reason = hops_entry["reason"].as_str().unwrap();
    assert!(
        reason.contains("http.route") && reason.contains("db.query.summary"),
        "{reason}"
    );
    d.stop().await;
}
