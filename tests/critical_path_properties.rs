//! Property tests of assembly and the critical path on random, broken span trees:
//! random parent links (missing parents, self-parents, cycles, duplicates), random
//! times (children outliving or preceding their parents, zero-length and
//! end-before-start spans, time 0 and a realistic epoch) and CLIENT/SERVER pairs
//! across services, so the clock-skew repair runs too.

mod support;

use std::collections::BTreeMap;

use hopscope::analyze::{analyze, AnalyzedTrace};
use hopscope::assemble::assemble;
use hopscope::model::{Span, SpanId, SpanKind, Sym, Trace, TraceId, WarningCode};
use proptest::prelude::*;
use support::checks::{check_analysis, check_tree};

fn trace_id() -> TraceId {
    TraceId::parse_hex("4bf92f3577b34da6a3ce929d0e0e4736").expect("valid")
}

fn id(n: u64) -> SpanId {
    SpanId::from_u64(n).expect("nonzero")
}

fn span(span_id: u64, parent: Option<u64>, start_ns: u64, end_ns: u64) -> Span {
    Span::new(
        id(span_id),
        parent.map(id),
        "frontend",
        "op",
        SpanKind::Internal,
        (start_ns, end_ns),
    )
}

// ---------------------------------------------------------------------------
// Generators
// ---------------------------------------------------------------------------

/// How a generated span names its parent.
#[derive(Debug, Clone)]
enum ParentLink {
    /// No parent: a (possibly extra) root.
    Root,
    /// The span at this position of the generated list. Any position, so links
    /// to later spans, and therefore cycles, occur.
    Index(usize),
    /// Itself.
    SelfParent,
    /// A span that never arrives.
    Missing(u64),
}

#[derive(Debug, Clone)]
struct Gen {
    /// `None`: a fresh id; `Some(k)` with `k` earlier: a duplicate of span `k`'s id.
    dup_of: Option<usize>,
    /// For a duplicate: an exact copy of the earlier span (a re-sent export)
    /// rather than a copy with its own times, parent and kind.
    exact_copy: bool,
    parent: ParentLink,
    start: u64,
    len: u64,
    /// The span ends `len` before it starts.
    reversed: bool,
    kind: SpanKind,
    service: usize,
}

const SERVICES: [&str; 3] = ["frontend", "orders", "db"];

fn kind() -> impl Strategy<Value = SpanKind> {
    prop_oneof![
        3 => Just(SpanKind::Client),
        3 => Just(SpanKind::Server),
        2 => Just(SpanKind::Internal),
        1 => Just(SpanKind::Unspecified),
        1 => Just(SpanKind::Producer),
        1 => Just(SpanKind::Consumer),
    ]
}

fn gen_span(max: usize) -> impl Strategy<Value = Gen> {
    (
        prop::option::weighted(0.1, 0..max),
        prop::bool::ANY,
        prop_oneof![
            2 => Just(ParentLink::Root),
            12 => (0..max).prop_map(ParentLink::Index),
            1 => Just(ParentLink::SelfParent),
            1 => (1u64..4).prop_map(|k| ParentLink::Missing(1_000_000 + k)),
        ],
        0u64..2_000,
        prop_oneof![1 => Just(0u64), 6 => 1u64..1_500],
        prop::bool::weighted(0.05),
        kind(),
        0..SERVICES.len(),
    )
        .prop_map(
            |(dup_of, exact_copy, parent, start, len, reversed, kind, service)| Gen {
                dup_of,
                exact_copy,
                parent,
                start,
                len,
                reversed,
                kind,
                service,
            },
        )
}

