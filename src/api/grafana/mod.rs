//! The Grafana JSON datasource (plugin `simpod-json-datasource`) under
//! `/grafana`: a user sets the datasource URL to `http://HOST:9980/grafana`.
//!
//! * `GET /grafana` (or `/grafana/`): 200, the plugin's "Test connection".
//! * `POST /grafana/metrics`: the metrics with their payload options.
//! * `POST /grafana/metric-payload-options`: the options of one payload.
//! * `POST /grafana/query`: time series (`[{target, datapoints: [[value,
//!   unix_ms]]}]`) or tables (`{type: "table", columns: [{text, type}],
//!   rows}`), see [`query`]; findings as annotations (a table with columns
//!   `time`, `timeEnd`, `title`, `text`, `tags`).
//! * `POST /grafana/variable`: `[{__text, __value}]` of entry points,
//!   services, finding kinds (the label as text: `N+1 calls`, `n_plus_one`)
//!   or severities.
//! * `POST /grafana/tag-keys`, `POST /grafana/tag-values`: the ad-hoc filter
//!   keys (`service`, `kind`, `severity`, `entry`) and their values.
//!
//! Bodies are JSON whatever their content type (an empty body is `{}`);
//! unknown fields are ignored; errors are the API's one shape. Repeated
//! slashes in the path are tolerated (`//grafana/`, `/grafana//query`), as
//! a datasource URL with a trailing slash produces them. Entry points are
//! written `SERVICE:OPERATION`, as in `/api/v1`.

mod query;
mod series;
mod tables;

use std::collections::BTreeSet;
use std::time::SystemTime;

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use axum::routing::any;
use axum::{Json, Router};
use serde::de::DeserializeOwned;
use serde::Deserialize;
use serde_json::{json, Map, Value};

use super::params;
use super::{federate, kinds, ApiError, AppState};
use crate::analyze::{FindingKind, Severity};
use crate::store::Store;

/// The routes, for merging into the API router.
pub fn router() -> Router<AppState> {
    let mut router = Router::new();
    for prefix in ["/grafana", "//grafana"] {
        router = router
            .route(prefix, any(dispatch))
            .route(&format!("{prefix}/"), any(dispatch))
            .route(&format!("{prefix}/{{*rest}}"), any(dispatch));
    }
    router
}

const ENDPOINTS: [&str; 6] = [
    "metrics",
    "metric-payload-options",
    "query",
    "variable",
    "tag-keys",
    "tag-values",
];

/// Routes by the path with empty segments dropped.
async fn dispatch(
    State(state): State<AppState>,
    method: Method,
    uri: Uri,
    body: Bytes,
) -> Response {
    let endpoint = uri
        .path()
        .split('/')
        .filter(|s| !s.is_empty())
        .skip(1)
        .collect::<Vec<_>>()
        .join("/");
    let allowed = if endpoint.is_empty() {
        method == Method::GET || method == Method::HEAD
    } else if ENDPOINTS.contains(&endpoint.as_str()) {
        method == Method::POST
    } else {
        return ApiError::not_found(
            "not_found",
            format!(
                "no such datasource endpoint: {}; known: {}",
                uri.path(),
                ENDPOINTS.join(", ")
            ),
        )
        .into_response();
    };
    if !allowed {
        return ApiError {
            status: StatusCode::METHOD_NOT_ALLOWED,
            code: "method_not_allowed",
            message: format!("{method} is not allowed on {}", uri.path()),
        }
        .into_response();
    }
    // Only what reads the store asks the peers (`?local=true`: never).
    let local =
        federate::asks_local(&uri) || ["", "metrics", "tag-keys"].contains(&endpoint.as_str());
    let (store, peers) = federate::view(&state, local, endpoint == "query").await;
    let store = &store;
    let answer = match endpoint.as_str() {
        "" => Ok(json!({"status": "ok", "datasource": "hopscope"})),
        "metrics" => Ok(query::metrics_json()),
        "metric-payload-options" => parse(&body).and_then(|r| payload_options(store, r)),
        "query" => match parse(&body) {
            Ok(r) => query::query(store.clone(), state.analysis.clone(), r).await,
            Err(e) => Err(e),
        },
        "variable" => parse(&body).and_then(|r| variable(store, r)),
        "tag-keys" => Ok(json!(TAG_KEYS
            .iter()
            .map(|k| json!({"type": "string", "text": k}))
            .collect::<Vec<_>>())),
        _ => parse(&body).and_then(|r| tag_values(store, r)),
    };
    let mut response = match answer {
        Ok(v) => Json(v).into_response(),
        Err(e) => e.into_response(),
    };
    // The datasource's shapes have no room for the peers: a header names
    // those missing from the answer.
    if let Some((name, value)) = peers.as_deref().and_then(federate::missing_header) {
        response.headers_mut().insert(name, value);
    }
    response
}

