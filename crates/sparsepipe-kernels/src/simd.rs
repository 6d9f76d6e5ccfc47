//! A 16-lane f32 vector abstraction, implemented once per instruction set.
//!
//! Kernels are written once, generic over [`Simd`], and instantiated inside
//! `#[target_feature]` wrappers so each instantiation is compiled for its ISA.

/// Lanes in one [`Simd::V`]; every ISA path works on 16 floats at a time.
pub(crate) const LANES: usize = 16;

/// Operations on 16 f32 lanes. All methods are `unsafe`: pointers must be valid for 16 floats
/// and the implementing ISA must be supported by the running CPU.
pub(crate) trait Simd: Copy {
    type V: Copy;
    /// Machine vector registers one `V` occupies (AVX2: two of its sixteen), for kernels that
    /// size their accumulator sets to the register file.
    const REGS_PER_V: usize = 1;
    unsafe fn zero() -> Self::V;
    unsafe fn splat(x: f32) -> Self::V;
    unsafe fn load(p: *const f32) -> Self::V;
    unsafe fn store(p: *mut f32, v: Self::V);
    /// `a * b + c`.
    unsafe fn fmadd(a: Self::V, b: Self::V, c: Self::V) -> Self::V;
    unsafe fn add(a: Self::V, b: Self::V) -> Self::V;
    unsafe fn min(a: Self::V, b: Self::V) -> Self::V;
    unsafe fn max(a: Self::V, b: Self::V) -> Self::V;
    unsafe fn mul(a: Self::V, b: Self::V) -> Self::V;
    unsafe fn reduce_sum(v: Self::V) -> f32;
    unsafe fn reduce_max(v: Self::V) -> f32;
    /// `e^x` per lane, relative error below 2e-7 for `x` in `[-87, 88]`; 0 below -88.
    unsafe fn exp(x: Self::V) -> Self::V;
    unsafe fn div(a: Self::V, b: Self::V) -> Self::V;
    unsafe fn abs(a: Self::V) -> Self::V;
    /// `|mag|` with the sign of `sign`, per lane.
    unsafe fn copysign(mag: Self::V, sign: Self::V) -> Self::V;
    /// The even- and odd-indexed floats of the 32 at `p`.
    #[inline(always)]
    unsafe fn deinterleave(p: *const f32) -> (Self::V, Self::V) {
        let (mut even, mut odd) = ([0f32; LANES], [0f32; LANES]);
        for i in 0..LANES {
            // SAFETY: 32 readable floats at `p` (caller).
            unsafe {
                even[i] = *p.add(2 * i);
                odd[i] = *p.add(2 * i + 1);
            }
        }
        // SAFETY: the arrays hold LANES floats; the ISA is the caller's.
        unsafe { (Self::load(even.as_ptr()), Self::load(odd.as_ptr())) }
    }
}

/// Coefficients of Abramowitz & Stegun 7.1.26: `erf(z) = 1 - t·p(t)·e^(-z²)`, `t = 1/(1 + P·z)`
/// for `z >= 0` (absolute error below 1.5e-7).
pub(crate) const ERF_P: f32 = 0.327_591_1;
pub(crate) const ERF_POLY: [f32; 5] = [1.061_405_4, -1.453_152, 1.421_413_8, -0.284_496_74, 0.254_829_6];

/// Exact (erf) GELU per lane: `x/2 · (1 + erf(x/√2))`, absolute error below 1e-6·max(1, |x|).
#[inline(always)]
pub(crate) unsafe fn gelu<S: Simd>(x: S::V) -> S::V {
    // SAFETY: only trait operations on values; the ISA context is the caller's.
    unsafe {
        let z = S::abs(S::mul(x, S::splat(std::f32::consts::FRAC_1_SQRT_2)));
        let t = S::div(S::splat(1.0), S::fmadd(z, S::splat(ERF_P), S::splat(1.0)));
        let mut p = S::splat(ERF_POLY[0]);
        for c in &ERF_POLY[1..] {
            p = S::fmadd(p, t, S::splat(*c));
        }
        let e = S::exp(S::mul(S::mul(z, z), S::splat(-1.0)));
        let erf_abs = S::fmadd(S::mul(S::mul(t, p), e), S::splat(-1.0), S::splat(1.0));
        let erf = S::copysign(erf_abs, x);
        S::mul(S::mul(x, S::splat(0.5)), S::add(erf, S::splat(1.0)))
    }
}

