//! The numbers behind each finding, typed: one [`Evidence`] variant per
//! [`FindingKind`], each holding that kind's payload.
//!
//! Format-neutral: a payload serialises (`serde`) as the object it holds, with
//! the field names the API has always shown under `evidence`; the API turns it
//! into JSON (`crate::api`). Reading one back needs its kind, which the
//! observation stores next to it: [`Evidence::deserialize_as`].

use serde::{Deserialize, Deserializer, Serialize};

use super::budget::{EdgeKey, Layer, Outer};
use super::finding::{ms, ChainHop, FindingKind};
use super::saturation::DbTarget;
use super::EntryPoint;
use crate::model::Sym;

macro_rules! evidence {
    ($($kind:ident($payload:ty)),* $(,)?) => {
        /// What one observation measured, by finding kind.
        #[derive(Debug, Clone, PartialEq, Serialize)]
        #[serde(untagged)]
        pub enum Evidence {
            $(
                #[doc = concat!("Evidence of [`FindingKind::", stringify!($kind), "`].")]
                $kind($payload),
            )*
        }

        impl Evidence {
            /// The finding kind this evidence is of.
            pub fn kind(&self) -> FindingKind {
                match self {
                    $(Evidence::$kind(_) => FindingKind::$kind,)*
                }
            }

            /// Reads the payload of a `kind` finding.
            pub fn deserialize_as<'de, D: Deserializer<'de>>(
                kind: FindingKind,
                d: D,
            ) -> Result<Evidence, D::Error> {
                Ok(match kind {
                    $(FindingKind::$kind => Evidence::$kind(<$payload>::deserialize(d)?),)*
                })
            }
        }
    };
}

evidence! {
    CascadingTimeout(Cascade),
    DeadlineNotPropagated(NotPropagated),
    TimeoutInversion(Inversion),
    GatewayTimeout(Gateway),
    TimeoutHeadroom(Headroom),
    SlowQuery(SlowQuery),
    SlowHealthCheck(SlowHealthCheck),
    ColdStart(ColdStart),
    PoolExhaustion(PoolExhaustion),
    BlockedWorker(BlockedWorker),
    LockContention(LockContention),
    NPlusOne(NPlusOne),
    SerialCalls(SerialCalls),
    RedundantCall(RedundantCall),
    ChattyEdge(ChattyEdge),
    ExcessiveFanout(ExcessiveFanout),
}

impl Evidence {
    /// The requests' critical-path time the finding costs, in ms: the
    /// per-request patterns' (N+1, serial, redundant, chatty, fan-out) and a
    /// slow query's; `None` for the other kinds.
    pub fn critical_ms(&self) -> Option<f64> {
        match self {
            Evidence::NPlusOne(e) => Some(e.critical_ms),
            Evidence::SerialCalls(e) => Some(e.critical_ms),
            Evidence::RedundantCall(e) => Some(e.critical_ms),
            Evidence::ChattyEdge(e) => Some(e.critical_ms),
            Evidence::ExcessiveFanout(e) => Some(e.critical_ms),
            Evidence::SlowQuery(e) => Some(e.critical_ms),
            _ => None,
        }
    }

    /// [`Evidence::critical_ms`] as a share of the requests' critical path.
    pub fn critical_share(&self) -> Option<f64> {
        match self {
            Evidence::NPlusOne(e) => Some(e.critical_share),
            Evidence::SerialCalls(e) => Some(e.critical_share),
            Evidence::RedundantCall(e) => Some(e.critical_share),
            Evidence::ChattyEdge(e) => Some(e.critical_share),
            Evidence::ExcessiveFanout(e) => Some(e.critical_share),
            Evidence::SlowQuery(e) => Some(e.critical_share),
            _ => None,
        }
    }

    /// What making the calls concurrently would save (serial calls), in ms.
    pub fn saved_ms(&self) -> Option<f64> {
        match self {
            Evidence::SerialCalls(e) => Some(e.saved_ms),
            _ => None,
        }
    }
}

/// `cascading_timeout`: the chain, and what timed out on it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Cascade {
    pub chain: Vec<ChainHop>,
    pub timed_out_calls: usize,
    pub timed_out_spans: usize,
    pub culprit_duration_ms: f64,
    pub wasted_ms: f64,
    pub retries: usize,
    pub entry_timed_out: bool,
}

