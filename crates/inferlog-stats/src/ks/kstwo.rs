//! Survival function of the one-sample two-sided Kolmogorov-Smirnov statistic D_n, a port of
//! SciPy's `scipy.stats.kstwo.sf` (`scipy/stats/_ksstats.py`, Simard & L'Ecuyer 2011), which
//! chooses per (n, x) among:
//! - Ruben-Gambino closed forms for n·x ≤ 1 and n·x ≥ n − 1;
//! - 2 × the one-sided Smirnov survival function where it is exact (x ≥ 0.5) or accurate
//!   (large n·x²);
//! - the Durbin matrix method as Marsaglia-Tsang-Wang evaluate it, Pomeranz's recursion, or
//!   the Pelz-Good expansion elsewhere.
//!
//! The one-sided Smirnov function (SciPy's C `smirnov`) is computed here with the
//! Birnbaum-Tingey sum in log space in plain f64 where SciPy uses double-double arithmetic:
//! every term is positive, so the relative error stays near n·ε, far below 1e-6.

use std::f64::consts::{LN_2, PI};

/// Intermediate results are rescaled by 2^±128 to avoid overflow and underflow.
const SCALE_EXPONENT: i32 = 128;
const SCALE_UP: f64 = pow2(128);
const SCALE_DOWN: f64 = pow2(-128);

/// 2^e for a normal exponent, −1022 ≤ e ≤ 1023.
const fn pow2(e: i64) -> f64 {
    f64::from_bits(((e + 1023) as u64) << 52)
}

/// `scipy.stats.kstwo.sf(x, n)`: Pr(D_n > x) for the two-sided one-sample statistic
/// D_n = sup |F_n − F| of n observations. `None` when n = 0 or x is NaN (SciPy returns NaN).
pub fn kstwo_sf(n: u64, x: f64) -> Option<f64> {
    if n == 0 || x.is_nan() {
        return None;
    }
    // rv_continuous.sf: 1 at or below the support's lower end 1/(2n), 0 from its upper end 1.
    if x <= 0.5 / n as f64 {
        return Some(1.0);
    }
    if x >= 1.0 {
        return Some(0.0);
    }
    Some(kolmogn_sf(n, x))
}

/// SciPy's `_kolmogn(n, x, cdf=False)` for 0 < x < 1.
fn kolmogn_sf(n: u64, x: f64) -> f64 {
    let nf = n as f64;
    let t = nf * x;
    if t <= 1.0 {
        if t <= 0.5 {
            return 1.0;
        }
        let cdf = if n <= 140 {
            (1..=n)
                .map(|i| i as f64 * (1.0 / nf) * (2.0 * t - 1.0))
                .product()
        } else {
            (log_nfactorial_div_n_pow_n(nf) + nf * (2.0 * t - 1.0).ln()).exp()
        };
        return clip(1.0 - cdf);
    }
    if t >= nf - 1.0 {
        return clip(2.0 * (1.0 - x).powf(nf));
    }
    if x >= 0.5 {
        return clip(2.0 * smirnov_sf(n, x));
    }
    let nxsquared = t * x;
    if n <= 140 {
        if nxsquared <= 0.754693 {
            return clip(1.0 - durbin_cdf(n, x));
        }
        if nxsquared <= 4.0 {
            return clip(1.0 - pomeranz_cdf(n, x));
        }
        return clip(2.0 * smirnov_sf(n, x));
    }
    if nxsquared >= 370.0 {
        return 0.0;
    }
    if nxsquared >= 2.2 {
        return clip(2.0 * smirnov_sf(n, x));
    }
    let cdf = if n <= 100_000 && nf * x.powf(1.5) <= 1.4 {
        durbin_cdf(n, x)
    } else {
        pelz_good_cdf(n, x)
    };
    clip(1.0 - cdf)
}

fn clip(p: f64) -> f64 {
    p.clamp(0.0, 1.0)
}

/// x · 2^exponent without intermediate overflow (C's `ldexp`).
fn ldexp(mut x: f64, mut exponent: i64) -> f64 {
    const STEP: i64 = 1000;
    while exponent > STEP {
        x *= pow2(STEP);
        exponent -= STEP;
    }
    while exponent < -STEP {
        x *= pow2(-STEP);
        exponent += STEP;
    }
    x * pow2(exponent)
}

