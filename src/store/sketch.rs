//! A mergeable quantile sketch with bounded memory (DDSketch with 1 % relative
//! accuracy). Counts are signed so a trace's contribution can be retracted exactly
//! when it is analyzed again. Values are clamped to `[1e-9, 1e15]`, so a sketch
//! never holds more than about 2,400 bins, whatever it is fed; it holds only the
//! bins it uses.

const ACCURACY: f64 = 0.01;
const MIN_VALUE: f64 = 1e-9;
const MAX_VALUE: f64 = 1e15;

fn gamma_ln() -> f64 {
    ((1.0 + ACCURACY) / (1.0 - ACCURACY)).ln()
}

#[derive(Debug, Clone, Default, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Sketch {
    /// Values below `MIN_VALUE` (zero shares).
    zeros: i64,
    /// Sorted by bin index.
    bins: Vec<(i32, i64)>,
}

impl Sketch {
    fn index(value: f64) -> i32 {
        (value.clamp(MIN_VALUE, MAX_VALUE).ln() / gamma_ln()).ceil() as i32
    }

    /// Adds `weight` observations of `value` (a negative weight retracts them).
    pub fn add(&mut self, value: f64, weight: i64) {
        if value.is_nan() || value < MIN_VALUE {
            self.zeros += weight;
            return;
        }
        let idx = Self::index(value);
        match self.bins.binary_search_by_key(&idx, |b| b.0) {
            Ok(pos) => {
                self.bins[pos].1 += weight;
                if self.bins[pos].1 == 0 {
                    self.bins.remove(pos);
                }
            }
            Err(pos) => self.bins.insert(pos, (idx, weight)),
        }
    }

    pub fn merge(&mut self, other: &Sketch) {
        self.zeros += other.zeros;
        for &(idx, count) in &other.bins {
            match self.bins.binary_search_by_key(&idx, |b| b.0) {
                Ok(pos) => self.bins[pos].1 += count,
                Err(pos) => self.bins.insert(pos, (idx, count)),
            }
        }
        self.bins.retain(|b| b.1 != 0);
    }

    pub fn count(&self) -> i64 {
        self.zeros + self.bins.iter().map(|b| b.1).sum::<i64>()
    }

    /// The `q`-quantile (0..=1), within 1 % of the true value; `None` when empty.
    pub fn quantile(&self, q: f64) -> Option<f64> {
        let total = self.count();
        if total <= 0 {
            return None;
        }
        let rank = (q.clamp(0.0, 1.0) * (total - 1) as f64).round() as i64;
        let mut seen = self.zeros;
        if rank < seen {
            return Some(0.0);
        }
        let gamma = gamma_ln().exp();
        for &(idx, count) in &self.bins {
            seen += count;
            if rank < seen {
                return Some(2.0 * gamma.powi(idx) / (gamma + 1.0));
            }
        }
        self.bins
            .last()
            .map(|&(idx, _)| 2.0 * gamma.powi(idx) / (gamma + 1.0))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quantiles_are_within_one_percent_and_retraction_is_exact() {
        let mut s = Sketch::default();
        for v in 1..=10_000 {
            s.add(v as f64 * 1000.0, 1);
        }
        for (q, want) in [(0.5, 5_000_000.0), (0.95, 9_500_000.0), (0.99, 9_900_000.0)] {
            let got = s.quantile(q).unwrap();
            assert!((got - want).abs() / want < 0.011, "q{q}: {got} vs {want}");
        }
        let before = s.clone();
        s.add(123_456.0, 1);
        s.add(0.0, 1);
        s.add(123_456.0, -1);
        s.add(0.0, -1);
        assert_eq!(s, before);

        let mut a = Sketch::default();
        let mut b = Sketch::default();
        a.add(10.0, 1);
        b.add(1000.0, 3);
        a.merge(&b);
        assert_eq!(a.count(), 4);
        assert!((a.quantile(1.0).unwrap() - 1000.0).abs() < 10.0);
        assert_eq!(Sketch::default().quantile(0.5), None);
    }
}
