//! Every detector's thresholds, in one place: the `[detectors]` section of
//! the configuration file (`docs/DETECTORS.md` has the table of keys,
//! defaults and the findings each gates).
//!
//! [`Thresholds`] has one section per detector. A section is a plain struct
//! whose `Default` is the value the detector was tuned with; the TOML keys are
//! its field names and carry their unit (`_ms`, `_share`, `_factor`, or a
//! count). A section missing from the file, or a key missing from a section,
//! keeps its default; an unknown key is refused. [`Thresholds::validate`]
//! checks every value once, at start, and names the first bad key.
//!
//! Adding a detector's section: a struct with `#[serde(default,
//! deny_unknown_fields)]` and a `Default`, a field of [`Thresholds`], a
//! [`Section`] implementation whose `check` runs each key through [`Check`],
//! one `validate()` line in [`Thresholds::validate`], and its rows in
//! `docs/DETECTORS.md`. The detector takes its section by reference and
//! fills its observations' `crossed` with the keys it compared.

use serde::{Deserialize, Serialize};

use super::health_check::HealthRoutes;
pub use super::patterns::{
    ChattyEdgeThresholds, ExcessiveFanoutThresholds, NPlusOneThresholds, PatternSeverity,
    RedundantCallThresholds, SerialCallsThresholds,
};

/// Nanoseconds in a configured number of milliseconds (validated finite and
/// non-negative; rounded down to the nanosecond).
pub fn ns(ms: f64) -> u64 {
    (ms * 1e6) as u64
}

/// A threshold whose value is not allowed, named by its key under
/// `[detectors]`.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("detectors.{section}.{key} = {value}: must be {allowed}")]
pub struct InvalidThreshold {
    /// The section under `[detectors]` (`pool`).
    pub section: &'static str,
    /// The key in it (`near_ceiling`).
    pub key: &'static str,
    /// The value as configured.
    pub value: String,
    /// What the key accepts.
    pub allowed: &'static str,
}

/// The checks of one section's keys, each naming the key it refuses.
pub struct Check {
    section: &'static str,
}

impl Check {
    /// The error for `key`'s `value`, which must be what `allowed` says.
    pub fn fail(
        &self,
        key: &'static str,
        value: impl ToString,
        allowed: &'static str,
    ) -> InvalidThreshold {
        InvalidThreshold {
            section: self.section,
            key,
            value: value.to_string(),
            allowed,
        }
    }

    /// A count: at least 1.
    pub fn count(&self, key: &'static str, value: u32) -> Result<(), InvalidThreshold> {
        if value == 0 {
            return Err(self.fail(key, value, "a count of at least 1"));
        }
        Ok(())
    }

    /// A count of at least 2: one call is no loop, no repeat.
    pub fn pair(&self, key: &'static str, value: u32) -> Result<(), InvalidThreshold> {
        if value < 2 {
            return Err(self.fail(key, value, "a count of at least 2"));
        }
        Ok(())
    }

    /// A share (fraction): in (0, 1].
    pub fn share(&self, key: &'static str, value: f64) -> Result<(), InvalidThreshold> {
        if !(value > 0.0 && value <= 1.0) {
            return Err(self.fail(key, value, "a fraction in (0, 1]"));
        }
        Ok(())
    }

    /// A factor: finite, at least 1.
    pub fn factor(&self, key: &'static str, value: f64) -> Result<(), InvalidThreshold> {
        if !(value.is_finite() && value >= 1.0) {
            return Err(self.fail(key, value, "a finite factor of at least 1"));
        }
        Ok(())
    }

    /// A duration in milliseconds: finite and greater than 0, at most a day.
    pub fn ms(&self, key: &'static str, value: f64) -> Result<(), InvalidThreshold> {
        if !(value > 0.0 && value <= 86_400_000.0) {
            return Err(self.fail(
                key,
                value,
                "a duration in milliseconds greater than 0 and at most 86400000 (a day)",
            ));
        }
        Ok(())
    }
}

/// One section of `[detectors]`.
pub trait Section {
    /// Its name under `[detectors]`.
    const NAME: &'static str;

    /// Checks every key of the section.
    fn check(&self, check: &Check) -> Result<(), InvalidThreshold>;

    /// [`Section::check`] with the section's name.
    fn validate(&self) -> Result<(), InvalidThreshold> {
        self.check(&Check {
            section: Self::NAME,
        })
    }
}