/// `act` applied per lane (the ISA context is the caller's).
#[inline(always)]
pub(crate) unsafe fn activate<S: Simd>(act: crate::Activation, x: S::V) -> S::V {
    // SAFETY: only trait operations on values; the ISA context is the caller's.
    unsafe {
        match act {
            crate::Activation::None => x,
            crate::Activation::Gelu => gelu::<S>(x),
            crate::Activation::Silu => {
                let e = S::exp(S::mul(x, S::splat(-1.0)));
                S::div(x, S::add(e, S::splat(1.0)))
            }
            // For 0 <= alpha <= 1, max(x, alpha·x) (a NaN stays NaN: both operands are).
            crate::Activation::LeakyRelu(alpha) => S::max(x, S::mul(x, S::splat(alpha))),
        }
    }
}

/// Scalar exact GELU with the same formula (reference and row tails).
pub fn gelu_scalar(x: f32) -> f32 {
    let z = (x as f64 * std::f64::consts::FRAC_1_SQRT_2).abs();
    let t = 1.0 / (1.0 + ERF_P as f64 * z);
    let p = ERF_POLY.iter().fold(0.0f64, |acc, c| acc * t + *c as f64);
    let erf = (1.0 - t * p * (-z * z).exp()).copysign(x as f64);
    (0.5 * x as f64 * (1.0 + erf)) as f32
}

/// Coefficients of the `e^r` polynomial on `|r| <= ln2 / 2` (Cephes `expf`).
pub(crate) const EXP_POLY: [f32; 6] =
    [1.987_569_2e-4, 1.398_199_9e-3, 8.333_452e-3, 4.166_579_6e-2, 1.666_666_5e-1, 0.5];
/// `ln 2` split in a high part exact in f32 and the rest.
pub(crate) const LN2_HI: f32 = 0.693_359_4;
pub(crate) const LN2_LO: f32 = -2.121_944_4e-4;

/// Plain Rust reference path.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Portable;