/// Builds the spans. Times are `base + start * scale`, so both time 0 (where
/// negative clock-skew shifts saturate) and a realistic epoch are covered.
///
/// A duplicate that is not an exact copy always differs from the earlier copies
/// of its id in start or end: two copies with the same times but different
/// content are kept in arrival order, which is the src bug reproduced by
/// `duplicate_with_equal_times_is_resolved_by_arrival_order` below.
fn build(gens: &[Gen], base: u64, scale: u64) -> Vec<Span> {
    let ids: Vec<u64> = (0..gens.len())
        .map(|i| match gens[i].dup_of {
            Some(k) if k < i => ids_root(gens, k),
            _ => i as u64 + 1,
        })
        .collect();
    let mut spans: Vec<Span> = Vec::with_capacity(gens.len());
    for (i, g) in gens.iter().enumerate() {
        if let Some(k) = g.dup_of.filter(|&k| k < i && g.exact_copy) {
            spans.push(spans[k].clone());
            continue;
        }
        let parent = match g.parent {
            ParentLink::Root => None,
            ParentLink::Index(j) => Some(ids[j % gens.len()]),
            ParentLink::SelfParent => Some(ids[i]),
            ParentLink::Missing(p) => Some(p),
        };
        let start = base + g.start * scale;
        let mut end = if g.reversed {
            start.saturating_sub(g.len * scale)
        } else {
            start + g.len * scale
        };
        while spans
            .iter()
            .any(|s| s.span_id == id(ids[i]) && (s.start_ns, s.end_ns) == (start, end))
        {
            end += 1;
        }
        let mut s = span(ids[i], parent, start, end);
        s.kind = g.kind;
        s.service = Sym::new(SERVICES[g.service]);
        s.operation = Sym::new(&format!("op{}", i % 4));
        spans.push(s);
    }
    spans
}

/// The id of span `k`, following duplicate links back to the first copy.
fn ids_root(gens: &[Gen], mut k: usize) -> u64 {
    while let Some(j) = gens[k].dup_of.filter(|&j| j < k) {
        k = j;
    }
    k as u64 + 1
}

fn spans() -> impl Strategy<Value = Vec<Span>> {
    (1usize..40)
        .prop_flat_map(|n| {
            (
                prop::collection::vec(gen_span(n), n),
                prop_oneof![Just(0u64), Just(1_700_000_000_000_000_000u64)],
                prop_oneof![Just(1u64), Just(1_000u64)],
            )
        })
        .prop_map(|(gens, base, scale)| build(&gens, base, scale))
}

// ---------------------------------------------------------------------------
// Helpers
// ---------------------------------------------------------------------------

fn run(spans: Vec<Span>) -> AnalyzedTrace {
    analyze(assemble(trace_id(), spans.into_iter().collect()).expect("at least one span"))
}

/// What must not depend on arrival order, keyed by span id.
#[derive(Debug, PartialEq)]
struct Summary {
    root: SpanId,
    parents: BTreeMap<SpanId, Option<SpanId>>,
    segments: Vec<(SpanId, u64, u64)>,
    critical: BTreeMap<SpanId, u64>,
}

fn summary(a: &AnalyzedTrace) -> Summary {
    let t = &a.trace;
    let sid = |i: u32| t.spans[i as usize].span_id;
    Summary {
        root: sid(t.root),
        parents: (0..t.len() as u32)
            .map(|i| (sid(i), t.parent[i as usize].map(sid)))
            .collect(),
        segments: a
            .path
            .segments
            .iter()
            .map(|s| (sid(s.span), s.start_ns, s.end_ns))
            .collect(),
        critical: a
            .path
            .critical_ns
            .iter()
            .enumerate()
            .map(|(i, &ns)| (sid(i as u32), ns))
            .collect(),
    }
}

/// A plain recursive statement of the critical path, written from its definition:
/// walking back from the end of a span, the request waits on the child (clipped
/// to the span) that finished last at or before the cursor; time not covered so
/// is the span's own. Asynchronous children (CONSUMER spans, children of a
/// PRODUCER) are not waited for. Ties go to the later-starting child, then to the
/// one later in the span's child list (sorted by start, then span id), as in
/// hopscope. Recursion is fine here: generated trees are small.
fn reference_path(t: &Trace) -> Vec<(u32, u64, u64)> {
    fn walk(t: &Trace, span: u32, start: u64, end: u64, out: &mut Vec<(u32, u64, u64)>) {
        let producer = t.span(span).kind == SpanKind::Producer;
        let kids: Vec<(u64, u64, usize, u32)> = t
            .children(span)
            .iter()
            .enumerate()
            .filter(|&(_, &k)| !producer && t.span(k).kind != SpanKind::Consumer)
            .filter_map(|(pos, &k)| {
                let (s, e) = (t.start(k).max(start), t.end(k).min(end));
                (e > s).then_some((e, s, pos, k))
            })
            .collect();
        let mut cursor = end;
        while let Some(&(e, s, _, k)) = kids.iter().filter(|c| c.0 <= cursor).max() {
            if e < cursor {
                out.push((span, e, cursor));
            }
            walk(t, k, s, e, out);
            cursor = s;
        }
        if cursor > start {
            out.push((span, start, cursor));
        }
    }
    let mut out = Vec::new();
    walk(t, t.root, t.start(t.root), t.end(t.root), &mut out);
    out.reverse();
    out
}

