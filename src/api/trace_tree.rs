//! A trace's spans in depth-first tree order, and the parts of it that
//! `GET /api/v1/traces/{trace_id}` serves on request: a page of that order
//! (optionally down to a depth), or the critical path's spans with the
//! subtrees it leaves out collapsed into counted ranges.
//!
//! Tree order visits a span, then its children's subtrees in the order the
//! assembly sorted them (adjusted start time), so every subtree is one
//! contiguous block of positions: a page is a block of rows as the trace page
//! shows them, and a collapsed subtree is fetched back by its range. Every
//! walk is iterative, so a 100,000-deep chain costs no stack.

use crate::model::Trace;

/// Positions, depths and subtree sizes of a trace's spans in tree order.
pub struct TreeOrder {
    /// The span at each position.
    order: Vec<u32>,
    /// Each span's position.
    position: Vec<u32>,
    /// Each span's depth (the root's is 0).
    depth: Vec<u32>,
    /// How many spans each span's subtree holds below it.
    descendants: Vec<u32>,
}

/// A run of sibling subtrees left out of a selection: the positions
/// `offset..offset + spans` of tree order, all below `parent`.
pub struct Collapsed {
    /// The span (kept in the selection) the left-out subtrees hang from.
    pub parent: u32,
    /// Position of the first left-out span.
    pub offset: usize,
    /// How many spans were left out.
    pub spans: usize,
}

impl TreeOrder {
    /// Orders `trace` from its root.
    pub fn of(trace: &Trace) -> Self {
        let n = trace.len();
        let mut order = Vec::with_capacity(n);
        let mut depth = vec![0u32; n];
        let mut stack = vec![trace.root];
        while let Some(s) = stack.pop() {
            order.push(s);
            for &c in trace.children(s).iter().rev() {
                depth[c as usize] = depth[s as usize] + 1;
                stack.push(c);
            }
        }
        let mut position = vec![0u32; n];
        for (p, &s) in order.iter().enumerate() {
            position[s as usize] = p as u32;
        }
        let mut descendants = vec![0u32; n];
        for &s in order.iter().rev() {
            if let Some(p) = trace.parent[s as usize] {
                descendants[p as usize] += 1 + descendants[s as usize];
            }
        }
        TreeOrder {
            order,
            position,
            depth,
            descendants,
        }
    }

    /// Span `s`'s position in tree order.
    pub fn position(&self, s: u32) -> usize {
        self.position[s as usize] as usize
    }

    /// Span `s`'s depth below the root.
    pub fn depth(&self, s: u32) -> u32 {
        self.depth[s as usize]
    }

    /// How many spans are below span `s`.
    pub fn descendants(&self, s: u32) -> usize {
        self.descendants[s as usize] as usize
    }

    /// At most `limit` spans from position `offset` on, leaving out those
    /// deeper than `max_depth` (when given); with the position to go on from,
    /// if any spans remain after it.
    pub fn page(
        &self,
        offset: usize,
        limit: usize,
        max_depth: Option<usize>,
    ) -> (Vec<u32>, Option<usize>) {
        let mut spans = Vec::new();
        let mut p = offset;
        while p < self.order.len() && spans.len() < limit {
            let s = self.order[p];
            let depth = self.depth(s) as usize;
            if max_depth.is_none_or(|d| depth <= d) {
                spans.push(s);
            }
            p += 1;
            if max_depth.is_some_and(|d| depth >= d) {
                p += self.descendants(s);
            }
        }
        (spans, (p < self.order.len()).then_some(p))
    }

