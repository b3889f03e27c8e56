//! Deterministic `ln`/`exp` and a seeded PRNG.
//!
//! Sampling at temperature > 0 must give the same tokens natively (tests, the `infer`
//! example) and in Wasm. `f64::ln`/`exp` call the platform libm (glibc natively, wasi-libc
//! in Wasm), whose last-bit rounding may differ; these use only IEEE-754 basic operations
//! (+ - * /), which are exact-rounded everywhere, so results are bit-identical on every
//! target. Accuracy (~1e-15 relative) is far beyond what sampling needs.

const LN2: f64 = std::f64::consts::LN_2;

/// Natural logarithm for finite `x > 0` (returns `-inf` for 0, NaN for negative/NaN).
pub fn ln(x: f64) -> f64 {
    if x.is_nan() || x < 0.0 {
        return f64::NAN;
    }
    if x == 0.0 {
        return f64::NEG_INFINITY;
    }
    if x.is_infinite() {
        return f64::INFINITY;
    }
    // x = m * 2^e with m in [1, 2); subnormals are scaled up first.
    let (mut x, mut e) = (x, 0i64);
    if x < f64::MIN_POSITIVE {
        x *= pow2(54); // exact: power of two
        e -= 54;
    }
    let bits = x.to_bits();
    e += ((bits >> 52) & 0x7ff) as i64 - 1023;
    let mut m = f64::from_bits((bits & 0x000f_ffff_ffff_ffff) | 0x3ff0_0000_0000_0000);
    // Keep m in [sqrt(1/2), sqrt(2)) so the series argument stays small.
    if m > std::f64::consts::SQRT_2 {
        m /= 2.0;
        e += 1;
    }
    // ln(m) = 2 * atanh(s), s = (m - 1) / (m + 1), |s| < 0.172
    let s = (m - 1.0) / (m + 1.0);
    let s2 = s * s;
    let mut term = s;
    let mut sum = 0.0;
    let mut k = 1.0;
    while k < 60.0 {
        sum += term / k;
        term *= s2;
        k += 2.0;
    }
    2.0 * sum + e as f64 * LN2
}

/// `e^y` (0 below about -745, +inf above about 709.78).
pub fn exp(y: f64) -> f64 {
    if y.is_nan() {
        return f64::NAN;
    }
    if y > 709.78 {
        return f64::INFINITY;
    }
    if y < -745.2 {
        return 0.0;
    }
    // y = k ln2 + r, |r| <= ln2 / 2; e^y = 2^k e^r
    let k = (y / LN2).round();
    let r = y - k * LN2;
    let mut term = 1.0;
    let mut sum = 1.0;
    let mut n = 1.0;
    while n < 30.0 {
        term = term * r / n;
        sum += term;
        n += 1.0;
    }
    // Scale by 2^k in two steps so neither factor over- or underflows on its own.
    let k = k as i64;
    let half = k / 2;
    sum * pow2(half) * pow2(k - half)
}

fn pow2(k: i64) -> f64 {
    // k is within [-540, 512] here, so a normal or subnormal power of two.
    if k >= -1022 {
        f64::from_bits(((k + 1023) as u64) << 52)
    } else {
        f64::from_bits(1u64 << (k + 1074))
    }
}

/// SplitMix64: tiny, fast, well-distributed; more than enough for sampling.
#[derive(Debug, Clone)]
pub struct SplitMix64(u64);

impl SplitMix64 {
    pub fn new(seed: u64) -> Self {
        Self(seed)
    }

    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// Uniform in [0, 1), 53 random bits.
    pub fn next_f64(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 * (1.0 / (1u64 << 53) as f64)
    }
}

/// FNV-1a over bytes, for mixing a request into the seed.
pub fn fnv1a(bytes: impl IntoIterator<Item = u8>) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in bytes {
        h ^= b as u64;
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    h
}

#[cfg(test)]
mod tests {
    use super::*;

    fn close(a: f64, b: f64) -> bool {
        (a - b).abs() <= 1e-13 * b.abs().max(1e-300)
    }

    #[test]
    fn ln_matches_std() {
        for x in [
            1e-310, 1e-300, 0.001, 0.5, 0.75, 1.0, 1.41, 1.42, 1.5, 2.0, 3.0, 10.0, 123.456, 1e10,
            1e300,
        ] {
            assert!(close(ln(x), x.ln()), "ln({x}) = {} vs {}", ln(x), x.ln());
        }
        assert_eq!(ln(1.0), 0.0);
        assert_eq!(ln(0.0), f64::NEG_INFINITY);
        assert!(ln(-1.0).is_nan());
    }

    #[test]
    fn exp_matches_std() {
        for y in [
            -740.0, -100.0, -10.0, -1.0, -0.5, 0.0, 1e-9, 0.5, 1.0, 2.5, 10.0, 100.0, 700.0,
        ] {
            assert!(
                close(exp(y), y.exp()),
                "exp({y}) = {} vs {}",
                exp(y),
                y.exp()
            );
        }
        assert_eq!(exp(-1000.0), 0.0);
        assert_eq!(exp(1000.0), f64::INFINITY);
        assert!(close(exp(ln(7.0) / 0.5), 49.0));
    }

    #[test]
    fn splitmix_is_deterministic_and_uniformish() {
        let mut a = SplitMix64::new(42);
        let mut b = SplitMix64::new(42);
        let xs: Vec<u64> = (0..100).map(|_| a.next_u64()).collect();
        let ys: Vec<u64> = (0..100).map(|_| b.next_u64()).collect();
        assert_eq!(xs, ys);
        assert_ne!(SplitMix64::new(43).next_u64(), xs[0]);
        let mut r = SplitMix64::new(7);
        let n = 10_000;
        let mean = (0..n).map(|_| r.next_f64()).sum::<f64>() / n as f64;
        assert!((mean - 0.5).abs() < 0.02, "mean {mean}");
    }

    #[test]
    fn fnv_distinguishes_inputs() {
        assert_ne!(fnv1a([1u8, 2]), fnv1a([2u8, 1]));
        assert_eq!(fnv1a([]), 0xcbf2_9ce4_8422_2325);
    }
}
