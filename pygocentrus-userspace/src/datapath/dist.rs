//! The jitter distribution tables the kernel reads, netem-style: quantiles
//! of a zero-mean, unit-deviation distribution at evenly spaced
//! probabilities, times `DIST_SCALE`, so that `table[uniform draw]` is a
//! draw from the distribution.
//!
//! normal: the standard normal. pareto: a Pareto with shape 3 (netem's),
//! standardised. paretonormal: a quarter normal, three quarters pareto at
//! the same probability (netem mixes the two the same way).

use pygocentrus_common::{DIST_SCALE, DIST_TABLE_SIZE, DistTable};

/// Shape of the pareto table.
const PARETO_SHAPE: f64 = 3.0;

/// The three tables in `DIST` map order: normal, pareto, paretonormal.
pub fn tables() -> [DistTable; 3] {
    [
        table(normal_quantile),
        table(pareto_quantile),
        // Perfectly correlated, so the deviations add: 0.25 + 0.75 = 1.
        table(|p| 0.25 * normal_quantile(p) + 0.75 * pareto_quantile(p)),
    ]
}

/// The table of a quantile function. Entries are 16-bit, so values are
/// limited to ±4 standard deviations (32767 / 8192), as in netem; that cuts
/// the pareto tail, so each table is re-centred and re-scaled after the cut
/// until the mean is 0 and the deviation 1 (`--jitter` then means the
/// same spread for every distribution).
fn table(quantile: impl Fn(f64) -> f64) -> DistTable {
    let limit = f64::from(i16::MAX) / DIST_SCALE as f64;
    let n = DIST_TABLE_SIZE as f64;
    let mut xs: Vec<f64> = (0..DIST_TABLE_SIZE).map(|i| quantile((i as f64 + 0.5) / n)).collect();
    // Cut and re-scale until the cut no longer moves the moments (a few
    // rounds for pareto; the normal table is unchanged by the first).
    for _ in 0..64 {
        xs.iter_mut().for_each(|x| *x = x.clamp(-limit, limit));
        let mean = xs.iter().sum::<f64>() / n;
        let sd = (xs.iter().map(|x| (x - mean).powi(2)).sum::<f64>() / n).sqrt();
        if mean.abs() < 1e-4 && (sd - 1.0).abs() < 1e-4 {
            break;
        }
        xs.iter_mut().for_each(|x| *x = (*x - mean) / sd);
    }
    let mut values = [0i16; DIST_TABLE_SIZE];
    for (v, x) in values.iter_mut().zip(&xs) {
        let scaled = (x * DIST_SCALE as f64).round();
        *v = scaled.clamp(f64::from(i16::MIN), f64::from(i16::MAX)) as i16;
    }
    DistTable { values }
}

/// Pareto(shape a, scale 1) quantile, shifted and scaled to mean 0 and
/// standard deviation 1.
fn pareto_quantile(p: f64) -> f64 {
    let a = PARETO_SHAPE;
    let mean = a / (a - 1.0);
    let sd = (a / ((a - 1.0).powi(2) * (a - 2.0))).sqrt();
    ((1.0 - p).powf(-1.0 / a) - mean) / sd
}

/// The standard normal quantile (Acklam's rational approximation, relative
/// error below 1.2e-9: far finer than the table's 1/8192 steps).
fn normal_quantile(p: f64) -> f64 {
    const A: [f64; 6] = [
        -3.969_683_028_665_376e1,
        2.209_460_984_245_205e2,
        -2.759_285_104_469_687e2,
        1.383_577_518_672_69e2,
        -3.066_479_806_614_716e1,
        2.506_628_277_459_239,
    ];
    const B: [f64; 5] = [
        -5.447_609_879_822_406e1,
        1.615_858_368_580_409e2,
        -1.556_989_798_598_866e2,
        6.680_131_188_771_972e1,
        -1.328_068_155_288_572e1,
    ];
    const C: [f64; 6] = [
        -7.784_894_002_430_293e-3,
        -3.223_964_580_411_365e-1,
        -2.400_758_277_161_838,
        -2.549_732_539_343_734,
        4.374_664_141_464_968,
        2.938_163_982_698_783,
    ];
    const D: [f64; 4] =
        [7.784_695_709_041_462e-3, 3.224_671_290_700_398e-1, 2.445_134_137_142_996, 3.754_408_661_907_416];
    const LOW: f64 = 0.02425;
    let tail = |q: f64| {
        (((((C[0] * q + C[1]) * q + C[2]) * q + C[3]) * q + C[4]) * q + C[5])
            / ((((D[0] * q + D[1]) * q + D[2]) * q + D[3]) * q + 1.0)
    };
    if p < LOW {
        tail((-2.0 * p.ln()).sqrt())
    } else if p > 1.0 - LOW {
        -tail((-2.0 * (1.0 - p).ln()).sqrt())
    } else {
        let q = p - 0.5;
        let r = q * q;
        (((((A[0] * r + A[1]) * r + A[2]) * r + A[3]) * r + A[4]) * r + A[5]) * q
            / (((((B[0] * r + B[1]) * r + B[2]) * r + B[3]) * r + B[4]) * r + 1.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn moments(t: &DistTable) -> (f64, f64) {
        let n = t.values.len() as f64;
        let xs: Vec<f64> = t.values.iter().map(|v| f64::from(*v) / DIST_SCALE as f64).collect();
        let mean = xs.iter().sum::<f64>() / n;
        let var = xs.iter().map(|x| (x - mean).powi(2)).sum::<f64>() / n;
        (mean, var.sqrt())
    }

    #[test]
    fn known_normal_quantiles() {
        assert!((normal_quantile(0.5)).abs() < 1e-9);
        assert!((normal_quantile(0.975) - 1.959_964).abs() < 1e-5);
        assert!((normal_quantile(0.001) + 3.090_232).abs() < 1e-5);
    }

    /// Each table has mean ≈ 0 and deviation ≈ 1, so that `--jitter` means
    /// the same spread for every distribution. Rounding to 1/8192 moves
    /// the moments by far less than the 0.01 allowed.
    #[test]
    fn tables_are_standardised() {
        let [normal, pareto, mix] = tables();
        let (m, sd) = moments(&normal);
        assert!(m.abs() < 0.01 && (sd - 1.0).abs() < 0.02, "normal {m} {sd}");
        for (name, t) in [("pareto", &pareto), ("paretonormal", &mix)] {
            let (m, sd) = moments(t);
            assert!(m.abs() < 0.01 && (sd - 1.0).abs() < 0.01, "{name} {m} {sd}");
        }
        // Sorted: entry i is the quantile at (i + 0.5) / size.
        assert!(normal.values.windows(2).all(|w| w[0] <= w[1]));
        // Pareto is skewed: the median is below the mean.
        assert!(pareto.values[DIST_TABLE_SIZE / 2] < 0);
    }
}