/// `deadline_not_propagated`: the calls of an edge whose work outlived the
/// wait for them.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct NotPropagated {
    pub entry: EntryPoint,
    pub edge: EdgeKey,
    pub calls: u64,
    pub calls_overrunning: u64,
    pub max_overrun_ms: f64,
    pub total_overrun_ms: f64,
    pub timeout_ms: Option<f64>,
}

/// `timeout_inversion`: an edge's timeout against what is left above it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Inversion {
    pub entry: EntryPoint,
    pub edge: EdgeKey,
    pub timeout_ms: f64,
    pub supporting_calls: u64,
    pub budget_left_ms: f64,
    pub outer: OuterTimeout,
    pub equal_to_outer: bool,
    pub calls: u64,
    pub calls_over_budget: u64,
}

/// The deadline a call's budget is measured against: `{"kind": "entry" |
/// "edge", "timeout_ms", ...edge}`.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum OuterTimeout {
    /// The timeout in front of the entry point.
    Entry { timeout_ms: f64 },
    /// The inferred timeout of an enclosing call.
    Edge {
        #[serde(flatten)]
        edge: EdgeKey,
        timeout_ms: f64,
    },
}

impl From<Outer> for OuterTimeout {
    fn from(o: Outer) -> OuterTimeout {
        match o {
            Outer::Entry { timeout_ns } => OuterTimeout::Entry {
                timeout_ms: ms(timeout_ns),
            },
            Outer::Edge { edge, timeout_ns } => OuterTimeout::Edge {
                edge,
                timeout_ms: ms(timeout_ns),
            },
        }
    }
}

/// `gateway_timeout`: the limit an entry point's requests are cut off at.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Gateway {
    pub timeout_ms: f64,
    pub layer: Option<Layer>,
    pub supporting_traces: u64,
    pub timed_out_traces: u64,
    pub traces: u64,
    pub cluster_ms: [f64; 2],
    pub http_status: Option<u16>,
    pub relayed_from: Option<EdgeKey>,
}

/// `timeout_headroom`: latency percentiles against the timeout in front.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Headroom {
    pub entry: EntryPoint,
    pub timeout_ms: f64,
    pub headroom_share: f64,
    pub limit_ms: f64,
    pub p95_ms: f64,
    pub p99_ms: f64,
    pub calls: u64,
    pub calls_over_limit: u64,
}

/// `slow_query`: one statement shape's latency.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SlowQuery {
    pub statement: String,
    pub target: DbTarget,
    pub services: Vec<Sym>,
    pub calls: u64,
    pub slow_calls: usize,
    pub p50_ms: f64,
    pub p95_ms: f64,
    pub max_ms: f64,
    pub threshold_ms: f64,
    pub other_shapes_median_ms: Option<f64>,
    pub total_ms: f64,
    pub critical_ms: f64,
    pub critical_share: f64,
}

/// `slow_health_check`: one health check's duration against its limit.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SlowHealthCheck {
    pub duration_ms: f64,
    pub limit_ms: f64,
    pub route: Sym,
}

/// `cold_start`: the first requests of new instances.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ColdStart {
    pub instances: Vec<ColdInstance>,
    pub cold_requests: usize,
}

/// One new instance's first requests against the same operations warm.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ColdInstance {
    pub instance: Sym,
    pub first_ms: Vec<f64>,
    pub operations: Vec<Sym>,
    pub steady_ms: Vec<Option<f64>>,
    pub cold_median_ms: f64,
    pub steady_median_ms: f64,
}

/// `pool_exhaustion`: waits for a connection at a pool's ceiling.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PoolExhaustion {
    pub instance: Sym,
    pub target: String,
    pub estimated_pool_size: u32,
    pub wait_p50_ms: f64,
    pub wait_p95_ms: f64,
    pub call_p50_ms: f64,
    pub call_p95_ms: f64,
    pub peak_queued: u32,
    pub requests: usize,
    pub queued_requests: usize,
    pub wait_share: f64,
    pub saturated_share: f64,
    /// `acquire_spans` or `gap_before_first_call`.
    pub wait_from: String,
    pub ceiling_by_slice: Vec<Option<u32>>,
    pub suspected_leak: bool,
    pub window: PoolWindow,
    pub instances: Vec<PoolInstance>,
}

/// The window a pool was watched over.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct PoolWindow {
    pub start_unix_ms: u64,
    pub end_unix_ms: u64,
    pub duration_ms: f64,
}

