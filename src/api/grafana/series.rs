//! The time series: `hop_share` and `findings_over_time`.

use std::time::Duration;

use serde_json::{json, Value};

use super::query::{hop_label, Ctx, MINUTE_NS};
use super::ApiError;
use crate::analyze::{FindingKind, HopKey};
use crate::store::Finding;

impl Ctx {
    /// Per hop of the entry point (the largest share first), its share of the
    /// critical path in each interval with traces.
    pub(super) fn hop_share(&self) -> Result<Vec<Value>, ApiError> {
        let Some(entry) = self.entry()? else {
            return Ok(Vec::new());
        };
        let aggregates = self.store.aggregates();
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
        let step = self
            .buckets(MINUTE_NS)
            .first()
            .map_or(MINUTE_NS, |(start, end)| end - start);
        let steps = aggregates.series(
            entry,
            Some(self.from_ns),
            Some(self.to_ns),
            Duration::from_nanos(step),
        );
        for (start, e) in steps {
            let Some(e) = e else { continue };
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

    /// Per finding kind present, how many of its findings were open in each
    /// interval (first seen before its end, last seen after its start).
    pub(super) fn findings_over_time(&self) -> Result<Vec<Value>, ApiError> {
        let found = self.findings(Some(self.from_ns), Some(self.to_ns))?;
        let buckets = self.buckets(1_000_000_000);
        let mut out = Vec::new();
        for kind in FindingKind::ALL {
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
}
