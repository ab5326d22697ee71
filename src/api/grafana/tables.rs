//! The tables: each row picks fields of the `/api/v1` JSON body of the
//! same data, so both show the same numbers in the same units.

use serde::Serialize;
use serde_json::{json, Value};

use super::super::params::unix_ns;
use super::super::{edges, findings, hops, queries, timeouts};
use super::query::{entry_label, hop_label, ms, Ctx};
use super::ApiError;

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

impl Ctx {
    /// Per entry point and hop: critical time quantiles, share, traces.
    pub(super) fn hop_latency(&self) -> Result<Value, ApiError> {
        let (since, until) = self.window()?;
        let entries = match self
            .payload
            .text("entry")
            .as_deref()
            .or(self.wanted("entry"))
        {
            Some(text) => match hops::parse_entry(text)? {
                Some(e) => self.store.aggregates().query(Some(e), since, until),
                None => Vec::new(),
            },
            None => self.store.aggregates().query(None, since, until),
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

    /// The findings of the window, worst first, at most `limit`: the
    /// finding, then where in the source, its critical time and share (the
    /// per-request patterns: in one request), and the thresholds it crossed.
    pub(super) fn findings_table(&self) -> Result<Value, ApiError> {
        let (since, until) = self.window()?;
        let mut found = self.findings(since, until)?;
        found.truncate(self.limit(findings::MAX_LIMIT)?);
        let rows = found
            .into_iter()
            .map(|f| {
                let o = &f.latest;
                let location = o.location.as_ref().map(findings::location_text);
                let crossed: Vec<String> = o.crossed.iter().map(findings::crossed_text).collect();
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
                    json!(location),
                    at(&b, "/evidence/critical_ms"),
                    at(&b, "/evidence/critical_share"),
                    json!(crossed.join("; ")),
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
                ("Location", "string"),
                ("Critical ms", "number"),
                ("Critical share", "number"),
                ("Crossed", "string"),
            ],
            rows,
        ))
    }

    /// Findings as annotations: one region per finding, from its first to its
    /// last sighting.
    pub(super) fn annotations(&self) -> Result<Value, ApiError> {
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

    /// Per entry point a row of its own timeout, then a row per edge.
    pub(super) async fn timeout_budget(&self) -> Result<Value, ApiError> {
        let (since, until) = self.window()?;
        let entry = self
            .payload
            .text("entry")
            .or(self.wanted("entry").map(str::to_owned));
        let budgets = timeouts::budgets(
            self.store.detection(),
            self.analysis.clone(),
            entry.as_deref(),
            since,
            until,
        )
        .await?;
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

    /// Statement shapes by critical time, at most `limit`.
    pub(super) async fn slow_queries(&self) -> Result<Value, ApiError> {
        let (since, until) = self.window()?;
        let limit = self.limit(queries::MAX_LIMIT)?;
        let target = self.payload.text("target");
        let shapes = queries::shapes(
            self.store.detection(),
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

    /// Caller → callee edges, the most called first.
    pub(super) fn service_graph(&self) -> Result<Value, ApiError> {
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