/// One instance of the same service whose pool is exhausted too.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PoolInstance {
    pub instance: Sym,
    pub queued_requests: usize,
    pub estimated_pool_size: u32,
    pub wait_p95_ms: f64,
}

/// `blocked_worker`: an instance serving one request at a time, and how that
/// shows.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct BlockedWorker {
    #[serde(flatten)]
    pub shape: BlockedShape,
    pub instance: Sym,
    pub requests: usize,
    pub other_instances: Vec<OtherInstance>,
}

/// How a blocked worker shows, by `shape`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "shape", rename_all = "snake_case")]
pub enum BlockedShape {
    /// Requests in flight together whose own time lines up in series.
    SelfTimeInSeries {
        max_in_flight: u32,
        contended_ms: f64,
        busy_share: f64,
        overlap_share: f64,
    },
    /// Requests that queued before the instance started them.
    QueuedBeforeServer {
        max_in_flight: u32,
        queued_requests: usize,
        queue_p50_ms: f64,
        queue_p95_ms: f64,
        queue_total_ms: f64,
        transport_ms: f64,
        served_p50_ms: f64,
    },
    /// Requests begun together that ended one at a time.
    EndsInStaircase {
        max_in_flight: usize,
        step_ms: f64,
        waited_requests: usize,
        wait_p95_ms: f64,
        wait_total_ms: f64,
    },
}

/// Another instance of the blocked worker's service, for comparison.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct OtherInstance {
    pub instance: Sym,
    pub requests: usize,
    pub max_in_flight: u32,
    pub overlap_share: f64,
}

/// `lock_contention`: calls of one statement waiting for a lock.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct LockContention {
    pub statement: String,
    pub table: Option<String>,
    pub target: DbTarget,
    pub calls: usize,
    pub waited_calls: usize,
    pub logged_waits: usize,
    /// `lock_events` or `staircase`.
    pub wait_from: String,
    pub step_ms: Option<f64>,
    pub max_in_flight: Option<usize>,
    pub fastest_ms: f64,
    pub slowest_ms: f64,
    pub wait_p50_ms: f64,
    pub wait_p95_ms: f64,
    pub wait_critical_ms: f64,
    pub wait_share: f64,
    /// The services whose calls waited, sorted.
    pub waiting_services: Vec<String>,
}

/// The service and operation a pattern's calls are made under.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Parent {
    pub service: Sym,
    pub operation: Sym,
}

/// `n_plus_one`: one statement made in a loop.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct NPlusOne {
    pub calls: usize,
    pub shape: String,
    pub distinct_parameters: Option<usize>,
    pub peak_in_flight: usize,
    pub throttled_to: Option<usize>,
    pub source: Option<String>,
    pub parent: Parent,
    pub timeouts: usize,
    pub retried_timeouts: usize,
    pub total_ms: f64,
    pub critical_ms: f64,
    pub critical_share: f64,
}

/// `serial_calls`: independent calls made one after another.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SerialCalls {
    pub calls: Vec<SerialCall>,
    pub saved_ms: f64,
    pub critical_ms: f64,
    pub critical_share: f64,
    pub saved_share: f64,
    pub max_gap_ms: f64,
}

/// One call of a serial run.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SerialCall {
    pub service: Sym,
    pub operation: Sym,
    pub target: String,
    pub callee: Option<Sym>,
    pub start_ms: f64,
    pub duration_ms: f64,
    pub critical_ms: f64,
}

/// `redundant_call`: the identical call made several times.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RedundantCall {
    pub calls: usize,
    pub call: String,
    pub shape: String,
    pub repeated_calls: usize,
    pub repeats: usize,
    pub total_ms: f64,
    pub critical_ms: f64,
    pub critical_share: f64,
}

/// `chatty_edge`: many calls from one service to another in one request.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ChattyEdge {
    pub calls: usize,
    pub operations: usize,
    pub total_ms: f64,
    pub critical_ms: f64,
    pub critical_share: f64,
}

/// `excessive_fanout`: a burst of concurrent calls.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ExcessiveFanout {
    pub children: usize,
    pub peak_in_flight: usize,
    pub presses_on: Option<Sym>,
    pub calls_to_it: usize,
    pub critical_ms: f64,
    pub critical_share: f64,
}
