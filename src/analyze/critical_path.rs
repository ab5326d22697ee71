//! The critical path of one trace: at every instant of the root span, the span the
//! request was waiting on.
//!
//! Walk back from the end of the root: the request waits on the child that
//! finished last before the cursor; time not covered by such a child is the span's
//! own. Children are clipped to their parent's interval (the part of a child after
//! its parent ended was not waited for). Asynchronous children (CONSUMER spans, and
//! any child of a PRODUCER) are not waited for and stay off the path, as in Jaeger
//! UI, which drops FOLLOWS_FROM children; assembly warns about them. This is the algorithm of Jaeger UI's
//! critical-path view, made iterative so a 10,000-deep chain does not overflow the
//! stack. The segments partition the root's interval, so their durations add up to
//! the root's duration exactly.

use crate::model::{SpanKind, Trace, Warning, WarningCode};

/// A piece of the critical path: span `span` was the one being waited on in
/// `[start_ns, end_ns)` (adjusted for clock skew).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Segment {
    pub span: u32,
    pub start_ns: u64,
    pub end_ns: u64,
}

#[derive(Debug, Clone)]
pub struct CriticalPath {
    /// In time order; consecutive, covering the root span's interval.
    pub segments: Vec<Segment>,
    /// Time each span spent on the critical path.
    pub critical_ns: Vec<u64>,
    /// Time each span was not covered by any of its children (clipped to the span).
    pub self_ns: Vec<u64>,
    /// Where timing alone could not say what blocked.
    pub notes: Vec<Warning>,
}

#[derive(Clone, Copy)]
struct Candidate {
    span: u32,
    start: u64,
    end: u64,
}

struct Frame {
    span: u32,
    start: u64,
    cursor: u64,
    /// This frame's children in `scratch[lo..hi]`, sorted by clipped end; `hi` shrinks.
    lo: usize,
    hi: usize,
    noted_overlap: bool,
}

/// Computes the critical path of `trace` from its root.
pub fn critical_path(trace: &Trace) -> CriticalPath {
    let n = trace.len();
    let mut segments = Vec::new();
    let mut notes = Vec::new();
    let mut scratch: Vec<Candidate> = Vec::new();
    let mut stack: Vec<Frame> = Vec::new();

    let push = |stack: &mut Vec<Frame>, scratch: &mut Vec<Candidate>, c: Candidate| {
        let lo = scratch.len();
        let producer = trace.span(c.span).kind == SpanKind::Producer;
        scratch.extend(trace.children(c.span).iter().filter_map(|&k| {
            // A producer does not wait for its consumers.
            if producer || trace.span(k).kind == SpanKind::Consumer {
                return None;
            }
            let start = trace.start(k).max(c.start);
            let end = trace.end(k).min(c.end);
            (end > start).then_some(Candidate {
                span: k,
                start,
                end,
            })
        }));
        scratch[lo..].sort_by_key(|k| (k.end, k.start));
        stack.push(Frame {
            span: c.span,
            start: c.start,
            cursor: c.end,
            lo,
            hi: scratch.len(),
            noted_overlap: false,
        });
    };

    let root = Candidate {
        span: trace.root,
        start: trace.start(trace.root),
        end: trace.end(trace.root),
    };
    push(&mut stack, &mut scratch, root);

    while let Some(frame) = stack.last_mut() {
        let mut chosen = None;
        while frame.hi > frame.lo {
            frame.hi -= 1;
            let c = scratch[frame.hi];
            if c.end <= frame.cursor {
                chosen = Some(c);
                break;
            }
            if c.start < frame.cursor && !frame.noted_overlap {
                frame.noted_overlap = true;
                let parent = trace.span(frame.span);
                notes.push(Warning {
                    code: WarningCode::OverlappingChildren,
                    span_id: Some(parent.span_id),
                    message: format!(
                        "children of span {} ({} {}) overlap; the critical path follows the one that finished last, but span {} was running at the same time and may have blocked too",
                        parent.span_id,
                        parent.service,
                        parent.operation,
                        trace.span(c.span).span_id
                    ),
                });
            }
        }
        match chosen {
            Some(c) => {
                if c.end < frame.cursor {
                    segments.push(Segment {
                        span: frame.span,
                        start_ns: c.end,
                        end_ns: frame.cursor,
                    });
                }
                frame.cursor = c.start;
                push(&mut stack, &mut scratch, c);
            }
            None => {
                if frame.cursor > frame.start {
                    segments.push(Segment {
                        span: frame.span,
                        start_ns: frame.start,
                        end_ns: frame.cursor,
                    });
                }
                scratch.truncate(frame.lo);
                stack.pop();
            }
        }
    }
    segments.reverse();

    let mut critical_ns = vec![0u64; n];
    for s in &segments {
        critical_ns[s.span as usize] += s.end_ns - s.start_ns;
    }

    CriticalPath {
        segments,
        critical_ns,
        self_ns: (0..n as u32).map(|i| self_time(trace, i)).collect(),
        notes,
    }
}

