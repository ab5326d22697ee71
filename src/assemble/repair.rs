//! Turns the spans of one trace, as they arrived, into a [`Trace`]: one tree,
//! whatever the input. Nothing here panics or loops on bad parent links.
//!
//! Assembly is a list of named adjusters run in order, as Jaeger's query
//! adjusters are: [`SPAN_ADJUSTERS`] repair the spans and their parent links
//! before there is a tree, [`TREE_ADJUSTERS`] work on the tree. Each adjuster
//! says what it repairs and records every repair as a [`Warning`], so a trace's
//! warnings come out in the order of the lists. A new repair is a new function
//! in one of the lists, placed where what it needs is already repaired.

use rustc_hash::FxHashMap;

use crate::model::{
    AttrArena, Span, SpanId, SpanKind, SpanSet, Trace, TraceId, Warning, WarningCode,
};

const NS_PER_MS: f64 = 1e6;

fn ms(ns: u64) -> f64 {
    ns as f64 / NS_PER_MS
}

/// Assembles spans in any order into one tree. Returns `None` for no spans.
///
/// The result does not depend on arrival order: spans are sorted by id first, and
/// duplicates resolve to the same copy whichever arrived first.
pub fn assemble(trace_id: TraceId, set: SpanSet) -> Option<Trace> {
    if set.spans.is_empty() {
        return None;
    }
    let mut draft = Draft::new(set);
    for adjust in SPAN_ADJUSTERS {
        adjust(&mut draft);
    }
    let mut trace = draft.into_tree(trace_id);
    for adjust in TREE_ADJUSTERS {
        adjust(&mut trace);
    }
    Some(trace)
}

/// An adjuster of the spans and their parent links, before there is a tree.
type SpanAdjuster = fn(&mut Draft);

/// An adjuster of the assembled tree.
type TreeAdjuster = fn(&mut Trace);

/// The adjusters of spans and links, in the order they run: each relies on
/// those before it (parents are resolved among the spans left after
/// duplicates; the root is chosen once no cycle is left).
const SPAN_ADJUSTERS: [SpanAdjuster; 5] = [
    drop_duplicates,
    clamp_end_before_start,
    resolve_parents,
    break_cycles,
    attach_to_root,
];

/// The adjusters of the tree, in the order they run: children are sorted by
/// their skew-adjusted start, and timing is judged on adjusted times.
const TREE_ADJUSTERS: [TreeAdjuster; 3] = [adjust_clock_skew, sort_children, report_timing];

/// The spans of one trace while [`SPAN_ADJUSTERS`] repair them.
struct Draft {
    spans: Vec<Span>,
    arena: AttrArena,
    /// Each span id's position in `spans` ([`resolve_parents`] fills it).
    index: FxHashMap<SpanId, u32>,
    /// Each span's parent, as a position in `spans`; `None` for no parent (yet).
    parent: Vec<Option<u32>>,
    /// Spans left without their named parent (missing, themselves, or cut
    /// out of a cycle), as opposed to spans that name none.
    orphan: Vec<bool>,
    /// The root's position ([`attach_to_root`] chooses it).
    root: u32,
    warnings: Vec<Warning>,
}

impl Draft {
    fn new(set: SpanSet) -> Draft {
        Draft {
            spans: set.spans,
            arena: set.arena,
            index: FxHashMap::default(),
            parent: Vec::new(),
            orphan: Vec::new(),
            root: 0,
            warnings: Vec::new(),
        }
    }

    /// The tree: children in compressed rows (unsorted until
    /// [`sort_children`]), no clock shift yet.
    fn into_tree(self, trace_id: TraceId) -> Trace {
        let n = self.spans.len();
        let mut counts = vec![0u32; n + 1];
        for p in self.parent.iter().flatten() {
            counts[*p as usize + 1] += 1;
        }
        for i in 0..n {
            counts[i + 1] += counts[i];
        }
        let child_offsets = counts.clone();
        let mut fill = counts;
        let mut child_list = vec![0u32; n.saturating_sub(1)];
        for (i, p) in self.parent.iter().enumerate() {
            if let Some(p) = p {
                child_list[fill[*p as usize] as usize] = i as u32;
                fill[*p as usize] += 1;
            }
        }
        Trace {
            trace_id,
            spans: self.spans,
            arena: self.arena,
            root: self.root,
            parent: self.parent,
            child_offsets,
            child_list,
            shift_ns: vec![0; n],
            warnings: self.warnings,
        }
    }
}

