//! `POST /grafana/query` and the metrics it answers.
//!
//! The window is `range` (`from`/`to`; the last hour when absent). Time series
//! are bucketed by `intervalMs`, widened so there are at most `maxDataPoints`
//! (default 1,000) buckets, and never finer than their source: one minute for
//! `hop_share` (the aggregates' resolution). Each point is stamped with its
//! bucket's start, or `from` for the first bucket, so every point lies in the
//! range. A bucket without traces has no `hop_share` point.
//!
//! Ad-hoc filters (`filters`, or `adhocFilters` from older plugins) and the
//! target's payload narrow what is shown: `service`, `kind`, `severity` and
//! `entry`, with `=` or `!=` (a payload value is an `=`). A filter applies to
//! the metrics that have its key and is ignored by the others: `service`
//! matches a finding's culprit or chain, a hop's service or peer, an edge's
//! caller or callee, a budget's entry, caller or callee, and a statement's
//! calling services. Tables also take `window` (`15m`: that long before
//! `to`) and `limit`.
//!
//! Findings over time count, per kind and bucket, the findings whose first
//! and last sighting span the bucket: how many problems were open then.

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

use super::super::params::unix_ns;
use super::super::{edges, findings, hops, queries, timeouts};
use super::{ApiError, Payload, RangeBody, TAG_KEYS};
use crate::analyze::{EntryPoint, HopKey, HopKind};
use crate::store::{Finding, FindingFilter, Store};

/// A metric the datasource offers.
#[derive(Debug)]
pub struct Metric {
    /// What a target names.
    pub name: &'static str,
    pub label: &'static str,
    /// Its payload options.
    pub payloads: &'static [&'static str],
}

/// Every metric, in the order `POST /grafana/metrics` lists them.
pub const METRICS: [Metric; 8] = [
    Metric {
        name: "hop_share",
        label: "Latency share per hop over time (entry point)",
        payloads: &["entry", "service"],
    },
    Metric {
        name: "hop_latency",
        label: "Hop critical time p50/p95/p99 and share",
        payloads: &["entry", "service", "window"],
    },
    Metric {
        name: "findings_over_time",
        label: "Open findings over time by kind",
        payloads: &["kind", "service", "severity"],
    },
    Metric {
        name: "findings",
        label: "Findings, worst first",
        payloads: &["kind", "service", "severity", "window", "limit"],
    },
    Metric {
        name: "findings_annotations",
        label: "Findings as annotations",
        payloads: &["kind", "service", "severity"],
    },
    Metric {
        name: "timeout_budget",
        label: "Timeout budget map",
        payloads: &["entry", "service", "window"],
    },
    Metric {
        name: "slow_queries",
        label: "Slow queries: statement shapes by critical time",
        payloads: &["target", "service", "window", "limit"],
    },
    Metric {
        name: "service_graph",
        label: "Service graph: calls, errors, wire time per edge",
        payloads: &["service", "window"],
    },
];

/// The metric called `name`.
pub fn metric(name: &str) -> Result<&'static Metric, ApiError> {
    METRICS.iter().find(|m| m.name == name).ok_or_else(|| {
        let known: Vec<&str> = METRICS.iter().map(|m| m.name).collect();
        ApiError::bad_request(
            "unknown_metric",
            format!("unknown metric `{name}`; known: {}", known.join(", ")),
        )
    })
}

/// How the query editor shows a payload option.
fn payload_json(name: &str) -> Value {
    let (label, kind, placeholder) = match name {
        "entry" => (
            "Entry point",
            "select",
            "SERVICE:OPERATION (the busiest when empty)",
        ),
        "service" => ("Service", "select", "any service"),
        "kind" => ("Finding kind", "select", "any kind"),
        "severity" => ("Severity", "select", "any severity"),
        "target" => ("Database", "input", "system, address, namespace or label"),
        "window" => ("Window", "input", "the dashboard's range, or e.g. 15m"),
        _ => ("Limit", "input", "100"),
    };
    json!({"name": name, "label": label, "type": kind, "placeholder": placeholder})
}