/// log(n! / n^n) by Stirling's series with the n·log(n) term removed up front.
fn log_nfactorial_div_n_pow_n(n: f64) -> f64 {
    // B_{2j} / (2j (2j − 1)) for j = 8, …, 1 (highest power first, as for np.polyval).
    #[expect(clippy::excessive_precision, reason = "SciPy's constants, verbatim")]
    const STIRLING: [f64; 8] = [
        -2.955065359477124183e-2,
        6.4102564102564102564e-3,
        -1.9175269175269175269e-3,
        8.4175084175084175084e-4,
        -5.952380952380952381e-4,
        7.9365079365079365079e-4,
        -2.7777777777777777778e-3,
        8.3333333333333333333e-2,
    ];
    let rn = 1.0 / n;
    let series = STIRLING.iter().fold(0.0, |acc, c| acc * (rn / n) + c);
    n.ln() / 2.0 - n + (2.0 * PI).ln() / 2.0 + rn * series
}

/// Pr(D_n ≤ d) by Durbin's matrix method (Marsaglia, Tsang & Wang 2003): the k-th diagonal
/// entry of n!/n^n · H^n for the (2k − 1)-square matrix H, k = ceil(n·d), with powers by
/// squaring and explicit binary exponents. SciPy's `_kolmogn_DMTW`.
fn durbin_cdf(n: u64, d: f64) -> f64 {
    if d >= 1.0 {
        return 1.0;
    }
    let nf = n as f64;
    let nd = nf * d;
    if nd <= 0.5 {
        return 0.0;
    }
    let k = nd.ceil() as usize;
    let h = k as f64 - nd;
    let m = 2 * k - 1;

    // v[j] = (1 − h^(j+1)) / (j+1)!, w[j] = 1/j!, last v adjusted for the corner.
    let mut v: Vec<f64> = (1..=m).map(|j| 1.0 - h.powf(j as f64)).collect();
    let mut w = vec![0.0; m];
    let mut fac = 1.0;
    for j in 1..=m {
        w[j - 1] = fac;
        fac /= j as f64;
        v[j - 1] *= fac;
    }
    let tt = (2.0 * h - 1.0).max(0.0).powf(m as f64) - 2.0 * h.powf(m as f64);
    v[m - 1] = (1.0 + tt) * fac;

    let mut matrix = vec![0.0; m * m];
    for col in 1..m {
        for row in (col - 1)..m {
            matrix[row * m + col] = w[row + 1 - col];
        }
    }
    for row in 0..m {
        matrix[row * m] = v[row];
    }
    for col in 0..m {
        matrix[(m - 1) * m + col] = v[m - 1 - col];
    }

    let mut power = identity(m);
    let mut remaining = n;
    let (mut exponent, mut matrix_exponent): (i64, i64) = (0, 0);
    let centre = (k - 1) * m + (k - 1);
    while remaining > 0 {
        if remaining % 2 == 1 {
            power = matmul(&power, &matrix, m);
            exponent += matrix_exponent;
        }
        matrix = matmul(&matrix, &matrix, m);
        matrix_exponent *= 2;
        if matrix[centre].abs() > SCALE_UP {
            matrix.iter_mut().for_each(|x| *x /= SCALE_UP);
            matrix_exponent += i64::from(SCALE_EXPONENT);
        }
        remaining /= 2;
    }

    let mut p = power[centre];
    for i in 1..=n {
        p = i as f64 * p / nf;
        if p.abs() < SCALE_DOWN {
            p *= SCALE_UP;
            exponent -= i64::from(SCALE_EXPONENT);
        }
    }
    clip(ldexp(p, exponent))
}

fn identity(m: usize) -> Vec<f64> {
    let mut matrix = vec![0.0; m * m];
    for i in 0..m {
        matrix[i * m + i] = 1.0;
    }
    matrix
}

fn matmul(a: &[f64], b: &[f64], m: usize) -> Vec<f64> {
    let mut out = vec![0.0; m * m];
    for i in 0..m {
        for k in 0..m {
            let aik = a[i * m + k];
            if aik != 0.0 {
                for j in 0..m {
                    out[i * m + j] += aik * b[k * m + j];
                }
            }
        }
    }
    out
}

