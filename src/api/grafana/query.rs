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

use serde::Deserialize;
use serde_json::{json, Value};

use super::super::params::unix_ns;
use super::super::{findings, hops};
use super::{ApiError, Payload, RangeBody, TAG_KEYS};
use crate::analyze::{EntryPoint, HopKey, HopKind};
use crate::store::{Finding, FindingFilter, Store};

/// What a metric answers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Answer {
    HopShare,
    HopLatency,
    FindingsOverTime,
    Findings,
    FindingsAnnotations,
    TimeoutBudget,
    SlowQueries,
    ServiceGraph,
}

/// A metric the datasource offers.
#[derive(Debug)]
pub struct Metric {
    answer: Answer,
    /// What a target names.
    pub name: &'static str,
    pub label: &'static str,
    /// Its payload options.
    pub payloads: &'static [&'static str],
}

/// Every metric, in the order `POST /grafana/metrics` lists them.
pub const METRICS: [Metric; 8] = [
    Metric {
        answer: Answer::HopShare,
        name: "hop_share",
        label: "Latency share per hop over time (entry point)",
        payloads: &["entry", "service"],
    },
    Metric {
        answer: Answer::HopLatency,
        name: "hop_latency",
        label: "Hop critical time p50/p95/p99 and share",
        payloads: &["entry", "service", "window"],
    },
    Metric {
        answer: Answer::FindingsOverTime,
        name: "findings_over_time",
        label: "Open findings over time by kind",
        payloads: &["kind", "service", "severity"],
    },
    Metric {
        answer: Answer::Findings,
        name: "findings",
        label: "Findings, worst first",
        payloads: &["kind", "service", "severity", "window", "limit"],
    },
    Metric {
        answer: Answer::FindingsAnnotations,
        name: "findings_annotations",
        label: "Findings as annotations",
        payloads: &["kind", "service", "severity"],
    },
    Metric {
        answer: Answer::TimeoutBudget,
        name: "timeout_budget",
        label: "Timeout budget map",
        payloads: &["entry", "service", "window"],
    },
    Metric {
        answer: Answer::SlowQueries,
        name: "slow_queries",
        label: "Slow queries: statement shapes by critical time",
        payloads: &["target", "service", "window", "limit"],
    },
    Metric {
        answer: Answer::ServiceGraph,
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
pub(super) struct Ctx {
    pub(super) store: Arc<Store>,
    /// The detectors' thresholds (the timeout budgets).
    pub(super) analysis: Arc<crate::analyze::Options>,
    pub(super) from_ns: u64,
    pub(super) to_ns: u64,
    interval_ns: u64,
    max_points: u64,
    pub(super) payload: Payload,
    conds: Vec<Cond>,
}

const DEFAULT_MAX_POINTS: u64 = 1_000;
const MAX_POINTS: u64 = 10_000;
const DEFAULT_LIMIT: usize = 100;
pub(super) const MINUTE_NS: u64 = 60_000_000_000;

pub(super) fn ms(ns: u64) -> u64 {
    ns / 1_000_000
}

pub(super) fn hop_label(key: &HopKey) -> String {
    match (key.kind, key.peer) {
        (HopKind::Wire, Some(peer)) => format!("{} {} → {peer} (wire)", key.service, key.operation),
        (HopKind::Queue, Some(peer)) => {
            format!("{} {} → {peer} (queued)", key.service, key.operation)
        }
        _ => format!("{} {}", key.service, key.operation),
    }
}

pub(super) fn entry_label(e: &EntryPoint) -> String {
    format!("{}:{}", e.service, e.operation)
}

impl Ctx {
    /// Whether the conditions on `key` accept an item with these values.
    pub(super) fn accepts(&self, key: &str, values: &[&str]) -> bool {
        self.conds
            .iter()
            .filter(|c| c.key == key)
            .all(|c| values.contains(&c.value.as_str()) != c.negate)
    }

    /// The first `=` value of `key`.
    pub(super) fn wanted(&self, key: &str) -> Option<&str> {
        self.conds
            .iter()
            .find(|c| c.key == key && !c.negate)
            .map(|c| c.value.as_str())
    }

    /// `[since, until)` of a table: the range, or `window` before its end.
    pub(super) fn window(&self) -> Result<(Option<u64>, Option<u64>), ApiError> {
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

    pub(super) fn limit(&self, max: usize) -> Result<usize, ApiError> {
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
    pub(super) fn buckets(&self, unit_ns: u64) -> Vec<(u64, u64)> {
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
    pub(super) fn stamp(&self, bucket_start: u64) -> u64 {
        ms(bucket_start.max(self.from_ns))
    }

    /// The entry point asked for (payload or filter), else the busiest in
    /// the range; `None` when the one asked for has no traces.
    pub(super) fn entry(&self) -> Result<Option<EntryPoint>, ApiError> {
        match self
            .payload
            .text("entry")
            .as_deref()
            .or(self.wanted("entry"))
        {
            Some(text) => hops::parse_entry(text),
            None => Ok(self
                .store
                .aggregates()
                .query(None, Some(self.from_ns), Some(self.to_ns))
                .into_iter()
                .find(|e| self.accepts("entry", &[&entry_label(&e.entry)]))
                .map(|e| e.entry)),
        }
    }

    pub(super) fn hop_accepted(&self, k: &HopKey) -> bool {
        let peer = k.peer.map_or("", |p| p.as_str());
        self.accepts("service", &[k.service.as_str(), peer])
    }

    /// Findings seen in `[since, until)` that the conditions accept, worst first.
    pub(super) fn findings(
        &self,
        since: Option<u64>,
        until: Option<u64>,
    ) -> Result<Vec<Finding>, ApiError> {
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
        let mut found = self.store.findings().list(&filter, usize::MAX);
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
}

/// Answers a `/query` body: per target, its series or its table, in order.
pub async fn query(
    store: Arc<Store>,
    analysis: Arc<crate::analyze::Options>,
    r: QueryRequest,
) -> Result<Value, ApiError> {
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
            analysis: analysis.clone(),
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
        let annotation = m.answer == Answer::FindingsAnnotations
            || (m.answer == Answer::Findings
                && (r.annotation.is_some() || t.ref_id.as_deref() == Some("Anno")));
        let c = ctx(t.payload);
        match m.answer {
            _ if annotation => out.push(c.annotations()?),
            Answer::HopShare => out.extend(c.hop_share()?),
            Answer::HopLatency => out.push(c.hop_latency()?),
            Answer::FindingsOverTime => out.extend(c.findings_over_time()?),
            Answer::Findings | Answer::FindingsAnnotations => out.push(c.findings_table()?),
            Answer::TimeoutBudget => out.push(c.timeout_budget().await?),
            Answer::SlowQueries => out.push(c.slow_queries().await?),
            Answer::ServiceGraph => out.push(c.service_graph()?),
        }
    }
    Ok(Value::Array(out))
}