/// Duplicates (the same span id more than once: re-sent exports, retries):
/// keeps the longest copy, then the earliest start, then the first in a total
/// order on content, so the copy kept does not depend on arrival order.
/// Records a `DuplicateSpan` per span whose copies differ, and one for all the
/// identical copies dropped.
fn drop_duplicates(draft: &mut Draft) {
    let Draft {
        spans,
        arena,
        warnings,
        ..
    } = draft;
    // The order is total up to identical copies, so an unstable sort is enough.
    spans.sort_unstable_by(|a, b| {
        a.span_id.cmp(&b.span_id).then_with(|| {
            b.end_ns
                .cmp(&a.end_ns)
                .then(a.start_ns.cmp(&b.start_ns))
                .then_with(|| content_order(arena, a, b))
        })
    });
    let before = spans.len();
    let mut differing = 0;
    spans.dedup_by(|later, kept| {
        let same = later.span_id == kept.span_id;
        let identical = (later.start_ns, later.end_ns) == (kept.start_ns, kept.end_ns)
            && content_order(arena, later, kept).is_eq();
        if same && !identical {
            differing += 1;
            warnings.push(Warning {
                code: WarningCode::DuplicateSpan,
                span_id: Some(kept.span_id),
                message: format!(
                    "span {} arrived more than once with different content; the longest copy was kept",
                    kept.span_id
                ),
            });
        }
        same
    });
    let exact_copies = before - spans.len() - differing;
    if exact_copies > 0 {
        warnings.push(Warning {
            code: WarningCode::DuplicateSpan,
            span_id: None,
            message: format!("{exact_copies} identical span copies (re-sent exports) were dropped"),
        });
    }
}

/// A span that ends before it starts gets a duration of 0 (its start is
/// kept). Records an `EndBeforeStart` per such span.
fn clamp_end_before_start(draft: &mut Draft) {
    for span in &mut draft.spans {
        if span.end_ns < span.start_ns {
            draft.warnings.push(Warning {
                code: WarningCode::EndBeforeStart,
                span_id: Some(span.span_id),
                message: format!(
                    "span {} ends {:.3} ms before it starts; its duration was set to 0",
                    span.span_id,
                    ms(span.start_ns - span.end_ns)
                ),
            });
            span.end_ns = span.start_ns;
        }
    }
}

/// Resolves parent ids to positions; a span that names itself or a parent
/// that never arrived is left parentless and marked an orphan. Records a
/// `SelfParent` per span that names itself (missing parents are recorded by
/// [`attach_to_root`], once cycles are cut).
fn resolve_parents(draft: &mut Draft) {
    let Draft {
        spans,
        index,
        parent,
        orphan,
        warnings,
        ..
    } = draft;
    *index = spans
        .iter()
        .enumerate()
        .map(|(i, s)| (s.span_id, i as u32))
        .collect();
    *orphan = vec![false; spans.len()];
    *parent = spans
        .iter()
        .enumerate()
        .map(|(i, span)| {
            let p = span.parent_id?;
            if p == span.span_id {
                warnings.push(Warning {
                    code: WarningCode::SelfParent,
                    span_id: Some(span.span_id),
                    message: format!("span {} names itself as its parent", span.span_id),
                });
                orphan[i] = true;
                return None;
            }
            let found = index.get(&p).copied();
            if found.is_none() {
                orphan[i] = true;
            }
            found
        })
        .collect();
}

