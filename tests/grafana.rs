//! The Grafana JSON datasource end to end: traces through the real OTLP
//! exporter (a cascading timeout and a slow query), then the request bodies
//! the plugin sends (`tests/fixtures/grafana/`, written from its documented
//! contract) replayed over HTTP against `/grafana`.

mod support;

use std::collections::BTreeSet;
use std::time::{Duration, UNIX_EPOCH};

use serde_json::Value;
use support::scenarios::{cascade, db_request};
use support::TestDaemon;

/// A fixture body with the range `[from_ms, to_ms)` filled in.
fn fixture(name: &str, (from_ms, to_ms): (u64, u64)) -> String {
    let path = format!(
        "{}/tests/fixtures/grafana/{name}",
        env!("CARGO_MANIFEST_DIR")
    );
    let iso = |ms: u64| humantime::format_rfc3339_millis(UNIX_EPOCH + Duration::from_millis(ms));
    std::fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("{path}: {e}"))
        .replace("$FROM", &iso(from_ms).to_string())
        .replace("$TO", &iso(to_ms).to_string())
}

async fn post(d: &TestDaemon, path: &str, body: String) -> (u16, Value) {
    let resp = reqwest::Client::new()
        .post(format!("{}{path}", d.api))
        .header("content-type", "application/json")
        .body(body)
        .send()
        .await
        .expect("API answers");
    let status = resp.status().as_u16();
    (status, resp.json().await.expect("JSON answer"))
}

/// Replays a fixture against `/grafana/{endpoint}`, printing what came back.
async fn replay(d: &TestDaemon, endpoint: &str, name: &str, range: (u64, u64)) -> (u16, Value) {
    let (status, body) = post(d, &format!("/grafana/{endpoint}"), fixture(name, range)).await;
    let text = body.to_string();
    println!(
        "POST /grafana/{endpoint} {name} -> {status} {}",
        &text[..text.len().min(600)]
    );
    (status, body)
}

/// A table answer's rows as objects keyed by column text.
fn rows(answer: &Value) -> Vec<serde_json::Map<String, Value>> {
    assert_eq!(answer["type"], "table", "{answer}");
    let columns: Vec<&str> = answer["columns"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["text"].as_str().unwrap())
        .collect();
    answer["rows"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| {
            let r = r.as_array().unwrap();
            assert_eq!(r.len(), columns.len(), "a cell per column");
            columns
                .iter()
                .map(|c| c.to_string())
                .zip(r.iter().cloned())
                .collect()
        })
        .collect()
}