/// Pr(D_n ≤ x) by Pomeranz's recursion (1974): 2n + 1 convolutions of a short row of
/// probabilities with truncated Poisson weights, rescaled by 2^128 against underflow.
/// SciPy's `_kolmogn_Pomeranz`.
fn pomeranz_cdf(n: u64, x: f64) -> f64 {
    let nf = n as f64;
    let n = n as i64;
    let t = nf * x;
    let ll = t.floor() as i64;
    let f = t - ll as f64;
    let g = f.min(1.0 - f);
    let ceilf = i64::from(f > 0.0);
    let roundf = i64::from(f > 0.5);
    let npwrs = (2 * (ll + 1)) as usize;

    // (g/n)^m/m!, (2g/n)^m/m!, ((1−2g)/n)^m/m!: Poisson probabilities without normalisation.
    let powers = |base: f64| {
        let mut out = vec![1.0; npwrs];
        for m in 1..npwrs {
            out[m] = out[m - 1] * base / m as f64;
        }
        out
    };
    let gpower = powers(g / nf);
    let twogpower = powers(2.0 * g / nf);
    let onem2gpower = powers((1.0 - 2.0 * g) / nf);

    let mut v0 = vec![0.0; npwrs];
    let mut v1 = vec![0.0; npwrs];
    v1[0] = 1.0;
    let (mut v0s, mut v1s): (i64, i64) = (0, 0);
    let mut exponent: i64 = 0;

    let (mut j1, _) = pomeranz_bounds(0, n, ll, ceilf, roundf);
    for i in 1..(2 * n + 2) {
        let k1 = j1;
        std::mem::swap(&mut v0, &mut v1);
        std::mem::swap(&mut v0s, &mut v1s);
        v1.fill(0.0);
        let (next_j1, j2) = pomeranz_bounds(i, n, ll, ceilf, roundf);
        j1 = next_j1;
        let weights = if i == 1 || i == 2 * n + 1 {
            &gpower
        } else if i % 2 == 1 {
            &twogpower
        } else {
            &onem2gpower
        };
        let ln2 = j2 - k1 + 1;
        if ln2 > 0 {
            let ln2 = ln2 as usize;
            let start = (k1 - v0s) as usize;
            let row = &v0[start..start + ln2];
            let weights = &weights[..ln2];
            // Entries conv_start .. conv_start + conv_len of np.convolve(row, weights).
            let conv_start = (j1 - k1) as usize;
            let conv_len = (j2 - j1 + 1) as usize;
            for (out, index) in v1[..conv_len].iter_mut().zip(conv_start..) {
                let lo = (index + 1).saturating_sub(ln2);
                let hi = index.min(ln2 - 1);
                *out = (lo..=hi).map(|r| row[r] * weights[index - r]).sum();
            }
            let largest = v1.iter().copied().fold(f64::NEG_INFINITY, f64::max);
            if 0.0 < largest && largest < SCALE_DOWN {
                v1.iter_mut().for_each(|x| *x *= SCALE_UP);
                exponent -= i64::from(SCALE_EXPONENT);
            }
            v1s = v0s + j1 - k1;
        }
    }

    // Multiply by n!.
    let mut answer = v1[(n - v1s) as usize];
    for m in 1..=n {
        if answer.abs() > SCALE_UP {
            answer *= SCALE_DOWN;
            exponent += i64::from(SCALE_EXPONENT);
        }
        answer *= m as f64;
    }
    clip(ldexp(answer, exponent))
}

/// SciPy's `_pomeranz_compute_j1j2`: the first and last non-zero column of row i.
fn pomeranz_bounds(i: i64, n: i64, ll: i64, ceilf: i64, roundf: i64) -> (i64, i64) {
    let (j1, j2) = if i == 0 {
        (-ll - ceilf - 1, ll + ceilf - 1)
    } else {
        let (half, odd) = ((i + 1) / 2, (i + 1) % 2);
        if odd == 0 {
            if half == n + 1 {
                (n - ll - ceilf - 1, n + ll + ceilf - 1)
            } else {
                (half - 1 - ll - roundf - 1, half + ll - 1 + ceilf - 1)
            }
        } else {
            (half - 1 - ll - 1, half + ll + roundf - 1)
        }
    };
    ((j1 + 2).max(0), j2.min(n))
}

