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
    unsafe fn zero() -> Self::V;
    unsafe fn splat(x: f32) -> Self::V;
    unsafe fn load(p: *const f32) -> Self::V;
    unsafe fn store(p: *mut f32, v: Self::V);
    /// `a * b + c`.
    unsafe fn fmadd(a: Self::V, b: Self::V, c: Self::V) -> Self::V;
    unsafe fn add(a: Self::V, b: Self::V) -> Self::V;
    unsafe fn min(a: Self::V, b: Self::V) -> Self::V;
    unsafe fn max(a: Self::V, b: Self::V) -> Self::V;
    /// `[base[idx[0]], .., base[idx[15]]]`.
    unsafe fn gather(base: *const f32, idx: *const u32) -> Self::V;
    unsafe fn reduce_sum(v: Self::V) -> f32;
}

/// Plain Rust reference path.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Portable;

impl Simd for Portable {
    type V = [f32; LANES];
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
    #[inline(always)]
    unsafe fn gather(base: *const f32, idx: *const u32) -> Self::V {
        let mut r = [0.0; LANES];
        for (i, slot) in r.iter_mut().enumerate() {
            // SAFETY: the caller guarantees 16 indices at `idx`, each in bounds of `base`.
            *slot = unsafe { *base.add(*idx.add(i) as usize) };
        }
        r
    }
    #[inline(always)]
    unsafe fn reduce_sum(v: Self::V) -> f32 {
        v.iter().sum()
    }
}

#[cfg(target_arch = "x86_64")]
pub(crate) use x86::{Avx2, Avx512};

#[cfg(target_arch = "x86_64")]
mod x86 {
    use super::{Simd, LANES};
    use std::arch::x86_64::*;

    /// AVX2 + FMA: one 16-lane vector is two `__m256`.
    #[derive(Clone, Copy, Debug)]
    pub(crate) struct Avx2;

    impl Simd for Avx2 {
        type V = [__m256; 2];
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
        #[inline(always)]
        unsafe fn gather(base: *const f32, idx: *const u32) -> Self::V {
            // SAFETY: 16 in-bounds indices at `idx` (caller); avx2 context.
            unsafe {
                let i0 = _mm256_loadu_si256(idx as *const __m256i);
                let i1 = _mm256_loadu_si256(idx.add(8) as *const __m256i);
                [_mm256_i32gather_ps::<4>(base, i0), _mm256_i32gather_ps::<4>(base, i1)]
            }
        }
        #[inline(always)]
        unsafe fn reduce_sum(v: Self::V) -> f32 {
            // SAFETY: avx2 context (caller).
            unsafe {
                let s = _mm256_add_ps(v[0], v[1]);
                let lo = _mm256_castps256_ps128(s);
                let hi = _mm256_extractf128_ps::<1>(s);
                let q = _mm_add_ps(lo, hi);
                let d = _mm_add_ps(q, _mm_movehl_ps(q, q));
                let r = _mm_add_ss(d, _mm_shuffle_ps::<0b01>(d, d));
                _mm_cvtss_f32(r)
            }
        }
    }

    /// AVX-512F: one `__m512`.
    #[derive(Clone, Copy, Debug)]
    pub(crate) struct Avx512;

    impl Simd for Avx512 {
        type V = __m512;
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
        #[inline(always)]
        unsafe fn gather(base: *const f32, idx: *const u32) -> Self::V {
            // SAFETY: 16 in-bounds indices at `idx` (caller); avx512f context.
            unsafe {
                let i = _mm512_loadu_si512(idx as *const __m512i);
                _mm512_i32gather_ps::<4>(i, base)
            }
        }
        #[inline(always)]
        unsafe fn reduce_sum(v: Self::V) -> f32 {
            // SAFETY: avx512f context (caller).
            unsafe { _mm512_reduce_add_ps(v) }
        }
    }

    const _: () = assert!(LANES == 16);
}