/// The `[detectors]` section: every detector's thresholds.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Thresholds {
    /// `cascading_timeout`.
    pub cascade: Cascade,
    /// Timeouts inferred from clusters of timed-out durations.
    pub timeout_inference: TimeoutInference,
    /// `timeout_inversion`'s slack.
    pub timeout_inversion: TimeoutInversion,
    /// `deadline_not_propagated`.
    pub deadline_not_propagated: DeadlineNotPropagated,
    /// `timeout_headroom`.
    pub headroom: Headroom,
    /// `slow_query`.
    pub slow_query: SlowQuery,
    /// `pool_exhaustion`.
    pub pool: Pool,
    /// `blocked_worker`.
    pub blocked_worker: BlockedWorker,
    /// `cold_start`.
    pub cold_start: ColdStart,
    /// `lock_contention` (and the staircase `blocked_worker` also reads).
    pub lock_contention: LockContention,
    /// `slow_health_check`.
    pub slow_health_check: SlowHealthCheck,
    /// `n_plus_one`.
    pub n_plus_one: NPlusOneThresholds,
    /// `serial_calls`.
    pub serial_calls: SerialCallsThresholds,
    /// `redundant_call`.
    pub redundant_call: RedundantCallThresholds,
    /// `chatty_edge`.
    pub chatty_edge: ChattyEdgeThresholds,
    /// `excessive_fanout`.
    pub excessive_fanout: ExcessiveFanoutThresholds,
    /// The severity of the anti-pattern findings, by their critical cost.
    pub pattern_severity: PatternSeverity,
}

impl Thresholds {
    /// Checks every section; the error names the first bad key, its value and
    /// what it accepts.
    pub fn validate(&self) -> Result<(), InvalidThreshold> {
        self.cascade.validate()?;
        self.timeout_inference.validate()?;
        self.timeout_inversion.validate()?;
        self.deadline_not_propagated.validate()?;
        self.headroom.validate()?;
        self.slow_query.validate()?;
        self.pool.validate()?;
        self.blocked_worker.validate()?;
        self.cold_start.validate()?;
        self.lock_contention.validate()?;
        self.slow_health_check.validate()?;
        self.n_plus_one.validate()?;
        self.serial_calls.validate()?;
        self.redundant_call.validate()?;
        self.chatty_edge.validate()?;
        self.excessive_fanout.validate()?;
        self.pattern_severity.validate()
    }
}

/// `cascading_timeout`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Cascade {
    /// Timed-out calls on one chain that make a cascade.
    pub min_calls: u32,
    /// A caller was waiting (not working) when its synchronous children cover
    /// at least this share of its time.
    pub waiting_share: f64,
}

impl Default for Cascade {
    fn default() -> Self {
        Cascade {
            min_calls: 2,
            waiting_share: 0.5,
        }
    }
}

impl Section for Cascade {
    const NAME: &'static str = "cascade";

    fn check(&self, c: &Check) -> Result<(), InvalidThreshold> {
        c.count("min_calls", self.min_calls)?;
        c.share("waiting_share", self.waiting_share)
    }
}

/// Timeouts inferred from where timed-out durations cluster (edges and entry
/// points): `gateway_timeout`, `timeout_inversion`, the budget map.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct TimeoutInference {
    /// Fewest timed-out calls in a cluster that make it a timeout.
    pub min_calls: u32,
    /// A cluster also holds at least this share of the timed-out calls.
    pub min_cluster_share: f64,
    /// A cluster is at most this wide, relative to its shortest duration ...
    pub cluster_width_share: f64,
    /// ... and at least this wide, so timer jitter does not split it.
    pub cluster_min_width_ms: f64,
}

impl Default for TimeoutInference {
    fn default() -> Self {
        TimeoutInference {
            min_calls: 3,
            min_cluster_share: 0.5,
            cluster_width_share: 0.01,
            cluster_min_width_ms: 1.0,
        }
    }
}

impl Section for TimeoutInference {
    const NAME: &'static str = "timeout_inference";

    fn check(&self, c: &Check) -> Result<(), InvalidThreshold> {
        c.count("min_calls", self.min_calls)?;
        c.share("min_cluster_share", self.min_cluster_share)?;
        c.share("cluster_width_share", self.cluster_width_share)?;
        c.ms("cluster_min_width_ms", self.cluster_min_width_ms)
    }
}

/// `timeout_inversion`: an edge's inferred timeout is longer than the budget
/// left above it by more than a slack (a deadline set to exactly what is
/// left is a propagated deadline).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct TimeoutInversion {
    /// The slack, relative to the budget left ...
    pub slack_share: f64,
    /// ... and at least this much.
    pub slack_ms: f64,
}

impl Default for TimeoutInversion {
    fn default() -> Self {
        TimeoutInversion {
            slack_share: 0.001,
            slack_ms: 2.0,
        }
    }
}

