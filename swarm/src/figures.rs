//! Small statistics over measured samples: median, quantiles, empirical CDF.

/// The `q` quantile (0..=1) by nearest rank on a sorted copy; `None` for no samples.
pub fn quantile(samples: &[f64], q: f64) -> Option<f64> {
    if samples.is_empty() {
        return None;
    }
    let mut v: Vec<f64> = samples.iter().copied().filter(|x| !x.is_nan()).collect();
    if v.is_empty() {
        return None;
    }
    v.sort_by(f64::total_cmp);
    let q = q.clamp(0.0, 1.0);
    let rank = ((q * v.len() as f64).ceil() as usize).clamp(1, v.len());
    Some(v[rank - 1])
}

/// The median (lower middle for an even count, a value that was measured).
pub fn median(samples: &[f64]) -> Option<f64> {
    quantile(samples, 0.5)
}

/// Largest sample.
pub fn max(samples: &[f64]) -> Option<f64> {
    samples
        .iter()
        .copied()
        .filter(|x| !x.is_nan())
        .reduce(f64::max)
}

/// Empirical CDF: sorted `(value, fraction of samples <= value)` points. `out_of` counts failures too
/// (a download that never finished keeps the curve below 1).
pub fn cdf(samples: &[f64], out_of: usize) -> Vec<(f64, f64)> {
    let mut v: Vec<f64> = samples.iter().copied().filter(|x| !x.is_nan()).collect();
    v.sort_by(f64::total_cmp);
    let n = out_of.max(v.len()).max(1) as f64;
    v.iter()
        .enumerate()
        .map(|(i, &x)| (x, (i + 1) as f64 / n))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn median_and_quantiles() {
        assert_eq!(median(&[]), None);
        assert_eq!(median(&[3.0]), Some(3.0));
        assert_eq!(median(&[5.0, 1.0, 3.0]), Some(3.0));
        assert_eq!(median(&[4.0, 1.0, 3.0, 2.0]), Some(2.0));
        assert_eq!(quantile(&[1.0, 2.0, 3.0, 4.0], 1.0), Some(4.0));
        assert_eq!(quantile(&[1.0, 2.0, 3.0, 4.0], 0.0), Some(1.0));
        assert_eq!(quantile(&[1.0, 2.0, 3.0, 4.0], 0.75), Some(3.0));
        assert_eq!(max(&[1.0, 7.0, 2.0]), Some(7.0));
        assert_eq!(max(&[]), None);
    }

    #[test]
    fn cdf_counts_failures() {
        assert_eq!(cdf(&[2.0, 1.0], 2), vec![(1.0, 0.5), (2.0, 1.0)]);
        assert_eq!(cdf(&[1.0], 4), vec![(1.0, 0.25)]);
        assert!(cdf(&[], 3).is_empty());
    }
}
