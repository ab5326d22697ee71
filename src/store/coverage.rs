//! Instrumentation coverage per service ([`crate::analyze::coverage`]),
//! counted over every analyzed trace: cumulative, kept in the state file, so
//! it covers the daemon's whole history like the findings.
//!
//! A trace analyzed again after late spans is retracted and added again, as
//! the aggregates are, so it counts once. Cardinality is bounded: the first
//! [`MAX_SERVICES`] services have their own counts, later ones are counted
//! under `other`; a service once admitted stays (its entry is never removed),
//! so a retraction always lands where its trace was added.

use parking_lot::Mutex;
use rustc_hash::FxHashMap;

use crate::analyze::coverage::{count, Counts};
use crate::analyze::AnalyzedTrace;
use crate::model::Sym;

/// Most services with their own counts.
pub const MAX_SERVICES: usize = 1_000;

/// The counts `service` goes to: its own while there is room or once admitted,
/// else `other`'s.
fn entry(services: &mut FxHashMap<Sym, Counts>, service: Sym) -> &mut Counts {
    let key = if services.contains_key(&service) || services.len() < MAX_SERVICES {
        service
    } else {
        Sym::new("other")
    };
    services.entry(key).or_default()
}

#[derive(Default)]
pub struct Coverage {
    services: Mutex<FxHashMap<Sym, Counts>>,
}

impl Coverage {
    /// Adds the spans of `trace`, or takes them away (`retract`: the trace was
    /// analyzed again).
    pub fn record(&self, trace: &AnalyzedTrace, retract: bool) {
        let counts = count(trace);
        let mut services = self.services.lock();
        for (service, c) in counts {
            entry(&mut services, service).merge(&c, retract);
        }
    }

    /// Every service with spans, by name.
    pub fn services(&self) -> Vec<(Sym, Counts)> {
        let mut out: Vec<(Sym, Counts)> = self
            .services
            .lock()
            .iter()
            .filter(|(_, c)| c.spans > 0)
            .map(|(s, c)| (*s, *c))
            .collect();
        out.sort_by_key(|(s, _)| s.as_str());
        out
    }

    /// Adds the counts of a state file (a restart's history).
    pub fn import(&self, state: Vec<(Sym, Counts)>) {
        let mut services = self.services.lock();
        for (service, c) in state {
            entry(&mut services, service).merge(&c, false);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::analyze::analyze;
    use crate::assemble::assemble;
    use crate::model::{Span, SpanId, SpanKind, SpanSet, TraceId};

    fn trace(service: &str) -> AnalyzedTrace {
        let set: SpanSet = [Span::new(
            SpanId::from_u64(1).unwrap(),
            None,
            service,
            "GET /",
            SpanKind::Server,
            (0, 1_500),
        )]
        .into_iter()
        .collect();
        analyze(assemble(TraceId::from_bytes(&[4; 16]).unwrap(), set).unwrap())
    }

    #[test]
    fn services_past_the_cap_are_other_and_retractions_land_where_added() {
        let coverage = Coverage::default();
        for n in 0..MAX_SERVICES + 2 {
            coverage.record(&trace(&format!("svc{n}")), false);
        }
        coverage.record(&trace("svc0"), false);
        let services = coverage.services();
        assert_eq!(services.len(), MAX_SERVICES + 1);
        let spans = |name: &str| {
            services
                .iter()
                .find(|(s, _)| s.as_str() == name)
                .map(|(_, c)| c.spans)
        };
        assert_eq!((spans("svc0"), spans("other")), (Some(2), Some(2)));

        coverage.record(&trace(&format!("svc{}", MAX_SERVICES + 1)), true);
        coverage.record(&trace("svc1"), true);
        let services = coverage.services();
        assert_eq!(services.len(), MAX_SERVICES, "svc1 has no spans left");
        let other = services.iter().find(|(s, _)| s.as_str() == "other");
        assert_eq!(other.map(|(_, c)| c.spans), Some(1));

        // The state file's form restores the same counts.
        let restored = Coverage::default();
        restored.import(serde_json::from_str(&serde_json::to_string(&services).unwrap()).unwrap());
        assert_eq!(restored.services(), services);
    }
}
