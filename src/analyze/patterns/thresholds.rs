//! The anti-pattern detectors' thresholds, each a `[detectors.<kind>]` table
//! of the configuration file (`docs/DETECTORS.md` lists them).

use serde::{Deserialize, Serialize};

/// `[detectors.n_plus_one]`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct NPlusOneThresholds {
    /// Calls of one shape under one parent that make a loop.
    pub min_calls: usize,
    /// A peak in flight at most this share of the calls, held most of the
    /// time, is a worker pool throttling the loop.
    pub throttle_share: f64,
}

impl Default for NPlusOneThresholds {
    fn default() -> Self {
        NPlusOneThresholds {
            min_calls: 5,
            throttle_share: 0.5,
        }
    }
}

/// `[detectors.serial_calls]`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct SerialCallsThresholds {
    /// Different calls one after another under one parent.
    pub min_calls: usize,
    /// Longest gap between one call's end and the next one's start.
    pub max_gap_ms: f64,
    /// Least critical time that making them together would save.
    pub min_saved_ms: f64,
}

impl Default for SerialCallsThresholds {
    fn default() -> Self {
        SerialCallsThresholds {
            min_calls: 3,
            max_gap_ms: 10.0,
            min_saved_ms: 100.0,
        }
    }
}

/// `[detectors.redundant_call]`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RedundantCallThresholds {
    /// Identical calls in one request (retries after a failure excepted).
    pub min_calls: usize,
}

impl Default for RedundantCallThresholds {
    fn default() -> Self {
        RedundantCallThresholds { min_calls: 2 }
    }
}

/// `[detectors.chatty_edge]`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ChattyEdgeThresholds {
    /// Calls from one caller to one callee in one request above which the
    /// edge is chatty.
    pub max_calls: usize,
}

impl Default for ChattyEdgeThresholds {
    fn default() -> Self {
        ChattyEdgeThresholds { max_calls: 20 }
    }
}

/// `[detectors.excessive_fanout]`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ExcessiveFanoutThresholds {
    /// Calls one span has in flight at once above which it is a burst.
    pub max_in_flight: usize,
}

impl Default for ExcessiveFanoutThresholds {
    fn default() -> Self {
        ExcessiveFanoutThresholds { max_in_flight: 50 }
    }
}

/// `[detectors.pattern_severity]`: how much of the request's latency a
/// pattern must hold on its critical path to be a warning or critical; below,
/// it is reported as information with its small cost.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct PatternSeverity {
    pub warning_share: f64,
    pub critical_share: f64,
}

impl Default for PatternSeverity {
    fn default() -> Self {
        PatternSeverity {
            warning_share: 0.1,
            critical_share: 0.5,
        }
    }
}

/// Every anti-pattern detector's thresholds.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct PatternThresholds {
    pub n_plus_one: NPlusOneThresholds,
    pub serial_calls: SerialCallsThresholds,
    pub redundant_call: RedundantCallThresholds,
    pub chatty_edge: ChattyEdgeThresholds,
    pub excessive_fanout: ExcessiveFanoutThresholds,
    pub severity: PatternSeverity,
}
