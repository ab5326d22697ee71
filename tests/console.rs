//! The web console over HTTP: every page and asset with its status, content
//! type and headers; pages that reference only the console's own assets; the
//! token rule (pages and assets open, data protected); the plain findings page
//! for browsers without JavaScript; and the hop-share series the entry-point
//! chart draws. (The pages in a browser: tests/browser/, run by `.ci/run`.)

mod support;

use std::collections::BTreeSet;

use hopscope::config::Settings;
use opentelemetry::trace::SpanKind;
use reqwest::header::{CONTENT_SECURITY_POLICY, CONTENT_TYPE};
use serde_json::Value;
use support::{sp, Sp, TestDaemon};

const PAGES: &[&str] = &[
    "/",
    "/ui/findings",
    "/ui/entry",
    "/ui/trace",
    "/ui/timeouts",
    "/ui/coverage",
];
const TOKEN: &str = "console-token";

struct Answer {
    status: u16,
    content_type: String,
    csp: Option<String>,
    body: String,
}

async fn fetch(d: &TestDaemon, path: &str, token: Option<&str>) -> Answer {
    let mut request = reqwest::Client::new().get(format!("{}{path}", d.api));
    if let Some(token) = token {
        request = request.bearer_auth(token);
    }
    let resp = request.send().await.expect("API answers");
    let header = |name| {
        resp.headers()
            .get(name)
            .map(|v: &reqwest::header::HeaderValue| v.to_str().unwrap().to_owned())
    };
    Answer {
        status: resp.status().as_u16(),
        content_type: header(CONTENT_TYPE).unwrap_or_default(),
        csp: header(CONTENT_SECURITY_POLICY),
        body: resp.text().await.expect("a body"),
    }
}

/// The values of `attr="..."` in an HTML text.
fn attributes<'a>(html: &'a str, attr: &str) -> Vec<&'a str> {
    let needle = format!("{attr}=\"");
    html.match_indices(&needle)
        .filter_map(|(at, _)| {
            let rest = &html[at + needle.len()..];
            rest.find('"').map(|end| &rest[..end])
        })
        .collect()
}

