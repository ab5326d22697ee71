//! What happens to a completed trace, in one place: assembly, analysis (the
//! critical path and the per-trace detectors), the store (aggregates, findings,
//! the call window), and the cross-trace detectors over that window.
//!
//! The daemon ([`crate::daemon`]), `hopscope analyze` ([`crate::offline`]) and
//! the fuzz targets call these functions, so a file analyzed offline gets
//! exactly the diagnosis the daemon would give the same spans.

use crate::analyze::{analyze_with, budget, saturation, Options, Thresholds};
use crate::assemble::{assemble, Completed};
use crate::model::{SpanSet, Warning, WarningCode};
use crate::stats::Stats;
use crate::store::Store;

/// Assembles, analyzes (with `options`) and stores completed traces. Late
/// spans are merged with the stored trace, which is analyzed again.
pub fn finish(store: &Store, options: &Options, completed: Vec<Completed>) {
    let stats = store.stats();
    for c in completed {
        let started = std::time::Instant::now();
        let mut spans = c.spans;
        let late_count = spans.len();
        if c.late {
            if let Some(prev) = store.traces.get(&c.trace_id) {
                spans.append(SpanSet {
                    spans: prev.trace.spans.clone(),
                    arena: prev.trace.arena.clone(),
                });
            }
            Stats::add(&stats.traces_reanalyzed, 1);
        }
        let Some(mut trace) = assemble(c.trace_id, spans) else {
            // Buffered sets are never empty; count it done all the same.
            Stats::add(&stats.traces_analyzed, 1);
            continue;
        };
        if c.late {
            trace.warnings.push(Warning {
                code: WarningCode::LateSpans,
                span_id: None,
                message: format!(
                    "{late_count} span(s) arrived after this trace was first analyzed; they were merged and the trace analyzed again"
                ),
            });
        }
        store.put(analyze_with(trace, options), c.late, c.log);
        stats.analysis.observe(started.elapsed());
        Stats::add(&stats.traces_analyzed, 1);
    }
}

/// Runs the cross-trace detectors (timeout budgets, saturation) with
/// `thresholds` over the store's whole call window and merges what they report into the findings,
/// replacing their counts ([`crate::store::FindingStore::set`]); look-alikes
/// an observation explains are withdrawn first (a slow query that was a lock
/// wait, seen before the whole staircase was in the window).
pub fn detect_window(store: &Store, thresholds: &Thresholds) {
    let window = store.window.snapshot(None, None);
    for o in budget::detect(&window, thresholds)
        .into_iter()
        .chain(saturation::detect(&window, thresholds))
    {
        store.findings.withdraw_explained_by(&o);
        store.findings.set(o);
    }
}
