//! Median, p95 and the extremes of a sample.

use serde::Serialize;

#[derive(Debug, Clone, Copy, Default, Serialize, PartialEq)]
pub struct Summary {
    pub n: usize,
    pub median: f64,
    pub p95: f64,
    pub min: f64,
    pub max: f64,
}

impl Summary {
    /// Nearest-rank percentiles of the values (NaNs dropped); all zero when empty.
    pub fn of(values: impl IntoIterator<Item = f64>) -> Self {
        let mut sorted: Vec<f64> = values.into_iter().filter(|v| !v.is_nan()).collect();
        if sorted.is_empty() {
            return Self::default();
        }
        sorted.sort_by(f64::total_cmp);
        let rank = |p: f64| {
            let index = ((p * sorted.len() as f64).ceil() as usize).clamp(1, sorted.len()) - 1;
            sorted[index]
        };
        Self {
            n: sorted.len(),
            median: rank(0.5),
            p95: rank(0.95),
            min: sorted[0],
            max: sorted[sorted.len() - 1],
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nearest_rank_percentiles() {
        let s = Summary::of((1..=20).map(f64::from));
        assert_eq!(
            (s.n, s.median, s.p95, s.min, s.max),
            (20, 10.0, 19.0, 1.0, 20.0)
        );
        let one = Summary::of([3.5]);
        assert_eq!((one.median, one.p95), (3.5, 3.5));
        assert_eq!(Summary::of([]), Summary::default());
    }
}