/// The span's duration minus the union of its children's intervals (clipped).
fn self_time(trace: &Trace, span: u32) -> u64 {
    let (start, end) = (trace.start(span), trace.end(span));
    let mut covered = 0;
    let mut reach = start;
    // Children are sorted by start time.
    for &c in trace.children(span) {
        let cs = trace.start(c).max(reach);
        let ce = trace.end(c).min(end);
        if ce > cs {
            covered += ce - cs;
            reach = ce;
        }
    }
    (end - start) - covered
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::analyze::testing::tree as trace;

    fn path(t: &Trace, p: &CriticalPath) -> Vec<(u64, u64, u64)> {
        p.segments
            .iter()
            .map(|s| {
                (
                    t.span(s.span).span_id.to_bytes()[7] as u64,
                    s.start_ns,
                    s.end_ns,
                )
            })
            .collect()
    }

    #[test]
    fn sequential_children_are_walked_back_from_the_end() {
        let t = trace(&[(1, 0, 0, 100), (2, 1, 10, 40), (3, 1, 40, 90)]);
        let p = critical_path(&t);
        assert_eq!(
            path(&t, &p),
            vec![(1, 0, 10), (2, 10, 40), (3, 40, 90), (1, 90, 100)]
        );
        assert!(p.notes.is_empty());
    }

    #[test]
    fn a_sibling_overlapping_the_chosen_one_is_noted_as_uncertain() {
        // 2 runs 0–50 and 3 runs 40–100: at 0–40 the parent may have waited on 2.
        let t = trace(&[(1, 0, 0, 100), (2, 1, 0, 50), (3, 1, 40, 100)]);
        let p = critical_path(&t);
        assert_eq!(path(&t, &p), vec![(1, 0, 40), (3, 40, 100)]);
        assert_eq!(p.notes.len(), 1);
        assert_eq!(p.notes[0].code, WarningCode::OverlappingChildren);
        assert_eq!(p.self_ns[0], 0, "self time counts any covering child");
    }

    #[test]
    fn a_parallel_fan_out_follows_the_last_to_finish_without_doubt() {
        let t = trace(&[(1, 0, 0, 100), (2, 1, 10, 50), (3, 1, 10, 90)]);
        let p = critical_path(&t);
        assert_eq!(path(&t, &p), vec![(1, 0, 10), (3, 10, 90), (1, 90, 100)]);
        assert!(p.notes.is_empty());
    }

    #[test]
    fn a_ten_thousand_deep_chain_does_not_overflow() {
        let n = 10_000u64;
        let spans: Vec<_> = (1..=n).map(|i| (i, i - 1, i, 2 * n + 10 - i)).collect();
        let t = trace(&spans);
        let p = critical_path(&t);
        let total: u64 = p.segments.iter().map(|s| s.end_ns - s.start_ns).sum();
        assert_eq!(total, t.end(t.root) - t.start(t.root));
        assert_eq!(p.segments.len() as u64, 2 * n - 1);
    }
}