/// Three cascading timeouts through gateway → frontend → orders → inventory
/// and four slow statements of orders, analyzed and detected.
async fn daemon_with_findings() -> (TestDaemon, (u64, u64)) {
    let d = support::start_detecting().await;
    support::send(&d, vec![cascade(), cascade(), cascade()]).await;
    let slow = (0..4)
        .map(|n| {
            db_request(
                "orders",
                "GET /orders",
                format!("SELECT * FROM orders WHERE customer_id = {n}"),
                20,
                600 + n,
            )
        })
        .collect();
    support::send(&d, slow).await;
    d.wait_for("/api/v1/findings", |status, body| {
        let findings = body["findings"].as_array();
        let count = |kind: &str| {
            findings
                .into_iter()
                .flatten()
                .find(|f| f["kind"] == kind)
                .map(|f| f["count"].clone())
        };
        status == 200
            && count("cascading_timeout") == Some(3.into())
            && count("slow_query") == Some(4.into())
    })
    .await;
    // The budget map and the statement shapes are as of the same pass.
    d.settled_and_detected().await;
    // The traces started a minute ago (the harness's base time).
    let base_ms = support::base_time()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64;
    (d, (base_ms - 5 * 60_000, base_ms + 60_000 + 10_000))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_plugin_requests_get_what_a_grafana_user_expects() {
    let (d, range) = daemon_with_findings().await;
    let (from_ms, to_ms) = range;

    // Test connection: with and without the slash, and doubled slashes.
    for path in ["/grafana", "/grafana/", "//grafana/", "/grafana//"] {
        let resp = reqwest::get(format!("{}{path}", d.api)).await.unwrap();
        assert_eq!(resp.status(), 200, "GET {path}");
    }
    let (status, _) = post(&d, "/grafana//tag-keys", String::new()).await;
    assert_eq!(status, 200, "a doubled slash before the endpoint");

    // The metric list, each with its payload options.
    let (status, metrics) = replay(&d, "metrics", "metrics.json", range).await;
    assert_eq!(status, 200);
    let names: Vec<&str> = metrics
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["value"].as_str().unwrap())
        .collect();
    for want in [
        "hop_share",
        "hop_latency",
        "findings_over_time",
        "findings",
        "timeout_budget",
        "slow_queries",
        "service_graph",
    ] {
        assert!(names.contains(&want), "{want} in {names:?}");
    }
    let hop_share = &metrics[0];
    assert_eq!(hop_share["value"], "hop_share");
    assert_eq!(hop_share["payloads"][0]["name"], "entry");
    assert_eq!(hop_share["payloads"][0]["type"], "select");
    let (status, same) = replay(&d, "metrics", "metrics-with-payload.json", range).await;
    assert_eq!((status, &same), (200, &metrics));

    // Dynamic options of the entry payload: the entry points with traces.
    let (status, options) = replay(
        &d,
        "metric-payload-options",
        "metric-payload-options.json",
        range,
    )
    .await;
    assert_eq!(status, 200);
    let entries: BTreeSet<&str> = options
        .as_array()
        .unwrap()
        .iter()
        .map(|o| o["value"].as_str().unwrap())
        .collect();
    assert_eq!(
        entries,
        BTreeSet::from(["gateway:POST /checkout", "orders:GET /orders"])
    );

    // Latency share over time: inventory holds 2870 of the 2900 ms.
    let (status, series) = replay(&d, "query", "query-hop-share.json", range).await;
    assert_eq!(status, 200);
    let series = series.as_array().unwrap();
    assert_eq!(
        series[0]["target"], "inventory GET /inventory",
        "largest share first"
    );
    let mut points = 0;
    for s in series {
        for p in s["datapoints"].as_array().unwrap() {
            let t = p[1].as_u64().expect("unix ms");
            assert!(
                (from_ms..to_ms).contains(&t),
                "{t} outside [{from_ms}, {to_ms})"
            );
            points += 1;
        }
        assert!(s["datapoints"].as_array().unwrap().len() <= 550);
    }
    assert!(points > 0);
    let shares: Vec<f64> = series[0]["datapoints"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p[0].as_f64().unwrap())
        .collect();
    assert_eq!(shares.len(), 1, "the traces fall in one minute: {shares:?}");
    assert!((shares[0] - 2870.0 / 2900.0).abs() < 1e-9, "{shares:?}");
    let total: f64 = series
        .iter()
        .map(|s| s["datapoints"][0][0].as_f64().unwrap())
        .sum();
    assert!(
        (total - 1.0).abs() < 1e-9,
        "the hops' shares stack to 1: {total}"
    );

    // Hop latency table: inventory's critical time and share, per entry.
    let (status, table) = replay(&d, "query", "query-hop-latency.json", range).await;
    assert_eq!(status, 200);
    let table = rows(&table[0]);
    let top = &table[0];
    assert_eq!(top["Entry"], "gateway:POST /checkout");
    assert_eq!(top["Hop"], "inventory GET /inventory");
    assert_eq!(top["Traces"], 3);
    let p95 = top["Critical p95 ms"].as_f64().unwrap();
    assert!((p95 - 2870.0).abs() / 2870.0 < 0.01, "{p95}");
    assert!(table.iter().all(|r| r["Entry"] == "gateway:POST /checkout"));
    assert!(
        table.iter().any(|r| r["Kind"] == "wire"),
        "wire hops are rows too"
    );

    // The findings table, worst first, with the culprits.
    let (status, findings) = replay(&d, "query", "query-findings.json", range).await;
    assert_eq!(status, 200);
    let findings = rows(&findings[0]);
    let cascade = findings
        .iter()
        .find(|r| r["Kind"] == "cascading_timeout")
        .expect("the cascade");
    assert_eq!(cascade["Service"], "inventory");
    assert_eq!(cascade["Severity"], "critical");
    assert_eq!(cascade["Count"], 3);
    assert!(cascade["Remedy"].as_str().unwrap().len() > 10);
    // No `code.*` attributes: empty, not absent; the threshold it crossed.
    assert_eq!(
        (&cascade["Location"], &cascade["Crossed"]),
        (
            &Value::Null,
            &Value::from("crossed cascade.min_calls: 4 ≥ 2")
        )
    );
    assert!(cascade["Last seen"].as_u64().is_some(), "times are unix ms");
    let slow = findings
        .iter()
        .find(|r| r["Kind"] == "slow_query")
        .expect("the slow query");
    assert_eq!(slow["Service"], "orders");
    let critical_ms = slow["Critical ms"].as_f64().expect("its critical time");
    assert!(critical_ms >= 4.0 * 600.0, "{slow:?}");
    assert!(slow["Critical share"].as_f64().unwrap() > 0.9, "{slow:?}");
    assert_eq!(
        slow["Operation"],
        "SELECT * FROM orders WHERE customer_id = ?"
    );
    assert_eq!(findings[0]["Severity"], "critical", "worst first");

    // Findings over time: per kind, at most maxDataPoints points in range.
    let (status, over_time) = replay(&d, "query", "query-findings-over-time.json", range).await;
    assert_eq!(status, 200);
    let kinds: BTreeSet<&str> = over_time
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["target"].as_str().unwrap())
        .collect();
    assert!(
        kinds.contains("cascading_timeout") && kinds.contains("slow_query"),
        "{kinds:?}"
    );
    for s in over_time.as_array().unwrap() {
        let points = s["datapoints"].as_array().unwrap();
        assert!(!points.is_empty() && points.len() <= 12, "{}", points.len());
        assert!(points
            .iter()
            .all(|p| (from_ms..to_ms).contains(&p[1].as_u64().unwrap())));
        assert!(
            points.iter().any(|p| p[0].as_f64().unwrap() >= 1.0),
            "open at some point"
        );
    }

    // Annotations: Grafana's annotation query (refId Anno) gets the frame
    // columns it renders; the payload keeps the critical ones.
    let (status, annotations) = replay(&d, "query", "query-findings-annotations.json", range).await;
    assert_eq!(status, 200);
    let columns: Vec<&str> = annotations[0]["columns"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["text"].as_str().unwrap())
        .collect();
    assert_eq!(columns, ["time", "timeEnd", "title", "text", "tags"]);
    let notes = rows(&annotations[0]);
    assert!(!notes.is_empty());
    for n in &notes {
        assert!(n["tags"].as_str().unwrap().contains("critical"), "{n:?}");
        assert!(n["time"].as_u64().unwrap() <= n["timeEnd"].as_u64().unwrap());
    }
    assert!(notes.iter().any(|n| n["title"]
        .as_str()
        .unwrap()
        .contains("cascading_timeout: inventory")));

    // The timeout budget: the entry and each edge of its chain.
    let (status, budget) = replay(&d, "query", "query-timeout-budget.json", range).await;
    assert_eq!(status, 200);
    let budget = rows(&budget[0]);
    let edge = budget
        .iter()
        .find(|r| r["Caller"] == "orders" && r["Callee"] == "inventory")
        .expect("orders → inventory");
    assert_eq!(
        (edge["Calls"].as_u64(), edge["Timed out"].as_u64()),
        (Some(3), Some(3))
    );
    assert!(budget
        .iter()
        .all(|r| r["Entry"] == "gateway:POST /checkout"));

    // Slow queries: the shape, its database and its calls.
    let (status, queries) = replay(&d, "query", "query-slow-queries.json", range).await;
    assert_eq!(status, 200);
    let queries = rows(&queries[0]);
    assert_eq!(queries.len(), 1);
    assert_eq!(
        queries[0]["Statement"],
        "SELECT * FROM orders WHERE customer_id = ?"
    );
    assert_eq!(queries[0]["Database"], "postgresql db.internal shop");
    assert_eq!(queries[0]["Count"], 4);

    // The service graph, narrowed by an ad-hoc filter to inventory's edges.
    let (status, graph) = replay(&d, "query", "query-service-graph.json", range).await;
    assert_eq!(status, 200);
    let graph = rows(&graph[0]);
    assert_eq!(graph.len(), 1, "{graph:?}");
    assert_eq!(
        (graph[0]["Caller"].as_str(), graph[0]["Callee"].as_str()),
        (Some("orders"), Some("inventory"))
    );
    assert_eq!(
        (graph[0]["Calls"].as_u64(), graph[0]["Errors"].as_u64()),
        (Some(3), Some(3))
    );
    assert_eq!(
        graph[0]["Wire ms"],
        3.0 * 5.0,
        "25–3025 around 30–3030: 5 ms each"
    );

    // Ad-hoc filters in both spellings narrow the findings.
    for (file, kind) in [
        ("query-filters.json", "slow_query"),
        ("query-adhoc-filters.json", "cascading_timeout"),
    ] {
        let (status, answer) = replay(&d, "query", file, range).await;
        assert_eq!(status, 200);
        let narrowed = rows(&answer[0]);
        assert!(
            !narrowed.is_empty() && narrowed.len() < findings.len(),
            "{file}"
        );
        assert!(
            narrowed.iter().all(|r| r["Kind"] == kind),
            "{file}: {narrowed:?}"
        );
    }

    // Variables and ad-hoc filter keys and values.
    let (status, vars) = replay(&d, "variable", "variable-entries.json", range).await;
    assert_eq!(status, 200);
    assert!(vars.as_array().unwrap().iter().any(
        |v| v["__text"] == "gateway:POST /checkout" && v["__value"] == "gateway:POST /checkout"
    ));
    // Every kind, by its label, filtering by its name.
    let (status, kinds) = replay(&d, "variable", "variable-kinds.json", range).await;
    assert_eq!(status, 200);
    let kinds = kinds.as_array().unwrap();
    assert_eq!(kinds.len(), 16, "{kinds:?}");
    for (value, text) in [
        ("slow_query", "Slow query"),
        ("n_plus_one", "N+1 calls"),
        ("serial_calls", "Serial calls"),
        ("redundant_call", "Redundant call"),
        ("chatty_edge", "Chatty edge"),
        ("excessive_fanout", "Excessive fan-out"),
    ] {
        assert!(
            kinds
                .iter()
                .any(|v| v["__value"] == value && v["__text"] == text),
            "{value}: {kinds:?}"
        );
    }
    let (status, keys) = replay(&d, "tag-keys", "tag-keys.json", range).await;
    assert_eq!(status, 200);
    let keys: Vec<&str> = keys
        .as_array()
        .unwrap()
        .iter()
        .map(|k| k["text"].as_str().unwrap())
        .collect();
    assert_eq!(keys, ["service", "kind", "severity", "entry"]);
    let (status, values) = replay(&d, "tag-values", "tag-values.json", range).await;
    assert_eq!(status, 200);
    let values: BTreeSet<&str> = values
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v["text"].as_str().unwrap())
        .collect();
    assert_eq!(
        values,
        BTreeSet::from(["frontend", "gateway", "inventory", "orders"])
    );

    // An interval wider than the range is one bucket, one point per series.
    let wide = serde_json::json!({
        "range": {"from": from_ms, "to": to_ms},
        "intervalMs": 1e30,
        "maxDataPoints": 0,
        "targets": [{"target": "findings_over_time"}],
    });
    let (status, answer) = post(&d, "/grafana/query", wide.to_string()).await;
    assert_eq!(status, 200, "{answer}");
    for s in answer.as_array().unwrap() {
        assert_eq!(s["datapoints"].as_array().unwrap().len(), 1, "{s}");
    }

    // Errors in the API's one shape.
    let (status, err) = replay(&d, "query", "query-unknown-metric.json", range).await;
    assert_eq!(
        (status, err["error"]["code"].as_str()),
        (400, Some("unknown_metric"))
    );
    assert!(err["error"]["message"]
        .as_str()
        .unwrap()
        .contains("hop_share"));
    let (status, err) = replay(&d, "query", "query-bad-body.json", range).await;
    assert_eq!(
        (status, err["error"]["code"].as_str()),
        (400, Some("invalid_body"))
    );
    let (status, err) = post(&d, "/grafana/query", "{not json".into()).await;
    assert_eq!(
        (status, err["error"]["code"].as_str()),
        (400, Some("invalid_body"))
    );
    let (status, err) = post(&d, "/grafana/nope", "{}".into()).await;
    assert_eq!(
        (status, err["error"]["code"].as_str()),
        (404, Some("not_found"))
    );
    d.stop().await;
}

