//! `redundant_call`: the identical call — the same statement with the same
//! literals, the same URL with the same query (GET and HEAD only: another
//! method may carry another body), the same RPC or cache key where the span
//! shows it — made `min_calls` times or more by one service in one trace. A
//! call repeated after its previous attempt failed is a retry, not
//! redundant; statements that read no table (`SELECT 1` pings, `SET`,
//! `BEGIN`) are not counted. One finding per call shape: the identical call
//! made most often names it, and its cost is every repeat's critical time
//! (a loop fetching each of three ids twice has three repeats).

use rustc_hash::FxHashMap;

use super::calls::{Call, CallKind, Callee, Calls};
use super::{Pattern, RedundantCallThresholds, Report};
use crate::analyze::evidence::{self, Evidence};
use crate::analyze::finding::ms;
use crate::analyze::saturation::culprit_statement;
use crate::analyze::{Crossed, Culprit, Observation};
use crate::model::Sym;

/// Statements that touch a table: only their repeats can be saved.
fn reads_data(statement: &str) -> bool {
    statement.split_whitespace().any(|word| {
        ["FROM", "INTO", "UPDATE", "JOIN"]
            .iter()
            .any(|k| word.eq_ignore_ascii_case(k))
    })
}

/// The redundant calls of a trace.
pub(super) fn find(
    r: &Report<'_>,
    calls: &Calls,
    limits: &RedundantCallThresholds,
) -> Vec<Observation> {
    type Key<'a> = (Sym, Option<Callee>, &'a str, &'a str);
    let mut same: FxHashMap<Key<'_>, Vec<&Call>> = FxHashMap::default();
    for c in &calls.calls {
        let Some(arguments) = c.arguments.as_deref() else {
            continue;
        };
        if c.kind == CallKind::Message || (c.kind == CallKind::Db && !reads_data(arguments)) {
            continue;
        }
        same.entry((c.caller, c.callee, &*c.shape, arguments))
            .or_default()
            .push(c);
    }
    // Per call (caller, callee, shape): each set of identical calls made
    // at least `min_calls` times, the most made first.
    type Call3<'a> = (Sym, Option<Callee>, &'a str);
    let mut repeated: FxHashMap<Call3<'_>, Vec<(&str, Vec<&Call>)>> = FxHashMap::default();
    for ((caller, callee, shape, arguments), mut group) in same {
        if group.len() < limits.min_calls as usize {
            continue;
        }
        group.sort_by_key(|c| (c.start_ns, c.span));
        // A call after a failed attempt is its retry.
        let made: Vec<&Call> = group
            .iter()
            .enumerate()
            .filter(|(k, _)| *k == 0 || !group[k - 1].failed)
            .map(|(_, c)| *c)
            .collect();
        if made.len() >= limits.min_calls as usize {
            repeated
                .entry((caller, callee, shape))
                .or_default()
                .push((arguments, made));
        }
    }
    let mut out = Vec::new();
    for ((caller, callee, shape), mut sets) in repeated {
        sets.sort_by(|a, b| b.1.len().cmp(&a.1.len()).then(a.0.cmp(b.0)));
        // What could be saved: every call of a set after its first.
        let repeats: Vec<&Call> = sets
            .iter()
            .flat_map(|(_, m)| m[1..].iter().copied())
            .collect();
        let critical: u64 = repeats.iter().map(|c| c.critical_ns).sum();
        let total: u64 = repeats.iter().map(|c| c.duration_ns()).sum();
        let (arguments, most) = &sets[0];
        let first = most[0];
        let callee_label = first.callee_label();
        let call = culprit_statement(arguments);
        let others = match sets.len() {
            1 => String::new(),
            n => format!(" (and {} other identical call(s) repeated)", n - 1),
        };
        let made: Vec<&Call> = sets.iter().flat_map(|(_, m)| m.iter().copied()).collect();
        out.push(r.observe(Pattern {
            cost_ns: critical,
            culprit: Culprit {
                service: caller,
                operation: Sym::new(&culprit_statement(shape)),
                peer: callee.map(Callee::peer),
            },
            at: first.span,
            summary: format!(
                "{caller} makes the identical call to {callee_label} {} times in one request: `{call}`{others}; the {} repeats cost {}.",
                most.len(),
                repeats.len(),
                r.cost(critical),
            ),
            remedy: "Make the call once and reuse its result: keep it in a variable for the request, or memoise it per request.".to_owned(),
            evidence: Evidence::RedundantCall(evidence::RedundantCall {
                calls: most.len(),
                call,
                shape: shape.to_owned(),
                repeated_calls: sets.len(),
                repeats: repeats.len(),
                total_ms: ms(total),
                critical_ms: ms(critical),
                critical_share: r.share(critical),
            }),
            crossed: vec![Crossed::new(
                "redundant_call.min_calls",
                limits.min_calls as f64,
                most.len() as f64,
            )],
        }, &made));
    }
    out
}