impl Simd for Portable {
    type V = [f32; LANES];
    #[inline(always)]
    unsafe fn mul(a: Self::V, b: Self::V) -> Self::V {
        let mut r = a;
        for i in 0..LANES {
            r[i] *= b[i];
        }
        r
    }
    #[inline(always)]
    unsafe fn reduce_sum(v: Self::V) -> f32 {
        v.iter().sum()
    }
    #[inline(always)]
    unsafe fn reduce_max(v: Self::V) -> f32 {
        v.iter().fold(f32::NEG_INFINITY, |m, &x| if x > m { x } else { m })
    }
    #[inline(always)]
    unsafe fn exp(x: Self::V) -> Self::V {
        x.map(|v| {
            if v.is_nan() {
                v
            } else if v < -88.0 {
                0.0
            } else {
                v.min(88.0).exp()
            }
        })
    }
    #[inline(always)]
    unsafe fn div(a: Self::V, b: Self::V) -> Self::V {
        let mut r = a;
        for i in 0..LANES {
            r[i] /= b[i];
        }
        r
    }
    #[inline(always)]
    unsafe fn abs(a: Self::V) -> Self::V {
        a.map(f32::abs)
    }
    #[inline(always)]
    unsafe fn copysign(mag: Self::V, sign: Self::V) -> Self::V {
        let mut r = mag;
        for i in 0..LANES {
            r[i] = mag[i].copysign(sign[i]);
        }
        r
    }
    #[inline(always)]
    unsafe fn zero() -> Self::V {
        [0.0; LANES]
    }
    #[inline(always)]
    unsafe fn splat(x: f32) -> Self::V {
        [x; LANES]
    }
    #[inline(always)]
    unsafe fn load(p: *const f32) -> Self::V {
        // SAFETY: the caller guarantees 16 readable floats at `p`.
        unsafe { std::ptr::read_unaligned(p as *const [f32; LANES]) }
    }
    #[inline(always)]
    unsafe fn store(p: *mut f32, v: Self::V) {
        // SAFETY: the caller guarantees 16 writable floats at `p`.
        unsafe { std::ptr::write_unaligned(p as *mut [f32; LANES], v) }
    }
    #[inline(always)]
    unsafe fn fmadd(a: Self::V, b: Self::V, c: Self::V) -> Self::V {
        let mut r = c;
        for i in 0..LANES {
            r[i] += a[i] * b[i];
        }
        r
    }
    #[inline(always)]
    unsafe fn add(a: Self::V, b: Self::V) -> Self::V {
        let mut r = a;
        for i in 0..LANES {
            r[i] += b[i];
        }
        r
    }
    #[inline(always)]
    unsafe fn min(a: Self::V, b: Self::V) -> Self::V {
        let mut r = a;
        for i in 0..LANES {
            r[i] = if b[i] < a[i] { b[i] } else { a[i] };
        }
        r
    }
    #[inline(always)]
    unsafe fn max(a: Self::V, b: Self::V) -> Self::V {
        let mut r = a;
        for i in 0..LANES {
            r[i] = if b[i] > a[i] { b[i] } else { a[i] };
        }
        r
    }
}

#[cfg(target_arch = "x86_64")]
pub(crate) use x86::{Avx2, Avx512};

#[cfg(target_arch = "x86_64")]
mod x86 {
    use super::{Simd, EXP_POLY, LANES, LN2_HI, LN2_LO};
    use std::arch::x86_64::*;

    /// AVX2 + FMA: one 16-lane vector is two `__m256`.
    #[derive(Clone, Copy, Debug)]
    pub(crate) struct Avx2;

