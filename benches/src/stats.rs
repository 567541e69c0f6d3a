//! Small statistics over repetitions and latency samples.
//!
//! Medians (not means) summarise repetitions because the machine is shared: one run disturbed
//! by a compile next door must not move the figure much.

/// The median of `xs` (the mean of the middle two for an even count); `None` when empty or
/// when any value is NaN (a missing figure must not silently become a number).
pub fn median(xs: &[f64]) -> Option<f64> {
    if xs.is_empty() || xs.iter().any(|x| x.is_nan()) {
        return None;
    }
    let mut v = xs.to_vec();
    v.sort_by(f64::total_cmp);
    let mid = v.len() / 2;
    Some(if v.len() % 2 == 1 {
        v[mid]
    } else {
        (v[mid - 1] + v[mid]) / 2.0
    })
}

/// The median of the values that exist (runs that failed to produce a figure are left out).
pub fn median_of(xs: impl IntoIterator<Item = Option<f64>>) -> Option<f64> {
    let v: Vec<f64> = xs.into_iter().flatten().collect();
    median(&v)
}

/// Nearest-rank percentile (`p` in 0..=100) of unsorted samples.
pub fn percentile(samples: &[u64], p: f64) -> Option<u64> {
    if samples.is_empty() || !(0.0..=100.0).contains(&p) {
        return None;
    }
    let mut v = samples.to_vec();
    v.sort_unstable();
    let rank = ((p / 100.0) * v.len() as f64).ceil() as usize;
    Some(v[rank.clamp(1, v.len()) - 1])
}

/// `a / b`, or `None` when either is missing or `b` is too close to zero to divide by (a hop
/// cost that rounds to zero makes any ratio to it meaningless).
pub fn ratio(a: Option<f64>, b: Option<f64>) -> Option<f64> {
    match (a, b) {
        (Some(a), Some(b)) if b.abs() > 1e-12 && a.is_finite() && b.is_finite() => Some(a / b),
        _ => None,
    }
}

/// Per-repetition differences `a[i] - b[i]` where both exist: the hop's cost is taken against
/// the direct run of the same repetition, which ran seconds apart under similar background load.
pub fn paired_diffs(a: &[Option<f64>], b: &[Option<f64>]) -> Vec<f64> {
    a.iter()
        .zip(b)
        .filter_map(|(x, y)| Some((*x)? - (*y)?))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn median_odd_even_empty() {
        assert_eq!(median(&[3.0, 1.0, 2.0]), Some(2.0));
        assert_eq!(median(&[4.0, 1.0, 3.0, 2.0]), Some(2.5));
        assert_eq!(median(&[7.0]), Some(7.0));
        assert_eq!(median(&[]), None);
        assert_eq!(median(&[1.0, f64::NAN]), None);
    }

    #[test]
    fn median_of_skips_missing() {
        assert_eq!(
            median_of([Some(1.0), None, Some(5.0), Some(3.0)]),
            Some(3.0)
        );
        assert_eq!(median_of([None, None]), None);
    }

    #[test]
    fn percentile_nearest_rank() {
        let v: Vec<u64> = (1..=100).rev().collect();
        assert_eq!(percentile(&v, 50.0), Some(50));
        assert_eq!(percentile(&v, 99.0), Some(99));
        assert_eq!(percentile(&v, 100.0), Some(100));
        assert_eq!(percentile(&v, 0.0), Some(1));
        assert_eq!(percentile(&[42], 99.0), Some(42));
        assert_eq!(percentile(&[], 50.0), None);
        assert_eq!(percentile(&[1], 101.0), None);
    }

    #[test]
    fn ratio_guards() {
        assert_eq!(ratio(Some(1.0), Some(4.0)), Some(0.25));
        assert_eq!(ratio(None, Some(4.0)), None);
        assert_eq!(ratio(Some(1.0), Some(0.0)), None);
        assert_eq!(ratio(Some(f64::INFINITY), Some(1.0)), None);
    }

    #[test]
    fn paired_diffs_skip_gaps() {
        let a = [Some(5.0), None, Some(7.0)];
        let b = [Some(1.0), Some(2.0), Some(3.0)];
        assert_eq!(paired_diffs(&a, &b), vec![4.0, 4.0]);
    }
}
