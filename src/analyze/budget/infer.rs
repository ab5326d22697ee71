//! Timeouts inferred from data: where the durations of timed-out calls cluster,
//! and which known layer a cluster is the limit of.

use crate::analyze::thresholds::{ns, TimeoutInference};

/// A timeout inferred from durations.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Inferred {
    /// The median of the cluster.
    pub value_ns: u64,
    /// Durations in the cluster.
    pub supporting: u64,
    /// Durations considered (timed-out calls).
    pub considered: u64,
    /// The cluster's shortest and longest durations.
    pub lo_ns: u64,
    pub hi_ns: u64,
}

impl Inferred {
    pub fn contains(&self, duration_ns: u64) -> bool {
        (self.lo_ns..=self.hi_ns).contains(&duration_ns)
    }
}

/// The densest cluster of `durations` (sorted in place): the largest set whose
/// longest is within `cluster_width_share` (1 %, at least
/// `cluster_min_width_ms`, 1 ms) of its shortest, the lowest such set on
/// ties. It is a timeout when it has at least `min_calls` (3: one 30 s request
/// is not a configured timeout) members and at least `min_cluster_share`
/// (half) of all durations; its value is the cluster's median.
///
/// A sliding window rather than fixed buckets, so a cluster is never split at a
/// bucket boundary.
pub fn infer_timeout(durations: &mut [u64], config: &TimeoutInference) -> Option<Inferred> {
    durations.sort_unstable();
    let min_width_ns = ns(config.cluster_min_width_ms);
    let width_ns = |duration_ns: u64| {
        ((duration_ns as f64 * config.cluster_width_share) as u64).max(min_width_ns)
    };
    let n = durations.len();
    let (mut best_lo, mut best_len, mut hi) = (0, 0, 0);
    for lo in 0..n {
        let limit = durations[lo].saturating_add(width_ns(durations[lo]));
        hi = hi.max(lo);
        while hi < n && durations[hi] <= limit {
            hi += 1;
        }
        if hi - lo > best_len {
            (best_lo, best_len) = (lo, hi - lo);
        }
    }
    if best_len < config.min_calls as usize
        || (best_len as f64) < config.min_cluster_share * n as f64
    {
        return None;
    }
    let cluster = &durations[best_lo..best_lo + best_len];
    Some(Inferred {
        value_ns: cluster[best_len / 2],
        supporting: best_len as u64,
        considered: n as u64,
        lo_ns: cluster[0],
        hi_ns: cluster[best_len - 1],
    })
}

/// A layer whose limit is a known fingerprint: a gateway or proxy in front of
/// the services whose default or hard timeout is a well-known value, so a
/// cluster of timed-out roots at that value names the layer (see
/// `docs/DETECTORS.md`, `gateway_timeout`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Layer {
    /// 29 s, hard: cannot be raised on proxy integrations.
    AwsApiGateway,
    /// 60 s: nginx `proxy_read_timeout` and the ALB idle timeout default to it.
    NginxOrAlb,
    /// 100 s: Cloudflare's origin response limit (524).
    Cloudflare,
}

impl Layer {
    pub const ALL: [Layer; 3] = [Layer::AwsApiGateway, Layer::NginxOrAlb, Layer::Cloudflare];

    pub fn limit_ns(self) -> u64 {
        1_000_000_000
            * match self {
                Layer::AwsApiGateway => 29,
                Layer::NginxOrAlb => 60,
                Layer::Cloudflare => 100,
            }
    }

    /// For sentences.
    pub fn name(self) -> &'static str {
        match self {
            Layer::AwsApiGateway => "AWS API Gateway's hard integration timeout",
            Layer::NginxOrAlb => {
                "the default of nginx proxy_read_timeout and of the AWS ALB idle timeout"
            }
            Layer::Cloudflare => "Cloudflare's origin response limit (524)",
        }
    }

    /// For a finding's culprit: the layer that gave up.
    pub fn peer(self) -> &'static str {
        match self {
            Layer::AwsApiGateway => "AWS API Gateway",
            Layer::NginxOrAlb => "nginx / AWS ALB",
            Layer::Cloudflare => "Cloudflare",
        }
    }

    /// The layer whose limit `value_ns` is, within ±1 % (±290 ms at 29 s:
    /// 30 s is a configured timeout, not API Gateway).
    pub fn of(value_ns: u64) -> Option<Layer> {
        Layer::ALL
            .into_iter()
            .find(|l| value_ns.abs_diff(l.limit_ns()) <= l.limit_ns() / 100)
    }
}