/// Chooses the root (the longest parentless span, spans that name no parent
/// before orphans, then the earliest) and attaches every other parentless span
/// under it, for attribution. Records `MultipleRoots` when several spans name
/// no parent, and an `Orphan` per span whose parent never arrived (the root
/// too, when the trace's own root is missing).
fn attach_to_root(draft: &mut Draft) {
    let Draft {
        spans,
        index,
        parent,
        orphan,
        root,
        warnings,
        ..
    } = draft;
    let n = spans.len();
    *root = (0..n)
        .filter(|&i| parent[i].is_none())
        .min_by_key(|&i| {
            let s = &spans[i];
            (orphan[i], std::cmp::Reverse(s.duration_ns()), s.start_ns)
        })
        .expect("cycle breaking leaves at least one parentless span") as u32;
    let root = *root;

    let true_roots = (0..n).filter(|&i| spans[i].parent_id.is_none()).count();
    if true_roots > 1 {
        warnings.push(Warning {
            code: WarningCode::MultipleRoots,
            span_id: Some(spans[root as usize].span_id),
            message: format!(
                "{true_roots} spans have no parent; span {} (the longest) is the root and the others were attached under it",
                spans[root as usize].span_id
            ),
        });
    }
    for i in 0..n {
        if i as u32 != root && parent[i].is_none() {
            if orphan[i] {
                if let Some(missing) = spans[i].parent_id.filter(|p| !index.contains_key(p)) {
                    warnings.push(Warning {
                        code: WarningCode::Orphan,
                        span_id: Some(spans[i].span_id),
                        message: format!(
                            "parent {missing} of span {} never arrived; the span was attached under the root for attribution",
                            spans[i].span_id
                        ),
                    });
                }
            }
            parent[i] = Some(root);
        }
    }
    if orphan[root as usize] {
        if let Some(missing) = spans[root as usize]
            .parent_id
            .filter(|p| !index.contains_key(p))
        {
            warnings.push(Warning {
                code: WarningCode::Orphan,
                span_id: Some(spans[root as usize].span_id),
                message: format!(
                    "the trace's root span never arrived (span {} names missing parent {missing}); span {} is analyzed as the root",
                    spans[root as usize].span_id, spans[root as usize].span_id
                ),
            });
        }
    }
}

/// A total order on what else a span says, so that equal-time duplicates resolve
/// to the same copy whatever their arrival order.
fn content_order(arena: &AttrArena, a: &Span, b: &Span) -> std::cmp::Ordering {
    a.parent_id
        .cmp(&b.parent_id)
        .then((a.kind as u8).cmp(&(b.kind as u8)))
        .then((a.status as u8).cmp(&(b.status as u8)))
        .then_with(|| a.service.as_str().cmp(b.service.as_str()))
        .then_with(|| a.operation.as_str().cmp(b.operation.as_str()))
        .then_with(|| a.status_message().cmp(&b.status_message()))
        .then_with(|| arena.bytes(a.attrs).cmp(arena.bytes(b.attrs)))
        .then(a.events().len().cmp(&b.events().len()))
        .then(a.links().len().cmp(&b.links().len()))
}

/// Cuts every cycle of parent links at its earliest-starting span, which
/// becomes a parentless orphan. Iterative: each span is walked once. Records a
/// `ParentCycle` per cycle.
fn break_cycles(draft: &mut Draft) {
    let Draft {
        spans,
        parent,
        orphan,
        warnings,
        ..
    } = draft;
    const UNSEEN: u32 = u32::MAX;
    const DONE: u32 = u32::MAX - 1;
    let n = spans.len();
    let mut state = vec![UNSEEN; n];
    let mut path: Vec<usize> = Vec::new();
    for start in 0..n {
        if state[start] != UNSEEN {
            continue;
        }
        path.clear();
        let mut cur = start;
        loop {
            if state[cur] == DONE {
                break;
            }
            if state[cur] == start as u32 {
                // `cur` is on the current walk: the walk from `cur` onwards is a cycle.
                let pos = path.iter().position(|&p| p == cur).expect("on the path");
                let cycle = &path[pos..];
                let cut = *cycle
                    .iter()
                    .min_by_key(|&&i| (spans[i].start_ns, spans[i].span_id))
                    .expect("non-empty cycle");
                parent[cut] = None;
                orphan[cut] = true;
                let ids: Vec<String> = cycle
                    .iter()
                    .map(|&i| spans[i].span_id.to_string())
                    .collect();
                warnings.push(Warning {
                    code: WarningCode::ParentCycle,
                    span_id: Some(spans[cut].span_id),
                    message: format!(
                        "parent links form a cycle ({}); it was cut above span {}",
                        ids.join(" → "),
                        spans[cut].span_id
                    ),
                });
                break;
            }
            state[cur] = start as u32;
            path.push(cur);
            match parent[cur] {
                Some(p) => cur = p as usize,
                None => break,
            }
        }
        for &i in &path {
            state[i] = DONE;
        }
    }
}