/// A JSON body; an empty one is `{}`.
fn parse<T: DeserializeOwned>(body: &Bytes) -> Result<T, ApiError> {
    let text: &[u8] = if body.iter().all(u8::is_ascii_whitespace) {
        b"{}"
    } else {
        body
    };
    serde_json::from_slice(text)
        .map_err(|e| ApiError::bad_request("invalid_body", format!("the request body: {e}")))
}

/// A request's payload: an object, or (older plugins, code mode) the JSON
/// text of one; empty means none.
#[derive(Debug, Default, Clone)]
pub struct Payload(Map<String, Value>);

impl<'de> Deserialize<'de> for Payload {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        use serde::de::Error;
        match Value::deserialize(d)? {
            Value::Null => Ok(Payload::default()),
            Value::Object(map) => Ok(Payload(map)),
            Value::String(text) if text.trim().is_empty() => Ok(Payload::default()),
            Value::String(text) => match serde_json::from_str(&text) {
                Ok(Value::Object(map)) => Ok(Payload(map)),
                _ => Err(D::Error::custom("`payload` text must be a JSON object")),
            },
            other => Err(D::Error::custom(format!(
                "`payload` must be an object, got {other}"
            ))),
        }
    }
}

impl Payload {
    /// A text value: a string or number (the first of a list, for a
    /// multi-value variable); absent, empty and "all" values are none.
    pub fn text(&self, key: &str) -> Option<String> {
        let value = match self.0.get(key)? {
            Value::Array(items) => items.first()?,
            v => v,
        };
        let text = match value {
            Value::String(s) => s.clone(),
            Value::Number(n) => n.to_string(),
            _ => return None,
        };
        let text = text.trim();
        (!text.is_empty() && !["$__all", "All", "*"].contains(&text)).then(|| text.to_owned())
    }
}

/// A time range as the plugin sends it: ISO 8601 texts (also unix
/// milliseconds, `now` and `now-DURATION`).
#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub struct RangeBody {
    from: Option<Value>,
    to: Option<Value>,
}

impl RangeBody {
    /// `[from, to)` in unix ns; absent ends are none.
    fn bounds(&self, now: SystemTime) -> Result<(Option<u64>, Option<u64>), ApiError> {
        let end = |name: &str, v: &Option<Value>| match v {
            None | Some(Value::Null) => Ok(None),
            Some(Value::Number(n)) => Ok(n.as_f64().map(|ms| (ms.max(0.0) * 1e6) as u64)),
            // Grafana's relative times (`now`, `now-6h`) as well as the API's.
            Some(Value::String(s)) if s.trim() == "now" => Ok(Some(params::unix_ns(now))),
            Some(Value::String(s)) => {
                let s = s.trim();
                params::time_ns(name, Some(s.strip_prefix("now-").unwrap_or(s)), now)
            }
            Some(other) => Err(ApiError::bad_request(
                "invalid_range",
                format!("`range.{name}` must be a time, got {other}"),
            )),
        };
        Ok((end("from", &self.from)?, end("to", &self.to)?))
    }
}

/// The ad-hoc filter keys.
const TAG_KEYS: [&str; 4] = ["service", "kind", "severity", "entry"];

/// Entry points with traces in `[since, until)`, the busiest first, as
/// `SERVICE:OPERATION`.
fn entry_points(store: &Store, since: Option<u64>, until: Option<u64>) -> Vec<String> {
    store
        .aggregates()
        .query(None, since, until)
        .iter()
        .map(|e| format!("{}:{}", e.entry.service, e.entry.operation))
        .collect()
}

