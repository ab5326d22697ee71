//! A trace read in parts over the real API: pages of its spans in depth-first
//! tree order (`offset`, `limit`, `max_depth`) and its critical path alone
//! (`critical_path=true`) with the subtrees left out counted, as a client of a
//! trace too big to fetch whole (the console's trace page) reads it.

mod support;

use std::collections::{HashMap, HashSet};

use opentelemetry::trace::SpanKind;
use serde_json::Value;
use support::{send, sp, Sp, TestDaemon};

const WORKERS: u64 = 20;
const QUERIES: u64 = 10;
/// The root, `load`, `render`, the workers and their queries.
const SPANS: usize = (3 + WORKERS + WORKERS * QUERIES) as usize;

/// A report request: `load` (0–300 ms), then `render` (300–1000 ms) fanning
/// out to workers that run their queries in parallel. The critical path goes
/// through `load`, `render`, the worker that ends last and its last query;
/// the other workers and queries are off it.
fn report() -> Vec<Sp> {
    let mut spans = vec![
        sp("api", (1, 0), "GET /report", SpanKind::Server, (0, 1000)),
        sp("api", (2, 1), "load", SpanKind::Internal, (0, 300)),
        sp("api", (3, 1), "render", SpanKind::Internal, (300, 1000)),
    ];
    for w in 0..WORKERS {
        let id = 100 + w;
        spans.push(sp(
            "api",
            (id, 3),
            "worker",
            SpanKind::Internal,
            (310 + w, 900 + w),
        ));
        for q in 0..QUERIES {
            let start = 320 + w + q * 5;
            spans.push(
                sp(
                    "api",
                    (1000 + w * 100 + q, id),
                    "SELECT",
                    SpanKind::Client,
                    (start, start + 500),
                )
                .attr("db.system", "postgresql"),
            );
        }
    }
    spans
}

async fn with_report() -> (TestDaemon, String) {
    let d = support::start(Default::default()).await;
    let id = send(&d, vec![report()]).await[0];
    d.wait_trace(id, SPANS).await;
    (d, id.to_string())
}

fn spans(body: &Value) -> &Vec<Value> {
    body["spans"].as_array().expect("spans")
}

fn field(span: &Value, name: &str) -> usize {
    span[name]
        .as_u64()
        .unwrap_or_else(|| panic!("{name} in {span}")) as usize
}

#[tokio::test]
async fn pages_walk_the_whole_tree_in_depth_first_order() {
    let (d, id) = with_report().await;
    let mut all: Vec<Value> = Vec::new();
    let mut offset = Some(0);
    let mut pages = 0;
    while let Some(at) = offset {
        let (status, body) = d
            .get(&format!("/api/v1/traces/{id}?offset={at}&limit=50"))
            .await;
        assert_eq!(status, 200, "{body}");
        assert_eq!(body["page"]["offset"], at);
        assert_eq!(body["page"]["returned"], spans(&body).len());
        assert!(spans(&body).len() <= 50);
        assert_eq!(
            body["span_count"], SPANS,
            "the header counts the whole trace"
        );
        all.extend(spans(&body).iter().cloned());
        offset = body["page"]["next_offset"].as_u64().map(|n| n as usize);
        pages += 1;
    }
    assert_eq!(pages, SPANS.div_ceil(50));
    assert_eq!(all.len(), SPANS, "every span once");
    let ids: HashSet<&str> = all.iter().map(|s| s["span_id"].as_str().unwrap()).collect();
    assert_eq!(ids.len(), SPANS, "no span twice");
    // Positions are consecutive; each span comes after its parent, one level
    // below it; and a subtree is the block of rows right after its span.
    let mut seen: HashMap<&str, usize> = HashMap::new();
    for (p, s) in all.iter().enumerate() {
        assert_eq!(field(s, "tree_index"), p);
        if let Some(parent) = s["parent_span_id"].as_str() {
            let at = seen[parent];
            assert_eq!(field(s, "depth"), field(&all[at], "depth") + 1);
            assert!(
                p <= at + field(&all[at], "descendants"),
                "{s} inside its parent's block"
            );
        }
        seen.insert(s["span_id"].as_str().unwrap(), p);
    }
    assert_eq!(all[0]["operation"], "GET /report");
    assert_eq!(field(&all[0], "descendants"), SPANS - 1);
    assert_eq!(all[1]["operation"], "load", "children by start time");
    assert_eq!(all[2]["operation"], "render");
    assert_eq!(all[3]["operation"], "worker");
    assert_eq!(
        all[4]["operation"], "SELECT",
        "a worker's queries right below it"
    );
    // Past the end: an empty last page, not an error.
    let (status, body) = d.get(&format!("/api/v1/traces/{id}?offset={SPANS}")).await;
    assert_eq!(status, 200);
    assert_eq!(spans(&body).len(), 0);
    assert_eq!(body["page"]["next_offset"], Value::Null);
    d.stop().await;
}