/// The `POST /grafana/metrics` answer.
pub fn metrics_json() -> Value {
    Value::Array(
        METRICS
            .iter()
            .map(|m| {
                json!({
                    "label": m.label,
                    "value": m.name,
                    "payloads": m.payloads.iter().map(|p| payload_json(p)).collect::<Vec<_>>(),
                })
            })
            .collect(),
    )
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
struct Target {
    target: Option<String>,
    #[serde(rename = "refId")]
    ref_id: Option<String>,
    payload: Payload,
    hide: bool,
}

#[derive(Debug, Deserialize)]
struct AdhocFilter {
    key: String,
    #[serde(default)]
    operator: Option<String>,
    #[serde(default)]
    value: Value,
}

/// A `/query` body.
#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub struct QueryRequest {
    range: RangeBody,
    #[serde(rename = "intervalMs")]
    interval_ms: Option<f64>,
    #[serde(rename = "maxDataPoints")]
    max_data_points: Option<f64>,
    targets: Vec<Target>,
    filters: Vec<AdhocFilter>,
    #[serde(rename = "adhocFilters")]
    adhoc_filters: Vec<AdhocFilter>,
    /// Set by older plugins on annotation queries.
    annotation: Option<Value>,
}

/// One filter condition.
#[derive(Debug, Clone)]
struct Cond {
    key: String,
    negate: bool,
    value: String,
}

fn conds(filters: &[AdhocFilter]) -> Result<Vec<Cond>, ApiError> {
    filters
        .iter()
        .map(|f| {
            if !TAG_KEYS.contains(&f.key.as_str()) {
                return Err(ApiError::bad_request(
                    "unknown_tag_key",
                    format!(
                        "unknown filter key `{}`; known: {}",
                        f.key,
                        TAG_KEYS.join(", ")
                    ),
                ));
            }
            let negate = match f.operator.as_deref().unwrap_or("=") {
                "=" | "" => false,
                "!=" => true,
                other => {
                    return Err(ApiError::bad_request(
                        "unsupported_filter",
                        format!("filter operator `{other}` is not supported; use = or !="),
                    ))
                }
            };
            let value = match &f.value {
                Value::String(s) => s.clone(),
                other => other.to_string(),
            };
            Ok(Cond {
                key: f.key.clone(),
                negate,
                value,
            })
        })
        .collect()
}

/// What one target is asked in.
struct Ctx {
    store: Arc<Store>,
    from_ns: u64,
    to_ns: u64,
    interval_ns: u64,
    max_points: u64,
    payload: Payload,
    conds: Vec<Cond>,
}

const DEFAULT_MAX_POINTS: u64 = 1_000;
const MAX_POINTS: u64 = 10_000;
const DEFAULT_LIMIT: usize = 100;
const MINUTE_NS: u64 = 60_000_000_000;

fn ms(ns: u64) -> u64 {
    ns / 1_000_000
}

fn to_json<T: Serialize>(v: &T) -> Value {
    serde_json::to_value(v).unwrap_or(Value::Null)
}

/// A table answer.
fn table(columns: &[(&str, &str)], rows: Vec<Vec<Value>>) -> Value {
    json!({
        "type": "table",
        "columns": columns.iter().map(|(text, kind)| json!({"text": text, "type": kind})).collect::<Vec<_>>(),
        "rows": rows,
    })
}

/// The value at `pointer`, or null.
fn at(v: &Value, pointer: &str) -> Value {
    v.pointer(pointer).cloned().unwrap_or(Value::Null)
}

/// An RFC 3339 time at `pointer` as unix milliseconds.
fn time_at(v: &Value, pointer: &str) -> Value {
    v.pointer(pointer)
        .and_then(Value::as_str)
        .and_then(|t| humantime::parse_rfc3339_weak(t).ok())
        .map_or(Value::Null, |t| json!(ms(unix_ns(t))))
}

/// The texts of the list at `pointer`, joined.
fn joined_at(v: &Value, pointer: &str) -> Value {
    let items: Vec<&str> = v
        .pointer(pointer)
        .and_then(Value::as_array)
        .map(|a| a.iter().filter_map(Value::as_str).collect())
        .unwrap_or_default();
    json!(items.join(", "))
}

