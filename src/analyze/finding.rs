//! What detectors report. A detector emits [`Observation`]s; the store merges
//! observations with the same kind and culprit into one finding.

use std::sync::LazyLock;

use serde::de::{self, MapAccess, Visitor};
use serde::{Deserialize, Deserializer};

use super::evidence::Evidence;
use crate::model::{AttrValue, Found, SpanId, Sym, Trace, TraceId};

/// What was found.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize, serde::Deserialize,
)]
#[serde(rename_all = "snake_case")]
pub enum FindingKind {
    CascadingTimeout,
    DeadlineNotPropagated,
    TimeoutInversion,
    GatewayTimeout,
    TimeoutHeadroom,
    SlowQuery,
    SlowHealthCheck,
    ColdStart,
    PoolExhaustion,
    BlockedWorker,
    LockContention,
    NPlusOne,
    SerialCalls,
    RedundantCall,
    ChattyEdge,
    ExcessiveFanout,
}

impl FindingKind {
    pub const ALL: [FindingKind; 16] = [
        FindingKind::CascadingTimeout,
        FindingKind::DeadlineNotPropagated,
        FindingKind::TimeoutInversion,
        FindingKind::GatewayTimeout,
        FindingKind::TimeoutHeadroom,
        FindingKind::SlowQuery,
        FindingKind::SlowHealthCheck,
        FindingKind::ColdStart,
        FindingKind::PoolExhaustion,
        FindingKind::BlockedWorker,
        FindingKind::LockContention,
        FindingKind::NPlusOne,
        FindingKind::SerialCalls,
        FindingKind::RedundantCall,
        FindingKind::ChattyEdge,
        FindingKind::ExcessiveFanout,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            FindingKind::CascadingTimeout => "cascading_timeout",
            FindingKind::DeadlineNotPropagated => "deadline_not_propagated",
            FindingKind::TimeoutInversion => "timeout_inversion",
            FindingKind::GatewayTimeout => "gateway_timeout",
            FindingKind::TimeoutHeadroom => "timeout_headroom",
            FindingKind::SlowQuery => "slow_query",
            FindingKind::SlowHealthCheck => "slow_health_check",
            FindingKind::ColdStart => "cold_start",
            FindingKind::PoolExhaustion => "pool_exhaustion",
            FindingKind::BlockedWorker => "blocked_worker",
            FindingKind::LockContention => "lock_contention",
            FindingKind::NPlusOne => "n_plus_one",
            FindingKind::SerialCalls => "serial_calls",
            FindingKind::RedundantCall => "redundant_call",
            FindingKind::ChattyEdge => "chatty_edge",
            FindingKind::ExcessiveFanout => "excessive_fanout",
        }
    }

    pub fn parse(text: &str) -> Option<FindingKind> {
        FindingKind::ALL.into_iter().find(|k| k.as_str() == text)
    }
}

/// How urgent: ordered, worst last.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize, serde::Deserialize,
)]
#[serde(rename_all = "snake_case")]
pub enum Severity {
    Info,
    Warning,
    Critical,
}

impl Severity {
    /// Every severity, least urgent first.
    pub const ALL: [Severity; 3] = [Severity::Info, Severity::Warning, Severity::Critical];

    pub fn as_str(self) -> &'static str {
        match self {
            Severity::Info => "info",
            Severity::Warning => "warning",
            Severity::Critical => "critical",
        }
    }

    pub fn parse(text: &str) -> Option<Severity> {
        match text {
            "info" => Some(Severity::Info),
            "warning" => Some(Severity::Warning),
            "critical" => Some(Severity::Critical),
            _ => None,
        }
    }
}

/// The hop a finding blames.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize, serde::Deserialize,
)]
pub struct Culprit {
    pub service: Sym,
    pub operation: Sym,
    /// The callee or resource on the other side (a service, a database, a host).
    pub peer: Option<Sym>,
}

/// One hop of the chain from the entry point to the culprit.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct ChainHop {
    pub span_id: Option<SpanId>,
    pub service: Sym,
    pub operation: Sym,
    pub duration_ms: f64,
    pub timed_out: bool,
}