    /// The spans `on_path` and their ancestors, in tree order, and the runs
    /// of sibling subtrees that leaves out.
    pub fn critical(
        &self,
        trace: &Trace,
        on_path: impl IntoIterator<Item = u32>,
    ) -> (Vec<u32>, Vec<Collapsed>) {
        let mut keep = vec![false; self.order.len()];
        keep[trace.root as usize] = true;
        for s in on_path {
            let mut at = Some(s);
            while let Some(x) = at.filter(|x| !keep[*x as usize]) {
                keep[x as usize] = true;
                at = trace.parent[x as usize];
            }
        }
        let mut spans = Vec::new();
        let mut collapsed: Vec<Collapsed> = Vec::new();
        let mut p = 0;
        while p < self.order.len() {
            let s = self.order[p];
            if keep[s as usize] {
                spans.push(s);
                p += 1;
                continue;
            }
            // Not kept, so not the root: the parent is kept, or this span
            // would have been skipped with its parent's subtree.
            let parent = trace.parent[s as usize].unwrap_or(trace.root);
            let size = 1 + self.descendants(s);
            match collapsed.last_mut() {
                Some(run) if run.parent == parent && run.offset + run.spans == p => {
                    run.spans += size
                }
                _ => collapsed.push(Collapsed {
                    parent,
                    offset: p,
                    spans: size,
                }),
            }
            p += size;
        }
        (spans, collapsed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::analyze::testing::tree as trace;

    fn ids(t: &Trace, spans: &[u32]) -> Vec<u64> {
        spans
            .iter()
            .map(|&s| t.span(s).span_id.to_bytes()[7] as u64)
            .collect()
    }

    /// 1 ─┬─ 2 ── 3
    ///    ├─ 4 ─┬─ 5
    ///    │     └─ 6
    ///    └─ 7
    /// (sent out of order: the order comes from the tree and the starts).
    fn sample() -> Trace {
        trace(&[
            (6, 4, 50, 60),
            (1, 0, 0, 100),
            (7, 1, 70, 90),
            (4, 1, 40, 70),
            (2, 1, 10, 30),
            (5, 4, 41, 45),
            (3, 2, 12, 20),
        ])
    }

    #[test]
    fn tree_order_is_depth_first_by_start_with_subtree_sizes() {
        let t = sample();
        let o = TreeOrder::of(&t);
        assert_eq!(ids(&t, &o.order), [1, 2, 3, 4, 5, 6, 7]);
        let sizes: Vec<_> = o.order.iter().map(|&s| o.descendants(s)).collect();
        assert_eq!(sizes, [6, 1, 0, 2, 0, 0, 0]);
        let depths: Vec<_> = o.order.iter().map(|&s| o.depth(s)).collect();
        assert_eq!(depths, [0, 1, 2, 1, 2, 2, 1]);
        assert!(o.order.iter().enumerate().all(|(p, &s)| o.position(s) == p));
    }

    #[test]
    fn pages_are_contiguous_blocks_and_can_stop_at_a_depth() {
        let t = sample();
        let o = TreeOrder::of(&t);
        let (first, next) = o.page(0, 3, None);
        assert_eq!((ids(&t, &first), next), (vec![1, 2, 3], Some(3)));
        let (rest, next) = o.page(3, 10, None);
        assert_eq!((ids(&t, &rest), next), (vec![4, 5, 6, 7], None));
        // The root's children only, from the first child's position on.
        let (children, next) = o.page(1, 10, Some(1));
        assert_eq!((ids(&t, &children), next), (vec![2, 4, 7], None));
        let (two, next) = o.page(1, 2, Some(1));
        assert_eq!((ids(&t, &two), next), (vec![2, 4], Some(6)));
        assert_eq!(o.page(99, 10, None), (vec![], None));
    }

    #[test]
    fn the_critical_selection_keeps_ancestors_and_counts_what_it_leaves_out() {
        let t = sample();
        let o = TreeOrder::of(&t);
        let five = o.order[4];
        let (kept, collapsed) = o.critical(&t, [five]);
        assert_eq!(ids(&t, &kept), [1, 4, 5]);
        let runs: Vec<_> = collapsed
            .iter()
            .map(|c| (ids(&t, &[c.parent])[0], c.offset, c.spans))
            .collect();
        // 2 and 3 under the root; 6 under 4; 7 under the root again.
        assert_eq!(runs, [(1, 1, 2), (4, 5, 1), (1, 6, 1)]);
        let left_out: usize = collapsed.iter().map(|c| c.spans).sum();
        assert_eq!(kept.len() + left_out, t.len());
    }
}