#[tokio::test]
async fn max_depth_lists_a_spans_children_without_their_subtrees() {
    let (d, id) = with_report().await;
    let (_, top) = d.get(&format!("/api/v1/traces/{id}?max_depth=1")).await;
    let names: Vec<&str> = spans(&top)
        .iter()
        .map(|s| s["operation"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["GET /report", "load", "render"]);
    let render = &spans(&top)[2];
    let (first, depth) = (field(render, "tree_index") + 1, field(render, "depth") + 1);
    let (_, body) = d
        .get(&format!(
            "/api/v1/traces/{id}?offset={first}&max_depth={depth}&limit=15"
        ))
        .await;
    assert_eq!(spans(&body).len(), 15);
    assert!(spans(&body).iter().all(|s| s["operation"] == "worker"));
    assert!(spans(&body)
        .iter()
        .all(|s| field(s, "descendants") == QUERIES as usize));
    let next = body["page"]["next_offset"].as_u64().expect("more workers") as usize;
    let (_, rest) = d
        .get(&format!(
            "/api/v1/traces/{id}?offset={next}&max_depth={depth}"
        ))
        .await;
    assert_eq!(spans(&rest).len(), WORKERS as usize - 15);
    assert!(spans(&rest).iter().all(|s| s["operation"] == "worker"));
    d.stop().await;
}

#[tokio::test]
async fn the_critical_path_alone_counts_what_it_leaves_out() {
    let (d, id) = with_report().await;
    let (_, full) = d.get(&format!("/api/v1/traces/{id}")).await;
    assert!(full.get("page").is_none() && full.get("collapsed").is_none());
    let (status, body) = d
        .get(&format!("/api/v1/traces/{id}?critical_path=true"))
        .await;
    assert_eq!(status, 200, "{body}");
    let kept: Vec<&str> = spans(&body)
        .iter()
        .map(|s| s["operation"].as_str().unwrap())
        .collect();
    assert_eq!(
        kept,
        ["GET /report", "load", "render", "worker", "SELECT"],
        "{body}"
    );
    // Every span of the critical path is there, with the same numbers.
    let on_path: HashSet<&str> = body["critical_path"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["span_id"].as_str().unwrap())
        .collect();
    let ids: HashSet<&str> = spans(&body)
        .iter()
        .map(|s| s["span_id"].as_str().unwrap())
        .collect();
    assert!(on_path.is_subset(&ids));
    for s in spans(&body) {
        let same = spans(&full)
            .iter()
            .find(|f| f["span_id"] == s["span_id"])
            .unwrap();
        assert_eq!(s["critical_ms"], same["critical_ms"]);
    }
    assert_eq!(body["critical_path"], full["critical_path"]);
    assert_eq!(body["hops"], full["hops"]);
    // The marks name only the spans the answer holds.
    assert!(
        !full["marks"].as_array().unwrap().is_empty(),
        "the queries loop: {full}"
    );
    for mark in body["marks"].as_array().unwrap() {
        let marked = mark["span_ids"].as_array().unwrap();
        assert!(!marked.is_empty());
        assert!(
            marked.iter().all(|m| ids.contains(m.as_str().unwrap())),
            "{mark}"
        );
    }
    // What was left out is counted, and each run fetches back as the
    // subtrees of the span it hangs from.
    let collapsed = body["collapsed"].as_array().expect("collapsed");
    let left_out: usize = collapsed.iter().map(|c| field(c, "span_count")).sum();
    assert_eq!(kept.len() + left_out, SPANS);
    let worker = spans(&body)
        .iter()
        .find(|s| s["operation"] == "worker")
        .unwrap();
    let under_worker = collapsed
        .iter()
        .find(|c| c["parent_span_id"] == worker["span_id"])
        .expect("the worker's other queries");
    assert_eq!(field(under_worker, "span_count"), QUERIES as usize - 1);
    for c in collapsed {
        let (offset, count) = (field(c, "offset"), field(c, "span_count"));
        let (_, page) = d
            .get(&format!(
                "/api/v1/traces/{id}?offset={offset}&limit={count}"
            ))
            .await;
        assert_eq!(spans(&page).len(), count);
        assert!(spans(&page)
            .iter()
            .all(|s| !ids.contains(s["span_id"].as_str().unwrap())));
        assert_eq!(spans(&page)[0]["parent_span_id"], c["parent_span_id"]);
    }
    d.stop().await;
}

#[tokio::test]
async fn malformed_parameters_are_refused_and_odd_ones_answered_sensibly() {
    let (d, id) = with_report().await;
    for (query, says) in [
        ("offset=-1", "offset"),
        ("limit=many", "limit"),
        ("critical_path=maybe", "critical_path"),
    ] {
        let (status, body) = d.get(&format!("/api/v1/traces/{id}?{query}")).await;
        assert_eq!(status, 400, "{query}: {body}");
        assert_eq!(body["error"]["code"], "invalid_query", "{query}");
        let message = body["error"]["message"].as_str().unwrap();
        assert!(message.contains(says), "{query}: {message}");
    }
    // The critical path comes whole: page parameters beside it are not read.
    let (_, alone) = d
        .get(&format!("/api/v1/traces/{id}?critical_path=true"))
        .await;
    let (status, both) = d
        .get(&format!(
            "/api/v1/traces/{id}?critical_path=true&offset=3&limit=1"
        ))
        .await;
    assert_eq!(status, 200);
    assert_eq!(both["spans"], alone["spans"]);
    assert!(both.get("page").is_none() && both.get("collapsed").is_some());
    // A limit of 0 is taken as 1, as the lists take theirs.
    let (status, body) = d.get(&format!("/api/v1/traces/{id}?limit=0")).await;
    assert_eq!((status, spans(&body).len()), (200, 1));
    d.stop().await;
}