/// Every query of the shipped dashboard names a metric the datasource offers,
/// through the datasource `hopscope-json`, and is answered.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_dashboard_asks_only_for_metrics_the_datasource_offers() {
    let d = support::start(Default::default()).await;
    let (status, metrics) = post(&d, "/grafana/metrics", "{}".into()).await;
    assert_eq!(status, 200);
    let offered: BTreeSet<String> = metrics
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["value"].as_str().unwrap().to_owned())
        .collect();

    let path = format!(
        "{}/deploy/grafana/dashboards/hopscope.json",
        env!("CARGO_MANIFEST_DIR")
    );
    let dashboard: Value =
        serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).expect("dashboard parses");
    let panels = dashboard["panels"].as_array().expect("panels");
    let mut targets: Vec<&Value> = Vec::new();
    for panel in panels {
        let own = panel["targets"]
            .as_array()
            .expect("every panel has targets");
        assert!(!own.is_empty(), "panel {} has no query", panel["title"]);
        targets.extend(own);
    }
    let annotations: Vec<&Value> = dashboard["annotations"]["list"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|a| a["datasource"]["uid"] == "hopscope-json")
        .collect();
    assert_eq!(annotations.len(), 1, "the findings annotations");
    targets.extend(annotations.iter().map(|a| &a["target"]));

    let mut used = BTreeSet::new();
    for t in targets {
        assert_eq!(t["datasource"]["uid"], "hopscope-json", "{t}");
        let metric = t["target"].as_str().expect("a target names a metric");
        assert!(
            offered.contains(metric),
            "`{metric}` is not offered: {offered:?}"
        );
        used.insert(metric.to_owned());
        // Grafana fills the template variables in before it sends the query.
        let query = serde_json::json!({"range": {"from": "now-1h", "to": "now"}, "targets": [t]})
            .to_string()
            .replace("$entry", "gateway:POST /checkout");
        let (status, answer) = post(&d, "/grafana/query", query).await;
        assert_eq!(status, 200, "{metric}: {answer}");
    }
    for panel_metric in [
        "hop_share",
        "hop_latency",
        "findings_over_time",
        "findings",
        "findings_annotations",
        "timeout_budget",
        "slow_queries",
        "service_graph",
    ] {
        assert!(used.contains(panel_metric), "no panel shows {panel_metric}");
    }

    // The entry point variable is a query the datasource answers.
    let entry = dashboard["templating"]["list"]
        .as_array()
        .unwrap()
        .iter()
        .find(|v| v["name"] == "entry")
        .expect("an entry variable");
    assert_eq!(entry["datasource"]["uid"], "hopscope-json");
    let body = serde_json::json!({"payload": {"target": entry["query"]["query"]}});
    let (status, answer) = post(&d, "/grafana/variable", body.to_string()).await;
    assert_eq!((status, answer.is_array()), (200, true), "{answer}");
    d.stop().await;
}
