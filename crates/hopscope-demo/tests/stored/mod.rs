//! What a demo left in its daemon, read back over the HTTP API as a user would
//! (a module of the demo's tests). It takes the API's base URL, not the demo,
//! so that it needs nothing but the HTTP API.

use serde_json::Value;

/// Every stored trace of the daemon whose API is at `api` (the demo's
/// `api_url()`), whole (`GET /api/v1/traces/{id}`).
pub async fn stored_traces(api: &str) -> Vec<Value> {
    let http = reqwest::Client::new();
    let list = get(&http, &format!("{api}/api/v1/traces?limit=1000")).await;
    let mut traces = Vec::new();
    for t in list["traces"].as_array().expect("traces") {
        let id = t["trace_id"].as_str().expect("trace id");
        traces.push(get(&http, &format!("{api}/api/v1/traces/{id}")).await);
    }
    traces
}

async fn get(http: &reqwest::Client, url: &str) -> Value {
    let response = http.get(url).send().await.expect("the API answers");
    assert_eq!(response.status(), 200, "{url}");
    response.json().await.expect("JSON")
}
