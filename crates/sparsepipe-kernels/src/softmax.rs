//! Softmax over an axis that is not the innermost (e.g. YOLOv8's distribution-focal head, over 16
//! bins of `[1, 16, 4, 8400]`): the `[outer, n, inner]` view is computed a vector of `inner`
//! columns at a time, each column's `n` values reduced with the vector lanes side by side.

use rayon::prelude::*;

use crate::exec::OutPtr;
use crate::isa::Isa;
use crate::simd::{Portable, Simd, LANES};
use crate::KernelError;

/// Columns per parallel job at least.
const PAR_COLS: usize = 1024;

/// `y = softmax(x)` along the middle axis of `[outer, n, inner]` (`x`, `y` of that many floats),
/// in parallel on the current rayon pool.
pub fn softmax_axis(
    isa: Isa,
    x: &[f32],
    outer: usize,
    n: usize,
    inner: usize,
    y: &mut [f32],
) -> Result<(), KernelError> {
    let len = outer.checked_mul(n).and_then(|v| v.checked_mul(inner));
    if len != Some(x.len()) || x.len() != y.len() {
        return Err(KernelError::Shape(format!(
            "softmax over [{outer}, {n}, {inner}] of {} values into {}",
            x.len(),
            y.len()
        )));
    }
    if !isa.is_supported() {
        return Err(KernelError::Unsupported(isa));
    }
    if x.is_empty() {
        return Ok(());
    }
    // Jobs: (block, first column, columns), columns a multiple of LANES except the last.
    let per_job = PAR_COLS.max(inner.div_ceil(rayon::current_num_threads()).div_ceil(LANES) * LANES);
    let jobs: Vec<(usize, usize, usize)> =
        (0..outer).flat_map(|o| (0..inner).step_by(per_job).map(move |c0| (o, c0, per_job.min(inner - c0)))).collect();
    let out = OutPtr(y.as_mut_ptr());
    let job = |&(o, c0, cnt): &(usize, usize, usize)| {
        let block = &x[o * n * inner..(o + 1) * n * inner];
        // SAFETY: the ISA is supported (checked above); jobs write disjoint columns of block
        // `o` of `y`, which holds outer·n·inner floats.
        unsafe { columns_dispatch(isa, block, n, inner, c0, cnt, out.at(o * n * inner)) };
    };
    if rayon::current_num_threads() > 1 && jobs.len() > 1 {
        jobs.par_iter().for_each(job);
    } else {
        jobs.iter().for_each(job);
    }
    Ok(())
}

/// # Safety
/// `isa` supported; `x` holds `[n, inner]`, `y` points at the same extent.
unsafe fn columns_dispatch(isa: Isa, x: &[f32], n: usize, inner: usize, c0: usize, cnt: usize, y: *mut f32) {
    match isa {
        #[cfg(target_arch = "x86_64")]
        // SAFETY: forwarded contract.
        Isa::Avx512 => unsafe { columns_avx512(x, n, inner, c0, cnt, y) },
        #[cfg(target_arch = "x86_64")]
        // SAFETY: forwarded contract.
        Isa::Avx2 => unsafe { columns_avx2(x, n, inner, c0, cnt, y) },
        // SAFETY: forwarded contract.
        _ => unsafe { columns::<Portable>(x, n, inner, c0, cnt, y) },
    }
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
unsafe fn columns_avx512(x: &[f32], n: usize, inner: usize, c0: usize, cnt: usize, y: *mut f32) {
    // SAFETY: avx512f enabled here; contract forwarded.
    unsafe { columns::<crate::simd::Avx512>(x, n, inner, c0, cnt, y) }
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
unsafe fn columns_avx2(x: &[f32], n: usize, inner: usize, c0: usize, cnt: usize, y: *mut f32) {
    // SAFETY: avx2+fma enabled here; contract forwarded.
    unsafe { columns::<crate::simd::Avx2>(x, n, inner, c0, cnt, y) }
}

/// Columns `c0..c0 + cnt` of one `[n, inner]` block: a vector of columns at a time (the max,
/// then `e^(x - max)` stored with its sum, then the scaling), the last partial vector through a
/// zero-padded copy.
#[inline(always)]
unsafe fn columns<S: Simd>(x: &[f32], n: usize, inner: usize, c0: usize, cnt: usize, y: *mut f32) {
    let mut c = c0;
    while c < c0 + cnt {
        let width = LANES.min(c0 + cnt - c);
        if width == LANES {
            // SAFETY: rows r < n hold columns c..c + LANES <= inner of `x` and of `y`.
            unsafe {
                let mut max = S::load(x.as_ptr().add(c));
                for r in 1..n {
                    max = S::max(max, S::load(x.as_ptr().add(r * inner + c)));
                }
                let mut sum = S::zero();
                for r in 0..n {
                    let e = S::exp(S::add(S::load(x.as_ptr().add(r * inner + c)), S::mul(max, S::splat(-1.0))));
                    sum = S::add(sum, e);
                    S::store(y.add(r * inner + c), e);
                }
                let scale = S::div(S::splat(1.0), sum);
                for r in 0..n {
                    S::store(y.add(r * inner + c), S::mul(S::load(y.add(r * inner + c)), scale));
                }
            }
        } else {
            for col in c..c + width {
                let max = (0..n).map(|r| x[r * inner + col]).fold(f32::NEG_INFINITY, f32::max);
                let mut sum = 0.0;
                for r in 0..n {
                    let e = (x[r * inner + col] - max).exp();
                    sum += e;
                    // SAFETY: row r < n, column col < inner.
                    unsafe { *y.add(r * inner + col) = e };
                }
                for r in 0..n {
                    // SAFETY: as above.
                    unsafe { *y.add(r * inner + col) /= sum };
                }
            }
        }
        c += width;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn matches_the_straight_formula_on_every_isa_and_split() {
        for (outer, n, inner) in [(1, 16, 8400), (3, 5, 17), (2, 1, 40), (1, 7, 1), (4, 3, 1030)] {
            let x: Vec<f32> = (0..outer * n * inner).map(|i| ((i * 7919 % 1013) as f32 - 500.0) / 37.0).collect();
            let mut want = vec![0f32; x.len()];
            for o in 0..outer {
                for c in 0..inner {
                    let at = |r: usize| (o * n + r) * inner + c;
                    let max = (0..n).map(|r| x[at(r)] as f64).fold(f64::NEG_INFINITY, f64::max);
                    let sum: f64 = (0..n).map(|r| (x[at(r)] as f64 - max).exp()).sum();
                    for r in 0..n {
                        want[at(r)] = ((x[at(r)] as f64 - max).exp() / sum) as f32;
                    }
                }
            }
            for threads in [1, 3] {
                let pool = rayon::ThreadPoolBuilder::new().num_threads(threads).build().unwrap();
                for isa in Isa::available() {
                    let mut y = vec![f32::NAN; x.len()];
                    pool.install(|| softmax_axis(isa, &x, outer, n, inner, &mut y)).unwrap();
                    for (i, (a, b)) in y.iter().zip(&want).enumerate() {
                        assert!((a - b).abs() <= 1e-6, "{isa} [{outer},{n},{inner}] y[{i}] = {a}, want {b}");
                    }
                }
            }
        }
        let err = softmax_axis(Isa::Portable, &[0.0; 5], 1, 2, 3, &mut [0.0; 5]).unwrap_err();
        assert!(err.to_string().contains("[1, 2, 3]"), "{err}");
    }
}