impl Section for TimeoutInversion {
    const NAME: &'static str = "timeout_inversion";

    fn check(&self, c: &Check) -> Result<(), InvalidThreshold> {
        c.share("slack_share", self.slack_share)?;
        c.ms("slack_ms", self.slack_ms)
    }
}

/// `deadline_not_propagated`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct DeadlineNotPropagated {
    /// Fewest calls of an edge whose work went on after their caller gave up.
    pub min_calls: u32,
    /// Work went on after the caller gave up when it ran this share of the
    /// call past it ...
    pub min_overrun_share: f64,
    /// ... and at least this long.
    pub min_overrun_ms: f64,
}

impl Default for DeadlineNotPropagated {
    fn default() -> Self {
        DeadlineNotPropagated {
            min_calls: 3,
            min_overrun_share: 0.01,
            min_overrun_ms: 1.0,
        }
    }
}

impl Section for DeadlineNotPropagated {
    const NAME: &'static str = "deadline_not_propagated";

    fn check(&self, c: &Check) -> Result<(), InvalidThreshold> {
        c.count("min_calls", self.min_calls)?;
        c.share("min_overrun_share", self.min_overrun_share)?;
        c.ms("min_overrun_ms", self.min_overrun_ms)
    }
}

/// `timeout_headroom`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Headroom {
    /// The p99 of the calls (or requests) that did not time out is above this
    /// share of the timeout in front of them.
    pub share: f64,
    /// Fewest calls that did not time out before the p99 is judged.
    pub min_samples: u32,
}

impl Default for Headroom {
    fn default() -> Self {
        Headroom {
            share: 0.5,
            min_samples: 20,
        }
    }
}

impl Section for Headroom {
    const NAME: &'static str = "headroom";

    fn check(&self, c: &Check) -> Result<(), InvalidThreshold> {
        c.share("share", self.share)?;
        c.count("min_samples", self.min_samples)
    }
}

/// `slow_query`: a statement shape's p95 is over its threshold: `absolute_ms`,
/// or, when other shapes run on its target, `factor` × their median, at least
/// `min_ms`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct SlowQuery {
    /// A p95 this slow is slow whatever else runs on the target.
    pub absolute_ms: f64,
    /// The threshold relative to other shapes is never below this.
    pub min_ms: f64,
    /// Times the median of the other shapes' medians on the target.
    pub factor: f64,
    /// Fewest calls at or over the threshold.
    pub min_calls: u32,
}

impl Default for SlowQuery {
    fn default() -> Self {
        SlowQuery {
            absolute_ms: 500.0,
            min_ms: 100.0,
            factor: 5.0,
            min_calls: 3,
        }
    }
}

impl Section for SlowQuery {
    const NAME: &'static str = "slow_query";

    fn check(&self, c: &Check) -> Result<(), InvalidThreshold> {
        c.ms("absolute_ms", self.absolute_ms)?;
        c.ms("min_ms", self.min_ms)?;
        if self.min_ms > self.absolute_ms {
            return Err(c.fail("min_ms", self.min_ms, "at most slow_query.absolute_ms"));
        }
        c.factor("factor", self.factor)?;
        c.count("min_calls", self.min_calls)
    }
}

/// `pool_exhaustion`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Pool {
    /// Fewest requests of an instance to a target before it is judged.
    pub min_requests: u32,
    /// Fewest of them that queued before their first call.
    pub min_queued: u32,
    /// A request queued when it waited at least this long (and half the
    /// median call) before its first call.
    pub min_queued_wait_ms: f64,
    /// The queued requests' p95 wait is at least this ...
    pub min_p95_wait_ms: f64,
    /// ... and this many times the p95 call (the calls are not what is slow).
    pub wait_to_call_factor: f64,
    /// Connections held at this share of the ceiling count as at it.
    pub near_ceiling: f64,
    /// Share of the waiting spent with the connections at the ceiling.
    pub min_saturated_share: f64,
}

impl Default for Pool {
    fn default() -> Self {
        Pool {
            min_requests: 8,
            min_queued: 5,
            min_queued_wait_ms: 5.0,
            min_p95_wait_ms: 50.0,
            wait_to_call_factor: 2.0,
            near_ceiling: 0.75,
            min_saturated_share: 0.5,
        }
    }
}

impl Section for Pool {
    const NAME: &'static str = "pool";