/// The `q` quantile of `sorted` (nearest rank).
pub fn quantile(sorted: &[u64], q: f64) -> Option<u64> {
    let n = sorted.len();
    (n > 0).then(|| sorted[((q * n as f64).ceil() as usize).clamp(1, n) - 1])
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: u64 = 1_000_000;

    fn infer_timeout(durations: &mut [u64]) -> Option<Inferred> {
        super::infer_timeout(durations, &TimeoutInference::default())
    }

    #[test]
    fn a_spike_of_timeouts_is_found_among_scattered_failures() {
        let mut d = vec![
            30_000 * MS,
            30_004 * MS,
            29_998 * MS,
            30_120 * MS,
            1_200 * MS,
            45_000 * MS,
        ];
        let t = infer_timeout(&mut d).unwrap();
        assert_eq!(t.supporting, 4);
        assert_eq!(t.considered, 6);
        assert_eq!(t.value_ns, 30_004 * MS, "the cluster's (upper) median");
        assert!(t.contains(30_120 * MS) && !t.contains(45_000 * MS));
    }

    #[test]
    fn too_few_or_too_scattered_timeouts_infer_nothing() {
        // One slow request is not a timeout; two are not yet.
        assert_eq!(infer_timeout(&mut [30_000 * MS]), None);
        assert_eq!(infer_timeout(&mut [30_000 * MS, 30_001 * MS]), None);
        // Three of seven is not half.
        let mut d = vec![5, 5, 5, 7, 9, 11, 13]
            .into_iter()
            .map(|s| s * 1_000 * MS)
            .collect::<Vec<_>>();
        assert_eq!(infer_timeout(&mut d), None);
        // Within 1 %: 10.0 s and 10.09 s together, 10.2 s not.
        let mut d = vec![10_000 * MS, 10_090 * MS, 10_200 * MS, 10_050 * MS];
        let t = infer_timeout(&mut d).unwrap();
        assert_eq!(
            (t.supporting, t.lo_ns, t.hi_ns),
            (3, 10_000 * MS, 10_090 * MS)
        );
    }

    #[test]
    fn short_timeouts_tolerate_a_millisecond_of_jitter() {
        let mut d = vec![100 * MS, 100 * MS + 900_000, 100 * MS + 400_000];
        assert_eq!(infer_timeout(&mut d).unwrap().supporting, 3);
    }

    #[test]
    fn the_configured_cluster_width_and_support_are_used() {
        let config = TimeoutInference {
            min_calls: 2,
            cluster_width_share: 0.05,
            ..TimeoutInference::default()
        };
        // 10 s and 10.4 s: one cluster within 5 %, and two calls are enough.
        let mut d = vec![10_000 * MS, 10_400 * MS];
        assert_eq!(infer_timeout(&mut d.clone()), None);
        let t = super::infer_timeout(&mut d, &config).unwrap();
        assert_eq!(
            (t.supporting, t.lo_ns, t.hi_ns),
            (2, 10_000 * MS, 10_400 * MS)
        );
    }

    #[test]
    fn layers_are_named_by_their_limit_and_nothing_else() {
        assert_eq!(Layer::of(29_000 * MS), Some(Layer::AwsApiGateway));
        assert_eq!(Layer::of(29_250 * MS), Some(Layer::AwsApiGateway));
        assert_eq!(Layer::of(30_000 * MS), None);
        assert_eq!(Layer::of(60_400 * MS), Some(Layer::NginxOrAlb));
        assert_eq!(Layer::of(99_100 * MS), Some(Layer::Cloudflare));
        assert_eq!(Layer::of(10_000 * MS), None);
    }

    #[test]
    fn quantiles_are_nearest_rank() {
        let v: Vec<u64> = (1..=100).collect();
        assert_eq!(quantile(&v, 0.95), Some(95));
        assert_eq!(quantile(&v, 0.99), Some(99));
        assert_eq!(quantile(&[7], 0.99), Some(7));
        assert_eq!(quantile(&[], 0.5), None);
    }
}
