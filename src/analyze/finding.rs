//! What detectors report. A detector emits [`Observation`]s; the store merges
//! observations with the same kind and culprit into one finding.

use crate::model::{SpanId, Sym, TraceId};

/// What was found.
#[derive(
    Debug,
    Clone,
    Copy,
    PartialEq,
    Eq,
    Hash,
    PartialOrd,
    Ord,
    serde::Serialize,
    serde::Deserialize,
    utoipa::ToSchema,
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
}

impl FindingKind {
    pub const ALL: [FindingKind; 11] = [
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
        }
    }

    pub fn parse(text: &str) -> Option<FindingKind> {
        FindingKind::ALL.into_iter().find(|k| k.as_str() == text)
    }
}

/// How urgent: ordered, worst last.
#[derive(
    Debug,
    Clone,
    Copy,
    PartialEq,
    Eq,
    Hash,
    PartialOrd,
    Ord,
    serde::Serialize,
    serde::Deserialize,
    utoipa::ToSchema,
)]
#[serde(rename_all = "snake_case")]
pub enum Severity {
    Info,
    Warning,
    Critical,
}

impl Severity {
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
    Debug,
    Clone,
    Copy,
    PartialEq,
    Eq,
    Hash,
    PartialOrd,
    Ord,
    serde::Serialize,
    serde::Deserialize,
    utoipa::ToSchema,
)]
pub struct Culprit {
    pub service: Sym,
    pub operation: Sym,
    /// The callee or resource on the other side (a service, a database, a host).
    pub peer: Option<Sym>,
}

/// One hop of the chain from the entry point to the culprit.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize, utoipa::ToSchema)]
pub struct ChainHop {
    pub span_id: Option<SpanId>,
    pub service: Sym,
    pub operation: Sym,
    pub duration_ms: f64,
    pub timed_out: bool,
}

/// One detector's report about one trace or one window of traces.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
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
    pub evidence: serde_json::Value,
    /// Example traces (the store keeps the 10 most recent).
    pub trace_ids: Vec<TraceId>,
    /// How many occurrences this observation stands for (1 per trace).
    pub count: u64,
    /// When it was seen, from the data (unix ns): the trace's end, or the window's.
    pub seen_ns: u64,
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