/// The modules a script imports (`from "./x.js"`), as asset paths.
fn imports(js: &str) -> Vec<String> {
    js.match_indices("from \"")
        .filter_map(|(at, _)| {
            let rest = &js[at + 6..];
            rest.find('"').map(|end| &rest[..end])
        })
        .map(|spec| {
            assert!(
                spec.starts_with("./"),
                "a module import that is not a local file: {spec}"
            );
            format!("/ui/assets/{}", &spec[2..])
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_page_and_asset_is_served_and_references_only_local_assets() {
    let d = support::start(Settings::default()).await;
    let mut assets = BTreeSet::new();
    for page in PAGES {
        let a = fetch(&d, page, None).await;
        assert_eq!(a.status, 200, "{page}: {}", a.body);
        assert_eq!(a.content_type, "text/html; charset=utf-8", "{page}");
        let csp = a.csp.unwrap_or_else(|| panic!("{page} has no CSP"));
        assert!(csp.contains("script-src 'self'"), "{page}: {csp}");
        assert!(
            a.body.contains("<noscript>"),
            "{page} says what works without JavaScript"
        );
        assert!(a.body.contains("href=\"/ui/plain/findings\""), "{page}");
        for reference in attributes(&a.body, "src")
            .into_iter()
            .chain(attributes(&a.body, "href"))
        {
            assert!(
                (reference.starts_with('/') && !reference.starts_with("//"))
                    || reference.starts_with("data:"),
                "{page} references `{reference}`, not a local path"
            );
            if reference.starts_with("/ui/assets/") {
                assets.insert(reference.to_owned());
            }
        }
    }
    // Each page loads its own module; modules import their neighbours.
    let mut pending: Vec<String> = assets.iter().cloned().collect();
    while let Some(path) = pending.pop() {
        let a = fetch(&d, &path, None).await;
        assert_eq!(a.status, 200, "{path}");
        let expected = if path.ends_with(".css") {
            "text/css; charset=utf-8"
        } else {
            "text/javascript; charset=utf-8"
        };
        assert_eq!(a.content_type, expected, "{path}");
        // The SVG namespace is a name, not a place.
        let body = a.body.replace("\"http://www.w3.org/2000/svg\"", "");
        assert!(
            !body.contains("http://") && !body.contains("https://") && !body.contains("url("),
            "{path} reaches another origin"
        );
        for import in imports(&a.body) {
            if assets.insert(import.clone()) {
                pending.push(import);
            }
        }
    }
    let names: Vec<&str> = assets.iter().map(String::as_str).collect();
    assert_eq!(
        names,
        [
            "/ui/assets/common.js",
            "/ui/assets/console.css",
            "/ui/assets/coverage.js",
            "/ui/assets/entry.js",
            "/ui/assets/findings.js",
            "/ui/assets/kinds.js",
            "/ui/assets/timeouts.js",
            "/ui/assets/trace.js",
        ]
    );
    for missing in ["/ui/nothing", "/ui/assets/nothing.js"] {
        let a = fetch(&d, missing, None).await;
        assert_eq!(a.status, 404, "{missing}");
        let body: Value = serde_json::from_str(&a.body).expect("the API's error shape");
        assert!(body["error"]["code"].is_string(), "{body}");
    }
    d.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_a_token_the_pages_load_without_it_and_the_data_needs_it() {
    let d = support::start(Settings {
        api_token: Some(TOKEN.into()),
        ..Settings::default()
    })
    .await;
    for open in PAGES.iter().chain(&["/ui/assets/common.js"]) {
        assert_eq!(fetch(&d, open, None).await.status, 200, "{open}");
    }
    for data in [
        "/api/v1/findings",
        "/api/v1/hops/series?entry=a:b",
        "/api/v1/coverage",
        "/ui/plain/findings",
    ] {
        assert_eq!(fetch(&d, data, None).await.status, 401, "{data}");
        assert_eq!(fetch(&d, data, Some("wrong")).await.status, 401, "{data}");
        assert_eq!(fetch(&d, data, Some(TOKEN)).await.status, 200, "{data}");
    }
    d.stop().await;
}

/// gateway → inventory, inventory slow and every caller timing out; the
/// inventory operation's name carries markup.
fn cascade() -> Vec<Sp> {
    vec![
        sp(
            "gateway",
            (1, 0),
            "GET /checkout",
            SpanKind::Server,
            (0, 2900),
        )
        .failed("Endpoint request timed out", 504),
        sp(
            "gateway",
            (2, 1),
            "GET /<b>stock</b>",
            SpanKind::Client,
            (5, 2900),
        )
        .failed("context deadline exceeded", 504),
        sp(
            "inventory",
            (3, 2),
            "GET /<b>stock</b>",
            SpanKind::Server,
            (10, 4000),
        )
        .http(200),
    ]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_plain_findings_page_lists_the_findings_as_escaped_html() {
    let d = support::start(Settings::default()).await;
    let ids = support::send(&d, vec![cascade()]).await;
    d.wait_trace(ids[0], 3).await;
    let found = d.wait_findings("cascading_timeout").await;
    let a = fetch(&d, "/ui/plain/findings", None).await;
    assert_eq!(a.status, 200);
    assert_eq!(a.content_type, "text/html; charset=utf-8");
    assert!(
        a.body
            .contains("Cascading timeout<br><code>cascading_timeout</code>"),
        "the kind by its label and name: {}",
        a.body
    );
    assert!(
        a.body.contains("inventory GET /&lt;b&gt;stock&lt;/b&gt;"),
        "names are escaped: {}",
        a.body
    );
    assert!(!a.body.contains("<b>stock"), "no markup from the wire");
    let summary = found["findings"][0]["summary"].as_str().unwrap();
    assert!(
        summary.contains("<b>"),
        "the JSON keeps the name: {summary}"
    );
    let trace = format!("/api/v1/traces/{}", ids[0]);
    assert!(a.body.contains(&trace), "links its example trace");
    // The same filters as the JSON: another kind shows none.
    let a = fetch(&d, "/ui/plain/findings?kind=pool_exhaustion", None).await;
    assert!(a.body.contains("No findings match."), "{}", a.body);
    assert!(
        !a.body.contains("blind"),
        "every service is instrumented: {}",
        a.body
    );
    // A service whose requests carry no instance id: no finding of that kind
    // says nothing about it, and the page says so.
    let ids = support::send(
        &d,
        vec![vec![sp(
            "legacy",
            (1, 0),
            "GET /old",
            SpanKind::Server,
            (0, 5),
        )
        .http(200)
        .no_instance()]],
    )
    .await;
    d.wait_trace(ids[0], 1).await;
    let a = fetch(&d, "/ui/plain/findings?kind=pool_exhaustion", None).await;
    assert!(
        a.body
            .contains("<li>legacy: pool_exhaustion, blocked_worker, cold_start</li>"),
        "{}",
        a.body
    );
    let a = fetch(&d, "/ui/plain/findings?kind=nonsense", None).await;
    assert_eq!(a.status, 400);
    d.stop().await;
}

/// gateway answers (a fallback) after its call to orders timed out; orders
/// timed out waiting on inventory, whose slow span says where in the source
/// it runs (`code.*`).
fn located_cascade() -> Vec<Sp> {
    vec![
        sp(
            "gateway",
            (1, 0),
            "GET /checkout",
            SpanKind::Server,
            (0, 3100),
        )
        .http(200),
        sp(
            "gateway",
            (2, 1),
            "GET /orders",
            SpanKind::Client,
            (5, 2905),
        )
        .deadline(),
        sp(
            "orders",
            (3, 2),
            "GET /orders",
            SpanKind::Server,
            (10, 2910),
        )
        .failed("upstream inventory timed out", 504),
        sp(
            "orders",
            (4, 3),
            "GET /inventory",
            SpanKind::Client,
            (15, 2915),
        )
        .deadline(),
        sp(
            "inventory",
            (5, 4),
            "GET /inventory",
            SpanKind::Server,
            (20, 4000),
        )
        .http(200)
        .attr("code.file.path", "src/stock.rs")
        .attr("code.line.number", 42_i64)
        .attr("code.function.name", "check_stock")
        .attr("code.namespace", "inventory::stock"),
    ]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_finding_marks_the_spans_it_is_made_of_and_says_where_in_the_source() {
    let d = support::start(Settings::default()).await;
    let ids = support::send(&d, vec![located_cascade()]).await;
    d.wait_trace(ids[0], 5).await;
    let found = d.wait_findings("cascading_timeout").await;
    let finding = &found["findings"][0];
    let location = serde_json::json!({
        "file": "src/stock.rs", "line": 42, "function": "check_stock",
        "namespace": "inventory::stock",
    });
    assert_eq!(finding["location"], location, "{finding}");
    assert_eq!(
        finding["crossed"],
        serde_json::json!([{"threshold": "cascade.min_calls", "limit": 2.0, "value": 2.0}]),
        "{finding}"
    );

    // The trace names the spans the cascade is made of: the calls that timed
    // out and the slow one, not the gateway's entry span that answered.
    let (status, trace) = d.get(&format!("/api/v1/traces/{}", ids[0])).await;
    assert_eq!(status, 200);
    let span_ids: Vec<String> = (2..=5).map(|n| format!("{n:016x}")).collect();
    assert_eq!(
        trace["marks"],
        serde_json::json!([{
            "finding_id": finding["id"],
            "kind": "cascading_timeout",
            "span_ids": span_ids,
        }])
    );
    assert_eq!(trace["findings"][0]["location"], location);

    // The page without scripts says it too.
    let a = fetch(&d, "/ui/plain/findings", None).await;
    assert!(
        a.body
            .contains("at src/stock.rs:42 in check_stock (inventory::stock)"),
        "{}",
        a.body
    );
    d.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_finding_kind_is_offered_by_its_label() {
    let d = support::start(Settings::default()).await;
    let page = fetch(&d, "/ui/findings", None).await.body;
    let module = fetch(&d, "/ui/assets/kinds.js", None).await.body;
    for (kind, label) in [
        ("cascading_timeout", "Cascading timeout"),
        ("n_plus_one", "N+1 calls"),
        ("serial_calls", "Serial calls"),
        ("redundant_call", "Redundant call"),
        ("chatty_edge", "Chatty edge"),
        ("excessive_fanout", "Excessive fan-out"),
    ] {
        let option = format!("<option value=\"{kind}\" title=\"");
        let at = page
            .find(&option)
            .unwrap_or_else(|| panic!("{kind}: {page}"));
        assert!(
            page[at..]
                .split("</option>")
                .next()
                .unwrap()
                .ends_with(label),
            "{kind}: {page}"
        );
        assert!(
            module.contains(&format!("\"{kind}\": {{\"description\"")) && module.contains(label),
            "{kind}: {module}"
        );
    }
    d.stop().await;
}

/// A trace of `web GET /a` starting `start_ms` after the base time, `total_ms`
/// long, of which its `render` child takes `render_ms`.
fn page_view(start_ms: u64, total_ms: u64, render_ms: u64) -> Vec<Sp> {
    vec![
        sp(
            "web",
            (1, 0),
            "GET /a",
            SpanKind::Server,
            (start_ms, start_ms + total_ms),
        ),
        sp(
            "web",
            (2, 1),
            "render",
            SpanKind::Internal,
            (start_ms + 1, start_ms + 1 + render_ms),
        ),
    ]
}

/// `(traces, [(operation, share)])` of each point.
fn points(body: &Value) -> Vec<(u64, Vec<(String, f64)>)> {
    body["points"]
        .as_array()
        .expect("points")
        .iter()
        .map(|p| {
            let hops = p["hops"]
                .as_array()
                .unwrap()
                .iter()
                .map(|h| {
                    let share = (h["share"].as_f64().unwrap() * 1000.0).round() / 1000.0;
                    (h["operation"].as_str().unwrap().to_owned(), share)
                })
                .collect();
            (p["traces"].as_u64().unwrap(), hops)
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_hop_series_has_one_point_per_step_with_that_steps_shares() {
    let d = support::start(Settings::default()).await;
    // Two minutes apart: render is 60% of the first, 25% of the second.
    let ids = support::send(&d, vec![page_view(0, 100, 60), page_view(120_000, 200, 50)]).await;
    d.wait_trace(ids[0], 2).await;
    d.wait_trace(ids[1], 2).await;
    let series = "/api/v1/hops/series?entry=web:GET%20/a";
    let body = d
        .wait_for(series, |s, b| {
            s == 200
                && b["points"].as_array().is_some_and(|p| {
                    p.iter().map(|p| p["traces"].as_u64().unwrap()).sum::<u64>() == 2
                })
        })
        .await;
    assert_eq!(body["step_ms"], 60_000.0);
    let render = |share| ("render".to_owned(), share);
    let root = |share| ("GET /a".to_owned(), share);
    assert_eq!(
        points(&body),
        vec![
            (1, vec![render(0.6), root(0.4)]),
            (0, vec![]),
            (1, vec![root(0.75), render(0.25)]),
        ]
    );
    // Steps follow each other by the step.
    let starts: Vec<u64> = body["points"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| {
            humantime::parse_rfc3339(p["start"].as_str().unwrap())
                .unwrap()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap()
                .as_secs()
        })
        .collect();
    assert_eq!(starts[1] - starts[0], 60);
    assert_eq!(starts[2] - starts[1], 60);
    assert_eq!(starts[0] % 60, 0);

    // A ten-minute step merges both traces into one or two points (by where the
    // step boundary falls), summing to the same traces.
    let (_, body) = d.get(&format!("{series}&step=10m")).await;
    assert_eq!(body["step_ms"], 600_000.0);
    let merged = points(&body);
    assert!(merged.len() <= 2, "{merged:?}");
    assert_eq!(merged.iter().map(|p| p.0).sum::<u64>(), 2);

    // A window keeps the steps inside it: until the second trace starts.
    let until = starts[2] * 1000;
    let (_, body) = d.get(&format!("{series}&until={until}")).await;
    assert_eq!(points(&body), vec![(1, vec![render(0.6), root(0.4)])]);
    // A window that ends before it begins holds nothing.
    let (status, body) = d
        .get(&format!(
            "{series}&since={until}&until={}",
            starts[0] * 1000
        ))
        .await;
    assert_eq!((status, points(&body)), (200, vec![]));
    let (status, body) = d
        .get(&format!(
            "/api/v1/hops?since={until}&until={}",
            starts[0] * 1000
        ))
        .await;
    assert_eq!((status, &body["entries"]), (200, &serde_json::json!([])));

    // An entry never seen has no points; bad input answers 400 in the API's shape.
    let (status, body) = d.get("/api/v1/hops/series?entry=web:GET%20/nothing").await;
    assert_eq!((status, points(&body)), (200, vec![]));
    // Without an entry point, the busiest one's.
    let (_, busiest) = d.get("/api/v1/hops/series?step=10m").await;
    assert_eq!(points(&busiest), merged);
    for (query, code) in [
        ("?entry=web", "invalid_entry"),
        ("?entry=web:GET%20/a&step=10s", "invalid_step"),
        ("?entry=web:GET%20/a&step=2d", "invalid_step"),
        ("?entry=web:GET%20/a&since=yesterday", "invalid_time"),
    ] {
        let (status, body) = d.get(&format!("/api/v1/hops/series{query}")).await;
        assert_eq!(
            (status, body["error"]["code"].as_str()),
            (400, Some(code)),
            "{query}"
        );
    }
    d.stop().await;
}