fn hop_label(key: &HopKey) -> String {
    match (key.kind, key.peer) {
        (HopKind::Wire, Some(peer)) => format!("{} {} → {peer} (wire)", key.service, key.operation),
        _ => format!("{} {}", key.service, key.operation),
    }
}

fn entry_label(e: &EntryPoint) -> String {
    format!("{}:{}", e.service, e.operation)
}

impl Ctx {
    /// Whether the conditions on `key` accept an item with these values.
    fn accepts(&self, key: &str, values: &[&str]) -> bool {
        self.conds
            .iter()
            .filter(|c| c.key == key)
            .all(|c| values.contains(&c.value.as_str()) != c.negate)
    }

    /// The first `=` value of `key`.
    fn wanted(&self, key: &str) -> Option<&str> {
        self.conds
            .iter()
            .find(|c| c.key == key && !c.negate)
            .map(|c| c.value.as_str())
    }

    /// `[since, until)` of a table: the range, or `window` before its end.
    fn window(&self) -> Result<(Option<u64>, Option<u64>), ApiError> {
        let since = match self.payload.text("window") {
            None => self.from_ns,
            Some(text) => {
                let d = humantime::parse_duration(&text).map_err(|e| {
                    ApiError::bad_request(
                        "invalid_payload",
                        format!("`window` must be a duration like 15m, got `{text}`: {e}"),
                    )
                })?;
                self.to_ns.saturating_sub(d.as_nanos() as u64)
            }
        };
        Ok((Some(since), Some(self.to_ns)))
    }

    fn limit(&self, max: usize) -> Result<usize, ApiError> {
        match self.payload.text("limit") {
            None => Ok(DEFAULT_LIMIT),
            Some(text) => text.parse::<usize>().map(|l| l.clamp(1, max)).map_err(|_| {
                ApiError::bad_request(
                    "invalid_payload",
                    format!("`limit` must be a whole number, got `{text}`"),
                )
            }),
        }
    }

    /// Time buckets `[start, end)` covering the range: at most `max_points`,
    /// at least `interval_ns` and `unit_ns` wide, aligned on `unit_ns`.
    fn buckets(&self, unit_ns: u64) -> Vec<(u64, u64)> {
        let start = self.from_ns - self.from_ns % unit_ns;
        let span = self.to_ns - start;
        let step = self
            .interval_ns
            .max(span.div_ceil(self.max_points))
            .max(unit_ns)
            .div_ceil(unit_ns)
            .saturating_mul(unit_ns);
        (0..span.div_ceil(step))
            .map(|i| {
                let at = |n: u64| start.saturating_add(n.saturating_mul(step));
                (at(i), at(i + 1))
            })
            .collect()
    }

    /// The timestamp of a bucket's point, in the range.
    fn stamp(&self, bucket_start: u64) -> u64 {
        ms(bucket_start.max(self.from_ns))
    }

    /// The entry point asked for (payload or filter), else the busiest in
    /// the range; `None` when the one asked for has no traces.
    fn entry(&self) -> Result<Option<EntryPoint>, ApiError> {
        match self
            .payload
            .text("entry")
            .as_deref()
            .or(self.wanted("entry"))
        {
            Some(text) => hops::parse_entry(text),
            None => Ok(self
                .store
                .aggregates
                .query(None, Some(self.from_ns), Some(self.to_ns))
                .into_iter()
                .find(|e| self.accepts("entry", &[&entry_label(&e.entry)]))
                .map(|e| e.entry)),
        }
    }