/// Services seen in `[since, until)`: entry points, hops and edges.
fn services(store: &Store, since: Option<u64>, until: Option<u64>) -> BTreeSet<&'static str> {
    let mut out = BTreeSet::new();
    for e in store.aggregates().query(None, since, until) {
        out.insert(e.entry.service.as_str());
        for h in &e.hops {
            out.insert(h.key.service.as_str());
            out.extend(h.key.peer.map(|p| p.as_str()));
        }
    }
    for e in store.edges().query(since, until) {
        out.insert(e.key.caller.as_str());
        out.insert(e.key.callee.as_str());
    }
    out.remove("other");
    out
}

/// The values a payload, variable or ad-hoc filter named `name` can take,
/// each with its text for people (a finding kind's label; the value itself
/// otherwise).
fn values_of(
    store: &Store,
    name: &str,
    since: Option<u64>,
    until: Option<u64>,
) -> Option<Vec<(String, String)>> {
    let same = |v: String| (v.clone(), v);
    Some(match name {
        "entry" | "entries" => entry_points(store, since, until)
            .into_iter()
            .map(same)
            .collect(),
        "service" | "services" => services(store, since, until)
            .into_iter()
            .map(|s| same(s.to_owned()))
            .collect(),
        "kind" | "kinds" => FindingKind::ALL
            .iter()
            .map(|&k| (k.as_str().to_owned(), kinds::label(k).to_owned()))
            .collect(),
        "severity" | "severities" => [Severity::Info, Severity::Warning, Severity::Critical]
            .iter()
            .map(|s| same(s.as_str().to_owned()))
            .collect(),
        _ => return None,
    })
}

#[derive(Deserialize)]
struct PayloadOptionsRequest {
    metric: Option<String>,
    name: Option<String>,
}

fn payload_options(store: &Store, r: PayloadOptionsRequest) -> Result<Value, ApiError> {
    if let Some(metric) = r.metric.as_deref().filter(|m| !m.is_empty()) {
        query::metric(metric)?;
    }
    let name = r.name.unwrap_or_default();
    let values = values_of(store, &name, None, None).ok_or_else(|| {
        ApiError::bad_request(
            "unknown_payload",
            format!("no options for payload `{name}`; payloads with options: entry, service, kind, severity"),
        )
    })?;
    Ok(json!(values
        .iter()
        .map(|(value, text)| json!({"label": text, "value": value}))
        .collect::<Vec<_>>()))
}

#[derive(Deserialize, Default)]
#[serde(default)]
struct VariableRequest {
    payload: Option<Value>,
    target: Option<String>,
    range: RangeBody,
}

fn variable(store: &Store, r: VariableRequest) -> Result<Value, ApiError> {
    // `{"payload": {"target": "entries"}}`; older: `{"target": "entries"}`.
    let target = match &r.payload {
        Some(Value::Object(p)) => p.get("target").and_then(Value::as_str).map(str::to_owned),
        Some(Value::String(s)) => Some(s.clone()),
        _ => None,
    }
    .or(r.target)
    .unwrap_or_default();
    let (since, until) = r.range.bounds(SystemTime::now())?;
    let values = values_of(store, target.trim(), since, until).ok_or_else(|| {
        ApiError::bad_request(
            "unknown_variable",
            format!(
                "unknown variable query `{target}`; known: entries, services, kinds, severities"
            ),
        )
    })?;
    Ok(json!(values
        .iter()
        .map(|(value, text)| json!({"__text": text, "__value": value}))
        .collect::<Vec<_>>()))
}

#[derive(Deserialize)]
struct TagValuesRequest {
    key: String,
}

fn tag_values(store: &Store, r: TagValuesRequest) -> Result<Value, ApiError> {
    let values = TAG_KEYS
        .contains(&r.key.as_str())
        .then(|| values_of(store, &r.key, None, None))
        .flatten()
        .ok_or_else(|| {
            ApiError::bad_request(
                "unknown_tag_key",
                format!(
                    "unknown filter key `{}`; known: {}",
                    r.key,
                    TAG_KEYS.join(", ")
                ),
            )
        })?;
    // An ad-hoc filter's value is what it matches: the kind's name itself.
    Ok(json!(values
        .iter()
        .map(|(value, _)| json!({"text": value}))
        .collect::<Vec<_>>()))
}
