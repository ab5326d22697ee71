//! The anti-pattern detectors' sections of [`Thresholds`], each a
//! `[detectors.<kind>]` table of the configuration file
//! (`docs/DETECTORS.md` lists them).

use serde::{Deserialize, Serialize};

use crate::analyze::thresholds::{Check, InvalidThreshold, Section};
#[cfg(doc)]
use crate::analyze::Thresholds;

/// `[detectors.n_plus_one]`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct NPlusOneThresholds {
    /// Calls of one shape under one parent that make a loop.
    pub min_calls: u32,
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
    pub min_calls: u32,
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
    pub min_calls: u32,
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
    pub max_calls: u32,
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
    pub max_in_flight: u32,
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
    /// Below this much critical time a pattern is information whatever its
    /// share: a few milliseconds are nobody's 504.
    pub warning_min_ms: f64,
    pub critical_share: f64,
}

impl Default for PatternSeverity {
    fn default() -> Self {
        PatternSeverity {
            warning_share: 0.1,
            warning_min_ms: 20.0,
            critical_share: 0.5,
        }
    }
}

impl Section for NPlusOneThresholds {
    const NAME: &'static str = "n_plus_one";

    fn check(&self, c: &Check) -> Result<(), InvalidThreshold> {
        c.pair("min_calls", self.min_calls)?;
        c.share("throttle_share", self.throttle_share)
    }
}

impl Section for SerialCallsThresholds {
    const NAME: &'static str = "serial_calls";

    fn check(&self, c: &Check) -> Result<(), InvalidThreshold> {
        c.pair("min_calls", self.min_calls)?;
        c.ms("max_gap_ms", self.max_gap_ms)?;
        c.ms("min_saved_ms", self.min_saved_ms)
    }
}

impl Section for RedundantCallThresholds {
    const NAME: &'static str = "redundant_call";

    fn check(&self, c: &Check) -> Result<(), InvalidThreshold> {
        c.pair("min_calls", self.min_calls)
    }
}

impl Section for ChattyEdgeThresholds {
    const NAME: &'static str = "chatty_edge";

    fn check(&self, c: &Check) -> Result<(), InvalidThreshold> {
        c.count("max_calls", self.max_calls)
    }
}

impl Section for ExcessiveFanoutThresholds {
    const NAME: &'static str = "excessive_fanout";

    fn check(&self, c: &Check) -> Result<(), InvalidThreshold> {
        c.count("max_in_flight", self.max_in_flight)
    }
}

impl Section for PatternSeverity {
    const NAME: &'static str = "pattern_severity";

    fn check(&self, c: &Check) -> Result<(), InvalidThreshold> {
        c.share("warning_share", self.warning_share)?;
        c.share("critical_share", self.critical_share)?;
        c.ms("warning_min_ms", self.warning_min_ms)?;
        if self.critical_share < self.warning_share {
            return Err(c.fail(
                "critical_share",
                self.critical_share,
                "at least warning_share",
            ));
        }
        Ok(())
    }
}