    fn hop_share(&self) -> Result<Vec<Value>, ApiError> {
        let Some(entry) = self.entry()? else {
            return Ok(Vec::new());
        };
        let aggregates = &self.store.aggregates;
        let Some(overall) = aggregates
            .query(Some(entry), Some(self.from_ns), Some(self.to_ns))
            .pop()
        else {
            return Ok(Vec::new());
        };
        let keys: Vec<HopKey> = overall
            .hops
            .iter()
            .map(|h| h.key)
            .filter(|k| self.hop_accepted(k))
            .collect();
        let mut series: Vec<Vec<Value>> = vec![Vec::new(); keys.len()];
        for (start, end) in self.buckets(MINUTE_NS) {
            let Some(e) = aggregates.query(Some(entry), Some(start), Some(end)).pop() else {
                continue;
            };
            let t = self.stamp(start);
            for (key, points) in keys.iter().zip(&mut series) {
                let share = e
                    .hops
                    .iter()
                    .find(|h| h.key == *key)
                    .map_or(0.0, |h| h.share);
                points.push(json!([share, t]));
            }
        }
        Ok(keys
            .iter()
            .zip(series)
            .map(|(k, points)| json!({"target": hop_label(k), "datapoints": points}))
            .collect())
    }

    fn hop_accepted(&self, k: &HopKey) -> bool {
        let peer = k.peer.map_or("", |p| p.as_str());
        self.accepts("service", &[k.service.as_str(), peer])
    }

    fn hop_latency(&self) -> Result<Value, ApiError> {
        let (since, until) = self.window()?;
        let entries = match self
            .payload
            .text("entry")
            .as_deref()
            .or(self.wanted("entry"))
        {
            Some(text) => match hops::parse_entry(text)? {
                Some(e) => self.store.aggregates.query(Some(e), since, until),
                None => Vec::new(),
            },
            None => self.store.aggregates.query(None, since, until),
        };
        let mut rows = Vec::new();
        for e in entries
            .iter()
            .filter(|e| self.accepts("entry", &[&entry_label(&e.entry)]))
        {
            let body = to_json(&hops::entry_body(e));
            for (stats, hop) in e
                .hops
                .iter()
                .zip(body["hops"].as_array().into_iter().flatten())
            {
                if !self.hop_accepted(&stats.key) {
                    continue;
                }
                rows.push(vec![
                    json!(entry_label(&e.entry)),
                    json!(hop_label(&stats.key)),
                    at(hop, "/kind"),
                    at(hop, "/service"),
                    at(hop, "/operation"),
                    at(hop, "/peer"),
                    at(hop, "/traces"),
                    at(hop, "/share"),
                    at(hop, "/critical_p50_ms"),
                    at(hop, "/critical_p95_ms"),
                    at(hop, "/critical_p99_ms"),
                    at(hop, "/critical_ms"),
                ]);
            }
        }
        Ok(table(
            &[
                ("Entry", "string"),
                ("Hop", "string"),
                ("Kind", "string"),
                ("Service", "string"),
                ("Operation", "string"),
                ("Peer", "string"),
                ("Traces", "number"),
                ("Share", "number"),
                ("Critical p50 ms", "number"),
                ("Critical p95 ms", "number"),
                ("Critical p99 ms", "number"),
                ("Critical ms", "number"),
            ],
            rows,
        ))
    }

    /// Findings seen in `[since, until)` that the conditions accept, worst first.
    fn findings(&self, since: Option<u64>, until: Option<u64>) -> Result<Vec<Finding>, ApiError> {
        for c in &self.conds {
            match c.key.as_str() {
                "kind" => {
                    findings::parse_kind(Some(&c.value))?;
                }
                "severity" => {
                    findings::parse_severity(Some(&c.value))?;
                }
                _ => {}
            }
        }
        let filter = FindingFilter {
            since_ns: since,
            until_ns: until,
            ..FindingFilter::default()
        };
        let mut found = self.store.findings.list(&filter, usize::MAX);
        found.retain(|f| {
            let o = &f.latest;
            let mut services = vec![o.culprit.service.as_str()];
            services.extend(o.chain.iter().map(|h| h.service.as_str()));
            self.accepts("service", &services)
                && self.accepts("kind", &[o.kind.as_str()])
                && self.accepts("severity", &[o.severity.as_str()])
        });
        Ok(found)
    }