    fn check(&self, c: &Check) -> Result<(), InvalidThreshold> {
        c.count("min_requests", self.min_requests)?;
        c.count("min_queued", self.min_queued)?;
        c.ms("min_queued_wait_ms", self.min_queued_wait_ms)?;
        c.ms("min_p95_wait_ms", self.min_p95_wait_ms)?;
        c.factor("wait_to_call_factor", self.wait_to_call_factor)?;
        c.share("near_ceiling", self.near_ceiling)?;
        c.share("min_saturated_share", self.min_saturated_share)
    }
}

/// `blocked_worker`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct BlockedWorker {
    /// Fewest requests (or callers) in flight at once.
    pub min_in_flight: u32,
    /// Time with that many in flight (self times in series).
    pub min_contended_ms: f64,
    /// Most share of that time during which self times overlapped.
    pub max_overlap_share: f64,
    /// Share of that time the instance's own work filled.
    pub min_busy_share: f64,
    /// Most share of the SERVER spans' time during which two overlapped
    /// (requests queued before the server).
    pub max_server_overlap_share: f64,
    /// A request queued when it started at least this long ...
    pub min_queue_ms: f64,
    /// ... and the served median divided by this, later than the quickest.
    pub queue_to_served_factor: f64,
    /// Fewest queued requests.
    pub min_queued: u32,
    /// Fewest milliseconds waited in all.
    pub min_total_wait_ms: f64,
    /// A request in a staircase of ends is mostly its own work: this share.
    pub min_self_share: f64,
}

impl Default for BlockedWorker {
    fn default() -> Self {
        BlockedWorker {
            min_in_flight: 4,
            min_contended_ms: 20.0,
            max_overlap_share: 0.05,
            min_busy_share: 0.8,
            max_server_overlap_share: 0.05,
            min_queue_ms: 5.0,
            queue_to_served_factor: 3.0,
            min_queued: 3,
            min_total_wait_ms: 100.0,
            min_self_share: 0.8,
        }
    }
}

impl Section for BlockedWorker {
    const NAME: &'static str = "blocked_worker";

    fn check(&self, c: &Check) -> Result<(), InvalidThreshold> {
        c.count("min_in_flight", self.min_in_flight)?;
        c.ms("min_contended_ms", self.min_contended_ms)?;
        c.share("max_overlap_share", self.max_overlap_share)?;
        c.share("min_busy_share", self.min_busy_share)?;
        c.share("max_server_overlap_share", self.max_server_overlap_share)?;
        c.ms("min_queue_ms", self.min_queue_ms)?;
        c.factor("queue_to_served_factor", self.queue_to_served_factor)?;
        c.count("min_queued", self.min_queued)?;
        c.ms("min_total_wait_ms", self.min_total_wait_ms)?;
        c.share("min_self_share", self.min_self_share)
    }
}

/// `cold_start`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ColdStart {
    /// The first requests of a new instance that are judged.
    pub first_requests: u32,
    /// A first request is cold at this many times its operation's steady
    /// median ...
    pub factor: f64,
    /// ... and at least this much over it.
    pub min_extra_ms: f64,
    /// Fewest steady requests of the operation (the median's sample).
    pub min_steady_requests: u32,
}

impl Default for ColdStart {
    fn default() -> Self {
        ColdStart {
            first_requests: 3,
            factor: 3.0,
            min_extra_ms: 100.0,
            min_steady_requests: 10,
        }
    }
}

impl Section for ColdStart {
    const NAME: &'static str = "cold_start";

    fn check(&self, c: &Check) -> Result<(), InvalidThreshold> {
        c.count("first_requests", self.first_requests)?;
        c.factor("factor", self.factor)?;
        c.ms("min_extra_ms", self.min_extra_ms)?;
        c.count("min_steady_requests", self.min_steady_requests)
    }
}

/// `lock_contention`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct LockContention {
    /// A lock wait the database logged (an event on the span) counts from
    /// this long.
    pub min_logged_wait_ms: f64,
    /// Fewest concurrent calls ending in a staircase.
    pub min_stair_calls: u32,
    /// Consecutive ends at least this far apart ...
    pub min_step_ms: f64,
    /// ... for this share of the steps, evenly spaced ...
    pub min_spaced_share: f64,
    /// ... within this factor of the median step.
    pub even_factor: f64,
    /// The fastest call of a staircase takes at most this long (the
    /// statement itself is fast).
    pub fast_ms: f64,
    /// Fewest milliseconds waited in all in staircases, without logged waits.
    pub min_stair_wait_ms: f64,
}

impl Default for LockContention {
    fn default() -> Self {
        LockContention {
            min_logged_wait_ms: 1.0,
            min_stair_calls: 4,
            min_step_ms: 2.0,
            min_spaced_share: 0.75,
            even_factor: 2.0,
            fast_ms: 20.0,
            min_stair_wait_ms: 100.0,
        }
    }
}