    /// `e^x` on 8 lanes: `2^n · p(x - n·ln2)` with `n = round(x / ln2)`.
    #[inline(always)]
    unsafe fn exp256(x: __m256) -> __m256 {
        // SAFETY: avx2+fma context (caller).
        unsafe {
            let tiny = _mm256_cmp_ps::<_CMP_LT_OQ>(x, _mm256_set1_ps(-88.0));
            // Operands in this order return `x` when it is NaN, so NaN propagates.
            let x = _mm256_min_ps(_mm256_set1_ps(88.0), _mm256_max_ps(_mm256_set1_ps(-88.0), x));
            let n = _mm256_round_ps::<{ _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC }>(_mm256_mul_ps(
                x,
                _mm256_set1_ps(std::f32::consts::LOG2_E),
            ));
            let r = _mm256_fnmadd_ps(n, _mm256_set1_ps(LN2_HI), x);
            let r = _mm256_fnmadd_ps(n, _mm256_set1_ps(LN2_LO), r);
            let mut p = _mm256_set1_ps(EXP_POLY[0]);
            for c in &EXP_POLY[1..] {
                p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(*c));
            }
            let r2 = _mm256_mul_ps(r, r);
            let p = _mm256_fmadd_ps(p, r2, _mm256_add_ps(r, _mm256_set1_ps(1.0)));
            let pow2 = _mm256_castsi256_ps(_mm256_slli_epi32::<23>(_mm256_add_epi32(
                _mm256_cvtps_epi32(n),
                _mm256_set1_epi32(127),
            )));
            _mm256_andnot_ps(tiny, _mm256_mul_ps(p, pow2))
        }
    }

    impl Simd for Avx2 {
        type V = [__m256; 2];
        const REGS_PER_V: usize = 2;
        #[inline(always)]
        unsafe fn mul(a: Self::V, b: Self::V) -> Self::V {
            // SAFETY: avx2 context (caller).
            unsafe { [_mm256_mul_ps(a[0], b[0]), _mm256_mul_ps(a[1], b[1])] }
        }
        #[inline(always)]
        unsafe fn reduce_sum(v: Self::V) -> f32 {
            // SAFETY: avx2 context (caller).
            unsafe {
                let s = _mm256_add_ps(v[0], v[1]);
                let q = _mm_add_ps(_mm256_castps256_ps128(s), _mm256_extractf128_ps::<1>(s));
                let d = _mm_add_ps(q, _mm_movehl_ps(q, q));
                _mm_cvtss_f32(_mm_add_ss(d, _mm_shuffle_ps::<0b01>(d, d)))
            }
        }
        #[inline(always)]
        unsafe fn reduce_max(v: Self::V) -> f32 {
            // SAFETY: avx2 context (caller).
            unsafe {
                let s = _mm256_max_ps(v[0], v[1]);
                let q = _mm_max_ps(_mm256_castps256_ps128(s), _mm256_extractf128_ps::<1>(s));
                let d = _mm_max_ps(q, _mm_movehl_ps(q, q));
                _mm_cvtss_f32(_mm_max_ss(d, _mm_shuffle_ps::<0b01>(d, d)))
            }
        }
        #[inline(always)]
        unsafe fn exp(x: Self::V) -> Self::V {
            // SAFETY: avx2+fma context (caller).
            unsafe { [exp256(x[0]), exp256(x[1])] }
        }
        #[inline(always)]
        unsafe fn div(a: Self::V, b: Self::V) -> Self::V {
            // SAFETY: avx2 context (caller).
            unsafe { [_mm256_div_ps(a[0], b[0]), _mm256_div_ps(a[1], b[1])] }
        }
        #[inline(always)]
        unsafe fn abs(a: Self::V) -> Self::V {
            // SAFETY: avx2 context (caller).
            unsafe {
                let m = _mm256_castsi256_ps(_mm256_set1_epi32(0x7fff_ffff));
                [_mm256_and_ps(a[0], m), _mm256_and_ps(a[1], m)]
            }
        }
        #[inline(always)]
        unsafe fn copysign(mag: Self::V, sign: Self::V) -> Self::V {
            // SAFETY: avx2 context (caller).
            unsafe {
                let s = _mm256_castsi256_ps(_mm256_set1_epi32(i32::MIN));
                [
                    _mm256_or_ps(_mm256_andnot_ps(s, mag[0]), _mm256_and_ps(s, sign[0])),
                    _mm256_or_ps(_mm256_andnot_ps(s, mag[1]), _mm256_and_ps(s, sign[1])),
                ]
            }
        }
        #[inline(always)]
        unsafe fn zero() -> Self::V {
            // SAFETY: callers run this only inside an avx2+fma target_feature context.
            unsafe { [_mm256_setzero_ps(); 2] }
        }
        #[inline(always)]
        unsafe fn splat(x: f32) -> Self::V {
            // SAFETY: as above.
            unsafe { [_mm256_set1_ps(x); 2] }
        }
        #[inline(always)]
        unsafe fn load(p: *const f32) -> Self::V {
            // SAFETY: 16 readable floats at `p` (caller).
            unsafe { [_mm256_loadu_ps(p), _mm256_loadu_ps(p.add(8))] }
        }
        #[inline(always)]
        unsafe fn store(p: *mut f32, v: Self::V) {
            // SAFETY: 16 writable floats at `p` (caller).
            unsafe {
                _mm256_storeu_ps(p, v[0]);
                _mm256_storeu_ps(p.add(8), v[1]);
            }
        }
        #[inline(always)]
        unsafe fn deinterleave(p: *const f32) -> (Self::V, Self::V) {
            // SAFETY: 32 readable floats at `p` (caller); avx2 context.
            unsafe {
                // Evens and odds within 128-bit lanes, then the 64-bit halves back in order
                // (no closures: they would not inherit the target features).
                let (a, b) = (_mm256_loadu_ps(p), _mm256_loadu_ps(p.add(8)));
                let (c, d) = (_mm256_loadu_ps(p.add(16)), _mm256_loadu_ps(p.add(24)));
                let e0 = _mm256_castps_pd(_mm256_shuffle_ps::<0b10_00_10_00>(a, b));
                let o0 = _mm256_castps_pd(_mm256_shuffle_ps::<0b11_01_11_01>(a, b));
                let e1 = _mm256_castps_pd(_mm256_shuffle_ps::<0b10_00_10_00>(c, d));
                let o1 = _mm256_castps_pd(_mm256_shuffle_ps::<0b11_01_11_01>(c, d));
                let e0 = _mm256_castpd_ps(_mm256_permute4x64_pd::<0b11_01_10_00>(e0));
                let o0 = _mm256_castpd_ps(_mm256_permute4x64_pd::<0b11_01_10_00>(o0));
                let e1 = _mm256_castpd_ps(_mm256_permute4x64_pd::<0b11_01_10_00>(e1));
                let o1 = _mm256_castpd_ps(_mm256_permute4x64_pd::<0b11_01_10_00>(o1));
                ([e0, e1], [o0, o1])
            }
        }
        #[inline(always)]
        unsafe fn fmadd(a: Self::V, b: Self::V, c: Self::V) -> Self::V {
            // SAFETY: avx2+fma context (caller).
            unsafe { [_mm256_fmadd_ps(a[0], b[0], c[0]), _mm256_fmadd_ps(a[1], b[1], c[1])] }
        }
        #[inline(always)]
        unsafe fn add(a: Self::V, b: Self::V) -> Self::V {
            // SAFETY: avx2 context (caller).
            unsafe { [_mm256_add_ps(a[0], b[0]), _mm256_add_ps(a[1], b[1])] }
        }
        #[inline(always)]
        unsafe fn min(a: Self::V, b: Self::V) -> Self::V {
            // SAFETY: avx2 context (caller).
            unsafe { [_mm256_min_ps(a[0], b[0]), _mm256_min_ps(a[1], b[1])] }
        }
        #[inline(always)]
        unsafe fn max(a: Self::V, b: Self::V) -> Self::V {
            // SAFETY: avx2 context (caller).
            unsafe { [_mm256_max_ps(a[0], b[0]), _mm256_max_ps(a[1], b[1])] }
        }
    }

    /// AVX-512F: one `__m512`.
    #[derive(Clone, Copy, Debug)]
    pub(crate) struct Avx512;

    impl Simd for Avx512 {
        type V = __m512;
        #[inline(always)]
        unsafe fn mul(a: Self::V, b: Self::V) -> Self::V {
            // SAFETY: avx512f context (caller).
            unsafe { _mm512_mul_ps(a, b) }
        }
        #[inline(always)]
        unsafe fn reduce_sum(v: Self::V) -> f32 {
            // SAFETY: avx512f context (caller).
            unsafe { _mm512_reduce_add_ps(v) }
        }
        #[inline(always)]
        unsafe fn reduce_max(v: Self::V) -> f32 {
            // SAFETY: avx512f context (caller).
            unsafe { _mm512_reduce_max_ps(v) }
        }
        #[inline(always)]
        unsafe fn exp(x: Self::V) -> Self::V {
            // SAFETY: avx512f context (caller).
            unsafe {
                let tiny = _mm512_cmp_ps_mask::<_CMP_LT_OQ>(x, _mm512_set1_ps(-88.0));
                // Operands in this order return `x` when it is NaN, so NaN propagates.
                let x = _mm512_min_ps(_mm512_set1_ps(88.0), _mm512_max_ps(_mm512_set1_ps(-88.0), x));
                let n = _mm512_roundscale_ps::<{ _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC }>(_mm512_mul_ps(
                    x,
                    _mm512_set1_ps(std::f32::consts::LOG2_E),
                ));
                let r = _mm512_fnmadd_ps(n, _mm512_set1_ps(LN2_HI), x);
                let r = _mm512_fnmadd_ps(n, _mm512_set1_ps(LN2_LO), r);
                let mut p = _mm512_set1_ps(EXP_POLY[0]);
                for c in &EXP_POLY[1..] {
                    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(*c));
                }
                let r2 = _mm512_mul_ps(r, r);
                let p = _mm512_fmadd_ps(p, r2, _mm512_add_ps(r, _mm512_set1_ps(1.0)));
                _mm512_maskz_mov_ps(!tiny, _mm512_scalef_ps(p, n))
            }
        }
        #[inline(always)]
        unsafe fn div(a: Self::V, b: Self::V) -> Self::V {
            // SAFETY: avx512f context (caller).
            unsafe { _mm512_div_ps(a, b) }
        }
        #[inline(always)]
        unsafe fn abs(a: Self::V) -> Self::V {
            // SAFETY: avx512f context (caller).
            unsafe { _mm512_abs_ps(a) }
        }
        #[inline(always)]
        unsafe fn copysign(mag: Self::V, sign: Self::V) -> Self::V {
            // SAFETY: avx512f context (caller).
            unsafe {
                let s = _mm512_set1_epi32(i32::MIN);
                let m = _mm512_andnot_si512(s, _mm512_castps_si512(mag));
                _mm512_castsi512_ps(_mm512_or_si512(m, _mm512_and_si512(s, _mm512_castps_si512(sign))))
            }
        }
        #[inline(always)]
        unsafe fn zero() -> Self::V {
            // SAFETY: callers run this only inside an avx512f target_feature context.
            unsafe { _mm512_setzero_ps() }
        }
        #[inline(always)]
        unsafe fn splat(x: f32) -> Self::V {
            // SAFETY: avx512f context (caller).
            unsafe { _mm512_set1_ps(x) }
        }
        #[inline(always)]
        unsafe fn load(p: *const f32) -> Self::V {
            // SAFETY: 16 readable floats at `p` (caller).
            unsafe { _mm512_loadu_ps(p) }
        }
        #[inline(always)]
        unsafe fn store(p: *mut f32, v: Self::V) {
            // SAFETY: 16 writable floats at `p` (caller).
            unsafe { _mm512_storeu_ps(p, v) }
        }
        #[inline(always)]
        unsafe fn deinterleave(p: *const f32) -> (Self::V, Self::V) {
            // SAFETY: 32 readable floats at `p` (caller); avx512f context.
            unsafe {
                let (a, b) = (_mm512_loadu_ps(p), _mm512_loadu_ps(p.add(16)));
                let even = _mm512_setr_epi32(0, 2, 4, 6, 8, 10, 12, 14, 16, 18, 20, 22, 24, 26, 28, 30);
                let odd = _mm512_setr_epi32(1, 3, 5, 7, 9, 11, 13, 15, 17, 19, 21, 23, 25, 27, 29, 31);
                (_mm512_permutex2var_ps(a, even, b), _mm512_permutex2var_ps(a, odd, b))
            }
        }
        #[inline(always)]
        unsafe fn fmadd(a: Self::V, b: Self::V, c: Self::V) -> Self::V {
            // SAFETY: avx512f context (caller).
            unsafe { _mm512_fmadd_ps(a, b, c) }
        }
        #[inline(always)]
        unsafe fn add(a: Self::V, b: Self::V) -> Self::V {
            // SAFETY: avx512f context (caller).
            unsafe { _mm512_add_ps(a, b) }
        }
        #[inline(always)]
        unsafe fn min(a: Self::V, b: Self::V) -> Self::V {
            // SAFETY: avx512f context (caller).
            unsafe { _mm512_min_ps(a, b) }
        }
        #[inline(always)]
        unsafe fn max(a: Self::V, b: Self::V) -> Self::V {
            // SAFETY: avx512f context (caller).
            unsafe { _mm512_max_ps(a, b) }
        }
    }

    const _: () = assert!(LANES == 16);
}