    fn findings_table(&self) -> Result<Value, ApiError> {
        let (since, until) = self.window()?;
        let mut found = self.findings(since, until)?;
        found.truncate(self.limit(findings::MAX_LIMIT)?);
        let rows = found
            .into_iter()
            .map(|f| {
                let b = to_json(&findings::FindingBody::from(f));
                vec![
                    time_at(&b, "/last_seen"),
                    at(&b, "/severity"),
                    at(&b, "/kind"),
                    at(&b, "/culprit/service"),
                    at(&b, "/culprit/operation"),
                    at(&b, "/culprit/peer"),
                    at(&b, "/summary"),
                    at(&b, "/remedy"),
                    at(&b, "/count"),
                    time_at(&b, "/first_seen"),
                    at(&b, "/id"),
                    at(&b, "/trace_ids/0"),
                ]
            })
            .collect();
        Ok(table(
            &[
                ("Last seen", "time"),
                ("Severity", "string"),
                ("Kind", "string"),
                ("Service", "string"),
                ("Operation", "string"),
                ("Peer", "string"),
                ("Summary", "string"),
                ("Remedy", "string"),
                ("Count", "number"),
                ("First seen", "time"),
                ("Id", "string"),
                ("Example trace", "string"),
            ],
            rows,
        ))
    }

    /// Findings as annotations: one region per finding, from its first to its
    /// last sighting.
    fn annotations(&self) -> Result<Value, ApiError> {
        let found = self.findings(Some(self.from_ns), Some(self.to_ns))?;
        let rows = found
            .into_iter()
            .map(|f| {
                let b = to_json(&findings::FindingBody::from(f));
                let (kind, severity) = (at(&b, "/kind"), at(&b, "/severity"));
                let (kind, severity) =
                    (kind.as_str().unwrap_or(""), severity.as_str().unwrap_or(""));
                let service = at(&b, "/culprit/service");
                let service = service.as_str().unwrap_or("");
                let operation = at(&b, "/culprit/operation");
                let text = format!(
                    "{}\n{}",
                    b["summary"].as_str().unwrap_or(""),
                    b["remedy"].as_str().unwrap_or("")
                );
                vec![
                    time_at(&b, "/first_seen"),
                    time_at(&b, "/last_seen"),
                    json!(format!(
                        "{severity} {kind}: {service} {}",
                        operation.as_str().unwrap_or("")
                    )),
                    json!(text),
                    json!(format!("{kind},{severity},{service}")),
                ]
            })
            .collect();
        Ok(table(
            &[
                ("time", "time"),
                ("timeEnd", "time"),
                ("title", "string"),
                ("text", "string"),
                ("tags", "string"),
            ],
            rows,
        ))
    }

    fn findings_over_time(&self) -> Result<Vec<Value>, ApiError> {
        let found = self.findings(Some(self.from_ns), Some(self.to_ns))?;
        let buckets = self.buckets(1_000_000_000);
        let mut out = Vec::new();
        for kind in crate::analyze::FindingKind::ALL {
            let of_kind: Vec<&Finding> = found.iter().filter(|f| f.latest.kind == kind).collect();
            if of_kind.is_empty() {
                continue;
            }
            let points: Vec<Value> = buckets
                .iter()
                .map(|&(start, end)| {
                    let open = of_kind
                        .iter()
                        .filter(|f| f.first_seen_ns < end && f.latest.seen_ns >= start)
                        .count();
                    json!([open, self.stamp(start)])
                })
                .collect();
            out.push(json!({"target": kind.as_str(), "datapoints": points}));
        }
        Ok(out)
    }