impl ChainHop {
    /// The hop of span `span` of `trace`.
    pub fn of(trace: &Trace, span: u32, timed_out: bool) -> ChainHop {
        let s = trace.span(span);
        ChainHop {
            span_id: Some(s.span_id),
            service: s.service,
            operation: s.operation,
            duration_ms: ms(s.duration_ns()),
            timed_out,
        }
    }

    /// The hops from the entry point down to `span`; `timed_out` per span.
    pub fn path(trace: &Trace, span: u32, timed_out: &[bool]) -> Vec<ChainHop> {
        let mut path = vec![span];
        let mut at = span;
        while let Some(p) = trace.parent[at as usize] {
            path.push(p);
            at = p;
        }
        path.iter()
            .rev()
            .map(|&s| ChainHop::of(trace, s, timed_out[s as usize]))
            .collect()
    }
}

/// One detector's report about one trace or one window of traces.
///
/// Its [`Evidence`] is of its `kind` ([`Evidence::kind`]); reading one back
/// (the state file) reads `kind` first and the evidence as that kind's.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct Observation {
    pub kind: FindingKind,
    pub severity: Severity,
    pub culprit: Culprit,
    pub chain: Vec<ChainHop>,
    /// One plain sentence a person can act on.
    pub summary: String,
    /// One line: what to change.
    pub remedy: String,
    /// Kind-specific numbers.
    pub evidence: Evidence,
    /// Example traces (the store keeps the 10 most recent).
    pub trace_ids: Vec<TraceId>,
    /// How many occurrences this observation stands for (1 per trace).
    pub count: u64,
    /// When it was seen, from the data (unix ns): the trace's end, or the window's.
    pub seen_ns: u64,
    /// The configured thresholds the observation crossed.
    #[serde(default)]
    pub crossed: Vec<Crossed>,
    /// Where in the source the culprit's calls are made, when its spans carry
    /// the `code.*` attributes.
    #[serde(default)]
    pub location: Option<CodeLocation>,
    /// The spans of the observed trace the pattern is made of (per-trace
    /// detectors), for marking them on the trace page; not kept with the finding.
    #[serde(skip)]
    pub spans: Vec<SpanId>,
}

/// The fields of a stored [`Observation`].
#[derive(Deserialize)]
#[serde(field_identifier, rename_all = "snake_case")]
enum Field {
    Kind,
    Severity,
    Culprit,
    Chain,
    Summary,
    Remedy,
    Evidence,
    TraceIds,
    Count,
    SeenNs,
    Crossed,
    Location,
    #[serde(other)]
    Unknown,
}

impl<'de> Deserialize<'de> for Observation {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Observation, D::Error> {
        d.deserialize_struct("Observation", FIELDS, ObservationVisitor)
    }
}

const FIELDS: &[&str] = &[
    "kind",
    "severity",
    "culprit",
    "chain",
    "summary",
    "remedy",
    "evidence",
    "trace_ids",
    "count",
    "seen_ns",
    "crossed",
    "location",
];

struct ObservationVisitor;

/// Reads the evidence of the kind read before it.
struct EvidenceOf(FindingKind);

impl<'de> de::DeserializeSeed<'de> for EvidenceOf {
    type Value = Evidence;

    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<Evidence, D::Error> {
        Evidence::deserialize_as(self.0, d)
    }
}

impl<'de> Visitor<'de> for ObservationVisitor {
    type Value = Observation;

    fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("an observation")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Observation, A::Error> {
        let mut kind = None;
        let mut severity = None;
        let mut culprit = None;
        let mut chain = None;
        let mut summary = None;
        let mut remedy = None;
        let mut evidence = None;
        let mut trace_ids = None;
        let mut count = None;
        let mut seen_ns = None;
        let mut crossed = None;
        let mut location = None;
        while let Some(field) = map.next_key()? {
            match field {
                Field::Kind => kind = Some(map.next_value()?),
                Field::Severity => severity = Some(map.next_value()?),
                Field::Culprit => culprit = Some(map.next_value()?),
                Field::Chain => chain = Some(map.next_value()?),
                Field::Summary => summary = Some(map.next_value()?),
                Field::Remedy => remedy = Some(map.next_value()?),
                Field::Evidence => {
                    let kind = kind.ok_or_else(|| de::Error::custom("`kind` after `evidence`"))?;
                    evidence = Some(map.next_value_seed(EvidenceOf(kind))?);
                }
                Field::TraceIds => trace_ids = Some(map.next_value()?),
                Field::Count => count = Some(map.next_value()?),
                Field::SeenNs => seen_ns = Some(map.next_value()?),
                Field::Crossed => crossed = Some(map.next_value()?),
                Field::Location => location = Some(map.next_value()?),
                Field::Unknown => {
                    map.next_value::<de::IgnoredAny>()?;
                }
            }
        }
        let missing = de::Error::missing_field;
        Ok(Observation {
            kind: kind.ok_or_else(|| missing("kind"))?,
            severity: severity.ok_or_else(|| missing("severity"))?,
            culprit: culprit.ok_or_else(|| missing("culprit"))?,
            chain: chain.ok_or_else(|| missing("chain"))?,
            summary: summary.ok_or_else(|| missing("summary"))?,
            remedy: remedy.ok_or_else(|| missing("remedy"))?,
            evidence: evidence.ok_or_else(|| missing("evidence"))?,
            trace_ids: trace_ids.ok_or_else(|| missing("trace_ids"))?,
            count: count.ok_or_else(|| missing("count"))?,
            seen_ns: seen_ns.ok_or_else(|| missing("seen_ns"))?,
            crossed: crossed.unwrap_or_default(),
            location: location.unwrap_or_default(),
            spans: Vec::new(),
        })
    }
}

/// One threshold an observation crossed: its key in the `[detectors]`
/// configuration, its configured limit and the value observed.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Crossed {
    /// The key under `[detectors]`, e.g. `n_plus_one.min_calls`.
    pub threshold: String,
    pub limit: f64,
    pub value: f64,
}

impl Crossed {
    pub fn new(threshold: &str, limit: impl Into<f64>, value: impl Into<f64>) -> Crossed {
        Crossed {
            threshold: threshold.to_owned(),
            limit: limit.into(),
            value: value.into(),
        }
    }
}

/// Where in the source code a span was made (`code.file.path`,
/// `code.line.number`, `code.function.name`, or the older `code.filepath`,
/// `code.lineno`, `code.function`; `code.namespace`).
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct CodeLocation {
    pub file: Option<String>,
    pub line: Option<u32>,
    pub function: Option<String>,
    pub namespace: Option<String>,
}

/// The `code.*` keys, current names before the older ones.
static CODE_KEYS: LazyLock<[Sym; 7]> = LazyLock::new(|| {
    [
        "code.file.path",
        "code.filepath",
        "code.line.number",
        "code.lineno",
        "code.function.name",
        "code.function",
        "code.namespace",
    ]
    .map(Sym::new)
});

impl CodeLocation {
    /// Where span `span` of `trace` was made, when it carries a file or a
    /// function (a line alone says nothing).
    pub fn of(trace: &Trace, span: u32) -> Option<CodeLocation> {
        let [file, filepath, line, lineno, function, old_function, namespace] =
            trace.arena.find(trace.span(span).attrs, *CODE_KEYS);
        let text = |f: Option<Found<'_>>| {
            f.and_then(|v| v.text())
                .filter(|t| !t.is_empty())
                .map(str::to_owned)
        };
        let number = |f: Option<Found<'_>>| match f? {
            Found::Value(AttrValue::Int(n)) => u32::try_from(n).ok(),
            other => other.text()?.trim().parse().ok(),
        };
        let location = CodeLocation {
            file: text(file).or_else(|| text(filepath)),
            line: number(line).or_else(|| number(lineno)),
            function: text(function).or_else(|| text(old_function)),
            namespace: text(namespace),
        };
        (location.file.is_some() || location.function.is_some()).then_some(location)
    }
}

/// Nanoseconds as milliseconds, for evidence and sentences.
pub(crate) fn ms(ns: u64) -> f64 {
    ns as f64 / 1e6
}

/// A finding's stable id: FNV-1a over its kind and culprit, so the same problem
/// keeps its id across observations and restarts.
pub fn finding_id(kind: FindingKind, culprit: &Culprit) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    let peer = culprit.peer.map_or("", |p| p.as_str());
    for part in [
        kind.as_str(),
        culprit.service.as_str(),
        culprit.operation.as_str(),
        peer,
    ] {
        for b in part.bytes().chain([0xff]) {
            h ^= b as u64;
            h = h.wrapping_mul(0x0100_0000_01b3);
        }
    }
    h
}