/// `self_ns` from its definition: the span minus the union of its clipped children.
fn reference_self_ns(t: &Trace, span: u32) -> u64 {
    let (start, end) = (t.start(span), t.end(span));
    let mut kids: Vec<(u64, u64)> = t
        .children(span)
        .iter()
        .map(|&k| (t.start(k).max(start), t.end(k).min(end)))
        .filter(|(s, e)| e > s)
        .collect();
    kids.sort();
    let (mut covered, mut reach) = (0, start);
    for (s, e) in kids {
        let s = s.max(reach);
        if e > s {
            covered += e - s;
            reach = e;
        }
    }
    (end - start) - covered
}

fn no_stack_overflow(spans: Vec<Span>) -> AnalyzedTrace {
    let a = run(spans);
    check_tree(&a.trace).unwrap();
    check_analysis(&a).unwrap();
    a
}

// ---------------------------------------------------------------------------
// Properties
// ---------------------------------------------------------------------------

proptest! {
    // Failures print the shrunk input; no regression file is written into tests/.
    #![proptest_config(ProptestConfig {
        cases: 512,
        failure_persistence: None,
        ..ProptestConfig::default()
    })]

    /// (a) Assembly never panics and yields one tree with one root, keeping one
    /// span per distinct id.
    #[test]
    fn assembly_yields_one_tree(spans in spans()) {
        let mut ids: Vec<_> = spans.iter().map(|s| s.span_id).collect();
        ids.sort();
        ids.dedup();
        let trace = assemble(trace_id(), spans.into_iter().collect()).expect("at least one span");
        prop_assert_eq!(trace.len(), ids.len());
        if let Err(e) = check_tree(&trace) {
            prop_assert!(false, "{}", e);
        }
    }

    /// (b) The segments partition the root's interval: time-ordered, contiguous,
    /// each inside its own span, summing exactly to the root's duration; and (c)
    /// the hop shares sum to 1 within 1e-9 (a zero-length root has one hop of
    /// share 1).
    #[test]
    fn critical_path_partitions_the_root(spans in spans()) {
        let a = run(spans);
        if let Err(e) = check_analysis(&a) {
            prop_assert!(false, "{}", e);
        }
    }

    /// The iterative critical path equals the plain recursive definition, and
    /// `self_ns` equals the span minus the union of its clipped children.
    #[test]
    fn critical_path_matches_its_definition(spans in spans()) {
        let a = run(spans);
        let got: Vec<_> = a.path.segments.iter().map(|s| (s.span, s.start_ns, s.end_ns)).collect();
        prop_assert_eq!(got, reference_path(&a.trace));
        for i in 0..a.trace.len() as u32 {
            prop_assert_eq!(a.path.self_ns[i as usize], reference_self_ns(&a.trace, i), "span {}", i);
        }
    }

    /// (d) Assembly and analysis do not depend on arrival order: the same root,
    /// tree, segments and per-span critical time, keyed by span id.
    #[test]
    fn arrival_order_does_not_matter(
        (spans, shuffled) in spans().prop_flat_map(|s| (Just(s.clone()), Just(s).prop_shuffle()))
    ) {
        let a = summary(&run(spans));
        let b = summary(&run(shuffled));
        prop_assert_eq!(a, b);
    }
}

// ---------------------------------------------------------------------------
// (e) Depth: nothing recurses over the tree.
// ---------------------------------------------------------------------------

const DEPTH: u64 = 10_000;