impl Section for LockContention {
    const NAME: &'static str = "lock_contention";

    fn check(&self, c: &Check) -> Result<(), InvalidThreshold> {
        c.ms("min_logged_wait_ms", self.min_logged_wait_ms)?;
        c.count("min_stair_calls", self.min_stair_calls)?;
        c.ms("min_step_ms", self.min_step_ms)?;
        c.share("min_spaced_share", self.min_spaced_share)?;
        c.factor("even_factor", self.even_factor)?;
        c.ms("fast_ms", self.fast_ms)?;
        c.ms("min_stair_wait_ms", self.min_stair_wait_ms)
    }
}

/// `slow_health_check`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct SlowHealthCheck {
    /// The routes that are health checks (an empty list turns the detector
    /// off; each route is checked when the file is read).
    pub routes: HealthRoutes,
    /// A health check slower than this is a finding.
    pub limit_ms: f64,
}

impl Default for SlowHealthCheck {
    fn default() -> Self {
        SlowHealthCheck {
            routes: HealthRoutes::default(),
            limit_ms: 500.0,
        }
    }
}

impl Section for SlowHealthCheck {
    const NAME: &'static str = "slow_health_check";

    fn check(&self, c: &Check) -> Result<(), InvalidThreshold> {
        c.ms("limit_ms", self.limit_ms)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_defaults_are_valid_and_round_trip_through_toml() {
        let defaults = Thresholds::default();
        assert_eq!(defaults.validate(), Ok(()));
        let text = toml::to_string(&defaults).unwrap();
        assert_eq!(toml::from_str::<Thresholds>(&text).unwrap(), defaults);
        assert!(text.contains("[slow_query]\nabsolute_ms = 500.0"), "{text}");
    }

    #[test]
    fn a_partial_section_keeps_the_other_defaults_and_integers_read_as_numbers() {
        let t: Thresholds = toml::from_str("[slow_query]\nmin_ms = 20\n").unwrap();
        assert_eq!(t.slow_query.min_ms, 20.0);
        assert_eq!(t.slow_query.absolute_ms, 500.0);
        assert_eq!(t.pool, Pool::default());
    }

    #[test]
    fn unknown_keys_and_sections_are_refused() {
        for bad in [
            "[slow_query]\nmin_msec = 20\n",
            "[slow_queries]\nmin_ms = 20\n",
        ] {
            let e = toml::from_str::<Thresholds>(bad).unwrap_err().to_string();
            assert!(e.contains("unknown field"), "{bad}: {e}");
        }
        let e = toml::from_str::<Thresholds>("[pool]\nmin_queued = -1\n").unwrap_err();
        assert!(e.to_string().contains("min_queued"), "{e}");
    }

    #[test]
    fn validate_names_the_key_the_value_and_what_is_allowed() {
        let mut t = Thresholds::default();
        t.pool.near_ceiling = 1.5;
        assert_eq!(
            t.validate().unwrap_err().to_string(),
            "detectors.pool.near_ceiling = 1.5: must be a fraction in (0, 1]"
        );
        type Case = (fn(&mut Thresholds), &'static str);
        let cases: [Case; 8] = [
            (
                |t| t.cascade.min_calls = 0,
                "detectors.cascade.min_calls = 0",
            ),
            (|t| t.headroom.share = 0.0, "detectors.headroom.share = 0"),
            (
                |t| t.slow_query.min_ms = f64::NAN,
                "detectors.slow_query.min_ms = NaN",
            ),
            (
                |t| t.slow_query.min_ms = 600.0,
                "detectors.slow_query.min_ms = 600: must be at most slow_query.absolute_ms",
            ),
            (
                |t| t.slow_health_check.limit_ms = -1.0,
                "detectors.slow_health_check.limit_ms = -1",
            ),
            (
                |t| t.cold_start.factor = 0.5,
                "detectors.cold_start.factor = 0.5: must be a finite factor of at least 1",
            ),
            (
                |t| t.lock_contention.fast_ms = f64::INFINITY,
                "detectors.lock_contention.fast_ms = inf",
            ),
            (
                |t| t.timeout_inference.min_calls = 0,
                "detectors.timeout_inference.min_calls = 0: must be a count of at least 1",
            ),
        ];
        for (set, message) in cases {
            let mut t = Thresholds::default();
            set(&mut t);
            let e = t.validate().unwrap_err().to_string();
            assert!(e.starts_with(message), "{e} (expected {message})");
        }
    }
}