/// Pelz-Good (1976) approximation of Pr(D_n ≤ x): the Li-Chien/Korolyuk expansion
/// K0 + K1/√n + K2/n + K3/n^1.5 in z = x√n, with the theta-function series for small z.
/// SciPy's `_kolmogn_PelzGood`.
fn pelz_good_cdf(n: u64, x: f64) -> f64 {
    if x <= 0.0 {
        return 0.0;
    }
    if x >= 1.0 {
        return 1.0;
    }
    let nf = n as f64;
    let pi2 = PI * PI;
    let pi4 = pi2 * pi2;
    let pi6 = pi4 * pi2;
    let sqrt2pi = (2.0 * PI).sqrt();

    let z = nf.sqrt() * x;
    let (z2, z3, z4, z6) = (z.powi(2), z.powi(3), z.powi(4), z.powi(6));
    let qlog = -pi2 / 8.0 / z2;
    if qlog < -708.0 {
        return 0.0;
    }
    let q = qlog.exp();

    let k1a = -z2;
    let k1b = pi2 / 4.0;
    let k2a = 6.0 * z6 + 2.0 * z4;
    let k2b = (2.0 * z4 - 5.0 * z2) * pi2 / 4.0;
    let k2c = pi4 * (1.0 - 2.0 * z2) / 16.0;
    let k3d = pi6 * (5.0 - 30.0 * z2) / 64.0;
    let k3c = pi4 * (-60.0 * z2 + 212.0 * z4) / 16.0;
    let k3b = pi2 * (135.0 * z4 - 96.0 * z6) / 4.0;
    let k3a = -30.0 * z6 - 90.0 * z.powi(8);

    // Horner scheme over odd m = 2k − 1 of c_i · q^(m²).
    let maxk = (16.0 * z / PI).ceil() as i64;
    let mut k = [0.0_f64; 4];
    for kk in (1..=maxk).rev() {
        let m = (2 * kk - 1) as f64;
        let (m2, m4, m6) = (m * m, m.powi(4), m.powi(6));
        let qpower = q.powf((8 * kk) as f64);
        let coeffs = [
            1.0,
            k1a + k1b * m2,
            k2a + k2b * m2 + k2c * m4,
            k3a + k3b * m2 + k3c * m4 + k3d * m6,
        ];
        for (acc, c) in k.iter_mut().zip(coeffs) {
            *acc = *acc * qpower + c;
        }
    }
    let divisors = [z, 6.0 * z4, 72.0 * z.powi(7), 6480.0 * z.powi(10)];
    for (acc, divisor) in k.iter_mut().zip(divisors) {
        *acc = *acc * q * sqrt2pi / divisor;
    }

    // Terms over all integers k for K2 and K3.
    let q = (-pi2 / 2.0 / z2).exp();
    let sqrt3z = 3.0_f64.sqrt() * z;
    let (mut k2extra, mut k3extra) = (0.0, 0.0);
    for kk in (1..=maxk).rev() {
        let ksquared = (kk * kk) as f64;
        let qpower = q.powf(ksquared);
        let kspi = PI * kk as f64;
        k2extra += ksquared * qpower;
        k3extra += (sqrt3z + kspi) * (sqrt3z - kspi) * ksquared * qpower;
    }
    k[2] += k2extra * pi2 * sqrt2pi / (-36.0 * z3);
    k[3] += k3extra * pi2 * sqrt2pi / (216.0 * z6);
    k.iter()
        .enumerate()
        .map(|(i, term)| term / nf.powf(i as f64 / 2.0))
        .sum()
}

/// One-sided Smirnov survival function Pr(D_n^+ > x) (SciPy's `scipy.special.smirnov`) for
/// the arguments `kolmogn_sf` passes (x ≥ 0.5 or n·x² ≥ 2.2, n·x > 1): the Birnbaum-Tingey sum
/// x · Σ_{v=0}^{⌈n(1−x)⌉−1} C(n,v) (x + v/n)^(v−1) (1 − x − v/n)^(n−v), whose terms are all
/// positive, with SciPy's special cases and early termination.
fn smirnov_sf(n: u64, x: f64) -> f64 {
    const MAX_COMPUTE_N: u64 = 1_000_000;
    const MIN_LOG: f64 = -708.396_418_532_264_1;
    if n == 1 {
        return 1.0 - x;
    }
    if x <= 0.0 {
        return 1.0;
    }
    if x >= 1.0 {
        return 0.0;
    }
    let nf = n as f64;
    let (nx_floor, alpha) = floor_and_fraction(nf, x);
    if nx_floor == 0 || (nx_floor == 1 && alpha == 0.0) {
        return 1.0 - x * (1.0 + x).powf(nf - 1.0);
    }
    if -2.0 * nf * x * x < MIN_LOG {
        return 0.0;
    }
    if nx_floor >= n - 1 {
        return (1.0 - x).powf(nf);
    }
    if n > MAX_COMPUTE_N {
        // p ≈ exp(−(6nx + 1)² / 18n)
        let logp = -(6.0 * nf * x + 1.0).powi(2) / 18.0 / nf;
        return if logp < -LN_2 {
            logp.exp()
        } else {
            1.0 + logp.exp_m1()
        };
    }

    let terms = n - nx_floor; // v = 0 .. terms − 1, all v < n(1 − x)
    let vmid = n / 2;
    let mut binomial = LogBinomial::one();
    // v = 0: (1 − x)^n / x
    let mut sum = (nf * (-x).ln_1p() - x.ln()).exp();
    binomial.advance(n, 0);
    for v in 1..terms {
        let vf = v as f64;
        // 1 − x − v/n = (n − v − ⌊nx⌋ − α)/n and x + v/n = (v + ⌊nx⌋ + α)/n, exactly.
        let upper = ((n - v - nx_floor) as f64 - alpha) / nf;
        let lower = ((v + nx_floor) as f64 + alpha) / nf;
        let term = (binomial.ln() + (nf - vf) * upper.ln() + (vf - 1.0) * lower.ln()).exp();
        if term.is_finite() && term != 0.0 {
            sum += term;
        }
        if term != 0.0 {
            if 4.0 * (terms - v) as f64 * term < f64::EPSILON * sum && v != terms - 1 {
                break;
            }
        } else if v > vmid {
            break;
        }
        binomial.advance(n, v);
    }
    clip(x * sum)
}