/// Span `i` (1-based) is the child of span `i - 1` and nested strictly inside it.
fn chain() -> Vec<Span> {
    (1..=DEPTH)
        .map(|i| span(i, (i > 1).then(|| i - 1), i * 10, (2 * DEPTH - i) * 10 + 10))
        .collect()
}

#[test]
fn ten_thousand_deep_chain_does_not_overflow_the_stack() {
    let a = no_stack_overflow(chain());
    assert_eq!(a.trace.root_span().span_id, id(1));
    // Each span owns its first and last 10 ns; the innermost span (10 ns long)
    // owns all of itself.
    assert_eq!(a.path.segments.len(), 2 * DEPTH as usize - 1);
    for (i, s) in a.trace.spans.iter().enumerate() {
        let want = if s.span_id == id(DEPTH) { 10 } else { 20 };
        assert_eq!(a.path.critical_ns[i], want, "span {}", s.span_id);
    }
}

#[test]
fn ten_thousand_deep_chain_in_reverse_arrival_order() {
    let mut spans = chain();
    spans.reverse();
    let a = no_stack_overflow(spans);
    assert_eq!(a.path.segments.len(), 2 * DEPTH as usize - 1);
}

#[test]
fn ten_thousand_deep_client_server_chain_with_skew() {
    // Alternating CLIENT/SERVER across two services, every SERVER 1 ms early:
    // the skew repair walks (and shifts) the whole depth.
    let spans: Vec<Span> = chain()
        .into_iter()
        .enumerate()
        .map(|(i, mut s)| {
            if i % 2 == 0 {
                s.kind = SpanKind::Client;
                s.service = Sym::new("frontend");
            } else {
                s.kind = SpanKind::Server;
                s.service = Sym::new("orders");
                s.start_ns += 1_000_000;
                s.end_ns += 1_000_000;
            }
            s
        })
        .collect();
    let a = no_stack_overflow(spans);
    assert!(a.warnings.iter().any(|w| w.code == WarningCode::ClockSkew));
}

#[test]
fn ten_thousand_span_parent_cycle_is_cut() {
    // Span i's parent is i + 1 and the last span's parent is the first: one cycle.
    let spans: Vec<Span> = (1..=DEPTH)
        .map(|i| span(i, Some(i % DEPTH + 1), i * 10, i * 10 + 5))
        .collect();
    let a = no_stack_overflow(spans);
    let cycles = a
        .warnings
        .iter()
        .filter(|w| w.code == WarningCode::ParentCycle)
        .count();
    assert_eq!(cycles, 1);
    // Cut at the earliest-starting span, which becomes the root.
    assert_eq!(a.trace.root_span().span_id, id(1));
}

// ---------------------------------------------------------------------------
// Regressions found by the properties above.
// ---------------------------------------------------------------------------

/// Two copies of one span id with the same times but different parents: which
/// copy is kept (and so the critical path) must not depend on arrival order.
#[test]
fn duplicates_with_equal_times_resolve_the_same_in_any_order() {
    let root = span(1, None, 0, 100);
    let a = span(2, Some(1), 0, 40);
    let x_under_root = span(3, Some(1), 50, 90);
    let x_under_a = span(3, Some(2), 50, 90);
    let one = run(vec![
        root.clone(),
        a.clone(),
        x_under_root.clone(),
        x_under_a.clone(),
    ]);
    let two = run(vec![root, a, x_under_a, x_under_root]);
    assert_eq!(summary(&one), summary(&two));
}

/// Timestamps at or above 2^63 ns (OTLP's fixed64 allows them) once overflowed
/// the i64 clock-skew shift.
#[test]
fn clock_skew_shift_does_not_overflow_on_huge_timestamps() {
    let mut client = span(1, None, 1 << 63, (1 << 63) + 10);
    client.kind = SpanKind::Client;
    let mut server = span(2, Some(1), 1 << 62, (1 << 62) + 5);
    server.kind = SpanKind::Server;
    server.service = Sym::new("orders");
    let a = no_stack_overflow(vec![client, server]);
    // The server span is moved into the middle of its client span.
    assert_eq!(a.trace.start(1), (1 << 63) + 2);
}