/// Sorts each span's children by adjusted start time (then id), in place, so
/// the tree reads in time order whatever the arrival order. Records nothing.
fn sort_children(trace: &mut Trace) {
    let mut list = std::mem::take(&mut trace.child_list);
    for w in trace.child_offsets.windows(2) {
        list[w[0] as usize..w[1] as usize]
            .sort_unstable_by_key(|&c| (trace.start(c), trace.spans[c as usize].span_id));
    }
    trace.child_list = list;
}

/// Clock skew between hosts: walks the tree top-down; a SERVER span that starts
/// outside its CLIENT parent of another service is shifted (with its subtree)
/// to the middle of the client span, or to its start when it is longer, as
/// Jaeger's adjuster does. The spans keep their times; the shift is kept
/// beside them. Records a `ClockSkew` per shifted span.
fn adjust_clock_skew(trace: &mut Trace) {
    let mut stack = vec![trace.root];
    while let Some(p) = stack.pop() {
        for k in 0..trace.children(p).len() {
            let c = trace.children(p)[k];
            let (ps, cs) = (trace.span(p), trace.span(c));
            let mut shift = trace.shift_ns[p as usize];
            if ps.kind == SpanKind::Client
                && cs.kind == SpanKind::Server
                && ps.service != cs.service
            {
                let (pstart, pend) = (trace.start(p), trace.end(p));
                let cstart = cs.start_ns.saturating_add_signed(shift);
                // Starting before the call or after it ended is impossible without
                // skew. Ending after it is not: the caller may have given up (a
                // timeout), which is reported as a child outliving its parent.
                if cstart < pstart || cstart >= pend {
                    let (pdur, cdur) = (pend - pstart, cs.duration_ns());
                    let target = if cdur <= pdur {
                        pstart + (pdur - cdur) / 2
                    } else {
                        pstart
                    };
                    shift = (target as i128 - cs.start_ns as i128)
                        .clamp(i64::MIN as i128, i64::MAX as i128)
                        as i64;
                    let delta = shift.saturating_sub(trace.shift_ns[p as usize]);
                    let message = format!(
                        "server span {} ({}) did not fit in its client span {} ({}); shifted by {:+.3} ms for attribution (clock skew between hosts)",
                        cs.span_id,
                        cs.service,
                        ps.span_id,
                        ps.service,
                        delta as f64 / NS_PER_MS
                    );
                    trace.warnings.push(Warning {
                        code: WarningCode::ClockSkew,
                        span_id: Some(cs.span_id),
                        message,
                    });
                }
            }
            trace.shift_ns[c as usize] = shift;
            stack.push(c);
        }
    }
}

