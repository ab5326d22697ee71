//! What happens to a completed trace, in one place: assembly, analysis (the
//! critical path and the per-trace detectors), the store (aggregates, findings,
//! the call window), and the cross-trace detectors over that window, with the
//! budget map and the statement shapes they compute (and compute again over
//! part of the window, for an API request narrowed by time).
//!
//! The daemon ([`crate::daemon`]), `hopscope analyze` ([`crate::offline`]) and
//! the fuzz targets call these functions, so a file analyzed offline gets
//! exactly the diagnosis the daemon would give the same spans.

use std::borrow::Cow;

use crate::analyze::budget::{EntryBudget, Timeouts};
use crate::analyze::saturation::QueryShape;
use crate::analyze::{
    analyze_with, budget, saturation, AnalyzedTrace, Observation, Options, Thresholds,
};
use crate::assemble::{assemble, Completed};
use crate::forward::Forwarder;
use crate::model::{SpanSet, Warning, WarningCode};
use crate::stats::Stats;
use crate::store::wal::LogRange;
use crate::store::{Detection, Store, WindowSnapshot};

/// Assembles, analyzes (with `options`) and stores completed traces, each
/// also handed to `forward` when there is one (a trace analyzed again is
/// forwarded again, whole). Late
/// spans are merged with the stored trace, which is analyzed again. A trace
/// whose analysis panics is logged and counted (`analysis_panics`); the rest
/// of the batch is analyzed all the same.
pub fn finish(
    store: &Store,
    options: &Options,
    forward: Option<&Forwarder>,
    completed: Vec<Completed>,
) {
    let stats = store.stats();
    isolated(
        completed,
        |c| c.trace_id,
        |c| finish_one(store, options, forward, c),
        |trace_id| {
            Stats::add(&stats.analysis_panics, 1);
            tracing::error!(%trace_id, "the analysis of a trace panicked; counted in analysis_panics, the rest of the batch goes on");
        },
    );
}

/// Runs `each` on every item; one that panics is reported to `panicked` (by
/// its `name`) and the next item runs all the same.
fn isolated<T, N>(
    items: Vec<T>,
    name: impl Fn(&T) -> N,
    mut each: impl FnMut(T),
    mut panicked: impl FnMut(N),
) {
    for item in items {
        let id = name(&item);
        if std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| each(item))).is_err() {
            panicked(id);
        }
    }
}

/// [`finish`] for one trace.
fn finish_one(store: &Store, options: &Options, forward: Option<&Forwarder>, c: Completed) {
    let stats = store.stats();
    let started = std::time::Instant::now();
    let mut spans = c.spans;
    let late_count = spans.len();
    if c.late {
        if let Some(prev) = store.traces().get(&c.trace_id) {
            spans.append(SpanSet {
                spans: prev.trace.spans.clone(),
                arena: prev.trace.arena.clone(),
            });
        }
        Stats::add(&stats.traces_reanalyzed, 1);
    }
    // Counted however the analysis ends, so nothing waits for it forever.
    let _counted = CountOnDrop(&stats.traces_analyzed);
    let Some(mut trace) = assemble(c.trace_id, spans) else {
        // Buffered sets are never empty; count it done all the same.
        return;
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
    keep(
        store,
        analyze_with(trace, options),
        (c.late, c.log.map(LogRange::from)),
        forward,
    );
    stats.analysis.observe(started.elapsed());
}

/// Keeps an analyzed trace ([`Store::put`]) with its call records, the
/// window's, built here with the rest of the analysis (the store only keeps
/// them), after handing both to `forward`, if any.
pub fn keep(
    store: &Store,
    trace: AnalyzedTrace,
    (late, log): (bool, Option<LogRange>),
    forward: Option<&Forwarder>,
) {
    let calls = budget::call_records(&trace);
    if let Some(forward) = forward {
        forward.send(&trace, &calls);
    }
    store.put(trace, calls, late, log);
}

/// Adds one to a counter when dropped, also while a panic unwinds.
struct CountOnDrop<'a>(&'a std::sync::atomic::AtomicU64);

impl Drop for CountOnDrop<'_> {
    fn drop(&mut self) {
        Stats::add(self.0, 1);
    }
}

/// Runs the cross-trace detectors (timeout budgets, saturation) with
/// `thresholds` over the store's whole call window and publishes the pass
/// ([`Store::set_detection`]): what they report is merged into the findings,
/// replacing their counts ([`crate::store::FindingStore::set`]; look-alikes
/// an observation explains are withdrawn first: a slow query that was a lock
/// wait, seen before the whole staircase was in the window), and the budget
/// map and the statement shapes they computed are kept for the API.
///
/// `outside` holds the timeouts this window does not own (a detect replica's
/// peers', [`Timeouts`]; empty when the window holds whole traces).
pub fn detect_window(store: &Store, thresholds: &Thresholds, outside: Timeouts) {
    let (detection, observations) = detect(store.window(), thresholds, outside);
    store.set_detection(detection, observations);
}

/// The cross-trace detectors over `window` (with `thresholds`, and `outside`
/// timeouts): what they compute and what they report. Also what a merged
/// answer computes over every replica's window (`api::federate`).
pub fn detect(
    window: WindowSnapshot,
    thresholds: &Thresholds,
    outside: Timeouts,
) -> (Detection, Vec<Observation>) {
    let (budgets, mut observations) = budget::detect(&window.traces, thresholds, &outside);
    let (shapes, saturation, mut judged) = saturation::detect(&window.traces, thresholds);
    observations.extend(saturation);
    judged.extend(budget::judged_inversions(&budgets));
    let detection = Detection {
        window,
        inferred: Timeouts::of(&budgets),
        judged,
        budgets,
        shapes,
        outside,
    };
    (detection, observations)
}

/// The timeout budget map of the traces of the last detection pass
/// (`detection`) whose root started in `[since_ns, until_ns)`: the pass's own
/// when that is all of them, else computed over those with `thresholds` (a
/// budget map does not add up from parts: its timeouts and percentiles are
/// over exactly the traces selected).
pub fn budget_map<'a>(
    detection: &'a Detection,
    thresholds: &Thresholds,
    since_ns: Option<u64>,
    until_ns: Option<u64>,
) -> Cow<'a, [EntryBudget]> {
    match detection.window.narrowed(since_ns, until_ns) {
        None => Cow::Borrowed(&detection.budgets),
        Some(traces) => Cow::Owned(budget::budget_map(&traces, thresholds, &detection.outside)),
    }
}

/// The statement shapes of the traces of the last detection pass
/// (`detection`) whose root started in `[since_ns, until_ns)`: the pass's own
/// when that is all of them, else computed over those.
pub fn query_shapes(
    detection: &Detection,
    since_ns: Option<u64>,
    until_ns: Option<u64>,
) -> Cow<'_, [QueryShape]> {
    match detection.window.narrowed(since_ns, until_ns) {
        None => Cow::Borrowed(&detection.shapes),
        Some(traces) => Cow::Owned(saturation::query_shapes(&traces)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_item_that_panics_is_reported_and_the_rest_still_run() {
        let mut done = Vec::new();
        let mut failed = Vec::new();
        isolated(
            vec![1, 2, 3],
            |&n| n,
            |n| {
                assert_ne!(n, 2, "a bug in the analysis of trace 2");
                done.push(n);
            },
            |n| failed.push(n),
        );
        assert_eq!(done, [1, 3]);
        assert_eq!(failed, [2]);
    }
}
