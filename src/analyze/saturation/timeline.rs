//! Counting overlapping intervals over time: how many calls were in flight at
//! each instant, and how long a count held.

/// A step function over time: how many of a set of `[start, end)` intervals
/// cover each instant. `steps[i].1` holds from `steps[i].0` until the next step
/// (0 after the last).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Timeline {
    steps: Vec<(u64, u32)>,
}

impl Timeline {
    /// The timeline of `intervals` (empty ones are ignored).
    pub fn of(intervals: impl IntoIterator<Item = (u64, u64)>) -> Timeline {
        let mut events: Vec<(u64, i32)> = Vec::new();
        for (start, end) in intervals {
            if end > start {
                events.push((start, 1));
                events.push((end, -1));
            }
        }
        events.sort_unstable();
        let mut steps: Vec<(u64, u32)> = Vec::with_capacity(events.len());
        let mut count: i64 = 0;
        for (at, delta) in events {
            count += delta as i64;
            match steps.last_mut() {
                Some(last) if last.0 == at => last.1 = count as u32,
                _ => steps.push((at, count as u32)),
            }
        }
        Timeline { steps }
    }

    /// The steps overlapping `[from, to)`, clipped to it: `(start, end, count)`.
    fn within(&self, from: u64, to: u64) -> impl Iterator<Item = (u64, u64, u32)> + '_ {
        // The step in force at `from` is the last one starting at or before it.
        let first = self
            .steps
            .partition_point(|s| s.0 <= from)
            .saturating_sub(1);
        self.steps[first..]
            .iter()
            .enumerate()
            .map(move |(i, &(at, count))| {
                let next = self.steps.get(first + i + 1).map_or(u64::MAX, |s| s.0);
                (at.max(from), next.min(to), count)
            })
            .take_while(move |&(start, _, _)| start < to)
            .filter(|&(start, end, _)| end > start)
    }

    /// The most intervals in flight at once: the ceiling.
    pub fn max(&self) -> u32 {
        self.steps.iter().map(|s| s.1).max().unwrap_or(0)
    }

    /// The most intervals in flight at once during `[from, to)`.
    pub fn max_within(&self, from: u64, to: u64) -> u32 {
        self.within(from, to).map(|s| s.2).max().unwrap_or(0)
    }

    /// How long during `[from, to)` at least `count` intervals were in flight.
    pub fn time_at_least(&self, count: u32, from: u64, to: u64) -> u64 {
        self.within(from, to)
            .filter(|s| s.2 >= count)
            .map(|s| s.1 - s.0)
            .sum()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_ceiling_is_the_most_calls_in_flight_and_time_at_it_is_measured() {
        // Four calls: two overlapping at 10..20, three at 15..20.
        let t = Timeline::of([(0, 20), (10, 30), (15, 20), (40, 50), (5, 5)]);
        assert_eq!(t.max(), 3);
        assert_eq!(t.max_within(0, 10), 1);
        assert_eq!(t.max_within(20, 40), 1);
        assert_eq!(t.max_within(30, 40), 0);
        assert_eq!(t.max_within(45, 100), 1);
        assert_eq!(t.time_at_least(2, 0, 100), 10);
        assert_eq!(t.time_at_least(3, 0, 100), 5);
        assert_eq!(t.time_at_least(1, 12, 45), 23);
        assert_eq!(t.time_at_least(1, 60, 70), 0);
        assert_eq!(Timeline::of([]).max(), 0);
    }

    #[test]
    fn back_to_back_calls_do_not_add_up() {
        // A connection reused at once: one in flight, never two.
        let t = Timeline::of([(0, 10), (10, 20), (20, 30)]);
        assert_eq!(t.max(), 1);
        assert_eq!(t.time_at_least(1, 0, 30), 30);
    }
}