    async fn timeout_budget(&self) -> Result<Value, ApiError> {
        let (since, until) = self.window()?;
        let entry = self
            .payload
            .text("entry")
            .or(self.wanted("entry").map(str::to_owned));
        let budgets = timeouts::budgets(self.store.clone(), entry.as_deref(), since, until).await?;
        let mut rows = Vec::new();
        for b in budgets.iter().map(to_json) {
            let service = at(&b, "/entry/service");
            let service = service.as_str().unwrap_or("");
            let operation = at(&b, "/entry/operation");
            let entry = format!("{service}:{}", operation.as_str().unwrap_or(""));
            if !self.accepts("entry", &[&entry]) {
                continue;
            }
            let kinds = |v: &Value| -> Value {
                let kinds: Vec<&str> = v
                    .as_array()
                    .into_iter()
                    .flatten()
                    .filter_map(|x| x["kind"].as_str())
                    .collect();
                json!(kinds.join(", "))
            };
            if self.accepts("service", &[service]) {
                rows.push(vec![
                    json!(entry),
                    at(&b, "/timeout_ms"),
                    at(&b, "/layer"),
                    json!(service),
                    Value::Null,
                    operation.clone(),
                    json!(0),
                    at(&b, "/timeout_ms"),
                    Value::Null,
                    at(&b, "/traces"),
                    at(&b, "/timed_out"),
                    at(&b, "/p95_ms"),
                    kinds(&b["violations"]),
                ]);
            }
            for e in b["edges"].as_array().into_iter().flatten() {
                let caller = e["caller"].as_str().unwrap_or("");
                let callee = e["callee"].as_str().unwrap_or("");
                if !self.accepts("service", &[service, caller, callee]) {
                    continue;
                }
                rows.push(vec![
                    json!(entry),
                    at(&b, "/timeout_ms"),
                    at(&b, "/layer"),
                    at(e, "/caller"),
                    at(e, "/callee"),
                    at(e, "/operation"),
                    at(e, "/depth"),
                    at(e, "/timeout_ms"),
                    at(e, "/budget_left_ms"),
                    at(e, "/calls"),
                    at(e, "/timed_out"),
                    at(e, "/p95_ms"),
                    kinds(&e["violations"]),
                ]);
            }
        }
        Ok(table(
            &[
                ("Entry", "string"),
                ("Entry timeout ms", "number"),
                ("Layer", "string"),
                ("Caller", "string"),
                ("Callee", "string"),
                ("Operation", "string"),
                ("Depth", "number"),
                ("Timeout ms", "number"),
                ("Budget left ms", "number"),
                ("Calls", "number"),
                ("Timed out", "number"),
                ("p95 ms", "number"),
                ("Violations", "string"),
            ],
            rows,
        ))
    }