/// floor(n·x) and n·x − floor(n·x), with the product's rounding error recovered by an FMA so
/// that the fraction is exact to one rounding.
fn floor_and_fraction(n: f64, x: f64) -> (u64, f64) {
    let hi = n * x;
    let lo = n.mul_add(x, -hi);
    let mut floor = hi.floor();
    let mut alpha = (hi - floor) + lo;
    if alpha < 0.0 {
        floor -= 1.0;
        alpha += 1.0;
    }
    if alpha >= 1.0 {
        floor += 1.0;
        alpha -= 1.0;
    }
    (floor as u64, alpha)
}

/// C(n, v) as mantissa × 2^exponent, updated by the exact ratio (n − v)/(v + 1), so that it
/// neither overflows nor accumulates more than one rounding per step.
struct LogBinomial {
    mantissa: f64,
    exponent: i64,
}

impl LogBinomial {
    /// C(n, 0).
    fn one() -> Self {
        Self {
            mantissa: 1.0,
            exponent: 0,
        }
    }

    /// C(n, v) → C(n, v + 1).
    fn advance(&mut self, n: u64, v: u64) {
        self.mantissa *= (n - v) as f64 / (v + 1) as f64;
        if self.mantissa >= SCALE_UP {
            self.mantissa *= SCALE_DOWN;
            self.exponent += i64::from(SCALE_EXPONENT);
        } else if self.mantissa <= SCALE_DOWN {
            self.mantissa *= SCALE_UP;
            self.exponent -= i64::from(SCALE_EXPONENT);
        }
    }

    fn ln(&self) -> f64 {
        self.mantissa.ln() + self.exponent as f64 * LN_2
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn support_ends_and_invalid_arguments() {
        assert_eq!(kstwo_sf(0, 0.5), None);
        assert_eq!(kstwo_sf(3, f64::NAN), None);
        assert_eq!(kstwo_sf(10, 0.05), Some(1.0));
        assert_eq!(kstwo_sf(10, 1.0), Some(0.0));
    }

    #[test]
    fn n_equal_one_is_uniform_on_half_to_one() {
        // D_1 = max(U, 1 − U) is uniform on [1/2, 1]: sf(x) = 2(1 − x).
        let p = kstwo_sf(1, 0.7).unwrap();
        assert!((p - 0.6).abs() < 1e-15, "{p}");
    }

    #[test]
    fn every_method_agrees_with_its_neighbour_where_both_apply() {
        // Durbin and Pomeranz are both exact for small n.
        for (n, x) in [(10, 0.2), (20, 0.15), (50, 0.1)] {
            let (a, b) = (durbin_cdf(n, x), pomeranz_cdf(n, x));
            assert!((a - b).abs() < 1e-12, "n={n} x={x}: {a} vs {b}");
        }
        // For x ≥ 0.5 the two-sided tail is exactly twice the one-sided one.
        let (a, b) = (1.0 - durbin_cdf(8, 0.55), 2.0 * smirnov_sf(8, 0.55));
        assert!((a - b).abs() < 1e-12, "{a} vs {b}");
    }

    #[test]
    fn smirnov_matches_its_closed_form_for_n_two() {
        // n = 2, 1/2 ≤ x < 1: Pr(D+ > x) = (1 − x)^2.
        let x = 0.6;
        assert!((smirnov_sf(2, x) - (1.0 - x) * (1.0 - x)).abs() < 1e-15);
    }

    #[test]
    fn fraction_of_n_x_is_exact() {
        // 0.3 is stored slightly below 3/10, so 10 · 0.3 is just below 3.
        let (floor, alpha) = floor_and_fraction(10.0, 0.3);
        assert_eq!(floor, 2);
        assert!(alpha > 0.999_999_999_999_999 && alpha < 1.0, "{alpha}");
        assert_eq!(floor_and_fraction(4.0, 0.25), (1, 0.0));
    }
}