/// Repairs nothing, reports what timing alone cannot settle: a `Links` per
/// span with links, an `AsyncChild` per CONSUMER child or child of a PRODUCER
/// (left off the critical path), and per other child a `ChildOutlivesParent`
/// or `ChildStartsBeforeParent` when it runs outside its parent's interval.
fn report_timing(trace: &mut Trace) {
    let mut found = Vec::new();
    for c in 0..trace.spans.len() as u32 {
        let span = trace.span(c);
        if !span.links().is_empty() {
            found.push(Warning {
                code: WarningCode::Links,
                span_id: Some(span.span_id),
                message: format!(
                    "span {} has {} link(s) (e.g. FOLLOWS_FROM); linked work is not on this trace's critical path",
                    span.span_id,
                    span.links().len()
                ),
            });
        }
        let Some(p) = trace.parent[c as usize] else {
            continue;
        };
        let parent = trace.span(p);
        if span.kind == SpanKind::Consumer || parent.kind == SpanKind::Producer {
            found.push(Warning {
                code: WarningCode::AsyncChild,
                span_id: Some(span.span_id),
                message: format!(
                    "span {} is an asynchronous child ({:?} under {:?}): it is left off the critical path because span {} need not have waited for it, which timing alone cannot confirm",
                    span.span_id, span.kind, parent.kind, parent.span_id
                ),
            });
            continue;
        }
        let overrun = trace.ran_past(c, p);
        if overrun > 0 {
            found.push(Warning {
                code: WarningCode::ChildOutlivesParent,
                span_id: Some(span.span_id),
                message: format!(
                    "span {} ({} {}) kept running {:.3} ms after its parent {} ended: the caller stopped waiting and that work was wasted",
                    span.span_id,
                    span.service,
                    span.operation,
                    ms(overrun),
                    parent.span_id
                ),
            });
        }
        if trace.start(c) < trace.start(p) {
            found.push(Warning {
                code: WarningCode::ChildStartsBeforeParent,
                span_id: Some(span.span_id),
                message: format!(
                    "span {} starts {:.3} ms before its parent {}; only the part inside the parent is attributed",
                    span.span_id,
                    ms(trace.start(p) - trace.start(c)),
                    parent.span_id
                ),
            });
        }
    }
    trace.warnings.extend(found);
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{SpanId, SpanKind};

    fn id(n: u64) -> SpanId {
        SpanId::from_u64(n).unwrap()
    }

    fn span(n: u64, parent: u64, service: &str, kind: SpanKind, t: (u64, u64)) -> Span {
        Span::new(id(n), SpanId::from_u64(parent), service, "op", kind, t)
    }

    fn set(spans: Vec<Span>) -> SpanSet {
        SpanSet {
            spans,
            ..SpanSet::default()
        }
    }

    fn codes(t: &Trace) -> Vec<WarningCode> {
        t.warnings.iter().map(|w| w.code).collect()
    }

    fn tid() -> TraceId {
        TraceId::from_bytes(&[9; 16]).unwrap()
    }

    #[test]
    fn cycles_and_self_parents_are_cut_into_one_tree() {
        // 1 is the root; 2 → 3 → 4 → 2 is a cycle; 5 names itself.
        let spans = vec![
            span(1, 0, "a", SpanKind::Server, (0, 100)),
            span(2, 4, "a", SpanKind::Internal, (10, 20)),
            span(3, 2, "a", SpanKind::Internal, (12, 18)),
            span(4, 3, "a", SpanKind::Internal, (13, 17)),
            span(5, 5, "a", SpanKind::Internal, (30, 40)),
        ];
        let t = assemble(tid(), set(spans)).unwrap();
        assert_eq!(t.root_span().span_id, id(1));
        let c = codes(&t);
        assert!(c.contains(&WarningCode::ParentCycle), "{c:?}");
        assert!(c.contains(&WarningCode::SelfParent), "{c:?}");
        assert!(
            !c.contains(&WarningCode::Orphan),
            "a cut cycle is not a missing parent: {c:?}"
        );
        // Every span reaches the root.
        for i in 0..t.len() as u32 {
            let mut cur = i;
            let mut steps = 0;
            while let Some(p) = t.parent[cur as usize] {
                cur = p;
                steps += 1;
                assert!(steps <= t.len());
            }
            assert_eq!(cur, t.root);
        }
        // The cycle was cut at its earliest span (2), which now hangs under the root.
        let two = t.spans.iter().position(|s| s.span_id == id(2)).unwrap();
        assert_eq!(t.parent[two], Some(t.root));
    }

    #[test]
    fn duplicates_and_reversed_times_are_repaired_and_reported() {
        let mut reversed = span(2, 1, "a", SpanKind::Internal, (50, 40));
        reversed.operation = crate::model::Sym::new("reversed");
        let spans = vec![
            span(1, 0, "a", SpanKind::Server, (0, 100)),
            span(1, 0, "a", SpanKind::Server, (0, 100)),
            span(3, 1, "a", SpanKind::Internal, (10, 20)),
            span(3, 1, "a", SpanKind::Internal, (10, 30)),
            reversed,
        ];
        let t = assemble(tid(), set(spans)).unwrap();
        assert_eq!(t.len(), 3);
        let three = t.spans.iter().find(|s| s.span_id == id(3)).unwrap();
        assert_eq!(three.end_ns, 30, "the longest copy is kept");
        let two = t.spans.iter().find(|s| s.span_id == id(2)).unwrap();
        assert_eq!((two.start_ns, two.end_ns), (50, 50));
        let c = codes(&t);
        assert_eq!(
            c.iter()
                .filter(|c| **c == WarningCode::DuplicateSpan)
                .count(),
            2,
            "{c:?}"
        );
        assert!(c.contains(&WarningCode::EndBeforeStart));
    }

    #[test]
    fn several_roots_attach_under_the_longest() {
        let spans = vec![
            span(1, 0, "a", SpanKind::Server, (0, 50)),
            span(2, 0, "b", SpanKind::Server, (0, 100)),
        ];
        let t = assemble(tid(), set(spans)).unwrap();
        assert_eq!(t.root_span().span_id, id(2));
        assert!(codes(&t).contains(&WarningCode::MultipleRoots));
    }

    #[test]
    fn a_skewed_server_span_is_centred_in_its_client_and_reported() {
        // The server's host clock runs 1 s ahead: its span starts after the client ended.
        let spans = vec![
            span(1, 0, "web", SpanKind::Client, (0, 100)),
            span(2, 1, "api", SpanKind::Server, (1_000, 1_080)),
            span(3, 2, "api", SpanKind::Internal, (1_010, 1_070)),
        ];
        let t = assemble(tid(), set(spans)).unwrap();
        let idx = |n| t.spans.iter().position(|s| s.span_id == id(n)).unwrap() as u32;
        assert_eq!((t.start(idx(2)), t.end(idx(2))), (10, 90));
        assert_eq!(
            (t.start(idx(3)), t.end(idx(3))),
            (20, 80),
            "the subtree moves along"
        );
        let c = codes(&t);
        assert_eq!(c, vec![WarningCode::ClockSkew], "{c:?}");
        assert_eq!(
            t.spans[idx(2) as usize].start_ns,
            1_000,
            "the span itself keeps its times"
        );
    }

    #[test]
    fn a_same_service_child_outside_its_parent_is_not_called_skew() {
        let spans = vec![
            span(1, 0, "web", SpanKind::Server, (100, 200)),
            span(2, 1, "web", SpanKind::Internal, (90, 250)),
        ];
        let t = assemble(tid(), set(spans)).unwrap();
        let c = codes(&t);
        assert!(c.contains(&WarningCode::ChildOutlivesParent), "{c:?}");
        assert!(c.contains(&WarningCode::ChildStartsBeforeParent), "{c:?}");
        assert!(!c.contains(&WarningCode::ClockSkew), "{c:?}");
    }

    #[test]
    fn a_child_ending_within_whole_millisecond_stamps_did_not_outlive_its_parent() {
        const MS: u64 = 1_000_000;
        let base = 1_700_000_000_000 * MS;
        // Node's express: starts from Date.now(), ends 0.4 ms apart by the
        // finer clock. A real overrun of 30 ms is still reported.
        let express = |child_end| {
            let spans = vec![
                span(
                    1,
                    0,
                    "web",
                    SpanKind::Server,
                    (base, base + 12 * MS + 100_000),
                ),
                span(2, 1, "web", SpanKind::Internal, (base + MS, child_end)),
            ];
            codes(&assemble(tid(), set(spans)).unwrap())
        };
        assert_eq!(express(base + 12 * MS + 500_000), vec![]);
        assert_eq!(express(base + 13 * MS + 100_000), vec![], "up to 1 ms");
        assert_eq!(
            express(base + 42 * MS + 100_000),
            vec![WarningCode::ChildOutlivesParent]
        );
        // Nanosecond stamps tell 0.4 ms apart.
        let spans = vec![
            span(1, 0, "web", SpanKind::Server, (base + 3, base + 12 * MS)),
            span(
                2,
                1,
                "web",
                SpanKind::Internal,
                (base + MS + 7, base + 12 * MS + 400_000),
            ),
        ];
        assert_eq!(
            codes(&assemble(tid(), set(spans)).unwrap()),
            vec![WarningCode::ChildOutlivesParent]
        );
    }

    #[test]
    fn async_children_are_flagged_as_uncertain() {
        let spans = vec![
            span(1, 0, "web", SpanKind::Producer, (0, 10)),
            span(2, 1, "worker", SpanKind::Consumer, (20, 90)),
        ];
        let t = assemble(tid(), set(spans)).unwrap();
        assert_eq!(codes(&t), vec![WarningCode::AsyncChild]);
    }
}