    async fn slow_queries(&self) -> Result<Value, ApiError> {
        let (since, until) = self.window()?;
        let limit = self.limit(queries::MAX_LIMIT)?;
        let target = self.payload.text("target");
        let shapes = queries::shapes(
            self.store.clone(),
            target.as_deref(),
            since,
            until,
            queries::MAX_LIMIT,
        )
        .await?;
        let rows = shapes
            .iter()
            .map(to_json)
            .filter(|q| {
                let services: Vec<&str> = q["services"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .filter_map(Value::as_str)
                    .collect();
                self.accepts("service", &services)
            })
            .take(limit)
            .map(|q| {
                let target: Vec<&str> = ["system", "address", "namespace"]
                    .iter()
                    .filter_map(|k| q["target"][k].as_str())
                    .collect();
                vec![
                    at(&q, "/statement"),
                    json!(target.join(" ")),
                    joined_at(&q, "/services"),
                    at(&q, "/count"),
                    at(&q, "/p50_ms"),
                    at(&q, "/p95_ms"),
                    at(&q, "/max_ms"),
                    at(&q, "/total_ms"),
                    at(&q, "/critical_ms"),
                    at(&q, "/critical_share"),
                    at(&q, "/trace_ids/0"),
                ]
            })
            .collect();
        Ok(table(
            &[
                ("Statement", "string"),
                ("Database", "string"),
                ("Services", "string"),
                ("Count", "number"),
                ("p50 ms", "number"),
                ("p95 ms", "number"),
                ("Max ms", "number"),
                ("Total ms", "number"),
                ("Critical ms", "number"),
                ("Critical share", "number"),
                ("Example trace", "string"),
            ],
            rows,
        ))
    }

    fn service_graph(&self) -> Result<Value, ApiError> {
        let (since, until) = self.window()?;
        let rows = edges::edges(&self.store, since, until)
            .iter()
            .map(to_json)
            .filter(|e| {
                let caller = e["caller"].as_str().unwrap_or("");
                let callee = e["callee"].as_str().unwrap_or("");
                self.accepts("service", &[caller, callee])
            })
            .map(|e| {
                let calls = e["calls"].as_f64().unwrap_or(0.0);
                let errors = e["errors"].as_f64().unwrap_or(0.0);
                vec![
                    at(&e, "/caller"),
                    at(&e, "/callee"),
                    at(&e, "/calls"),
                    at(&e, "/errors"),
                    json!(if calls > 0.0 { errors / calls } else { 0.0 }),
                    at(&e, "/wire_ms"),
                    at(&e, "/wire_p50_ms"),
                    at(&e, "/wire_p95_ms"),
                    at(&e, "/critical_wire_ms"),
                ]
            })
            .collect();
        Ok(table(
            &[
                ("Caller", "string"),
                ("Callee", "string"),
                ("Calls", "number"),
                ("Errors", "number"),
                ("Error rate", "number"),
                ("Wire ms", "number"),
                ("Wire p50 ms", "number"),
                ("Wire p95 ms", "number"),
                ("Critical wire ms", "number"),
            ],
            rows,
        ))
    }
}

/// Answers a `/query` body: per target, its series or its table, in order.
pub async fn query(store: Arc<Store>, r: QueryRequest) -> Result<Value, ApiError> {
    let now = SystemTime::now();
    let (from, to) = r.range.bounds(now)?;
    let to_ns = to.unwrap_or_else(|| unix_ns(now));
    let from_ns =
        from.unwrap_or_else(|| to_ns.saturating_sub(Duration::from_secs(3600).as_nanos() as u64));
    if from_ns >= to_ns {
        return Err(ApiError::bad_request(
            "invalid_range",
            "`range.from` must be before `range.to`",
        ));
    }
    let filters: Vec<AdhocFilter> = r.filters.into_iter().chain(r.adhoc_filters).collect();
    let filters = conds(&filters)?;
    let positive = |v: Option<f64>| v.filter(|x| x.is_finite() && *x > 0.0);
    let max_points = positive(r.max_data_points)
        .map_or(DEFAULT_MAX_POINTS, |m| m as u64)
        .clamp(1, MAX_POINTS);
    let interval_ns = positive(r.interval_ms).map_or(0, |ms| (ms * 1e6) as u64);
    let ctx = |payload: Payload| -> Ctx {
        let mut conds = filters.clone();
        for key in TAG_KEYS {
            if let Some(value) = payload.text(key) {
                conds.push(Cond {
                    key: key.to_owned(),
                    negate: false,
                    value,
                });
            }
        }
        Ctx {
            store: store.clone(),
            from_ns,
            to_ns,
            interval_ns,
            max_points,
            payload,
            conds,
        }
    };

    let mut out = Vec::new();
    let targets: Vec<Target> = r
        .targets
        .into_iter()
        .filter(|t| !t.hide && t.target.as_deref().is_some_and(|n| !n.trim().is_empty()))
        .collect();
    if targets.is_empty() && r.annotation.is_some() {
        out.push(ctx(Payload::default()).annotations()?);
    }
    for t in targets {
        let name = t.target.as_deref().unwrap_or_default().trim();
        let m = metric(name)?;
        let annotation = m.name == "findings_annotations"
            || (m.name == "findings"
                && (r.annotation.is_some() || t.ref_id.as_deref() == Some("Anno")));
        let c = ctx(t.payload);
        match m.name {
            _ if annotation => out.push(c.annotations()?),
            "hop_share" => out.extend(c.hop_share()?),
            "hop_latency" => out.push(c.hop_latency()?),
            "findings_over_time" => out.extend(c.findings_over_time()?),
            "findings" => out.push(c.findings_table()?),
            "timeout_budget" => out.push(c.timeout_budget().await?),
            "slow_queries" => out.push(c.slow_queries().await?),
            _ => out.push(c.service_graph()?),
        }
    }
    Ok(Value::Array(out))
}
